"""Lookup latency of the HubSpot backend against the fake HubSpot API on 127.0.0.1.

Measures the backend's own cost (request building, JSON, re-check, company resolution) over a local
HTTP round trip; HubSpot's real latency (typically tens to hundreds of ms) comes on top in live mode
and not at all in mirror mode. The fake's 4-a-second search limit is lifted for the live runs, and
one run shows what a burst above it gets.

Run from the repository root: ``python -m bench.bench_hubspot [--contacts 5000] [--lookups 500]``.
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
from crm_backends.base import BackendSpec, load_options
from crm_backends.hubspot import HubSpotBackend  # noqa: E402
from crm_backends.mirror import MirroredBackend  # noqa: E402
from lookup_core.errors import RateLimited
from lookup_core.phone import parse_number  # noqa: E402
from tests.fakes.hubspot import PORTAL_ID, TOKEN, FakeHubSpot  # noqa: E402

FORMATS = ("+41 {a} {b} {c} {d}", "0{a} {b} {c} {d}", "+41{a}{b}{c}{d}")


def fill(fake: FakeHubSpot, count: int) -> list[str]:
    """``count`` contacts, a third with a primary company; returns the numbers to look up."""
    rng = random.Random(7)
    numbers = []
    companies = [fake.add_company(f"Company {i} SA") for i in range(max(1, count // 20))]
    for i in range(count):
        a, b, c, d = 44, 100 + i // 10000, (i // 100) % 100, i % 100
        text = rng.choice(FORMATS).format(a=a, b=b, c=f"{c:02d}", d=f"{d:02d}")
        prop = "phone" if i % 4 else "mobilephone"
        contact = fake.add_contact(
            firstname=f"First{i}", lastname=f"Last{i}", email=f"p{i}@example.ch", **{prop: text}
        )
        if i % 3 == 0:
            fake.associate(contact, rng.choice(companies), primary=True)
        numbers.append(f"41{a}{b}{c:02d}{d:02d}")
    return numbers


def backend_for(fake: FakeHubSpot, workdir: str, **options) -> HubSpotBackend:
    table = {
        "name": "hs",
        "type": "hubspot",
        "access_token": TOKEN,
        "base_url": fake.url,
        "portal_id": PORTAL_ID,
    }
    table.update(options)
    opts = load_options(HubSpotBackend, table, "bench")
    return HubSpotBackend(
        BackendSpec(tenant="bench", name="hs", options=opts, deadline_s=2.0, instance_dir=workdir)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--lookups", type=int, default=500)
    args = parser.parse_args()

    with FakeHubSpot(search_rate=None) as fake, tempfile.TemporaryDirectory() as workdir:
        numbers = fill(fake, args.contacts)
        rng = random.Random(11)
        wanted = [parse_number(rng.choice(numbers)) for _ in range(args.lookups)]
        missing = [parse_number(f"4179{rng.randrange(10**7):07d}") for _ in range(args.lookups)]
        print(f"HubSpot backend against the fake, {args.contacts} contacts, {args.lookups} lookups each")

        plain = backend_for(fake, workdir, resolve_company=False)
        plain.lookup(wanted[0], 5)  # warm the connection
        hits = sum(1 for n in wanted[:50] if plain.lookup(n, 5))
        assert hits == 50, f"only {hits} of 50 numbers found"
        print_row(
            "live, search only (hit)",
            latency_figures(time_calls(lambda i: plain.lookup(wanted[i], 5), args.lookups)),
        )
        print_row(
            "live, search only (miss)",
            latency_figures(time_calls(lambda i: plain.lookup(missing[i], 5), args.lookups)),
        )

        full = backend_for(fake, workdir)
        full.lookup(wanted[0], 5)
        print_row(
            "live, + primary company (hit)",
            latency_figures(time_calls(lambda i: full.lookup(wanted[i], 5), args.lookups)),
        )

        mirror = MirroredBackend(backend_for(fake, workdir), store_path=str(Path(workdir) / "mirror.sqlite3"))
        started = time.perf_counter()
        outcome = mirror.sync_now()
        print(
            f"mirror full sync: {outcome.written} contacts in {time.perf_counter() - started:.2f} s "
            f"({len(fake.recorded(path='/crm/v3/objects/contacts'))} list pages)"
        )
        assert all(mirror.lookup(n, 5) for n in wanted[:50]), "the mirror misses numbers"
        print_row(
            "mirror (hit)", latency_figures(time_calls(lambda i: mirror.lookup(wanted[i], 5), args.lookups))
        )
        print_row(
            "mirror (miss)", latency_figures(time_calls(lambda i: mirror.lookup(missing[i], 5), args.lookups))
        )

        fake.search_rate = 4
        time.sleep(1.1)
        limited = answered = 0
        for number in wanted[:20]:
            try:
                plain.lookup(number, 5)
                answered += 1
            except RateLimited:
                limited += 1
        print(
            f"burst of 20 live lookups at once with HubSpot's 4/s search limit: {answered} answered, "
            f"{limited} RateLimited (the engine's token bucket and cache/mirror absorb these)"
        )
        mirror.close()
        plain.close()
        full.close()


if __name__ == "__main__":
    main()
