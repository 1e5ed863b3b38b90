"""Logging to stdout, as text or as one JSON object per line, with secrets and phone numbers masked.

Redaction works at two levels. Fields known to hold a number or a secret (``phone``, ``token``...
passed as ``extra``, and the access log's fields) are redacted by name. The message text is masked
as a safety net whatever it contains: configured secrets become ``***`` and every digit run that
could be a phone number keeps its last three digits only, while addresses, dates, times, versions
and durations stay readable.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from lookup_core.redact import MIN_DIGITS, REDACTED, is_secret_name, mask, mask_numbers, mask_secrets

# Fields redacted by name wherever they appear (``extra=`` of a record, the access log), besides
# those whose name says they hold a secret (lookup_core.redact.is_secret_name).
SECRET_FIELDS = frozenset({"headers"})
NUMBER_FIELDS = frozenset({"phone", "phone_number", "phonenumber", "number", "originator_number",
                           "destination_number", "query", "query_string"})
KEEP_FIELDS = frozenset({"request_id", "tenant", "status", "duration_ms", "bytes", "method", "remote"})
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact_field(name: str, value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` as it may be logged under ``name``."""
    key = name.lower().replace("-", "_")
    if key in SECRET_FIELDS or is_secret_name(key):
        return REDACTED if value not in (None, "") else value
    if key in NUMBER_FIELDS and value not in (None, ""):
        digits = re.sub(r"\D", "", str(value))
        return mask(digits) if len(digits) >= MIN_DIGITS else mask_numbers(str(value))
    if isinstance(value, str):
        return mask_numbers(mask_secrets(value, secrets))
    if isinstance(value, int) and not isinstance(value, bool):  # six digits or more: as a number in JSON
        return mask_numbers(str(value)) if abs(value) >= 10 ** (MIN_DIGITS - 1) else value
    if isinstance(value, dict):
        return {k: redact_field(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact_field(name, v, secrets) for v in value]
    if value is None or isinstance(value, bool | float):
        return value
    return mask_numbers(mask_secrets(str(value), secrets))  # anything else is logged as its text


class RedactingFilter(logging.Filter):
    """Masks secrets and phone numbers in every record: its message, traceback and extra fields."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = sorted({s for s in (secrets or []) if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_lookup_redacted", False):  # a record met by two handlers
            return True
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: log the format alone
            message = str(record.msg)
        record.msg, record.args = mask_numbers(mask_secrets(message, self.secrets)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(mask_secrets(record.exc_text, self.secrets))
        if record.stack_info:
            record.stack_info = mask_numbers(mask_secrets(record.stack_info, self.secrets))
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and name not in KEEP_FIELDS and not name.startswith("_"):
                setattr(record, name, redact_field(name, value, self.secrets))
        record._lookup_redacted = True
        return True


# --- the request a log line belongs to -----------------------------------------------------------

_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("lookup_request", default=None)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SANE_ID = re.compile(r"[A-Za-z0-9._:@=+/-]{1,200}")


def _new_id_prefix() -> str:
    return str(uuid.uuid4())[:23]  # 8-4-4-4 hex: random per process


# A new id is this process's random prefix and a counter, in a UUID's shape: unique across processes
# and machines like a uuid4, without the random-number system call per request (which also lets
# another thread take the GIL).
_ID_PREFIX = _new_id_prefix()
_ID_COUNTER = itertools.count(1)


def _after_fork() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = _new_id_prefix(), itertools.count(1)


os.register_at_fork(after_in_child=_after_fork)


def request_id_from(presented: str | None) -> str:
    """The client's (or the router's) ``X-Request-ID`` if it is a sane id, else a new one. An id
    that holds something looking like a phone number is replaced: it would end up in the logs."""
    if presented:
        if _UUID.fullmatch(presented) or (_SANE_ID.fullmatch(presented) and mask_numbers(presented) == presented):
            return presented
    return f"{_ID_PREFIX}-{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


def set_tenant(name: str) -> None:
    """Names the tenant of the request being served, for its log lines and its access-log line."""
    current = _REQUEST.get()
    if current is not None:
        current["tenant"] = name
        current["environ"]["lookup.tenant"] = name


class RequestContext:
    """WSGI middleware: gives each request an id (``X-Request-ID``, echoed in the answer) and makes
    its id, path and tenant available to every log line written while it is served."""

    def __init__(self, app: Callable[..., Any]):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["lookup.request_id"] = request_id
        header = ("X-Request-ID", request_id)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(header)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        token = _REQUEST.set({"request_id": request_id, "path": environ.get("PATH_INFO"), "environ": environ})
        try:
            return self.app(environ, start)
        finally:
            _REQUEST.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, and the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = _REQUEST.get()
        if current is not None:
            entry["request_id"] = current["request_id"]
            if current.get("tenant"):
                entry["tenant"] = current["tenant"]
            entry["path"] = mask_numbers(current["path"] or "")
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def redact_handlers(logger: logging.Logger, secrets: list[str], log_format: str | None = None) -> None:
    """Puts the redacting filter (and, if given, the format) on each handler of ``logger``."""
    for handler in logger.handlers:
        for existing in list(handler.filters):
            if isinstance(existing, RedactingFilter):
                handler.removeFilter(existing)
        handler.addFilter(RedactingFilter(secrets))
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


def configure_logging(level: str, secrets: list[str], log_format: str = "text") -> None:
    """One stdout handler on the root logger, with the redacting filter (idempotent); under
    gunicorn, its own error and access logs get the same filter and format."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_lookup_service", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler._lookup_service = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(make_formatter(log_format))
    for existing in list(handler.filters):
        handler.removeFilter(existing)
    handler.addFilter(RedactingFilter(secrets))
    for name in ("gunicorn.error", "gunicorn.access"):
        redact_handlers(logging.getLogger(name), secrets, log_format if log_format == "json" else None)
