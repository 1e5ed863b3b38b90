"""HubSpot CRM: contacts found with the CRM search API, calls logged as call engagements.

Vendor documentation this module follows (developers.hubspot.com):

* search: ``/docs/api/crm/search`` (``POST /crm/v3/objects/contacts/search``: filterGroups are ORed,
  filters in a group ANDed; at most 5 groups, 6 filters per group, 18 filters in all; one sort;
  paging with ``after``, no further than the 10,000th result);
* contacts: ``/docs/api/crm/contacts`` (``GET /crm/v3/objects/contacts`` lists with ``after``);
* companies: ``/docs/api/crm/companies`` (``POST /crm/v3/objects/companies/batch/read``);
* associations v4: ``/docs/api/crm/associations`` (``POST /crm/v4/associations/contacts/companies/
  batch/read``; the contact's primary company carries ``typeId`` 1, ``HUBSPOT_DEFINED``);
* calls: ``/docs/api/crm/calls`` (``POST /crm/v3/objects/calls``; association type 194 = call to
  contact; ``GET /crm/v3/objects/calls/{id}?idProperty=`` reads a call by a unique property) and
  the calls search (``POST /crm/v3/objects/calls/search``, same body as the contacts search);
* updates: ``PATCH /crm/v3/objects/{calls|communications|notes}/{id}`` (the "Update" section of
  each object's page: a partial update, read-only and nonexistent properties refused);
* communications: ``/docs/api/crm/communications`` (``POST /crm/v3/objects/communications``, the
  channel ``hs_communication_channel_type`` ``SMS``, ``hs_communication_logged_from`` ``CRM``;
  association type 81 = communication to contact);
* notes: ``/docs/api/crm/notes`` (``POST /crm/v3/objects/notes``, ``hs_note_body`` at most 65,536
  characters; association type 202 = note to contact);
* owners: ``/docs/api/crm/owners`` (``GET /crm/v3/owners``: ``id`` is what ``hubspot_owner_id`` takes);
* account info: ``/docs/api/settings/account-information-api`` (``GET /account-info/v3/details``:
  ``portalId``, ``uiDomain``, ``timeZone``);
* limits and errors: ``/docs/guides/apps/api-usage/usage-details`` (429 bodies with ``policyName``,
  ``X-HubSpot-RateLimit-*`` headers, daily limit reset at midnight in the account's time zone).

Phone matching: HubSpot keeps, next to the typed ``phone`` and ``mobilephone``, calculated copies
(``hs_searchable_calculated_phone_number``, ``hs_searchable_calculated_mobile_number``) holding the
number without country code, separators or trunk prefix. One search asks for the national
significant number in those and the usual spellings in the typed properties; every candidate is then
re-checked with the project's normalization, so a same-digits number of another country is dropped.

Exactly once: every call carries a reference derived from its key (in ``hs_call_body``, or in the
unique custom property ``call_key_property``). Before creating a call the backend looks for one
carrying the reference, so a retry after a lost answer finds the call it already created. The search
index shows a new call only seconds later; while an attempt whose outcome is unknown (noted in a small
file shared by the processes of this machine, :mod:`crm_backends.attempts`) is younger than
``SEARCH_INDEX_LAG_S``, a retry is refused as unavailable (the outbox tries again later) rather than
risking a second call. A ``call_key_property`` is read directly, without the lag.

Messages (``MessageLog``): an SMS digest is a communication of channel ``SMS``; HubSpot's
communications have no voicemail or fax channel, so a voicemail or a fax is a note. Both carry a
reference derived from the digest's key and are found again the same way as calls; later messages of
the day replace the record's body with a PATCH. A call posted again with more information (its end, a
note) is updated with a PATCH of the call.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timezone
from typing import Any, ClassVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError, fields, validates

from lookup_core.errors import (
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
    RecordGone,
)
from lookup_core.phone import PhoneNumber, parse_number
from lookup_core.redact import mask, mask_numbers
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, NewContact, SyncBatch, WorkflowResult

from .attempts import AttemptLog
from .base import BackendOptions, BackendSpec
from .http import (
    DailyQuota,
    HttpSource,
    HttpStatusError,
    json_or_none,
    next_midnight,
    read_time,
    retry_after_seconds,
    scalar,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hubapi.com"
DEFAULT_APP_DOMAIN = "app.hubspot.com"
DEFAULT_LOGO = "https://upload.wikimedia.org/wikipedia/commons/3/3f/HubSpot_Logo.svg"

# The search API's own limit. HubSpot's pages disagree (the changelog announcing it says four a
# second per token; later pages say five a second per account): four stays under both.
SEARCH_RATE_PER_SECOND = 4.0

CONTACT_OBJECT = "0-1"
COMPANY_OBJECT = "0-2"
PRIMARY_COMPANY_TYPE_ID = 1  # contact -> company, label "Primary"
CALL_TO_CONTACT_TYPE_ID = 194
COMMUNICATION_TO_CONTACT_TYPE_ID = 81
NOTE_TO_CONTACT_TYPE_ID = 202
OWNERS_PAGE = 500  # the owners API's largest page
MAX_OWNER_PAGES = 40
RECORD_TEXT_MAX = 65_536  # hs_note_body's limit, kept for communications too
SEARCH_PAGE = 100
LIST_PAGE = 100  # the list endpoint's maximum
SEARCH_RESULT_CAP = 10_000  # the search API pages no further than this
SYNC_OVERLAP_MS = 5 * 60 * 1000  # the search index lags a little behind writes
SYNC_TIMEOUT_S = 15.0
MIN_COMPANY_BUDGET_S = 0.15  # skip the association step when less than this is left
RECENT_CALLS = 1024
# How long a new call may take to appear in the calls search (HubSpot says "a few seconds").
SEARCH_INDEX_LAG_S = 15.0

# The contact's main number is its business line (HubSpot keeps the mobile apart): the contacts API's phoneType.
PHONE_TYPES = {"phone": "business", "mobilephone": "mobile"}
BASE_PROPERTIES = (
    "firstname",
    "lastname",
    "company",
    "phone",
    "mobilephone",
    "jobtitle",
    "email",
    "lastmodifieddate",
    "notes_last_updated",
    "hs_last_sales_activity_timestamp",
)

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_PROPERTY_NAME = re.compile(r"^[a-z0-9_]+$")


class _DigitsField(fields.Field):
    """A HubSpot id that TOML may give as an integer or a string of digits."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not re.fullmatch(r"\d{1,20}", str(value).strip()):
            raise ValidationError("must be the HubSpot account id (hub id), digits only")
        return str(value).strip()


