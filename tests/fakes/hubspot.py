"""A fake HubSpot API: a real HTTP server on 127.0.0.1 answering the documented requests the
``hubspot`` backend makes, with HubSpot's response and error shapes.

It is strict on purpose: a wrong token, a missing or unknown body key, an operator HubSpot does not
have, too many filter groups or filters, a page beyond the 10,000th search result, or any path the
backend should not use gets HubSpot's error document (``{"status": "error", "message": ...,
"correlationId": ..., "category": ...}``) with 400/401/404. Search requests are limited to
``search_rate`` a second per token and answered with HubSpot's 429 body beyond it.

Each endpoint's comment names the page of developers.hubspot.com it follows. Test helpers:
:meth:`FakeHubSpot.add_contact`, :meth:`add_company`, :meth:`associate`, :meth:`fail_next`,
:meth:`hang_next`, :meth:`lose_next` (the request is carried out, its answer lost), :meth:`revoke_token`,
:meth:`add_owner` (the owners API's users); the engagements it keeps: ``calls``, ``communications``, ``notes``
(created, read, searched and updated with PATCH, each per its page, see ``ENGAGEMENTS``);
``daily_remaining``, ``index_lag`` (seconds before a new call shows in the calls search),
``unique_call_properties`` (custom call properties created with ``hasUniqueValue``); ``requests``
records every request.
"""

from __future__ import annotations

import fnmatch
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import phonenumbers

TOKEN = "pat-eu1-11111111-2222-3333-4444-555555555555"
PORTAL_ID = 26517743

OPERATORS = {
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_SEARCH_LIMIT = 200
LIST_MAX_LIMIT = 100
BATCH_MAX_INPUTS = 100
DATETIME_PROPERTIES = {
    "createdate",
    "lastmodifieddate",
    "notes_last_updated",
    "hs_last_sales_activity_timestamp",
    "hs_timestamp",
}
DEFAULT_CONTACT_PROPERTIES = [
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
]
CALL_STATUSES = {
    "BUSY",
    "CALLING_CRM_USER",
    "CANCELED",
    "COMPLETED",
    "CONNECTING",
    "FAILED",
    "IN_PROGRESS",
    "NO_ANSWER",
    "QUEUED",
    "RINGING",
}
CALL_TO_CONTACT = 194
COMMUNICATION_TO_CONTACT = 81
NOTE_TO_CONTACT = 202
OWNERS_MAX_LIMIT = 500
NOTE_BODY_MAX = 65_536
# Set by HubSpot itself: a create or an update naming one is refused (READ_ONLY_VALUE).
READ_ONLY_PROPERTIES = frozenset({"hs_object_id", "hs_createdate", "hs_lastmodifieddate", "createdate",
                                  "lastmodifieddate", "hs_created_by", "hs_modified_by", "hs_engagement_source"})


@dataclass(frozen=True)
class EngagementKind:
    """One engagement object as its page of developers.hubspot.com describes it: the association
    type to contacts, the properties it has, the values its enumerations take, what a create needs."""

    association: int
    properties: frozenset[str]
    enums: dict[str, frozenset[str]]
    required: tuple[str, ...] = ("hs_timestamp",)
    numbers: frozenset[str] = frozenset()
    max_lengths: dict[str, int] = field(default_factory=dict)


ENGAGEMENTS: dict[str, EngagementKind] = {
    # /docs/api/crm/calls ("Properties")
    "calls": EngagementKind(
        association=CALL_TO_CONTACT,
        properties=frozenset({"hs_timestamp", "hs_call_title", "hs_call_body", "hs_call_direction",
                              "hs_call_status", "hs_call_duration", "hs_call_from_number", "hs_call_to_number",
                              "hs_call_recording_url", "hs_call_disposition", "hs_call_callee_object_id",
                              "hs_call_callee_object_type", "hubspot_owner_id"}),
        enums={"hs_call_direction": frozenset({"INBOUND", "OUTBOUND"}), "hs_call_status": frozenset(CALL_STATUSES)},
        numbers=frozenset({"hs_call_duration"}),
    ),
    # /docs/api/crm/communications ("Properties"): the channel is WHATS_APP, LINKEDIN_MESSAGE or SMS,
    # hs_communication_logged_from "must be set to CRM"
    "communications": EngagementKind(
        association=COMMUNICATION_TO_CONTACT,
        properties=frozenset({"hs_timestamp", "hs_communication_channel_type", "hs_communication_logged_from",
                              "hs_communication_body", "hubspot_owner_id"}),
        enums={"hs_communication_channel_type": frozenset({"WHATS_APP", "LINKEDIN_MESSAGE", "SMS"}),
               "hs_communication_logged_from": frozenset({"CRM"})},
        required=("hs_communication_channel_type", "hs_communication_logged_from"),
    ),
    # /docs/api/crm/notes ("Properties"): hs_timestamp required, hs_note_body at most 65,536 characters
    "notes": EngagementKind(
        association=NOTE_TO_CONTACT,
        properties=frozenset({"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"}),
        enums={},
        max_lengths={"hs_note_body": NOTE_BODY_MAX},
    ),
}
UNAUTHENTICATED = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    status: int
    retry_after: str | None = None
    body: Any = None
    path: str | None = None
    hang: float = 0.0


@dataclass
class _Record:
    id: str
    properties: dict[str, str]
    created: str
    updated: str
    archived: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        }


