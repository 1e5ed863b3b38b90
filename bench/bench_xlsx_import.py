"""Import of a 100,000-row Excel workbook against the same rows as CSV, measured in the same run.

Writes both files to a temporary directory (the rows of a hand-kept sheet: company, first and last
name, an office number stored as a number cell or typed text, a mobile, an e-mail), runs
``flask --app wsgi directory import`` on each in alternating rounds into a fresh directory, and
prints wall time and the peak memory (PSS of the process tree) of each and their ratio. Figures
only, nothing asserted; on a shared machine they are noisy, so the best round of each is kept.

    .venv/bin/python -m bench.bench_xlsx_import [--rows 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_service import measure_command  # noqa: E402

HEADER = ["Firma", "Vorname", "Nachname", "Telefon", "Mobil", "E-Mail"]


def rows(count: int):
    """Row i: a Zurich office number (+41 44 300 00 00 + i) and a mobile, in the shapes people keep."""
    for i in range(count):
        office = 41443000000 + i
        digits = str(office)[4:]
        if i % 3 == 0:
            phone: int | float | str = office  # a number cell
        elif i % 3 == 1:
            phone = float(office)  # a number cell written by a tool as a float
        else:
            phone = f"044 {digits[:3]} {digits[3:5]} {digits[5:]}"
        mobile = f"079 {i % 1000:03d} {i // 1000 % 100:02d} {i % 97:02d}"
        yield [f"Firma {i % 5000} AG", f"Vorname{i}", f"Nachname{i}", phone, mobile, f"p{i}@example.com"]


def write_xlsx(path: str, count: int) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Kontakte")
    sheet.append(HEADER)
    for row in rows(count):
        sheet.append(row)
    workbook.save(path)


def write_csv(path: str, count: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(HEADER)
        for row in rows(count):
            value = row[3]
            writer.writerow([*row[:3], str(int(value)) if isinstance(value, int | float) else value, *row[4:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is printed")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lookup-bench-xlsx-")
    try:
        xlsx_path = os.path.join(work, "contacts.xlsx")
        csv_path = os.path.join(work, "contacts.csv")
        write_xlsx(xlsx_path, args.rows)
        write_csv(csv_path, args.rows)
        print(f"machine: {os.cpu_count()} cores (shared: figures are noisy); {args.rows} rows; "
              f"xlsx {os.path.getsize(xlsx_path) / 1e6:.1f} MB, csv {os.path.getsize(csv_path) / 1e6:.1f} MB; "
              f"{args.rounds} alternating rounds, best of each", flush=True)
        best: dict[str, dict] = {}
        for round_number in range(args.rounds):
            for label, path in (("csv (reference)", csv_path), ("xlsx", xlsx_path)):
                target = os.path.join(work, f"run-{round_number}-{label[:4]}")
                env = {
                    "LOOKUP_TOKENS": "bench-token-0123456789",
                    "LOOKUP_DIRECTORY": os.path.join(target, "directory.sqlite3"),
                    "LOOKUP_STATE_DB": os.path.join(target, "state.sqlite3"),
                    "LOOKUP_INSTANCE_DIR": os.path.join(target, "instance"),
                    "LOOKUP_PHONE_INDEX": "0",
                }
                figures = measure_command(["directory", "import", path], env)
                summary = figures["summary"].split(" (read ")[0]
                print(f"round {round_number + 1} {label:<16} seconds={figures['seconds']}  "
                      f"peak_memory_mb={figures['peak_pss_mb']}  ({summary})", flush=True)
                if label not in best or figures["seconds"] < best[label]["seconds"]:
                    best[label] = figures
                shutil.rmtree(target, ignore_errors=True)
        reference, workbook = best["csv (reference)"], best["xlsx"]
        print(f"{'import of ' + str(args.rows) + ' csv rows (reference)':<44} seconds={reference['seconds']}  "
              f"peak_memory_mb={reference['peak_pss_mb']} (PSS, process tree)")
        print(f"{'import of ' + str(args.rows) + ' xlsx rows':<44} seconds={workbook['seconds']}  "
              f"peak_memory_mb={workbook['peak_pss_mb']} (PSS, process tree)")
        print(f"{'ratio xlsx / csv':<44} seconds={workbook['seconds'] / reference['seconds']:.2f}  "
              f"peak_memory={workbook['peak_pss_mb'] / reference['peak_pss_mb']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
