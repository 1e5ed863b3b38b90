"""The embedded directory on PostgreSQL (DATABASE_URL) against SQLite, in the same run.

    python -m bench.bench_pg_directory [--contacts 100000] [--samples 2000]

Imports the same CSV (``bench/make_contacts.py``) into the SQLite store and into the PostgreSQL
store (a throw-away server from tests/servers/postgres.py on 127.0.0.1), then imports it again (the
update path), builds each phone index snapshot, and times lookups: from each store's snapshot,
from SQLite, and from PostgreSQL (what a process pays while its snapshot is stale). Figures are
printed with their ratio to SQLite; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shutil
import tempfile
import time

from bench.common import latency_figures, print_row, time_calls
from bench.make_contacts import number, write
from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import import_file
from crm_backends.pg_store import PgContactStore
from lookup_core.phone import parse_number
from tests.servers.postgres import PASSWORD, postgres_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-pg-directory-")
    atexit.register(shutil.rmtree, work, True)  # the data can be gigabytes: gone at exit
    csv_path = os.path.join(work, "contacts.csv")
    write(csv_path, args.contacts)
    print(f"{args.contacts} contacts, {os.path.getsize(csv_path) / 1e6:.1f} MB of CSV; {os.cpu_count()} CPUs "
          "(figures from a shared machine are noisy)", flush=True)
    with postgres_server() as pg:
        pg.create_database("bench")
        stores = {
            "sqlite": ContactStore(os.path.join(work, "directory.sqlite3")),
            "postgres": PgContactStore(f"postgres://lookup:{PASSWORD}@127.0.0.1:{pg.port}/bench", "directory",
                                       instance_dir=os.path.join(work, "instance")),
        }
        figures: dict[str, dict[str, float]] = {name: {} for name in stores}
        for name, store in stores.items():
            for step in ("import", "re-import"):
                started = time.perf_counter()
                report = import_file(store, csv_path)
                figures[name][step] = time.perf_counter() - started
                assert report.imported == args.contacts, report.problems[:3]
            report_index = store.build_index()
            figures[name]["index build"] = report_index.seconds
        for step in ("import", "re-import", "index build"):
            reference = figures["sqlite"][step]
            line = "  ".join(f"{name}={figures[name][step]:.2f}s" for name in stores)
            print(f"{step:<12} {line}  postgres/sqlite={figures['postgres'][step] / reference:.2f}", flush=True)

        rng = random.Random(1)
        keys = [parse_number(number(rng.randrange(args.contacts)), "CH") for _ in range(args.samples)]
        indexed = ContactStore(stores["sqlite"].path, phone_index=True)
        pg_indexed = PgContactStore(stores["postgres"].url, "directory", phone_index=True,
                                    instance_dir=os.path.join(work, "instance"))
        indexed.lookup(keys[0], 5)
        pg_indexed.lookup(keys[0], 5)
        time.sleep(1.1)  # the keepers open the snapshots at their next look
        results = {
            "lookup: sqlite store, snapshot": time_calls(lambda i: indexed.lookup(keys[i], 5), args.samples),
            "lookup: postgres store, snapshot": time_calls(lambda i: pg_indexed.lookup(keys[i], 5), args.samples),
            "lookup: sqlite": time_calls(lambda i: stores["sqlite"].lookup(keys[i], 5), args.samples),
            "lookup: postgres (stale snapshot)": time_calls(lambda i: stores["postgres"].lookup(keys[i], 5),
                                                          args.samples),
        }
        reference = latency_figures(results["lookup: sqlite"])["p50_ms"]
        for label, samples in results.items():
            row = latency_figures(samples)
            row["p50_vs_sqlite"] = round(row["p50_ms"] / reference, 2) if reference else 0.0
            print_row(label, row)
        indexed.close()
        pg_indexed.close()
        for store in stores.values():
            store.close()


if __name__ == "__main__":
    main()
