"""What a person opens in a browser: the home page with its "try it" form (GET /), the tenant's
backends for that page (GET /status, token), the README (GET /readme) and the Embeddable adapter
script (GET /embeddable/adapter.js). The lookup itself stays in :mod:`lookup_service.routes`."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request, url_for

from crm_backends.mirror import MirroredBackend
from lookup_service.cors import CorsPolicy
from lookup_service.errors import ApiError
from lookup_service.service import Service
from lookup_service.tenants import Tenant

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DEFAULT_ICON = "contact-icon.svg"  # under lookup_service/static/
# Pages are never cached by a proxy with someone's answer in them, and never framed by another site.
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; object-src 'none'; "
                                            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                 "Referrer-Policy": "no-referrer"}


def service_version() -> str:
    """The version in pyproject.toml, "unknown" where the file is not deployed."""
    try:
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def register_pages(app: Flask, service: Service) -> None:
    bp = Blueprint("pages", __name__)
    header = service.settings.token_header
    version = service_version()

    @bp.route("/", methods=["GET"])
    def home() -> Response:
        not_ready, degraded = service.readiness()
        html = render_template("index.html", version=version, token_header=header, not_ready=not_ready,
                               degraded=degraded, has_readme=os.path.exists(README))
        return Response(html, mimetype="text/html", headers=_PAGE_HEADERS)

    @bp.route("/readme", methods=["GET"])
    def readme() -> Response:
        try:
            with open(README, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            raise ApiError(404, "not_found", "the README is not deployed with this service") from None
        return Response(text, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})

    # The adapter asks /status for the tenant's icon from the partner's page: the same origins as the
    # contacts endpoints (the tenant's allowed_origins) may read it.
    cors = CorsPolicy(service.settings.tenants, header)

    @bp.route("/status", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    def status() -> Response:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":  # a preflight carries no token
            return cors.preflight(origin, "GET, OPTIONS")
        tenant = service.tokens.require(request.headers)
        body = {"tenant": tenant.name, "contactIcon": contact_icon(tenant),
                "backends": backend_states(service, tenant)}
        response = Response(json.dumps(body, ensure_ascii=False), mimetype="application/json",
                            headers={"Cache-Control": "no-store"})
        return cors.answer(response, origin, tenant.name)

    @bp.route("/embeddable/adapter.js", methods=["GET"])
    def adapter() -> Response:
        script = render_template("adapter.js", token_header=header)
        return Response(script, mimetype="text/javascript", headers={"Cache-Control": "public, max-age=300",
                                                                      "X-Content-Type-Options": "nosniff"})

    app.register_blueprint(bp)


def contact_icon(tenant: Tenant) -> str:
    """The tenant's icon for Embeddable: its first backend's CRM logo, else the service's own (absolute)."""
    if tenant.slots and tenant.slots[0].crm_logo:
        return tenant.slots[0].crm_logo
    return url_for("static", filename=DEFAULT_ICON, _external=True)


def backend_states(service: Service, tenant: Tenant) -> list[dict[str, Any]]:
    """Each backend of ``tenant``: type, mode, breaker state, last sync and contact count where it
    keeps a local copy; no option values (they may hold credentials) and no error texts."""
    breakers = service.engine.breaker_states()
    states = []
    for slot in tenant.slots:
        backend = slot.backend
        item: dict[str, Any] = {"name": slot.name, "type": slot.spec.type, "mode": slot.mode,
                                "crmName": slot.crm_name, "breaker": breakers.get((tenant.name, slot.name), "closed"),
                                "lastSync": None, "contacts": None}
        try:
            if isinstance(backend, MirroredBackend):
                last = backend.last_success()
                item["lastSync"] = None if last is None else datetime.fromtimestamp(last, UTC).isoformat()
                item["contacts"] = backend.store.stats()["contacts"]
            elif getattr(backend, "store", None) is not None:  # the embedded directory
                item["contacts"] = backend.store.stats()["contacts"]  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("status of %s/%s: %s", tenant.name, slot.name, type(exc).__name__)
        states.append(item)
    return states
