"""Pipedrive backend figures against the fake Pipedrive API: live lookup latency (one and two
searches a lookup), mirror sync time and mirror lookup latency.

    /work/venv/bin/python -m bench.bench_pipedrive [--persons 5000] [--lookups 300]

The fake (tests/fakes/pipedrive.py, a ThreadingHTTPServer) scans every person's phones for each
search, so live figures grow with --persons; they are the backend's own cost plus local HTTP round
trips, not Pipedrive's (the real search adds a network round trip to Pipedrive and its search time).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from bench.common import latency_figures, print_row, time_calls
from crm_backends.base import BackendSpec, load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.pipedrive import PipedriveBackend
from lookup_core.phone import parse_number
from tests.fakes.pipedrive import API_TOKEN, FakePipedrive

FORMATS = ("+41 21 {a} {b} {c}", "021 {a} {b} {c}", "0041 21 {a} {b} {c}", "(021) {a} {b} {c}")


def stored(i: int) -> str:
    digits = f"{5_000_000 + i:07d}"
    return FORMATS[i % len(FORMATS)].format(a=digits[:3], b=digits[3:5], c=digits[5:])


def backend(fake: FakePipedrive, directory: str, **options) -> PipedriveBackend:
    raw = {
        "name": "crm",
        "type": "pipedrive",
        "api_token": API_TOKEN,
        "company_domain": "acme",
        "base_url": fake.base_url,
        "timeout": 5.0,
        **options,
    }
    opts = load_options(PipedriveBackend, raw, "bench")
    return PipedriveBackend(BackendSpec(tenant="bench", name="crm", options=opts, instance_dir=directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(7)

    with FakePipedrive() as fake, tempfile.TemporaryDirectory() as directory:
        orgs = [fake.add_org(f"Company {i}") for i in range(max(1, args.persons // 10))]
        for i in range(args.persons):
            fake.add_person(f"Person {i}", [stored(i)], org_id=orgs[i % len(orgs)])
        numbers = [
            parse_number(f"4121{5_000_000 + rng.randrange(args.persons):07d}") for _ in range(args.lookups)
        ]
        print(f"fake Pipedrive with {args.persons} persons, {len(orgs)} organizations", flush=True)

        for terms in (["nsn"], ["nsn", "e164"]):
            live = backend(fake, directory, search_terms=terms)
            hits = sum(bool(live.lookup(n, 5)) for n in numbers[:20])
            samples = time_calls(lambda i, live=live: live.lookup(numbers[i], 5), len(numbers))
            print_row(f"live lookup, search_terms={','.join(terms)}", latency_figures(samples))
            print(f"  (found {hits}/20 of the sampled numbers)", flush=True)
            live.close()

        mirror = MirroredBackend(backend(fake, directory))
        started = time.perf_counter()
        outcome = mirror.sync_now()
        print(
            f"mirror full sync: {outcome.written} persons in {time.perf_counter() - started:.2f}s "
            f"(ok={outcome.ok})",
            flush=True,
        )
        changed = list(fake.persons)[:: max(1, args.persons // 50)]
        for person_id in changed:
            fake.update_person(person_id, name=f"Renamed {person_id}")
        started = time.perf_counter()
        outcome = mirror.sync_now()
        print(
            f"mirror incremental sync: {outcome.written} persons in {time.perf_counter() - started:.3f}s "
            f"(incremental={outcome.incremental})",
            flush=True,
        )
        many = numbers * max(1, 5000 // len(numbers))
        samples = time_calls(lambda i: mirror.lookup(many[i], 5), len(many))
        print_row("mirror lookup", latency_figures(samples))
        mirror.close()


if __name__ == "__main__":
    main()
