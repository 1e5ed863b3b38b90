"""Generic REST/JSON backend: any HTTP API that answers JSON, described entirely in the configuration.

The configuration says which request finds the contacts having a number (``lookup_url``, ``method``,
``body``), where the records sit in the answer (``results``) and where each contact's values sit in a
record (``fields``), as JMESPath expressions compiled at start-up. Optionally it says how to list
every contact page by page for mirror mode (``list_url``, ``paging``, ``since_param``) and which
request records a call (``[call_log]``), which one completes it at hang-up (``[call_log_update]``),
which two write ``MessageLog`` digests (``[message_log]``, ``[message_log_update]``) and which lists the
CRM's users (``[users]``).

Exactly once: the call-logging request carries the call's key in an ``Idempotency-Key`` header
(an API that honours it answers a repeated request with the record it already made), and an optional
``[call_log.find_call]`` request is asked first: when it finds a record of the call (a retry after a
lost answer), that record is the answer and nothing is created. Message records do the same with
the digest's key and ``[message_log.find_message]``.

The source's own search is never trusted: every record it returns is re-checked with the project's
number normalization, so a loose search ("contains these digits") never shows a wrong contact.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus, urljoin
from xml.sax.saxutils import escape as xml_escape

import jmespath
import phonenumbers
import requests
from jmespath.exceptions import JMESPathError
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    DeliveryRefused,
    RecordGone,
)
from lookup_core.phone import PhoneNumber, parse_number
from lookup_core.phone_types import phone_type
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, NewContact, SyncBatch, WorkflowResult

from .base import BackendOptions, BackendSpec
from .http import HttpSource, read_time, redact_url, scalar, scrub

log = logging.getLogger(__name__)

NUMBER_FORMS = ("e164", "digits", "national", "nsn", "intl")
LOOKUP_PLACEHOLDERS = frozenset(NUMBER_FORMS) | {"number", "limit"}
CALL_PLACEHOLDERS = frozenset(
    {
        "contact_id",
        "direction",
        "status",
        "originator_number",
        "originator_name",
        "destination_number",
        "destination_name",
        "remote_number",
        "remote_name",
        "started",
        "answered",
        "ended",
        "declined",
        "duration",
        "user_id",
        "call_key",
        "summary",
        "note",
    }
)
# a request that changes a record made earlier also gets its id
RECORD_ID = frozenset({"record_id"})
# MessageLog: the digest's values (lookup_core.types.MessageLog.values)
MESSAGE_PLACEHOLDERS = frozenset(
    {"contact_id", "type", "conversation_id", "day", "title", "body", "participants", "message_count",
     "first_time", "last_time", "direction", "remote_number", "remote_name", "link", "user_id", "record_key"}
)
MAX_USERS = 10000
CREATE_PLACEHOLDERS = frozenset({"name", "company", "email", "e164", "digits", "request_key"})
PAGING_STYLES = ("none", "page", "offset", "cursor", "link")
# Defaults of page_param / page_size_param per paging style.
_PAGE_PARAM = {"page": "page", "offset": "offset", "cursor": "cursor"}
_PAGE_SIZE_PARAM = {"page": "per_page", "offset": "limit"}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


# --- options -------------------------------------------------------------------------------------
class Expression:
    """A compiled JMESPath expression. Plain dotted names (``id``, ``org.name``), most fields in
    practice, are read directly: a mirror sync evaluates them for every record of the source."""

    __slots__ = ("expression", "_parsed", "_names")

    def __init__(self, text: str):
        if text.strip().lower().startswith(("http://", "https://", "/")):
            raise ValueError(
                f"{text!r} looks like a URL; a JMESPath expression into the JSON response is expected here"
            )
        try:
            self._parsed = jmespath.compile(text)
        except JMESPathError as exc:
            reason = " ".join(str(exc).split())
            raise ValueError(f"invalid JMESPath expression {text!r}: {reason}") from None
        self.expression = text
        self._names = text.split(".") if _DOTTED.fullmatch(text) else None

    def search(self, data: Any) -> Any:
        if self._names is None:
            return self._parsed.search(data)
        for name in self._names:
            if not isinstance(data, dict):
                return None
            data = data.get(name)
        return data


def compile_expression(text: str) -> Expression:
    """Compile a JMESPath expression or raise ValueError with a one-line reason."""
    return Expression(text)


def placeholders(template: Any) -> set[str]:
    """Every ``{name}`` used in a string template or anywhere inside a table/list body."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template)) if template else set()
    return set()


def _check_placeholders(template: Any, allowed: frozenset[str]) -> None:
    unknown = placeholders(template) - allowed
    if unknown:
        names = ", ".join("{" + name + "}" for name in sorted(unknown))
        choices = ", ".join("{" + name + "}" for name in sorted(allowed)) or "none"
        raise ValidationError(f"unknown placeholder {names}; allowed here: {choices}")


