"""The generic SQL backend: contacts read from any database SQLAlchemy can reach.

The customer writes the SQL (a lookup query with named parameters such as ``:e164`` or
``:national``, and/or a listing for the mirror) and maps result columns to contact fields. Every
candidate row of a lookup is re-checked with the project's normalization, so a loose ``LIKE``
query never shows a wrong contact. An optional ``INSERT`` makes ``CallFlow`` write call records
(and an ``UPDATE`` complete them at hang-up), two more write ``MessageLog`` digests, and a
``users_query`` lists the CRM users a ``userCrmId`` may name.

Two connection pools are used: a small one for lookups and call logging whose connect and
statement timeouts stay inside the engine's deadline, and a one-connection pool for mirror syncs
(listing a large table takes longer), created on the first sync.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import string
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema
from sqlalchemy import DateTime, Integer, bindparam, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.sql.elements import TextClause

from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RecordGone,
)
from lookup_core.phone import PhoneNumber, parse_number
from lookup_core.phone_types import phone_type
from lookup_core.types import (
    CallRecord,
    Contact,
    CrmUser,
    Message,
    MessageLog,
    NewContact,
    SyncBatch,
    WorkflowResult,
)

from .base import Backend, BackendOptions, BackendSpec

log = logging.getLogger(__name__)

CREATE_PARAMS = frozenset({"name", "company", "email", "e164", "digits", "request_key"})
LOOKUP_PARAMS = frozenset({"e164", "digits", "national", "nsn", "digits00", "short", "limit"})
SINCE_PARAMS = frozenset({"since"})
# name_query (GET /contacts/search): the text as typed, '%text%', 'text%', the row cap
NAME_PARAMS = frozenset({"term", "pattern", "prefix", "limit"})
CALL_TIME_PARAMS = frozenset({"started", "answered", "ended", "declined"})
CALL_PARAMS = frozenset(
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
        "duration",
        "user_id",
        "call_key",
        "summary",
        "note",
    }
    | CALL_TIME_PARAMS
)
CALL_URL_PARAMS = frozenset({"id", "contact_id"})
# MessageLog: the digest's values (lookup_core.types.MessageLog.values)
MESSAGE_TIME_PARAMS = frozenset({"first_time", "last_time"})
MESSAGE_PARAMS = frozenset(
    {"contact_id", "type", "conversation_id", "day", "title", "body", "participants", "message_count",
     "direction", "remote_number", "remote_name", "link", "user_id", "record_key"}
) | MESSAGE_TIME_PARAMS
# an update also gets the id the INSERT returned
RECORD_ID = frozenset({"record_id"})
# the INSERT/UPDATE statements: tried at start-up inside a rolled-back transaction, where a
# constraint broken by the dummy values is no configuration error
WRITES = frozenset({"call_log_query", "call_log_update_query", "message_log_insert_query",
                    "message_log_update_query"})
MAX_USERS = 10000  # rows read from users_query at most
STREAMED = frozenset({"list_query", "since_query", "deleted_query"})
# The number bound to the lookup query by check().
_CHECK_NUMBER = "+41215522000"
_FALSE_TEXT = frozenset({"", "0", "f", "false", "n", "no", "off"})
_PHONE_SEPARATORS = re.compile(r"[;,\n\r|]+")
_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


# options ----------------------------------------------------------------------------------------
def query_params(query: str) -> set[str]:
    """The named parameters (``:name``) of ``query``, as SQLAlchemy's ``text()`` parses them."""
    return set(text(query).compile().params)


