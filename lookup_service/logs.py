"""Logging to stdout, as text or as one JSON object per line, with secrets and phone numbers masked.

Redaction works at two levels. Fields known to hold a number or a secret (``phone``, ``token``...
passed as ``extra``, and the access log's fields) are redacted by name. The message text is masked
as a safety net whatever it contains: configured secrets become ``***`` and every digit run that
could be a phone number keeps its last three digits only, while addresses, dates, times, versions
and durations stay readable.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

# What may separate the digits of one number: spaces, - . / ( ) and +, also percent-encoded
# (%20 space, %2B +, %2D -, %2F /, %28 %29 brackets), as in a URL's query string.
_SEP = r"(?:[ \t\-./()+]|%2[0BbDdFf89])"
# Tried in order at each position: the first ones are kept as they are, the last is a number.
_TOKENS = re.compile(
    r"(?P<keep>"
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d])"  # IPv4
    r"|(?<!\d)\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?)?(?!\d)"  # date, date and time
    r"|(?<!\d)\d{4} \d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?(?!\d)"  # a year and a time: 01/Dec/2026 04:35:58
    r"|(?<![\d.])\d{1,9}\.\d{1,9}(?![\d.])"  # a decimal: a duration, a version
    r"|:\d{1,5}(?!\d)"  # a port, the minutes of a time
    r'|(?<=HTTP/1\.[01]" )\d{3} \d{1,9}(?!\d)'  # the status and size after a logged request line
    r")"
    rf"|(?P<number>\d(?:{_SEP}{{0,3}}\d)*)"
)
_PERCENT_SEP = re.compile(r"%2[0BbDdFf89]")
# A credential in a URL's query (an API key in a backend's lookup_url) as a library logs the URL.
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|secret|password|"
                           r"passwd|pwd|signature|sig)=)[^&;#\s\"']+")
MIN_DIGITS = 6  # fewer digits than this are a port, a count, a short extension: not masked


def mask_numbers(text: str) -> str:
    """``text`` with every digit run of six digits or more (separators inside it ignored)
    replaced by stars and its last three digits, and credentials in URL queries by ``***``."""

    def hide(match: re.Match[str]) -> str:
        found = match.group("number")
        if found is None:
            return match.group(0)
        digits = [c for c in _PERCENT_SEP.sub("", found) if c.isdigit()]
        if len(digits) < MIN_DIGITS:
            return found
        return "*" * (len(digits) - 3) + "".join(digits[-3:])

    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
    if not any(c.isdigit() for c in text):
        return text
    return _TOKENS.sub(hide, text)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


# Fields redacted by name wherever they appear (``extra=`` of a record, the access log).
SECRET_FIELDS = frozenset({"token", "authorization", "x_execution_token", "headers", "password", "secret"})
NUMBER_FIELDS = frozenset({"phone", "phone_number", "phonenumber", "number", "originator_number",
                           "destination_number", "query", "query_string"})
KEEP_FIELDS = frozenset({"request_id", "tenant", "status", "duration_ms", "bytes", "method", "remote"})
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact_field(name: str, value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` as it may be logged under ``name``."""
    key = name.lower().replace("-", "_")
    if key in SECRET_FIELDS:
        return "***" if value not in (None, "") else value
    if key in NUMBER_FIELDS and value not in (None, ""):
        digits = re.sub(r"\D", "", str(value))
        return "*" * max(len(digits) - 3, 0) + digits[-3:] if len(digits) >= MIN_DIGITS else mask_numbers(str(value))
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


def request_id_from(presented: str | None) -> str:
    """The client's (or the router's) ``X-Request-ID`` if it is a sane id, else a new one. An id
    that holds something looking like a phone number is replaced: it would end up in the logs."""
    if presented:
        if _UUID.fullmatch(presented) or (_SANE_ID.fullmatch(presented) and mask_numbers(presented) == presented):
            return presented
    return str(uuid.uuid4())


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
