"""Durable workflow delivery: the outbox through a CRM outage, refusals, the CLI, a full store,
and claims held by dead and live processes, on SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lookup_core.types import WorkflowResult
from lookup_service.ledger import DONE, FAILED, LEASE_S, PENDING, RedisLedger, SqlLedger, owner_dead, owner_id
from tests.fakes.rest_api import FakeRestApi, Reply
from tests.scripted_backend import SCRIPTS, Script
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(120)

TOKEN = "acme-token-1234"
HEADERS = {"X-Execution-Token": TOKEN}
CONFIG = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "erp"
  type = "rest"
  lookup_url = "{api}/api/contacts?phone={{e164}}"
  timeout = 0.5
  workflows = ["CallFlow"]
    [tenant.backend.fields]
    id = "id"
    name = "name"
    phones = "phones"
    [tenant.backend.call_log]
    request_url = "{api}/api/calls"
    body = '{{"contact": "{{contact_id}}", "key": "{{call_key}}", "from": "{{originator_number}}"}}'
    id = "id"
"""
SCRIPTED = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "crm"
"""


def call(i: int = 0, contact: str = "erp:C7") -> dict:
    return {"inputs": {"contactCrmId": contact, "direction": "incoming", "originatorNumber": f"4179861{i:04d}",
                       "startedTime": str(1795251600 + i), "answeredTime": str(1795251605 + i),
                       "endedTime": str(1795251700 + i)}}


class Crm:
    """The ERP's call endpoint: down (503), hanging (answers 503 after the client gave up), refusing,
    or up, recording each call by its key (POST /api/calls)."""

    def __init__(self, api: FakeRestApi):
        self.state = "up"
        self.recorded: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.lock = threading.Lock()
        api.route("POST", "/api/calls", self.handle)

    def handle(self, request) -> Reply:
        with self.lock:
            self.requests += 1
            state = self.state
            if state == "up":
                key = request.json()["key"]
                self.recorded[key] += 1
                return Reply(201, {"id": f"erp-{key[:8]}"})
        if state == "hang":
            return Reply(503, {"error": "late"}, delay=1.5)
        if state == "refuse":
            return Reply(422, {"error": "field 'from' rejected"})
        if state == "gone":
            return Reply(404, {"error": "no such contact"})
        return Reply(503, {"error": "maintenance"})


@pytest.fixture
def api():
    server = FakeRestApi().start()
    yield server
    server.stop()


@pytest.fixture
def erp(api, tmp_path, make_app):
    crm = Crm(api)
    path = tmp_path / "lookup.toml"
    path.write_text(CONFIG.format(api=api.url))

    def build(**settings):
        options = {"LOOKUP_CONFIG": str(path), "LOOKUP_WORKFLOW_DEADLINE_MS": 1000, "LOOKUP_BREAKER_COOLDOWN": 0.5,
                   "LOOKUP_WORKFLOW_RETRY_BASE": 0.2, **settings}
        return make_app(**options)

    return crm, build


def test_calls_posted_during_an_outage_are_answered_and_recorded_once_after_it(erp):
    crm, build = erp
    app = build()
    client = app.test_client()
    crm.state = "down"

    def post(i):
        response = client.post("/CallFlow", json=call(i), headers=HEADERS)
        return i, response.status_code, response.get_json()

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(post, range(25)))
        crm.state = "hang"
        answers += list(pool.map(post, range(25, 50)))
    assert all(status == 200 for _, status, _ in answers), answers
    assert all(body["url"] == "" and len(body["id"]) == 64 for _, _, body in answers)
    assert len({body["id"] for _, _, body in answers}) == 50
    # the same call posted again during the outage: the same answer
    again = client.post("/CallFlow", json=call(3), headers=HEADERS).get_json()
    assert again == answers[3][2]
    assert not crm.recorded

    crm.state = "up"
    assert wait_until(lambda: len(crm.recorded) == 50, timeout=60), f"{len(crm.recorded)} of 50 recorded"
    assert wait_until(lambda: app.extensions["lookup"].outbox.backlog()[0] == 0, timeout=60)
    assert set(crm.recorded) == {body["id"] for _, _, body in answers}
    assert all(count == 1 for count in crm.recorded.values())
    # delivered: a later post of the same call gets the CRM's id
    late = client.post("/CallFlow", json=call(3), headers=HEADERS).get_json()
    assert late == {"id": f"erp-{answers[3][2]['id'][:8]}", "url": ""}
    assert crm.recorded[answers[3][2]["id"]] == 1


def test_a_refusal_within_the_budget_is_answered_and_kept_as_failed(erp):
    crm, build = erp
    app = build()
    client = app.test_client()
    crm.state = "refuse"
    response = client.post("/CallFlow", json=call(1), headers=HEADERS)
    assert response.status_code == 422
    assert response.get_json()["error"] == "refused" and "422" in response.get_json()["message"]
    [item] = app.extensions["lookup"].ledger.listing((FAILED,), 10)
    assert "422" in item.error
    crm.state = "gone"
    response = client.post("/CallFlow", json=call(2), headers=HEADERS)
    assert response.status_code == 404 and response.get_json()["error"] == "unknown_contact"
    assert len(app.extensions["lookup"].ledger.listing((FAILED,), 10)) == 2


def test_a_refusal_in_the_background_is_not_retried(erp):
    crm, build = erp
    app = build()
    client = app.test_client()
    crm.state = "down"
    queued = client.post("/CallFlow", json=call(5), headers=HEADERS).get_json()
    crm.state = "refuse"
    ledger = app.extensions["lookup"].ledger
    assert wait_until(lambda: ledger.get(queued["id"]).state == FAILED, timeout=60)
    item = ledger.get(queued["id"])
    assert "refused" in item.error and item.attempts >= 2
    # kept as failed and never due again, however late one asks: a refused call is not tried again
    assert all(item.key != queued["id"] for item in ledger.due(time.time() + 86400, 1000))
    assert ledger.get(queued["id"]).state == FAILED


def test_cli_lists_retries_and_drops_without_full_numbers(erp):
    crm, build = erp
    app = build()
    client = app.test_client()
    crm.state = "refuse"
    for i in (1, 2):
        assert client.post("/CallFlow", json=call(i), headers=HEADERS).status_code == 422
    crm.state = "down"
    queued = client.post("/CallFlow", json=call(3), headers=HEADERS).get_json()["id"]
    runner = app.test_cli_runner()

    listing = runner.invoke(args=["outbox", "list"])
    assert listing.exit_code == 0, listing.output
    assert "41798610001" not in listing.output and "********001" in listing.output
    assert listing.output.count("failed") == 2 and queued[:16] in listing.output
    failed_only = runner.invoke(args=["outbox", "list", "--failed"]).output
    assert queued[:16] not in failed_only and failed_only.count("acme/erp") == 2

    ledger = app.extensions["lookup"].ledger
    first, second = ledger.listing((FAILED,), 10)
    crm.state = "up"
    result = runner.invoke(args=["outbox", "retry", first.key[:16]])
    assert result.exit_code == 0 and "1 call(s)" in result.output
    assert ledger.get(first.key).state == PENDING
    assert runner.invoke(args=["outbox", "retry", "abc"]).exit_code != 0
    dropped = runner.invoke(args=["outbox", "drop", second.key[:16]])
    assert dropped.exit_code == 0 and ledger.get(second.key) is None
    # the retried call is delivered by the delivery thread (started by the first post)
    assert wait_until(lambda: ledger.get(first.key).state == DONE, timeout=60)
    assert crm.recorded[first.key] == 1
    assert runner.invoke(args=["outbox", "retry", "--all-failed"]).output.startswith("0 call(s)")


def test_metrics_and_health_report_the_backlog(erp):
    crm, build = erp
    app = build(LOOKUP_METRICS_TOKEN="metrics-secret-1", LOOKUP_OUTBOX_WARN_AGE=0)
    client = app.test_client()
    service = app.extensions["lookup"]
    assert service.outbox_health() == []
    crm.state = "down"
    client.post("/CallFlow", json=call(1), headers=HEADERS)
    time.sleep(0.05)
    [problem] = service.outbox_health()
    assert problem["component"] == "outbox" and "1 workflow call(s)" in problem["reason"]
    text = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-1"}).get_data(as_text=True)
    assert "lookup_outbox_backlog 1.0" in text
    assert 'lookup_outbox_deliveries_total{backend="erp",outcome="retry",tenant="acme"}' in text
    age = [line for line in text.splitlines() if line.startswith("lookup_outbox_oldest_pending_age_seconds ")]
    assert age and float(age[0].split()[1]) > 0


# --- the store: full, claims of dead and live processes ---------------------------------------
def test_a_full_store_refuses_the_request_with_a_clear_error(make_app, tmp_path, redis_url):
    import redis

    client_redis = redis.Redis.from_url(redis_url)
    client_redis.flushall()
    SCRIPTS["crm"] = Script()
    path = tmp_path / "lookup.toml"
    path.write_text(SCRIPTED)
    app = make_app(LOOKUP_CONFIG=str(path), REDIS_URL=redis_url)
    client_redis.config_set("maxmemory-policy", "noeviction")
    client_redis.config_set("maxmemory", 1)
    try:
        response = app.test_client().post("/CallFlow", json=call(1, contact="crm:1"), headers=HEADERS)
    finally:
        client_redis.config_set("maxmemory", 0)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "outbox_unavailable" and "nothing was recorded" in body["message"]
    assert "maxmemory" in body["message"] or "OOM" in body["message"]
    assert SCRIPTS["crm"].logged == []
    # with room again, the same post is accepted and recorded once
    response = app.test_client().post("/CallFlow", json=call(1, contact="crm:1"), headers=HEADERS)
    assert response.status_code == 200 and len(SCRIPTS["crm"].logged) == 1


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def ledger_url(request, tmp_path, redis_url):
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "state.sqlite3")
    if request.param == "redis":
        import redis

        redis.Redis.from_url(redis_url).flushall()
        return redis_url
    pg = request.getfixturevalue("pg")
    return pg.create_database("outbox")


@pytest.fixture(scope="module")
def pg():
    from tests.servers.postgres import postgres_server

    with postgres_server() as server:
        yield server


def open_ledger(url: str):
    return RedisLedger(url) if url.startswith("redis") else SqlLedger(url)


def _hold_claim(url: str, key: str, ready, stay: float) -> None:
    ledger = open_ledger(url)
    assert ledger.claim(key, owner_id(), time.time())
    ready.set()
    time.sleep(stay)


def test_a_claim_of_a_dead_process_is_taken_at_once_and_a_live_one_never(ledger_url):
    ledger = open_ledger(ledger_url)
    payload = json.dumps({"contact_id": "1", "direction": "incoming", "key": "k1"})
    for key in ("k-dead", "k-live"):
        assert ledger.put(key, "acme", "crm", "CallFlow", payload, time.time()).state == PENDING
    context = multiprocessing.get_context("spawn")
    ready_dead, ready_live = context.Event(), context.Event()
    dead = context.Process(target=_hold_claim, args=(ledger_url, "k-dead", ready_dead, 60))
    live = context.Process(target=_hold_claim, args=(ledger_url, "k-live", ready_live, 60))
    dead.start()
    live.start()
    try:
        assert ready_dead.wait(30) and ready_live.wait(30)
        os.kill(dead.pid, signal.SIGKILL)
        dead.join(10)
        item = ledger.get("k-dead")
        assert item.owner and owner_dead(item.owner) and item.lease_until > time.time()  # lease still running
        assert ledger.claim("k-dead", owner_id(), time.time())  # taken over at once anyway
        assert not ledger.claim("k-live", owner_id(), time.time())  # a live attempt is never doubled
        assert not owner_dead(ledger.get("k-live").owner)
    finally:
        for process in (dead, live):
            if process.is_alive():
                process.kill()
            process.join(10)
    # the live owner died too: its claim goes as well
    assert ledger.claim("k-live", owner_id(), time.time())
    stored = ledger.finish("k-live", WorkflowResult(id="x-1", url=None))
    assert stored.id == "x-1" and ledger.get("k-live").state == DONE
    # a second finish (a duplicate attempt) keeps the first result
    assert ledger.finish("k-live", WorkflowResult(id="x-2")).id == "x-1"
    assert ledger.backlog()[0] == 1
    ledger.close()


def test_a_claim_of_another_machine_waits_for_its_lease(ledger_url):
    ledger = open_ledger(ledger_url)
    ledger.put("k", "acme", "crm", "CallFlow", "{}", time.time())
    foreign = "another-host:4242:123"
    assert ledger.claim("k", foreign, time.time())
    assert not owner_dead(foreign)
    assert not ledger.claim("k", owner_id(), time.time())
    item = ledger.get("k")
    assert item.owner == foreign and time.time() < item.lease_until <= time.time() + LEASE_S + 1
    if not ledger_url.startswith("redis"):  # (Redis: the claim key's TTL, which the clock cannot skip)
        assert ledger.claim("k", owner_id(), time.time() + LEASE_S + 1)
    ledger.close()


def test_a_slow_crm_is_answered_with_the_key_and_the_running_attempt_is_not_doubled(erp, api):
    crm, build = erp
    app = build(LOOKUP_WORKFLOW_DEADLINE_MS=300)
    original = crm.handle

    def slow(request):
        reply = original(request)
        reply.delay = 0.4  # past the budget, within the backend's timeout (0.5 s)
        return reply

    api.route("POST", "/api/calls", slow)
    client = app.test_client()
    first = client.post("/CallFlow", json=call(9), headers=HEADERS).get_json()
    assert first["url"] == "" and len(first["id"]) == 64
    # the attempt goes on after the answer; a post meanwhile waits for it rather than starting another
    second = client.post("/CallFlow", json=call(9), headers=HEADERS).get_json()
    assert second["id"] in (first["id"], f"erp-{first['id'][:8]}")
    ledger = app.extensions["lookup"].ledger
    assert wait_until(lambda: ledger.get(first["id"]).state == DONE, timeout=60)
    assert crm.requests == 1 and crm.recorded[first["id"]] == 1
    assert client.post("/CallFlow", json=call(9), headers=HEADERS).get_json()["id"] == f"erp-{first['id'][:8]}"


def test_the_old_redis_ledger_results_stay_answers(make_app, tmp_path, redis_url):
    import redis

    client_redis = redis.Redis.from_url(redis_url)
    client_redis.flushall()
    SCRIPTS["crm"] = Script()
    path = tmp_path / "lookup.toml"
    path.write_text(SCRIPTED)
    app = make_app(LOOKUP_CONFIG=str(path), REDIS_URL=redis_url)
    client = app.test_client()
    key = client.post("/CallFlow", json=call(1, contact="crm:1"), headers=HEADERS).get_json()
    assert key["id"] == "crm-call-1"
    # a call the previous version recorded: its ledger key holds the result
    other = call(2, contact="crm:1")
    from lookup_service.workflows import _call_record

    service = app.extensions["lookup"]
    tenant = service.tenants[0]
    record = _call_record(tenant, "CallFlow", tenant.slots[0], "1", {**other["inputs"], "direction": "incoming"},
                          "UTC")
    client_redis.set("lookup:workflow:" + record.key, json.dumps({"id": "old-7", "url": "https://crm/7"}))
    assert client.post("/CallFlow", json=other, headers=HEADERS).get_json() == {"id": "old-7", "url": "https://crm/7"}
    assert len(SCRIPTS["crm"].logged) == 1


def test_two_services_on_one_postgresql_database_record_a_call_once(make_app, tmp_path, pg):
    url = pg.create_database("shared")
    SCRIPTS["crm"] = Script()
    path = tmp_path / "lookup.toml"
    path.write_text(SCRIPTED)
    # separate state files and instance folders: only the database is shared, as between machines
    apps = [make_app(LOOKUP_CONFIG=str(path), DATABASE_URL=url.replace("postgresql+psycopg://", "postgres://"),
                     LOOKUP_STATE_DB=str(tmp_path / f"state-{i}.sqlite3"),
                     LOOKUP_INSTANCE_DIR=str(tmp_path / f"instance-{i}")) for i in range(2)]
    assert all(a.extensions["lookup"].ledger.kind == "postgresql" for a in apps)
    results: list = []
    barrier = threading.Barrier(6)

    def post(app):
        barrier.wait(10)
        results.append(app.test_client().post("/CallFlow", json=call(4, contact="crm:1"), headers=HEADERS).get_json())

    threads = [threading.Thread(target=post, args=(apps[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6 and len({r["id"] for r in results}) == 1
    assert len(SCRIPTS["crm"].logged) == 1
    assert not (tmp_path / "state-0.sqlite3").exists()


def test_an_open_breaker_spares_the_crm_and_retry_after_is_honoured(erp, api, tmp_path):
    crm, build = erp
    app = build(LOOKUP_BREAKER_FAILURES=2, LOOKUP_BREAKER_COOLDOWN=60)
    client = app.test_client()
    crm.state = "down"
    answers = [client.post("/CallFlow", json=call(i), headers=HEADERS) for i in range(10)]
    assert all(a.status_code == 200 and a.get_json()["url"] == "" for a in answers)
    assert crm.requests == 2  # then the breaker is open: the calls wait without asking the CRM
    ledger = app.extensions["lookup"].ledger
    assert all(ledger.get(a.get_json()["id"]).next_at > time.time() + 50 for a in answers[2:])

    # a 429 with Retry-After: no attempt before it
    api.route("POST", "/api/calls", lambda r: Reply(429, {"error": "slow down"}, headers={"Retry-After": "30"}))
    other = build(LOOKUP_STATE_DB=str(tmp_path / "other.sqlite3"))  # a fresh service: its breaker closed
    key = other.test_client().post("/CallFlow", json=call(20), headers=HEADERS).get_json()["id"]
    item = other.extensions["lookup"].ledger.get(key)
    assert item.state == PENDING and "rate limited" in item.error and item.next_at >= time.time() + 29


def test_the_old_sqlite_ledger_results_stay_answers(make_app, tmp_path, load_contacts):
    import sqlite3

    from tests.conftest import DEMO_CSV
    from tests.test_workflows import call as directory_call

    load_contacts(DEMO_CSV)
    app = make_app(LOOKUP_STATE_DB=str(tmp_path / "probe.sqlite3"))
    key = app.test_client().post("/CallFlow", json=directory_call(), headers={"X-Execution-Token":
                                                                             "test-token-0123456789"}).get_json()
    assert key["id"].startswith("call-")
    conn = sqlite3.connect(tmp_path / "probe.sqlite3")
    [(call_key,)] = conn.execute("SELECT key FROM workflow_outbox").fetchall()
    conn.close()
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    old.execute("CREATE TABLE workflow_runs (key TEXT PRIMARY KEY, state TEXT NOT NULL, result TEXT, "
                "claimed_at REAL NOT NULL)")
    old.execute("INSERT INTO workflow_runs VALUES (?, 'done', ?, 1)", (call_key, json.dumps({"id": "old-1",
                                                                                            "url": ""})))
    old.commit()
    old.close()
    upgraded = make_app(LOOKUP_STATE_DB=str(tmp_path / "old.sqlite3"))
    again = upgraded.test_client().post("/CallFlow", json=directory_call(),
                                        headers={"X-Execution-Token": "test-token-0123456789"}).get_json()
    assert again == {"id": "old-1", "url": ""}


def test_an_unwritable_sqlite_store_refuses_workflows_clearly_and_lookups_go_on(make_app, load_contacts, tmp_path):
    from tests.conftest import DEMO_CSV
    from tests.conftest import HEADERS as DIRECTORY_HEADERS
    from tests.test_workflows import call as directory_call

    load_contacts(DEMO_CSV)
    (tmp_path / "a-file").write_text("not a directory")
    app = make_app(LOOKUP_STATE_DB=str(tmp_path / "a-file" / "state.sqlite3"))
    client = app.test_client()
    response = client.post("/CallFlow", json=directory_call(), headers=DIRECTORY_HEADERS)
    assert response.status_code == 503 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == "outbox_unavailable" and "sqlite" in body["message"]
    assert "nothing was recorded" in body["message"]
    assert client.get("/Lookup?PhoneNumber=41215522000", headers=DIRECTORY_HEADERS).status_code == 200
    [problem] = app.extensions["lookup"].outbox_health()
    assert "sqlite" in problem["reason"]


def test_calls_survive_a_redis_restart_during_callflows(erp):
    """Redis (with persistence, as a managed Redis has it) restarts while calls wait for a CRM that
    is down and while one is being posted: no call is lost, none is recorded twice, and a post that
    meets Redis down gets a clear JSON error, never an accepted-and-lost call."""
    from tests.servers.redis import RedisServer

    crm, build = erp
    server = RedisServer(persistent=True)
    server.start()
    try:
        app = build(REDIS_URL=server.url)
        app.extensions["lookup"].start_background()
        client = app.test_client()
        crm.state = "down"
        first = [client.post("/CallFlow", json=call(i), headers=HEADERS) for i in range(3)]
        assert [r.status_code for r in first] == [200] * 3
        keys = [r.get_json()["id"] for r in first]

        crm.state = "hang"  # a post in flight while Redis goes away and comes back
        in_flight: list = []
        poster = threading.Thread(target=lambda: in_flight.append(client.post("/CallFlow", json=call(3),
                                                                              headers=HEADERS)))
        poster.start()
        time.sleep(0.2)
        server.stop()
        while_down = client.post("/CallFlow", json=call(4), headers=HEADERS)
        assert while_down.status_code in (200, 503), while_down.get_data(as_text=True)
        if while_down.status_code == 503:  # not accepted: said so, in JSON, and the connector may post again
            assert while_down.get_json()["error"] and while_down.get_json()["message"]
        server.start()
        poster.join(30)
        assert in_flight and in_flight[0].status_code in (200, 503), in_flight
        accepted = keys + [r.get_json()["id"] for r in (in_flight[0], while_down) if r.status_code == 200]

        crm.state = "up"
        assert wait_until(lambda: len(crm.recorded) >= len(accepted), timeout=60), (crm.recorded, accepted)
        assert wait_until(lambda: app.extensions["lookup"].outbox.backlog()[0] == 0, timeout=60)  # all settled
        assert all(count == 1 for count in crm.recorded.values()), crm.recorded
        again = [client.post("/CallFlow", json=call(i), headers=HEADERS) for i in range(3)]
        assert [r.status_code for r in again] == [200] * 3
        assert all(crm.recorded[key] == 1 for key in crm.recorded)
    finally:
        server.remove()


def test_a_revision_survives_an_attempt_that_ran_meanwhile(ledger_url):
    """revise is a compare and set on the payload; an attempt that delivered an older payload does
    not mark the revised item done: it keeps the record's id and leaves the item due for the update."""
    ledger = open_ledger(ledger_url)
    now = time.time()
    ledger.put("k", "t", "b", "CallFlow", '{"v": 1}', now)
    assert ledger.claim("k", "me", now)
    assert ledger.revise("k", '{"v": 1}', '{"v": 2}', now)
    assert not ledger.revise("k", '{"v": 1}', '{"v": 3}', now)  # the payload it saw is stale
    ledger.finish("k", WorkflowResult(id="rec-1"), '{"v": 1}')
    item = ledger.get("k")
    assert item.state == PENDING and item.result.id == "rec-1" and item.payload == '{"v": 2}'
    assert [i.key for i in ledger.due(time.time() + 1, 10)] == ["k"]
    assert ledger.claim("k", "me", time.time())
    ledger.finish("k", WorkflowResult(id="rec-1"), '{"v": 2}')
    assert ledger.get("k").state == DONE
    # a revision of a done item makes it pending again, keeping its result
    assert ledger.revise("k", '{"v": 2}', '{"v": 4}', time.time())
    item = ledger.get("k")
    assert item.state == PENDING and item.result.id == "rec-1" and [i.key for i in ledger.due(time.time() + 1, 10)]
    ledger.close()


