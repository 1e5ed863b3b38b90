"""The embedded directory: contacts imported from CSV or vCard files into a local SQLite index,
or, with ``DATABASE_URL`` (a PaaS), into PostgreSQL shared by every process (:mod:`.pg_store`).

It is the default backend, so the service runs with nothing else installed, and it keeps the call
records that ``CallFlow`` creates for its contacts.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from marshmallow import fields

from lookup_core.errors import BackendConfigError, BackendUnavailable, ContactNotFound
from lookup_core.phone import PhoneNumber
from lookup_core.types import CallRecord, Contact, MessageLog, NewContact, WorkflowResult

from .base import Backend, BackendOptions, BackendSpec
from .contact_store import ContactStore, DirectoryStore


class DirectoryOptions(BackendOptions):
    path = fields.String(load_default="instance/directory.sqlite3")
    call_url_template = fields.String(load_default="", allow_none=True)
    # CreateContact: the link answered for a new contact ("{id}" is its id); empty: no link
    contact_url_template = fields.String(load_default="", allow_none=True)
    # PostgreSQL instead of the SQLite file at `path`; the service sets it from DATABASE_URL.
    database_url = fields.String(load_default=None, allow_none=True)
    pg_schema = fields.String(load_default=None, allow_none=True)  # default: directory_<tenant>_<backend>


class DirectoryBackend(Backend):
    type_name: ClassVar[str] = "directory"
    options_schema = DirectoryOptions
    modes = frozenset({"live"})
    workflows = frozenset({"CallFlow"})
    creates_contacts = True
    logs_messages = True
    inline = True
    default_crm_name = "Directory"
    secret_keys = Backend.secret_keys | {"database_url"}

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        url = self.options.get("database_url")
        self.store: DirectoryStore
        if url:
            from .pg_store import PgContactStore, schema_name

            schema = self.options.get("pg_schema") or schema_name(spec.tenant, spec.name)
            try:
                self.store = PgContactStore(url, schema, spec.default_region, phone_index=spec.phone_index,
                                            instance_dir=spec.instance_dir, lookup_timeout_s=self.timeout_s)
            except ValueError as exc:
                raise BackendConfigError(f"{spec.where('pg_schema')}: {exc}", key="pg_schema") from None
            except BackendUnavailable as exc:  # no directory at all: refuse to start, in one line
                raise BackendConfigError(f"{spec.where('database_url')}: PostgreSQL not usable: {exc}",
                                         key="database_url") from None
        else:
            self.store = ContactStore(self.options["path"], spec.default_region, phone_index=spec.phone_index)

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        return self.store.lookup(number, limit)

    def log_call(self, call: CallRecord) -> WorkflowResult:
        if not self.store.has_contact(call.contact_id):
            raise ContactNotFound(f"no contact with id {call.contact_id!r} in the directory")
        call_id = "call-" + hashlib.sha256(call.key.encode()).hexdigest()[:16]
        call_id = self.store.record_call(call, call_id)
        return WorkflowResult(id=call_id, url=self._url("call_url_template", call_id, call.contact_id))

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        self.store.record_call(call, record_id)  # the same key: the record is updated in place
        return WorkflowResult(id=record_id, url=self._url("call_url_template", record_id, call.contact_id))

    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        if not self.store.has_contact(message_log.contact_id):
            raise ContactNotFound(f"no contact with id {message_log.contact_id!r} in the directory")
        record_id = "msg-" + hashlib.sha256(message_log.key.encode()).hexdigest()[:16]
        return self.update_message(record_id, message_log)

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        record_id = self.store.record_message(message_log, record_id)
        return WorkflowResult(id=record_id, url=self._url("contact_url_template", message_log.contact_id))

    def _url(self, option: str, record_id: str, contact_id: str | None = None) -> str:
        template = self.options.get(option) or ""
        return template.replace("{id}", record_id).replace("{contact_id}", contact_id or "") if template else ""

    def create_contact(self, new: NewContact) -> WorkflowResult:
        # the id comes from the request's key: a repeated attempt writes the same row again
        contact_id = "new-" + hashlib.sha256(new.key.encode()).hexdigest()[:16]
        url = self._url("contact_url_template", contact_id)
        contact = Contact(id=contact_id, name=new.name, company=new.company, email=new.email,
                          contact_uri=url or None, phones=[new.number])
        self.store.upsert([(contact, self.store.normalize_phones(contact.phones))])
        return WorkflowResult(id=contact_id, url=url)

    def data_version(self) -> object:
        return self.store.generation()

    def close(self) -> None:
        self.store.close()
