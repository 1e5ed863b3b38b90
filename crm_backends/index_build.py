"""The process that builds a phone index snapshot (:mod:`crm_backends.phone_index`), started by a
store that found its snapshot stale. It knows both stores (SQLite and PostgreSQL), which the
snapshot module itself does not, so neither store and the snapshot import each other."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from functools import partial

from .phone_index import PG_URL_VARIABLE, build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the phone index snapshot of a contact store.")
    parser.add_argument("database", help="the SQLite file, or with --postgres-schema the local path it stands for")
    parser.add_argument("--postgres-schema", help=f"read the directory from PostgreSQL (URL in ${PG_URL_VARIABLE})")
    arguments = parser.parse_args(argv)
    database, source = arguments.database, None
    errors: tuple[type[Exception], ...] = (OSError, sqlite3.Error)
    if arguments.postgres_schema:
        import psycopg

        from .pg_store import ranked_rows

        errors += (psycopg.Error,)
        if not os.environ.get(PG_URL_VARIABLE):
            sys.exit(f"phone index of {database}: not built: {PG_URL_VARIABLE} is not set")
        source = partial(ranked_rows, os.environ[PG_URL_VARIABLE], arguments.postgres_schema)
    try:
        report = build(database, source)
    except errors as exc:  # one line in the service's log, not a traceback
        sys.exit(f"phone index of {database}: not built: {exc}")
    if report.built:
        print(f"phone index: {report.keys} numbers in {report.seconds:.1f}s, {report.size_bytes / 1e6:.1f} MB")
    else:
        print("phone index: another build is running")


if __name__ == "__main__":
    main()
