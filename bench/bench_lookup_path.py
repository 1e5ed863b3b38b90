"""Where the time of one lookup goes, stage by stage, in one process and one thread.

Builds a directory of N synthetic contacts and its phone index snapshot, then times each stage of
an uncached lookup of random numbers (best of 3 passes) and whole requests through the WSGI
callables: the bare Flask reference, the service answering from its cache, and uncached (from the
snapshot, then from SQLite). No server and no network: this is the cost a worker pays per request
before the server's own, so a change to the hot path can be judged here in seconds.

    python -m bench.bench_lookup_path [--contacts 200000] [--lookups 20000]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.make_contacts import write as write_contacts  # noqa: E402

TOKEN = "bench-token-0123456789"
FIRST = 2000000


def best_us(count: int, run: Callable[[], object]) -> float:
    """Microseconds per item of the fastest of three passes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def environ(query: str) -> dict:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/Lookup", "QUERY_STRING": query, "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "SCRIPT_NAME": "",
            "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "bench", "HTTP_X_EXECUTION_TOKEN": TOKEN}


def requests(app, queries: list[str]) -> Callable[[], None]:
    def start_response(status, headers, exc_info=None):
        assert status.startswith("200"), status

    def run() -> None:
        for query in queries:
            body = app(environ(query), start_response)
            b"".join(body)
            body.close()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lookup-path-")
    try:
        directory = os.path.join(work, "directory.sqlite3")
        os.environ.update(LOOKUP_TOKENS=TOKEN, LOOKUP_DIRECTORY=directory, LOOKUP_INSTANCE_DIR=work,
                          LOOKUP_STATE_DB=os.path.join(work, "state.sqlite3"), LOOKUP_ACCESS_LOG="0")
        from crm_backends.contact_store import ContactStore
        from crm_backends.directory_import import import_file
        from crm_backends.phone_index import build
        from lookup_core.phone import _parse_cached, parse_number
        from lookup_service import create_app
        from lookup_service.engine import Answer, Match

        csv_path = os.path.join(work, "contacts.csv")
        write_contacts(csv_path, args.contacts)
        store = ContactStore(directory)
        import_file(store, csv_path)
        store.close()
        build(directory)

        rng = random.Random(1)
        raw = [f"4144{FIRST + rng.randrange(args.contacts)}" for _ in range(args.lookups)]
        queries = [f"PhoneNumber={r}" for r in raw]
        numbers = [parse_number(r, "CH") for r in raw]
        n = args.lookups
        print(f"{args.contacts} contacts, {n} random numbers; microseconds per lookup, best of 3 passes")

        uncached = {"LOOKUP_CACHE_TTL": "0", "LOOKUP_NEGATIVE_CACHE_TTL": "0"}
        for label, settings in (("from the snapshot", {}), ("from SQLite", {"LOOKUP_PHONE_INDEX": "0"})):
            app = create_app({**os.environ, **uncached, **settings})
            service = app.extensions["lookup"]
            tenant = service.tenants[0]
            slot = tenant.slots[0]
            engine = service.engine
            engine.lookup_rendered(tenant, numbers[0])  # opens the snapshot
            print(f"--- uncached, {label}")

            def parse_all() -> None:
                _parse_cached.cache_clear()
                for text in raw:
                    parse_number(text, "CH")

            contact = slot.backend.lookup(numbers[0], 5)[0]
            stages = (
                ("number parsing", parse_all),
                ("directory lookup", lambda s=slot: [s.backend.lookup(x, 5) for x in numbers]),
                ("contact to JSON", lambda s=slot, c=contact, e=engine: [e.render(Answer((Match(c, s),)))
                                                                         for _ in numbers]),
                ("engine.lookup_rendered (all of the above but parsing)",
                 lambda t=tenant, e=engine: [e.lookup_rendered(t, x) for x in numbers]),
                ("whole request (WSGI)", requests(app, queries)),
            )
            for stage, run in stages:
                print(f"  {stage:<46} {best_us(n, run):7.2f}")
            service.close()

        print("--- references")
        hits = create_app(dict(os.environ))
        requests(hits, queries)()  # fills the cache
        print(f"  {'service, every answer from the cache':<46} {best_us(n, requests(hits, queries)):7.2f}")
        hits.extensions["lookup"].close()
        from bench.bare_flask import app as bare

        print(f"  {'bare Flask app, same token check':<46} {best_us(n, requests(bare, queries)):7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
