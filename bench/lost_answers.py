"""Lost answers against the fakes: every call's first create is carried out and its answer lost;
another worker (a new backend instance, nothing in memory) posts the call again. Prints, per backend,
how many records the CRM holds afterwards (duplicates must be 0) and what the check before each
create costs: the median time of one log_call with the check and without it, measured in the same
run (local HTTP round trips; a real CRM's latency comes on top of each extra request). Then the same
for SMS digests (MessageLog) on HubSpot and Pipedrive: each day's first message is created with its
answer lost, another worker retries it with the day's second message too; one record per digest
must hold both.

Run from the repository root: ``python -m bench.lost_answers [--calls 50]``.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crm_backends.base import Backend, BackendSpec, load_options
from crm_backends.hubspot import HubSpotBackend  # noqa: E402
from crm_backends.pipedrive import PipedriveBackend  # noqa: E402
from crm_backends.rest import RestBackend  # noqa: E402
from lookup_core.errors import BackendUnavailable
from lookup_core.types import CallRecord, Message, MessageLog
from tests.fakes.hubspot import PORTAL_ID, FakeHubSpot  # noqa: E402
from tests.fakes.hubspot import TOKEN as HUBSPOT_TOKEN  # noqa: E402
from tests.fakes.pipedrive import API_TOKEN, FakePipedrive  # noqa: E402
from tests.fakes.rest_api import FakeRestApi, Reply, Request  # noqa: E402

START = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


def build(cls: type[Backend], table: dict, workdir: str) -> Backend:
    options = load_options(cls, {"name": "crm", **table}, "bench")
    return cls(BackendSpec(tenant="bench", name="crm", options=options, instance_dir=workdir))


def calls(contact_id: str, count: int, prefix: str) -> list[CallRecord]:
    return [
        CallRecord(contact_id=contact_id, direction="incoming", originator_number="+41215522000",
                   started=START + timedelta(minutes=i), ended=START + timedelta(minutes=i, seconds=40),
                   key=f"{prefix}{i:060d}")
        for i in range(count)
    ]


def run(name: str, make: Callable[[bool], Backend], lose: Callable[[], None], records: Callable[[], int],
        contact_id: str, count: int) -> None:
    lost = 0
    for call in calls(contact_id, count, "a"):
        lose()
        first, retry = make(True), make(True)  # two workers
        try:
            first.log_call(call)
        except BackendUnavailable:
            lost += 1
        retry.log_call(call)
        first.close()
        retry.close()
    stored = records()
    timings = {}
    for dedupe in (True, False):
        backend = make(dedupe)
        samples = []
        for call in calls(contact_id, count, "b" if dedupe else "c"):
            started = time.perf_counter()
            backend.log_call(call)
            samples.append(time.perf_counter() - started)
        backend.close()
        timings[dedupe] = statistics.median(samples) * 1000
    ratio = timings[True] / timings[False] if timings[False] else float("nan")
    print(f"{name:<10} calls {count:>4}  answers lost {lost:>4}  records {stored:>4}  duplicates {stored - count:>3}"
          f"   log_call median {timings[True]:.1f} ms with the check, {timings[False]:.1f} ms without (x{ratio:.2f})")


def digests(contact_id: str, count: int) -> list[MessageLog]:
    """One SMS digest per day, ``count`` days; each with two messages."""
    logs = []
    for day in range(count):
        moment = START + timedelta(days=day)
        messages = tuple(Message(id=f"m{day}-{n}", time=moment + timedelta(minutes=n), direction="incoming",
                                 from_number="+41215522000", to_number="+41445001020", text=f"message {n}")
                         for n in (1, 2))
        logs.append(MessageLog(contact_id=contact_id, kind="SMS", conversation_id="c", day=moment.date().isoformat(),
                               zone="UTC", messages=messages, key=f"d{day:060d}"))
    return logs


def run_messages(name: str, make: Callable[[], Backend], lose: Callable[[], None], records: Callable[[], list[str]],
                 contact_id: str, count: int) -> None:
    lost = 0
    for digest in digests(contact_id, count):
        lose()
        first, retry = make(), make()  # two workers
        try:
            first.log_message(_first_message(digest))
        except BackendUnavailable:
            lost += 1
        retry.log_message(digest)  # the retry carries the day's second message by now
        first.close()
        retry.close()
    bodies = records()
    complete = sum(1 for body in bodies if "message 1" in body and "message 2" in body)
    print(f"{name:<10} digests {count:>4}  answers lost {lost:>4}  records {len(bodies):>4}  "
          f"duplicates {len(bodies) - count:>3}  holding both messages {complete:>4}")


def _first_message(digest: MessageLog) -> MessageLog:
    return MessageLog(contact_id=digest.contact_id, kind=digest.kind, conversation_id=digest.conversation_id,
                      day=digest.day, zone=digest.zone, messages=digest.messages[:1], key=digest.key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    count = parser.parse_args().calls
    workdir = tempfile.mkdtemp(prefix="lost-answers-")
    atexit.register(shutil.rmtree, workdir, True)  # the data can be gigabytes: gone at exit

    with FakeHubSpot(search_rate=None) as fake:
        anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
        table = {"type": "hubspot", "access_token": HUBSPOT_TOKEN, "base_url": fake.url, "portal_id": PORTAL_ID}
        run("hubspot", lambda dedupe: build(HubSpotBackend, {**table, "dedupe_calls": dedupe}, workdir),
            lambda: fake.lose_next(path="/crm/v3/objects/calls"), lambda: len(fake.calls), anna, count)

    with FakePipedrive() as fake:
        person = str(fake.add_person("Anna Keller", ["+41 21 552 20 00"]))
        table = {"type": "pipedrive", "api_token": API_TOKEN, "company_domain": "acme", "base_url": fake.base_url,
                 "call_log_as": "call_log", "timeout": 2.0}
        run("pipedrive", lambda dedupe: build(PipedriveBackend, {**table, "dedupe_calls": dedupe}, workdir),
            lambda: fake.lose_next(path_prefix="/api/v1/callLogs"), lambda: len(fake.call_logs), person, count)

    api = FakeRestApi().start()
    stored: list[str] = []
    pending = {"lose": 0}

    def create(request: Request) -> Reply:
        stored.append(request.json()["key"])
        if pending["lose"]:
            pending["lose"] -= 1
            return Reply(201, {"id": len(stored)}, drop=True)
        return Reply(201, {"id": len(stored)})

    api.route("POST", "/api/contacts/C3/calls", create)
    api.route("GET", "/api/calls", lambda r: Reply(200, [{"id": i + 1} for i, k in enumerate(stored)
                                                          if k == r.query.get("key")]))
    table = {"type": "rest", "lookup_url": api.url + "/api/contacts?phone={e164}",
             "fields": {"id": "id", "name": "name", "phones": "phone"}, "timeout": 2.0}
    call_log = {"request_url": api.url + "/api/contacts/{contact_id}/calls", "body": {"key": "{call_key}"}, "id": "id"}
    find = {"request_url": api.url + "/api/calls?key={call_key}"}

    def rest(dedupe: bool) -> Backend:
        return build(RestBackend, {**table, "call_log": {**call_log, **({"find_call": find} if dedupe else {})}},
                     workdir)

    run("rest", rest, lambda: pending.__setitem__("lose", 1), lambda: len(stored), "C3", count)
    api.stop()

    with FakeHubSpot(search_rate=None) as fake:
        anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
        table = {"type": "hubspot", "access_token": HUBSPOT_TOKEN, "base_url": fake.url, "portal_id": PORTAL_ID}
        run_messages("hubspot", lambda: build(HubSpotBackend, table, workdir),
                     lambda: fake.lose_next(path="/crm/v3/objects/communications"),
                     lambda: [c.properties.get("hs_communication_body", "") for c in fake.communications.values()],
                     anna, count)

    with FakePipedrive() as fake:
        person = str(fake.add_person("Anna Keller", ["+41 21 552 20 00"]))
        fake.add_activity_type("sms", "SMS")
        table = {"type": "pipedrive", "api_token": API_TOKEN, "company_domain": "acme", "base_url": fake.base_url,
                 "timeout": 2.0}
        run_messages("pipedrive", lambda: build(PipedriveBackend, table, workdir),
                     lambda: fake.lose_next(path_prefix="/api/v2/activities"),
                     lambda: [a["note"] for a in fake.activities if not a.get("is_deleted")], person, count)


if __name__ == "__main__":
    main()
