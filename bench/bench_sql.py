"""Lookup latency of the sql backend, live and mirrored, and the time to mirror a large table.

    python -m bench.bench_sql [--contacts 100000] [--samples 1000] [--no-postgres]

The source table holds ``--contacts`` customers whose numbers are typed in four styles
(``(021) 552 20 00``, ``+41 21 552 20 00``, ``0041215522000``, ``021/5522000``). Live lookups are
measured three ways: an indexed digits-only column, a digits-only expression with an expression
index, and the same expression without an index (a full scan: what to avoid). PostgreSQL is used
when its server binaries are installed (a throw-away server from tests/servers/postgres.py).
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import latency_figures, print_row, time_calls
from crm_backends.base import BackendSpec, load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.sql import SqlBackend
from lookup_core.phone import parse_number

AREAS = ["21", "22", "31", "44", "61", "71", "91", "79", "78", "76"]
COLUMNS = "id, first_name, last_name, company, phone, phone_digits"
FIELDS = {"id": "id", "first_name": "first_name", "last_name": "last_name", "company": "company",
          "phones": ["phone"]}
SQLITE_DIGITS = (
    "REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(phone, ' ', ''), '(', ''), ')', ''), '/', ''), '+', '')"
)
PG_DIGITS = "regexp_replace(phone, '[^0-9]', '', 'g')"


def number_parts(i: int) -> tuple[str, str]:
    return AREAS[i % len(AREAS)], f"{3000000 + i:07d}"


def typed(i: int) -> str:
    area, rest = number_parts(i)
    style = i % 4
    if style == 0:
        return f"(0{area}) {rest[:3]} {rest[3:5]} {rest[5:]}"
    if style == 1:
        return f"+41 {area} {rest[:3]} {rest[3:5]} {rest[5:]}"
    if style == 2:
        return f"0041{area}{rest}"
    return f"0{area}/{rest}"


def rows(count: int) -> Iterator[tuple]:
    for i in range(count):
        phone = typed(i)
        digits = "".join(ch for ch in phone if ch.isdigit())
        yield (i + 1, f"First{i}", f"Last{i}", f"Company {i % 5000}", phone, digits)


def lookup_numbers(count: int, samples: int) -> list[str]:
    rng = random.Random(7)
    picked = []
    for _ in range(samples):
        area, rest = number_parts(rng.randrange(count))
        picked.append(f"41{area}{rest}")
    return picked


def make_backend(url: str, workdir: str, **options: object) -> SqlBackend:
    raw = {"name": "erp", "type": "sql", "url": url, "fields": FIELDS, **options}
    opts = load_options(SqlBackend, raw, "bench")
    spec = BackendSpec(tenant="bench", name="erp", options=opts, deadline_s=2.0, instance_dir=workdir)
    return SqlBackend(spec)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, url: str, digits_expr: str, count: int, samples: int, workdir: str) -> None:
    numbers = lookup_numbers(count, samples)
    variants = [
        ("indexed digits column", "phone_digits IN (:digits, :national, :digits00)", samples),
        ("digits expression, expression index", f"{digits_expr} IN (:digits, :national, :digits00)", samples),
        ("digits expression, no index (scan)", f"{digits_expr} || '' IN (:digits, :national, :digits00)",
         max(20, samples // 50)),
    ]
    for name, where, n in variants:
        query = f"SELECT {COLUMNS} FROM customers WHERE {where} LIMIT :limit"
        backend = make_backend(url, workdir, query=query)
        backend.check()
        found = 0

        def one(i: int, backend: SqlBackend = backend) -> None:
            nonlocal found
            found += len(backend.lookup(parse_number(numbers[i % len(numbers)]), 5))

        figures = latency_figures(time_calls(one, n))
        figures["found"] = found
        print_row(f"{label} live: {name}", figures)
        backend.close()

    source = make_backend(url, workdir, mode="mirror", list_query=f"SELECT {COLUMNS} FROM customers",
                          batch_size=1000)
    # reading the source alone, without the mirror's normalization and writes
    started = time.perf_counter()
    listed = sum(len(batch.contacts) for batch in source.sync(None))
    print_row(f"{label} mirror: list_query read only",
              {"contacts": listed, "seconds": round(time.perf_counter() - started, 3)})
    mirror = MirroredBackend(source, store_path=str(Path(workdir) / f"mirror-{label}.sqlite3"))
    rss_before = peak_rss_mb()
    outcome = mirror.sync_now(full=True)
    print_row(
        f"{label} mirror: full sync",
        {"contacts": outcome.written, "seconds": outcome.seconds,
         "per_s": round(outcome.written / max(outcome.seconds, 1e-9)),
         "peak_rss_mb_before": round(rss_before), "peak_rss_mb_after": round(peak_rss_mb())},
    )
    if not outcome.ok:
        print(f"  sync failed: {outcome.error}", file=sys.stderr)
    found = 0

    def mirrored(i: int) -> None:
        nonlocal found
        found += len(mirror.lookup(parse_number(numbers[i % len(numbers)]), 5))

    figures = latency_figures(time_calls(mirrored, samples))
    figures["found"] = found
    print_row(f"{label} mirror: lookup", figures)
    mirror.close()


def build_sqlite(path: str, count: int) -> str:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, company TEXT, "
        "phone TEXT, phone_digits TEXT)"
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", rows(count))
    conn.execute("CREATE INDEX customers_digits ON customers (phone_digits)")
    conn.execute(f"CREATE INDEX customers_phone_expr ON customers ({SQLITE_DIGITS})")
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return f"sqlite:///{path}"


def build_postgres(server, count: int) -> str:
    import psycopg

    url = server.create_database("bench")
    with psycopg.connect(server.dsn("bench")) as conn:
        conn.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, company TEXT, "
            "phone TEXT, phone_digits TEXT)"
        )
        with conn.cursor().copy(f"COPY customers ({COLUMNS}) FROM STDIN") as copy:
            for row in rows(count):
                copy.write_row(row)
        conn.execute("CREATE INDEX customers_digits ON customers (phone_digits)")
        conn.execute(f"CREATE INDEX customers_phone_expr ON customers (({PG_DIGITS}))")
        conn.execute("ANALYZE customers")
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"{args.contacts} contacts, {args.samples} lookups per variant (scans: fewer)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sql-") as workdir:
        started = time.perf_counter()
        url = build_sqlite(str(Path(workdir) / "erp.sqlite3"), args.contacts)
        print(f"sqlite source built in {time.perf_counter() - started:.1f}s", flush=True)
        measure("sqlite", url, SQLITE_DIGITS, args.contacts, args.samples, workdir)
        if args.no_postgres:
            return
        try:
            from tests.servers.postgres import PostgresMissing, postgres_server
        except ImportError as exc:
            print(f"postgresql skipped: {exc}")
            return
        try:
            with postgres_server() as server:
                started = time.perf_counter()
                url = build_postgres(server, args.contacts)
                print(f"postgresql source built in {time.perf_counter() - started:.1f}s", flush=True)
                measure("postgresql", url, PG_DIGITS, args.contacts, args.samples, workdir)
        except PostgresMissing as exc:
            print(f"postgresql skipped: {exc}")


if __name__ == "__main__":
    main()