class _StringList(fields.List):
    """A list of strings that also accepts a single string."""

    def __init__(self, **kwargs: Any):
        super().__init__(fields.String(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        return super()._deserialize(value, attr, data, **kwargs)


class SqlFields(Schema):
    """Result column names for each contact field (matched case-insensitively)."""

    id = fields.String(required=True)
    phones = _StringList(required=True, validate=validate.Length(min=1))
    name = fields.String(load_default=None)
    first_name = fields.String(load_default=None)
    last_name = fields.String(load_default=None)
    company = fields.String(load_default=None)
    contact_uri = fields.String(load_default=None)
    company_uri = fields.String(load_default=None)
    email = fields.String(load_default=None)
    last_activity = fields.String(load_default=None)
    updated_at = fields.String(load_default=None)
    deleted = fields.String(load_default=None)
    custom_data = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    # the contacts API: each number's type, from a column holding the row's label (a join with a
    # phones table), or per phone column ({"mobile": "mobile", "tel": "work"}); read by
    # lookup_core.phone_types.phone_type. And the job title and a picture URL.
    phone_type = fields.String(load_default=None)
    phone_types = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    job_title = fields.String(load_default=None)
    image_url = fields.String(load_default=None)

    @validates_schema
    def _typed_columns_are_phones(self, data: dict[str, Any], **kwargs: Any) -> None:
        phones = {column.lower() for column in data.get("phones") or []}
        for column in data.get("phone_types") or {}:
            if column.lower() not in phones:
                raise ValidationError(f"{column!r} is not one of the phones columns", "phone_types")


class SqlOptions(BackendOptions):
    url = fields.String(required=True)
    password = fields.String(load_default=None, allow_none=True)
    connect_args = fields.Dict(keys=fields.String(), load_default=dict)
    query = fields.String(load_default=None, allow_none=True)
    list_query = fields.String(load_default=None, allow_none=True)
    name_query = fields.String(load_default=None, allow_none=True)
    since_query = fields.String(load_default=None, allow_none=True)
    deleted_query = fields.String(load_default=None, allow_none=True)
    call_log_query = fields.String(load_default=None, allow_none=True)
    # the id of the row an earlier attempt of the same call wrote (by :call_key): asked when the
    # INSERT wrote nothing (ON CONFLICT DO NOTHING) or hit the unique key
    call_find_query = fields.String(load_default=None, allow_none=True)
    call_url_template = fields.String(load_default=None, allow_none=True)
    # a later post of the same call (its end, a note): UPDATE of the row, :record_id = the id
    # call_log_query returned; without it the first row is kept as it is
    call_log_update_query = fields.String(load_default=None, allow_none=True)
    # MessageLog: one row per SMS digest (contact, conversation, day) or voicemail/fax, created by
    # the insert (RETURNING its id) and rewritten by the update (:record_id) at each later message
    message_log_insert_query = fields.String(load_default=None, allow_none=True)
    message_log_find_query = fields.String(load_default=None, allow_none=True)  # by :record_key
    message_log_update_query = fields.String(load_default=None, allow_none=True)
    message_url_template = fields.String(load_default=None, allow_none=True)
    # the CRM's users (`flask --app wsgi users`, userCrmId checks): columns id, name, email
    users_query = fields.String(load_default=None, allow_none=True)
    # CreateContact: inserts a contact (:name, :company, :email, :e164, :digits, :request_key);
    # RETURNING its id is optional (the contact is then read back by its number with `query`)
    insert_contact_query = fields.String(load_default=None, allow_none=True)
    contact_uri_template = fields.String(load_default=None, allow_none=True)
    company_uri_template = fields.String(load_default=None, allow_none=True)
    # "fields" is also the name of Schema's own attribute: declared under another name
    field_map = fields.Nested(SqlFields, required=True, data_key="fields", attribute="fields")
    max_candidates = fields.Integer(load_default=50, validate=validate.Range(min=1, max=10000))
    batch_size = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100000))
    pool_size = fields.Integer(load_default=2, validate=validate.Range(min=1, max=50))
    sync_timeout = fields.Float(load_default=600.0, validate=validate.Range(min=1))
    since_overlap = fields.Float(load_default=60.0, validate=validate.Range(min=0))

    @validates("url")
    def _check_url(self, value: str, **_: Any) -> None:
        try:
            make_url(value)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise ValidationError(
                f"not a database URL ({exc}); e.g. postgresql+psycopg://user@host/db"
            ) from None

    @validates_schema
    def _check_queries(self, data: dict[str, Any], **_: Any) -> None:
        allowed = {
            "query": LOOKUP_PARAMS,
            "list_query": frozenset(),
            "name_query": NAME_PARAMS,
            "since_query": SINCE_PARAMS,
            "deleted_query": SINCE_PARAMS,
            "call_log_query": CALL_PARAMS,
            "call_find_query": CALL_PARAMS,
            "call_log_update_query": CALL_PARAMS | RECORD_ID,
            "insert_contact_query": CREATE_PARAMS,
            "message_log_insert_query": MESSAGE_PARAMS,
            "message_log_find_query": MESSAGE_PARAMS,
            "message_log_update_query": MESSAGE_PARAMS | RECORD_ID,
            "users_query": frozenset(),
        }
        for key, names in allowed.items():
            query = data.get(key)
            if query is None:
                continue
            if not query.strip():
                raise ValidationError("the query is empty", field_name=key)
            unknown = query_params(query) - names
            if unknown:
                listed = ", ".join(f":{n}" for n in sorted(names)) or "none"
                raise ValidationError(
                    f"unknown parameter(s) {', '.join(':' + n for n in sorted(unknown))}; allowed: {listed}"
                    " (write a literal colon as '\\:')",
                    field_name=key,
                )
        if data.get("since_query") and "since" not in query_params(data["since_query"]):
            raise ValidationError("the query must use :since", field_name="since_query")
        if data.get("since_query") and not data["fields"].get("updated_at"):
            raise ValidationError(
                "since_query needs fields.updated_at, the column whose maximum is the next :since",
                field_name="since_query",
            )
        if data.get("call_find_query") and not data.get("call_log_query"):
            raise ValidationError("call_find_query is only used with call_log_query", field_name="call_find_query")
        if data.get("deleted_query") and not data.get("since_query"):
            raise ValidationError("deleted_query is only used with since_query", field_name="deleted_query")
        if data.get("call_log_update_query") and not data.get("call_log_query"):
            raise ValidationError("call_log_update_query is only used with call_log_query",
                                  field_name="call_log_update_query")
        for key, other in (("message_log_insert_query", "message_log_update_query"),
                           ("message_log_update_query", "message_log_insert_query")):
            if data.get(key) and not data.get(other):
                raise ValidationError(f"MessageLog needs both message_log_insert_query (the day's first message) "
                                      f"and message_log_update_query (each later one); {other} is missing",
                                      field_name=key)
        if data.get("message_log_find_query") and not data.get("message_log_insert_query"):
            raise ValidationError("message_log_find_query is only used with message_log_insert_query",
                                  field_name="message_log_find_query")
        for key, names in (
            ("call_url_template", CALL_URL_PARAMS),
            ("message_url_template", CALL_URL_PARAMS),
            ("contact_uri_template", None),
            ("company_uri_template", None),
        ):
            template = data.get(key)
            if not template:
                continue
            try:
                used = _template_names(template)
            except ValueError as exc:
                raise ValidationError(f"not a valid template: {exc}", field_name=key) from None
            if names is not None and used - names:
                raise ValidationError(
                    f"unknown placeholder(s) {sorted(used - names)}; allowed: {sorted(names)}", field_name=key
                )


def _template_names(template: str) -> set[str]:
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name or not re.fullmatch(r"\w+", name):
                raise ValueError(f"placeholder {{{name}}} must be a column name")
            names.add(name)
    return names


def _user_columns(keys: Iterable[str]) -> tuple[int, int | None, int | None] | None:
    """Positions of the ``id``, ``name`` and ``email`` columns of ``users_query`` (any case); None
    without an ``id`` column."""
    folded: dict[str, int] = {}
    for i, name in enumerate(keys):
        folded.setdefault(name.lower(), i)
    if "id" not in folded:
        return None
    return folded["id"], folded.get("name"), folded.get("email")


def _missing_user_id(keys: Iterable[str]) -> str:
    return (f"the result has no column 'id' (its columns are {', '.join(keys) or 'none'}); name the columns "
            "id, name and email, e.g. SELECT login AS id, full_name AS name, mail AS email FROM users")


# result columns -----------------------------------------------------------------------------------
@dataclass
class _Item:
    contact: Contact
    deleted: bool = False
    updated: Any = None


