"""The phone lookup service for the peoplefone CONNECTOR."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from config.settings import ConfigError, load_settings

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``config`` entries override environment variables.

    An invalid configuration raises :class:`ConfigError` (the server refuses to start), except
    under the ``flask`` command line, where the commands still load and report the error.
    """
    try:
        return _create_app(config)
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        app = Flask(__name__)
        app.extensions["lookup_config_error"] = str(exc)
        from lookup_service.cli import register_cli

        register_cli(app)
        return app


def _create_app(config: Mapping[str, Any] | None) -> Flask:
    from lookup_service.auth import TokenTable
    from lookup_service.cache import make_cache
    from lookup_service.cli import register_cli
    from lookup_service.engine import LookupEngine
    from lookup_service.ledger import make_ledger
    from lookup_service.logs import configure_logging
    from lookup_service.metrics import Metrics
    from lookup_service.routes import register_routes
    from lookup_service.schemas import ResponseFormat
    from lookup_service.service import Service
    from lookup_service.tenants import build_tenants

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.secrets())
    tenants = build_tenants(settings)
    cache = make_cache(settings.redis_url)
    metrics = Metrics()
    engine = LookupEngine(
        tenants,
        cache,
        ResponseFormat(settings.response_keys),
        metrics,
        threads=settings.backend_threads,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown_s,
    )
    ledger = make_ledger(settings.state_db, settings.redis_url, settings.database_url)
    service = Service(settings, tenants, engine, ledger, metrics, TokenTable(tenants))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["lookup"] = service
    register_routes(app, service)
    register_cli(app)
    return app
