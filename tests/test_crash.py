"""A worker killed in the middle of CallFlows and MessageLogs: nothing lost, nothing doubled, never a 409.

A real gunicorn (the Procfile's command, 2 workers) on the embedded directory; 32 clients post
200 calls 4 times each, and one worker is killed with SIGKILL a quarter of the way. Every call
must end up recorded exactly once, every successful answer for a call must carry the same id, and
no answer may be a 409 or a 5xx. Once with the SQLite ledger, once with Redis. The same with 200
SMS of 10 conversations (one digest each, revised concurrently by both workers): each digest one
record holding each of its 20 messages once.
``CRASH_CALLS``, ``CRASH_POSTS`` and ``CRASH_CLIENTS`` scale it (defaults: the numbers above).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import import_file
from tests.servers import free_port
from tests.servers.lookup_process import procfile_command

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "crash-token-0123456789"
CALLS = int(os.environ.get("CRASH_CALLS", "200"))
POSTS = int(os.environ.get("CRASH_POSTS", "4"))
CLIENTS = int(os.environ.get("CRASH_CLIENTS", "32"))

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers in Linux /proc")]


def _workers(master: int) -> list[int]:
    try:
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def service(tmp_path):
    """Start gunicorn with the given extra environment; yields (base URL, master pid)."""
    csv = tmp_path / "contacts.csv"
    csv.write_text("id;name;phone\n" + "".join(f"c{i};Contact {i};+41 21 552 {i // 100:02d} {i % 100:02d}\n"
                                               for i in range(20)))
    directory = tmp_path / "directory.sqlite3"
    store = ContactStore(str(directory), "CH")
    import_file(store, str(csv))
    store.close()
    processes: list[subprocess.Popen] = []

    def start(**extra: str) -> tuple[str, int]:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "2", "LOOKUP_TOKENS": TOKEN,
               "LOOKUP_DIRECTORY": str(directory), "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"),
               "LOOKUP_INSTANCE_DIR": str(tmp_path), "LOOKUP_ACCESS_LOG": "0", "LOOKUP_PHONE_INDEX": "0", **extra}
        env.pop("LOOKUP_CONFIG", None)
        log = open(tmp_path / "gunicorn.log", "ab")  # noqa: SIM115 - closed with the process below
        process = subprocess.Popen(procfile_command(port), cwd=ROOT, env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        log.close()
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200 and len(_workers(process.pid)) == 2:
                    return url, process.pid
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())

    yield start
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _payload(i: int) -> dict:
    return {"inputs": {"contactCrmId": f"directory:c{i % 20}", "direction": "incoming",
                       "originatorNumber": f"41795{i:06d}", "startedTime": str(1795251600 + i * 60),
                       "answeredTime": str(1795251605 + i * 60), "endedTime": str(1795251650 + i * 60)}}


DIGESTS = 10


def _sms(i: int) -> dict:
    """Message i of conversation i % DIGESTS, all on one day."""
    return {"inputs": {"contactCrmId": f"directory:c{i % DIGESTS}", "type": "SMS", "direction": "incoming",
                       "fromNumber": f"41795{i % DIGESTS:06d}", "toNumber": "41445001020", "text": f"sms number {i}",
                       "time": str(1795251600 + i), "messageId": f"m{i}"}}


def _digests(directory: Path) -> list[tuple[str, int, str]]:
    conn = sqlite3.connect(directory, timeout=30)
    try:
        return conn.execute("SELECT contact_id, message_count, body FROM messages ORDER BY contact_id").fetchall()
    finally:
        conn.close()


def _recorded(directory: Path) -> collections.Counter:
    conn = sqlite3.connect(directory, timeout=30)
    try:
        rows = conn.execute("SELECT originator_number, id FROM calls").fetchall()
    finally:
        conn.close()
    return collections.Counter(number for number, _ in rows)


def _hammer(url: str, master: int, workflow: str = "CallFlow") -> tuple[dict[int, list], list]:
    """Every post of the workflow, 32 at a time, a worker killed a quarter of the way; the answers'
    ids by call (CallFlow) or by digest (MessageLog), and the failed posts."""
    payload, group = (_payload, lambda i: i) if workflow == "CallFlow" else (_sms, lambda i: i % DIGESTS)
    posts = [i for i in range(CALLS) for _ in range(POSTS)]
    random.Random(7).shuffle(posts)
    answers: dict[int, list] = collections.defaultdict(list)
    problems: list = []
    done = [0]
    lock = threading.Lock()
    local = threading.local()
    killed: list[int] = []

    def post(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        try:
            response = session.post(f"{url}/{workflow}", json=payload(i), headers={"X-Execution-Token": TOKEN},
                                    timeout=30)
        except requests.RequestException as exc:  # a connection of the killed worker
            local.session = None
            with lock:
                problems.append(("connection", i, type(exc).__name__))
        else:
            with lock:
                if response.status_code == 200:
                    answers[group(i)].append(response.json()["id"])
                else:
                    problems.append((response.status_code, i, response.text[:200]))
        with lock:
            done[0] += 1
            if not killed and done[0] >= len(posts) // 4:
                victim = _workers(master)[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(post, posts))
    assert killed, "no worker was killed"
    return answers, problems


@pytest.fixture(params=["sqlite", "redis"])
def ledger_settings(request) -> dict[str, str]:
    """The service's settings for each ledger: SQLite (the default), or an empty Redis."""
    if request.param == "sqlite":
        return {}
    import redis

    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushall()
    return {"REDIS_URL": url}


def test_a_killed_worker_loses_and_doubles_nothing(service, tmp_path, ledger_settings):
    url, master = service(**ledger_settings)
    answers, problems = _hammer(url, master)

    # only the connections of the killed worker may fail; never a 409 or a 5xx
    assert all(kind == "connection" for kind, _, _ in problems), problems
    assert len(problems) <= CLIENTS, problems  # at most the connections each client had to the killed worker
    for i, ids in answers.items():
        assert len(set(ids)) == 1, f"call {i} got different ids: {ids}"
    # every call recorded, once (calls whose every post was cut are delivered by the outbox)
    directory = tmp_path / "directory.sqlite3"
    deadline = time.monotonic() + 30
    while len(_recorded(directory)) < CALLS and time.monotonic() < deadline:
        time.sleep(0.2)
    recorded = _recorded(directory)
    assert len(recorded) == CALLS and set(recorded.values()) == {1}
    assert len(answers) >= CALLS - len(problems)


def test_a_killed_worker_loses_no_message_of_a_digest(service, tmp_path, ledger_settings):
    url, master = service(**ledger_settings)
    answers, problems = _hammer(url, master, "MessageLog")

    assert all(kind == "connection" for kind, _, _ in problems), problems
    for digest, ids in answers.items():
        assert len(set(ids)) == 1, f"digest {digest} got different ids: {ids}"
    directory = tmp_path / "directory.sqlite3"
    per_digest = CALLS // DIGESTS
    deadline = time.monotonic() + 60  # revisions cut by the kill are delivered by the outbox
    while time.monotonic() < deadline and not (
            len(rows := _digests(directory)) == DIGESTS and all(count == per_digest for _, count, _ in rows)):
        time.sleep(0.2)
    rows = _digests(directory)
    assert [contact for contact, _, _ in rows] == sorted(f"c{g}" for g in range(DIGESTS))
    for contact, count, body in rows:
        digest = int(contact[1:])
        assert count == per_digest, (contact, count)
        for i in range(digest, CALLS, DIGESTS):
            assert body.count(f": sms number {i}\n") + body.endswith(f": sms number {i}") == 1, (contact, i)
