"""LDAP backend figures against a local slapd: live and mirror lookup latency, mirror sync time.

    /work/venv/bin/python -m bench.bench_ldap [--entries 100000] [--lookups 1000]

The entries are loaded offline with ``slapadd -q`` (much faster than LDAP adds), with their phone
numbers written in several formats. slapd indexes telephoneNumber, mobile and homePhone (eq,sub).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta

import ldap3

from bench.common import latency_figures, print_row, time_calls
from crm_backends.base import BackendSpec, load_options
from crm_backends.ldap import LdapBackend
from crm_backends.mirror import MirroredBackend
from lookup_core.phone import parse_number
from tests.servers.slapd import PEOPLE_DN, READER_DN, READER_PW, ROOT_DN, ROOT_PW, Slapd, base_ldif

# distinct old timestamps, as in a real directory: an incremental sync lists only what the bench changes
OLD = datetime(2024, 1, 1, tzinfo=UTC)
CHANGED = 100
FORMATS = (
    "+41 21 {a} {b} {c}",
    "021 {a}-{b}-{c}",
    "+4121{a}{b}{c}",
    "0041 21 {a} {b} {c}",
)


def number_parts(i: int) -> tuple[str, str, str]:
    digits = f"{1_000_000 + i:07d}"
    return digits[:3], digits[3:5], digits[5:]


def make_ldif(count: int) -> str:
    chunks = [base_ldif()]
    for i in range(count):
        a, b, c = number_parts(i)
        phone = FORMATS[i % len(FORMATS)].format(a=a, b=b, c=c)
        chunks.append(
            f"dn: uid=u{i},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: Person {i}\nsn: P{i}\n"
            f"o: Company {i % 997}\ntelephoneNumber: {phone}\nmobile: 079 {a} {b} {c}\n"
            f"modifyTimestamp: {(OLD + timedelta(seconds=i)).strftime('%Y%m%d%H%M%SZ')}\n\n"
        )
    return "".join(chunks)


def backend(url: str, instance_dir: str, **options) -> LdapBackend:
    table = {
        "name": "dir",
        "type": "ldap",
        "url": url,
        "bind_dn": READER_DN,
        "password": READER_PW,
        "base_dn": PEOPLE_DN,
        "timeout": 5.0,
        **options,
    }
    opts = load_options(LdapBackend, table, "bench")
    return LdapBackend(BackendSpec(tenant="bench", name="dir", options=opts, instance_dir=instance_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=1000)
    args = parser.parse_args()
    rng = random.Random(7)

    server = Slapd.create()
    instance = tempfile.mkdtemp(prefix="bench-ldap-")
    try:
        started = time.perf_counter()
        server.slapadd(make_ldif(args.entries))
        print(f"slapadd -q of {args.entries} entries: {time.perf_counter() - started:.1f}s", flush=True)
        server.start()

        def hits(i: int) -> str:
            a, b, c = number_parts(rng.randrange(args.entries))
            return f"4121{a}{b}{c}"

        numbers = [parse_number(hits(i)) for i in range(args.lookups)]
        configs = {
            "live, default attributes": {},
            "live, default + unindexed pager": {
                "attributes": {"phones": ["telephoneNumber", "mobile", "homePhone", "pager"]}
            },
            "live, indexed phone attributes only": {"attributes": {"phones": ["telephoneNumber", "mobile"]}},
            "live, indexed, substring_search=none": {
                "attributes": {"phones": ["telephoneNumber", "mobile"]},
                "substring_search": "none",
            },
            "live, indexed, substring_search=groups": {
                "attributes": {"phones": ["telephoneNumber", "mobile"]},
                "substring_search": "groups",
            },
        }
        for label, options in configs.items():
            live = backend(server.url, instance, **options)
            assert live.lookup(numbers[0], 5), "a loaded number was not found"
            slow = "pager" in label or "groups" in label  # these scan every entry
            count = min(args.lookups, 50) if slow else args.lookups
            samples = time_calls(lambda i, live=live: live.lookup(numbers[i % len(numbers)], 5), count, 60)
            print_row(label, latency_figures(samples))
            live.close()

        mirror = MirroredBackend(backend(server.url, instance, page_size=1000))
        started = time.perf_counter()
        outcome = mirror.sync_now()
        seconds = time.perf_counter() - started
        assert outcome.ok, outcome.error
        print(
            f"mirror full sync: {outcome.written} entries in {seconds:.1f}s "
            f"({outcome.written / seconds:.0f} entries/s)",
            flush=True,
        )
        started = time.perf_counter()
        outcome = mirror.sync_now()
        print(
            f"mirror incremental sync, nothing changed: {outcome.written} entries "
            f"in {time.perf_counter() - started:.3f}s",
            flush=True,
        )
        admin = ldap3.Connection(server.url, ROOT_DN, ROOT_PW, auto_bind=True)
        for i in rng.sample(range(args.entries), CHANGED):
            admin.modify(f"uid=u{i},{PEOPLE_DN}", {"title": [(ldap3.MODIFY_REPLACE, ["changed"])]})
        admin.unbind()
        started = time.perf_counter()
        outcome = mirror.sync_now()
        print(
            f"mirror incremental sync, {CHANGED} entries changed: {outcome.written} entries "
            f"in {time.perf_counter() - started:.3f}s",
            flush=True,
        )
        samples = time_calls(lambda i: mirror.lookup(numbers[i % len(numbers)], 5), args.lookups * 10, 60)
        print_row("mirror lookup", latency_figures(samples))
        mirror.close()
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
