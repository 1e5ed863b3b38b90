"""The HTTP layer: /Lookup, /<workflow>, /healthz, /metrics. Knows no particular CRM."""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from lookup_service.errors import ApiError
from lookup_service.phone import InvalidPhoneNumber, parse_number
from lookup_service.schemas import find_key
from lookup_service.service import Service
from lookup_service.workflows import run_workflow

log = logging.getLogger(__name__)

JSON = "application/json"
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    413: "body_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
}
_OWN_ENDPOINTS = {"Lookup": "GET, POST", "healthz": "GET", "metrics": "GET", "openapi.json": "GET"}
_HTTP_MESSAGES = {
    404: "no such endpoint; the lookup is GET or POST /Lookup",
    413: "the request body is larger than 64 KiB",
}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, mimetype=JSON, headers=headers)


def register_routes(app: Flask, service: Service) -> None:
    # Routes go on the app itself: a blueprint costs a few microseconds per request in Flask's
    # dispatch, a measurable share of a cache hit.
    bp = app
    tokens = service.tokens
    engine = service.engine
    header = service.settings.token_header
    metrics_token = service.settings.metrics_token

    def authenticate():
        tenant = tokens.tenant_for(request.headers.get(header))
        if tenant is None:
            raise ApiError(401, "unauthorized", f"missing or wrong {header} header")
        return tenant

    @bp.route("/Lookup", methods=["GET", "POST"])
    def lookup() -> Response:
        tenant = authenticate()
        raw = _number_from_request()
        try:
            number = parse_number(raw, tenant.region)
        except InvalidPhoneNumber as exc:
            raise ApiError(400, "invalid_number", f"PhoneNumber: {exc}") from None
        return Response(engine.lookup(tenant, number), mimetype=JSON)

    @bp.route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @bp.route("/metrics", methods=["GET"])
    def metrics() -> Response:
        if not metrics_token:
            raise ApiError(404, "not_found", "metrics are disabled; set LOOKUP_METRICS_TOKEN to enable them")
        presented = request.headers.get(header) or _bearer(request.headers.get("Authorization"))
        if tokens_differ(presented, metrics_token):
            raise ApiError(401, "unauthorized", f"missing or wrong metrics token ({header} or Authorization: Bearer)")
        service.refresh_metrics()
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    @bp.route("/openapi.json", methods=["GET"])
    def openapi() -> Response:
        from lookup_service.openapi import openapi_document  # apispec is loaded only when asked

        return Response(openapi_document(app, service.settings), mimetype=JSON)

    @bp.route("/<workflow>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def workflow(workflow: str) -> Response:
        if workflow in _OWN_ENDPOINTS:  # another method on /Lookup, /healthz or /metrics lands here
            allowed = _OWN_ENDPOINTS[workflow]
            raise ApiError(405, "method_not_allowed", f"method {request.method} is not allowed on /{workflow}; "
                           f"use {' or '.join(allowed.split(', '))}", {"Allow": allowed})
        tenant = authenticate()
        known = tenant.workflows()
        if workflow not in known:
            raise ApiError(404, "unknown_workflow", f"no workflow named {workflow!r}; this service offers "
                           f"{', '.join(known) or 'no workflow'} (and /Lookup)")
        if request.method != "POST":
            raise ApiError(405, "method_not_allowed", f"use POST /{workflow} with a JSON body {{\"inputs\": {{...}}}}",
                           {"Allow": "POST"})
        payload = _json_body()
        inputs = find_key(payload, "inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, dict):
            raise ApiError(400, "invalid_input", 'the body must be a JSON object {"inputs": {"contactCrmId": ...}}')
        try:
            result, created = run_workflow(tenant, workflow, inputs, service.ledger, service.settings.naive_timezone)
        except ApiError as exc:
            service.metrics.workflow(tenant.name, workflow, exc.code)
            raise
        service.metrics.workflow(tenant.name, workflow, "created" if created else "duplicate")
        return json_response({"id": result.id, "url": result.url or ""})

    _register_errors(app)


def tokens_differ(presented: str | None, expected: str) -> bool:
    return not presented or not hmac.compare_digest(presented.encode(), expected.encode())


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _json_body() -> Any:
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON ({exc})") from None


def _number_from_request() -> Any:
    """The number from the JSON body if it has one, else from the query (keys in any case)."""
    environ = request.environ
    raw: Any = None
    if environ["REQUEST_METHOD"] == "POST":
        payload = _json_body()
        if payload is not None and not isinstance(payload, dict):
            raise ApiError(400, "invalid_input", 'the body must be a JSON object {"inputs": {"phoneNumber": "..."}}')
        if payload:
            inputs = find_key(payload, "inputs")
            if isinstance(inputs, dict):
                raw = find_key(inputs, "phoneNumber")
            if raw in (None, ""):
                raw = find_key(payload, "phoneNumber")
    if raw in (None, ""):
        query = environ.get("QUERY_STRING", "")
        match = _PLAIN_QUERY.match(query)
        # the connector's exact form, ?PhoneNumber=41215522000, skips the general query parser
        raw = match.group(1) if match else find_key(request.args, "PhoneNumber")
    if raw in (None, ""):
        raise ApiError(400, "missing_number", "give the number as ?PhoneNumber=41215522000 or in the body "
                       '{"inputs": {"phoneNumber": "41215522000"}}')
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ApiError(400, "invalid_number", "PhoneNumber: must be a string of digits such as \"41215522000\"")
    return str(raw)


_PLAIN_QUERY = re.compile(r"^PhoneNumber=(\d{1,20})$")


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = _HTTP_MESSAGES.get(status) or (exc.description or exc.name)
        headers = {}
        if status == 405:
            allowed = [m for m in (exc.valid_methods or []) if m not in ("HEAD", "OPTIONS")]  # type: ignore[attr-defined]
            message = f"method {request.method} is not allowed here; use {' or '.join(allowed) or 'another method'}"
            headers["Allow"] = ", ".join(exc.valid_methods or [])  # type: ignore[attr-defined]
        return json_response({"error": code, "message": message}, status, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response({"error": "internal_error", "message": "the service failed; the error is logged"}, 500)