class HubSpotOptions(BackendOptions):
    access_token = fields.String(required=True)
    base_url = fields.String(load_default=DEFAULT_BASE_URL)
    portal_id = _DigitsField(load_default=None, allow_none=True)
    app_domain = fields.String(load_default=None, allow_none=True)
    resolve_company = fields.Boolean(load_default=True)
    custom_properties = fields.List(fields.String(), load_default=list)
    # look for an earlier attempt of the same call before creating one (see the module docstring)
    dedupe_calls = fields.Boolean(load_default=True)
    # a custom call property created with "hasUniqueValue": holds the call's key, read without lag
    call_key_property = fields.String(load_default=None, allow_none=True)

    @validates("access_token")
    def _check_token(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("the private app's access token is empty")
        if any(ch.isspace() for ch in value.strip()):
            raise ValidationError("an access token contains no spaces (paste the token only)")

    @validates("base_url")
    def _check_base_url(self, value: str, **_: Any) -> None:
        if not re.match(r"^https?://[^/\s]+", value or ""):
            raise ValidationError("must be an http(s) URL such as https://api.hubapi.com")

    @validates("app_domain")
    def _check_app_domain(self, value: str | None, **_: Any) -> None:
        if value is not None and not _HOST.match(value):
            raise ValidationError("must be a host name such as app.hubspot.com or app-eu1.hubspot.com")

    @validates("call_key_property")
    def _check_key_property(self, value: str | None, **_: Any) -> None:
        if value is not None and (not _PROPERTY_NAME.match(value) or value.startswith("hs_")):
            raise ValidationError(f"{value!r} is not the internal name of a custom call property")

    @validates("custom_properties")
    def _check_custom(self, value: list[str], **_: Any) -> None:
        for name in value:
            if not _PROPERTY_NAME.match(name):
                raise ValidationError(f"{name!r} is not a HubSpot internal property name")


class HubSpotBackend(HttpSource):
    type_name: ClassVar[str] = "hubspot"
    options_schema = HubSpotOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True
    workflows = frozenset({"CallFlow"})
    creates_contacts = True
    logs_messages = True
    users = True
    default_crm_name = "HubSpot"
    status_errors = True
    default_crm_logo = DEFAULT_LOGO
    default_rate_per_second = SEARCH_RATE_PER_SECOND
    secret_keys = frozenset({"access_token"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        self.base_url = self.options["base_url"].rstrip("/")
        self.session.headers.update(
            {"Authorization": f"Bearer {self.options['access_token'].strip()}", "Accept": "application/json"}
        )
        self._portal_id: str | None = self.options.get("portal_id")
        self._app_domain: str | None = self.options.get("app_domain")
        self._zone: ZoneInfo | timezone = UTC
        self._account_lock = threading.Lock()
        self._account_tried_at = 0.0
        self._daily = DailyQuota(self, "daily API limit (resets at midnight in the account's time zone)")
        self._recent_calls: OrderedDict[str, WorkflowResult] = OrderedDict()
        # creates whose answer never arrived, shared with the other processes of this machine
        self._uncertain = AttemptLog(os.path.join(spec.instance_dir, "hubspot-call-attempts.sqlite3"))
        self._calls_lock = threading.Lock()
        self._last_search = 0.0
        self._company_refused = False
        self.search_result_cap = SEARCH_RESULT_CAP
        self.search_page = SEARCH_PAGE
        self.properties = list(dict.fromkeys([*BASE_PROPERTIES, *self.options.get("custom_properties", [])]))

    # account ---------------------------------------------------------------------------------
    @property
    def app_domain(self) -> str:
        return self._app_domain or DEFAULT_APP_DOMAIN

    def portal_id(self, budget_s: float | None = None) -> str | None:
        """The hub id for record URLs: configured, or read once from the account-info API."""
        if self._portal_id:
            return self._portal_id
        if budget_s is not None and budget_s < 0.05:
            return None
        with self._account_lock:
            if self._portal_id or time.monotonic() - self._account_tried_at < 60:
                return self._portal_id
            self._account_tried_at = time.monotonic()
            try:
                self._load_account(timeout=min(self.timeout_s, budget_s or self.timeout_s))
            except CredentialsRejected:
                raise
            except BackendUnavailable as exc:
                log.warning(
                    "%s: cannot read the HubSpot account id yet (%s); links left out", self.where, exc
                )
        return self._portal_id

    def _load_account(self, timeout: float) -> None:
        _, data = self._request("GET", "/account-info/v3/details", timeout=timeout)
        if not isinstance(data, dict) or not str(data.get("portalId", "")).isdigit():
            raise BackendUnavailable(self.fail("account-info answered without a portalId"))
        self._portal_id = self._portal_id or str(data["portalId"])
        ui_domain = data.get("uiDomain")
        if not self.options.get("app_domain") and isinstance(ui_domain, str) and _HOST.match(ui_domain):
            self._app_domain = ui_domain
        zone = data.get("timeZone")
        if isinstance(zone, str) and zone:
            try:
                self._zone = ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                pass

    def check(self) -> None:
        """Reads the account (hub id, UI domain, time zone) and one contact: proves the token and
        the contacts read scope without spending a search request."""
        self._load_account(timeout=max(self.timeout_s, 5.0))
        self._request(
            "GET",
            "/crm/v3/objects/contacts",
            params={"limit": "1", "properties": "hs_object_id"},
            timeout=max(self.timeout_s, 5.0),
        )

    def contact_url(self, contact_id: str, portal_id: str | None) -> str | None:
        if not portal_id:
            return None
        return f"https://{self.app_domain}/contacts/{portal_id}/record/{CONTACT_OBJECT}/{contact_id}"

    def company_url(self, company_id: str, portal_id: str | None) -> str | None:
        if not portal_id:
            return None
        return f"https://{self.app_domain}/contacts/{portal_id}/record/{COMPANY_OBJECT}/{company_id}"

    # lookup ----------------------------------------------------------------------------------
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        started = time.monotonic()
        deadline = started + self.spec.deadline_s
        # room for candidates the re-check drops (another country's number with the same digits)
        candidates, portal = self._search_contacts(self.phone_filter_groups(number), max(limit * 4, 20), deadline)
        kept = self.filter_candidates(number, candidates)
        kept.sort(key=lambda c: (not c.exact, -(c.last_activity.timestamp() if c.last_activity else 0)))
        kept = kept[:limit]
        wanted = self.options["resolve_company"] and not self._company_refused
        if kept and wanted and deadline - time.monotonic() > MIN_COMPANY_BUDGET_S:
            try:
                self._attach_companies(kept, portal, deadline)
            except CredentialsRejected as exc:
                # a scope missing for companies only: say it once, keep answering with the text property
                self._company_refused = True
                log.warning("%s: company names left out from now on: %s", self.where, exc)
            except BackendUnavailable as exc:
                log.info("%s: company names skipped: %s", self.where, exc)
        log.debug(
            "%s: %s -> %d of %d candidates in %.0f ms",
            self.where,
            number.masked(),
            len(kept),
            len(candidates),
            (time.monotonic() - started) * 1000,
        )
        return kept

    def search(self, term: str, limit: int) -> list[Contact]:
        """Contacts by name: the first typed word as a prefix (``CONTAINS_TOKEN`` with ``*``) of the
        first name, last name or company, and a second word of the last name after a first name;
        most recently changed first, within the lookup deadline."""
        words = [w.lower() for w in term.split() if "*" not in w][:2]
        if not words:
            return []
        deadline = time.monotonic() + self.spec.deadline_s
        first = words[0] + "*"
        groups = [[{"propertyName": name, "operator": "CONTAINS_TOKEN", "value": first}]
                  for name in ("firstname", "lastname", "company")]
        if len(words) > 1:
            groups = [groups[0] + [{"propertyName": "lastname", "operator": "CONTAINS_TOKEN", "value": words[1] + "*"}],
                      [{"propertyName": "company", "operator": "CONTAINS_TOKEN", "value": " ".join(words) + "*"}]]
        found, _ = self._search_contacts([{"filters": filters} for filters in groups], max(limit, 1), deadline)
        return found[:limit]

    def _search_contacts(self, filter_groups: list, limit: int, deadline: float) -> tuple[list[Contact], str | None]:
        """The contacts the CRM search finds for ``filter_groups``, most recently changed first, and
        the portal id their links use."""
        body = {
            "filterGroups": filter_groups,
            "properties": self.properties,
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
            "limit": min(SEARCH_PAGE, limit),
        }
        _, data = self._request(
            "POST", "/crm/v3/objects/contacts/search", json=body, timeout=self.budget(deadline), search=True
        )
        portal = self.portal_id(budget_s=deadline - time.monotonic())
        return [c for c in (self._contact(r, portal) for r in self._results(data)) if c is not None], portal

    def phone_filter_groups(self, number: PhoneNumber) -> list[dict[str, Any]]:
        """At most four groups (HubSpot allows five), ORed: the calculated numbers by national
        significant number, the typed properties by every usual spelling."""
        forms = self.search_forms(number)
        groups: list[dict[str, Any]] = []
        if number.nsn:
            for prop in ("hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number"):
                groups.append({"filters": [{"propertyName": prop, "operator": "EQ", "value": number.nsn}]})
        for prop in ("phone", "mobilephone"):
            groups.append({"filters": [{"propertyName": prop, "operator": "IN", "values": forms}]})
        return groups

    def _contact(self, record: dict[str, Any], portal: str | None) -> Contact | None:
        contact_id = str(record.get("id") or "").strip()
        props = record.get("properties")
        if not contact_id or not isinstance(props, dict):
            return None
        typed = [(str(props[p]).strip(), kind) for p, kind in PHONE_TYPES.items() if scalar(props.get(p))]
        phones = [value for value, _ in typed]
        if not phones:
            return None
        first, last = scalar(props.get("firstname")), scalar(props.get("lastname"))
        email_address = scalar(props.get("email"))
        name = " ".join(part for part in (first, last) if part) or email_address
        moments = [
            read_time(props.get(p)) for p in ("notes_last_updated", "hs_last_sales_activity_timestamp")
        ]
        activity = max((m for m in moments if m), default=None) or read_time(props.get("lastmodifieddate"))
        custom = {
            prop: scalar(props.get(prop))
            for prop in self.options.get("custom_properties", [])
            if scalar(props.get(prop))
        }
        return Contact(
            id=contact_id,
            name=name,
            company=scalar(props.get("company")),
            contact_uri=self.contact_url(contact_id, portal),
            custom_data=custom,  # type: ignore[arg-type]
            phones=phones,
            last_activity=activity,
            email=email_address,
            phone_types=dict(reversed(typed)),  # the same number in both: the first property's type
            job_title=scalar(props.get("jobtitle")),
        )

    def _attach_companies(self, contacts: list[Contact], portal: str | None, deadline: float | None) -> None:
        """Primary associated company (name and link) for each contact; the ``company`` text
        property stays when a contact has no associated company."""

        def timeout() -> float:
            return SYNC_TIMEOUT_S if deadline is None else self.budget(deadline)

        _, data = self._request(
            "POST",
            "/crm/v4/associations/contacts/companies/batch/read",
            json={"inputs": [{"id": c.id} for c in contacts]},
            timeout=timeout(),
        )
        chosen: dict[str, str] = {}
        for row in self._results(data):
            source = str((row.get("from") or {}).get("id", ""))
            targets = [t for t in row.get("to") or [] if isinstance(t, dict) and t.get("toObjectId")]
            if not source or not targets:
                continue
            primary = next((t for t in targets if _is_primary(t)), None)
            chosen[source] = str((primary or targets[0])["toObjectId"])
        if not chosen:
            return
        if deadline is not None and deadline - time.monotonic() < MIN_COMPANY_BUDGET_S / 2:
            return
        company_ids = list(dict.fromkeys(chosen.values()))
        _, data = self._request(
            "POST",
            "/crm/v3/objects/companies/batch/read",
            json={
                "properties": ["name"],
                "propertiesWithHistory": [],
                "inputs": [{"id": i} for i in company_ids],
            },
            timeout=timeout(),
        )
        names = {
            str(r.get("id")): scalar((r.get("properties") or {}).get("name"))
            for r in self._results(data)
            if isinstance(r.get("properties"), dict)
        }
        for contact in contacts:
            company_id = chosen.get(contact.id)
            if company_id is None:
                continue
            contact.company = names.get(company_id) or contact.company
            contact.company_uri = self.company_url(company_id, portal)

    # CallFlow --------------------------------------------------------------------------------
    def create_contact(self, new: NewContact) -> WorkflowResult:
        """POST /crm/v3/objects/contacts (developers.hubspot.com/docs/api/crm/contacts, "Create
        contacts"): firstname/lastname from the name, the number in ``phone``. A 409 for an e-mail
        that has a contact already answers that contact."""
        first, _, last = new.name.strip().partition(" ")
        props = {"firstname": first, "lastname": last, "phone": new.number, "company": new.company or "",
                 "email": new.email or ""}
        body = {"properties": {key: value for key, value in props.items() if value}}
        try:
            _, data = self._request("POST", "/crm/v3/objects/contacts", json=body, timeout=max(self.timeout_s, 5.0))
        except HttpStatusError as exc:
            message = str((exc.body or {}).get("message") or "") if isinstance(exc.body, dict) else ""
            existing = re.search(r"Existing ID: (\d+)", message)
            if exc.status == 409 and existing:
                contact_id = existing.group(1)
            elif exc.status in (400, 409, 422):
                raise DeliveryRefused(self.fail(f"refused the new contact: HTTP {exc.status}")) from None
            else:
                raise
        else:
            contact_id = str((data or {}).get("id") or "") if isinstance(data, dict) else ""
            if not contact_id:
                raise DeliveryRefused(self.fail("created the contact but answered without its id"))
        return WorkflowResult(id=contact_id, url=self.contact_url(contact_id, self.portal_id()) or "")

    def log_call(self, call: CallRecord) -> WorkflowResult:
        contact_id = str(call.contact_id or "").strip()
        if not contact_id.isdigit():
            raise ContactNotFound(self.fail(f"{contact_id!r} is not a contact id"))
        with self._calls_lock:
            done = self._recent_calls.get(call.key) if call.key else None
        if done is not None:
            return done
        dedupe = bool(call.key) and self.options["dedupe_calls"]
        if dedupe:
            found = self._find_call(call)
            if found is not None:
                log.info("%s: call %s was already logged on contact %s", self.where, found, contact_id)
                # an earlier attempt (whose answer was lost) made it, maybe from an older post
                return self.update_call(found, call)
            age = self._uncertain.age(call.key)
            if age is not None and not self.options.get("call_key_property"):
                if age < SEARCH_INDEX_LAG_S:
                    raise BackendUnavailable(
                        f"{self.where}: the outcome of an attempt {age:.0f}s ago is unknown and the search may not "
                        "show it yet; not creating the call again before that is known"
                    )
        body = self.call_body(call)
        if dedupe:
            self._uncertain.sent(call.key)
        try:
            _, data = self._request(
                "POST", "/crm/v3/objects/calls", json=body, timeout=max(self.timeout_s, 5.0)
            )
        except (HttpStatusError, CredentialsRejected, RateLimited) as exc:
            self._settled(call)  # HubSpot answered: nothing was created
            if isinstance(exc, HttpStatusError):
                found = self._refused(exc, call, contact_id)
                if found is not None:
                    return self.update_call(found, call)
            raise
        call_id = str((data or {}).get("id") or "") if isinstance(data, dict) else ""
        if not call_id:
            # created, most likely: its id is unknown, so the next attempt looks for it first
            raise BackendUnavailable(self.fail("created the call but answered without its id"))
        self._settled(call)
        log.info("%s: call %s logged on contact %s", self.where, call_id, contact_id)
        return self._remember(call, call_id, contact_id)

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """A later post of the call (its answer, end, duration, a note): PATCH the call record with
        everything the call says now. The owner and the reference stay as they were."""
        record_id = str(record_id or "").strip()
        self._patch("calls", record_id, self.call_properties(call), "call")
        log.info("%s: call %s updated (%s)", self.where, record_id, call.status)
        return self._remember(call, record_id, str(call.contact_id or "").strip())

    def _patch(self, kind: str, record_id: str, properties: dict[str, str], what: str) -> None:
        """``PATCH /crm/v3/objects/{kind}/{id}``; a record deleted in HubSpot or a refused value is a
        refusal for good, the rest (outage, rate limit) is tried again."""
        if not record_id.isdigit():
            raise DeliveryRefused(self.fail(f"{record_id[:40]!r} is not the id of a HubSpot {what}"))
        try:
            self._request("PATCH", f"/crm/v3/objects/{kind}/{record_id}", json={"properties": properties},
                          timeout=max(self.timeout_s, 5.0))
        except HttpStatusError as exc:
            if exc.status in (404, 410):
                raise RecordGone(self.fail(f"the {what} {record_id} no longer exists in HubSpot")) from None
            if exc.status in (400, 409, 422):
                raise DeliveryRefused(str(exc)) from None
            raise

    # MessageLog ------------------------------------------------------------------------------
    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        """The digest's record: a communication (SMS) or a note (voicemail, fax) associated with the
        contact. A record an earlier attempt made (its answer lost) is found by its reference and
        brought up to date instead of made again."""
        contact_id = str(message_log.contact_id or "").strip()
        if not contact_id.isdigit():
            raise ContactNotFound(self.fail(f"{contact_id[:40]!r} is not a contact id"))
        kind = _message_object(message_log)
        attempt = "msg:" + message_log.key if message_log.key else ""
        if attempt:
            found = self._find_message(message_log)
            if found is not None:
                log.info("%s: %s %s was already logged on contact %s", self.where, kind[:-1], found, contact_id)
                return self.update_message(found, message_log)
            age = self._uncertain.age(attempt)
            if age is not None and age < SEARCH_INDEX_LAG_S:
                raise BackendUnavailable(
                    f"{self.where}: the outcome of an attempt {age:.0f}s ago is unknown and the search may not "
                    f"show it yet; not creating the {kind[:-1]} again before that is known"
                )
        properties = self.message_properties(message_log)
        if kind == "communications":
            properties = {"hs_communication_channel_type": "SMS", "hs_communication_logged_from": "CRM", **properties}
        self._set_owner(properties, message_log.user_id, kind[:-1])
        association = COMMUNICATION_TO_CONTACT_TYPE_ID if kind == "communications" else NOTE_TO_CONTACT_TYPE_ID
        body = {"properties": properties, "associations": _association(contact_id, association)}
        if attempt:
            self._uncertain.sent(attempt)
        try:
            _, data = self._request("POST", f"/crm/v3/objects/{kind}", json=body, timeout=max(self.timeout_s, 5.0))
        except (HttpStatusError, CredentialsRejected, RateLimited) as exc:
            if attempt:
                self._uncertain.settled(attempt)  # HubSpot answered: nothing was created
            if isinstance(exc, HttpStatusError) and exc.status in (400, 404, 409, 422):
                if exc.status in (400, 404) and not self._contact_exists(contact_id):
                    raise ContactNotFound(self.fail(f"no contact with id {contact_id}")) from None
                raise DeliveryRefused(str(exc)) from None
            raise
        record_id = str((data or {}).get("id") or "") if isinstance(data, dict) else ""
        if not record_id:
            raise BackendUnavailable(self.fail(f"created the {kind[:-1]} but answered without its id"))
        if attempt:
            self._uncertain.settled(attempt)
        log.info("%s: %s %s logged on contact %s", self.where, kind[:-1], record_id, contact_id)
        return WorkflowResult(id=record_id, url=self.contact_url(contact_id, self.portal_id()))

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        """The digest holds one more message: the record's body (and time) replaced with a PATCH."""
        record_id = str(record_id or "").strip()
        kind = _message_object(message_log)
        self._patch(kind, record_id, self.message_properties(message_log), kind[:-1])
        log.info("%s: %s %s updated (%d messages)", self.where, kind[:-1], record_id, len(message_log.messages))
        contact_id = str(message_log.contact_id or "").strip()
        return WorkflowResult(id=record_id, url=self.contact_url(contact_id, self.portal_id()))

    def message_properties(self, message_log: MessageLog) -> dict[str, str]:
        """The record's text and time: what a create sends and an update replaces."""
        prefix = "hs_communication" if _message_object(message_log) == "communications" else "hs_note"
        return {f"{prefix}_body": message_html(message_log), "hs_timestamp": _iso_ms(message_log.first.time)}

    def _find_message(self, message_log: MessageLog) -> str | None:
        """The id of a record already carrying this digest's reference, if HubSpot shows one."""
        kind = _message_object(message_log)
        prop = "hs_communication_body" if kind == "communications" else "hs_note_body"
        return self._find_marked(kind, prop, message_marker(message_log.key), str(message_log.contact_id),
                                 _iso_ms(message_log.first.time))

    # users -----------------------------------------------------------------------------------
    def list_users(self) -> list[CrmUser]:
        """The account's owners (``GET /crm/v3/owners``): the ids ``hubspot_owner_id`` takes."""
        users: list[CrmUser] = []
        after: str | None = None
        for _ in range(MAX_OWNER_PAGES):
            params = {"limit": str(OWNERS_PAGE), "archived": "false"}
            if after:
                params["after"] = after
            _, data = self.with_retries(
                lambda params=params: self._request("GET", "/crm/v3/owners", params=params,
                                                    timeout=max(self.timeout_s, 5.0)),
                attempts=3, max_wait_s=5.0, quota=self._daily,
            )
            for row in self._results(data):
                owner_id = str(row.get("id") or "").strip()
                if owner_id:
                    name = " ".join(p for p in (scalar(row.get("firstName")), scalar(row.get("lastName"))) if p)
                    users.append(CrmUser(id=owner_id, name=name or None, email=scalar(row.get("email"))))
            after = _next_after(data)
            if after is None:
                return users
        log.warning("%s: more than %d owners; the list stops there", self.where, len(users))
        return users

    def _refused(self, exc: HttpStatusError, call: CallRecord, contact_id: str) -> str | None:
        """HubSpot refused the new call: the id of the call that exists already (a unique
        ``call_key_property`` clashed), or the error the workflow reports is raised."""
        if exc.status == 409 and self.options.get("call_key_property"):
            found = self._find_call(call)
            if found is not None:
                return found
        if exc.status in (400, 404) and not self._contact_exists(contact_id):
            raise ContactNotFound(self.fail(f"no contact with id {contact_id}")) from None
        if exc.status in (400, 404, 422):
            raise DeliveryRefused(str(exc)) from None
        return None

    def _settled(self, call: CallRecord) -> None:
        if call.key and self.options["dedupe_calls"]:
            self._uncertain.settled(call.key)

    def _remember(self, call: CallRecord, call_id: str, contact_id: str) -> WorkflowResult:
        result = WorkflowResult(id=call_id, url=self.contact_url(contact_id, self.portal_id()))
        if call.key:
            with self._calls_lock:
                self._recent_calls[call.key] = result
                while len(self._recent_calls) > RECENT_CALLS:
                    self._recent_calls.popitem(last=False)
        return result

    def _find_call(self, call: CallRecord) -> str | None:
        """The id of a call already carrying this call's reference, if HubSpot shows one."""
        timeout = max(self.timeout_s, 5.0)
        prop = self.options.get("call_key_property")
        if prop:
            try:
                _, data = self._request(
                    "GET",
                    f"/crm/v3/objects/calls/{quote(call.key, safe='')}",
                    params={"idProperty": prop, "properties": prop},
                    timeout=timeout,
                )
            except HttpStatusError as exc:
                if exc.status == 404:
                    return None
                raise
            found = str(data.get("id") or "") if isinstance(data, dict) else ""
            return found or None
        return self._find_marked("calls", "hs_call_body", call_marker(call.key), str(call.contact_id),
                                 _iso_ms(_call_moment(call)))

    def _find_marked(self, kind: str, prop: str, marker: str, contact_id: str, moment: str) -> str | None:
        """The id of a ``kind`` record whose ``prop`` carries ``marker``, if HubSpot shows one: by the
        marker as a word of the text, or (should the text not be tokenized) the contact's records at
        the exact ``moment``; the marker is checked in every hit."""
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": prop, "operator": "CONTAINS_TOKEN", "value": marker}]},
                {
                    "filters": [
                        {"propertyName": "associations.contact", "operator": "EQ", "value": contact_id.strip()},
                        {"propertyName": "hs_timestamp", "operator": "EQ", "value": moment},
                    ]
                },
            ],
            "properties": [prop],
            "limit": 100,
        }
        _, data = self._request("POST", f"/crm/v3/objects/{kind}/search", json=body,
                                timeout=max(self.timeout_s, 5.0), search=True)
        for record in self._results(data):
            text = str((record.get("properties") or {}).get(prop) or "")
            if marker in text and str(record.get("id") or "").strip():
                return str(record["id"]).strip()
        return None

    def call_body(self, call: CallRecord) -> dict[str, Any]:
        """The documented create-call request: properties and the call-to-contact association."""
        properties = self.call_properties(call)
        if call.key and self.options.get("call_key_property"):
            properties[self.options["call_key_property"]] = call.key
        self._set_owner(properties, call.user_id, "call")
        return {"properties": properties, "associations": _association(call.contact_id, CALL_TO_CONTACT_TYPE_ID)}

    def call_properties(self, call: CallRecord) -> dict[str, str]:
        """What a call record says of ``call``: sent when it is created and again, whole, when a later
        post of the call updates it."""
        moment = _call_moment(call)
        status = {"answered": "COMPLETED", "missed": "NO_ANSWER", "declined": "CANCELED"}[call.status]
        from_number = _e164(call.originator_number, self.spec.default_region)
        to_number = _e164(call.destination_number, self.spec.default_region)
        properties: dict[str, str] = {
            "hs_timestamp": _iso_ms(moment),
            "hs_call_title": call.summary().splitlines()[0],
            "hs_call_body": self._call_text(call, from_number, to_number),
            "hs_call_direction": "INBOUND" if call.direction == "incoming" else "OUTBOUND",
            "hs_call_status": status,
            "hs_call_duration": str(call.duration_seconds * 1000),
        }
        if from_number:
            properties["hs_call_from_number"] = from_number
        if to_number:
            properties["hs_call_to_number"] = to_number
        return properties

    def _set_owner(self, properties: dict[str, str], user_id: str | None, what: str) -> None:
        """``hubspot_owner_id`` of a new record: the userCrmId when it is an owner, else the
        ``default_user_id`` (see :meth:`owner_for`), else none (HubSpot's default)."""
        owner = str(self.owner_for(user_id) or "").strip()
        if owner.isdigit():
            properties["hubspot_owner_id"] = owner
        elif owner:
            # HubSpot refuses the whole record for an owner id that is not one: log it without
            log.info("%s: userCrmId %r is not a HubSpot owner id; %s logged without owner", self.where,
                     mask_numbers(owner[:40]), what)

    @staticmethod
    def _call_text(call: CallRecord, from_number: str | None, to_number: str | None) -> str:
        parts = [call.summary().splitlines()[0] + "."]
        caller = " ".join(p for p in (call.originator_name, f"({from_number})" if from_number else None) if p)
        callee = " ".join(p for p in (call.destination_name, f"({to_number})" if to_number else None) if p)
        if caller:
            parts.append(f"From: {caller}.")
        if callee:
            parts.append(f"To: {callee}.")
        if call.note:
            parts.append(f"Note: {call.note.strip()}")
        parts.append("Logged by the phone lookup service.")
        if call.key:
            parts.append(f"Call reference: {call_marker(call.key)}")
        return " ".join(parts)

    def _contact_exists(self, contact_id: str) -> bool:
        try:
            self._request(
                "GET",
                f"/crm/v3/objects/contacts/{contact_id}",
                params={"properties": "hs_object_id"},
                timeout=max(self.timeout_s, 5.0),
            )
        except HttpStatusError as exc:
            return exc.status != 404
        return True

    # mirror ----------------------------------------------------------------------------------
    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        """Full listing (list API) without a cursor (the mirror's schedule decides when); otherwise
        the contacts modified since the cursor (search API).

        Deletions: HubSpot's search never returns archived (deleted) or merged-away contacts, and
        the archived listing cannot be asked for "since", so deletions reach the mirror with the
        periodic full listing (the mirror drops what a complete listing did not show).
        """
        since_ms = _parse_cursor(cursor)
        now_ms = int(time.time() * 1000)
        if since_ms is None:
            yield from self._full_listing(now_ms)
        else:
            yield from self._incremental(since_ms, now_ms)

    def _full_listing(self, started_ms: int) -> Iterator[SyncBatch]:
        portal = self.portal_id()
        after: str | None = None
        cursor = _make_cursor(started_ms - SYNC_OVERLAP_MS)
        while True:
            params = {"limit": str(LIST_PAGE), "properties": ",".join(self.properties), "archived": "false"}
            if after:
                params["after"] = after
            _, data = self._sync_request("GET", "/crm/v3/objects/contacts", params=params)
            contacts = self._sync_contacts(self._results(data), portal)
            after = _next_after(data)
            yield SyncBatch(
                contacts=contacts, cursor=cursor if after is None else None, complete=after is None
            )
            if after is None:
                return

    def _incremental(self, since_ms: int, started_ms: int) -> Iterator[SyncBatch]:
        portal = self.portal_id()
        window, newest, after = since_ms, since_ms, None
        # everything modified from a little before this sync is asked for again next time
        cursor = _make_cursor(max(since_ms, started_ms - SYNC_OVERLAP_MS))
        while True:
            body: dict[str, Any] = {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(window)}
                        ]
                    }
                ],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                "properties": self.properties,
                "limit": self.search_page,
            }
            if after:
                body["after"] = after
            _, data = self._sync_request("POST", "/crm/v3/objects/contacts/search", json=body, search=True)
            records = self._results(data)
            for record in records:
                moment = read_time((record.get("properties") or {}).get("lastmodifieddate"))
                if moment:
                    newest = max(newest, int(moment.timestamp() * 1000))
            contacts = self._sync_contacts(records, portal)
            after = _next_after(data)
            if after is not None and (
                not after.isdigit() or int(after) + self.search_page > self.search_result_cap
            ):
                # the search API pages no further: a new query starts from the newest time seen
                if newest <= window:
                    log.warning(
                        "%s: more than %d contacts share one modification time: listing everything",
                        self.where,
                        self.search_result_cap,
                    )
                    yield SyncBatch(contacts=contacts)
                    yield from self._full_listing(started_ms)
                    return
                window, after = newest, None
                yield SyncBatch(contacts=contacts)
                continue
            if after is None:
                yield SyncBatch(contacts=contacts, cursor=cursor)
                return
            yield SyncBatch(contacts=contacts)

    def _sync_contacts(self, records: list[dict[str, Any]], portal: str | None) -> list[Contact]:
        contacts = [c for c in (self._contact(r, portal) for r in records) if c is not None]
        if contacts and self.options["resolve_company"]:
            for start in range(0, len(contacts), 100):
                chunk = contacts[start : start + 100]
                self._with_retries(lambda chunk=chunk: self._attach_companies(chunk, portal, None))
        return contacts

    def _sync_request(self, method: str, path: str, search: bool = False, **kwargs: Any) -> tuple[int, Any]:
        if search:
            # a sync keeps under the search limit by itself rather than collecting 429s
            pause = 1.0 / (self.rate_per_second or SEARCH_RATE_PER_SECOND) - (
                time.monotonic() - self._last_search
            )
            if pause > 0:
                time.sleep(pause)
            self._last_search = time.monotonic()
        return self._with_retries(
            lambda: self._request(
                method, path, timeout=max(self.timeout_s, SYNC_TIMEOUT_S), search=search, **kwargs
            )
        )

    def _with_retries(self, action: Callable[[], Any]) -> Any:
        return self.with_retries(action, attempts=5, max_wait_s=30.0, quota=self._daily)

    # HTTP ------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        params: dict[str, str] | None = None,
        json: Any = None,
        search: bool = False,
    ) -> tuple[int, Any]:
        self._daily.check()
        what = f"{method} {path}"
        response = self.send(
            method, self.base_url + path, what=what, params=params, json=json, timeout=timeout, allow_redirects=False
        )
        remaining = response.headers.get("X-HubSpot-RateLimit-Daily-Remaining")
        if remaining is not None and remaining.strip().isdigit() and int(remaining) <= 0:
            self._block_until_midnight()
        status = response.status_code
        body = json_or_none(response)
        if status == 429:
            raise self._rate_limited(response, body, search)
        detail = body.get("category" if status == 401 else "message") if isinstance(body, dict) else None
        if status == 403:
            scopes = _required_scopes(body)
            detail = "the private app needs the scope " + " or ".join(scopes) if scopes else detail
        self.check_status(response, what, body=body, detail=detail or "")
        if body is None:
            raise BackendUnavailable(self.fail(f"{what} answered {status} without JSON"))
        return status, body

    def _results(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            raise BackendUnavailable(self.fail("the answer is not the expected document"))
        results = data.get("results")
        if results is None:
            return []
        if not isinstance(results, list):
            raise BackendUnavailable(self.fail("the answer's 'results' is not a list"))
        return [r for r in results if isinstance(r, dict)]

    def _block_until_midnight(self) -> float:
        return self._daily.exhaust(next_midnight(self._zone))

    def _rate_limited(self, response: Any, body: Any, search: bool) -> RateLimited:
        policy = body.get("policyName") if isinstance(body, dict) else None
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if policy == "DAILY":
            seconds = self._block_until_midnight()
            return RateLimited(self.fail("daily API limit reached"), retry_after=retry_after or seconds)
        if retry_after is None:
            retry_after = 1.0  # SECONDLY and TEN_SECONDLY_ROLLING windows free up within seconds
        what = "search" if search else "API"
        return RateLimited(self.fail(f"{what} rate limit reached ({policy or 'no policy named'})"), retry_after)

    def close(self) -> None:
        super().close()
        self._uncertain.close()


# helpers ---------------------------------------------------------------------------------------
def call_marker(key: str) -> str:
    """The reference written into a logged call: one search token (letters and digits only)."""
    return "pfcall" + hashlib.sha256(key.encode()).hexdigest()[:32]


def message_marker(key: str) -> str:
    """The reference written into a message record: one search token, as for calls."""
    return "pfmsg" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _message_object(message_log: MessageLog) -> str:
    """HubSpot's communications have an SMS channel but none for voicemail or fax: those are notes."""
    return "communications" if message_log.kind == "SMS" else "notes"


def message_html(message_log: MessageLog) -> str:
    """The record's body: the title, the participants, one line per message, the recording or the
    document as a link, and the reference. HubSpot shows these bodies as HTML; when a day's digest
    would pass the length limit, its earliest lines are left out (the count is said)."""
    title = f"<p><strong>{html.escape(message_log.title)}</strong></p>"
    head = ""
    if message_log.participants:
        head = f"<p>Participants: {html.escape(', '.join(message_log.participants))}</p>"
    link = ""
    if message_log.link and message_log.kind != "SMS":
        label = "Recording" if message_log.kind == "Voicemail" else "Document"
        href = html.escape(message_log.link, quote=True)
        link = f'<p>{label}: <a href="{href}">{href}</a></p>'
    tail = f"<p>Logged by the phone lookup service. Message log reference: {message_marker(message_log.key)}</p>"
    lines = [html.escape(line) for line in message_log.lines()]
    room = RECORD_TEXT_MAX - len(title) - len(head) - len(link) - len(tail) - 100
    left_out = 0
    while len(lines) > 1 and sum(len(line) + 4 for line in lines) > room:
        lines.pop(0)
        left_out += 1
    if left_out:
        lines.insert(0, f"({left_out} earlier messages left out)")
    text = "<p>" + "<br>".join(lines) + "</p>"
    return (title + head + text + link + tail)[:RECORD_TEXT_MAX]


def _association(contact_id: str, type_id: int) -> list[dict[str, Any]]:
    return [{"to": {"id": str(contact_id).strip()},
             "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]


def _next_after(data: Any) -> str | None:
    paging = data.get("paging") if isinstance(data, dict) else None
    after = ((paging or {}).get("next") or {}).get("after") if isinstance(paging, dict) else None
    return str(after) if after not in (None, "") else None


def _is_primary(target: dict[str, Any]) -> bool:
    for kind in target.get("associationTypes") or []:
        if not isinstance(kind, dict):
            continue
        if kind.get("typeId") == PRIMARY_COMPANY_TYPE_ID and kind.get("category") == "HUBSPOT_DEFINED":
            return True
    return False


def _call_moment(call: CallRecord) -> datetime:
    """The call's ``hs_timestamp``: when it started (or the first time known)."""
    return call.started or call.answered or call.ended or call.declined or datetime.now(UTC)


def _iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _e164(raw: str | None, region: str) -> str | None:
    text = scalar(raw)
    if text is None:
        return None
    try:
        parsed = parse_number(text, region)
    except ValueError:
        return text
    return parsed.e164 or text


def _required_scopes(body: Any) -> list[str]:
    scopes: list[str] = []
    if isinstance(body, dict):
        for error in body.get("errors") or []:
            context = error.get("context") if isinstance(error, dict) else None
            if isinstance(context, dict):
                for key in ("requiredGranularScopes", "requiredScopes"):
                    scopes += [str(s) for s in context.get(key) or []]
    return list(dict.fromkeys(scopes))


def _make_cursor(since_ms: int) -> str:
    return str(since_ms)


def _parse_cursor(cursor: str | None) -> int | None:
    """``"<modified since, ms>"`` (a ``:<ms>`` suffix, once the last full listing, is ignored);
    anything else means a full listing."""
    if not cursor:
        return None
    match = re.fullmatch(r"(\d{1,15})(?::\d{1,15})?", cursor.strip())
    if not match:
        log.warning("HubSpot mirror cursor %r not understood: listing everything", mask(cursor))
        return None
    return int(match.group(1))
