"""The benchmark scripts still run: each, at a tiny size, exits 0 and prints its figures. (Their
figures are read by people from full-size runs; here only that the scripts have not rotted, as
bench_search had when the cache's interface changed.) The slow ones (bench_service, bench_gc,
bench_malformed, bench_outbox, bench_carddav) are left to their own runs."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

QUICK = {
    "bench_search": ["--contacts", "300", "--samples", "5"],
    "bench_pg_directory": ["--contacts", "300", "--samples", "5"],
    "lost_answers": ["--calls", "3"],
    "bench_rest": ["--contacts", "200", "--lookups", "5"],
    "bench_sql": ["--contacts", "200", "--samples", "5", "--no-postgres"],
    "bench_hubspot": ["--contacts", "200", "--lookups", "50"],
    "bench_pipedrive": ["--persons", "200", "--lookups", "5"],
    "bench_odoo": ["--partners", "200", "--lookups", "50"],
    "bench_ldap": ["--entries", "200", "--lookups", "5"],
    "bench_lookup_path": ["--contacts", "300", "--lookups", "5"],
    "bench_xlsx_import": ["--rows", "300", "--rounds", "1"],
    "bench_digest": ["--messages", "120", "--size", "50"],
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(QUICK))
def test_the_benchmark_runs(name):
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *QUICK[name]], cwd=ROOT, capture_output=True,
                          text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ms" in done.stdout or "s " in done.stdout, done.stdout[-2000:]
