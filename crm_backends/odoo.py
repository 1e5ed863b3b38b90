"""Odoo (16.0 to 19.0, Community, Enterprise, Odoo.sh and Odoo Online) over its JSON-RPC API.

Contacts are ``res.partner`` records found by their ``phone`` and ``mobile`` fields (``mobile`` was
dropped in saas-18.2/19.0; the backend asks ``fields_get`` once which fields exist). Where the
``phone_validation`` module is installed (it comes with CRM, SMS, VoIP...), the lookup is one
``search_read`` on its ``phone_mobile_search`` field, which ignores separators; elsewhere a loose
``=ilike`` pattern over the number's digits finds every spelling. Either way every candidate is
re-checked with the project's normalization, so a loose match never shows a wrong contact.

CallFlow logs the call on the partner's chatter, as an internal note (``message_post``) or as a
completed "Call" activity (``mail.activity`` + ``action_feedback``). The note carries a reference
derived from the call's key, so a retry after a timeout finds the message it already posted. Either
way the record is a ``mail.message``: a later post of the call (its end, a note) rewrites its body
with ``write``. MessageLog records (an SMS digest of a day, a voicemail, a fax) are internal notes
too, rewritten the same way as the day's messages arrive. The CRM users are ``res.users``.

Every request is ``POST {url}/jsonrpc`` with ``{"jsonrpc": "2.0", "method": "call", "params":
{"service": ..., "method": ..., "args": [...]}}``: ``common.version``, ``common.authenticate``
(the uid is cached) and ``object.execute_kw(db, uid, api_key, model, method, args, kwargs)``.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from marshmallow import ValidationError, fields, validate, validates

from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
    RecordGone,
)
from lookup_core.phone import PhoneNumber
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, NewContact, SyncBatch, WorkflowResult

from .base import BackendOptions, BackendSpec
from .http import HttpSource, positive_int, retry_after, text

log = logging.getLogger(__name__)

# A partner's phone is its business line, mobile its mobile (the contacts API's phoneType).
PHONE_TYPES = {"phone": "business", "mobile": "mobile"}
ODOO_LOGO = "https://odoocdn.com/openerp_website/static/src/img/assets/png/odoo_logo.png"
_DATETIME = "%Y-%m-%d %H:%M:%S"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")
# Odoo's path-based web client URLs (/odoo/<model>/<id>) arrived in saas-17.2 (odoo/odoo#142007).
_PATH_URLS_SINCE = (17, 2)
# message_post(body_is_html=True) exists since 17.0; 16.0 stores a str body as HTML anyway.
_BODY_IS_HTML_SINCE = (17, 0)
_AUTH_ERRORS = frozenset({"odoo.exceptions.AccessDenied", "odoo.http.SessionExpiredException"})
_RIGHTS_ERRORS = frozenset({"odoo.exceptions.AccessError"})
# Refusals of the record itself (a value rejected, the partner gone meanwhile): retrying cannot help.
_REFUSED_ERRORS = frozenset(
    {"odoo.exceptions.ValidationError", "odoo.exceptions.UserError", "odoo.exceptions.MissingError"}
)


class OdooOptions(BackendOptions):
    url = fields.String(required=True)
    database = fields.String(required=True)
    username = fields.String(required=True)
    api_key = fields.String(required=True)
    # "17.0", "saas~17.2", "18.0"...; detected with common.version when not given
    version = fields.String(load_default=None, allow_none=True)
    call_log_as = fields.String(load_default="note", validate=validate.OneOf(["note", "activity"]))
    activity_type_id = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    contact_url_template = fields.String(load_default=None, allow_none=True)
    dedupe_calls = fields.Boolean(load_default=True)
    page_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))
    # lookups use `timeout` (inside the engine's deadline); call logging and syncing may wait longer
    write_timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1))
    sync_timeout = fields.Float(load_default=60.0, validate=validate.Range(min=0.1))
    sync_overlap = fields.Float(load_default=300.0, validate=validate.Range(min=0))
    verify_tls = fields.Boolean(load_default=True)

    @validates("url")
    def _check_url(self, value: str, **_: Any) -> None:
        if not re.match(r"^https?://[^/\s]+", value or ""):
            raise ValidationError("must be the Odoo address, e.g. https://mycompany.odoo.com")

    @validates("version")
    def _check_version(self, value: str | None, **_: Any) -> None:
        if value is not None and _parse_version(value) is None:
            raise ValidationError('must look like "17.0" or "saas~17.2"')

    @validates("contact_url_template")
    def _check_template(self, value: str | None, **_: Any) -> None:
        if value is None:
            return
        try:
            value.format(url="https://x", id=1)
        except (KeyError, IndexError, ValueError):
            raise ValidationError("may only use the placeholders {url} and {id}") from None


@dataclass(frozen=True)
class _PartnerSchema:
    """What this database's ``res.partner`` offers, learned once from ``fields_get``."""

    phone_fields: tuple[str, ...]
    searchable: bool  # phone_mobile_search exists
    read_fields: tuple[str, ...]