class JMESPathField(fields.String):
    """A JMESPath expression, compiled while loading so a bad one is reported with its key."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            compile_expression(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return text


class TemplateField(fields.String):
    """A string with ``{placeholder}``s; an unknown placeholder (a typo) is a start-up error."""

    def __init__(self, allowed: frozenset[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.allowed = frozenset(allowed)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        _check_placeholders(text, self.allowed)
        return text


class BodyField(fields.Raw):
    """A request body: a string template, or a TOML table/array sent as JSON."""

    def __init__(self, allowed: frozenset[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.allowed = frozenset(allowed)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str | dict | list):
            raise ValidationError("must be a string template or a table (sent as JSON)")
        _check_placeholders(value, self.allowed)
        return value


class ExpressionMap(fields.Dict):
    """A table of label -> JMESPath expression; a bad expression is reported under its label."""

    def __init__(self, **kwargs: Any):
        super().__init__(keys=fields.String(), values=fields.String(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        table = super()._deserialize(value, attr, data, **kwargs)
        errors = {}
        for label, expr in table.items():
            try:
                compile_expression(expr)
            except ValueError as exc:
                errors[label] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        return table


class RecordFields(Schema):
    """Where each value of a contact sits in one record: JMESPath expressions."""

    id = JMESPathField(required=True)
    name = JMESPathField(load_default=None)
    first_name = JMESPathField(load_default=None)
    last_name = JMESPathField(load_default=None)
    company = JMESPathField(load_default=None)
    phones = JMESPathField(required=True)
    contact_uri = JMESPathField(load_default=None)
    company_uri = JMESPathField(load_default=None)
    email = JMESPathField(load_default=None)
    last_activity = JMESPathField(load_default=None)
    custom_data = ExpressionMap(load_default=dict)
    # the contacts API: the types of the numbers ``phones`` finds, in the same order and number
    # (``phones[].type`` beside ``phones[].number``, or ``['work', 'mobile']`` beside ``[phone, mobile]``),
    # each read by lookup_core.phone_types.phone_type; the job title and a picture URL
    phone_types = JMESPathField(load_default=None)
    job_title = JMESPathField(load_default=None)
    image_url = JMESPathField(load_default=None)

    @validates_schema
    def _has_a_name(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not (data.get("name") or data.get("first_name") or data.get("last_name")):
            raise ValidationError("give `name`, or `first_name` and/or `last_name`", "name")


class FindCallOptions(Schema):
    """The request that finds a call already recorded (by ``{call_key}``), asked before recording."""

    request_url = TemplateField(CALL_PLACEHOLDERS, required=True)
    method = fields.String(load_default="GET", validate=validate.OneOf(["GET", "POST"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(CALL_PLACEHOLDERS), load_default=dict)
    body = BodyField(CALL_PLACEHOLDERS, load_default=None)
    # where the found records sit in the answer (an empty list, null or 404: not recorded yet)
    results = JMESPathField(load_default="@")
    id = JMESPathField(load_default=None)  # in a found record; default: call_log.id
    url = JMESPathField(load_default=None)  # in a found record; default: call_log.url

    @validates_schema
    def _no_get_body(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("method") == "GET" and data.get("body") is not None:
            raise ValidationError('a GET request carries no body; set method = "POST"', "body")


class CallLogOptions(Schema):
    """The request that records a call (CallFlow) and where its answer holds the id and link."""

    request_url = TemplateField(CALL_PLACEHOLDERS, required=True)
    method = fields.String(load_default="POST", validate=validate.OneOf(["POST", "PUT", "PATCH"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(CALL_PLACEHOLDERS), load_default=dict)
    body = BodyField(CALL_PLACEHOLDERS, load_default=None)
    id = JMESPathField(load_default=None)
    url = JMESPathField(load_default=None)
    find_call = fields.Nested(FindCallOptions, load_default=None)


class CallLogUpdateOptions(Schema):
    """The request that updates a recorded call (``{record_id}``: the id ``call_log.id`` read) when a
    later post of it adds its end or a note."""

    request_url = TemplateField(CALL_PLACEHOLDERS | RECORD_ID, required=True)
    method = fields.String(load_default="PATCH", validate=validate.OneOf(["POST", "PUT", "PATCH"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(CALL_PLACEHOLDERS | RECORD_ID),
                          load_default=dict)
    body = BodyField(CALL_PLACEHOLDERS | RECORD_ID, load_default=None)
    url = JMESPathField(load_default=None)  # the record's link in the answer; default: call_log.url


class FindMessageOptions(FindCallOptions):
    """The request that finds a message record already made (by ``{record_key}``), asked first."""

    request_url = TemplateField(MESSAGE_PLACEHOLDERS, required=True)
    headers = fields.Dict(keys=fields.String(), values=TemplateField(MESSAGE_PLACEHOLDERS), load_default=dict)
    body = BodyField(MESSAGE_PLACEHOLDERS, load_default=None)


class MessageLogOptions(Schema):
    """The request that creates a message record (an SMS digest, a voicemail, a fax) and where its
    answer holds the id and link."""

    request_url = TemplateField(MESSAGE_PLACEHOLDERS, required=True)
    method = fields.String(load_default="POST", validate=validate.OneOf(["POST", "PUT"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(MESSAGE_PLACEHOLDERS), load_default=dict)
    body = BodyField(MESSAGE_PLACEHOLDERS, load_default=None)
    id = JMESPathField(required=True)
    url = JMESPathField(load_default=None)
    find_message = fields.Nested(FindMessageOptions, load_default=None)


class MessageLogUpdateOptions(Schema):
    """The request that rewrites a message record (``{record_id}``) with the digest so far."""

    request_url = TemplateField(MESSAGE_PLACEHOLDERS | RECORD_ID, required=True)
    method = fields.String(load_default="PATCH", validate=validate.OneOf(["POST", "PUT", "PATCH"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(MESSAGE_PLACEHOLDERS | RECORD_ID),
                          load_default=dict)
    body = BodyField(MESSAGE_PLACEHOLDERS | RECORD_ID, load_default=None)
    url = JMESPathField(load_default=None)  # default: message_log.url


class UserFields(Schema):
    """Where a user's values sit in one record of the users answer: JMESPath expressions."""

    id = JMESPathField(required=True)
    name = JMESPathField(load_default=None)
    first_name = JMESPathField(load_default=None)
    last_name = JMESPathField(load_default=None)
    email = JMESPathField(load_default=None)


