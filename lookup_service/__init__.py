"""The phone lookup service for the peoplefone CONNECTOR."""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from config.settings import ConfigError, load_settings

log = logging.getLogger(__name__)
# gunicorn's exit code for a worker that cannot boot: the master stops instead of retrying
_WORKER_BOOT_ERROR = 3
# After start-up the collector's oldest generation is collected once per this many collections of
# the middle one (Python's default: 10); see freeze_startup_objects.
FULL_COLLECTION_EVERY = 100


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``config`` entries override environment variables.

    Loaded by a server (gunicorn, waitress-serve, ``flask run``), it runs the start-up check and
    starts the background work (mirror syncs) in the process that serves; anywhere else (tests,
    the command line, another server) the background work starts at the first request. See
    :mod:`lookup_service.startup`.

    An invalid configuration raises :class:`ConfigError`; loaded by a server, it prints the
    reason and exits, so the server refuses to start. Under the other ``flask`` commands the
    commands still load and report the error.
    """
    from lookup_service.startup import serving_process

    serving = serving_process()
    try:
        return _create_app(config, serving)
    except ConfigError as exc:
        if serving is not None:
            for line in str(exc).splitlines():
                print(f"lookup service: configuration error: {line}", file=sys.stderr, flush=True)
            raise SystemExit(_WORKER_BOOT_ERROR if serving.startswith("gunicorn") else 1) from None
        if click.get_current_context(silent=True) is None:
            raise
        app = Flask(__name__)
        app.extensions["lookup_config_error"] = str(exc)
        from lookup_service.cli import register_cli

        register_cli(app)
        return app


def _create_app(config: Mapping[str, Any] | None, serving: str | None = None) -> Flask:
    from lookup_service.auth import TokenTable
    from lookup_service.cache import make_cache
    from lookup_service.cli import register_cli
    from lookup_service.contacts_api import register_contacts_api
    from lookup_service.engine import LookupEngine
    from lookup_service.ledger import make_ledger
    from lookup_service.logs import RequestContext, configure_logging
    from lookup_service.metrics import Metrics
    from lookup_service.pages import register_pages
    from lookup_service.routes import register_routes
    from lookup_service.schemas import ResponseFormat
    from lookup_service.service import Service
    from lookup_service.startup import CHECKING, SERVING, run_startup_check, startup_mode
    from lookup_service.tenants import build_tenants

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.secrets(), settings.log_format)
    mode = startup_mode(config)
    if serving in CHECKING:
        run_startup_check(settings, mode)  # strict: a ConfigError, the server does not start
    tenants = build_tenants(settings)
    cache = make_cache(settings.redis_url)
    metrics = Metrics()
    engine = LookupEngine(
        tenants,
        cache,
        ResponseFormat(settings.response_keys).render,  # the web layer's rendering, cached by the engine
        metrics,
        threads=settings.backend_threads,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown_s,
    )
    ledger = make_ledger(settings.state_db, settings.redis_url, settings.database_url)
    service = Service(settings, tenants, engine, ledger, metrics, TokenTable(tenants, settings.token_header))
    if serving is None:  # whoever serves this app: check in the background at the first request
        service.pending_check = mode

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["lookup"] = service
    register_routes(app, service)
    register_pages(app, service)
    register_contacts_api(app, service)
    register_cli(app)
    _register_start(app, service)
    app.wsgi_app = RequestContext(app.wsgi_app)  # type: ignore[method-assign]
    if serving in SERVING:
        service.start_background()
    if serving in CHECKING:  # a process that serves, or gunicorn's master before it forks them
        freeze_startup_objects()
    return app


def freeze_startup_objects() -> None:
    """Keep what start-up built out of the cyclic garbage collector's way, in the process that serves.

    Every full collection used to walk every object of every loaded module (Flask, SQLAlchemy,
    phonenumbers' metadata...), some 150,000 of them: tens of milliseconds during which no request
    thread runs, the uncached lookups' p99. ``gc.freeze()`` moves them to the permanent generation,
    which no collection visits (they are freed by reference counting as before; only a cycle among
    them would stay). What is long-lived and made later is kept untracked where it is this
    service's (the answer cache holds bytes); the rest, chiefly the parse cache of phone numbers, is
    walked by full collections, which are made ten times rarer: a cycle that outlives two young
    collections waits a few seconds longer. Under ``gunicorn --preload`` this runs in the master,
    before the fork, so the workers' copies of these pages are not touched by the collector either.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def _register_start(app: Flask, service: Any) -> None:
    """Every request makes sure this process's background work runs (a pid comparison once it
    does), except in tests (``app.testing``), which drive syncs themselves; and times itself.

    A WSGI wrapper rather than Flask hooks: per request it costs a fraction of what two hooks and
    their context-local lookups would on the cache-hit path.
    """
    inner = app.wsgi_app
    observe = service.metrics.request_done
    getpid = os.getpid
    clock = time.perf_counter
    fixed: set[str] = set()  # the routes without a variable part, e.g. "/Lookup"

    def route(environ: dict) -> str:
        """The route of the request, as the latency label: a bounded set, unlike the path."""
        path = environ.get("PATH_INFO", "")
        if path in fixed:
            return path
        if not fixed:
            fixed.update(rule.rule for rule in app.url_map.iter_rules() if "<" not in rule.rule)
            if path in fixed:
                return path
        try:  # a workflow ("/<workflow>"): rare enough to match again
            rule, _ = app.url_map.bind_to_environ(environ).match(return_rule=True)
            return rule.rule
        except Exception:
            return "unmatched"

    def wsgi_app(environ: dict, start_response: Any) -> Any:
        if service.started_pid != getpid() and not app.testing:
            service.start_background()
        started = clock()
        try:
            return inner(environ, start_response)
        finally:
            observe(route(environ), clock() - started)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
