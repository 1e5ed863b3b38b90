"""The HTTP layer: /Lookup, /<workflow>, /healthz, /readyz, /metrics. Knows no particular CRM."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from lookup_core.phone import InvalidPhoneNumber, parse_number
from lookup_core.redact import tokens_equal
from lookup_core.types import Contact
from lookup_service.errors import ApiError
from lookup_service.schemas import EMPTY_ANSWER, ResponseFormat, find_key
from lookup_service.service import Service
from lookup_service.tenants import CREATE_CONTACT, Tenant
from lookup_service.workflows import NEW_PREFIX, run_workflow

log = logging.getLogger(__name__)

JSON = "application/json"
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    413: "body_too_large", 414: "uri_too_long", 415: "unsupported_media_type", 429: "too_many_requests",
    431: "headers_too_large",
}
_OWN_ENDPOINTS = {"Lookup": "GET, POST", "healthz": "GET", "readyz": "GET", "metrics": "GET", "openapi.json": "GET"}
_HTTP_MESSAGES = {
    404: "no such endpoint; the lookup is GET or POST /Lookup",
    413: "the request body is larger than 64 KiB",
}
# Checked before any parsing: a longer "number" is no number, and the phone parser need not see it.
MAX_NUMBER_CHARS = 64
MAX_JSON_DEPTH = 32  # the connector's bodies nest three levels deep


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
    formatter = ResponseFormat(service.settings.response_keys)  # the unknown-caller entry's keys

    @bp.route("/Lookup", methods=["GET", "POST"])
    def lookup() -> Response:
        tenant = tokens.require(request.headers)
        raw = _number_from_request()
        try:
            number = parse_number(raw, tenant.region)
        except InvalidPhoneNumber as exc:
            raise ApiError(400, "invalid_number", f"PhoneNumber: {exc}") from None
        # the answer as ResponseFormat.render renders it (create_app gives the engine that
        # renderer): the engine caches the rendering, so a cache hit serializes nothing
        body = engine.lookup_rendered(tenant, number)
        if body == EMPTY_ANSWER and tenant.unknown_caller_entry and number.e164:
            body = unknown_caller_entry(tenant, number.e164, formatter)
        return Response(body, mimetype=JSON)

    @bp.route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @bp.route("/readyz", methods=["GET", "HEAD"])
    def readyz() -> Response:
        # No token: it names tenants and backends and why they cannot answer, never a secret,
        # an error text or contact data.
        not_ready, degraded = service.readiness()
        if not_ready:
            return json_response({"error": "not_ready", "message": _not_ready_message(not_ready),
                                  "not_ready": not_ready, "degraded": degraded}, 503, {"Retry-After": "5"})
        return json_response({"status": "ready", "degraded": degraded})

    @bp.route("/metrics", methods=["GET"])
    def metrics() -> Response:
        if not metrics_token:
            raise ApiError(404, "not_found", "metrics are disabled; set LOOKUP_METRICS_TOKEN to enable them")
        presented = request.headers.get(header) or _bearer(request.headers.get("Authorization"))
        if not tokens_equal(presented, metrics_token):
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
        tenant = tokens.require(request.headers)
        _check_query(request.environ.get("QUERY_STRING", ""))
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
            result, outcome = run_workflow(tenant, workflow, inputs, service.outbox, service.settings.naive_timezone)
        except ApiError as exc:
            service.metrics.workflow(tenant.name, workflow, exc.code)
            raise
        service.metrics.workflow(tenant.name, workflow, outcome)
        return json_response({"id": result.id, "url": result.url or ""})

    _register_errors(app)


def unknown_caller_entry(tenant: Tenant, e164: str, formatter: ResponseFormat) -> bytes:
    """The one entry answered instead of ``[]`` when the tenant enables it: a card whose only action
    creates the contact (CreateContact with contactCrmId ``new:<e164>``). Never cached: the cache
    keeps ``[]``, so a contact created meanwhile shows at once."""
    slot = tenant.create_slot
    assert slot is not None  # the configuration requires create_contacts_in with the entry
    entry = Contact(id="", name=tenant.unknown_caller_text)
    return formatter.dumps([formatter.contact(entry, NEW_PREFIX + e164, slot.crm_name, slot.crm_logo,
                                              [CREATE_CONTACT])])


def _not_ready_message(not_ready: list[dict[str, str]]) -> str:
    first = not_ready[0]
    more = f" (and {len(not_ready) - 1} more)" if len(not_ready) > 1 else ""
    return f"not ready: tenant {first['tenant']}, {first['backend']}: {first['reason']}{more}"


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _json_body() -> Any:
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    _check_payload(payload)
    return payload


def _check_payload(payload: Any) -> None:
    """Refuses a body nested too deep, or with a string that is not valid Unicode (a lone
    surrogate such as \\ud800, which no database or CRM can store). Iterative: a deep body cannot
    exhaust the stack here."""
    stack = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and not _valid_text(value):
                raise ApiError(400, "malformed_json", "the body holds a string with a lone surrogate "
                               "(\\ud800-\\udfff); send valid Unicode")
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for key, item in items:
                if key is not None:
                    stack.append((key, depth))
                stack.append((item, depth + 1))


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_query(query: str) -> None:
    """A query string whose percent-escapes do not decode as UTF-8 is refused, not guessed at."""
    if "%" in query or not query.isascii():
        try:
            unquote_to_bytes(query).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the query string is not valid UTF-8") from None


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
        if match:
            raw = match.group(1)
        else:
            _check_query(query)
            raw = find_key(request.args, "PhoneNumber")
    if raw in (None, ""):
        raise ApiError(400, "missing_number", "give the number as ?PhoneNumber=41215522000 or in the body "
                       '{"inputs": {"phoneNumber": "41215522000"}}')
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ApiError(400, "invalid_number", "PhoneNumber: must be a string of digits such as \"41215522000\"")
    raw = str(raw)
    if len(raw) > MAX_NUMBER_CHARS:
        raise ApiError(400, "invalid_number", f"PhoneNumber: longer than {MAX_NUMBER_CHARS} characters")
    return raw


_PLAIN_QUERY = re.compile(r"^PhoneNumber=(\d{1,20})$")


def _register_errors(app: Flask) -> None:
    flask_options = app.make_default_options_response

    def options_response() -> Response:
        # Flask's automatic answer to OPTIONS is an empty text/html 200: say the same with no body
        response = flask_options()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response

    app.make_default_options_response = options_response  # type: ignore[method-assign]

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
        if status == 408:
            headers["Connection"] = "close"  # the rest of the body may still come (gunicorn's worker closes anyway)
        return json_response({"error": code, "message": message}, status, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if type(exc).__module__.startswith("gunicorn.http"):
            # the server could not read the body: a malformed chunk, a client gone before the end
            log.info("unreadable request body on %s %s (%s)", request.method, request.path, type(exc).__name__)
            return json_response({"error": "bad_request", "message": "the request body could not be read: malformed "
                                  "chunked encoding, or fewer bytes than its Content-Length"}, 400,
                                 {"Connection": "close"})
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response({"error": "internal_error", "message": "the service failed; the error is logged"}, 500)