class _Columns:
    """Positions of the mapped columns in one result; ``missing`` lists (key, column) not found."""

    SINGLE = ("id", "name", "first_name", "last_name", "company", "contact_uri", "company_uri", "email",
              "last_activity", "updated_at", "deleted", "phone_type", "job_title", "image_url")

    def __init__(self, keys: Iterable[str], mapping: dict[str, Any], optional: Iterable[str] = ()):
        self.names = list(keys)
        exact = {name: i for i, name in reversed(list(enumerate(self.names)))}
        folded = {name.lower(): i for i, name in reversed(list(enumerate(self.names)))}
        self.missing: list[tuple[str, str]] = []
        optional = set(optional)

        def find(key: str, column: str | None) -> int | None:
            if not column:
                return None
            index = exact.get(column, folded.get(column.lower()))
            if index is None and key.split(".")[-1] not in optional:
                self.missing.append((key, column))
            return index

        self.index = {name: find(f"fields.{name}", mapping.get(name)) for name in self.SINGLE}
        self.phones: list[int] = []
        self.phone_labels: dict[int, str] = {}  # a phone column's configured type
        labels = {column.lower(): label for column, label in (mapping.get("phone_types") or {}).items()}
        for column in mapping["phones"]:
            i = find("fields.phones", column)
            if i is not None:
                self.phones.append(i)
                if column.lower() in labels:
                    self.phone_labels[i] = labels[column.lower()]
        self.custom: list[tuple[str, int]] = []
        for label, column in mapping["custom_data"].items():
            i = find(f"fields.custom_data.{label}", column)
            if i is not None:
                self.custom.append((label, i))

    def require(self, templates: dict[str, set[str]]) -> None:
        """Also record template placeholders that name no column of the result."""
        folded = {name.lower() for name in self.names}
        for key, names in templates.items():
            for name in sorted(names):
                if name.lower() not in folded:
                    self.missing.append((key, name))

    def describe_missing(self, query_key: str) -> tuple[str, str]:
        key, column = self.missing[0]
        return key, (
            f"column {column!r} (key {key!r}) is not in the result of {query_key!r}; "
            f"its columns are {', '.join(self.names) or 'none'}"
        )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number or id read from a FLOAT column: no trailing ".0"
    result = str(value).strip()
    return result or None


def _phone_values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in _phone_values(item)]
    raw = _text(value)
    if raw is None:
        return []
    return [part.strip() for part in _PHONE_SEPARATORS.split(raw) if part.strip()]


def _as_datetime(value: Any) -> datetime | None:
    """A timezone-aware datetime from a column value; naive values are taken as UTC."""
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day)
        elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            seconds = float(value)
            moment = datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
        elif isinstance(value, str) and value.strip():
            moment = datetime.fromisoformat(value.strip())
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _as_flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXT
    return bool(value)


def _later(current: Any, value: Any) -> Any:
    if value is None:
        return current
    if current is None:
        return value
    try:
        return max(current, value)
    except TypeError:  # e.g. naive and aware datetimes mixed: keep the first kind seen
        return current


def _add(items: dict[str, _Item], other: _Item) -> None:
    """Put ``other`` into ``items`` by contact id: rows with the same id (a join with a phones
    table) make one contact."""
    into = items.setdefault(other.contact.id, other)
    if into is other:
        return
    target, source = into.contact, other.contact
    for phone in source.phones:
        if phone not in target.phones:
            target.phones.append(phone)
    for phone, kind in source.phone_types.items():
        target.phone_types.setdefault(phone, kind)
    for name in ("name", "company", "contact_uri", "company_uri", "email", "job_title", "image_url"):
        if getattr(target, name) is None:
            setattr(target, name, getattr(source, name))
    for label, value in source.custom_data.items():
        target.custom_data.setdefault(label, value)
    target.last_activity = _later(target.last_activity, source.last_activity)
    into.updated = _later(into.updated, other.updated)
    into.deleted = into.deleted or other.deleted


# the mirror cursor --------------------------------------------------------------------------------
def _dump_cursor(since: Any) -> str:
    """The largest ``updated_at`` seen, tagged with its type so it is bound back unchanged."""
    tagged: list[str] | None
    if since is None:
        tagged = None
    elif isinstance(since, datetime):
        tagged = ["datetime", since.isoformat()]
    elif isinstance(since, date):
        tagged = ["date", since.isoformat()]
    elif isinstance(since, bool):
        tagged = ["str", str(since)]
    elif isinstance(since, int):
        tagged = ["int", str(since)]
    elif isinstance(since, float):
        tagged = ["float", repr(since)]
    elif isinstance(since, Decimal):
        tagged = ["decimal", str(since)]
    else:
        tagged = ["str", str(since)]
    return json.dumps({"since": tagged})


def _load_cursor(cursor: str | None) -> Any:
    """The ``updated_at`` value an incremental sync starts from; None: nothing to resume from.
    (Cursors written before the mirror kept the schedule also hold a ``full_at``: ignored.)"""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        if data["since"] is None:
            return None
        kind, raw = data["since"]
        parse = {
            "datetime": datetime.fromisoformat,
            "date": date.fromisoformat,
            "int": int,
            "float": float,
            "decimal": Decimal,
            "str": str,
        }[kind]
        return parse(raw)
    except (ValueError, KeyError, TypeError, ArithmeticError):
        log.warning("unreadable mirror cursor %r: running a full sync", cursor[:80])
        return None


def _minus_overlap(since: Any, seconds: float) -> Any:
    """Step a time cursor back, so rows committed late with an earlier time are read again."""
    if not seconds:
        return since
    step = timedelta(seconds=seconds)
    if isinstance(since, datetime):
        return since - step
    if isinstance(since, str) and _ISO_PREFIX.match(since):
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            return since
        return (moment - step).isoformat(sep=since[10])
    return since


# errors -----------------------------------------------------------------------------------------
_CREDENTIAL_TEXT = ("password authentication failed", "authentication failed", "no pg_hba.conf entry",
                    "access denied for user", "login failed")
_UNAVAILABLE_TEXT = ("timeout", "timed out", "could not connect", "connection refused", "server closed",
                     "connection to server", "database is locked", "lost connection", "gone away",
                     "canceling statement", "terminating connection", "can't connect")
_UNAVAILABLE_SQLSTATE = ("08", "53", "57", "58", "XX", "40")
_UNAVAILABLE_ERRNO = {1205, 1213, 2002, 2003, 2005, 2006, 2013, 3024}
_CREDENTIAL_ERRNO = {1044, 1045, 1698}


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return first[:300]


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def _errno(exc: BaseException) -> int | None:
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _credentials_rejected(exc: BaseException) -> bool:
    if _sqlstate(exc).startswith("28") or _errno(exc) in _CREDENTIAL_ERRNO:
        return True
    return any(part in _reason(exc).lower() for part in _CREDENTIAL_TEXT)