class UsersOptions(Schema):
    """The GET that lists the CRM's users, where the list sits in its answer and each user's values."""

    request_url = TemplateField(frozenset(), required=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    results = JMESPathField(load_default="@")
    user_fields = fields.Nested(UserFields, data_key="fields", required=True)


class CreateContactOptions(Schema):
    """The request that creates a contact (CreateContact) and where its answer holds the id and link."""

    request_url = TemplateField(CREATE_PLACEHOLDERS, required=True)
    method = fields.String(load_default="POST", validate=validate.OneOf(["POST", "PUT"]))
    headers = fields.Dict(keys=fields.String(), values=TemplateField(CREATE_PLACEHOLDERS), load_default=dict)
    body = BodyField(CREATE_PLACEHOLDERS, load_default=None)
    id = JMESPathField(required=True)
    url = JMESPathField(load_default=None)


class RestOptions(BackendOptions):
    # live lookup request
    lookup_url = TemplateField(LOOKUP_PLACEHOLDERS, load_default=None)
    method = fields.String(load_default="GET", validate=validate.OneOf(["GET", "POST"]))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    body = BodyField(LOOKUP_PLACEHOLDERS, load_default=None)
    try_forms = fields.List(fields.String(validate=validate.OneOf(NUMBER_FORMS)), load_default=None)
    not_found_is_empty = fields.Boolean(load_default=True)
    # authentication and TLS
    username = fields.String(load_default=None)
    password = fields.String(load_default=None)
    verify_tls = fields.Boolean(load_default=True)
    ca_file = fields.String(load_default=None)
    # reading the answer
    results = JMESPathField(load_default="@")
    record_fields = fields.Nested(RecordFields, data_key="fields", required=True)
    contact_uri_template = TemplateField(frozenset({"id"}), load_default=None)
    # name search (GET /contacts/search): {term} as typed, {limit}; the records at search_results
    search_url = TemplateField(frozenset({"term", "limit"}), load_default=None)
    search_results = JMESPathField(load_default=None)
    # mirror listing
    list_url = TemplateField(frozenset(), load_default=None)
    list_results = JMESPathField(load_default=None)
    paging = fields.String(load_default="none", validate=validate.OneOf(PAGING_STYLES))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=100_000))
    page_param = fields.String(load_default=None)
    page_size_param = fields.String(load_default=None)
    first_page = fields.Integer(load_default=1)
    next = JMESPathField(load_default=None)
    stop_on_short_page = fields.Boolean(load_default=True)
    max_pages = fields.Integer(load_default=5000, validate=validate.Range(min=1))
    since_param = fields.String(load_default=None)
    since_format = fields.String(load_default="iso", validate=validate.OneOf(["iso", "unix", "unix_ms"]))
    since_overlap = fields.Float(load_default=60.0, validate=validate.Range(min=0))
    deleted = JMESPathField(load_default=None)
    list_timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.1))
    # call logging
    call_log = fields.Nested(CallLogOptions, load_default=None)
    call_log_update = fields.Nested(CallLogUpdateOptions, load_default=None)
    create_contact = fields.Nested(CreateContactOptions, load_default=None)
    message_log = fields.Nested(MessageLogOptions, load_default=None)
    message_log_update = fields.Nested(MessageLogUpdateOptions, load_default=None)
    users = fields.Nested(UsersOptions, load_default=None)

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        mode = data.get("mode") or "live"
        if mode == "live" and not data.get("lookup_url"):
            raise ValidationError(
                'required in live mode (or set mode = "mirror" with list_url)', "lookup_url"
            )
        if mode == "mirror" and not data.get("list_url"):
            raise ValidationError("required in mirror mode: the URL that lists every contact", "list_url")
        if data.get("method") == "GET" and data.get("body") is not None:
            raise ValidationError('a GET request carries no body; set method = "POST"', "body")
        if data.get("try_forms") and "number" not in placeholders([data.get("lookup_url"), data.get("body")]):
            raise ValidationError(
                "put {number} in lookup_url or body: it takes each form of try_forms in turn", "try_forms"
            )
        if data.get("search_formats") and "number" not in placeholders([data.get("lookup_url"), data.get("body")]):
            raise ValidationError(
                "put {number} in lookup_url or body: it takes each spelling of search_formats in turn",
                "search_formats",
            )
        if data.get("paging") == "cursor" and not data.get("next"):
            raise ValidationError('paging = "cursor" needs `next`, the JMESPath of the next cursor', "next")
        if "CallFlow" in (data.get("workflows") or []) and not data.get("call_log"):
            raise ValidationError(
                "workflows lists CallFlow but no [call_log] request is configured", "call_log"
            )
        if data.get("call_log_update") and not data.get("call_log"):
            raise ValidationError("[call_log_update] updates what [call_log] records: configure both",
                                  "call_log_update")
        for key, other in (("message_log", "message_log_update"), ("message_log_update", "message_log")):
            if data.get(key) and not data.get(other):
                raise ValidationError(f"MessageLog needs both [message_log] (the day's first message) and "
                                      f"[message_log_update] (each later one); [{other}] is missing", key)


