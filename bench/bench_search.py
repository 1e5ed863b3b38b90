"""Name search (GET /contacts/search) on a large directory, against a lookup by number in the same run.

    python -m bench.bench_search [--contacts 1000000] [--samples 500] [--store sqlite|postgres]

Imports ``bench/make_contacts.py``'s CSV (plus a few accented names) into a SQLite directory, then
times, through the Flask app (no network): ``/Lookup`` by number (the reference), searches for a
whole first name, a name prefix shared by about 1 in 10,000 contacts, an accented name from its
unaccented prefix, two words, the first digits of a number, and a one-letter prefix (the worst case:
a third of the directory matches). Figures are p50/p99 in ms and their ratio to the lookup; on a
shared machine they are noisy. ``--store postgres`` puts the directory in a throw-away PostgreSQL
(tests/servers/postgres.py, on 127.0.0.1) as ``DATABASE_URL`` does: the search then runs on its
pg_trgm index, the lookups on the phone index snapshot.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shutil
import tempfile
import time
from contextlib import ExitStack

from bench.common import latency_figures, print_row, time_calls
from bench.make_contacts import number, write
from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import import_file
from crm_backends.pg_store import PgContactStore
from lookup_service import create_app

TOKEN = "bench-token-0123456789"
HEADERS = {"X-Execution-Token": TOKEN}
ACCENTED = "id;first_name;last_name;company;phone_work\n" + "".join(
    f"acc{i};Jürg;Müller{i};Zürcher Kantonalbank;+41 31 {3000000 + i}\n" for i in range(50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with ExitStack() as stack:
        database_url = None
        if args.store == "postgres":
            from tests.servers.postgres import PASSWORD, postgres_server

            pg = stack.enter_context(postgres_server())
            pg.create_database("bench")
            database_url = f"postgres://lookup:{PASSWORD}@127.0.0.1:{pg.port}/bench"
        run(args, database_url)


def run(args: argparse.Namespace, database_url: str | None) -> None:
    work = tempfile.mkdtemp(prefix="bench-search-")
    atexit.register(shutil.rmtree, work, True)  # the data can be gigabytes: gone at exit
    csv_path = os.path.join(work, "contacts.csv")
    write(csv_path, args.contacts)
    accented = os.path.join(work, "accented.csv")
    with open(accented, "w", encoding="utf-8") as handle:
        handle.write(ACCENTED)
    directory = os.path.join(work, "directory.sqlite3")
    store = PgContactStore(database_url, "directory_default_directory", "CH", instance_dir=work) if database_url \
        else ContactStore(directory, "CH")
    started = time.perf_counter()
    import_file(store, csv_path)
    import_file(store, accented)
    store.close()
    print(f"{args.contacts} contacts imported (with the search index) in {time.perf_counter() - started:.0f}s; "
          f"into {args.store}; {os.cpu_count()} CPUs (figures from a shared machine are noisy)", flush=True)
    settings = {"LOOKUP_TOKENS": TOKEN, "LOOKUP_DIRECTORY": directory, "LOOKUP_ACCESS_LOG": "0",
                "LOOKUP_STATE_DB": os.path.join(work, "state.sqlite3"), "LOOKUP_INSTANCE_DIR": work,
                "LOOKUP_LOG_LEVEL": "WARNING", "LOOKUP_CACHE_TTL": "0", "LOOKUP_NEGATIVE_CACHE_TTL": "0"}
    if database_url:
        settings["DATABASE_URL"] = database_url
    app = create_app(settings)
    app.testing = True
    client = app.test_client()
    rng = random.Random(7)
    picks = [rng.randrange(args.contacts) for _ in range(args.samples)]

    def get(url: str) -> None:
        response = client.get(url, headers=HEADERS)
        assert response.status_code == 200, response.get_data(as_text=True)

    # the reference: a lookup by number; the cache is off (TTL 0), so each one reads the store
    def lookup(i: int) -> None:
        get(f"/Lookup?PhoneNumber={number(picks[i])[1:]}")

    get("/contacts/search?searchString=warm")  # opens the connection and the index once
    reference = latency_figures(time_calls(lookup, args.samples))
    print_row("lookup by number (reference)", reference)
    cases = {
        "whole first name (first123456)": lambda i: f"first{picks[i]}",
        "prefix, ~1 in 10,000 (last1234..)": lambda i: f"last{picks[i] // 100 + 1000}"[:8],
        "prefix, ~1 in 100 (last12)": lambda i: f"last{picks[i] % 90 + 10}",
        "accented from plain (mull)": lambda i: "mull",
        "two words (jurg mu)": lambda i: "jurg mu",
        "digits (04420012..)": lambda i: f"0442{picks[i]:06d}"[:8],
        "one letter (f), worst case": lambda i: "f",
    }
    for label, term in cases.items():
        samples = time_calls(lambda i, term=term: get(f"/contacts/search?searchString={term(i)}&limit=20"),
                             args.samples)
        figures = latency_figures(samples)
        ratio = figures["p50_ms"] / reference["p50_ms"] if reference["p50_ms"] else 0.0
        print_row(f"search: {label}", {**figures, "x_lookup_p50": round(ratio, 1)})
    app.extensions["lookup"].close()


if __name__ == "__main__":
    main()
