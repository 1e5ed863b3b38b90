"""Pipedrive CRM: persons found with the search API (live) or listed into a local mirror, calls
logged as call logs or as done activities of type "call".

API versions (https://pipedrive.readme.io/docs/pipedrive-api-v2-migration-guide): Pipedrive has
moved persons, organizations, activities and search to API v2 and no longer supports their v1
endpoints, so this backend uses v2 for them. Call logs and ``users/me`` exist only in v1.

Requests used (each documented at https://developers.pipedrive.com/docs/api/v1/<Page>):

* ``GET  /api/v2/persons/search``   Persons#searchPersons: live lookup on the phone field
* ``GET  /api/v2/persons``          Persons#getPersons: mirror listing (cursor paging, updated_since)
* ``GET  /api/v2/persons/{id}``     Persons#getPerson: the person (and organization) a call belongs to
* ``GET  /api/v2/organizations``    Organizations#getOrganizations: company names for the mirror
* ``POST /api/v1/callLogs``         CallLogs#addCallLog: CallFlow
* ``GET  /api/v1/callLogs/{id}``    CallLogs#getCallLog: the activity a call log comes with (update)
* ``POST /api/v2/activities``       Activities#addActivity: CallFlow where call logs are unavailable,
  and MessageLog (an SMS digest, a voicemail or a fax)
* ``PATCH /api/v2/activities/{id}`` Activities#updateActivity: a later post of a call, a digest's
  next message
* ``GET  /api/v2/activities``       Activities#getActivities: the person's latest activities, where a
  call already logged shows (call logs are activities too, says the CallLogs page)
* ``GET  /api/v1/activityTypes``    ActivityTypes#getActivityTypes: whether the company has an ``sms`` type
* ``GET  /api/v1/users``            Users#getUsers: the company's users (``users`` command, owners)
* ``GET  /api/v1/users/me``         Users#getCurrentUser: start-up check

Exactly once: the note of every logged call (message record) ends with the call's (digest's) key.
Before creating one the backend lists the person's most recently added activities and returns the one
whose note carries the key, so a retry after a lost answer does not create it twice.

Call logs cannot be changed (the CallLogs API has add, get, list and delete, no update): a later post
of a call updates the activity the call log comes with (subject, note, duration), see
docs/backends/pipedrive.md.

The API token travels in the ``x-api-token`` header (the only API-key scheme of the OpenAPI specs),
never in the URL, so it cannot end up in access logs.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
from marshmallow import ValidationError, fields, validate, validates_schema

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
from lookup_core.phone_types import phone_type
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, NewContact, SyncBatch, WorkflowResult

from .base import BackendOptions, BackendSpec
from .http import (
    DailyQuota,
    HttpSource,
    HttpStatusError,
    header_number,
    next_midnight,
    positive_int,
    read_time,
    retry_after,
    text,
)

log = logging.getLogger(__name__)

SEARCH_PATH = "/api/v2/persons/search"
PERSONS_PATH = "/api/v2/persons"
ORGANIZATIONS_PATH = "/api/v2/organizations"
ACTIVITIES_PATH = "/api/v2/activities"
PERSONS_CREATE_PATH = "/api/v2/persons"
CALL_LOGS_PATH = "/api/v1/callLogs"
ACTIVITY_TYPES_PATH = "/api/v1/activityTypes"
USERS_PATH = "/api/v1/users"
ME_PATH = "/api/v1/users/me"
# Message records are activities of this type when the company has it, else of type "call".
MESSAGE_ACTIVITY_TYPE = "sms"
ACTIVITY_TYPES_TTL_S = 3600.0

# Which spellings of the number the live lookup searches for (see docs/backends/pipedrive.md).
SEARCH_TERMS = ("nsn", "e164", "national", "digits")
CALL_LOG_MODES = ("auto", "call_log", "activity")
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.I)

# A request that hit the burst limit waits at most this long when it may wait (mirror sync only).
MAX_SYNC_WAIT_S = 10.0
SYNC_RETRIES_ON_429 = 3
# After a 401 the backend stops calling Pipedrive; it tries again once per this interval.
AUTH_RETRY_S = 60.0
# When the daily budget is still exhausted right after UTC midnight (Pipedrive resets it at midnight
# in the server's time zone), probe again at this interval instead of waiting a whole day.
DAILY_PROBE_S = 900.0
# More changed organizations than this in one incremental sync: relist everything instead.
MAX_ORG_RELISTS = 50
# Each sync lists again what changed in the last minutes before it started (see _next_since).
SYNC_OVERLAP_S = 300.0
IDS_PER_REQUEST = 100  # documented maximum of the `ids` filter
REMEMBERED_CALLS = 10000
# Looking for a call already logged: the person's latest activities, this many pages of this size.
DEDUPE_PAGES = 2
DEDUPE_PAGE_SIZE = 100


class PipedriveOptions(BackendOptions):
    api_token = fields.String(load_default=None, allow_none=True)
    oauth_token = fields.String(load_default=None, allow_none=True)
    company_domain = fields.String(required=True)
    base_url = fields.String(load_default=None, allow_none=True)
    call_log_as = fields.String(load_default="auto", validate=validate.OneOf(CALL_LOG_MODES))
    activity_type = fields.String(load_default="call", validate=validate.Length(min=1))
    default_user_id = fields.Integer(load_default=None, allow_none=True, strict=True)
    search_terms = fields.List(
        fields.String(validate=validate.OneOf(SEARCH_TERMS)),
        load_default=lambda: ["nsn", "e164"],
        validate=validate.Length(min=1),
    )
    search_limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    sync_page_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=500))
    dedupe_calls = fields.Boolean(load_default=True)

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        api_token = (data.get("api_token") or "").strip()
        oauth_token = (data.get("oauth_token") or "").strip()
        if not api_token and not oauth_token:
            raise ValidationError("set api_token (or oauth_token for an OAuth app)", field_name="api_token")
        if api_token and oauth_token:
            raise ValidationError("set api_token or oauth_token, not both", field_name="oauth_token")
        domain = data.get("company_domain") or ""
        if not _DOMAIN.match(domain):
            raise ValidationError(
                "only the subdomain of your Pipedrive address, e.g. 'acme' for https://acme.pipedrive.com",
                field_name="company_domain",
            )
        base_url = data.get("base_url")
        if base_url and not re.match(r"^https?://[^/\s]+", base_url):
            raise ValidationError("an http(s) URL such as https://acme.pipedrive.com", field_name="base_url")


ApiError = HttpStatusError  # Pipedrive answered a 4xx that is not about credentials or rate limits


class ApiForbidden(CredentialsRejected):
    """A JSON 402/403: the token may not use this endpoint (feature, plan or permission)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PipedriveBackend(HttpSource):
    type_name: ClassVar[str] = "pipedrive"
    options_schema = PipedriveOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True
    workflows = frozenset({"CallFlow"})
    creates_contacts = True
    logs_messages = True
    users = True
    default_crm_name = "Pipedrive"
    default_crm_logo = "https://www.pipedrive.com/favicon.ico"
    # The search API allows 10 requests per 2 seconds on every plan.
    default_rate_per_second = 5.0
    secret_keys = frozenset({"api_token", "oauth_token"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        opts = self.options
        self.company_domain = opts["company_domain"].lower()
        self.app_url = f"https://{self.company_domain}.pipedrive.com"
        self.base_url = (opts.get("base_url") or self.app_url).rstrip("/")
        self.session.headers["Accept"] = "application/json"
        api_token = (opts.get("api_token") or "").strip()
        if api_token:
            self.session.headers["x-api-token"] = api_token
        else:
            self.session.headers["Authorization"] = "Bearer " + (opts.get("oauth_token") or "").strip()
        self._pool: ThreadPoolExecutor | None = None
        self._state_lock = threading.Lock()
        self._daily = DailyQuota(self, "daily API token budget")
        self._writes = DailyQuota(self, "daily POST/PUT allowance (no calls are logged until midnight UTC)")
        self._daily_waited_until = 0.0  # the midnight the last full-day block waited for
        self._ok_since_daily_block = False
        self._auth_blocked_until = 0.0  # time.monotonic()
        self.call_log_as = opts["call_log_as"]
        self._calls: OrderedDict[str, WorkflowResult] = OrderedDict()
        self._call_locks: dict[str, threading.Lock] = {}
        self._calls_lock = threading.Lock()
        self._org_names: dict[int, str | None] = {}
        self._message_type: tuple[str, float] | None = None  # (type, time.monotonic() read)
        self._unnumbered_owners: set[str] = set()

    # Backend interface ----------------------------------------------------------------------
    @property
    def rate_per_second(self) -> float | None:
        """Lookups a second: the search allowance shared by the searches one lookup makes."""
        configured = self.options.get("rate_per_second")
        if configured:
            return configured
        return self.default_rate_per_second / max(1, len(self.options["search_terms"]))

    def check(self) -> None:
        data = self._request("GET", ME_PATH).get("data")
        if not isinstance(data, dict):
            raise BackendUnavailable(self.fail(f"unexpected answer from {ME_PATH}"))
        domain = data.get("company_domain")
        if isinstance(domain, str) and domain and domain.lower() != self.company_domain:
            raise BackendConfigError(
                f"{self.spec.where('company_domain')}: the token belongs to company domain {domain!r}",
                key="company_domain",
            )

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        terms = self._search_terms(number)
        if not terms:
            return []
        if len(terms) == 1:
            pages = [self._search(terms[0])]
        else:
            pages = self._search_parallel(terms)
        seen: dict[str, Contact] = {}
        for items in pages:
            for contact in items:
                seen.setdefault(contact.id, contact)
        found = self.filter_candidates(number, seen.values())
        found.sort(key=lambda c: not c.exact)  # stable: Pipedrive's relevance order otherwise
        return found[:limit]

    def log_call(self, call: CallRecord) -> WorkflowResult:
        person_id = positive_int(call.contact_id)
        if person_id is None:
            raise ContactNotFound(self.fail(f"{call.contact_id!r} is not a person id"))
        with self._call_lock(call.key):
            done = self._calls.get(call.key) if call.key else None
            if done is not None:
                return done
            person = self._get_person(person_id)
            org_id = positive_int(person.get("org_id"))
            if call.key and self.options["dedupe_calls"]:
                found = self._find_logged(person_id, _call_reference(call.key))
                if found is not None:
                    # made by an attempt whose answer was lost; this post may know more (its end)
                    log.info("%s: call already logged on person %s", self.spec.where(), person_id)
                    found = self.update_call(found.id, call)
                    self._remember(call.key, found)
                    return found
            if self.call_log_as == "activity":
                result = self._add_activity(call, person_id, org_id)
            else:
                try:
                    result = self._add_call_log(call, person_id, org_id)
                except ApiForbidden as exc:
                    if self.call_log_as == "call_log":
                        raise
                    log.warning(
                        "%s: call logs are not available to this token (HTTP %d: %s); "
                        "logging calls as activities of type %r from now on",
                        self.spec.where(),
                        exc.status,
                        exc,
                        self.options["activity_type"],
                    )
                    self.call_log_as = "activity"
                    result = self._add_activity(call, person_id, org_id)
            if call.key:
                self._remember(call.key, result)
            return result

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        state = _load_cursor(cursor)
        if not state.get("persons_since"):
            yield from self._full_sync()
        else:
            yield from self._incremental_sync(state)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    # live lookup ----------------------------------------------------------------------------
    def _search_terms(self, number: PhoneNumber) -> list[str]:
        if number.is_short:
            forms = [number.digits]
        else:
            by_name = {
                "nsn": number.nsn,
                "e164": number.e164,
                "national": number.national,
                "digits": number.digits,
            }
            forms = [by_name.get(name) for name in self.options["search_terms"]] + self.formatted(number)
        # The search needs at least 2 characters.
        return list(dict.fromkeys(f for f in forms if f and len(f) >= 2))

    def _search_parallel(self, terms: list[str]) -> list[list[Contact]]:
        if self._pool is None:
            with self._state_lock:
                if self._pool is None:
                    prefix = f"pipedrive-{self.name}"
                    self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=prefix)
        futures = [self._pool.submit(self._search, term) for term in terms]
        pages: list[list[Contact]] = []
        errors: list[BaseException] = []
        for future in futures:
            try:
                pages.append(future.result())
            except BackendUnavailable as exc:
                errors.append(exc)
        if not pages:
            raise errors[0]
        if errors:
            log.warning("%s: a search failed, answering with the others: %s", self.spec.where(), errors[0])
        return pages

    def search(self, term: str, limit: int) -> list[Contact]:
        """Persons by name (persons search on ``name``; Pipedrive wants at least 2 characters), in
        Pipedrive's relevance order; persons without a phone are left out."""
        term = " ".join(term.split())
        if len(term) < 2:
            return []
        return self._search(term, "name", max(1, min(limit, 100)))[:limit]

    def _search(self, term: str, fields: str = "phone", limit: int | None = None) -> list[Contact]:
        params = {"term": term, "fields": fields, "limit": str(limit or self.options["search_limit"])}
        body = self._request("GET", SEARCH_PATH, params=params)
        data = body.get("data")
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendUnavailable(self.fail("unexpected search answer (no data.items)"))
        contacts = []
        for entry in items:
            item = entry.get("item") if isinstance(entry, dict) else None
            contact = self._contact_from_search(item) if isinstance(item, dict) else None
            if contact is not None:
                contacts.append(contact)
        return contacts

    def _contact_from_search(self, item: dict[str, Any]) -> Contact | None:
        person_id = positive_int(item.get("id"))
        phones = [str(p) for p in item.get("phones") or [] if isinstance(p, str | int) and str(p).strip()]
        if person_id is None or not phones:
            return None
        org = item.get("organization") if isinstance(item.get("organization"), dict) else {}
        org_id = positive_int(org.get("id"))
        emails = [e for e in item.get("emails") or [] if isinstance(e, str) and e]
        return self._contact(person_id, item.get("name"), org_id, org.get("name"), phones, emails[:1])

    def _contact(
        self,
        person_id: int,
        name: Any,
        org_id: int | None,
        org_name: Any,
        phones: list[str],
        emails: list[str],
        phone_types: dict[str, str] | None = None,
        job_title: Any = None,
    ) -> Contact:
        return Contact(
            id=str(person_id),
            name=name.strip() if isinstance(name, str) and name.strip() else None,
            company=org_name.strip() if isinstance(org_name, str) and org_name.strip() else None,
            contact_uri=f"{self.app_url}/person/{person_id}",
            company_uri=f"{self.app_url}/organization/{org_id}" if org_id else None,
            phones=phones,
            email=emails[0] if emails else None,
            phone_types=phone_types or {},
            job_title=text(job_title),
        )

    # mirror ---------------------------------------------------------------------------------
    def _full_sync(self) -> Iterator[SyncBatch]:
        started = time.time()
        names: dict[int, str | None] = {}
        orgs_since = None
        for page in self._pages(ORGANIZATIONS_PATH, {"sort_by": "id", "sort_direction": "asc"}):
            for org in page:
                org_id = positive_int(org.get("id")) if isinstance(org, dict) else None
                if org_id is not None:
                    names[org_id] = text(org.get("name"))
                    orgs_since = _later(orgs_since, org.get("update_time"))
        self._org_names = names
        state = {
            "orgs_since": _next_since(None, orgs_since, started),
            "persons_since": None,
        }
        persons_since = None
        for page in self._pages(PERSONS_PATH, {"sort_by": "id", "sort_direction": "asc"}):
            contacts, deleted, persons_since = self._convert_persons(page, persons_since)
            state["persons_since"] = _next_since(None, persons_since, started)
            yield SyncBatch(contacts=contacts, deleted_ids=deleted, cursor=json.dumps(state), complete=True)

    def _incremental_sync(self, state: dict[str, Any]) -> Iterator[SyncBatch]:
        started = time.time()
        changed_orgs: list[int] = []
        previous_orgs = state.get("orgs_since") or state["persons_since"]
        orgs_since = None
        params = {"updated_since": previous_orgs, "sort_by": "update_time", "sort_direction": "asc"}
        for page in self._pages(ORGANIZATIONS_PATH, params):
            for org in page:
                org_id = positive_int(org.get("id")) if isinstance(org, dict) else None
                if org_id is None:
                    continue
                name = None if org.get("is_deleted") is True else text(org.get("name"))
                if org_id not in self._org_names or self._org_names[org_id] != name:
                    changed_orgs.append(org_id)
                self._org_names[org_id] = name
                orgs_since = _later(orgs_since, org.get("update_time"))
        if len(changed_orgs) > MAX_ORG_RELISTS:
            yield from self._full_sync()
            return
        state = dict(state, orgs_since=_next_since(previous_orgs, orgs_since, started))
        previous_persons = state["persons_since"]
        persons_since = None
        params = {"updated_since": previous_persons, "sort_by": "update_time", "sort_direction": "asc"}
        for page in self._pages(PERSONS_PATH, params):
            contacts, deleted, persons_since = self._convert_persons(page, persons_since)
            state["persons_since"] = _next_since(previous_persons, persons_since, started)
            yield SyncBatch(contacts=contacts, deleted_ids=deleted, cursor=json.dumps(state))
        # A renamed organization does not touch its persons' update_time: refresh their company.
        for org_id in dict.fromkeys(changed_orgs):
            for page in self._pages(PERSONS_PATH, {"org_id": str(org_id)}):
                contacts, deleted, _ = self._convert_persons(page, None)
                yield SyncBatch(contacts=contacts, deleted_ids=deleted, cursor=json.dumps(state))

    def _convert_persons(
        self, page: list[Any], since: str | None
    ) -> tuple[list[Contact], list[str], str | None]:
        persons = [p for p in page if isinstance(p, dict) and positive_int(p.get("id")) is not None]
        self._resolve_org_names({positive_int(p.get("org_id")) for p in persons} - {None})
        contacts: list[Contact] = []
        deleted: list[str] = []
        for person in persons:
            person_id = positive_int(person["id"])
            since = _later(since, person.get("update_time"))
            if person.get("is_deleted") is True:
                deleted.append(str(person_id))
                continue
            phones = _values(person.get("phones"))
            if not phones:  # cannot be found by number: dropped from the mirror
                deleted.append(str(person_id))
                continue
            emails = sorted(_values_with_primary(person.get("emails")), key=lambda e: not e[1])
            org_id = positive_int(person.get("org_id"))
            org_name = self._org_names.get(org_id) if org_id else None
            # a number's label is work, home, mobile or other; job_title comes with Pipedrive's contact sync on
            types = {value: phone_type(label) for value, label in _labels(person.get("phones")).items()}
            contacts.append(
                self._contact(person_id, person.get("name"), org_id, org_name, phones, [e[0] for e in emails],
                              types, person.get("job_title"))
            )
        return contacts, deleted, since

    def _resolve_org_names(self, org_ids: set[Any]) -> None:
        missing = sorted(i for i in org_ids if i not in self._org_names)
        for start in range(0, len(missing), IDS_PER_REQUEST):
            chunk = missing[start : start + IDS_PER_REQUEST]
            for page in self._pages(ORGANIZATIONS_PATH, {"ids": ",".join(map(str, chunk))}):
                for org in page:
                    org_id = positive_int(org.get("id")) if isinstance(org, dict) else None
                    if org_id is not None:
                        self._org_names[org_id] = text(org.get("name"))
            for org_id in chunk:
                self._org_names.setdefault(org_id, None)  # not visible or deleted: no company

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[list[Any]]:
        """The pages of a v2 list (cursor pagination: additional_data.next_cursor, null at the end)."""
        cursor = None
        while True:
            query = dict(params, limit=str(self.options["sync_page_size"]))
            if cursor:
                query["cursor"] = cursor
            body = self._request("GET", path, params=query, wait=True)
            data = body.get("data")
            if data is None:
                data = []
            if not isinstance(data, list):
                raise BackendUnavailable(f"{self.spec.where()}: unexpected answer from {path} (no data list)")
            yield data
            extra = body.get("additional_data")
            cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
            if not cursor:
                return

    # CallFlow -------------------------------------------------------------------------------
    def _get_person(self, person_id: int) -> dict[str, Any]:
        try:
            body = self._request("GET", f"{PERSONS_PATH}/{person_id}")
        except ApiError as exc:
            if exc.status in (404, 410):
                raise ContactNotFound(self.fail(f"no person with id {person_id}")) from None
            raise
        person = body.get("data")
        if not isinstance(person, dict) or person.get("is_deleted") is True:
            raise ContactNotFound(self.fail(f"no person with id {person_id}"))
        return person

    def _add_call_log(self, call: CallRecord, person_id: int, org_id: int | None) -> WorkflowResult:
        start, end = _call_window(call)
        body: dict[str, Any] = {
            "outcome": _outcome(call),
            "to_phone_number": self._display_number(call.destination_number) or "unknown",
            "start_time": _v1_time(start),
            "end_time": _v1_time(end),
            "duration": str(call.duration_seconds),
            "subject": call.summary(),
            "person_id": person_id,
            "note": self._note(call, start, end),
        }
        if call.originator_number:
            body["from_phone_number"] = self._display_number(call.originator_number)
        if org_id:
            body["org_id"] = org_id
        user_id = self._owner(call.user_id)
        if user_id is not None:
            body["user_id"] = user_id
        call_id = self._create(CALL_LOGS_PATH, body, "call log")
        return WorkflowResult(id=call_id, url=f"{self.app_url}/person/{person_id}")

    def _add_activity(self, call: CallRecord, person_id: int, org_id: int | None) -> WorkflowResult:
        start, end = _call_window(call)
        body: dict[str, Any] = {
            "subject": call.summary(),
            "type": self.options["activity_type"],
            "done": True,
            "due_date": start.strftime("%Y-%m-%d"),
            "due_time": start.strftime("%H:%M"),
            "duration": _hours_minutes(call.duration_seconds),
            # v2 treats person_id as read-only: the person is the primary participant.
            "participants": [{"person_id": person_id, "primary": True}],
            "note": self._note(call, start, end),
        }
        if org_id:
            body["org_id"] = org_id
        user_id = self._owner(call.user_id)
        if user_id is not None:
            body["owner_id"] = user_id
        activity_id = self._create(ACTIVITIES_PATH, body, "activity")
        return WorkflowResult(id=activity_id, url=f"{self.app_url}/person/{person_id}")

    def _find_logged(self, person_id: int, reference: str) -> WorkflowResult | None:
        """The person's activity whose note carries ``reference`` (a call's or a message record's key):
        a call log or activity an earlier attempt created (its answer lost). Newest first, a bounded
        number of pages."""
        cursor = None
        for _ in range(DEDUPE_PAGES):
            params = {
                "person_id": str(person_id),
                "sort_by": "add_time",
                "sort_direction": "desc",
                "limit": str(DEDUPE_PAGE_SIZE),
            }
            if cursor:
                params["cursor"] = cursor
            body = self._request("GET", ACTIVITIES_PATH, params=params)
            data = body.get("data") or []
            if not isinstance(data, list):
                raise BackendUnavailable(f"{self.spec.where()}: unexpected answer from {ACTIVITIES_PATH}")
            for activity in data:
                if not isinstance(activity, dict) or activity.get("is_deleted") is True:
                    continue
                note = activity.get("note")
                if isinstance(note, str) and reference in note and activity.get("id"):
                    return WorkflowResult(id=str(activity["id"]), url=f"{self.app_url}/person/{person_id}")
            extra = body.get("additional_data")
            cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
            if not cursor:
                return None
        return None

    # call updates -----------------------------------------------------------------------------
    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """Bring the record of an earlier post of ``call`` to its final state (answer, end, duration,
        status, note). An activity is updated in place. A call log cannot be changed (Pipedrive has no
        update for call logs): the activity it comes with gets the final subject, note and duration."""
        person_id = positive_int(call.contact_id)
        if person_id is None:
            raise ContactNotFound(self.fail(f"{call.contact_id!r} is not a person id"))
        with self._forgotten_when_gone(call.key):
            # activity ids are numbers; call log ids are hex strings
            activity_id = positive_int(record_id)
            if activity_id is None:
                activity_id = self._call_log_activity(record_id, call, person_id)
            start, end = _call_window(call)
            self._update_activity(activity_id, {
                "subject": call.summary(),
                "done": True,
                "due_date": start.strftime("%Y-%m-%d"),
                "due_time": start.strftime("%H:%M"),
                "duration": _hours_minutes(call.duration_seconds),
                "note": self._note(call, start, end),
            })
        return WorkflowResult(id=record_id, url=f"{self.app_url}/person/{person_id}")

    def _call_log_activity(self, call_log_id: str, call: CallRecord, person_id: int) -> int:
        """The id of the activity a call log comes with (``activity_id`` of the call log); when the
        call log does not say, the person's activity carrying the call's key."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", call_log_id):
            raise DeliveryRefused(self.fail(f"{call_log_id[:40]!r} is not a call log id"))
        try:
            data = self._request("GET", f"{CALL_LOGS_PATH}/{call_log_id}").get("data")
        except ApiError as exc:
            if exc.status in (404, 410):
                raise RecordGone(self.fail(f"call log {call_log_id} is gone (deleted in Pipedrive?)")) from None
            raise
        activity_id = positive_int(data.get("activity_id")) if isinstance(data, dict) else None
        if activity_id is None and call.key:
            found = self._find_logged(person_id, _call_reference(call.key))
            activity_id = positive_int(found.id) if found is not None else None
        if activity_id is None:
            raise DeliveryRefused(self.fail(f"call log {call_log_id} has no activity to update"))
        return activity_id

    def _update_activity(self, activity_id: int, body: dict[str, Any]) -> None:
        """PATCH the activity; a refusal or an activity gone (deleted in Pipedrive) is for good."""
        try:
            data = self._request("PATCH", f"{ACTIVITIES_PATH}/{activity_id}", body=body).get("data")
        except ApiError as exc:
            if exc.status in (404, 410):
                raise RecordGone(self.fail(f"activity {activity_id} is gone (deleted in Pipedrive?)")) from None
            if exc.status in (400, 422):
                raise DeliveryRefused(str(exc)) from None
            raise
        if not isinstance(data, dict) or positive_int(data.get("id")) != activity_id:
            raise BackendUnavailable(self.fail(f"unexpected answer to the update of activity {activity_id}"))

    # MessageLog -------------------------------------------------------------------------------
    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        """A done activity on the person: type ``sms`` where the company has that type (else
        ``call``), the digest's title as subject, its lines as the HTML note, due on the digest's day."""
        person_id = positive_int(message_log.contact_id)
        if person_id is None:
            raise ContactNotFound(self.fail(f"{message_log.contact_id!r} is not a person id"))
        key = message_log.key
        with self._call_lock(key):
            done = self._calls.get(key) if key else None
            if done is not None:
                return done
            person = self._get_person(person_id)
            if key and self.options["dedupe_calls"]:
                found = self._find_logged(person_id, _message_reference(key))
                if found is not None:
                    # made by an attempt whose answer was lost; the digest may hold more messages now
                    log.info("%s: message record already made on person %s", self.spec.where(), person_id)
                    found = self.update_message(found.id, message_log)
                    self._remember(key, found)
                    return found
            body: dict[str, Any] = {
                "subject": message_log.title,
                "type": self._message_activity_type(),
                "done": True,
                "due_date": message_log.day,
                "participants": [{"person_id": person_id, "primary": True}],
                "note": _message_note(message_log),
            }
            org_id = positive_int(person.get("org_id"))
            if org_id:
                body["org_id"] = org_id
            owner = self._owner(message_log.user_id)
            if owner is not None:
                body["owner_id"] = owner
            result = WorkflowResult(id=self._create(ACTIVITIES_PATH, body, "activity"),
                                    url=f"{self.app_url}/person/{person_id}")
            if key:
                self._remember(key, result)
            return result

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        """The digest's activity gets the digest's current title and note (all the day's messages)."""
        activity_id = positive_int(record_id)
        if activity_id is None:
            raise DeliveryRefused(self.fail(f"{record_id[:40]!r} is not an activity id"))
        with self._forgotten_when_gone(message_log.key):
            self._update_activity(activity_id, {"subject": message_log.title, "note": _message_note(message_log)})
        person_id = positive_int(message_log.contact_id)
        return WorkflowResult(id=record_id, url=f"{self.app_url}/person/{person_id}" if person_id else None)

    def _message_activity_type(self) -> str:
        """``sms`` when the company has an active activity type with that key, else ``call``; read
        once an hour."""
        now = time.monotonic()
        cached = self._message_type
        if cached is not None and now - cached[1] < ACTIVITY_TYPES_TTL_S:
            return cached[0]
        try:
            data = self._request("GET", ACTIVITY_TYPES_PATH).get("data")
        except ApiForbidden as exc:
            log.warning("%s: cannot read the activity types (%s); messages are logged as calls", self.spec.where(), exc)
            data = []
        if not isinstance(data, list):
            raise BackendUnavailable(self.fail(f"unexpected answer from {ACTIVITY_TYPES_PATH}"))
        has_sms = any(
            isinstance(item, dict) and item.get("key_string") == MESSAGE_ACTIVITY_TYPE
            and item.get("active_flag") is not False
            for item in data
        )
        kind = MESSAGE_ACTIVITY_TYPE if has_sms else "call"
        self._message_type = (kind, now)
        return kind

    # users --------------------------------------------------------------------------------------
    def list_users(self) -> list[CrmUser]:
        """The company's active users (GET /api/v1/users)."""
        data = self._request("GET", USERS_PATH).get("data")
        if data is None:
            data = []
        if not isinstance(data, list):
            raise BackendUnavailable(self.fail(f"unexpected answer from {USERS_PATH}"))
        users = []
        for item in data:
            user_id = positive_int(item.get("id")) if isinstance(item, dict) else None
            if user_id is None or item.get("active_flag") is not True:
                continue
            users.append(CrmUser(id=str(user_id), name=text(item.get("name")), email=text(item.get("email"))))
        return users

    def _owner(self, user_id: str | None) -> int | None:
        """The Pipedrive user owning a new record: the connector's userCrmId when it is a user of the
        company, else ``default_user_id``, else None (Pipedrive makes the token's user the owner)."""
        if user_id and positive_int(user_id) is None:
            # not a number, so no Pipedrive user id; the value may be an e-mail address: not logged
            if user_id not in self._unnumbered_owners:
                self._unnumbered_owners.add(user_id)
                log.warning("%s: a userCrmId is not a Pipedrive user id (a number); its records go to the "
                            "default owner", self.spec.where())
            user_id = None
        return positive_int(self.owner_for(user_id))

    def create_contact(self, new: NewContact) -> WorkflowResult:
        """POST /api/v2/persons (developers.pipedrive.com/docs/api/v1/Persons#addPerson, API v2):
        the name and the number as the primary work phone. A company name is not an organization
        id: it is left out (the person can be linked in Pipedrive)."""
        body: dict[str, Any] = {"name": new.name,
                                "phones": [{"value": new.number, "primary": True, "label": "work"}]}
        if new.email:
            body["emails"] = [{"value": new.email, "primary": True, "label": "work"}]
        try:
            person_id = self._create(PERSONS_CREATE_PATH, body, "person")
        except ContactNotFound as exc:  # a 404 here is no person gone: the request was refused
            raise DeliveryRefused(str(exc)) from None
        return WorkflowResult(id=person_id, url=f"{self.app_url}/person/{person_id}")

    def _create(self, path: str, body: dict[str, Any], what: str) -> str:
        """POST ``body`` and return the id of what it created."""
        try:
            data = self._request("POST", path, body=body).get("data")
        except ApiError as exc:
            # answered, and refused for good: the person is gone, or a value is not accepted
            if exc.status in (404, 410):
                raise ContactNotFound(str(exc)) from None
            if exc.status in (400, 422):
                raise DeliveryRefused(str(exc)) from None
            raise
        created = data.get("id") if isinstance(data, dict) else None
        if not created:
            raise BackendUnavailable(self.fail(f"the {what} answer has no id"))
        return str(created)

    def _note(self, call: CallRecord, start: datetime, end: datetime) -> str:
        def line(label: str, value: str | None) -> str:
            return f"{label}: {html.escape(value or '-')}"

        answered = _v1_time(call.answered) + " UTC" if call.answered else None
        lines = [
            line("From", _party(self._display_number(call.originator_number), call.originator_name)),
            line("To", _party(self._display_number(call.destination_number), call.destination_name)),
            line("Started", _v1_time(start) + " UTC"),
            line("Answered", answered),
            line("Ended", _v1_time(end) + " UTC"),
        ]
        return (
            f"<p>{html.escape(call.summary())}</p><p>{'<br>'.join(lines)}</p>"
            f"<p>Logged by the peoplefone CONNECTOR {html.escape(_call_reference(call.key or '-'))}</p>"
        )

    def _display_number(self, raw: str | None) -> str | None:
        if not raw:
            return None
        parsed = self.parse(raw)
        return parsed.e164 if parsed is not None and parsed.e164 else raw.strip()

    def _call_lock(self, key: str) -> threading.Lock:
        with self._calls_lock:
            lock = self._call_locks.get(key)
            if lock is None:
                if len(self._call_locks) > REMEMBERED_CALLS:
                    self._call_locks = {k: v for k, v in self._call_locks.items() if v.locked()}
                lock = self._call_locks[key] = threading.Lock()
            return lock

    @contextmanager
    def _forgotten_when_gone(self, key: str) -> Iterator[None]:
        """A record deleted in Pipedrive is no longer the answer for its key: making it again makes
        a new one."""
        try:
            yield
        except RecordGone:
            with self._calls_lock:
                self._calls.pop(key, None)
            raise

    def _remember(self, key: str, result: WorkflowResult) -> None:
        with self._calls_lock:
            self._calls[key] = result
            while len(self._calls) > REMEMBERED_CALLS:
                self._calls.popitem(last=False)

    # HTTP -----------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """One call to Pipedrive with its rate-limit and credential bookkeeping.

        ``wait`` (mirror sync only): sleep through short burst limits instead of failing at once.
        """
        timeout = max(self.timeout_s, 15.0) if wait else self.timeout_s

        def once() -> dict[str, Any]:
            self._gate(method, wait)
            response = self.send(
                method, self.base_url + path, what=f"{method} {path}", params=params, json=body, timeout=timeout
            )
            self._observe(response)
            if response.status_code == 429:
                wait_s = self._on_429(response)
                raise RateLimited(self.fail(f"{method} {path} answered HTTP 429 (rate limited)"), wait_s)
            return self._decode(response, method, path)

        if not wait:
            return once()
        return self.with_retries(once, attempts=SYNC_RETRIES_ON_429 + 1, max_wait_s=MAX_SYNC_WAIT_S)

    def _decode(self, response: requests.Response, method: str, path: str) -> dict[str, Any]:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        what = f"{method} {path}"
        if status == 401:
            self._auth_blocked_until = time.monotonic() + AUTH_RETRY_S
            self.check_status(response, what, detail=f"requests are suspended and retried every {AUTH_RETRY_S:.0f}s")
        self.credentials.accepted()
        if status >= 500:
            self.check_status(response, what)
        if not isinstance(payload, dict):
            if status == 403:
                # Pipedrive's abuse protection answers an HTML page to clients that ignored 429s.
                raise RateLimited(self.fail(f"{what} answered HTTP 403, not JSON: requests blocked"), 60.0)
            raise BackendUnavailable(self.fail(f"{what} answered HTTP {status} without JSON"))
        if status >= 400 or payload.get("success") is False:
            message = str(payload.get("error") or payload.get("error_info") or "error")[:200]
            said = self.fail(f"{what} answered HTTP {status}: {message}")
            if status in (402, 403):
                raise ApiForbidden(said, status)
            raise ApiError(said, status, payload)
        return payload

    def _gate(self, method: str, may_wait: bool) -> None:
        """Refuse (or, for the sync, delay) a request Pipedrive would reject anyway."""
        if time.monotonic() < self._auth_blocked_until:
            raise CredentialsRejected(self.fail("rejected the credentials (HTTP 401), retry later"))
        self._daily.check()
        if method != "GET":
            self._writes.check()
        self.wait_for_window(MAX_SYNC_WAIT_S if may_wait else 0.0)

    def _observe(self, response: requests.Response) -> None:
        headers = response.headers
        if response.status_code < 400:
            self._ok_since_daily_block = True
        self.note_rate_headers(response)
        if header_number(headers.get("x-daily-ratelimit-token-remaining")) == 0:
            self._block_daily()
        if header_number(headers.get("x-daily-requests-left")) == 0:
            self._writes.exhaust(next_midnight(UTC))

    def _on_429(self, response: requests.Response) -> float:
        if header_number(response.headers.get("x-daily-ratelimit-token-remaining")) == 0:
            return self._block_daily()
        wait = retry_after(response.headers) or 2.0
        self.hold_off(wait)
        log.debug("%s: burst limit, retry in %.1fs", self.where, wait)
        return wait

    def _block_daily(self) -> float:
        now = time.time()
        with self._state_lock:
            if self._daily.left() > 0:
                return self._daily.left()
            until = next_midnight(UTC, now)
            still_exhausted = (
                self._daily_waited_until
                and not self._ok_since_daily_block
                and now - self._daily_waited_until < 14 * 3600
            )
            if still_exhausted:
                # Nothing succeeded since the UTC midnight we waited for: the server's midnight
                # (when Pipedrive resets the budget) is later; probe now and then.
                until = min(until, now + DAILY_PROBE_S)
            else:
                self._daily_waited_until = until
            self._ok_since_daily_block = False
        return self._daily.exhaust(until)


# helpers ------------------------------------------------------------------------------------
def _values(items: Any) -> list[str]:
    return [value for value, _ in _values_with_primary(items)]


def _values_with_primary(items: Any) -> list[tuple[str, bool]]:
    """``[{"value": ..., "primary": ...}]`` (v2 persons) as (value, primary); bad entries skipped."""
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("value"), str | int) and str(item["value"]).strip():
            found.append((str(item["value"]).strip(), item.get("primary") is True))
    return found


def _labels(items: Any) -> dict[str, str]:
    """The label of each number of ``[{"value": ..., "label": ...}]`` (v2 persons) that has one."""
    found: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("value"), str | int) and isinstance(item.get("label"), str):
            found.setdefault(str(item["value"]).strip(), item["label"])
    return found


def _later(current: str | None, candidate: Any) -> str | None:
    """The later of two RFC 3339 times, as Pipedrive wrote it (the cursor of the next sync)."""
    new = read_time(candidate)
    if new is None:
        return current
    old = read_time(current)
    return new.strftime("%Y-%m-%dT%H:%M:%SZ") if old is None or new > old else current


def _next_since(previous: str | None, seen: str | None, started: float) -> str:
    """The ``updated_since`` of the next sync: the latest change seen, but never later than a few
    minutes before this sync started (a record changed while the listing ran, or a clock a little
    ahead of Pipedrive's, is listed again rather than missed), and never earlier than before."""
    bound = datetime.fromtimestamp(started - SYNC_OVERLAP_S, UTC).replace(microsecond=0)
    latest = read_time(seen)
    if latest is not None and latest < bound:
        bound = latest
    earlier = read_time(previous)
    if earlier is not None and earlier > bound:
        return previous  # type: ignore[return-value]
    return bound.strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _call_reference(key: str) -> str:
    """What a logged call's note carries to be found again (the key is hex: nothing to escape)."""
    return f"(call {key})"


def _message_reference(key: str) -> str:
    """What a message record's note carries to be found again (hex, like a call's key)."""
    return f"(messages {key})"


def _message_note(message_log: MessageLog) -> str:
    """The digest as an activity note (HTML): the participants, one line per message, the recording
    or document as a link, and the record's key."""
    parts = []
    if message_log.participants:
        parts.append(f"<p>Participants: {html.escape(', '.join(message_log.participants))}</p>")
    lines = [html.escape(line).replace("\n", "<br>") for line in message_log.lines()]
    parts.append(f"<p>{'<br>'.join(lines)}</p>")
    link = message_log.link
    if link and re.match(r"^https?://", link):
        label = "Recording" if message_log.kind == "Voicemail" else "Document"
        parts.append(f'<p><a href="{html.escape(link, quote=True)}">{label}</a></p>')
    parts.append(f"<p>Logged by the peoplefone CONNECTOR {html.escape(_message_reference(message_log.key or '-'))}</p>")
    return "".join(parts)


def _hours_minutes(seconds: int) -> str:
    """An activity's duration (``HH:MM``): talk seconds rounded to minutes, at least one when talked."""
    minutes = max(1, (seconds + 30) // 60) if seconds else 0
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _call_window(call: CallRecord) -> tuple[datetime, datetime]:
    start = call.started or call.answered or call.ended or call.declined or datetime.now(UTC)
    end = call.ended or call.declined or call.answered or start
    start, end = _utc(start), _utc(end)
    return start, max(start, end)


def _v1_time(moment: datetime) -> str:
    """API v1 times: UTC, ``YYYY-MM-DD HH:MM:SS``."""
    return _utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def _outcome(call: CallRecord) -> str:
    """Pipedrive's call log outcomes: connected, no_answer, left_message, left_voicemail,
    wrong_number, busy. A call the other side declined reads as busy."""
    if call.status == "answered":
        return "connected"
    if call.status == "declined" and call.direction == "outgoing":
        return "busy"
    return "no_answer"


def _party(number: str | None, name: str | None) -> str | None:
    if number and name:
        return f"{name} ({number})"
    return name or number


__all__ = ["PipedriveBackend", "PipedriveOptions"]