# --- values inserted into templates ----------------------------------------------------------------
def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def _as_json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _json_text(text: str) -> str:
    """``text`` escaped for the inside of a JSON string (the template supplies the quotes)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _body_escaper(content_type: str):
    kind = content_type.lower()
    if "json" in kind:
        return _json_text
    if "x-www-form-urlencoded" in kind:
        return quote_plus
    if "xml" in kind:
        return lambda text: xml_escape(text, {'"': "&quot;", "'": "&apos;"})
    return lambda text: text


def _fill(template: str, values: dict[str, Any], escape) -> str:
    return _PLACEHOLDER.sub(lambda m: escape(_as_text(values.get(m.group(1)))), template)


def _fill_tree(node: Any, values: dict[str, Any]) -> Any:
    """Render a table body: a string that is exactly one placeholder keeps the value's JSON type
    (a number for {duration}, null for an empty time); other strings get the values as text."""
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return _as_json_value(values.get(whole.group(1)))
        return _fill(node, values, lambda text: text)
    if isinstance(node, dict):
        return {key: _fill_tree(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill_tree(value, values) for value in node]
    return _as_json_value(node)


def _header_text(text: str) -> str:
    """A header value: one line, and only what HTTP/1.1 carries (Latin-1)."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text.encode("latin-1", "replace").decode("latin-1")


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """A configured request: URL, method, extra headers and body, all with placeholders."""

    key: str  # the option that defines it, for messages
    url: str
    method: str
    headers: dict[str, str]
    body: Any

    def render(self, values: dict[str, Any]) -> tuple[str, dict[str, str], bytes | None]:
        url = _fill(self.url, values, lambda text: quote(text, safe=""))
        headers = {
            name: _header_text(_fill(value, values, _header_text)) for name, value in self.headers.items()
        }
        if self.body is None:
            return url, headers, None
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if content_type is None:
            content_type = headers["Content-Type"] = "application/json"
        if isinstance(self.body, str):
            text = _fill(self.body, values, _body_escaper(content_type))
        else:
            text = json.dumps(_fill_tree(self.body, values), ensure_ascii=False)
        return url, headers, text.encode("utf-8")

    def describe(self) -> str:
        """Method and URL template (no number, no secret), for messages."""
        return f"{self.method} {redact_url(self.url)}"


def _number_values(number: PhoneNumber, limit: int) -> dict[str, Any]:
    if number.is_short:
        forms = dict.fromkeys(NUMBER_FORMS, number.digits)
    else:
        forms = {
            "e164": number.e164,
            "digits": number.digits,
            "national": number.national or number.digits,
            "nsn": number.nsn or number.digits,
            "intl": "00" + number.digits,
        }
    return dict(forms, number=forms["e164"], limit=limit)


# --- reading values out of records ------------------------------------------------------------------
def _text(value: Any) -> str | None:
    """Like :func:`scalar`, and the first usable element of a list (e.g. a list of e-mails)."""
    if isinstance(value, list):
        return next((text for text in map(scalar, value) if text), None)
    return scalar(value)


def _phones(value: Any) -> list[str]:
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for element in item:
                walk(element)
        else:
            text = scalar(item)
            if text:
                found.append(text)

    walk(value)
    return list(dict.fromkeys(found))


def _phone_types(numbers: Any, labels: Any) -> dict[str, str]:
    """Each number's type: ``labels`` beside ``numbers``, item by item (a list beside a list of the
    same length, or one value beside one value). Lists of different lengths (a projection such as
    ``phones[].type`` leaves out the entries without a type) cannot be paired: no type then."""
    if labels is None:
        return {}
    if not isinstance(numbers, list):
        numbers, labels = [numbers], [labels]
    elif not isinstance(labels, list) or len(labels) != len(numbers):
        return {}
    types: dict[str, str] = {}
    for item, label in zip(numbers, labels, strict=False):
        label = scalar(label)
        if label:
            for number in _phones(item):
                types.setdefault(number, phone_type(label))
    return types


def _display(value: Any) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        parts = [text for text in map(_display, value) if text]
        return ", ".join(parts) or None
    return scalar(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(list(value)[:8]) or "none"
        return scrub(f"an object (keys: {keys})")
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _probe_number(region: str) -> PhoneNumber:
    example = phonenumbers.example_number(region) or phonenumbers.example_number("CH")
    return parse_number(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164), region)