class _OdooError(BackendUnavailable):
    """A JSON-RPC error answered by Odoo; ``name`` is the Python exception's dotted name."""

    def __init__(self, name: str, message: str, code: int | None = None):
        super().__init__(f"Odoo error {name}: {message}")
        self.name = name
        self.odoo_message = message
        self.code = code


class _AuthRefused(CredentialsRejected):
    """AccessDenied or an expired session on a call: re-authenticate once, then give up."""


class _NoRight(CredentialsRejected):
    """The Odoo user may not do this (AccessError): a permission to grant, not a bad key."""


class OdooBackend(HttpSource):
    type_name: ClassVar[str] = "odoo"
    options_schema = OdooOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True
    workflows = frozenset({"CallFlow"})
    creates_contacts = True
    logs_messages = True
    users = True
    default_crm_name = "Odoo"
    default_crm_logo = ODOO_LOGO
    secret_keys = frozenset({"api_key", "password"})
    # After Odoo refused the credentials, calls fail at once for this long instead of hitting the
    # server again: repeated failed logins would trip Odoo's login cooldown for the user.
    rejected_retry_s: ClassVar[float] = 60.0

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        self.base_url = self.options["url"].rstrip("/")
        self.endpoint = self.base_url + "/jsonrpc"
        self._ids = itertools.count(1)
        self._local = threading.local()  # per-thread timeout override (call logging)
        # reentrant: _rpc may record a rejection while _ensure_uid holds it
        self._auth_lock = threading.RLock()
        self._uid: int | None = None
        self._rejected_until = 0.0
        configured = self.options.get("version")
        self._version: tuple[int, int] | None = _parse_version(configured) if configured else None
        self._schema: _PartnerSchema | None = None
        self._activity_type: int | None = self.options.get("activity_type_id")
        self._partner_model_id: int | None = None
        self._user_partners: dict[int, int | None] = {}

    # ------------------------------------------------------------------ Backend interface
    def check(self) -> None:
        try:
            with self._timeout(self.options["write_timeout"]):
                self._server_version()
                self._ensure_uid()
                self._partner_schema()
        except _OdooError as exc:
            if "does not exist" in exc.odoo_message and "database" in exc.odoo_message:
                raise BackendConfigError(
                    f"{self.spec.where('database')}: Odoo has no database {self.options['database']!r}",
                    key="database",
                ) from None
            raise

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        candidates = self._partners(self._phone_domain(number, self._partner_schema()), max(limit * 4, 20))
        kept = self.filter_candidates(number, candidates)
        kept.sort(key=lambda contact: not contact.exact)  # stable: keeps the recency order
        return kept[:limit]

    def search(self, term: str, limit: int) -> list[Contact]:
        """Partners whose name holds the typed text (``name ilike``), most recently changed first."""
        term = " ".join(term.split())
        if not term:
            return []
        return self._partners([["name", "ilike", term]], max(limit, 1))[:limit]

    def _partners(self, domain: list, limit: int) -> list[Contact]:
        """The partners matching ``domain``, most recently changed first, as contacts."""
        schema = self._partner_schema()
        rows = self._execute("res.partner", "search_read", [domain],
                             {"fields": list(schema.read_fields), "limit": limit, "order": "write_date desc, id desc"})
        return [c for c in (self._contact(row, schema) for row in self._rows(rows)) if c is not None]

    def log_call(self, call: CallRecord) -> WorkflowResult:
        partner_id = positive_int(call.contact_id)
        if partner_id is None:
            raise ContactNotFound(self.fail(f"{call.contact_id!r} is not a partner id"))
        with self._timeout(self.options["write_timeout"]):
            return self._log_call(partner_id, call)

    def create_contact(self, new: NewContact) -> WorkflowResult:
        """``res.partner`` ``create`` through ``execute_kw`` (Odoo's external API, "Create records"):
        name, phone, and e-mail and company name when given; answers the new partner's id."""
        values: dict[str, Any] = {"name": new.name, "phone": new.number}
        if new.email:
            values["email"] = new.email
        if new.company:
            values["company_name"] = new.company
        with self._timeout(self.options["write_timeout"]):
            try:
                created = positive_int(_single(self._execute("res.partner", "create", [values])))
            except _OdooError as exc:
                if exc.name in _REFUSED_ERRORS or exc.name.endswith(".ValueError"):  # a field Odoo does not take
                    raise DeliveryRefused(self.fail(f"refused the new contact: {exc.name}: {exc.odoo_message}")) \
                        from None
                raise
        if created is None:
            raise DeliveryRefused(self.fail("create did not return the new partner's id"))
        return WorkflowResult(id=str(created), url=self._form_url(created))

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """Rewrite the body of the call's ``mail.message`` (the note, or the message of the completed
        activity) with ``write``: the same record now says how the call ended."""
        message_id = positive_int(record_id)
        if message_id is None:
            raise DeliveryRefused(self.fail(f"{record_id!r} is not a mail.message id"))
        marker = _call_marker(call.key) if call.key and self.options["dedupe_calls"] else None
        with self._timeout(self.options["write_timeout"]):
            self._write_message(message_id, _call_html(call, marker), "call record")
            return WorkflowResult(id=str(message_id), url=self._partner_url(call.contact_id))

    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        """An internal note on the partner holding the digest; a retry whose first answer was lost
        finds the note by the reference printed in it and brings it up to date instead."""
        partner_id = positive_int(message_log.contact_id)
        if partner_id is None:
            raise ContactNotFound(self.fail(f"{message_log.contact_id!r} is not a partner id"))
        marker = _message_marker(message_log.key) if message_log.key else None
        body = _digest_html(message_log, marker)
        with self._timeout(self.options["write_timeout"]):
            url = self._form_url(partner_id)
            found = self._marked_message(partner_id, marker) if marker else None
            if found is not None:
                message_id, stored = found
                if stored != body:
                    self._write_message(message_id, body, "message log")
                return WorkflowResult(id=str(message_id), url=url)
            self._check_partner(partner_id)
            user_id = positive_int(self.owner_for(message_log.user_id))
            try:
                message_id = self._post_note(partner_id, body, user_id)
            except _OdooError as exc:
                if exc.name in _REFUSED_ERRORS:
                    raise DeliveryRefused(self.fail(f"refused the message log: {exc.name}: {exc.odoo_message}")) \
                        from None
                raise
            return WorkflowResult(id=str(message_id), url=url)

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        """Replace the note's body with the digest as it is now (all of the day's messages)."""
        message_id = positive_int(record_id)
        if message_id is None:
            raise DeliveryRefused(self.fail(f"{record_id!r} is not a mail.message id"))
        marker = _message_marker(message_log.key) if message_log.key else None
        with self._timeout(self.options["write_timeout"]):
            self._write_message(message_id, _digest_html(message_log, marker), "message log")
            return WorkflowResult(id=str(message_id), url=self._partner_url(message_log.contact_id))

    def list_users(self) -> list[CrmUser]:
        """Odoo's internal users (``share = False``: no portal or public users), active ones only (the
        default ``active_test``), by name."""
        with self._timeout(self.options["write_timeout"]):
            rows = self._rows(
                self._execute(
                    "res.users",
                    "search_read",
                    [[["share", "=", False]]],
                    {"fields": ["name", "login", "email"], "order": "name, id"},
                )
            )
        users = []
        for row in rows:
            user_id = positive_int(row.get("id"))
            if user_id is None:
                continue
            login = text(row.get("login"))
            email = text(row.get("email")) or (login if login and "@" in login else None)
            users.append(CrmUser(id=str(user_id), name=text(row.get("name")) or login, email=email))
        return users

    def _log_call(self, partner_id: int, call: CallRecord) -> WorkflowResult:
        url = self._form_url(partner_id)
        marker = _call_marker(call.key) if call.key and self.options["dedupe_calls"] else None
        if marker:
            found = self._marked_message(partner_id, marker)
            if found is not None:
                message_id, body = found
                log.info("odoo %s: call already logged on partner %s", self.name, partner_id)
                # an attempt whose answer was lost may have posted an earlier version of the call
                if html.escape(call.summary()) not in body:
                    self._write_message(message_id, _call_html(call, marker), "call record")
                return WorkflowResult(id=str(message_id), url=url)
        self._check_partner(partner_id)
        user_id = positive_int(self.owner_for(call.user_id))
        try:
            if self.options["call_log_as"] == "activity":
                result = self._log_activity(partner_id, call, marker, user_id)
            else:
                result = self._log_note(partner_id, call, marker, user_id)
        except _OdooError as exc:
            if exc.name in _REFUSED_ERRORS:
                raise DeliveryRefused(self.fail(f"refused the call record: {exc.name}: {exc.odoo_message}")) from None
            raise
        return WorkflowResult(id=str(result), url=url)

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        schema = self._partner_schema()
        state = _load_cursor(cursor)
        full = not state.get("since")
        if full:
            # partners with a number; `complete` lets the mirror drop everything else it holds
            domain = _any_set(schema.phone_fields)
            context: dict[str, Any] = {}
        else:
            since = _shift(state["since"], -self.options["sync_overlap"])
            # archived partners must come back too: they are deletions
            domain = [["write_date", ">=", since]]
            context = {"active_test": False}
        newest = state.get("since")
        last_id = 0
        page_size = self.options["page_size"]
        read_fields = list(schema.read_fields) + ["active"]
        while True:
            # keyset paging on id: unlike offsets, it neither skips nor repeats records when
            # partners change while the listing runs (those are caught by the next run's overlap)
            kwargs: dict[str, Any] = {"fields": read_fields, "limit": page_size, "order": "id asc"}
            if context:
                kwargs["context"] = context
            page = [domain + [["id", ">", last_id]]]
            timeout = self.options["sync_timeout"]
            rows = self._rows(self._execute("res.partner", "search_read", page, kwargs, timeout=timeout))
            batch = SyncBatch(complete=full)
            for row in rows:
                contact = self._contact(row, schema)
                if contact is None:
                    continue
                written = row.get("write_date")
                if isinstance(written, str) and (newest is None or written > newest):
                    newest = written
                if row.get("active") is False or not contact.phones:
                    batch.deleted_ids.append(contact.id)
                else:
                    batch.contacts.append(contact)
            ids = [row["id"] for row in rows if isinstance(row.get("id"), int)]
            if ids:
                last_id = max(ids)
            batch.cursor = json.dumps({"since": newest})
            yield batch
            if len(rows) < page_size or not ids:
                return

    # ------------------------------------------------------------------ lookups
    def _phone_domain(self, number: PhoneNumber, schema: _PartnerSchema) -> list[Any]:
        if number.is_short:
            # an internal extension only ever equals a stored extension
            value = number.search_forms()[0]
            leaves = [[name, "=", value] for name in schema.phone_fields]
        elif schema.searchable:
            # separators ignored; the national significant number is inside every spelling
            # (+41 21..., 0041 21..., 021..., (021)...)
            return [["phone_mobile_search", "ilike", number.nsn or number.digits]]
        else:
            digits = number.nsn or number.digits
            pattern = "%" + "%".join(digits) + "%"
            leaves = [[name, "=ilike", pattern] for name in schema.phone_fields]
        return ["|"] * (len(leaves) - 1) + leaves

    def _contact(self, row: dict[str, Any], schema: _PartnerSchema) -> Contact | None:
        partner_id = positive_int(row.get("id"))
        if partner_id is None:
            return None
        typed = [
            (value.strip(), PHONE_TYPES[name])
            for name in schema.phone_fields
            if isinstance(value := row.get(name), str) and value.strip()
        ]
        phones = [value for value, _ in typed]
        own_name = text(row.get("name"))
        parent = _many2one(row.get("parent_id"))
        commercial = _many2one(row.get("commercial_partner_id"))
        is_company = row.get("is_company") is True
        company = text(row.get("commercial_company_name")) or (parent[1] if parent else None)
        if company is None and is_company:
            company = own_name
        company_id = None
        if commercial and commercial[0] != partner_id:
            company_id = commercial[0]
        elif parent:
            company_id = parent[0]
        elif is_company:
            company_id = partner_id
        return Contact(
            id=str(partner_id),
            name=own_name or company,
            company=company,
            contact_uri=self._form_url(partner_id),
            company_uri=self._form_url(company_id) if company_id else None,
            phones=phones,
            email=text(row.get("email")),
            last_activity=_odoo_datetime(row.get("write_date")),
            phone_types=dict(reversed(typed)),  # the same number in both fields: phone's type
            job_title=text(row.get("function")),  # "Job Position"
        )

    def _form_url(self, record_id: int) -> str:
        template = self.options.get("contact_url_template")
        if template:
            return template.format(url=self.base_url, id=record_id)
        if self._server_version() >= _PATH_URLS_SINCE:
            return f"{self.base_url}/odoo/res.partner/{record_id}"
        return f"{self.base_url}/web#id={record_id}&model=res.partner&view_type=form"

    def _partner_url(self, contact_id: str) -> str | None:
        partner_id = positive_int(contact_id)
        return self._form_url(partner_id) if partner_id else None

    # ------------------------------------------------------------------ chatter records
    def _marked_message(self, partner_id: int, marker: str) -> tuple[int, str] | None:
        """The id and body of the partner's message carrying ``marker``, if one was posted."""
        rows = self._rows(
            self._execute(
                "mail.message",
                "search_read",
                [[["model", "=", "res.partner"], ["res_id", "=", partner_id], ["body", "ilike", marker]]],
                {"fields": ["id", "body"], "limit": 1},
            )
        )
        message_id = positive_int(rows[0].get("id")) if rows else None
        if message_id is None:
            return None
        body = rows[0].get("body")
        return message_id, body if isinstance(body, str) else ""

    def _check_partner(self, partner_id: int) -> None:
        try:
            exists = self._rows(self._execute("res.partner", "read", [[partner_id]], {"fields": ["display_name"]}))
        except _OdooError as exc:
            if exc.name != "odoo.exceptions.MissingError":
                raise
            exists = []
        if not exists:
            raise ContactNotFound(self.fail(f"no partner with id {partner_id}"))

    def _write_message(self, message_id: int, body: str, what: str) -> None:
        """``mail.message`` ``write`` of the body: the ORM's write, allowed to the message's author and
        to users who may write the partner it is posted on. Writing the same body again is harmless."""
        try:
            done = self._execute("mail.message", "write", [[message_id], {"body": body}])
        except _OdooError as exc:
            if exc.name == "odoo.exceptions.MissingError":  # deleted in Odoo
                raise RecordGone(self.fail(f"the {what} {message_id} is not in Odoo any more")) from None
            if exc.name in _REFUSED_ERRORS or exc.name.endswith(".ValueError"):
                raise DeliveryRefused(
                    self.fail(f"refused to update the {what} {message_id}: {exc.name}: {exc.odoo_message}")
                ) from None
            raise
        if done is not True:
            raise BackendUnavailable(self.fail(f"mail.message.write of {message_id} answered {done!r}"))

    # ------------------------------------------------------------------ call logging
    def _log_note(self, partner_id: int, call: CallRecord, marker: str | None, user_id: int | None) -> int:
        return self._post_note(partner_id, _call_html(call, marker), user_id)

    def _post_note(self, partner_id: int, body: str, user_id: int | None) -> int:
        """``message_post`` of an internal note (HTML ``body``) signed by the user's partner."""
        kwargs: dict[str, Any] = {
            "body": body,
            "message_type": "comment",
            "subtype_xmlid": "mail.mt_note",
        }
        if self._server_version() >= _BODY_IS_HTML_SINCE:
            kwargs["body_is_html"] = True
        author = self._user_partner(user_id) if user_id else None
        if author:
            kwargs["author_id"] = author
        message_id = positive_int(_single(self._execute("res.partner", "message_post", [[partner_id]], kwargs)))
        if message_id is None:
            raise BackendUnavailable(self.fail("message_post did not return a message id"))
        return message_id

    def _log_activity(
        self, partner_id: int, call: CallRecord, marker: str | None, user_id: int | None
    ) -> int:
        if marker:
            # an activity created by an attempt whose action_feedback failed: finish that one
            pending = self._rows(
                self._execute(
                    "mail.activity",
                    "search_read",
                    [
                        [
                            ["res_model", "=", "res.partner"],
                            ["res_id", "=", partner_id],
                            ["note", "ilike", marker],
                        ]
                    ],
                    {"fields": ["id"], "limit": 1},
                )
            )
            if pending and positive_int(pending[0].get("id")):
                return self._activity_done(pending[0]["id"])
        when = call.started or call.ended or call.declined or datetime.now(UTC)
        values: dict[str, Any] = {
            "activity_type_id": self._call_activity_type(),
            "res_model_id": self._partner_model(),
            "res_id": partner_id,
            "summary": call.summary(),
            "note": _call_html(call, marker, headline=False),
            "date_deadline": when.astimezone(UTC).date().isoformat(),
        }
        if user_id and self._user_partner(user_id):
            values["user_id"] = user_id
        activity_id = positive_int(_single(self._execute("mail.activity", "create", [values])))
        if activity_id is None:
            raise BackendUnavailable(self.fail("did not return the id of the new activity"))
        return self._activity_done(activity_id)

    def _activity_done(self, activity_id: int) -> int:
        """Mark the activity done; Odoo answers with the id of the message it posted."""
        message_id = positive_int(self._execute("mail.activity", "action_feedback", [[activity_id]], {}))
        return message_id or activity_id

    def _call_activity_type(self) -> int:
        if self._activity_type:
            return self._activity_type
        type_id = None
        try:
            rows = self._rows(
                self._execute(
                    "ir.model.data",
                    "search_read",
                    [[["module", "=", "mail"], ["name", "=", "mail_activity_data_call"]]],
                    {"fields": ["res_id"], "limit": 1},
                )
            )
            type_id = positive_int(rows[0].get("res_id")) if rows else None
        except (_NoRight, _OdooError) as exc:
            log.info(
                "odoo %s: cannot read the Call activity's external id (%s); searching by category",
                self.name,
                exc,
            )
        if type_id is None:
            for domain in ([["category", "=", "phonecall"]], [["name", "ilike", "call"]]):
                rows = self._rows(
                    self._execute(
                        "mail.activity.type",
                        "search_read",
                        [domain],
                        {"fields": ["id", "name"], "limit": 1, "order": "sequence, id"},
                    )
                )
                if rows and positive_int(rows[0].get("id")):
                    type_id = rows[0]["id"]
                    break
        if type_id is None:
            raise BackendUnavailable(
                self.fail('no activity type for calls; set activity_type_id or use call_log_as = "note"')
            )
        self._activity_type = type_id
        return type_id

    def _partner_model(self) -> int:
        if self._partner_model_id is None:
            ids = self._execute("ir.model", "search", [[["model", "=", "res.partner"]]], {"limit": 1})
            model_id = positive_int(ids[0]) if isinstance(ids, list) and ids else None
            if model_id is None:
                raise BackendUnavailable(self.fail("did not return the ir.model id of res.partner"))
            self._partner_model_id = model_id
        return self._partner_model_id

    def _user_partner(self, user_id: int) -> int | None:
        """The partner of the Odoo user named by ``userCrmId``: the note's author."""
        if user_id not in self._user_partners:
            rows = self._rows(self._execute("res.users", "read", [[user_id]], {"fields": ["partner_id"]}))
            partner = _many2one(rows[0].get("partner_id")) if rows else None
            if partner is None:
                log.warning(
                    "odoo %s: no Odoo user with id %s (userCrmId or default_user_id); posted as the API user",
                    self.name,
                    user_id,
                )
            self._user_partners[user_id] = partner[0] if partner else None
        return self._user_partners[user_id]

    # ------------------------------------------------------------------ metadata, cached
    def _server_version(self) -> tuple[int, int]:
        if self._version is None:
            info = self._rpc("common", "version", [])
            parsed = _parse_version(str(info.get("server_version", ""))) if isinstance(info, dict) else None
            if parsed is None:
                raise BackendUnavailable(self.fail("the common.version answer has no server_version"))
            self._version = parsed
        return self._version

    def _partner_schema(self) -> _PartnerSchema:
        if self._schema is None:
            described = self._execute("res.partner", "fields_get", [], {"attributes": ["type"]})
            if not isinstance(described, dict) or "phone" not in described:
                raise BackendUnavailable(self.fail("the res.partner.fields_get answer lists no phone field"))
            phone_fields = tuple(name for name in ("phone", "mobile") if name in described)
            wanted = (
                "name",
                *phone_fields,
                "email",
                "function",
                "parent_id",
                "commercial_partner_id",
                "commercial_company_name",
                "is_company",
                "write_date",
            )
            self._schema = _PartnerSchema(
                phone_fields=phone_fields,
                searchable="phone_mobile_search" in described,
                read_fields=tuple(name for name in wanted if name in described),
            )
            log.info(
                "odoo %s: Odoo %s.%s, phone fields %s, %s",
                self.name,
                *self._server_version(),
                "/".join(phone_fields),
                "phone_mobile_search" if self._schema.searchable else "no phone_validation: pattern search",
            )
        return self._schema

    def _rows(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise BackendUnavailable(self.fail("answered with something other than a list of records"))
        return [row for row in value if isinstance(row, dict)]

    # ------------------------------------------------------------------ authentication
    def _ensure_uid(self) -> int:
        with self._auth_lock:
            if self._uid is not None:
                return self._uid
            wait = self._rejected_until - time.monotonic()
            if wait > 0:
                raise CredentialsRejected(
                    self.fail(f"rejected the credentials of {self.options['username']!r}; next try in {wait:.0f}s")
                )
            uid = self._rpc(
                "common",
                "authenticate",
                [self.options["database"], self.options["username"], self.options["api_key"], {}],
            )
            if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
                raise self._rejection("authenticate returned no user id (wrong username or api_key)")
            self.credentials.accepted()
            self._uid, self._rejected_until = uid, 0.0
            return uid

    def _rejection(self, reason: str) -> CredentialsRejected:
        """Remember that Odoo refused us; the alert logs it once (no stack trace), not on every request."""
        self._uid = None
        self._rejected_until = time.monotonic() + self.rejected_retry_s
        said = f"rejected the credentials of {self.options['username']!r}: {reason}"
        self.credentials.rejected(said + " (check username and api_key)")
        return CredentialsRejected(self.fail(said))

    def _execute(
        self,
        model: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        for attempt in (1, 2):
            uid = self._ensure_uid()
            params = [
                self.options["database"],
                uid,
                self.options["api_key"],
                model,
                method,
                args,
                kwargs or {},
            ]
            try:
                return self._rpc("object", "execute_kw", params, timeout)
            except _AuthRefused as exc:
                with self._auth_lock:
                    if attempt == 2:
                        raise self._rejection(f"{exc} on {model}.{method}") from None
                    if self._uid == uid:
                        self._uid = None  # re-authenticate once: the key may have been rotated
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ transport
    @contextmanager
    def _timeout(self, seconds: float) -> Iterator[None]:
        previous = getattr(self._local, "timeout", None)
        self._local.timeout = seconds
        try:
            yield
        finally:
            self._local.timeout = previous

    def _rpc(self, service: str, method: str, args: list[Any], timeout: float | None = None) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(self._ids),
        }
        what = f"{service}.{method}" if service == "common" else f"{args[3]}.{args[4]}"
        timeout = timeout or getattr(self._local, "timeout", None) or self.timeout_s
        response = self.send("POST", self.endpoint, what=what, json=body, timeout=timeout)
        status = response.status_code
        if status == 503 and response.headers.get("Retry-After"):
            raise RateLimited(self.fail(f"{what} answered HTTP 503 (busy)"), retry_after(response.headers))
        if status in (401, 403):
            with self._auth_lock:
                raise self._rejection(f"HTTP {status} on {what}")
        if status != 200:
            raise self.status_error(response, what) or BackendUnavailable(self.fail(f"{what} answered HTTP {status}"))
        try:
            payload = response.json()
        except ValueError:
            raise BackendUnavailable(self.fail(f"the answer to {what} is not JSON")) from None
        if not isinstance(payload, dict):
            raise BackendUnavailable(self.fail(f"the answer to {what} is not a JSON-RPC response"))
        if payload.get("error") is not None:
            error = _error(payload["error"], what)
            if not isinstance(error, _AuthRefused):  # _execute words that one: re-authenticate, or _rejection
                error.args = (self.fail(str(error)),)
            raise error
        if "result" not in payload:
            raise BackendUnavailable(self.fail(f"the answer to {what} has neither result nor error"))
        return payload["result"]


# ---------------------------------------------------------------------- helpers
def _error(error: Any, what: str) -> BackendUnavailable:
    if not isinstance(error, dict):
        return BackendUnavailable(f"Odoo answered {what} with a malformed error")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    name = str(data.get("name") or "")
    message = str(data.get("message") or error.get("message") or "unknown error")[:300]
    if name in _AUTH_ERRORS or error.get("code") == 100:
        return _AuthRefused(f"{name or 'session expired'}: {message}")
    if name in _RIGHTS_ERRORS:
        return _NoRight(f"the Odoo user may not use {what}: {message}")
    return _OdooError(
        name or "unknown", message, error.get("code") if isinstance(error.get("code"), int) else None
    )


def _parse_version(text: str) -> tuple[int, int] | None:
    match = _VERSION.search(text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _many2one(value: Any) -> tuple[int, str | None] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and positive_int(value[0]):
        return int(value[0]), text(value[1])
    return None


def _odoo_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value[:19], _DATETIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _shift(stamp: str, seconds: float) -> str:
    moment = datetime.strptime(stamp[:19], _DATETIME) + timedelta(seconds=seconds)
    return moment.strftime(_DATETIME)


def _load_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(state, dict) or _odoo_datetime(state.get("since")) is None:
        return {}
    return state


def _any_set(names: tuple[str, ...]) -> list[Any]:
    return ["|"] * (len(names) - 1) + [[name, "!=", False] for name in names]


def _call_marker(key: str) -> str:
    """A reference printed in the note; searching for it finds a call already logged."""
    return "peoplefone-call-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _message_marker(key: str) -> str:
    """The reference printed in a message log's note (see :func:`_call_marker`)."""
    return "peoplefone-msg-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _digest_html(message_log: MessageLog, marker: str | None) -> str:
    """The note's body: the title, then each line of the digest as an escaped paragraph; a
    voicemail's recording or a fax's document also as a link."""
    parts = [f"<p><b>{html.escape(message_log.title)}</b></p>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in message_log.body().splitlines() if line.strip()]
    link = message_log.link
    if link and re.match(r"^https?://", link, re.IGNORECASE):
        label = "Recording" if message_log.kind == "Voicemail" else "Document"
        parts.append(f'<p>{label}: <a href="{html.escape(link)}">{html.escape(link)}</a></p>')
    if marker:
        parts.append(f"<p>Message log reference: {marker}</p>")
    return "".join(parts)


def _fmt_time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else None


def _party(name: str | None, number: str | None) -> str | None:
    if name and number:
        return f"{name} ({number})"
    return name or number


def _call_html(call: CallRecord, marker: str | None, headline: bool = True) -> str:
    minutes, seconds = divmod(call.duration_seconds, 60)
    details = [
        ("Direction", call.direction),
        ("Status", call.status),
        ("Duration", f"{minutes}:{seconds:02d}"),
        ("From", _party(call.originator_name, call.originator_number)),
        ("To", _party(call.destination_name, call.destination_number)),
        ("Started", _fmt_time(call.started)),
        ("Answered", _fmt_time(call.answered)),
        ("Ended", _fmt_time(call.ended or call.declined)),
    ]
    parts = [f"<p>{html.escape(call.summary())}</p>"] if headline else []
    parts.append(
        "<ul>"
        + "".join(f"<li>{html.escape(label)}: {html.escape(value)}</li>" for label, value in details if value)
        + "</ul>"
    )
    if marker:
        parts.append(f"<p>Call reference: {marker}</p>")
    return "".join(parts)