def test_a_backend_that_cannot_update_keeps_its_record_and_the_later_post_is_answered(make_app, tmp_path):
    """A backend type without update_call (a third party's): the hang-up post of a call logged at
    ring gets the record's id at once, instead of an update retried for days."""
    SCRIPTS.clear()
    SCRIPTS["crm"] = Script()
    path = tmp_path / "lookup.toml"
    path.write_text('[[tenant]]\nname = "acme"\ntokens = ["acme-token-1234"]\n  [[tenant.backend]]\n'
                    '  name = "crm"\n  type = "scripted"\n  script = "crm"\n')
    client = make_app(LOOKUP_CONFIG=str(path)).test_client()
    headers = {"X-Execution-Token": "acme-token-1234"}
    ring = {"contactCrmId": "crm:1", "direction": "incoming", "originatorNumber": "41215522000",
            "startedTime": "2026-11-21T09:00:00Z"}
    first = client.post("/CallFlow", json={"inputs": ring}, headers=headers).get_json()
    final = client.post("/CallFlow", json={"inputs": {**ring, "answeredTime": "2026-11-21T09:00:05Z",
                                                      "endedTime": "2026-11-21T09:01:00Z"}}, headers=headers)
    assert final.status_code == 200 and final.get_json()["id"] == first["id"] == "crm-call-1"
    assert len(SCRIPTS["crm"].logged) == 1
    ledger = client.application.extensions["lookup"].outbox.ledger
    assert ledger.listing(("pending", "failed"), 10) == []  # nothing waits for an update that cannot come
    SCRIPTS.clear()
