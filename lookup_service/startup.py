"""How the service starts, whatever server loads it, and the start-up check.

The check builds every backend and asks whether it can work. A configuration or credential
problem stops the start with a message naming the tenant, the backend and the key; a source that
is merely down is a warning, and the engine skips it until it answers, so the other backends keep
serving lookups.

:func:`serving_process` tells ``create_app`` which server is loading the app, so that it runs
the check where a failure can still refuse the start, and starts the background work (mirror
syncs) at once in a process that serves; everywhere else it starts at the first request.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from config.settings import ConfigError, Settings
from lookup_core.errors import BackendConfigError, BackendUnavailable, CredentialsRejected
from lookup_service.tenants import build_tenants

log = logging.getLogger(__name__)

STARTUP_MODES = ("strict", "warn", "off")
# loaded by the process that will serve: background work starts with the app
SERVING = frozenset({"gunicorn-worker", "waitress", "flask-run"})
# the start-up check runs there, and in gunicorn's master under --preload (once, before the fork)
CHECKING = SERVING | {"gunicorn-master"}


def serving_process() -> str | None:
    """Which server is loading the app in this call, from the modules on the call stack.

    ``gunicorn-worker`` (a worker loads the app after the fork), ``gunicorn-master`` (``--preload``:
    the workers are forked later, so nothing may start threads here), ``waitress``
    (``waitress-serve``), ``flask-run`` (``flask run``, in the process that serves),
    ``flask-reloader`` (the watcher of ``flask run --reload``, which never serves), or None: tests,
    the other commands, another server.
    """
    modules: set[str] = set()
    frame = sys._getframe(1)
    while frame is not None:
        modules.add(frame.f_globals.get("__name__", ""))
        frame = frame.f_back
    if "gunicorn.workers.base" in modules:
        return "gunicorn-worker"
    if "gunicorn.arbiter" in modules:
        return "gunicorn-master"
    if "waitress.runner" in modules:
        return "waitress"
    if "flask.cli" in modules:
        import click

        context = click.get_current_context(silent=True)
        if context is not None and context.command.name == "run":
            from flask.helpers import get_debug_flag
            from werkzeug.serving import is_running_from_reloader

            reload = context.params.get("reload")
            reload = get_debug_flag() if reload is None else reload
            return "flask-reloader" if reload and not is_running_from_reloader() else "flask-run"
    return None


def startup_mode(config: Mapping[str, Any] | None = None) -> str:
    """LOOKUP_STARTUP_CHECK: ``strict`` (default), ``warn`` or ``off``."""
    raw = (config or {}).get("LOOKUP_STARTUP_CHECK") or os.environ.get("LOOKUP_STARTUP_CHECK") or "strict"
    mode = str(raw).strip().lower()
    if mode not in STARTUP_MODES:
        raise ConfigError(f"LOOKUP_STARTUP_CHECK: {raw!r} is not one of {', '.join(STARTUP_MODES)}")
    return mode


def run_startup_check(settings: Settings, mode: str) -> None:
    """Run the check and log each problem once. ``strict``: a configuration or credential problem
    raises :class:`ConfigError` (its lines name tenant, backend and key); ``warn``: it is logged."""
    if mode == "off":
        return
    fatal, warnings = startup_check(settings)
    for message in warnings:
        log.warning("start-up check: %s", message)
    if fatal and mode == "strict":
        raise ConfigError("\n".join(fatal))
    for message in fatal:
        log.error("start-up check: %s", message)


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
            if isinstance(exc, BackendConfigError) and str(exc).startswith(where.split(": ", 1)[1]):
                fatal.append(f"{settings.source}: {exc}")  # it names the tenant, backend and key already
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