def _server_trouble(exc: BaseException) -> bool:
    """The error says the server is down, slow or busy, not that the SQL is wrong."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.InterfaceError):
        return True
    if _sqlstate(exc)[:2] in _UNAVAILABLE_SQLSTATE or _errno(exc) in _UNAVAILABLE_ERRNO:
        return True
    return any(part in _reason(exc).lower() for part in _UNAVAILABLE_TEXT)


def _unique_violation(exc: BaseException) -> bool:
    reason = _reason(exc).lower()
    return (
        _sqlstate(exc) == "23505"
        or _errno(exc) == 1062
        or "unique constraint" in reason
        or "duplicate key" in reason
        or "duplicate entry" in reason
    )


def _foreign_key_violation(exc: BaseException) -> bool:
    return (
        _sqlstate(exc) == "23503"
        or _errno(exc) in {1451, 1452}
        or "foreign key" in _reason(exc).lower()
    )


# the backend ------------------------------------------------------------------------------------
class SqlBackend(Backend):
    type_name: ClassVar[str] = "sql"
    options_schema = SqlOptions
    modes = frozenset({"live", "mirror"})
    workflows = frozenset({"CallFlow"})  # when call_log_query is configured: see workflows_for
    creates_contacts = True  # when insert_contact_query is configured: see can_create_contacts
    logs_messages = True  # with message_log_insert_query and message_log_update_query: can_log_messages
    users = True  # with users_query: can_list_users
    default_crm_name = "Database"
    search_by_name = True  # with name_query
    secret_keys = Backend.secret_keys | {"connect_args"}

    @classmethod
    def workflows_for(cls, options: dict[str, Any]) -> frozenset[str]:
        return cls.workflows if options.get("call_log_query") else frozenset()

    @classmethod
    def can_log_messages(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("message_log_insert_query")) and bool(options.get("message_log_update_query"))

    @classmethod
    def can_list_users(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("users_query"))

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        options = self.options
        self.mode = options.get("mode") or "live"
        if self.mode not in self.modes:
            raise BackendConfigError(
                f"{spec.where('mode')}: {self.mode!r} is not a mode of the sql backend (live or mirror)",
                key="mode",
            )
        if self.mode == "live" and not options.get("query"):
            raise BackendConfigError(f"{spec.where('query')}: mode 'live' needs a lookup query", key="query")
        if self.mode == "mirror" and not options.get("list_query"):
            raise BackendConfigError(
                f"{spec.where('list_query')}: mode 'mirror' needs list_query, the full listing",
                key="list_query",
            )
        self.fields: dict[str, Any] = options["fields"]
        self.url = self._build_url()
        self._queries: dict[str, TextClause] = {}
        self._params: dict[str, set[str]] = {}
        for key in ("query", "list_query", "name_query", "since_query", "deleted_query", "call_log_query",
                    "call_find_query", "call_log_update_query", "insert_contact_query", "message_log_insert_query",
                    "message_log_find_query", "message_log_update_query", "users_query"):
            if options.get(key):
                self._queries[key] = text(options[key])
                self._params[key] = query_params(options[key])
        for key in ("call_log_query", "call_find_query", "call_log_update_query"):
            if key in self._queries:
                self._queries[key] = self._typed_query(key, CALL_TIME_PARAMS, "duration")
        for key in ("message_log_insert_query", "message_log_find_query", "message_log_update_query"):
            if key in self._queries:
                self._queries[key] = self._typed_query(key, MESSAGE_TIME_PARAMS, "message_count")
        self._kept_calls_noted = False
        self._templates = {
            key: (options[key], _template_names(options[key]))
            for key in ("contact_uri_template", "company_uri_template")
            if options.get(key)
        }
        self.engine = self._make_engine(self.timeout_s, options["pool_size"], options["pool_size"])
        self._sync_engine: Engine | None = None

    # set-up ---------------------------------------------------------------------------------------
    def _build_url(self) -> URL:
        url = make_url(self.options["url"])
        if self.options.get("password"):
            url = url.set(password=self.options["password"])
        if url.get_backend_name() == "sqlite" and not self._sqlite_memory(url):
            path = url.database or ""
            if not path.startswith("file:") and not os.path.exists(path):
                raise BackendConfigError(
                    f"{self.spec.where('url')}: the SQLite file {path!r} does not exist", key="url"
                )
        return url

    @staticmethod
    def _sqlite_memory(url: URL) -> bool:
        return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")

    def _connect_args(self, timeout_s: float) -> dict[str, Any]:
        """Driver options that keep connecting and each statement within ``timeout_s``."""
        url = self.url
        backend, driver = url.get_backend_name(), url.get_driver_name()
        args: dict[str, Any] = {}
        # whole seconds (libpq's minimum is 2); a sync's long timeout is no reason to wait long for a
        # server that does not answer at all
        connect_s = max(2, min(math.ceil(timeout_s), 10))
        if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
            args["connect_timeout"] = connect_s
            args["options"] = f"-c statement_timeout={int(timeout_s * 1000)}"
            # libpq has no read timeout: keepalives and TCP_USER_TIMEOUT at least notice a dead
            # host or network instead of waiting on the socket for ever.
            args.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
                        tcp_user_timeout=max(1000, int(timeout_s * 1000) + 1000))
        elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
            seconds = max(1, math.ceil(timeout_s))
            args.update(connect_timeout=connect_s, read_timeout=seconds, write_timeout=seconds)
        elif backend == "sqlite":
            args["timeout"] = timeout_s
        for name in list(args):
            if name in url.query:
                del args[name]
        args.update(self.options["connect_args"])
        return args

    def _make_engine(self, timeout_s: float, pool_size: int, max_overflow: int) -> Engine:
        kwargs: dict[str, Any] = {
            "pool_pre_ping": True,
            "hide_parameters": True,  # error messages must not carry phone numbers
            "connect_args": self._connect_args(timeout_s),
        }
        if not self._sqlite_memory(self.url):
            kwargs.update(
                pool_size=pool_size, max_overflow=max_overflow, pool_timeout=timeout_s, pool_recycle=1800
            )
        try:
            engine = create_engine(self.url, **kwargs)
            if engine.dialect.name == "postgresql":
                _guard_new_connections(engine, timeout_s)
            return engine
        except ImportError as exc:
            raise BackendConfigError(
                f"{self.spec.where('url')}: the database driver is not installed ({exc}); "
                f"install the Python package for {self.url.drivername!r} (e.g. psycopg, pymysql)",
                key="url",
            ) from None
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, TypeError) as exc:
            raise BackendConfigError(f"{self.spec.where('url')}: {exc}", key="url") from None

    @property
    def sync_engine(self) -> Engine:
        """One connection for syncs, with the longer ``sync_timeout``."""
        if self._sqlite_memory(self.url):
            return self.engine
        if self._sync_engine is None:
            self._sync_engine = self._make_engine(self.options["sync_timeout"], 1, 1)
        return self._sync_engine

    def _typed_query(self, key: str, times: frozenset[str], count: str) -> TextClause:
        # Times bound as DateTime so every dialect stores them in its own format (SQLite: text).
        used = self._params[key]
        with_zone = self.url.get_backend_name() == "postgresql"
        typed = [bindparam(name, type_=DateTime(timezone=with_zone)) for name in sorted(used & times)]
        if count in used:
            typed.append(bindparam(count, type_=Integer()))
        return text(self.options[key]).bindparams(*typed)

    # errors -----------------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException, key: str) -> BackendUnavailable:
        where = f"{self.spec.where()}, {key}"
        if isinstance(exc, sa_exc.DBAPIError) and _credentials_rejected(exc):
            return CredentialsRejected(f"{where}: the database refused the credentials: {_reason(exc)}")
        return BackendUnavailable(f"{where}: {_reason(exc)}")

    # lookup -----------------------------------------------------------------------------------------
    def lookup_params(self, number: PhoneNumber) -> dict[str, Any] | None:
        """The values bound to ``query``, only the parameters it uses; None: nothing to ask."""
        used = self._params["query"]
        values: dict[str, Any] = dict.fromkeys(LOOKUP_PARAMS)
        if number.key.startswith("ext:"):
            if "short" not in used:
                return None  # internal numbers are looked up only by queries written for them
            values["short"] = number.digits
        else:
            values.update(
                e164=number.e164,
                digits=number.digits,
                national=number.national,
                nsn=number.nsn,
                digits00=("00" + number.digits) if number.e164 else None,
            )
        values["limit"] = self.options["max_candidates"]
        params = {name: values[name] for name in used}
        if not any(value is not None for name, value in params.items() if name != "limit"):
            return None
        return params

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        params = self.lookup_params(number)
        if params is None:
            return []
        candidates, rows = self._read("query", params, self.options["max_candidates"])
        found = self.filter_candidates(number, candidates)
        found.sort(key=lambda contact: not contact.exact)  # stable: keeps the query's order
        log.debug("%s: %d rows, %d matches for %s", self.spec.where(), len(rows), len(found), number.masked())
        return found[:limit]

    def search(self, term: str, limit: int) -> list[Contact]:
        """Contacts by name with ``name_query`` (``:term``, ``:pattern`` = '%term%', ``:prefix`` =
        'term%', ``:limit``), in the query's order; [] without one. Bounded by the lookup timeout."""
        if "name_query" not in self._queries or not term.strip():
            return []
        term = term.strip()
        values = {"term": term, "pattern": f"%{term}%", "prefix": f"{term}%", "limit": limit}
        params = {name: values[name] for name in self._params["name_query"]}
        return self._read("name_query", params, max(limit, 1) * 4)[0][:limit]

    def _read(self, query_key: str, params: dict[str, Any], most: int) -> tuple[list[Contact], list]:
        """The contacts (deleted rows left out) of at most ``most`` rows of a lookup query, within
        the lookup timeout, and the rows."""
        try:
            with self.engine.connect() as conn, _read_deadline(conn, self.timeout_s):
                result = conn.execute(self._queries[query_key], params)
                columns = self._columns(result.keys(), query_key, optional=("updated_at", "deleted"))
                rows = result.fetchmany(most)
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, query_key) from None
        return [item.contact for item in self._merge_rows(rows, columns) if not item.deleted], rows

    def _columns(self, keys: Iterable[str], query_key: str, optional: Iterable[str] = ()) -> _Columns:
        columns = _Columns(keys, self.fields, optional)
        columns.require({key: names for key, (_, names) in self._templates.items()})
        if columns.missing:
            key, message = columns.describe_missing(query_key)
            raise BackendUnavailable(f"{self.spec.where(key)}: {message}")
        return columns

    def _item(self, row: Any, columns: _Columns) -> _Item | None:
        index = columns.index

        def value(name: str) -> Any:
            i = index[name]
            return row[i] if i is not None else None

        contact_id = _text(value("id"))
        if contact_id is None:
            return None
        name = _text(value("name"))
        if name is None:
            parts = [_text(value("first_name")), _text(value("last_name"))]
            name = " ".join(p for p in parts if p) or None
        row_label = _text(value("phone_type"))
        types: dict[str, str] = {}
        for i in columns.phones:
            label = columns.phone_labels.get(i) or row_label
            if label:
                for phone in _phone_values(row[i]):
                    types.setdefault(phone, phone_type(label))
        image = _text(value("image_url")) or ""
        contact = Contact(
            id=contact_id,
            name=name,
            company=_text(value("company")),
            contact_uri=_text(value("contact_uri")),
            company_uri=_text(value("company_uri")),
            email=_text(value("email")),
            last_activity=_as_datetime(value("last_activity")),
            phones=list(dict.fromkeys(p for i in columns.phones for p in _phone_values(row[i]))),
            custom_data={label: shown for label, i in columns.custom if (shown := _text(row[i])) is not None},
            phone_types=types,
            job_title=_text(value("job_title")),
            image_url=image if image.lower().startswith(("https://", "http://")) else None,
        )
        if self._templates:
            by_name = {n.lower(): row[i] for i, n in enumerate(columns.names)}
            for key, (template, names) in self._templates.items():
                values = {n: quote(_text(by_name[n.lower()]) or "", safe="") for n in names}
                uri = template.format_map(values)
                if key == "contact_uri_template" and contact.contact_uri is None:
                    contact.contact_uri = uri
                elif key == "company_uri_template" and contact.company_uri is None:
                    contact.company_uri = uri
        deleted = _as_flag(value("deleted")) if index["deleted"] is not None else False
        return _Item(contact=contact, deleted=deleted, updated=value("updated_at"))

    def _merge_rows(self, rows: Iterable[Any], columns: _Columns) -> list[_Item]:
        items: dict[str, _Item] = {}
        for row in rows:
            item = self._item(row, columns)
            if item is not None:
                _add(items, item)
        return list(items.values())

    # mirror -----------------------------------------------------------------------------------------
    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        """A full listing, or with ``since_query`` and a cursor, the rows changed since it.

        The cursor is the largest ``fields.updated_at`` value seen (the database's own clock, so
        clocks of the two machines never need to agree); incremental syncs re-read from it minus
        ``since_overlap``. Without ``since_query`` every sync is a full listing; when the mirror
        asks for one (no cursor) is its schedule.
        """
        since = _load_cursor(cursor)
        if "since_query" in self._queries and since is not None:
            yield from self._sync_changes(since)
        else:
            yield from self._sync_full()

    def _sync_full(self) -> Iterator[SyncBatch]:
        newest: Any = None
        try:
            with self.sync_engine.connect() as conn:
                for items in self._stream(conn, "list_query", {}):
                    contacts = []
                    for item in items:
                        newest = _later(newest, item.updated)
                        if not item.deleted and item.contact.phones:
                            contacts.append(item.contact)
                    yield SyncBatch(contacts=contacts)
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, "list_query") from None
        cursor = _dump_cursor(newest) if "since_query" in self._queries else None
        yield SyncBatch(cursor=cursor, complete=True)

    def _sync_changes(self, since: Any) -> Iterator[SyncBatch]:
        bound = _minus_overlap(since, self.options["since_overlap"])
        newest = since
        key = "since_query"
        try:
            with self.sync_engine.connect() as conn:
                if "deleted_query" in self._queries:
                    # deletions first: a contact deleted and then re-created must stay
                    key = "deleted_query"
                    result = conn.execution_options(stream_results=True).execute(
                        self._queries[key], {"since": bound}
                    )
                    while rows := result.fetchmany(self.options["batch_size"]):
                        ids = [i for i in (_text(row[0]) for row in rows) if i is not None]
                        yield SyncBatch(deleted_ids=ids)
                key = "since_query"
                for items in self._stream(conn, key, {"since": bound}):
                    batch = SyncBatch()
                    for item in items:
                        newest = _later(newest, item.updated)
                        if item.deleted or not item.contact.phones:
                            batch.deleted_ids.append(item.contact.id)
                        else:
                            batch.contacts.append(item.contact)
                    yield batch
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, key) from None
        yield SyncBatch(cursor=_dump_cursor(newest))

    def _stream(self, conn: Connection, key: str, params: dict[str, Any]) -> Iterator[list[_Item]]:
        """Rows in batches of ``batch_size`` contacts, read with a server-side cursor where the
        driver has one. Rows of one contact must be adjacent (order by the id) to be merged across
        batches; the last contact of a batch is held back until the next row shows it is complete."""
        size = self.options["batch_size"]
        result = conn.execution_options(stream_results=True, max_row_buffer=size).execute(
            self._queries[key], params
        )
        columns = self._columns(result.keys(), key)
        pending: dict[str, _Item] = {}
        last_id: str | None = None
        while rows := result.fetchmany(size):
            for row in rows:
                item = self._item(row, columns)
                if item is None:
                    continue
                _add(pending, item)
                last_id = item.contact.id
            if len(pending) >= size and last_id is not None:
                held = pending.pop(last_id)
                yield list(pending.values())
                pending = {last_id: held}
        if pending:
            yield list(pending.values())

    # call logging -----------------------------------------------------------------------------------
    def call_params(self, call: CallRecord, key: str = "call_log_query") -> dict[str, Any]:
        """The values bound to ``call_log_query`` (or ``key``), only the parameters it uses; ``:user_id``
        is the record's owner (:meth:`owner_for`)."""
        return self._bind(key, self._call_values(call))

    def _call_values(self, call: CallRecord) -> dict[str, Any]:
        values = call.values()
        values["user_id"] = self.owner_for(call.user_id)
        return values

    def _bind(self, key: str, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` for the parameters ``key`` uses; times as UTC without a zone where the columns
        have none (SQLite text, MySQL DATETIME)."""
        params = {name: values.get(name) for name in self._params[key]}
        if self.url.get_backend_name() != "postgresql":
            for name, value in params.items():
                if isinstance(value, datetime):
                    params[name] = value.astimezone(UTC).replace(tzinfo=None)
        return params

    def log_call(self, call: CallRecord) -> WorkflowResult:
        if not self.can_log_calls:
            raise NotImplementedError(f"{self.spec.where()}: no call_log_query is configured")
        queries = ("call_log_query", "call_find_query", "call_log_update_query")
        call_id = self._write(queries, self._call_values(call), call.contact_id, call.key)
        return WorkflowResult(id=call_id, url=self._record_url("call_url_template", call_id, call.contact_id))

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """The row ``record_id`` rewritten with ``call_log_update_query``; without one it is kept as
        the first post wrote it (said once at INFO)."""
        if not self.can_log_calls:
            raise NotImplementedError(f"{self.spec.where()}: no call_log_query is configured")
        if "call_log_update_query" in self._queries:
            self._update("call_log_update_query", record_id, self._call_values(call))
        elif not self._kept_calls_noted:
            self._kept_calls_noted = True
            log.info("%s: a later post of a call (its end, a note) keeps the call's first row unchanged: no "
                     "call_log_update_query is configured", self.spec.where())
        return WorkflowResult(id=record_id, url=self._record_url("call_url_template", record_id, call.contact_id))

    # message logging --------------------------------------------------------------------------------
    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        if not self.can_log_messages(self.options):
            return super().log_message(message_log)
        queries = ("message_log_insert_query", "message_log_find_query", "message_log_update_query")
        record_id = self._write(queries, self._message_values(message_log), message_log.contact_id, message_log.key)
        return WorkflowResult(id=record_id, url=self._record_url("message_url_template", record_id,
                                                                   message_log.contact_id))

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        if not self.can_log_messages(self.options):
            return super().update_message(record_id, message_log)
        self._update("message_log_update_query", record_id, self._message_values(message_log))
        return WorkflowResult(id=record_id, url=self._record_url("message_url_template", record_id,
                                                                   message_log.contact_id))

    def _message_values(self, message_log: MessageLog) -> dict[str, Any]:
        values = message_log.values()
        values["user_id"] = self.owner_for(message_log.user_id)
        return values

    # writing records --------------------------------------------------------------------------------
    def _write(self, queries: tuple[str, str, str], values: dict[str, Any], contact_id: str, key: str) -> str:
        """Insert a record and return its id: the first column the INSERT returns, else the id the
        find query answers (by the record's key), else ``key``. When the INSERT hits the unique key
        or wrote nothing, an earlier attempt whose answer was lost made the record: its id is the
        answer. The update query then brings the row up to date in the same transaction, since a
        retry may carry more than the first attempt wrote (the hang-up, the messages since)."""
        insert, find, update = queries
        finding = find in self._queries
        step = insert
        try:
            with self.engine.begin() as conn, _read_deadline(conn, max(5.0, self.timeout_s)):
                result = conn.execute(self._queries[insert], self._bind(insert, values))
                record_id = self._first_value(result)
                if record_id is None and finding:
                    step = find
                    record_id = self._first_value(conn.execute(self._queries[find], self._bind(find, values)))
                record_id = record_id or key
                if update in self._queries:
                    step = update
                    conn.execute(self._queries[update], self._bind(update, {**values, "record_id": record_id}))
                return record_id
        except sa_exc.IntegrityError as exc:
            if _foreign_key_violation(exc):
                raise ContactNotFound(f"no contact with id {contact_id!r}: {_reason(exc)}") from None
            if not (step == insert and finding and _unique_violation(exc)):
                # NOT NULL, CHECK, a unique key the record cannot satisfy: the same statement fails again
                raise DeliveryRefused(f"{self.spec.where()}, {step}: {_reason(exc)}") from None
        except sa_exc.DataError as exc:
            raise DeliveryRefused(f"{self.spec.where()}, {step}: {_reason(exc)}") from None
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, step) from None
        # the unique key says an earlier attempt wrote the record: find it, bring it up to date
        step = find
        try:
            with self.engine.begin() as conn, _read_deadline(conn, max(5.0, self.timeout_s)):
                record_id = self._first_value(conn.execute(self._queries[find], self._bind(find, values))) or key
                if update in self._queries:
                    step = update
                    conn.execute(self._queries[update], self._bind(update, {**values, "record_id": record_id}))
                return record_id
        except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
            raise DeliveryRefused(f"{self.spec.where()}, {step}: {_reason(exc)}") from None
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, step) from None

    def _update(self, key: str, record_id: str, values: dict[str, Any]) -> None:
        """Run the update query ``key`` for the row ``record_id``; a row it does not find is a
        refusal for good (deleted meanwhile, or the query's WHERE does not match the ids)."""
        try:
            with self.engine.begin() as conn, _read_deadline(conn, max(5.0, self.timeout_s)):
                result = conn.execute(self._queries[key], self._bind(key, {**values, "record_id": record_id}))
                found = result.first() is not None if result.returns_rows else result.rowcount != 0
        except sa_exc.IntegrityError as exc:
            if _foreign_key_violation(exc):
                raise ContactNotFound(f"{self.spec.where()}, {key}: {_reason(exc)}") from None
            raise DeliveryRefused(f"{self.spec.where()}, {key}: {_reason(exc)}") from None
        except sa_exc.DataError as exc:
            raise DeliveryRefused(f"{self.spec.where()}, {key}: {_reason(exc)}") from None
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, key) from None
        if not found:
            raise RecordGone(f"{self.spec.where()}, {key}: no row was updated for record id {record_id!r} "
                                  "(deleted meanwhile, or the query's WHERE does not match the ids)")

    @staticmethod
    def _first_value(result: Any) -> str | None:
        row = result.first() if result.returns_rows else None
        return _text(row[0]) if row is not None and len(row) else None

    def _record_url(self, option: str, record_id: str, contact_id: str) -> str | None:
        template = self.options.get(option) or ""
        if not template:
            return None
        return template.format(id=quote(record_id, safe=""), contact_id=quote(contact_id, safe=""))

    # users --------------------------------------------------------------------------------------------
    def list_users(self) -> list[CrmUser]:
        """The rows of ``users_query``: columns ``id``, ``name`` and ``email`` (by name, any case)."""
        if "users_query" not in self._queries:
            return super().list_users()
        try:
            with self.engine.connect() as conn, _read_deadline(conn, max(5.0, self.timeout_s)):
                result = conn.execute(self._queries["users_query"])
                keys = list(result.keys())
                rows = result.fetchmany(MAX_USERS)
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, "users_query") from None
        columns = _user_columns(keys)
        if columns is None:
            raise BackendUnavailable(f"{self.spec.where('users_query')}: {_missing_user_id(keys)}")
        users = []
        for row in rows:
            user_id = _text(row[columns[0]])
            if user_id is not None:
                users.append(CrmUser(id=user_id, name=_text(row[columns[1]]) if columns[1] is not None else None,
                                     email=_text(row[columns[2]]) if columns[2] is not None else None))
        return users

    @classmethod
    def can_create_contacts(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("insert_contact_query")) and bool(options.get("query"))

    def create_contact(self, new: NewContact) -> WorkflowResult:
        if "insert_contact_query" not in self._queries:
            return super().create_contact(new)
        values = new.values()
        params = {name: values[name] for name in self._params["insert_contact_query"]}
        try:
            with self.engine.begin() as conn, _read_deadline(conn, max(5.0, self.timeout_s)):
                result = conn.execute(self._queries["insert_contact_query"], params)
                row = result.first() if result.returns_rows else None
                contact_id = _text(row[0]) if row is not None and len(row) else None
        except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
            raise DeliveryRefused(f"{self.spec.where()}, insert_contact_query: {_reason(exc)}") from None
        except sa_exc.SQLAlchemyError as exc:
            raise self._unavailable(exc, "insert_contact_query") from None
        # read it back with the lookup query: its id (without RETURNING) and its link as lookups give it
        found = [c for c in self.lookup(parse_number(new.number, self.spec.default_region), 50) if c.exact]
        match = next((c for c in found if contact_id is None or c.id == contact_id), None)
        if match is None:
            if contact_id is None:
                raise DeliveryRefused(f"{self.spec.where()}, insert_contact_query: the new contact is not found by "
                                      "`query`; add RETURNING <id column> or check the inserted phone column")
            return WorkflowResult(id=contact_id, url=None)
        return WorkflowResult(id=match.id, url=match.contact_uri)

    # start-up check ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Connect, then run every configured query with dummy values (``:since`` bound to NULL)
        in a transaction that is rolled back, and verify the mapped columns are in each result."""
        try:
            with self.engine.connect():
                pass
        except sa_exc.SQLAlchemyError as exc:
            if (
                isinstance(exc, sa_exc.DBAPIError)
                and not _credentials_rejected(exc)
                and "does not exist" in _reason(exc).lower()
            ):
                raise BackendConfigError(f"{self.spec.where('url')}: {_reason(exc)}", key="url") from None
            raise self._unavailable(exc, "connecting") from None
        if "query" in self._queries:
            number = parse_number(_CHECK_NUMBER)
            values = self._check_lookup_values(number)
            params = {name: values[name] for name in self._params["query"]}
            self._check_query(self.engine, "query", params, optional=("updated_at", "deleted"))
        for key in ("list_query", "since_query"):
            if key in self._queries:
                self._check_query(self.sync_engine, key, {"since": None} if key == "since_query" else {})
        if "deleted_query" in self._queries:
            self._check_query(self.sync_engine, "deleted_query", {"since": None}, columns=False)
        undone = self.url.get_backend_name() in ("postgresql", "sqlite")  # an INSERT fully undone by a rollback
        if self.can_log_calls and undone:
            now = datetime.now(UTC)
            call = CallRecord(contact_id="0", direction="incoming", originator_number=_CHECK_NUMBER,
                              destination_number=_CHECK_NUMBER, started=now, ended=now,
                              key="check-" + uuid.uuid4().hex)
            values = {**call.values(), "record_id": "0"}
            for key in ("call_log_query", "call_find_query", "call_log_update_query"):
                if key in self._queries:
                    self._check_query(self.engine, key, self._bind(key, values), columns=False)
        if self.can_log_messages(self.options) and undone:
            message = Message(id="check", time=datetime.now(UTC), direction="incoming", from_number=_CHECK_NUMBER,
                              text="check")
            digest = MessageLog(contact_id="0", kind="SMS", conversation_id="check", day="2000-01-01", zone="UTC",
                                messages=(message,), key="check-" + uuid.uuid4().hex)
            values = {**digest.values(), "record_id": "0"}
            for key in ("message_log_insert_query", "message_log_find_query", "message_log_update_query"):
                if key in self._queries:
                    self._check_query(self.engine, key, self._bind(key, values), columns=False)
        if "users_query" in self._queries:
            self._check_query(self.engine, "users_query", {}, columns=False)

    def _check_lookup_values(self, number: PhoneNumber) -> dict[str, Any]:
        return {
            "e164": number.e164,
            "digits": number.digits,
            "national": number.national,
            "nsn": number.nsn,
            "digits00": "00" + number.digits,
            "short": "201",
            "limit": self.options["max_candidates"],
        }

    def _check_query(
        self,
        engine: Engine,
        key: str,
        params: dict[str, Any],
        optional: Iterable[str] = (),
        columns: bool = True,
    ) -> None:
        try:
            with engine.connect() as conn:
                transaction = conn.begin()
                try:
                    # a server-side cursor for listings (PostgreSQL: DECLARE), not for the INSERT
                    streamed = conn.execution_options(stream_results=key in STREAMED)
                    result = streamed.execute(self._queries[key], params)
                    keys = list(result.keys()) if result.returns_rows else []
                    if key == "users_query" and _user_columns(keys) is None:
                        raise BackendConfigError(f"{self.spec.where(key)}: {_missing_user_id(keys)}", key=key)
                    result.close()
                finally:
                    transaction.rollback()
        except sa_exc.SQLAlchemyError as exc:
            if key in WRITES and isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError)):
                return  # the statement is valid; the dummy values broke a constraint
            if _server_trouble(exc):
                raise self._unavailable(exc, key) from None
            message = f"{self.spec.where(key)}: the query fails: {_reason(exc)}"
            raise BackendConfigError(message, key=key) from None
        if columns:
            found = _Columns(keys, self.fields, optional)
            found.require({k: names for k, (_, names) in self._templates.items()})
            if found.missing:
                bad_key, message = found.describe_missing(key)
                raise BackendConfigError(f"{self.spec.where(bad_key)}: {message}", key=bad_key)

    # misc -------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["url"] = self.url.render_as_string(hide_password=True)
        return info

    def close(self) -> None:
        self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


@contextmanager
def _read_deadline(conn: Any, seconds: float) -> Iterator[None]:
    """libpq has no read timeout and statement_timeout needs a server that still answers: past
    ``seconds`` shut the connection's socket down, so a silent server fails the call (the broken
    connection is then dropped from the pool) instead of holding a thread for ever."""
    dbapi = getattr(conn.connection, "dbapi_connection", None)
    if getattr(dbapi, "fileno", None) is None or conn.dialect.name != "postgresql":
        yield
        return
    timer = _socket_cutter(dbapi, seconds)
    try:
        yield
    finally:
        timer.cancel()


def _guard_new_connections(engine: Engine, seconds: float) -> None:
    """The same guard while a new connection runs SQLAlchemy's first queries (server version,
    settings), which happen inside ``engine.connect()`` before any query of ours."""

    def arm(dbapi_connection: Any, record: Any) -> None:
        record.info["lookup_connect_guard"] = _socket_cutter(dbapi_connection, seconds)

    def disarm(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        guard = record.info.pop("lookup_connect_guard", None)
        if guard is not None:
            guard.cancel()

    event.listen(engine, "connect", arm, insert=True)
    event.listen(engine, "checkout", disarm)


def _socket_cutter(dbapi_connection: Any, seconds: float) -> threading.Timer:
    """Cut the socket after ``seconds`` plus a margin, so the server's own statement_timeout,
    which gives the clearer error, fires first whenever the server still answers."""

    def cut() -> None:
        try:
            with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError, AttributeError):
            pass  # already closed: nothing left to cut

    timer = threading.Timer(seconds + max(0.5, seconds / 2), cut)
    timer.daemon = True
    timer.start()
    return timer
