"""Lookup latency of the Odoo backend against the fake Odoo JSON-RPC server on 127.0.0.1.

Measures the backend's own cost (JSON-RPC request, JSON decoding, re-check of the candidates,
contact building) plus one local HTTP round trip. The fake answers a search by scanning every
partner in Python, so its share grows with ``--partners``; a real Odoo runs the same domain in
PostgreSQL, and its network latency (tens of ms for Odoo Online) comes on top in live mode and not
at all in mirror mode.

Run from the repository root: ``python -m bench.bench_odoo [--partners 5000] [--lookups 300]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import latency_figures, print_row, time_calls  # noqa: E402
from crm_backends.base import BackendSpec, load_options  # noqa: E402
from crm_backends.mirror import MirroredBackend  # noqa: E402
from crm_backends.odoo import OdooBackend  # noqa: E402
from lookup_core.phone import parse_number  # noqa: E402
from tests.fakes.odoo import OdooFake  # noqa: E402

FORMATS = ("+41 {a} {b} {c} {d}", "0{a} {b} {c} {d}", "(0{a}) {b} {c} {d}", "+41{a}{b}{c}{d}")


def fill(fake: OdooFake, count: int) -> list[str]:
    """``count`` partners (one in 20 a company, a third of the rest its contacts)."""
    rng = random.Random(7)
    numbers = []
    companies: list[int] = []
    for i in range(count):
        a, b, c, d = 44, 100 + i // 10000, (i // 100) % 100, i % 100
        text = rng.choice(FORMATS).format(a=a, b=b, c=f"{c:02d}", d=f"{d:02d}")
        field = "mobile" if i % 4 == 0 else "phone"
        if i % 20 == 0:
            companies.append(fake.add_partner(f"Company {i} SA", is_company=True, **{field: text}))
        else:
            parent = rng.choice(companies) if i % 3 == 0 else None
            fake.add_partner(f"Person {i}", email=f"p{i}@example.ch", parent_id=parent, **{field: text})
        numbers.append(f"41{a}{b}{c:02d}{d:02d}")
    return numbers


def backend_for(fake: OdooFake, workdir: str, **options) -> OdooBackend:
    table = {
        "name": "odoo",
        "type": "odoo",
        "url": fake.url,
        "database": fake.database,
        "username": fake.login,
        "api_key": fake.api_key,
        **options,
    }
    opts = load_options(OdooBackend, table, "bench")
    return OdooBackend(
        BackendSpec(tenant="bench", name="odoo", options=opts, deadline_s=2.0, instance_dir=workdir)
    )


def measure(label: str, backend, numbers, lookups: int) -> None:
    print_row(
        label, latency_figures(time_calls(lambda i: backend.lookup(numbers[i % len(numbers)], 5), lookups))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=5000)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        print(f"Odoo backend against the fake, {args.partners} partners, {args.lookups} lookups each")
        for phone_validation in (True, False):
            with OdooFake(version="17.0", phone_validation=phone_validation) as fake:
                numbers = fill(fake, args.partners)
                rng = random.Random(11)
                wanted = [parse_number(rng.choice(numbers)) for _ in range(args.lookups)]
                missing = [parse_number(f"4179{rng.randrange(10**7):07d}") for _ in range(args.lookups)]
                live = backend_for(fake, workdir)
                live.lookup(wanted[0], 5)  # authenticate, fields_get, version, warm connection
                hits = sum(1 for n in wanted[:50] if live.lookup(n, 5))
                assert hits == 50, f"only {hits} of 50 numbers found"
                how = "phone_mobile_search" if phone_validation else "=ilike pattern"
                measure(f"live, {how} (hit)", live, wanted, args.lookups)
                measure(f"live, {how} (miss)", live, missing, args.lookups)
                live.close()
                if not phone_validation:
                    continue
                store = str(Path(workdir) / "mirror.sqlite3")
                mirror = MirroredBackend(backend_for(fake, workdir), store_path=store)
                fake.clear_requests()
                started = time.perf_counter()
                outcome = mirror.sync_now()
                pages = len(fake.model_calls("res.partner", "search_read"))
                print(
                    f"mirror full sync: {outcome.written} partners in {time.perf_counter() - started:.2f} s "
                    f"({pages} pages of 500)"
                )
                fake.write_partner(10 + args.partners // 2, phone="+41 31 555 00 00")
                started = time.perf_counter()
                outcome = mirror.sync_now()
                print(
                    f"mirror incremental sync: {outcome.written} partners in "
                    f"{time.perf_counter() - started:.3f} s (1 changed + those the fake wrote within "
                    f"the 300 s overlap, one a second)"
                )
                assert all(mirror.lookup(n, 5) for n in wanted[:50]), "mirror misses numbers"
                measure("mirror (hit)", mirror, wanted, args.lookups)
                measure("mirror (miss)", mirror, missing, args.lookups)
                mirror.close()


if __name__ == "__main__":
    main()
