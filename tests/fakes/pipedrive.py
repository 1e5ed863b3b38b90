"""A fake Pipedrive API: a real HTTP server on 127.0.0.1 answering the documented requests the
``pipedrive`` backend makes, with Pipedrive's response envelope and error shape.

It is strict on purpose. A missing or wrong token (or a token in the query string: the backend must
use the documented header), an unknown query parameter, a search term under 2 characters, a
``fields`` value Pipedrive does not have, a ``limit`` above the documented maximum, a body key the
endpoint does not document, a wrong type or time format, ``person_id`` in a v2 activity (read-only
there), or any path the backend should not use gets Pipedrive's error document
``{"success": false, "error": ..., "errorCode": <status>, "error_info": ...}`` with 400/401/404.

Rate limiting follows https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting: every
answer carries ``x-ratelimit-limit``/``-remaining``/``-reset`` (a rolling 2-second window per token),
``x-daily-requests-left`` (POST/PUT left today, API-token requests only) and the token-budget headers
``x-daily-ratelimit-token-limit``/``-remaining``. Beyond ``burst_limit`` requests in 2 s, or when
the daily token budget is used up, the answer is 429 with ``Retry-After``. Token costs per request
follow the ``x-token-cost`` of the OpenAPI specs (v2 search 20, list 10, get 1, create 5; v1 create 10).

Search semantics (an assumption: Pipedrive documents only that, without ``exact_match``, "the term
can be present anywhere in the field values"): a phone matches when the term is a substring of the
stored text, or when the term's digits are a substring of the stored number's digits. With
``exact_match`` the whole stored text, or all its digits, must equal the term.

Updates follow https://developers.pipedrive.com/docs/api/v1/Activities#updateActivity (API v2:
``PATCH /api/v2/activities/{id}``, the same body rules as adding one, every key optional; an unknown or
deleted id is a 404 ``Activity not found``). Call logs have no update endpoint on
https://developers.pipedrive.com/docs/api/v1/CallLogs (add, get, list, delete, recordings): the fake
has none either, and a call log stays as it was added; ``GET /api/v1/callLogs/{id}`` answers it with
the ``activity_id`` of the activity it comes with. ``GET /api/v1/activityTypes``
(https://developers.pipedrive.com/docs/api/v1/ActivityTypes#getActivityTypes) lists
:attr:`activity_types`, and activities of another type are refused; ``GET /api/v1/users``
(https://developers.pipedrive.com/docs/api/v1/Users#getUsers) lists :attr:`users`.

Test helpers: :meth:`add_person`, :meth:`update_person`, :meth:`delete_person`, :meth:`add_org`,
:meth:`rename_org`, :meth:`add_user`, :meth:`add_activity_type`, :meth:`delete_activity`,
:meth:`activity`, :meth:`fail_next`, :meth:`hang_next`, :meth:`lose_next` (the request is carried out,
its answer lost); ``call_logs_forbidden``, ``burst_limit``,
``daily_tokens``, ``daily_posts_left``; ``requests`` records every request.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_TOKEN = "0123456789abcdef0123456789abcdef01234567"
OAUTH_TOKEN = "v1u:oauth-access-token-for-tests"
COMPANY_DOMAIN = "acme"
USER_ID = 7

SEARCH_FIELDS = {"custom_fields", "email", "notes", "phone", "name"}
CALL_LOG_OUTCOMES = {"connected", "no_answer", "left_message", "left_voicemail", "wrong_number", "busy"}
# the types every company starts with (key_string, name)
DEFAULT_ACTIVITY_TYPES = (("call", "Call"), ("meeting", "Meeting"), ("task", "Task"), ("deadline", "Deadline"),
                          ("email", "Email"), ("lunch", "Lunch"))
ACTIVITY_KEYS = {"subject", "type", "owner_id", "deal_id", "lead_id", "org_id", "project_id", "due_date", "due_time",
                 "duration", "busy", "done", "location", "participants", "attendees", "public_description",
                 "priority", "note"}
V1_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
HH_MM = re.compile(r"^\d{2}:\d{2}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LIST_PARAMS = {
    "filter_id",
    "ids",
    "owner_id",
    "updated_since",
    "updated_until",
    "sort_by",
    "sort_direction",
    "include_fields",
    "custom_fields",
    "include_option_labels",
    "include_labels",
    "limit",
    "cursor",
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    hang: float = 0.0
    path_prefix: str = ""


class _Reject(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class FakePipedrive:
    """Start with :meth:`start` (or ``with FakePipedrive() as fake``); ``base_url`` is its root."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.reset()

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakePipedrive:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-pipedrive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakePipedrive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all data, recorded requests, injected failures and limits."""
        with self._lock:
            self.persons: dict[int, dict[str, Any]] = {}
            self.orgs: dict[int, dict[str, Any]] = {}
            self.call_logs: list[dict[str, Any]] = []
            self.activities: list[dict[str, Any]] = []
            self.requests: list[Recorded] = []
            self._failures: deque[_Failure] = deque()
            self._lost: deque[tuple[str, str, float]] = deque()
            self._next_id = 1
            self._clock = datetime(2024, 1, 1, tzinfo=UTC)
            self._window: deque[float] = deque()
            self.activity_types: list[dict[str, Any]] = [
                {"id": index, "key_string": key, "name": name, "active_flag": True, "is_custom_flag": False,
                 "order_nr": index, "icon_key": key}
                for index, (key, name) in enumerate(DEFAULT_ACTIVITY_TYPES, start=1)
            ]
            self.users: list[dict[str, Any]] = [
                {"id": USER_ID, "name": "Test User", "email": "test.user@acme.example", "active_flag": True,
                 "is_admin": 1, "role_id": 1}
            ]
            self.call_logs_forbidden = False
            self.burst_limit = 100000
            self.daily_token_limit = 10_000_000
            self.daily_tokens = self.daily_token_limit
            self.daily_posts_left = 10000
            self.retry_after = 2
            self.company_domain = COMPANY_DOMAIN

    # test helpers ---------------------------------------------------------------------------
    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def _new_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def add_org(self, name: str) -> int:
        with self._lock:
            org_id = self._new_id()
            now = self._tick()
            self.orgs[org_id] = {
                "id": org_id,
                "name": name,
                "owner_id": USER_ID,
                "add_time": now,
                "update_time": now,
                "is_deleted": False,
            }
            return org_id

    def rename_org(self, org_id: int, name: str) -> None:
        with self._lock:
            self.orgs[org_id].update(name=name, update_time=self._tick())

    def add_person(
        self,
        name: str,
        phones: list[str] | list[dict[str, Any]],
        org_id: int | None = None,
        emails: list[str] | None = None,
        job_title: str | None = None,
    ) -> int:
        with self._lock:
            person_id = self._new_id()
            now = self._tick()
            self.persons[person_id] = {
                "id": person_id,
                "name": name,
                "owner_id": USER_ID,
                "org_id": org_id,
                "phones": _items(phones),
                "emails": _items(emails or []),
                "add_time": now,
                "update_time": now,
                "is_deleted": False,
                "visible_to": 3,
            }
            if job_title is not None:  # a company with contact sync on (see _person_v2)
                self.persons[person_id]["job_title"] = job_title
            return person_id

    def update_person(self, person_id: int, **changes: Any) -> None:
        with self._lock:
            person = self.persons[person_id]
            for key, value in changes.items():
                person[key] = _items(value) if key in ("phones", "emails") else value
            person["update_time"] = self._tick()

    def add_user(self, user_id: int, name: str, email: str, active: bool = True) -> None:
        with self._lock:
            self.users.append({"id": user_id, "name": name, "email": email, "active_flag": active, "is_admin": 0,
                               "role_id": 1})

    def add_activity_type(self, key_string: str, name: str, active: bool = True) -> None:
        with self._lock:
            number = len(self.activity_types) + 1
            self.activity_types.append({"id": number, "key_string": key_string, "name": name, "active_flag": active,
                                        "is_custom_flag": True, "order_nr": number, "icon_key": "bubble"})

    def delete_activity(self, activity_id: int) -> None:
        with self._lock:
            for activity in self.activities:
                if activity["id"] == activity_id:
                    activity.update(is_deleted=True, update_time=self._tick())

    def activity(self, activity_id: int) -> dict[str, Any]:
        with self._lock:
            return next(dict(a) for a in self.activities if a["id"] == activity_id)

    def delete_person(self, person_id: int) -> None:
        with self._lock:
            self.persons[person_id].update(is_deleted=True, update_time=self._tick())

    def fail_next(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        body: Any = None,
        times: int = 1,
        path_prefix: str = "",
    ) -> None:
        """The next ``times`` requests (to paths starting with ``path_prefix``) get this answer."""
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(status, dict(headers or {}), body, path_prefix=path_prefix))

    def hang_next(self, seconds: float) -> None:
        """The next request waits ``seconds`` before it is answered (a timeout for the client)."""
        with self._lock:
            self._failures.append(_Failure(0, hang=seconds))

    def lose_next(self, times: int = 1, path_prefix: str = "", delay: float = 0.0, method: str = "POST") -> None:
        """The next ``times`` ``method`` requests (to paths starting with ``path_prefix``) are carried out, then
        their answer is lost: the connection closes without a response or, with ``delay``, the answer
        leaves only after the client has given up."""
        with self._lock:
            for _ in range(times):
                self._lost.append((method, path_prefix, delay))

    def take_lost(self, method: str, raw_path: str) -> tuple[bool, float]:
        path = urlsplit(raw_path).path
        with self._lock:
            for index, (wanted, prefix, delay) in enumerate(self._lost):
                if method == wanted and path.startswith(prefix):
                    del self._lost[index]
                    return True, delay
        return False, 0.0

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def recorded(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    # request handling -----------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes):
        """Returns (status, headers, body document)."""
        split = urlsplit(raw_path)
        path = split.path
        query_lists = parse_qs(split.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in query_lists.items()}
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(Recorded(method, path, query, split.query, headers, body))
            failure = None
            if self._failures and path.startswith(self._failures[0].path_prefix):
                failure = self._failures.popleft()
        if failure is not None and failure.hang:
            self._stopping.wait(failure.hang)
            failure = None
        extra: dict[str, str] = {}
        try:
            token_kind = self._authenticate(headers, query)
            with self._lock:
                extra = self._rate_headers(token_kind, method, _cost(method, path))
            if failure is not None:
                doc = failure.body if failure.body is not None else _error_doc(failure.status, "injected")
                return failure.status, {**extra, **failure.headers}, doc
            if any(len(v) > 1 for v in query_lists.values()):
                raise _Reject(400, "repeated query parameter")
            with self._lock:
                return 200, extra, self._route(method, path, query, headers, body)
        except _Reject as exc:
            return exc.status, {**extra, **exc.headers}, _error_doc(exc.status, exc.message, exc.code)

    def _authenticate(self, headers: dict[str, str], query: dict[str, str]) -> str:
        # https://pipedrive.readme.io/docs/core-api-concepts-authentication: the API token goes in the
        # x-api-token header; OAuth access tokens in "Authorization: Bearer". The fake refuses a token
        # in the URL so a backend that leaks it into URLs (and logs) fails its tests.
        if "api_token" in query:
            raise _Reject(401, "unauthorized access")
        if headers.get("x-api-token") == API_TOKEN:
            return "api_token"
        if headers.get("authorization") == f"Bearer {OAUTH_TOKEN}":
            return "oauth"
        raise _Reject(401, "unauthorized access")

    def _rate_headers(self, token_kind: str, method: str, cost: int) -> dict[str, str]:
        # https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting
        now = time.monotonic()
        while self._window and now - self._window[0] >= 2.0:
            self._window.popleft()
        headers = {
            "x-ratelimit-limit": str(self.burst_limit),
            "x-ratelimit-reset": "2",
            "x-daily-ratelimit-token-limit": str(self.daily_token_limit),
        }
        if token_kind == "api_token":
            headers["x-daily-requests-left"] = str(self.daily_posts_left)
        if self.daily_tokens < cost:
            headers.update(
                {
                    "x-ratelimit-remaining": str(self.burst_limit - len(self._window)),
                    "x-daily-ratelimit-token-remaining": "0",
                    "Retry-After": "3600",
                }
            )
            raise _Reject(429, "Daily token budget exceeded", headers=headers)
        if len(self._window) >= self.burst_limit:
            wait = 2.0 - (now - self._window[0])
            headers.update(
                {
                    "x-ratelimit-remaining": "0",
                    "Retry-After": str(max(1, round(wait))),
                    "x-daily-ratelimit-token-remaining": str(self.daily_tokens),
                }
            )
            raise _Reject(429, "Too many requests", headers=headers)
        self._window.append(now)
        self.daily_tokens -= cost
        if method in ("POST", "PUT") and token_kind == "api_token":
            self.daily_posts_left = max(0, self.daily_posts_left - 1)
            headers["x-daily-requests-left"] = str(self.daily_posts_left)
        headers["x-ratelimit-remaining"] = str(self.burst_limit - len(self._window))
        headers["x-daily-ratelimit-token-remaining"] = str(self.daily_tokens)
        return headers

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any):
        if method == "GET" and path == "/api/v2/persons/search":
            return self._search_persons(query)
        if method == "GET" and path == "/api/v2/persons":
            return self._list_persons(query)
        match = re.fullmatch(r"/api/v2/persons/(\d+)", path)
        if method == "GET" and match:
            return self._get_person(int(match.group(1)), query)
        if method == "GET" and path == "/api/v2/organizations":
            return self._list_orgs(query)
        if method == "POST" and path == "/api/v2/persons":
            return self._add_person(headers, body, query)
        if method == "POST" and path == "/api/v1/callLogs":
            return self._add_call_log(headers, body, query)
        if method == "POST" and path == "/api/v2/activities":
            return self._add_activity(headers, body, query)
        if method == "GET" and path == "/api/v2/activities":
            return self._list_activities(query)
        match = re.fullmatch(r"/api/v2/activities/(\d+)", path)
        if method == "PATCH" and match:
            return self._update_activity(int(match.group(1)), headers, body, query)
        match = re.fullmatch(r"/api/v1/callLogs/([^/]+)", path)
        if method == "GET" and match:
            return self._get_call_log(match.group(1), query)
        if method == "GET" and path == "/api/v1/activityTypes":
            _only(query, set())
            return {"success": True, "data": [dict(t) for t in self.activity_types]}
        if method == "GET" and path == "/api/v1/users":
            _only(query, set())
            return {"success": True, "data": [dict(u) for u in self.users]}
        if method == "GET" and path == "/api/v1/users/me":
            return self._me(query)
        raise _Reject(404, f"Unknown method {method} {path}")

    # endpoints ------------------------------------------------------------------------------
    def _search_persons(self, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Persons#searchPersons (API v2:
        # GET /api/v2/persons/search): term required, min 2 characters (1 with exact_match);
        # fields a comma list of custom_fields,email,notes,phone,name; limit max 100; cursor paging.
        _only(
            query, {"term", "fields", "exact_match", "organization_id", "include_fields", "limit", "cursor"}
        )
        exact = _boolean(query, "exact_match", False)
        term = query.get("term", "")
        if len(term.strip()) < (1 if exact else 2):
            raise _invalid("term: Term must be at least 2 characters long")
        fields_ = set(query.get("fields", ",".join(sorted(SEARCH_FIELDS))).split(","))
        if not fields_ <= SEARCH_FIELDS:
            raise _invalid(f"fields: unknown field(s) {sorted(fields_ - SEARCH_FIELDS)}")
        limit = _limit(query, 100)
        org_filter = _int_param(query, "organization_id")
        hits = []
        for person in sorted(self.persons.values(), key=lambda p: p["id"]):
            if person["is_deleted"] or (org_filter and person["org_id"] != org_filter):
                continue
            texts = []
            if "phone" in fields_:
                texts += [p["value"] for p in person["phones"]]
            if "email" in fields_:
                texts += [e["value"] for e in person["emails"]]
            if "name" in fields_:
                texts.append(person["name"])
            if any(_matches(term, text, exact) for text in texts):
                hits.append(person)
        start = _cursor_offset(query)
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        items = [{"result_score": 1.0, "item": self._search_item(p)} for p in page]
        return {
            "success": True,
            "data": {"items": items},
            "additional_data": {"next_cursor": _cursor(start + limit) if more else None},
        }

    def _search_item(self, person: dict[str, Any]) -> dict[str, Any]:
        org = self.orgs.get(person["org_id"]) if person["org_id"] else None
        return {
            "id": person["id"],
            "type": "person",
            "name": person["name"],
            "phones": [p["value"] for p in person["phones"]],
            "emails": [e["value"] for e in person["emails"]],
            "visible_to": person["visible_to"],
            "owner": {"id": person["owner_id"]},
            "organization": {"id": org["id"], "name": org["name"], "address": None} if org else None,
            "custom_fields": [],
            "notes": [],
        }

    def _list_persons(self, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Persons#getPersons (API v2: GET /api/v2/persons):
        # filters ids (max 100), org_id, owner_id, updated_since/updated_until (RFC 3339), sort_by
        # id|update_time|add_time, sort_direction asc|desc, limit max 500, cursor pagination
        # (additional_data.next_cursor, null on the last page). Deleted persons are not listed.
        _only(query, LIST_PARAMS | {"org_id", "deal_id"})
        rows = [p for p in self.persons.values() if not p["is_deleted"]]
        org_filter = _int_param(query, "org_id")
        if org_filter:
            rows = [p for p in rows if p["org_id"] == org_filter]
        rows = _filter_list(rows, query)
        return self._page(rows, query, self._person_v2)

    def _get_person(self, person_id: int, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Persons#getPerson (API v2: GET /api/v2/persons/{id})
        _only(query, {"include_fields", "custom_fields", "include_option_labels", "include_labels"})
        person = self.persons.get(person_id)
        if person is None or person["is_deleted"]:
            raise _Reject(404, "Person not found", "ERR_NOT_FOUND")
        return {"success": True, "data": self._person_v2(person)}

    def _person_v2(self, person: dict[str, Any]) -> dict[str, Any]:
        # job_title (like ims, postal_address, notes, birthday) is in the answer only when the
        # company has contact sync enabled: here, for persons given one
        extra = {"job_title": person["job_title"]} if "job_title" in person else {}
        return extra | {
            "id": person["id"],
            "name": person["name"],
            "first_name": person["name"].split(" ")[0],
            "last_name": person["name"].split(" ")[-1],
            "owner_id": person["owner_id"],
            "org_id": person["org_id"],
            "add_time": _rfc(person["add_time"]),
            "update_time": _rfc(person["update_time"]),
            "emails": person["emails"],
            "phones": person["phones"],
            "is_deleted": person["is_deleted"],
            "visible_to": person["visible_to"],
            "label_ids": [],
            "picture_id": None,
            "custom_fields": {},
        }

    def _list_orgs(self, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Organizations#getOrganizations (API v2:
        # GET /api/v2/organizations): same filters, sorting and cursor pagination as persons.
        _only(query, LIST_PARAMS)
        rows = [o for o in self.orgs.values() if not o["is_deleted"]]
        rows = _filter_list(rows, query)
        return self._page(
            rows,
            query,
            lambda o: {
                "id": o["id"],
                "name": o["name"],
                "owner_id": o["owner_id"],
                "add_time": _rfc(o["add_time"]),
                "update_time": _rfc(o["update_time"]),
                "is_deleted": o["is_deleted"],
                "visible_to": 3,
                "label_ids": [],
                "address": None,
                "custom_fields": {},
            },
        )

    def _page(self, rows: list[dict[str, Any]], query: dict[str, str], render) -> dict[str, Any]:
        limit = _limit(query, 500)
        start = _cursor_offset(query)
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return {
            "success": True,
            "data": [render(r) for r in page],
            "additional_data": {"next_cursor": _cursor(start + limit) if more else None},
        }

    def _add_call_log(self, headers: dict[str, str], body: Any, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/CallLogs#addCallLog: required outcome (enum),
        # to_phone_number, start_time and end_time (UTC, YYYY-MM-DD HH:MM:SS); optional user_id,
        # activity_id, subject, duration (seconds, a string), from_phone_number, person_id, org_id,
        # deal_id, lead_id, note (HTML). Answers {"success": true, "data": {..., "id": "<string>"}}.
        # A company without the phone integration feature gets the documented 403 document.
        _only(query, set())
        _json_body(headers, body)
        if self.call_logs_forbidden:
            raise _Reject(403, "You don't have permission to access the resource", "ERR_FORBIDDEN")
        _only_keys(
            body,
            {
                "outcome",
                "to_phone_number",
                "start_time",
                "end_time",
                "user_id",
                "activity_id",
                "subject",
                "duration",
                "from_phone_number",
                "person_id",
                "org_id",
                "deal_id",
                "lead_id",
                "note",
            },
        )
        for key in ("outcome", "to_phone_number", "start_time", "end_time"):
            if key not in body:
                raise _Reject(400, f"{key} is required")
        if body["outcome"] not in CALL_LOG_OUTCOMES:
            raise _Reject(400, f"outcome must be one of {sorted(CALL_LOG_OUTCOMES)}")
        for key in ("start_time", "end_time"):
            if not isinstance(body[key], str) or not V1_TIME.match(body[key]):
                raise _Reject(400, f"{key} must be in the format YYYY-MM-DD HH:MM:SS")
        _typed(body, str, "to_phone_number", "from_phone_number", "subject", "note", "lead_id")
        _typed(body, int, "user_id", "activity_id", "person_id", "org_id", "deal_id")
        if "duration" in body and not (isinstance(body["duration"], str) and body["duration"].isdigit()):
            raise _Reject(400, "duration must be a number of seconds in a string")
        if "person_id" in body and body["person_id"] not in self.persons:
            raise _Reject(404, "Person not found")
        # "Since these logs are also considered activities" (the CallLogs page): each call log shows
        # as a done activity of type call on its person, carrying the log's note.
        activity_id = self._new_id()
        added = _rfc(self._tick())
        self.activities.append(
            {
                "id": activity_id, "subject": body.get("subject") or "Call", "type": "call", "done": True,
                "note": body.get("note"), "person_id": body.get("person_id"), "org_id": body.get("org_id"),
                "owner_id": body.get("user_id", USER_ID), "is_deleted": False, "add_time": added,
                "update_time": self._clock,
            }
        )
        record = dict(body, id=uuid.uuid4().hex[:24], activity_id=activity_id, has_recording=False, company_id=1)
        self.call_logs.append(record)
        return {"success": True, "data": record}

    def _add_person(self, headers: dict[str, str], body: Any, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Persons#addPerson (API v2: POST /api/v2/persons):
        # JSON only; name required; emails and phones are lists of {value, primary, label} (only
        # value required); owner_id, org_id, visible_to numbers.
        _only(query, set())
        _json_body(headers, body)
        _only_keys(body, {"name", "owner_id", "org_id", "emails", "phones", "visible_to", "label_ids",
                          "marketing_status", "add_time", "custom_fields"})
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            raise _invalid("name is required")
        _typed(body, int, "owner_id", "org_id", "visible_to")
        for key in ("emails", "phones"):
            items = body.get(key, [])
            if not isinstance(items, list) or not all(
                isinstance(item, dict) and set(item) <= {"value", "primary", "label"}
                and isinstance(item.get("value"), str) and isinstance(item.get("primary", False), bool)
                for item in items
            ):
                raise _invalid(f"{key} must be a list of {{value: string, primary: boolean, label: string}}")
        if body.get("org_id") is not None and body["org_id"] not in self.orgs:
            raise _Reject(404, "Organization not found")
        person_id = self._new_id()  # the caller holds the lock
        now = self._tick()
        self.persons[person_id] = {
            "id": person_id, "name": body["name"].strip(), "owner_id": body.get("owner_id", USER_ID),
            "org_id": body.get("org_id"), "phones": _items(body.get("phones", [])),
            "emails": _items(body.get("emails", [])), "add_time": now, "update_time": now, "is_deleted": False,
            "visible_to": body.get("visible_to", 3),
        }
        return {"success": True, "data": self._person_v2(self.persons[person_id])}

    def _add_activity(self, headers: dict[str, str], body: Any, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Activities#addActivity (API v2:
        # POST /api/v2/activities): JSON only, strict types (done a boolean, ids numbers); due_date
        # YYYY-MM-DD, due_time and duration HH:MM; type an activity type key_string; person_id is
        # read-only (the person is the primary of participants [{person_id, primary}]).
        _only(query, set())
        self._check_activity(headers, body)
        participants = body.get("participants", [])
        primary = next((p["person_id"] for p in participants if p.get("primary")), None)
        activity_id = self._new_id()
        added = _rfc(self._tick())
        record = dict(
            body,
            id=activity_id,
            person_id=primary,
            is_deleted=False,
            add_time=added,
            update_time=self._clock,
            owner_id=body.get("owner_id", USER_ID),
        )
        self.activities.append(record)
        return {"success": True, "data": dict(record, update_time=added)}

    def _check_activity(self, headers: dict[str, str], body: Any) -> None:
        """The body rules of adding and of updating an activity (every key optional)."""
        _json_body(headers, body)
        if "person_id" in body:
            raise _Reject(
                400,
                "'person_id' is a read-only field. Add a primary participant to set 'person_id' instead.",
                "ERR_BAD_REQUEST",
            )
        _only_keys(body, ACTIVITY_KEYS)
        _typed(body, str, "subject", "type", "lead_id", "public_description", "note")
        _typed(body, int, "owner_id", "deal_id", "org_id", "project_id", "priority")
        _typed(body, bool, "busy", "done")
        active = {t["key_string"] for t in self.activity_types if t["active_flag"]}
        if "type" in body and body["type"] not in active:
            raise _Reject(400, f"unknown activity type {body['type']!r}")
        for key, pattern in (("due_date", DATE), ("due_time", HH_MM), ("duration", HH_MM)):
            if key in body and not (isinstance(body[key], str) and pattern.match(body[key])):
                raise _Reject(400, f"{key} has a wrong format")
        participants = body.get("participants", [])
        if not isinstance(participants, list) or not all(
            isinstance(p, dict)
            and set(p) <= {"person_id", "primary"}
            and isinstance(p.get("person_id"), int)
            and isinstance(p.get("primary", False), bool)
            for p in participants
        ):
            raise _Reject(400, "participants must be a list of {person_id: number, primary: boolean}")
        for participant in participants:
            if participant["person_id"] not in self.persons:
                raise _Reject(404, "Person not found")
        if body.get("owner_id") is not None and body["owner_id"] not in {u["id"] for u in self.users}:
            raise _Reject(400, "owner_id: user not found", "ERR_BAD_REQUEST")

    def _update_activity(self, activity_id: int, headers: dict[str, str], body: Any,
                         query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Activities#updateActivity (API v2:
        # PATCH /api/v2/activities/{id}): the keys sent change, the others stay; a deleted or unknown
        # activity is a 404. Changing the participants moves the primary person.
        _only(query, set())
        self._check_activity(headers, body)
        activity = next((a for a in self.activities if a["id"] == activity_id and not a["is_deleted"]), None)
        if activity is None:
            raise _Reject(404, "Activity not found", "ERR_NOT_FOUND")
        activity.update(body)
        if "participants" in body:
            activity["person_id"] = next((p["person_id"] for p in body["participants"] if p.get("primary")), None)
        activity["update_time"] = self._tick()
        return {"success": True, "data": dict(activity, update_time=_rfc(activity["update_time"]))}

    def _get_call_log(self, call_log_id: str, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/CallLogs#getCallLog
        _only(query, set())
        record = next((c for c in self.call_logs if c["id"] == call_log_id), None)
        if record is None:
            raise _Reject(404, "Call log not found", "ERR_NOT_FOUND")
        return {"success": True, "data": dict(record)}

    def _list_activities(self, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Activities#getActivities (API v2:
        # GET /api/v2/activities): filters person_id, org_id, deal_id, owner_id, done, ids,
        # updated_since/updated_until (RFC 3339); sort_by id|update_time|add_time|due_date; limit
        # max 500; cursor pagination. Deleted activities are not listed.
        _only(query, LIST_PARAMS | {"person_id", "org_id", "deal_id", "lead_id", "done"})
        rows = [a for a in self.activities if not a["is_deleted"]]
        for key in ("person_id", "org_id", "deal_id"):
            wanted = _int_param(query, key)
            if wanted:
                rows = [a for a in rows if a.get(key) == wanted]
        if "done" in query:
            rows = [a for a in rows if a.get("done") is _boolean(query, "done", False)]
        rows = _filter_list(rows, query)
        return self._page(rows, query, lambda a: dict(a, update_time=_rfc(a["update_time"])))

    def _me(self, query: dict[str, str]) -> dict[str, Any]:
        # https://developers.pipedrive.com/docs/api/v1/Users#getCurrentUser
        _only(query, set())
        return {
            "success": True,
            "data": {
                "id": USER_ID,
                "name": "Test User",
                "company_id": 1,
                "company_name": "Acme",
                "company_domain": self.company_domain,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakePipedrive
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        lost, delay = self.fake.take_lost(self.command, self.path)
        status, extra, doc = self.fake.handle(self.command, self.path, headers, raw_body)
        if lost and not delay:
            # carried out, answer lost: the connection drops before a byte of the response
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if lost:
            self.fake.wait(delay)
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if isinstance(doc, bytes) else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass


# helpers ------------------------------------------------------------------------------------
def _error_doc(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "success": False,
        "error": message,
        "errorCode": status,
        "error_info": "Please check developers.pipedrive.com",
        "data": None,
        "additional_data": None,
    }
    if code:
        doc["code"] = code
    return doc


def _items(values: list[Any]) -> list[dict[str, Any]]:
    items = []
    for index, value in enumerate(values):
        if isinstance(value, dict):
            items.append(value)
        else:
            items.append({"value": value, "primary": index == 0, "label": "work"})
    return items


@lru_cache(maxsize=200_000)
def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _matches(term: str, text: str, exact: bool) -> bool:
    if not isinstance(text, str) or not text:
        return False
    term_digits = _digits(term)
    if exact:
        return term.lower() == text.lower() or bool(term_digits) and term_digits == _digits(text)
    return term.lower() in text.lower() or bool(term_digits) and term_digits in _digits(text)


def _invalid(message: str) -> _Reject:
    return _Reject(400, f"Validation failed: {message}", "ERR_SCHEMA_VALIDATION_FAILED")


def _only(query: dict[str, str], allowed: set[str]) -> None:
    unknown = set(query) - allowed
    if unknown:
        raise _invalid(f"unknown query parameter(s) {sorted(unknown)}")


def _only_keys(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise _invalid(f"unknown field(s) {sorted(unknown)}")


def _json_body(headers: dict[str, str], body: Any) -> None:
    if not headers.get("content-type", "").startswith("application/json"):
        raise _Reject(415, "Content-Type must be application/json")
    if not isinstance(body, dict):
        raise _Reject(400, "The request body must be a JSON object")


def _typed(body: dict[str, Any], kind: type, *keys: str) -> None:
    for key in keys:
        if key not in body:
            continue
        value = body[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise _invalid(f"{key} must be a {kind.__name__}")


def _boolean(query: dict[str, str], key: str, default: bool) -> bool:
    if key not in query:
        return default
    if query[key] not in ("true", "false"):  # v2 accepts only true/false, not 1/0
        raise _invalid(f"{key} must be a boolean")
    return query[key] == "true"


def _int_param(query: dict[str, str], key: str) -> int | None:
    if key not in query:
        return None
    if not query[key].isdigit():
        raise _invalid(f"{key} must be a number")
    return int(query[key])


def _limit(query: dict[str, str], maximum: int) -> int:
    limit = _int_param(query, "limit") or 100
    if not 1 <= limit <= maximum:
        raise _invalid(f"limit must be at most {maximum}")
    return limit


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _cursor_offset(query: dict[str, str]) -> int:
    if "cursor" not in query:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(query["cursor"].encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise _invalid("cursor is invalid") from None


def _parse_rfc(query: dict[str, str], key: str) -> datetime | None:
    if key not in query:
        return None
    if not RFC3339.match(query[key]):
        raise _invalid(f"{key} must be an RFC 3339 time")
    return datetime.fromisoformat(query[key].replace("Z", "+00:00"))


def _filter_list(rows: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    since = _parse_rfc(query, "updated_since")
    until = _parse_rfc(query, "updated_until")
    if since:
        rows = [r for r in rows if r["update_time"] >= since]
    if until:
        rows = [r for r in rows if r["update_time"] < until]
    if "ids" in query:
        ids = query["ids"].split(",")
        if len(ids) > 100 or not all(i.isdigit() for i in ids):
            raise _invalid("ids must be up to 100 numbers")
        wanted = {int(i) for i in ids}
        rows = [r for r in rows if r["id"] in wanted]
    sort_by = query.get("sort_by", "id")
    direction = query.get("sort_direction", "asc")
    if sort_by not in ("id", "update_time", "add_time") or direction not in ("asc", "desc"):
        raise _invalid("sort_by or sort_direction")
    return sorted(rows, key=lambda r: (r[sort_by], r["id"]), reverse=direction == "desc")


def _rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cost(method: str, path: str) -> int:
    """Token costs of the OpenAPI specs' x-token-cost (v2 about half of v1)."""
    if path.endswith("/search"):
        return 20
    if method == "GET":
        return 1 if re.search(r"/\d+$", path) or path.endswith("/me") else 10
    return 10 if path.startswith("/api/v1/") else 5