# --- the backend ---------------------------------------------------------------------------------
class RestBackend(HttpSource):
    """Any JSON API, described by URL templates and JMESPath expressions."""

    creates_contacts = True  # with a [create_contact] request (can_create_contacts)
    logs_messages = True  # with [message_log] and [message_log_update] (can_log_messages)
    users = True  # with a [users] request (can_list_users)

    pool_size = 32

    type_name: ClassVar[str] = "rest"
    options_schema = RestOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True  # with search_url
    workflows = frozenset({"CallFlow"})  # when a [call_log] request is configured: see workflows_for
    secret_keys = HttpSource.secret_keys | {"password"}

    @classmethod
    def workflows_for(cls, options: dict[str, Any]) -> frozenset[str]:
        return cls.workflows if options.get("call_log") else frozenset()

    @classmethod
    def can_log_messages(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("message_log")) and bool(options.get("message_log_update"))

    @classmethod
    def can_list_users(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("users"))

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        o = self.options
        self._results = self._compile(o["results"], "results")
        list_key = "list_results" if o.get("list_results") else "results"
        self._list_results = self._compile(o.get(list_key) or "@", list_key)
        record_fields = dict(o["record_fields"])
        custom = record_fields.pop("custom_data", None) or {}
        self._fields = {
            key: self._compile(expr, f"fields.{key}") for key, expr in record_fields.items() if expr
        }
        self._custom = {
            label: self._compile(expr, f"fields.custom_data.{label}") for label, expr in custom.items()
        }
        self._next = self._compile(o["next"], "next") if o.get("next") else None
        self._deleted = self._compile(o["deleted"], "deleted") if o.get("deleted") else None

        self._lookup: RequestTemplate | None = None
        if o.get("lookup_url"):
            self._lookup = RequestTemplate("lookup_url", o["lookup_url"], o["method"], {}, o.get("body"))
        self.try_forms: list[str] = list(o.get("try_forms") or [])
        self._search = RequestTemplate("search_url", o["search_url"], "GET", {}, None) if o.get("search_url") else None
        search_key = "search_results" if o.get("search_results") else "results"
        self._search_results = self._compile(o.get(search_key) or "@", search_key)
        self._number_used = placeholders([o.get("lookup_url"), o.get("body")])

        call_log = o.get("call_log")
        self._call: RequestTemplate | None = None
        self._call_id = self._call_url = None
        if call_log:
            self._call = RequestTemplate(
                "call_log",
                call_log["request_url"],
                call_log["method"],
                dict(call_log["headers"]),
                call_log["body"],
            )
            if call_log.get("id"):
                self._call_id = self._compile(call_log["id"], "call_log.id")
            if call_log.get("url"):
                self._call_url = self._compile(call_log["url"], "call_log.url")
        create = o.get("create_contact")
        self._create: RequestTemplate | None = None
        if create:
            self._create = RequestTemplate(
                "create_contact", create["request_url"], create["method"], dict(create["headers"]), create["body"]
            )
            self._create_id = self._compile(create["id"], "create_contact.id")
            self._create_url = self._compile(create["url"], "create_contact.url") if create.get("url") else None
        find = (call_log or {}).get("find_call")
        self._find: RequestTemplate | None = None
        if find:
            self._find = RequestTemplate(
                "call_log.find_call", find["request_url"], find["method"], dict(find["headers"]), find["body"]
            )
            self._find_results = self._compile(find["results"], "call_log.find_call.results")
            self._find_id = self._compile(find["id"], "call_log.find_call.id") if find.get("id") else self._call_id
            self._find_url = (
                self._compile(find["url"], "call_log.find_call.url") if find.get("url") else self._call_url
            )

        self._call_update = self._template("call_log_update")
        self._call_update_url = self._optional(o.get("call_log_update"), "url", "call_log_update") or self._call_url
        self._kept_calls_noted = False
        self._message = self._template("message_log")
        self._message_update = self._template("message_log_update")
        message = o.get("message_log") or {}
        self._message_id = self._optional(message, "id", "message_log")
        self._message_url = self._optional(message, "url", "message_log")
        self._message_update_url = self._optional(o.get("message_log_update"), "url", "message_log_update") \
            or self._message_url
        find_message = message.get("find_message")
        self._find_message = self._template("message_log.find_message", find_message)
        if find_message:
            self._find_message_results = self._compile(find_message["results"], "message_log.find_message.results")
            self._find_message_id = self._optional(find_message, "id", "message_log.find_message") or self._message_id
            self._find_message_url = self._optional(find_message, "url", "message_log.find_message") \
                or self._message_url
        users = o.get("users")
        self._users = RequestTemplate("users", users["request_url"], "GET", dict(users["headers"]), None) \
            if users else None
        if users:
            self._users_results = self._compile(users["results"], "users.results")
            self._user_fields = {key: self._compile(expr, f"users.fields.{key}")
                                 for key, expr in users["user_fields"].items() if expr}

        paging = o["paging"]
        self.paging = paging
        page_param = o.get("page_param")
        self.page_param = page_param if page_param is not None else _PAGE_PARAM.get(paging, "")
        size_param = o.get("page_size_param")
        self.page_size_param = size_param if size_param is not None else _PAGE_SIZE_PARAM.get(paging, "")

        self.session.headers["Accept"] = "application/json"
        self.session.headers.update(o.get("headers") or {})
        if o.get("username"):
            self.session.auth = (o["username"], o.get("password") or "")
        if o.get("ca_file"):
            self.session.verify = o["ca_file"]

    def _template(self, key: str, table: dict[str, Any] | None = None) -> RequestTemplate | None:
        """The request template of option ``key`` (or of ``table``), None when it is not configured."""
        table = self.options.get(key) if table is None else table
        if not table:
            return None
        return RequestTemplate(key, table["request_url"], table["method"], dict(table["headers"]), table["body"])

    def _optional(self, table: dict[str, Any] | None, name: str, key: str) -> Expression | None:
        """The expression ``table[name]`` compiled, None when absent."""
        expr = (table or {}).get(name)
        return self._compile(expr, f"{key}.{name}") if expr else None

    def _compile(self, expr: str, key: str) -> Expression:
        try:
            return compile_expression(expr)
        except ValueError as exc:
            raise BackendConfigError(f"{self.spec.where(key)}: {exc}", key=key) from None

    # HTTP -------------------------------------------------------------------------------------------
    def _fail(self, what: str, text: str) -> str:
        return self.fail(f"{what} {text}")

    def _json(self, response: requests.Response, what: str) -> Any:
        """The decoded body; None for an empty one."""
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "none")
            raise BackendUnavailable(
                self._fail(
                    what, f"did not answer JSON (Content-Type {content_type}, {len(response.content)} bytes)"
                )
            ) from None

    # reading records -------------------------------------------------------------------------------
    def _records(self, data: Any, expr: Any, key: str, what: str) -> list[Any]:
        if data is None:
            return []
        try:
            found = expr.search(data)
        except JMESPathError as exc:
            raise BackendUnavailable(
                self._fail(what, f"answered a shape `{key}` cannot read: {exc}")
            ) from None
        if not isinstance(found, list):
            raise BackendUnavailable(
                self._fail(
                    what,
                    f"answered an unexpected shape: `{key}` = {expr.expression!r} gave {_kind(found)} "
                    f"instead of a list of records (the answer is {_kind(data)})",
                )
            )
        return found

    def _value(self, expr: Any, record: Any) -> Any:
        if expr is None:
            return None
        try:
            return expr.search(record)
        except JMESPathError:
            return None

    def _contact(self, record: Any) -> Contact | None:
        get = self._fields.get
        contact_id = scalar(self._value(get("id"), record))
        if contact_id is None:
            return None
        name = _text(self._value(get("name"), record))
        if not name:
            parts = (
                _text(self._value(get("first_name"), record)),
                _text(self._value(get("last_name"), record)),
            )
            name = " ".join(part for part in parts if part) or None
        custom: dict[str, str] = {}
        for label, expr in self._custom.items():
            shown = _display(self._value(expr, record))
            if shown:
                custom[label] = shown
        contact_uri = _text(self._value(get("contact_uri"), record))
        template = self.options.get("contact_uri_template")
        if not contact_uri and template:
            contact_uri = _fill(template, {"id": contact_id}, lambda text: quote(text, safe=""))
        found = self._value(get("phones"), record)
        image = _text(self._value(get("image_url"), record)) or ""
        return Contact(
            id=contact_id,
            name=name,
            company=_text(self._value(get("company"), record)),
            contact_uri=contact_uri,
            company_uri=_text(self._value(get("company_uri"), record)),
            custom_data=custom,
            phones=_phones(found),
            last_activity=read_time(self._value(get("last_activity"), record)),
            email=_text(self._value(get("email"), record)),
            phone_types=_phone_types(found, self._value(get("phone_types"), record)),
            job_title=_text(self._value(get("job_title"), record)),
            image_url=image if image.lower().startswith(("https://", "http://")) else None,
        )

    def _contacts(self, records: list[Any], what: str) -> list[Contact]:
        contacts: list[Contact] = []
        seen: set[str] = set()
        for record in records:
            contact = self._contact(record)
            if contact is not None and contact.id not in seen:
                seen.add(contact.id)
                contacts.append(contact)
        if records and not contacts:
            raise BackendUnavailable(
                self._fail(
                    what,
                    f"answered {len(records)} records, none with an id at `fields.id` = "
                    f"{self.options['record_fields']['id']!r} (a record is {_kind(records[0])})",
                )
            )
        skipped = len(records) - len(contacts)
        if skipped:
            log.debug("%s: %d records without a usable id or repeated, skipped", self.spec.where(), skipped)
        return contacts

    # live lookup ----------------------------------------------------------------------------------
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        if self._lookup is None:
            raise BackendUnavailable(f"{self.spec.where()}: no lookup_url configured for live lookups")
        started = time.perf_counter()
        values = _number_values(number, limit)
        matched: list[Contact] = []
        if self.try_forms:
            forms = list(dict.fromkeys(values[form] for form in self.try_forms))
        else:
            forms = [values["number"]]
        if "number" in self._number_used:  # search_formats: more spellings for an exact search
            forms = list(dict.fromkeys(forms + self.formatted(number)))
        budget = self.timeout_s  # for the whole lookup: the forms of try_forms share it
        for tried, form in enumerate(forms):
            remaining = budget - (time.perf_counter() - started)
            if remaining < 0.05:
                raise BackendUnavailable(
                    f"{self.spec.where()}: out of time after {tried} of the {len(forms)} forms of try_forms"
                )
            values["number"] = form
            candidates = self._lookup_once(values, min(self.timeout_s, remaining))
            matched = self.filter_candidates(number, candidates)
            if matched:
                break
        matched.sort(key=lambda contact: not contact.exact)
        log.debug(
            "%s: %s -> %d contacts in %.0f ms",
            self.spec.where(),
            number.masked(),
            len(matched),
            (time.perf_counter() - started) * 1000,
        )
        return matched[:limit]

    def _lookup_once(self, values: dict[str, Any], timeout: float) -> list[Contact]:
        template = self._lookup
        assert template is not None
        what = template.describe()
        url, headers, data = template.render(values)
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=timeout)
        if response.status_code == 404 and self.options["not_found_is_empty"]:
            return []
        self.check_status(response, what)
        records = self._records(self._json(response, what), self._results, "results", what)
        contacts = self._contacts(records, what)
        if contacts and not any(contact.phones for contact in contacts):
            raise BackendUnavailable(
                self._fail(
                    what,
                    f"answered {len(contacts)} records, none with a phone number at `fields.phones` = "
                    f"{self.options['record_fields']['phones']!r}",
                )
            )
        return contacts

    def search(self, term: str, limit: int) -> list[Contact]:
        """Contacts by name from ``search_url`` (``{term}``, ``{limit}``), in the API's order; []
        without one. One request within the lookup timeout; a 404 is no match (``not_found_is_empty``)."""
        if self._search is None or not term.strip():
            return []
        what = self._search.describe()
        url, headers, data = self._search.render({"term": term.strip(), "limit": limit})
        response = self.send("GET", url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        if response.status_code == 404 and self.options["not_found_is_empty"]:
            return []
        self.check_status(response, what)
        records = self._records(self._json(response, what), self._search_results, "search_results", what)
        return self._contacts(records, what)[:limit]

    def check(self) -> None:
        """One real request: a lookup of an example number, or the first page of the listing."""
        if self._lookup is not None:
            self.lookup(_probe_number(self.spec.default_region), 1)
        elif self.options.get("list_url"):
            pages = self.sync(None)
            try:
                next(pages, None)
            finally:
                pages.close()

    # mirror ---------------------------------------------------------------------------------------
    def _since_value(self, moment: datetime) -> str:
        style = self.options["since_format"]
        if style == "unix":
            return str(int(moment.timestamp()))
        if style == "unix_ms":
            return str(int(moment.timestamp() * 1000))
        return _iso(moment)

    def _deleted_ids(self, data: Any) -> list[str]:
        if self._deleted is None or data is None:
            return []
        found = self._value(self._deleted, data)
        items = found if isinstance(found, list) else [found]
        return list(dict.fromkeys(text for text in map(scalar, items) if text))

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        """List the source page by page. With ``since_param``, ``cursor`` is the start time of the
        previous sync (ISO 8601 UTC) and only what changed since then is asked for."""
        o = self.options
        list_url = o.get("list_url")
        if not list_url:
            raise BackendConfigError(
                f"{self.spec.where('list_url')}: needed to mirror the source", key="list_url"
            )
        what = f"GET {redact_url(list_url)}"
        since_param = o.get("since_param")
        started = datetime.now(UTC)
        new_cursor = _iso(started) if since_param else None
        since = read_time(cursor) if (cursor and since_param) else None

        params: dict[str, Any] = {}
        if since is not None:
            params[since_param] = self._since_value(since - timedelta(seconds=o["since_overlap"]))
        if self.paging != "none" and self.page_size_param:
            params[self.page_size_param] = o["page_size"]
        url = list_url
        page_number = o["first_page"]
        offset = 0
        full_page = o["page_size"]
        previous_ids: list[str] | None = None
        previous_token: str | None = None

        for page in range(1, o["max_pages"] + 1):
            if self.paging == "page":
                params[self.page_param] = page_number
            elif self.paging == "offset":
                params[self.page_param] = offset
            response = self.send("GET", url, what=what, params=params, timeout=o["list_timeout"])
            self.check_status(response, what)
            data = self._json(response, what)
            records = self._records(data, self._list_results, "list_results", what)
            contacts = self._contacts(records, what)
            ids = [contact.id for contact in contacts]
            if ids and ids == previous_ids:
                raise BackendUnavailable(
                    self._fail(what, f"repeated page {page - 1} as page {page}: check paging and page_param")
                )
            previous_ids = ids

            done = False
            if self.paging == "none":
                done = True
            elif self.paging in ("page", "offset"):
                size = len(records)
                if size == 0:
                    done = True
                elif o["stop_on_short_page"]:
                    # A short first page is either the whole listing or the API's own page cap:
                    # ask once more rather than take a cap for the end (that would delete contacts).
                    if page == 1 and size < full_page:
                        full_page = size
                    elif size < full_page:
                        done = True
                page_number += 1
                offset += size
            else:
                if self.paging == "cursor":
                    token = scalar(self._value(self._next, data))
                else:
                    token = response.links.get("next", {}).get("url")
                if not token:
                    done = True
                elif token == previous_token:
                    raise BackendUnavailable(self._fail(what, f"gave the same next page twice (page {page})"))
                else:
                    previous_token = token
                    if self.paging == "link" or token.lower().startswith(("http://", "https://", "/")):
                        url, params = urljoin(response.url, token), {}
                    else:
                        params[self.page_param] = token
            yield SyncBatch(
                contacts=contacts,
                deleted_ids=self._deleted_ids(data),
                cursor=new_cursor if done else None,
                complete=done and since is None,
            )
            if done:
                return
        raise BackendUnavailable(
            self._fail(
                what, f"still had more pages after max_pages = {o['max_pages']}; raise max_pages or page_size"
            )
        )

    # call logging ---------------------------------------------------------------------------------
    def log_call(self, call: CallRecord) -> WorkflowResult:
        if self._call is None:
            return super().log_call(call)
        values = self._call_values(call)
        if self._find is not None:
            found = self._find_call(values)
            if found is not None:
                log.info("%s: the call was recorded already (%s)", self.spec.where(), self._find.describe())
                # by an attempt whose answer was lost; this post may know more (its end, a note)
                return self.update_call(found.id, call) if found.id and self._call_update is not None else found
        template = self._call
        what = template.describe()
        url, headers, data = template.render(values)
        if call.key and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = call.key
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        if response.status_code == 404:
            raise ContactNotFound(
                self._fail(
                    what, f"answered 404: unknown contact {call.contact_id!r} (or a wrong request_url)"
                )
            )
        if response.status_code in (400, 410, 422):
            # the API refused this record for good: sending it again cannot help
            status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
            raise DeliveryRefused(self._fail(what, f"refused the call: {status}"))
        self.check_status(response, what)
        try:
            answer = self._json(response, what)
        except BackendUnavailable as exc:
            # The call was recorded (2xx); failing now would only make the caller retry it.
            log.warning("%s; the call was recorded, its id is unknown", exc)
            return WorkflowResult(id=None, url=None)
        return WorkflowResult(
            id=scalar(self._value(self._call_id, answer)) if answer is not None else None,
            url=scalar(self._value(self._call_url, answer)) if answer is not None else None,
        )

    def _call_values(self, call: CallRecord) -> dict[str, Any]:
        """The call's template values; ``{user_id}`` is the record's owner (:meth:`owner_for`)."""
        values = call.values()
        values["user_id"] = self.owner_for(call.user_id)
        return values

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """The record ``record_id`` changed with the ``[call_log_update]`` request; without one it is
        kept as the first post made it (said once at INFO)."""
        if self._call is None:
            return super().update_call(record_id, call)
        if self._call_update is None:
            if not self._kept_calls_noted:
                self._kept_calls_noted = True
                log.info("%s: a later post of a call (its end, a note) keeps the call's first record unchanged: no "
                         "[call_log_update] request is configured", self.spec.where())
            return WorkflowResult(id=record_id, url=self._contact_link(call.contact_id))
        answer = self._change(self._call_update, {**self._call_values(call), "record_id": record_id}, "call")
        return WorkflowResult(id=record_id, url=self._link(self._call_update_url, answer, call.contact_id))

    # message logging --------------------------------------------------------------------------------
    def _message_values(self, message_log: MessageLog) -> dict[str, Any]:
        values = message_log.values()
        values["user_id"] = self.owner_for(message_log.user_id)
        return values

    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        """Create the record with ``[message_log]`` (asking ``find_message`` first when configured: a
        record an earlier attempt made is updated instead). The request carries the digest's key as
        ``Idempotency-Key``; a digest of several messages (a retry, messages posted meanwhile) is
        then rewritten with ``[message_log_update]``, in case the API answered the record it had."""
        if self._message is None or self._message_update is None:
            return super().log_message(message_log)
        values = self._message_values(message_log)
        if self._find_message is not None:
            found = self._find_record(self._find_message, values, self._find_message_results, self._find_message_id,
                                      self._find_message_url, "message_log.find_message.results")
            if found is not None and found.id:
                log.info("%s: the message record exists already (%s)", self.spec.where(),
                         self._find_message.describe())
                return self.update_message(found.id, message_log)
        template = self._message
        what = template.describe()
        url, headers, data = template.render(values)
        if message_log.key and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = message_log.key
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        self.check_status(response, what, write=True)
        answer = self._json(response, what)
        record_id = scalar(self._value(self._message_id, answer)) if answer is not None else None
        if record_id is None:
            # without its id the record cannot be updated by the day's later messages
            raise DeliveryRefused(self._fail(what, "made the record but its answer has no id at `message_log.id` = "
                                             f"{self.options['message_log']['id']!r}"))
        if len(message_log.messages) > 1:
            return self.update_message(record_id, message_log)
        return WorkflowResult(id=record_id, url=self._link(self._message_url, answer, message_log.contact_id))

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        if self._message is None or self._message_update is None:
            return super().update_message(record_id, message_log)
        values = {**self._message_values(message_log), "record_id": record_id}
        answer = self._change(self._message_update, values, "message record")
        return WorkflowResult(id=record_id, url=self._link(self._message_update_url, answer, message_log.contact_id))

    def _change(self, template: RequestTemplate, values: dict[str, Any], what_record: str) -> Any:
        """Send an update request; its decoded answer (None when empty or not JSON: the change was made)."""
        what = template.describe()
        url, headers, data = template.render(values)
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        error = self.status_error(response, what, write=True)
        if error is not None:
            if isinstance(error, ContactNotFound):  # the record is gone: updating it again cannot help
                raise RecordGone(self._fail(what, f"answered HTTP {response.status_code}: the {what_record} "
                                                 f"{values['record_id']!r} is not there any more"))
            raise error
        try:
            return self._json(response, what)
        except BackendUnavailable as exc:
            log.warning("%s; the %s was updated", exc, what_record)
            return None

    def _link(self, expr: Expression | None, answer: Any, contact_id: str) -> str | None:
        """The record's link in ``answer`` at ``expr``, else the contact's page (``contact_uri_template``)."""
        link = scalar(self._value(expr, answer)) if answer is not None and expr is not None else None
        return link or self._contact_link(contact_id)

    def _contact_link(self, contact_id: str) -> str | None:
        template = self.options.get("contact_uri_template")
        return _fill(template, {"id": contact_id}, lambda text: quote(text, safe="")) if template else None

    # users --------------------------------------------------------------------------------------------
    def list_users(self) -> list[CrmUser]:
        """The records of the ``[users]`` GET (``results``), read with ``users.fields``."""
        if self._users is None:
            return super().list_users()
        what = self._users.describe()
        url, headers, _ = self._users.render({})
        response = self.send("GET", url, what=what, headers=headers, timeout=max(self.timeout_s, 5.0))
        self.check_status(response, what)
        records = self._records(self._json(response, what), self._users_results, "users.results", what)
        get = self._user_fields.get
        users = []
        for record in records[:MAX_USERS]:
            user_id = scalar(self._value(get("id"), record))
            if user_id is None:
                continue
            name = _text(self._value(get("name"), record))
            if not name:
                parts = (_text(self._value(get("first_name"), record)), _text(self._value(get("last_name"), record)))
                name = " ".join(part for part in parts if part) or None
            users.append(CrmUser(id=user_id, name=name, email=_text(self._value(get("email"), record))))
        if records and not users:
            raise BackendUnavailable(self._fail(what, f"answered {len(records)} users, none with an id at "
                                                f"`users.fields.id` = {self.options['users']['user_fields']['id']!r}"))
        return users

    @classmethod
    def can_create_contacts(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("create_contact"))

    def create_contact(self, new: NewContact) -> WorkflowResult:
        if self._create is None:
            return super().create_contact(new)
        template = self._create
        what = template.describe()
        url, headers, data = template.render(new.values())
        if new.key and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = new.key
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        if response.status_code in (400, 404, 409, 410, 422):
            status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
            raise DeliveryRefused(self._fail(what, f"refused the new contact: {status}"))
        self.check_status(response, what)
        answer = self._json(response, what)
        contact_id = scalar(self._value(self._create_id, answer)) if answer is not None else None
        if contact_id is None:
            # created (2xx) but the id is not where `create_contact.id` says: the next lookup finds it
            raise DeliveryRefused(self._fail(what, "created the contact but its answer has no id at "
                                             f"`create_contact.id` = {self.options['create_contact']['id']!r}"))
        link = scalar(self._value(self._create_url, answer)) if self._create_url is not None else None
        return WorkflowResult(id=contact_id, url=link)

    def _find_call(self, values: dict[str, Any]) -> WorkflowResult | None:
        """The call as an earlier attempt recorded it, or None (404, nothing listed)."""
        assert self._find is not None
        return self._find_record(self._find, values, self._find_results, self._find_id, self._find_url,
                                 "call_log.find_call.results")

    def _find_record(self, template: RequestTemplate, values: dict[str, Any], results: Expression,
                     id_expr: Expression | None, url_expr: Expression | None, key: str) -> WorkflowResult | None:
        """The record a find request (``find_call``, ``find_message``) answers, or None (404, nothing listed)."""
        what = template.describe()
        url, headers, data = template.render(values)
        response = self.send(template.method, url, what=what, headers=headers, data=data, timeout=self.timeout_s)
        if response.status_code == 404:
            return None
        self.check_status(response, what)
        answer = self._json(response, what)
        if answer is None:
            return None
        try:
            found = results.search(answer)
        except JMESPathError:
            found = None
        if found is None:
            return None
        for record in found if isinstance(found, list) else [found]:
            if not isinstance(record, dict):
                raise BackendUnavailable(
                    self._fail(what, f"answered {_kind(record)} where `{key}` expects records")
                )
            record_id = scalar(self._value(id_expr, record))
            # a record counts when it has an id; without an id expression, any listed record does (but
            # not the whole answer: `{"items": []}` read with results = "@" is no record)
            if record_id is not None or (id_expr is None and isinstance(found, list)):
                return WorkflowResult(id=record_id, url=scalar(self._value(url_expr, record)))
        return None

    # housekeeping ---------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["fields"] = info.pop("record_fields", None)
        return info
