"""The start-up check: every backend is built and asked whether it can work, once, before the
server forks its workers.

A configuration or credential problem stops the start with a message naming the tenant, the
backend and the key; a source that is merely down is a warning, and the engine skips it until it
answers, so the other backends keep serving lookups.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

from config.settings import Settings
from crm_backends.base import BackendConfigError, BackendUnavailable, CredentialsRejected
from lookup_service.tenants import build_tenants


def startup_check(settings: Settings, timeout: float = 20.0) -> tuple[list[str], list[str]]:
    """Check every backend in parallel, bounded by ``timeout``; returns (fatal, warnings)."""
    tenants = build_tenants(settings)  # a ConfigError propagates: the configuration itself is wrong
    fatal: list[str] = []
    warnings: list[str] = []
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="startup-check")
    try:
        checks = {
            pool.submit(slot.backend.check): f"{settings.source}: tenant {tenant.name!r}, backend {slot.name!r}"
            for tenant in tenants
            for slot in tenant.slots
        }
        done, pending = wait(checks, timeout=timeout)
        for future in pending:
            warnings.append(f"{checks[future]}: no answer to the start-up check within {timeout:.0f}s")
        for future in done:
            where, exc = checks[future], future.exception()
            if exc is None:
                continue
            if isinstance(exc, BackendConfigError):
                key = f", key {exc.key!r}" if exc.key and f"key {exc.key!r}" not in str(exc) else ""
                fatal.append(f"{where}{key}: {exc}")
            elif isinstance(exc, CredentialsRejected):
                fatal.append(f"{where}: credentials rejected: {exc}")
            elif isinstance(exc, BackendUnavailable):
                warnings.append(f"{where}: unavailable at start, skipped until it answers: {exc}")
            else:
                warnings.append(f"{where}: start-up check failed: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for tenant in tenants:
            tenant.close()
    return sorted(fatal), sorted(warnings)