def iso_ms(moment: datetime | None = None) -> str:
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_ms(value: Any) -> int | None:
    """HubSpot accepts datetimes as epoch milliseconds or ISO 8601."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class FakeHubSpot:
    def __init__(
        self,
        token: str = TOKEN,
        portal_id: int = PORTAL_ID,
        ui_domain: str = "app-eu1.hubspot.com",
        time_zone: str = "Europe/Zurich",
        default_country: str = "CH",
        search_rate: float | None = 4,
    ):
        self.token = token
        self.portal_id = portal_id
        self.ui_domain = ui_domain
        self.time_zone = time_zone
        self.default_country = default_country
        self.default_search_rate = search_rate
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self._release = threading.Event()
        self.reset()

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeHubSpot:
        fake = self

        class Handler(_Handler):
            owner = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hubspot", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FakeHubSpot:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        """Forget every record, failure, request and rate-limit window (between tests)."""
        with self.lock:
            self._release.set()
            self._release = threading.Event()
            self.contacts: dict[str, _Record] = {}
            self.companies: dict[str, _Record] = {}
            self.engagements: dict[str, dict[str, _Record]] = {kind: {} for kind in ENGAGEMENTS}
            self.calls = self.engagements["calls"]
            self.communications = self.engagements["communications"]
            self.notes = self.engagements["notes"]
            self.owners: dict[str, dict[str, Any]] = {}
            self.associations: dict[str, list[tuple[str, bool]]] = {}  # contact -> [(company, primary)]
            self.requests: list[Recorded] = []
            self.failures: deque[_Failure] = deque()
            self.revoked = False
            self.daily_remaining: int | None = None
            self.daily_limit = 250_000
            self.search_rate: float | None = self.default_search_rate
            self.max_search_results = 10_000
            self._search_times: deque[float] = deque()
            self._next_id = 1001
            self._indexes: dict[str, dict[Any, set[str]]] = {}
            self.lost: deque[tuple[str | None, float]] = deque()
            self.index_lag = 0.0
            self.unique_call_properties: set[str] = set()
            self.unindexed_properties: set[str] = set()  # filters on these never match (not searchable)

    # test helpers ------------------------------------------------------------------------------
    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_contact(
        self, contact_id: str | None = None, modified: datetime | None = None, **props: Any
    ) -> str:
        with self.lock:
            contact_id = contact_id or self._new_id()
            stamp = iso_ms(modified)
            values = {k: str(v) for k, v in props.items() if v is not None}
            record = _Record(contact_id, values, stamp, stamp)
            self._finish_contact(record)
            self.contacts[contact_id] = record
            return contact_id

    def update_contact(self, contact_id: str, modified: datetime | None = None, **props: Any) -> None:
        with self.lock:
            record = self.contacts[contact_id]
            for key, value in props.items():
                if value is None:
                    record.properties.pop(key, None)
                else:
                    record.properties[key] = str(value)
            record.updated = iso_ms(modified)
            self._finish_contact(record)

    def archive_contact(self, contact_id: str) -> None:
        with self.lock:
            self.contacts[contact_id].archived = True
            self._indexes.clear()

    def add_company(self, name: str, company_id: str | None = None, **props: Any) -> str:
        with self.lock:
            company_id = company_id or self._new_id()
            stamp = iso_ms()
            values = {"name": name, **{k: str(v) for k, v in props.items()}}
            values.update(hs_object_id=company_id, createdate=stamp, hs_lastmodifieddate=stamp)
            self.companies[company_id] = _Record(company_id, values, stamp, stamp)
            return company_id

    def associate(self, contact_id: str, company_id: str, primary: bool = False) -> None:
        with self.lock:
            links = self.associations.setdefault(contact_id, [])
            if primary:
                links[:] = [(c, False) for c, _ in links]
            links.append((company_id, primary))

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: str | None = None,
        body: Any = None,
        path: str | None = None,
    ) -> None:
        """The next ``times`` requests (to ``path`` when given) answer ``status``."""
        with self.lock:
            for _ in range(times):
                self.failures.append(_Failure(status, retry_after, body, path))

    def hang_next(self, seconds: float, times: int = 1, path: str | None = None) -> None:
        """The next requests (to ``path`` when given) wait ``seconds`` before answering normally;
        reset/stop releases them."""
        with self.lock:
            for _ in range(times):
                self.failures.append(_Failure(0, path=path, hang=seconds))

    def lose_next(self, times: int = 1, path: str | None = None, delay: float = 0.0) -> None:
        """The next ``times`` requests (to ``path`` when given) are carried out, then their answer is
        lost: the connection is closed without a response, or (``delay``) the answer leaves only
        after ``delay`` seconds, when the client has given up."""
        with self.lock:
            for _ in range(times):
                self.lost.append((path, delay))

    def take_lost(self, raw_path: str) -> tuple[bool, float]:
        path = urlsplit(raw_path).path
        with self.lock:
            for index, (wanted, delay) in enumerate(self.lost):
                if wanted is None or wanted == path:
                    del self.lost[index]
                    return True, delay
        return False, 0.0

    def wait(self, seconds: float) -> None:
        self._release.wait(seconds)

    def revoke_token(self) -> None:
        self.revoked = True

    def recorded(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    # HubSpot's calculated phone properties ----------------------------------------------------
    def _finish_contact(self, record: _Record) -> None:
        self._indexes.clear()
        props = record.properties
        props["hs_object_id"] = record.id
        props["createdate"] = record.created
        props["lastmodifieddate"] = record.updated
        for source, target in (
            ("phone", "hs_searchable_calculated_phone_number"),
            ("mobilephone", "hs_searchable_calculated_mobile_number"),
        ):
            calculated = self.searchable_number(props.get(source))
            if calculated:
                props[target] = calculated
            else:
                props.pop(target, None)

    def searchable_number(self, raw: str | None) -> str | None:
        """The number without country code, trunk prefix or formatting, as HubSpot calculates it:
        read with the portal's country when written nationally; leading zeros dropped otherwise."""
        if not raw or not raw.strip():
            return None
        text = raw.strip()
        main = re.split(r"(?i)\s*(?:ext\.?|x|#)\s*\d+\s*$", text)[0]
        digits = re.sub(r"\D", "", main)
        if not digits:
            return None
        candidate = "+" + digits[2:] if digits.startswith("00") else main
        try:
            parsed = phonenumbers.parse(candidate, self.default_country)
            if phonenumbers.is_possible_number(parsed):
                return phonenumbers.national_significant_number(parsed)
        except phonenumbers.NumberParseException:
            pass
        return digits.lstrip("0") or None

    # request handling ---------------------------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict, Any]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        body: Any = None
        body_error = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body_error = _ApiError(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        with self.lock:
            self.requests.append(Recorded(method, path, query, headers, body))
            failure = self._take_failure(path)
        if failure is not None and failure.hang:
            self._release.wait(failure.hang)
            failure = None
        response_headers: dict[str, str] = {}
        try:
            if headers.get("authorization") != f"Bearer {self.token}" or self.revoked:
                raise _ApiError(401, UNAUTHENTICATED, "INVALID_AUTHENTICATION")
            with self.lock:
                if self.daily_remaining is not None:
                    response_headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
                    if self.daily_remaining <= 0:
                        response_headers["X-HubSpot-RateLimit-Daily-Remaining"] = "0"
                        raise _ApiError(
                            429,
                            "You have reached your daily limit.",
                            "RATE_LIMITS",
                            errorType="RATE_LIMIT",
                            policyName="DAILY",
                        )
                    self.daily_remaining -= 1
                    response_headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(self.daily_remaining)
            if failure is not None:
                if failure.retry_after is not None:
                    response_headers["Retry-After"] = failure.retry_after
                body_out = failure.body
                if body_out is None and failure.status == 429:
                    body_out = self._secondly_limit_body()
                elif body_out is None:
                    body_out = {
                        "status": "error",
                        "message": "internal error",
                        "correlationId": str(uuid.uuid4()),
                    }
                return failure.status, response_headers, body_out
            if body_error is not None:
                raise body_error
            status, payload = self._route(method, path, query, body)
            return status, response_headers, payload
        except _ApiError as exc:
            return exc.status, response_headers, exc.body

    def _take_failure(self, path: str) -> _Failure | None:
        for index, failure in enumerate(self.failures):
            if failure.path is None or failure.path == path:
                del self.failures[index]
                return failure
        return None

    @staticmethod
    def _secondly_limit_body() -> dict[str, Any]:
        return {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": "SECONDLY",
        }

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/account-info/v3/details":
            return 200, self._account_details()
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            return 200, self._search(body)
        if method == "GET" and path == "/crm/v3/objects/contacts":
            return 200, self._list_contacts(query)
        match = re.fullmatch(r"/crm/v3/objects/contacts/(\d+)", path)
        if method == "GET" and match:
            return 200, self._get_contact(match.group(1), query)
        if method == "POST" and path == "/crm/v4/associations/contacts/companies/batch/read":
            return self._association_batch(body)
        if method == "POST" and path == "/crm/v3/objects/companies/batch/read":
            return self._company_batch(body)
        if method == "POST" and path == "/crm/v3/objects/contacts":
            return 201, self._create_contact(body)
        if method == "GET" and path == "/crm/v3/owners":
            return 200, self._list_owners(query)
        match = re.fullmatch(r"/crm/v3/objects/(calls|communications|notes)(?:/([^/]+))?", path)
        if match and match.group(2) == "search" and method == "POST":
            return 200, self._search(body, match.group(1))
        if match and match.group(2) is None and method == "POST":
            return 201, self._create_engagement(match.group(1), body)
        if match and match.group(2) is not None and method == "GET":
            return 200, self._get_engagement(match.group(1), match.group(2), query)
        if match and match.group(2) is not None and method == "PATCH":
            return 200, self._update_engagement(match.group(1), match.group(2), query, body)
        raise _ApiError(404, f"Unable to route {method} request with path {path}", "OBJECT_NOT_FOUND")

    # GET /account-info/v3/details
    # developers.hubspot.com/docs/api/settings/account-information-api ("Account details").
    def _account_details(self) -> dict[str, Any]:
        return {
            "portalId": self.portal_id,
            "accountType": "STANDARD",
            "timeZone": self.time_zone,
            "companyCurrency": "CHF",
            "additionalCurrencies": [],
            "utcOffset": "+01:00",
            "utcOffsetMilliseconds": 3_600_000,
            "uiDomain": self.ui_domain,
            "dataHostingLocation": "eu1",
        }

    # POST /crm/v3/objects/contacts/search
    # developers.hubspot.com/docs/api/crm/search: filterGroups ORed, filters ANDed; operators EQ,
    # NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN,
    # NOT_CONTAINS_TOKEN; at most 5 groups of at most 6 filters, 18 in all; one sort; `limit` up to
    # 200; paging with `after`, never beyond the 10,000th result; 4 search requests a second.
    # The calls search (POST /crm/v3/objects/calls/search) takes the same body; the engagement
    # search endpoints are listed on the same page. New records reach the search index after a
    # delay (`index_lag`), as HubSpot's do.
    def _search(self, body: Any, kind: str = "contacts") -> dict[str, Any]:
        self._search_rate_check()
        if not isinstance(body, dict):
            raise _ApiError(400, "Invalid input JSON: a search request body is a JSON object")
        unknown = set(body) - {"filterGroups", "sorts", "query", "properties", "limit", "after"}
        if unknown:
            raise _ApiError(400, f"Invalid input JSON: unrecognized field(s) {sorted(unknown)}")
        if "query" in body:
            raise _ApiError(400, "this fake does not implement the full-text `query`", "VALIDATION_ERROR")
        groups = body.get("filterGroups", [])
        self._check_groups(groups)
        sorts = body.get("sorts", [])
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise _ApiError(400, "There can only be one sort per search request")
        for sort in sorts:
            if (
                not isinstance(sort, dict)
                or not isinstance(sort.get("propertyName"), str)
                or sort.get("direction", "ASCENDING") not in ("ASCENDING", "DESCENDING")
            ):
                raise _ApiError(400, f"Invalid sort {sort!r}")
        properties = body.get("properties", DEFAULT_CONTACT_PROPERTIES)
        if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
            raise _ApiError(400, "`properties` must be a list of property names")
        limit = body.get("limit", 10)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise _ApiError(400, f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
        after = body.get("after", "0")
        if not re.fullmatch(r"\d+", str(after)):
            raise _ApiError(400, f"Invalid after {after!r}")
        offset = int(after)
        if offset >= self.max_search_results:
            raise _ApiError(
                400,
                f"The requested page is beyond the first {self.max_search_results} results",
                "VALIDATION_ERROR",
            )
        with self.lock:
            if kind in ENGAGEMENTS:
                horizon = time.monotonic() - self.index_lag
                pool = [r for r in self.engagements[kind].values()
                        if r.extra.get("indexed_at", 0.0) <= horizon and not r.archived]
            else:
                pool = self._candidates(groups)
        found = [r for r in pool if not groups or any(self._group_matches(r, g) for g in groups)]
        found.sort(key=lambda r: int(r.id))
        for sort in sorts:
            name = sort["propertyName"]
            found.sort(
                key=lambda r, name=name: _sort_key(name, r.properties.get(name)),
                reverse=sort.get("direction") == "DESCENDING",
            )
        page = found[offset : offset + limit]
        result: dict[str, Any] = {
            "total": len(found),
            "results": [self._public(r, properties, defaults=True) for r in page],
        }
        if offset + limit < len(found):
            result["paging"] = {"next": {"after": str(offset + limit)}}
        return result

    def _search_rate_check(self) -> None:
        if self.search_rate is None:
            return
        with self.lock:
            now = time.monotonic()
            while self._search_times and now - self._search_times[0] >= 1.0:
                self._search_times.popleft()
            if len(self._search_times) >= self.search_rate:
                body = self._secondly_limit_body()
                raise _ApiError(429, body["message"], errorType="RATE_LIMIT", policyName="SECONDLY")
            self._search_times.append(now)

    @staticmethod
    def _check_groups(groups: Any) -> None:
        if not isinstance(groups, list):
            raise _ApiError(400, "filterGroups must be a list")
        if len(groups) > MAX_FILTER_GROUPS:
            raise _ApiError(400, f"Too many filter groups: at most {MAX_FILTER_GROUPS} are allowed")
        total = 0
        for group in groups:
            if (
                not isinstance(group, dict)
                or set(group) != {"filters"}
                or not isinstance(group["filters"], list)
            ):
                raise _ApiError(400, "Each filter group is an object with a `filters` list")
            filters = group["filters"]
            if not filters or len(filters) > MAX_FILTERS_PER_GROUP:
                raise _ApiError(400, f"A filter group holds 1 to {MAX_FILTERS_PER_GROUP} filters")
            total += len(filters)
            for item in filters:
                _check_filter(item)
        if total > MAX_FILTERS:
            raise _ApiError(400, f"Too many filters: at most {MAX_FILTERS} in all")

    def _candidates(self, groups: list[dict[str, Any]]) -> list[_Record]:
        """Live contacts that may match: from an index on the EQ/IN filters when every group has
        one (the full scan is too slow for the benchmark's thousands of contacts), else all."""
        ids: set[str] = set()
        for group in groups:
            indexed = next(
                (
                    f
                    for f in group["filters"]
                    if f["operator"] in ("EQ", "IN") and f["propertyName"] not in DATETIME_PROPERTIES
                ),
                None,
            )
            if indexed is None:
                ids = set()
                break
            name = indexed["propertyName"]
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = {}
                for record in self.contacts.values():
                    if record.properties.get(name) not in (None, ""):
                        index.setdefault(_compare_value(name, record.properties[name]), set()).add(record.id)
            for value in indexed.get("values") or [indexed.get("value")]:
                ids |= index.get(_compare_value(name, value), set())
        else:
            if groups:
                return [self.contacts[i] for i in sorted(ids, key=int) if not self.contacts[i].archived]
        return [r for r in self.contacts.values() if not r.archived]

    def _group_matches(self, record: _Record, group: dict[str, Any]) -> bool:
        # `associations.contact` (search page, "Filter search results by associations"): the
        # record is associated with that contact; one view of the properties per association
        views = [
            {**record.properties, "associations.contact": contact} for contact in record.extra.get("contacts", [])
        ] or [record.properties]
        if any(f["propertyName"] in self.unindexed_properties for f in group["filters"]):
            return False
        return any(all(_filter_matches(view, f) for f in group["filters"]) for view in views)

    def _public(self, record: _Record, properties: list[str], defaults: bool) -> dict[str, Any]:
        wanted = list(dict.fromkeys([*properties, "hs_object_id", "createdate", "lastmodifieddate"]))
        if not defaults:
            wanted = list(dict.fromkeys([*properties, "hs_object_id"]))
        return {
            "id": record.id,
            "properties": {name: record.properties.get(name) for name in wanted},
            "createdAt": record.created,
            "updatedAt": record.updated,
            "archived": record.archived,
        }

    # GET /crm/v3/objects/contacts?limit=&after=&properties=&archived=
    # developers.hubspot.com/docs/api/crm/contacts ("Retrieve contacts"): pages of at most 100 with
    # `paging.next.after`; `archived=true` lists archived contacts only.
    def _list_contacts(self, query: dict[str, list[str]]) -> dict[str, Any]:
        allowed = {"limit", "after", "properties", "propertiesWithHistory", "associations", "archived"}
        unknown = set(query) - allowed
        if unknown:
            raise _ApiError(400, f"Unknown query parameter(s) {sorted(unknown)}")
        limit_text = query.get("limit", ["10"])[-1]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= LIST_MAX_LIMIT:
            raise _ApiError(400, f"limit must be between 1 and {LIST_MAX_LIMIT}")
        limit = int(limit_text)
        after = query.get("after", ["0"])[-1]
        if not after.isdigit():
            raise _ApiError(400, f"Invalid after {after!r}")
        archived = query.get("archived", ["false"])[-1]
        if archived not in ("true", "false"):
            raise _ApiError(400, "archived must be true or false")
        properties = [p for value in query.get("properties", []) for p in value.split(",") if p]
        with self.lock:
            rows = sorted(
                (
                    r
                    for r in self.contacts.values()
                    if r.archived == (archived == "true") and int(r.id) >= int(after)
                ),
                key=lambda r: int(r.id),
            )
        page, rest = rows[:limit], rows[limit:]
        result: dict[str, Any] = {"results": [self._public(r, properties, defaults=False) for r in page]}
        if rest:
            result["paging"] = {"next": {"after": rest[0].id, "link": f"?after={rest[0].id}"}}
        return result

    # GET /crm/v3/objects/contacts/{contactId}
    # developers.hubspot.com/docs/api/crm/contacts ("Retrieve a contact"); 404 when unknown.
    def _get_contact(self, contact_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        with self.lock:
            record = self.contacts.get(contact_id)
        if record is None or record.archived:
            raise _ApiError(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        properties = [p for value in query.get("properties", []) for p in value.split(",") if p]
        return self._public(record, properties, defaults=False)

    # POST /crm/v4/associations/contacts/companies/batch/read   body {"inputs": [{"id": ...}]}
    # developers.hubspot.com/docs/api/crm/associations (v4, "Retrieve associated records"): each
    # result lists `toObjectId` with `associationTypes` ({category, typeId, label}); the contact's
    # primary company has typeId 1 (HUBSPOT_DEFINED, label "Primary"), any company typeId 279.
    # Inputs without associations come back as errors in a 207 Multi-Status answer.
    def _association_batch(self, body: Any) -> tuple[int, Any]:
        inputs = _batch_inputs(body, {"inputs"})
        started = iso_ms()
        results, missing = [], []
        with self.lock:
            for contact_id in inputs:
                links = self.associations.get(contact_id) if contact_id in self.contacts else None
                if not links:
                    missing.append(contact_id)
                    continue
                targets = []
                for company_id, primary in links:
                    types = [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": None}]
                    if primary:
                        types.insert(0, {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"})
                    targets.append({"toObjectId": int(company_id), "associationTypes": types})
                results.append({"from": {"id": contact_id}, "to": targets})
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso_ms(),
        }
        if missing:
            answer["numErrors"] = len(missing)
            answer["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "context": {"fromObjectId": [contact_id]},
                    "message": f"No company is associated with contact {contact_id}.",
                }
                for contact_id in missing
            ]
            return 207, answer
        return 200, answer

    # POST /crm/v3/objects/companies/batch/read   body {"properties": [...], "inputs": [{"id": ...}]}
    # developers.hubspot.com/docs/api/crm/companies ("Retrieve a batch of companies"); unknown ids
    # are reported as errors in a 207 answer.
    def _company_batch(self, body: Any) -> tuple[int, Any]:
        inputs = _batch_inputs(body, {"inputs", "properties", "propertiesWithHistory", "idProperty"})
        if "properties" not in body or not isinstance(body["properties"], list):
            raise _ApiError(400, "`properties` (a list) is required")
        started = iso_ms()
        with self.lock:
            found = [self.companies[i] for i in inputs if i in self.companies]
        missing = [i for i in inputs if i not in self.companies]
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": [self._public(r, body["properties"], defaults=False) for r in found],
            "startedAt": started,
            "completedAt": iso_ms(),
        }
        if missing:
            answer["numErrors"] = 1
            answer["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some COMPANY objects, they may be deleted or not exist.",
                    "context": {"ids": missing},
                }
            ]
            return 207, answer
        return 200, answer

    # POST /crm/v3/objects/calls   body {"properties": {...}, "associations": [...]}
    # developers.hubspot.com/docs/api/crm/calls: hs_timestamp required (epoch ms or ISO 8601);
    # hs_call_direction INBOUND/OUTBOUND; hs_call_status BUSY, CALLING_CRM_USER, CANCELED,
    # COMPLETED, CONNECTING, FAILED, IN_PROGRESS, NO_ANSWER, QUEUED, RINGING; hs_call_duration in
    # milliseconds; associations [{"to": {"id"}, "types": [{"associationCategory":
    # "HUBSPOT_DEFINED", "associationTypeId": 194}]}] (194: call to contact). Answers 201.
    # POST /crm/v3/objects/contacts
    # developers.hubspot.com/docs/api/crm/contacts ("Create contacts"): a `properties` object (and
    # optional `associations`); at least one of email, firstname, lastname; email is the unique key,
    # a second contact with the same email is refused (409 CONFLICT, "Existing ID: ...").
    CONTACT_PROPERTIES = frozenset({"email", "firstname", "lastname", "phone", "mobilephone", "company", "jobtitle",
                                    "lifecyclestage", "hubspot_owner_id"})

    def _create_contact(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - {"properties", "associations"}:
            raise _ApiError(400, "Invalid input JSON: expected {properties, associations}")
        props = body.get("properties")
        if not isinstance(props, dict):
            raise _ApiError(400, "`properties` is required")
        for key, value in props.items():
            if key not in self.CONTACT_PROPERTIES:
                raise _ApiError(400, f'Property "{key}" does not exist', "VALIDATION_ERROR",
                                errors=[{"code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [key]}}])
            if not isinstance(value, str):
                raise _ApiError(400, f"Property values are strings: {key!r}")
        if not any(props.get(name) for name in ("email", "firstname", "lastname")):
            raise _ApiError(400, "A contact needs at least one of email, firstname, lastname")
        with self.lock:
            email = (props.get("email") or "").lower()
            clash = next((r for r in self.contacts.values() if email and r.properties.get("email", "").lower() == email
                          and not r.archived), None)
            if clash is not None:
                raise _ApiError(409, f"Contact already exists. Existing ID: {clash.id}", "CONFLICT")
            contact_id = self._new_id()
            stamp = iso_ms()
            record = _Record(contact_id, {k: v for k, v in props.items() if v}, stamp, stamp)
            self._finish_contact(record)
            self.contacts[contact_id] = record
        return {"id": contact_id, "properties": dict(record.properties), "createdAt": stamp, "updatedAt": stamp,
                "archived": False}

    def add_owner(self, first_name: str, last_name: str, email: str, owner_id: str | None = None,
                  archived: bool = False) -> str:
        with self.lock:
            owner_id = owner_id or self._new_id()
            stamp = iso_ms()
            self.owners[owner_id] = {
                "id": owner_id, "email": email, "type": "PERSON", "firstName": first_name, "lastName": last_name,
                "userId": int(owner_id) + 7, "userIdIncludingInactive": int(owner_id) + 7, "createdAt": stamp,
                "updatedAt": stamp, "archived": archived, "teams": [],
            }
            return owner_id

    # GET /crm/v3/owners?limit=&after=&email=&archived=
    # developers.hubspot.com/docs/api/crm/owners ("Retrieve a list of owners"): `id` is the owner id
    # records take in hubspot_owner_id (`userId` is not); pages of at most 500 with paging.next.after.
    def _list_owners(self, query: dict[str, list[str]]) -> dict[str, Any]:
        unknown = set(query) - {"limit", "after", "email", "archived"}
        if unknown:
            raise _ApiError(400, f"Unknown query parameter(s) {sorted(unknown)}")
        limit_text = query.get("limit", ["100"])[-1]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= OWNERS_MAX_LIMIT:
            raise _ApiError(400, f"limit must be between 1 and {OWNERS_MAX_LIMIT}")
        after = query.get("after", ["0"])[-1]
        if not after.isdigit():
            raise _ApiError(400, f"Invalid after {after!r}")
        archived = query.get("archived", ["false"])[-1] == "true"
        email = query.get("email", [None])[-1]
        with self.lock:
            rows = sorted((o for o in self.owners.values() if o["archived"] == archived and int(o["id"]) >= int(after)
                           and (email is None or o["email"] == email)), key=lambda o: int(o["id"]))
        page, rest = rows[: int(limit_text)], rows[int(limit_text):]
        result: dict[str, Any] = {"results": [dict(o) for o in page]}
        if rest:
            result["paging"] = {"next": {"after": rest[0]["id"], "link": f"?after={rest[0]['id']}"}}
        return result

    def _check_properties(self, kind: str, props: Any, creating: bool) -> dict[str, str]:
        """A create's or an update's `properties`, refused the way HubSpot refuses them: an unknown
        property (PROPERTY_DOESNT_EXIST), a read-only one (READ_ONLY_VALUE), a value that is not a
        string or number, an enumeration value it does not have, an owner id that is no owner."""
        spec = ENGAGEMENTS[kind]
        if not isinstance(props, dict):
            raise _ApiError(400, "`properties` is required")
        for key, value in props.items():
            if key in READ_ONLY_PROPERTIES:
                raise _ApiError(400, f"Property values were not valid: {key} is a read only property; its value "
                                "cannot be set.", "VALIDATION_ERROR",
                                errors=[{"code": "READ_ONLY_VALUE", "context": {"propertyName": [key]}}])
            custom = kind == "calls" and key in self.unique_call_properties
            if key not in spec.properties and not custom:
                raise _ApiError(400, f'Property "{key}" does not exist', "VALIDATION_ERROR",
                                errors=[{"code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [key]}}])
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise _ApiError(400, f"Property values are strings or numbers: {key!r}")
            text = str(value)
            if text == "" and not creating:
                continue  # an update clears a property with an empty string
            allowed = spec.enums.get(key)
            if allowed is not None and text not in allowed:
                raise _ApiError(400, f"{text!r} is not a valid option for {key}")
            if key in spec.numbers and not re.fullmatch(r"\d+", text):
                raise _ApiError(400, f"{key} is a number ({text!r})")
            if key == "hs_timestamp" and to_ms(text) is None:
                raise _ApiError(400, "hs_timestamp is epoch milliseconds or ISO 8601")
            if len(text) > spec.max_lengths.get(key, 1 << 20):
                raise _ApiError(400, f"{key} is longer than {spec.max_lengths[key]} characters")
            if key == "hubspot_owner_id" and text not in self.owners:
                raise _ApiError(400, f"Property values were not valid: {text!r} is not a valid owner id",
                                "VALIDATION_ERROR", errors=[{"code": "INVALID_OWNER_ID",
                                                             "context": {"propertyName": [key]}}])
        if creating:
            for name in spec.required:
                if name not in props:
                    raise _ApiError(400, f"Property {name} is required", "VALIDATION_ERROR")
        return {k: str(v) for k, v in props.items()}

    # POST /crm/v3/objects/{calls|communications|notes}   body {"properties": {...}, "associations": [...]}
    # developers.hubspot.com/docs/api/crm/calls, /docs/api/crm/communications, /docs/api/crm/notes
    # ("Create ..."): properties as in ENGAGEMENTS; associations [{"to": {"id"}, "types":
    # [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194 | 81 | 202}]}] (call,
    # communication, note to contact; the association API's list of default type ids). Answers 201.
    def _create_engagement(self, kind: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - {"properties", "associations"}:
            raise _ApiError(400, "Invalid input JSON: expected {properties, associations}")
        props = self._check_properties(kind, body.get("properties"), creating=True)
        with self.lock:
            for name in self.unique_call_properties & set(props) if kind == "calls" else ():
                clash = next((r for r in self.calls.values() if r.properties.get(name) == props[name]), None)
                if clash is not None:
                    # an assumption: HubSpot refuses a second record with a unique property's value
                    raise _ApiError(409, f"A call with {name} {props[name]!r} already exists. Existing ID: {clash.id}",
                                    "CONFLICT")
        association = ENGAGEMENTS[kind].association
        associations = body.get("associations", [])
        if not isinstance(associations, list):
            raise _ApiError(400, "`associations` must be a list")
        contact_ids = []
        for item in associations:
            target = item.get("to") if isinstance(item, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            if not isinstance(target, dict) or "id" not in target or not isinstance(types, list) or not types:
                raise _ApiError(400, "Each association needs `to.id` and `types`")
            for association_type in types:
                if association_type != {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": association}:
                    raise _ApiError(
                        400, f"Association type {association_type!r} is not {kind[:-1]}-to-contact "
                        f"(HUBSPOT_DEFINED {association})"
                    )
            contact_id = str(target["id"])
            with self.lock:
                record = self.contacts.get(contact_id)
            if record is None or record.archived:
                raise _ApiError(
                    400,
                    f"One or more associations are invalid: contact {contact_id} does not exist",
                    "VALIDATION_ERROR",
                )
            contact_ids.append(contact_id)
        with self.lock:
            record_id = self._new_id()
            stamp = iso_ms()
            values = dict(props)
            values.update(hs_object_id=record_id, hs_createdate=stamp, hs_lastmodifieddate=stamp)
            extra = {"contacts": contact_ids, "indexed_at": time.monotonic()}
            record = _Record(record_id, values, stamp, stamp, extra=extra)
            self.engagements[kind][record_id] = record
            for contact_id in contact_ids:
                contact = self.contacts[contact_id]
                contact.properties["notes_last_updated"] = stamp
                contact.updated = stamp
                self._finish_contact(contact)
        return {"id": record_id, "properties": dict(values), "createdAt": stamp, "updatedAt": stamp, "archived": False}

    def _find_engagement(self, kind: str, record_id: str, query: dict[str, list[str]], allowed: set[str]) -> _Record:
        unknown = set(query) - allowed
        if unknown:
            raise _ApiError(400, f"Unknown query parameter(s) {sorted(unknown)}")
        id_property = query.get("idProperty", [None])[-1]
        store = self.engagements[kind]
        with self.lock:
            if id_property is None:
                record = store.get(record_id)
            elif kind != "calls" or id_property not in self.unique_call_properties:
                raise _ApiError(400, f"{id_property} is not a unique identifier property", "VALIDATION_ERROR")
            else:
                record = next((r for r in store.values() if r.properties.get(id_property) == record_id), None)
        if record is None or record.archived:
            raise _ApiError(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        return record

    # GET /crm/v3/objects/calls/{callId}?properties=&idProperty=
    # developers.hubspot.com/docs/api/crm/calls ("Retrieve calls"): by id, or with `idProperty` by
    # the value of a unique-value property; read from the database, not from the search index.
    def _get_engagement(self, kind: str, record_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        record = self._find_engagement(kind, record_id, query, {"properties", "propertiesWithHistory",
                                                                "associations", "archived", "idProperty"})
        wanted = [p for p in ",".join(query.get("properties", [])).split(",") if p]
        return self._public(record, wanted, defaults=False)

    # PATCH /crm/v3/objects/{calls|communications|notes}/{id}   body {"properties": {...}}
    # developers.hubspot.com/docs/api/crm/calls ("Update calls"; the communications and notes pages
    # alike, and the reference "Update" endpoints): a partial update of the record by its id (or
    # `idProperty`); the given values overwrite, an empty string clears; read-only and nonexistent
    # properties are an error; an unknown id answers 404. Associations are not changed here.
    def _update_engagement(self, kind: str, record_id: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "properties" not in body or set(body) - {"properties", "objectWriteTraceId"}:
            raise _ApiError(400, "Invalid input JSON: expected {properties}")
        props = self._check_properties(kind, body["properties"], creating=False)
        record = self._find_engagement(kind, record_id, query, {"idProperty"})
        with self.lock:
            stamp = iso_ms()
            for key, value in props.items():
                if value == "":
                    record.properties.pop(key, None)
                else:
                    record.properties[key] = value
            record.properties["hs_lastmodifieddate"] = stamp
            record.updated = stamp
        return self._public(record, sorted(record.properties), defaults=False)


def _check_filter(item: Any) -> None:
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("propertyName"), str)
        or not item["propertyName"]
    ):
        raise _ApiError(400, "Each filter needs a propertyName")
    operator = item.get("operator")
    if operator not in OPERATORS:
        raise _ApiError(400, f"Unknown filter operator {operator!r}")
    unknown = set(item) - {"propertyName", "operator", "value", "values", "highValue"}
    if unknown:
        raise _ApiError(400, f"Unknown filter field(s) {sorted(unknown)}")
    if operator in ("IN", "NOT_IN"):
        values = item.get("values")
        if not isinstance(values, list) or not values or "value" in item:
            raise _ApiError(400, f"{operator} takes a non-empty `values` list")
    elif operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        if "value" in item or "values" in item:
            raise _ApiError(400, f"{operator} takes no value")
    elif operator == "BETWEEN":
        if "value" not in item or "highValue" not in item:
            raise _ApiError(400, "BETWEEN takes `value` and `highValue`")
    elif "value" not in item or isinstance(item["value"], list | dict) or "values" in item:
        raise _ApiError(400, f"{operator} takes one `value`")


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", text.lower()) if t]


def _compare_value(name: str, value: Any) -> Any:
    if name in DATETIME_PROPERTIES:
        return to_ms(value)
    text = str(value).strip()
    if (
        re.fullmatch(r"-?\d+(\.\d+)?", text)
        and name not in ("phone", "mobilephone")
        and not name.startswith("hs_searchable")
    ):
        return float(text)
    return text.lower()


def _filter_matches(props: dict[str, str], item: dict[str, Any]) -> bool:
    name, operator = item["propertyName"], item["operator"]
    stored = props.get(name)
    if operator == "HAS_PROPERTY":
        return stored is not None and stored != ""
    if operator == "NOT_HAS_PROPERTY":
        return stored is None or stored == ""
    if stored is None or stored == "":
        return operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        wanted = str(item["value"]).lower()
        if "*" in wanted:
            hit = fnmatch.fnmatchcase(stored.lower(), wanted)
        else:
            stored_tokens = set(_tokens(stored))
            hit = bool(_tokens(wanted)) and all(t in stored_tokens for t in _tokens(wanted))
        return hit if operator == "CONTAINS_TOKEN" else not hit
    left = _compare_value(name, stored)
    if operator in ("IN", "NOT_IN"):
        hit = any(left == _compare_value(name, v) for v in item["values"])
        return hit if operator == "IN" else not hit
    right = _compare_value(name, item["value"])
    if left is None or right is None or type(left) is not type(right):
        return operator == "NEQ"
    if operator == "EQ":
        return left == right
    if operator == "NEQ":
        return left != right
    if operator == "BETWEEN":
        high = _compare_value(name, item["highValue"])
        return type(high) is type(left) and right <= left <= high
    return {
        "LT": left < right,
        "LTE": left <= right,
        "GT": left > right,
        "GTE": left >= right,
    }[operator]


def _sort_key(name: str, value: Any) -> tuple[int, Any]:
    if value is None:
        return (1, "")
    compared = _compare_value(name, value)
    return (0, compared if compared is not None else "")


def _batch_inputs(body: Any, allowed: set[str]) -> list[str]:
    if not isinstance(body, dict) or "inputs" not in body:
        raise _ApiError(400, "Invalid input JSON: `inputs` is required")
    unknown = set(body) - allowed
    if unknown:
        raise _ApiError(400, f"Invalid input JSON: unrecognized field(s) {sorted(unknown)}")
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs or len(inputs) > BATCH_MAX_INPUTS:
        raise _ApiError(400, f"`inputs` holds 1 to {BATCH_MAX_INPUTS} objects")
    ids = []
    for item in inputs:
        if not isinstance(item, dict) or set(item) != {"id"} or not re.fullmatch(r"\d+", str(item["id"])):
            raise _ApiError(400, f'Invalid input {item!r}: expected {{"id": "<numeric id>"}}')
        ids.append(str(item["id"]))
    return ids


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHubSpot
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        lost, delay = self.owner.take_lost(self.path)
        status, extra, payload = self.owner.handle(self.command, self.path, headers, raw)
        if lost and not delay:
            # carried out, answer lost: the connection drops before a byte of the response
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if lost:
            self.owner.wait(delay)
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass
