"""REST backend figures against a local HTTP server: live lookup latency, mirror sync time and
mirror lookup latency.

    /work/venv/bin/python -m bench.bench_rest [--contacts 100000] [--page-size 1000] [--lookups 2000]

The server (tests/fakes/rest_api.py, a ThreadingHTTPServer) holds the contacts in memory with their
numbers written the way people type them; the live search is a dictionary look-up on the digits, so
the figures are the backend's own cost plus one local HTTP round trip.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from datetime import UTC, datetime

from bench.common import latency_figures, print_row, time_calls
from crm_backends.base import BackendSpec, load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.rest import RestBackend
from lookup_core.phone import parse_number
from tests.fakes.rest_api import FakeRestApi, Reply, Request

FORMATS = ("(021) {a} {b} {c}", "+41 21 {a} {b} {c}", "0041 21 {a}{b}{c}", "021/{a}.{b}.{c}")
OLD = datetime(2024, 1, 1, tzinfo=UTC).isoformat()


def number(i: int) -> str:
    digits = f"{5_000_000 + i:07d}"
    return FORMATS[i % len(FORMATS)].format(a=digits[:3], b=digits[3:5], c=digits[5:])


def make_contacts(count: int) -> list[dict]:
    return [
        {
            "id": i,
            "display_name": f"Person {i}",
            "company": {"name": f"Company {i % 500}"},
            "phones": [{"kind": "work", "value": number(i)}],
            "updated_at": OLD,
        }
        for i in range(1, count + 1)
    ]


def serve(contacts: list[dict]) -> FakeRestApi:
    by_tail = {re.sub(r"\D", "", c["phones"][0]["value"])[-7:]: c for c in contacts}
    api = FakeRestApi()
    api.record = False

    def search(request: Request) -> Reply:
        hit = by_tail.get(re.sub(r"\D", "", request.query.get("phone", ""))[-7:])
        return Reply(200, {"data": [hit] if hit else []})

    def listing(request: Request) -> Reply:
        size = int(request.query["per_page"])
        start = (int(request.query["page"]) - 1) * size
        rows = contacts
        if "updated_since" in request.query:
            since = request.query["updated_since"]
            rows = [c for c in contacts if c["updated_at"] >= since]
        return Reply(200, {"data": rows[start : start + size]})

    api.route("GET", "/api/contacts", search)
    api.route("GET", "/api/contacts/all", listing)
    return api.start()


def build(api: FakeRestApi, directory: str, **extra) -> RestBackend:
    table = {
        "name": "erp",
        "type": "rest",
        "lookup_url": api.url + "/api/contacts?phone={national}",
        "results": "data",
        "fields": {"id": "id", "name": "display_name", "company": "company.name", "phones": "phones[].value"},
        "list_url": api.url + "/api/contacts/all",
        "list_results": "data",
        "paging": "page",
        "since_param": "updated_since",
        "timeout": 2.0,
        **extra,
    }
    options = load_options(RestBackend, table, "bench")
    return RestBackend(BackendSpec(tenant="bench", name="erp", options=options, instance_dir=directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()

    rng = random.Random(7)
    contacts = make_contacts(args.contacts)
    api = serve(contacts)
    # half the lookups hit a contact, half a number nobody has
    numbers = [
        parse_number(f"+4121{5_000_000 + rng.randint(1, args.contacts):07d}")
        if i % 2 == 0
        else parse_number(f"+4122{rng.randint(1_000_000, 9_999_999):07d}")
        for i in range(args.lookups)
    ]
    try:
        with tempfile.TemporaryDirectory() as directory:
            live = build(api, directory)
            sample = numbers[:200]
            hits = sum(1 for n in sample if live.lookup(n, 5))
            assert hits == (len(sample) + 1) // 2, f"the bench data is wrong: {hits} hits"
            samples = time_calls(lambda i: live.lookup(numbers[i], 5), len(numbers))
            print_row("live lookup (local HTTP, keep-alive)", latency_figures(samples))

            mirror = MirroredBackend(build(api, directory, mode="mirror", page_size=args.page_size))
            started = time.perf_counter()
            outcome = mirror.sync_now()
            seconds = time.perf_counter() - started
            assert outcome.ok, outcome.error
            print_row(
                f"mirror full sync ({args.contacts} contacts, {args.page_size}/page)",
                {
                    "pages": -(-args.contacts // args.page_size),
                    "seconds": round(seconds, 2),
                    "contacts_per_s": round(outcome.written / seconds),
                },
            )

            for contact in contacts[:100]:
                contact["updated_at"] = datetime.now(UTC).isoformat()
            started = time.perf_counter()
            outcome = mirror.sync_now()
            print_row(
                "mirror incremental sync (100 changed)",
                {"written": outcome.written, "seconds": round(time.perf_counter() - started, 3)},
            )

            samples = time_calls(lambda i: mirror.lookup(numbers[i], 5), len(numbers))
            print_row("mirror lookup (SQLite)", latency_figures(samples))
            mirror.close()
            live.close()
    finally:
        api.stop()


if __name__ == "__main__":
    main()
