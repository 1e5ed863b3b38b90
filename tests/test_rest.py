"""The generic REST/JSON backend against a real HTTP server on 127.0.0.1 (tests/fakes/rest_api.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import time
import tomllib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from crm_backends.mirror import MirroredBackend
from crm_backends.rest import RestBackend
from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
)
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, WorkflowResult
from tests.conftest import backend_builder
from tests.fakes.rest_api import FakeRestApi, Reply, Request

NUMBER = parse_number("41215522000")


@pytest.fixture(scope="module")
def api():
    server = FakeRestApi().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(api):
    api.reset()
    yield


def build(options: dict[str, Any], tmp_path, **overrides: Any) -> RestBackend:
    table = {"name": "erp", **options, **overrides}
    table.pop("type", None)
    return backend_builder(tmp_path)("rest", **table)


def config_error(options: dict[str, Any], tmp_path) -> BackendConfigError:
    with pytest.raises(BackendConfigError) as info:
        build(options, tmp_path)
    return info.value


# --- a loose ERP search: "the last 7 digits match", as many in-house APIs do ---------------------------
ERP_CONTACTS = [
    {
        "id": 1,
        "first": "Anna",
        "last": "Muster",
        "org": {"name": "Muster AG", "url": "https://erp.example/orgs/9"},
        "phones": [{"type": "work", "number": "(021) 552 20 00"}],
        "email": ["anna@muster.example", "a.m@private.example"],
        "updated": "2024-05-01T10:00:00Z",
        "lang": "de",
        "vip": True,
    },
    {
        "id": 2,
        "first": "Bruno",
        "last": "Keller",
        "phones": [{"number": "+41 21 552 20 00"}],
        "updated": 1714557600,
    },
    {
        "id": "C-3",
        "first": "Chantal",
        "last": None,
        "phones": [{"number": "0041215522000"}, {"number": None}],
    },
    {"id": 4, "first": "Dora", "last": "Loose", "phones": [{"number": "(021) 552 20 00 ext. 12"}]},
    {"id": 5, "first": "Wrong", "last": "Country", "phones": [{"number": "+49 30 5522000"}]},
    {"id": 6, "first": "Eve", "last": "Else", "phones": [{"number": "+41 44 123 45 67"}]},
]


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def loose_search(request: Request) -> Reply:
    wanted = digits(request.query.get("phone", ""))[-7:]
    # "contains these digits": also finds other countries' numbers and numbers with an extension
    hits = [c for c in ERP_CONTACTS if any(wanted in digits(p["number"] or "") for p in c["phones"])]
    return Reply(200, {"data": hits, "total": len(hits)})


def live_options(api: FakeRestApi, **overrides: Any) -> dict[str, Any]:
    options = {
        "lookup_url": api.url + "/api/contacts?phone={national}&max={limit}",
        "headers": {"Authorization": "Bearer s3cret-token"},
        "results": "data",
        "fields": {
            "id": "id",
            "first_name": "first",
            "last_name": "last",
            "company": "org.name",
            "company_uri": "org.url",
            "phones": "phones[].number",
            "email": "email",
            "last_activity": "updated",
            "custom_data": {"Language": "lang", "VIP": "vip"},
        },
        "contact_uri_template": "https://erp.example/contacts/{id}",
    }
    options.update(overrides)
    return options


def test_live_lookup_matches_every_stored_format_and_drops_the_wrong_candidate(api, tmp_path):
    api.route("GET", "/api/contacts", loose_search)
    backend = build(live_options(api), tmp_path)

    found = backend.lookup(NUMBER, 5)

    # the API returned 5 candidates; +49 30 5522000 shares the last 7 digits but is another number
    assert [c.id for c in found] == ["1", "2", "C-3", "4"]
    assert [c.exact for c in found] == [True, True, True, False]
    anna, bruno, chantal, dora = found
    assert anna.name == "Anna Muster" and anna.company == "Muster AG"
    assert anna.company_uri == "https://erp.example/orgs/9"
    assert anna.contact_uri == "https://erp.example/contacts/1"
    assert anna.email == "anna@muster.example"
    assert anna.phones == ["(021) 552 20 00"]
    assert anna.custom_data == {"Language": "de", "VIP": "yes"}
    assert anna.last_activity == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert bruno.last_activity == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # Unix seconds
    assert chantal.name == "Chantal" and chantal.phones == ["0041215522000"]
    assert dora.contact_uri == "https://erp.example/contacts/4"

    (request,) = api.requests
    assert request.query == {"phone": "0215522000", "max": "5"}
    assert request.headers["authorization"] == "Bearer s3cret-token"
    assert request.headers["accept"] == "application/json"


def test_live_lookup_caps_to_limit_keeping_exact_matches_first(api, tmp_path):
    api.route(
        "GET", "/api/contacts", lambda r: Reply(200, {"data": list(reversed(loose_search(r).json["data"]))})
    )
    backend = build(live_options(api), tmp_path)
    found = backend.lookup(NUMBER, 2)
    assert [c.id for c in found] == ["C-3", "2"]
    assert all(c.exact for c in found)


def test_placeholders_in_the_path_are_url_encoded_and_a_single_object_answer(api, tmp_path):
    record = {"contact": {"ref": 77, "display": "Zoe Zahl", "tel": "+41215522000"}}
    api.route("GET", "/api/by-phone/%2B41215522000", lambda r: Reply(200, record))
    backend = build(
        {
            "lookup_url": api.url + "/api/by-phone/{e164}",
            "results": "[contact]",
            "fields": {"id": "ref", "name": "display", "phones": "tel"},
        },
        tmp_path,
    )
    found = backend.lookup(NUMBER, 5)
    assert [(c.id, c.name, c.phones) for c in found] == [("77", "Zoe Zahl", ["+41215522000"])]
    assert api.requests[0].raw_path == "/api/by-phone/%2B41215522000"


def test_post_with_a_table_body_sends_exactly_that_json(api, tmp_path):
    def search(request: Request) -> Reply:
        phone = request.json()["query"]["phone"]
        hits = [c for c in ERP_CONTACTS if c["id"] == 2] if phone == "+41215522000" else []
        return Reply(200, {"hits": {"items": hits}})

    api.route("POST", "/api/search", search)
    backend = build(
        live_options(
            api,
            lookup_url=api.url + "/api/search",
            method="POST",
            body={
                "query": {"phone": "{e164}", "formats": ["{national}", "{nsn}", "{intl}"]},
                "limit": "{limit}",
                "label": "lookup {digits}",
                "active": True,
            },
            results="hits.items",
        ),
        tmp_path,
    )
    found = backend.lookup(NUMBER, 3)
    assert [c.name for c in found] == ["Bruno Keller"]
    (request,) = api.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "query": {"phone": "+41215522000", "formats": ["0215522000", "215522000", "0041215522000"]},
        "limit": 3,
        "label": "lookup 41215522000",
        "active": True,
    }


def test_post_with_a_string_body_template(api, tmp_path):
    api.route("POST", "/api/search", lambda r: Reply(200, [ERP_CONTACTS[1]]))
    backend = build(
        live_options(
            api,
            lookup_url=api.url + "/api/search",
            method="POST",
            body='{"q": "{e164}", "n": {limit}}',
            results="@",
        ),
        tmp_path,
    )
    assert [c.id for c in backend.lookup(NUMBER, 5)] == ["2"]
    assert api.requests[0].body == b'{"q": "+41215522000", "n": 5}'


def test_try_forms_asks_one_form_after_the_other_until_a_match(api, tmp_path):
    stored = {"0215522000": {"id": 10, "name": "Exact National", "phone": "0215522000"}}
    api.route(
        "GET",
        "/api/exact",
        lambda r: Reply(200, [stored[r.query["phone"]]] if r.query["phone"] in stored else []),
    )
    backend = build(
        {
            "lookup_url": api.url + "/api/exact?phone={number}",
            "try_forms": ["e164", "national", "nsn"],
            "fields": {"id": "id", "name": "name", "phones": "phone"},
        },
        tmp_path,
    )
    found = backend.lookup(NUMBER, 5)
    assert [c.name for c in found] == ["Exact National"]
    assert [r.query["phone"] for r in api.requests] == ["+41215522000", "0215522000"]  # nsn never asked

    api.requests.clear()
    assert backend.lookup(parse_number("+41 44 999 88 77"), 5) == []
    assert [r.query["phone"] for r in api.requests] == ["+41449998877", "0449998877", "449998877"]


def test_short_internal_number_matches_only_exactly(api, tmp_path):
    people = [
        {"id": 1, "name": "Reception", "ext": "201"},
        {"id": 2, "name": "Long number ending in 201", "ext": "+41 21 552 02 01"},
    ]
    api.route(
        "GET",
        "/api/contacts",
        lambda r: Reply(200, [p for p in people if digits(p["ext"]).endswith(r.query["phone"])]),
    )
    backend = build(
        {
            "lookup_url": api.url + "/api/contacts?phone={e164}",
            "fields": {"id": "id", "name": "name", "phones": "ext"},
        },
        tmp_path,
    )
    found = backend.lookup(parse_number("201"), 5)
    assert [c.name for c in found] == ["Reception"]
    assert api.requests[0].query == {"phone": "201"}


def test_basic_auth(api, tmp_path):
    api.route("GET", "/api/contacts", loose_search)
    backend = build(live_options(api, headers={}, username="erp-user", password="pa:ss"), tmp_path)
    backend.lookup(NUMBER, 5)
    expected = "Basic " + base64.b64encode(b"erp-user:pa:ss").decode()
    assert api.requests[0].headers["authorization"] == expected


def test_records_of_the_wrong_type_are_coerced_or_skipped(api, tmp_path):
    answer = {
        "data": [
            "not a record",
            {"id": {"nested": 1}, "first": "No usable id", "phones": [{"number": "+41215522000"}]},
            {
                "id": 12.0,
                "first": 12345,
                "last": ["Listy"],
                "phones": [{"number": 41215522000}],
                "vip": False,
            },
            {"id": 13, "first": "Nophone", "phones": [{"number": {"oops": 1}}]},
        ]
    }
    api.route("GET", "/api/contacts", lambda r: Reply(200, answer))
    found = build(live_options(api), tmp_path).lookup(NUMBER, 5)
    assert [(c.id, c.name, c.phones, c.custom_data) for c in found] == [
        ("12", "12345 Listy", ["41215522000"], {"VIP": "no"})
    ]


# --- errors ---------------------------------------------------------------------------------------
def assert_no_full_number(message: str) -> None:
    for form in ("41215522000", "0215522000", "215522000"):
        assert form not in message


def test_timeout_is_unavailable_within_the_timeout(api, tmp_path):
    api.route("GET", "/api/contacts", lambda r: Reply(200, {"data": []}, delay=1.0))
    backend = build(live_options(api, timeout=0.2), tmp_path)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        backend.lookup(NUMBER, 5)
    assert time.monotonic() - started < 0.8
    assert "did not answer within 0.2s" in str(info.value)
    assert "tenant 't', backend 'erp'" in str(info.value)
    assert_no_full_number(str(info.value))


def test_connection_refused_is_unavailable(api, tmp_path):
    probe = FakeRestApi().start()
    closed_url = probe.url
    probe.stop()
    backend = build(live_options(api, lookup_url=closed_url + "/api/contacts?phone={digits}"), tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        backend.lookup(NUMBER, 5)
    assert "Connection refused" in str(info.value)
    assert_no_full_number(str(info.value))


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials(api, tmp_path, status):
    api.route("GET", "/api/contacts", lambda r: Reply(status, {"error": "no"}))
    with pytest.raises(CredentialsRejected) as info:
        build(live_options(api), tmp_path).lookup(NUMBER, 5)
    assert f"HTTP {status}" in str(info.value)


def test_404_is_no_match_unless_configured_otherwise(api, tmp_path):
    api.route("GET", "/api/contacts", lambda r: Reply(404, {"error": "not found"}))
    assert build(live_options(api), tmp_path).lookup(NUMBER, 5) == []
    with pytest.raises(BackendUnavailable) as info:
        build(live_options(api, not_found_is_empty=False), tmp_path).lookup(NUMBER, 5)
    assert "HTTP 404" in str(info.value)
    assert type(info.value) is BackendUnavailable


@pytest.mark.parametrize("status", [400, 422, 500, 502, 503])
def test_other_errors_are_unavailable_with_the_status(api, tmp_path, status):
    api.route("GET", "/api/contacts", lambda r: Reply(status, {"error": "boom"}))
    with pytest.raises(BackendUnavailable) as info:
        build(live_options(api), tmp_path).lookup(NUMBER, 5)
    assert type(info.value) is BackendUnavailable
    assert f"HTTP {status}" in str(info.value)
    assert "GET http://127.0.0.1:" in str(info.value) and "phone={national}" in str(info.value)
    assert_no_full_number(str(info.value))


def test_429_retry_after_in_seconds_and_as_a_date(api, tmp_path):
    api.route(
        "GET", "/api/contacts", lambda r: Reply(429, {"error": "slow down"}, headers={"Retry-After": "7"})
    )
    backend = build(live_options(api), tmp_path)
    with pytest.raises(RateLimited) as info:
        backend.lookup(NUMBER, 5)
    assert info.value.retry_after == 7.0

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.route("GET", "/api/contacts", lambda r: Reply(429, {}, headers={"Retry-After": when}))
    with pytest.raises(RateLimited) as info:
        backend.lookup(NUMBER, 5)
    assert 27 <= info.value.retry_after <= 30

    api.route("GET", "/api/contacts", lambda r: Reply(429, {}))
    with pytest.raises(RateLimited) as info:
        backend.lookup(NUMBER, 5)
    assert info.value.retry_after is None


def test_invalid_json_is_unavailable(api, tmp_path):
    api.route(
        "GET",
        "/api/contacts",
        lambda r: Reply(200, body=b"<html>Login</html>", headers={"Content-Type": "text/html"}),
    )
    with pytest.raises(BackendUnavailable) as info:
        build(live_options(api), tmp_path).lookup(NUMBER, 5)
    assert "did not answer JSON (Content-Type text/html, 18 bytes)" in str(info.value)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"data": {"id": 1}}, "`results` = 'data' gave an object (keys: id) instead of a list of records"),
        (
            {"items": []},
            "'data' gave null instead of a list of records (the answer is an object (keys: items))",
        ),
        ({"data": [{"ident": 1}, {"ident": 2}]}, "answered 2 records, none with an id at `fields.id` = 'id'"),
        ({"data": [{"id": 1, "tel": "+41215522000"}]}, "none with a phone number at `fields.phones`"),
        ([1, 2], "gave null instead of a list"),
    ],
)
def test_unexpected_shapes_are_unavailable_with_a_clear_message(api, tmp_path, answer, expected):
    api.route("GET", "/api/contacts", lambda r: Reply(200, answer))
    with pytest.raises(BackendUnavailable) as info:
        build(live_options(api), tmp_path).lookup(NUMBER, 5)
    assert expected in str(info.value)


def test_empty_answers_are_no_match(api, tmp_path):
    api.route("GET", "/api/contacts", lambda r: Reply(204))
    assert build(live_options(api), tmp_path).lookup(NUMBER, 5) == []
    api.route("GET", "/api/contacts", lambda r: Reply(200, {"data": []}))
    assert build(live_options(api), tmp_path).lookup(NUMBER, 5) == []


def test_check_runs_one_lookup(api, tmp_path):
    api.route("GET", "/api/contacts", lambda r: Reply(401, {}))
    with pytest.raises(CredentialsRejected):
        build(live_options(api), tmp_path).check()
    assert len(api.requests) == 1


# --- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        (
            {"fields": {"id": "id", "name": "a[[", "phones": "p"}},
            "fields.name",
            "invalid JMESPath expression 'a[['",
        ),
        ({"results": "data..x"}, "results", "invalid JMESPath"),
        ({"fields": {"id": "id", "phones": "p"}}, "fields.name", "first_name"),
        ({"fields": {"name": "n", "phones": "p"}}, "fields.id", "Missing data"),
        ({"fields": {"id": "id", "nmae": "n", "name": "n", "phones": "p"}}, "fields.nmae", "unknown key"),
        (
            {"fields": {"id": "id", "name": "n", "phones": "p", "custom_data": {"VIP": "?!"}}},
            "fields.custom_data.VIP",
            "'?!'",
        ),
        ({"lookup_url": "http://h/api?phone={phone}"}, "lookup_url", "unknown placeholder {phone}"),
        ({"lookup_url": None}, "lookup_url", "required in live mode"),
        ({"mode": "mirror"}, "list_url", "required in mirror mode"),
        ({"list_url": "http://h/all?since={since}", "mode": "mirror"}, "list_url", "unknown placeholder"),
        ({"body": {"q": "{e164}"}}, "body", "GET request carries no body"),
        ({"method": "DELETE"}, "method", "Must be one of"),
        ({"try_forms": ["e164", "national"]}, "try_forms", "{number}"),
        (
            {"try_forms": ["e164", "e.164"], "lookup_url": "http://h/?p={number}"},
            "try_forms.1",
            "Must be one of",
        ),
        ({"paging": "cursor", "list_url": "http://h/all"}, "next", "needs `next`"),
        ({"paging": "pages"}, "paging", "Must be one of"),
        ({"workflows": ["CallFlow"]}, "call_log", "no [call_log]"),
        (
            {"call_log": {"request_url": "http://h/calls", "url": "https://erp/calls/1"}},
            "call_log.url",
            "looks like a URL",
        ),
        ({"call_log": {"request_url": "http://h/calls/{contact}"}}, "call_log.request_url", "{contact}"),
        (
            {"call_log": {"request_url": "http://h/c", "body": "{e164}"}},
            "call_log.body",
            "unknown placeholder {e164}",
        ),
    ],
)
def test_configuration_errors_name_the_key(tmp_path, change, key, text):
    options = {"lookup_url": "http://h/api?phone={e164}", "fields": {"id": "id", "name": "n", "phones": "p"}}
    options.update(change)
    if options["lookup_url"] is None:
        del options["lookup_url"]
    error = config_error(options, tmp_path)
    assert error.key == key
    assert text in str(error)


def test_describe_redacts_secrets(tmp_path):
    backend = build(
        {
            "lookup_url": "https://erp.example/api?api_key=K3Y&phone={e164}",
            "headers": {"Authorization": "Bearer s3cret", "X-Api-Key": "k", "Accept-Language": "de"},
            "username": "erp-user",
            "password": "pw",
            "fields": {"id": "id", "name": "n", "phones": "p"},
            "call_log": {
                "request_url": "https://erp.example/calls",
                "headers": {"X-Auth-Token": "t0k"},
                "body": {"token": "t0k", "contact": "{contact_id}"},
            },
        },
        tmp_path,
    )
    info = backend.describe()
    text = repr(info)
    for secret in ("K3Y", "s3cret", "'pw'", "t0k"):
        assert secret not in text
    assert info["headers"] == {"Authorization": "***", "X-Api-Key": "***", "Accept-Language": "de"}
    assert info["lookup_url"] == "https://erp.example/api?api_key=***&phone={e164}"
    assert info["password"] == "***" and info["username"] == "erp-user"
    assert info["call_log"]["body"] == {"token": "***", "contact": "{contact_id}"}


# --- mirror ----------------------------------------------------------------------------------------
class FakeErp:
    """A listing endpoint with page/per_page, offset/limit or cursor paging and `updated_since`."""

    def __init__(self, count: int, max_page_size: int = 1000):
        old = datetime(2024, 1, 1, tzinfo=UTC)
        self.contacts = {i: self.make(i, old) for i in range(1, count + 1)}
        self.deletions: list[tuple[int, datetime]] = []
        self.max_page_size = max_page_size

    @staticmethod
    def make(i: int, updated: datetime, name: str | None = None) -> dict[str, Any]:
        return {
            "id": i,
            "name": name or f"Person {i}",
            "phone": f"(021) 555 {i // 100:02d} {i % 100:02d}",
            "updated_at": updated.isoformat(),
        }

    def changed(self, request: Request) -> tuple[list[dict[str, Any]], list[int]]:
        since = request.query.get("updated_since")
        rows = [self.contacts[i] for i in sorted(self.contacts)]
        if since is None:
            return rows, []
        moment = datetime.fromisoformat(since)
        rows = [row for row in rows if datetime.fromisoformat(row["updated_at"]) >= moment]
        return rows, [i for i, when in self.deletions if when >= moment]

    def by_page(self, request: Request) -> Reply:
        rows, deleted = self.changed(request)
        size = min(int(request.query["per_page"]), self.max_page_size)
        start = (int(request.query["page"]) - 1) * size
        return Reply(200, {"items": rows[start : start + size], "deleted": deleted})

    def by_offset(self, request: Request) -> Reply:
        rows, _ = self.changed(request)
        size = min(int(request.query["limit"]), self.max_page_size)
        start = int(request.query["offset"])
        return Reply(200, {"items": rows[start : start + size]})

    def by_cursor(self, style: str):
        def handler(request: Request) -> Reply:
            rows, _ = self.changed(request)
            start = int(request.query.get("after", "0"))
            page = rows[start : start + 100]
            more = start + 100 < len(rows)
            if style == "cursor":
                return Reply(
                    200, {"items": page, "meta": {"next_cursor": str(start + 100) if more else None}}
                )
            link = f"/api/all?after={start + 100}"
            if style == "next_link":
                return Reply(200, {"items": page, "links": {"next": link if more else ""}})
            headers = {"Link": f'<{link}>; rel="next"'} if more else {}
            return Reply(200, {"items": page}, headers=headers)

        return handler


def mirror_options(api: FakeRestApi, **overrides: Any) -> dict[str, Any]:
    options = {
        "mode": "mirror",
        "list_url": api.url + "/api/all",
        "list_results": "items",
        "paging": "page",
        "page_size": 100,
        "since_param": "updated_since",
        "since_overlap": 0,
        "deleted": "deleted",
        "fields": {"id": "id", "name": "name", "phones": "phone", "last_activity": "updated_at"},
    }
    options.update(overrides)
    return options


def test_mirror_pages_then_syncs_incrementally_then_full_listing_removes_deleted(api, tmp_path):
    erp = FakeErp(250)
    api.route("GET", "/api/all", erp.by_page)
    mirror = MirroredBackend(build(mirror_options(api), tmp_path))

    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental, outcome.error
    assert outcome.written == 250
    assert [(r.query["page"], r.query["per_page"]) for r in api.requests] == [
        ("1", "100"),
        ("2", "100"),
        ("3", "100"),
    ]
    assert all("updated_since" not in r.query for r in api.requests)
    found = mirror.lookup(parse_number("+41 21 555 01 07"), 5)
    assert [(c.id, c.name) for c in found] == [("107", "Person 107")]

    # changes at the source: one renamed, one deleted (reported), one added
    cursor = mirror.store.get_meta("cursor")
    assert cursor is not None and cursor.endswith("Z")
    time.sleep(0.01)
    now = datetime.now(UTC)
    erp.contacts[7] = FakeErp.make(7, now, name="Renamed Seven")
    del erp.contacts[8]
    erp.deletions.append((8, now))
    erp.contacts[251] = FakeErp.make(251, now)
    api.requests.clear()

    outcome = mirror.sync_now()
    assert outcome.ok and outcome.incremental, outcome.error
    # a short first page may be the API's own page cap: one more (empty) page confirms the end
    assert [(r.query["page"], r.query.get("updated_since")) for r in api.requests] == [
        ("1", cursor),
        ("2", cursor),
    ]
    assert outcome.written == 2 and outcome.deleted == 1
    assert [c.name for c in mirror.lookup(parse_number("021 555 00 07"), 5)] == ["Renamed Seven"]
    assert mirror.lookup(parse_number("021 555 00 08"), 5) == []
    assert [c.id for c in mirror.lookup(parse_number("021 555 02 51"), 5)] == ["251"]
    assert mirror.store.stats()["contacts"] == 250

    # deleted without a trace: only a full listing notices
    del erp.contacts[9]
    outcome = mirror.sync_now()
    assert outcome.ok and mirror.store.has_contact("9")
    outcome = mirror.sync_now(full=True)
    assert outcome.ok and not outcome.incremental and outcome.deleted == 1
    assert not mirror.store.has_contact("9")
    assert mirror.store.stats()["contacts"] == 249


def test_mirror_offset_paging_survives_an_api_that_caps_the_page_size(api, tmp_path):
    erp = FakeErp(250, max_page_size=40)
    api.route("GET", "/api/all", erp.by_offset)
    backend = build(mirror_options(api, paging="offset", since_param=None, deleted=None), tmp_path)
    mirror = MirroredBackend(backend)
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 250, outcome.error
    assert [r.query["offset"] for r in api.requests] == ["0", "40", "80", "120", "160", "200", "240"]
    assert {r.query["limit"] for r in api.requests} == {"100"}
    assert mirror.store.get_meta("cursor") is None  # no since_param: every sync is a full listing


@pytest.mark.parametrize("style", ["cursor", "next_link", "link"])
def test_mirror_cursor_and_next_link_paging(api, tmp_path, style):
    erp = FakeErp(250)
    api.route("GET", "/api/all", erp.by_cursor(style))
    options = {
        "cursor": {"paging": "cursor", "next": "meta.next_cursor", "page_param": "after"},
        "next_link": {"paging": "cursor", "next": "links.next"},
        "link": {"paging": "link"},
    }[style]
    backend = build(mirror_options(api, since_param=None, deleted=None, **options), tmp_path)
    outcome = MirroredBackend(backend).sync_now()
    assert outcome.ok and outcome.written == 250, outcome.error
    assert [r.query.get("after") for r in api.requests] == [None, "100", "200"]


def test_mirror_stops_on_a_paging_loop_and_at_max_pages_without_deleting(api, tmp_path):
    erp = FakeErp(250)
    api.route("GET", "/api/all", erp.by_page)
    backend = build(mirror_options(api, max_pages=2), tmp_path)
    mirror = MirroredBackend(backend)
    outcome = mirror.sync_now()
    assert not outcome.ok and "max_pages = 2" in outcome.error
    assert mirror.store.stats()["contacts"] == 200

    first_page = [erp.contacts[i] for i in range(1, 101)]
    api.route("GET", "/api/all", lambda r: Reply(200, {"items": first_page}))  # ignores `page`
    backend = build(mirror_options(api), tmp_path)
    outcome = MirroredBackend(backend).sync_now(full=True)
    assert not outcome.ok and "repeated page 1 as page 2" in outcome.error
    assert mirror.store.stats()["contacts"] == 200  # nothing deleted by a failed listing


def test_mirror_keeps_contacts_without_phones_and_skips_records_without_id(api, tmp_path):
    rows = [
        {"id": 1, "name": "No phone"},
        {"name": "No id", "phone": "021 555 00 01"},
        FakeErp.make(2, datetime.now(UTC)),
    ]
    api.route("GET", "/api/all", lambda r: Reply(200, {"items": rows}))
    mirror = MirroredBackend(build(mirror_options(api, paging="none", since_param=None), tmp_path))
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 2
    assert mirror.store.contact_ids() == {"1", "2"}


def test_mirror_listing_errors_are_reported(api, tmp_path):
    api.route("GET", "/api/all", lambda r: Reply(503, {}))
    outcome = MirroredBackend(build(mirror_options(api), tmp_path)).sync_now()
    assert not outcome.ok and "HTTP 503" in outcome.error
    api.route("GET", "/api/all", lambda r: Reply(200, body=b"{not json"))
    outcome = MirroredBackend(build(mirror_options(api), tmp_path)).sync_now()
    assert not outcome.ok and "did not answer JSON" in outcome.error


# --- CallFlow --------------------------------------------------------------------------------------
CALL = CallRecord(
    contact_id="C/3",
    direction="incoming",
    originator_number="+41215522000",
    originator_name='Anna "Nan" Mü\\ller\nline2',
    destination_number="+41445550101",
    destination_name="Desk 1",
    started=datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC),
    answered=datetime(2024, 5, 1, 8, 0, 5, tzinfo=UTC),
    ended=datetime(2024, 5, 1, 8, 2, 10, tzinfo=UTC),
    user_id="u-7",
    key="call-key-123",
)
CALL_BODY = (
    '{"contact": "{contact_id}", "direction": "{direction}", "status": "{status}", '
    '"from": "{originator_number}", "from_name": "{originator_name}", "to": "{destination_number}", '
    '"to_name": "{destination_name}", "started": "{started}", "answered": "{answered}", '
    '"ended": "{ended}", "duration": {duration}, "user": "{user_id}", "key": "{call_key}"}'
)


def call_options(api: FakeRestApi, **call_log: Any) -> dict[str, Any]:
    options = live_options(api, workflows=["CallFlow"])
    options["call_log"] = {
        "request_url": api.url + "/api/contacts/{contact_id}/calls",
        "headers": {"X-Source": "peoplefone {direction}"},
        "body": CALL_BODY,
        "id": "data.id",
        "url": "data.links.self",
        **call_log,
    }
    return options


def created(request: Request) -> Reply:
    return Reply(201, {"data": {"id": 991, "links": {"self": "https://erp.example/calls/991"}}})


def test_call_log_sends_the_configured_body_exactly_and_reads_id_and_url(api, tmp_path):
    api.route("POST", "/api/contacts/C%2F3/calls", created)
    backend = build(call_options(api), tmp_path)
    assert backend.can_log_calls is True

    result = backend.log_call(CALL)

    assert result == WorkflowResult(id="991", url="https://erp.example/calls/991")
    (request,) = api.requests
    assert request.raw_path == "/api/contacts/C%2F3/calls"
    assert request.body.decode("utf-8") == (
        '{"contact": "C/3", "direction": "incoming", "status": "answered", '
        '"from": "+41215522000", "from_name": "Anna \\"Nan\\" Mü\\\\ller\\nline2", "to": "+41445550101", '
        '"to_name": "Desk 1", "started": "2024-05-01T08:00:00Z", "answered": "2024-05-01T08:00:05Z", '
        '"ended": "2024-05-01T08:02:10Z", "duration": 125, "user": "u-7", "key": "call-key-123"}'
    )
    assert request.json()["from_name"] == 'Anna "Nan" Mü\\ller\nline2'
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "call-key-123"
    assert request.headers["x-source"] == "peoplefone incoming"
    assert request.headers["authorization"] == "Bearer s3cret-token"


def test_call_log_table_body_keeps_types(api, tmp_path):
    api.route("PUT", "/api/calls", created)
    missed = CallRecord(
        contact_id="42",
        direction="outgoing",
        destination_number="+41215522000",
        destination_name="Bruno",
        started=datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        ended=datetime(2024, 5, 1, 9, 0, 30, tzinfo=UTC),
        key="k2",
    )
    body = {
        "call": {
            "contact": "{contact_id}",
            "duration": "{duration}",
            "answered": "{answered}",
            "ended": "{ended}",
        },
        "subject": "Call with {remote_name} ({status})",
        "note": "{summary}",
        "tags": ["phone", "{direction}"],
    }
    backend = build(call_options(api, request_url=api.url + "/api/calls", method="PUT", body=body), tmp_path)
    assert backend.log_call(missed).id == "991"
    assert api.requests[0].method == "PUT"
    assert api.requests[0].json() == {
        "call": {"contact": "42", "duration": 0, "answered": None, "ended": "2024-05-01T09:00:30Z"},
        "subject": "Call with Bruno (missed)",
        "note": "Outgoing call to Bruno, missed",
        "tags": ["phone", "outgoing"],
    }


def test_call_log_form_encoded_body(api, tmp_path):
    api.route("POST", "/api/calls", lambda r: Reply(201, body=b""))
    backend = build(
        call_options(
            api,
            request_url=api.url + "/api/calls",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body="contact={contact_id}&who={originator_name}",
        ),
        tmp_path,
    )
    assert backend.log_call(CALL) == WorkflowResult(id=None, url=None)
    assert api.requests[0].body == b"contact=C%2F3&who=Anna+%22Nan%22+M%C3%BC%5Cller%0Aline2"


def test_call_log_errors(api, tmp_path):
    backend = build(call_options(api), tmp_path)
    path = "/api/contacts/C%2F3/calls"
    api.route("POST", path, lambda r: Reply(404, {"error": "no such contact"}))
    with pytest.raises(ContactNotFound):
        backend.log_call(CALL)
    api.route("POST", path, lambda r: Reply(500, {}))
    with pytest.raises(BackendUnavailable, match="HTTP 500"):
        backend.log_call(CALL)
    api.route("POST", path, lambda r: Reply(429, {}, headers={"Retry-After": "2"}))
    with pytest.raises(RateLimited) as info:
        backend.log_call(CALL)
    assert info.value.retry_after == 2
    api.route("POST", path, lambda r: Reply(401, {}))
    with pytest.raises(CredentialsRejected):
        backend.log_call(CALL)
    # recorded, but the answer is not JSON: no id rather than an error that would cause a retry
    api.route("POST", path, lambda r: Reply(200, body=b"OK", headers={"Content-Type": "text/plain"}))
    assert backend.log_call(CALL) == WorkflowResult(id=None, url=None)


def test_can_log_calls_only_when_configured(api, tmp_path):
    plain = build(live_options(api), tmp_path)
    assert plain.can_log_calls is False
    with pytest.raises(NotImplementedError):
        plain.log_call(CALL)
    mirrored = MirroredBackend(build(mirror_options(api, call_log=call_options(api)["call_log"]), tmp_path))
    assert mirrored.can_log_calls is True
    api.route("POST", "/api/contacts/C%2F3/calls", created)
    assert mirrored.log_call(CALL).url == "https://erp.example/calls/991"


# --- the documentation's examples ------------------------------------------------------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "backends" / "rest.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def doc_backends(api: FakeRestApi) -> list[dict[str, Any]]:
    tables = []
    for block in doc_blocks("toml"):
        text = re.sub(r"\$\{[A-Z_]+\}", "secret-from-env", block)
        text = text.replace("https://erp.muster.example", api.url)
        parsed = tomllib.loads(text)
        tenants = parsed.get("tenant", [])
        for tenant in [tenants] if isinstance(tenants, dict) else tenants:  # a fragment: one tenant
            tables.extend(b for b in tenant.get("backend", []) if b.get("type") == "rest")
    return tables


def test_documented_examples_load(api, tmp_path):
    tables = doc_backends(api)
    assert len(tables) == 4
    for table in tables:
        build(table, tmp_path)


def test_documented_erp_example_end_to_end(api, tmp_path):
    """The mirror example of docs/backends/rest.md, fed its own sample answer."""
    sample = json.loads(doc_blocks("json")[0])
    api.route(
        "GET", "/api/v2/contacts", lambda r: Reply(200, sample if r.query["page"] == "1" else {"data": []})
    )
    api.route(
        "POST",
        "/api/v2/contacts/4711/activities",
        lambda r: Reply(201, {"data": {"id": 99812, "web_url": "https://erp/a/99812"}}),
    )
    table = doc_backends(api)[0]
    mirror = MirroredBackend(build(table, tmp_path))
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 1, outcome.error
    assert api.requests[0].headers["authorization"] == "Bearer secret-from-env"
    assert api.requests[0].query == {"page": "1", "per_page": "500"}
    for spelling in ("41215522000", "+41 79 555 12 34", "021 552 20 10"):
        (anna,) = mirror.lookup(parse_number(spelling), 5)
        assert anna.name == "Anna Muster" and anna.company == "Muster AG"
    assert anna.contact_uri == api.url + "/contacts/4711"
    assert anna.custom_data == {"Customer no.": "K-1001", "Language": "de"}

    result = mirror.log_call(dataclasses.replace(CALL, contact_id="4711"))
    assert result == WorkflowResult(id="99812", url="https://erp/a/99812")
    assert api.requests[-1].json() == {
        "type": "phone_call",
        "subject": 'Incoming call from Anna "Nan" Mü\\ller\nline2, answered, 2:05',
        "direction": "incoming",
        "status": "answered",
        "number": "+41215522000",
        "started_at": "2024-05-01T08:00:00Z",
        "answered_at": "2024-05-01T08:00:05Z",
        "ended_at": "2024-05-01T08:02:10Z",
        "duration_seconds": 125,
        "erp_user": "u-7",
    }


def test_call_values_in_headers_cannot_inject_headers(api, tmp_path):
    api.route("POST", "/api/calls", created)
    backend = build(
        call_options(api, request_url=api.url + "/api/calls", headers={"X-Caller": "{originator_name}"}),
        tmp_path,
    )
    backend.log_call(dataclasses.replace(CALL, originator_name="Řehoř\r\nX-Evil: 1"))
    headers = api.requests[0].headers
    assert headers["x-caller"] == "?eho?  X-Evil: 1"
    assert "x-evil" not in headers


def test_try_forms_share_one_deadline(api, tmp_path):
    api.route("GET", "/api/exact", lambda r: Reply(200, [], delay=0.25))
    backend = build(
        {
            "lookup_url": api.url + "/api/exact?phone={number}",
            "try_forms": ["e164", "national", "nsn", "digits"],
            "fields": {"id": "id", "name": "name", "phones": "phone"},
            "timeout": 0.4,
        },
        tmp_path,
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="out of time|did not answer"):
        backend.lookup(NUMBER, 5)
    assert time.monotonic() - started < 0.6
    assert len(api.requests) == 2


# --- exactly once through lost answers -----------------------------------------------------------------
class Erp:
    """An in-house API storing calls. ``idempotent``: it honours ``Idempotency-Key`` (a repeated key
    gets the record made the first time). ``lose``: that many answers to a create are lost after the
    call was stored."""

    def __init__(self, api: FakeRestApi, idempotent: bool = False, lose_by: str = "drop"):
        self.calls: list[dict[str, Any]] = []
        self.by_key: dict[str, dict[str, Any]] = {}
        self.idempotent = idempotent
        self.lose = 0
        self.lose_by = lose_by
        api.route("POST", "/api/contacts/C%2F3/calls", self.create)
        api.route("GET", "/api/calls", self.find)

    def create(self, request: Request) -> Reply:
        key = request.headers.get("idempotency-key", "")
        record = self.by_key.get(key) if self.idempotent else None
        if record is None:
            record = {"id": 500 + len(self.calls), "key": request.json()["key"]}
            self.calls.append(record)
            self.by_key[key] = record
        answer = {"data": {"id": record["id"], "links": {"self": f"https://erp.example/calls/{record['id']}"}}}
        if self.lose:
            self.lose -= 1
            return Reply(201, answer, drop=self.lose_by == "drop", delay=1.0 if self.lose_by == "delay" else 0.0)
        return Reply(201, answer)

    def find(self, request: Request) -> Reply:
        found = [
            {"id": r["id"], "links": {"self": f"https://erp.example/calls/{r['id']}"}}
            for r in self.calls
            if r["key"] == request.query.get("key")
        ]
        return Reply(200, {"items": found})


FIND_CALL = {"request_url": "{0}/api/calls?key={{call_key}}", "results": "items", "id": "id", "url": "links.self"}


def find_options(api: FakeRestApi, **find: Any) -> dict[str, Any]:
    table = {**FIND_CALL, "request_url": FIND_CALL["request_url"].format(api.url), **find}
    return call_options(api, find_call=table)


@pytest.mark.parametrize("lose_by", ["drop", "delay"])
def test_lost_answer_an_api_honouring_idempotency_key_records_the_call_once(api, tmp_path, lose_by):
    erp = Erp(api, idempotent=True, lose_by=lose_by)
    erp.lose = 1
    backend = build(call_options(api), tmp_path, timeout=0.4)
    with pytest.raises(BackendUnavailable):
        backend.log_call(CALL)
    result = build(call_options(api), tmp_path, timeout=0.4).log_call(CALL)
    assert result == WorkflowResult(id="500", url="https://erp.example/calls/500")
    assert len(erp.calls) == 1
    assert {r.headers["idempotency-key"] for r in api.requests} == {"call-key-123"}


@pytest.mark.parametrize("lose_by", ["drop", "delay"])
def test_lost_answer_find_call_finds_the_record_before_creating_again(api, tmp_path, lose_by):
    erp = Erp(api, idempotent=False, lose_by=lose_by)  # ignores Idempotency-Key
    erp.lose = 1
    with pytest.raises(BackendUnavailable):
        build(find_options(api), tmp_path, timeout=0.4).log_call(CALL)
    assert len(erp.calls) == 1
    result = build(find_options(api), tmp_path, timeout=0.4).log_call(CALL)
    assert result == WorkflowResult(id="500", url="https://erp.example/calls/500")
    assert len(erp.calls) == 1
    assert [r.method for r in api.requests] == ["GET", "POST", "GET"]
    assert api.requests[-1].raw_path == "/api/calls?key=call-key-123"
    # a call not recorded yet is created after the look
    other = dataclasses.replace(CALL, key="another-call")
    assert build(find_options(api), tmp_path).log_call(other).id == "501"


def test_find_call_failing_creates_nothing(api, tmp_path):
    erp = Erp(api)
    api.route("GET", "/api/calls", lambda r: Reply(503, {}))
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        build(find_options(api), tmp_path).log_call(CALL)
    api.route("GET", "/api/calls", lambda r: Reply(200, body=b"<html>login</html>"))
    with pytest.raises(BackendUnavailable, match="JSON"):
        build(find_options(api), tmp_path).log_call(CALL)
    assert erp.calls == []
    # 404 means "no such record": the call is created
    api.route("GET", "/api/calls", lambda r: Reply(404, {}))
    assert build(find_options(api), tmp_path).log_call(CALL).id == "500"
    # an answer that is no record (an empty envelope read with the default results = "@") neither
    api.route("GET", "/api/calls", lambda r: Reply(200, {"items": []}))
    table = find_options(api, results="@")
    del table["call_log"]["find_call"]["id"]
    assert build(table, tmp_path).log_call(dataclasses.replace(CALL, key="k-env")).id == "501"
    assert len(erp.calls) == 2


def test_find_call_options_are_checked(tmp_path, api):
    bad = find_options(api, method="GET", body={"key": "{call_key}"})
    assert config_error(bad, tmp_path).key == "call_log.find_call.body"
    bad = find_options(api, request_url=api.url + "/api/calls?phone={e164}")
    assert config_error(bad, tmp_path).key == "call_log.find_call.request_url"


@pytest.mark.parametrize("status", [400, 410, 422])
def test_call_refused_for_good_is_a_permanent_error(api, tmp_path, status):
    api.route("POST", "/api/contacts/C%2F3/calls", lambda r: Reply(status, {"error": "field rejected"}))
    with pytest.raises(DeliveryRefused, match=f"HTTP {status}"):
        build(call_options(api), tmp_path).log_call(CALL)


def test_search_url_searches_by_name_as_typed(api, tmp_path):
    def by_name(request: Request) -> Reply:
        term = request.query.get("q", "").lower()
        hits = [c for c in ERP_CONTACTS if term in f"{c['first']} {c['last'] or ''}".lower()]
        return Reply(200, {"items": hits[: int(request.query.get("max", "20"))]})

    api.route("GET", "/api/search", by_name)
    backend = build(live_options(api), tmp_path, search_url=api.url + "/api/search?q={term}&max={limit}",
                    search_results="items")
    assert [(c.id, c.name) for c in backend.search("anna m", 20)] == [("1", "Anna Muster")]
    assert [c.id for c in backend.search("e", 2)] == ["1", "2"]  # the API's order, at most the limit
    assert api.requests[-1].query == {"q": "e", "max": "2"}
    assert backend.search(" ", 20) == [] and build(live_options(api), tmp_path).search("anna", 20) == []
    api.route("GET", "/api/search", lambda r: Reply(200, {"unexpected": True}))
    with pytest.raises(BackendUnavailable, match="search_results"):
        backend.search("anna", 20)


def test_a_rejected_credential_is_one_error_line_through_the_service(api, tmp_path, make_app, caplog):
    """The HTTP base says it once; the engine adds no second line of its own."""
    api.route("GET", "/api/contacts", lambda r: Reply(401, {}))
    config = tmp_path / "lookup.toml"
    config.write_text(f"""
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "erp"
  type = "rest"
  lookup_url = "{api.url}/api/contacts?phone={{e164}}"
    [tenant.backend.fields]
    id = "id"
    name = "name"
    phones = "phones"
""")
    client = make_app(LOOKUP_CONFIG=str(config), LOOKUP_BREAKER_FAILURES=100).test_client()
    with caplog.at_level(logging.DEBUG):
        for i in range(3):
            answer = client.get(f"/Lookup?phoneNumber=4121552200{i}", headers={"X-Execution-Token": "acme-token-1234"})
            assert answer.status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "credentials" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]
# --- search_formats: a source whose search finds only the exact string stored ------------------------
class ExactPhoneApi:
    """GET /people?phone=... answers the people whose stored phone is exactly that text."""

    def __init__(self, api: FakeRestApi, people: list[dict[str, Any]]):
        self.people = people
        self.asked: list[str] = []
        api.route("GET", "/people", self.search)
        api.route("POST", "/people", self.create)

    def search(self, request: Request) -> Reply:
        wanted = request.query.get("phone", "")
        self.asked.append(wanted)
        return Reply(200, {"items": [p for p in self.people if p["phone"] == wanted]})

    def create(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body.get("name"), str) or not body["name"] or not isinstance(body.get("phone"), str):
            return Reply(422, {"error": "name and phone are required"})
        person = {"id": 100 + len(self.people), "name": body["name"], "phone": body["phone"],
                  "company": body.get("company")}
        self.people.append(person)
        return Reply(201, {"data": {**person, "link": f"https://erp.example/people/{person['id']}"}})


EXACT = {
    "lookup_url": "/people?phone={number}",
    "results": "items",
    "fields": {"id": "id", "name": "name", "phones": "phone", "company": "company"},
}


def exact_options(api: FakeRestApi, **more: Any) -> dict[str, Any]:
    return {**EXACT, "lookup_url": api.url + EXACT["lookup_url"], **more}


def test_a_search_format_finds_a_contact_stored_only_in_that_spelling(api, tmp_path):
    ExactPhoneApi(api, [{"id": 7, "name": "Anna Muster", "phone": "(021) 552-2000"}])
    without = build(exact_options(api), tmp_path)
    assert without.lookup(NUMBER, 5) == []
    backend = build(exact_options(api, try_forms=["e164", "national"],
                                  search_formats=["0## ### ## ##", "(0##) ###-####"]), tmp_path)
    [found] = backend.lookup(NUMBER, 5)
    assert found.id == "7" and found.exact
    # the automatic spellings first, then each format that fits, until one finds
    assert [r.query["phone"] for r in api.requests[-4:]] == [
        "+41215522000", "0215522000", "021 552 20 00", "(021) 552-2000"]


def test_a_formatted_candidate_is_still_rechecked(api, tmp_path):
    # the source answers a wrong record for the formatted spelling: the re-check drops it
    api.route("GET", "/people", lambda request: Reply(200, {"items": [{"id": 9, "name": "Other",
                                                                       "phone": "021 552 20 01"}]}))
    backend = build(exact_options(api, search_formats=["0## ### ## ##"]), tmp_path)
    assert backend.lookup(NUMBER, 5) == []


def test_search_formats_need_the_number_placeholder_and_a_digit_each(api, tmp_path):
    error = config_error(exact_options(api, lookup_url=api.url + "/people?phone={e164}",
                                       search_formats=["0## ### ## ##"]), tmp_path)
    assert error.key == "search_formats" and "{number}" in str(error)
    error = config_error(exact_options(api, search_formats=["021 552"]), tmp_path)
    assert "search_formats" in str(error) and "'#'" in str(error)


# --- CreateContact: the [create_contact] request ------------------------------------------------------
CREATE = {
    "request_url": "/people",
    "body": {"name": "{name}", "phone": "{e164}", "company": "{company}"},
    "id": "data.id",
    "url": "data.link",
}


def test_create_contact_sends_the_template_and_reads_id_and_link(api, tmp_path):
    from lookup_core.types import NewContact

    people = ExactPhoneApi(api, [])
    backend = build(exact_options(api, create_contact={**CREATE, "request_url": api.url + "/people"}), tmp_path)
    assert type(backend).can_create_contacts(backend.options)
    result = backend.create_contact(NewContact(number="+41215522000", name="Anna Muster", company="Muster AG",
                                               key="k" * 64))
    assert result == WorkflowResult(id="100", url="https://erp.example/people/100")
    sent = api.requests[-1]
    assert sent.json() == {"name": "Anna Muster", "phone": "+41215522000", "company": "Muster AG"}
    assert sent.headers["idempotency-key"] == "k" * 64
    assert people.people[0]["phone"] == "+41215522000"
    assert backend.lookup(NUMBER, 5)[0].id == "100"


def test_create_contact_refused_by_the_api_is_a_refusal_for_good(api, tmp_path):
    from lookup_core.types import NewContact

    ExactPhoneApi(api, [])
    backend = build(exact_options(api, create_contact={**CREATE, "request_url": api.url + "/people",
                                                       "body": {"phone": "{e164}"}}), tmp_path)
    with pytest.raises(DeliveryRefused) as info:
        backend.create_contact(NewContact(number="+41215522000", name="x"))
    assert "422" in str(info.value) and "+41215522000" not in str(info.value)


def test_without_a_create_contact_request_the_backend_cannot_create(api, tmp_path):
    backend = build(exact_options(api), tmp_path)
    assert not type(backend).can_create_contacts(backend.options)


def test_phone_types_beside_the_phones_give_each_number_its_type(api, tmp_path):
    records = [
        {"id": 1, "name": "Anna Muster", "role": "CFO", "avatar": "https://erp.example/a.png",
         "phones": [{"number": "+41 21 552 20 00", "type": "Office"}, {"number": "079 123 45 67", "type": "cell"}]},
        # one entry without a type: the two lists cannot be paired, no number is typed
        {"id": 2, "name": "Bruno Keller", "phones": [{"number": "+41 21 552 20 00"}, {"number": "079 000 00 00",
                                                                                     "type": "cell"}]},
    ]
    api.route("GET", "/api/contacts", lambda r: Reply(200, {"data": records}))
    fields = {"id": "id", "name": "name", "phones": "phones[].number", "phone_types": "phones[].type",
              "job_title": "role", "image_url": "avatar"}
    backend = build({"lookup_url": api.url + "/api/contacts?phone={national}", "results": "data",
                     "fields": fields}, tmp_path)
    anna, bruno = backend.lookup(NUMBER, 5)
    assert anna.phone_types == {"+41 21 552 20 00": "business", "079 123 45 67": "mobile"}
    assert (anna.job_title, anna.image_url) == ("CFO", "https://erp.example/a.png")
    assert bruno.phone_types == {} and bruno.job_title is None and bruno.image_url is None
    # separate fields: a literal list of labels beside them, a missing field keeps the positions
    api.route("GET", "/api/one", lambda r: Reply(200, {"data": [
        {"id": 3, "name": "Chantal", "tel": None, "mobile": "+41 21 552 20 00"}]}))
    fields = {"id": "id", "name": "name", "phones": "[tel, mobile]", "phone_types": "['work', 'mobile']"}
    [chantal] = build({"lookup_url": api.url + "/api/one?phone={national}", "results": "data",
                       "fields": fields}, tmp_path).lookup(NUMBER, 5)
    assert chantal.phone_types == {"+41 21 552 20 00": "mobile"}
# --- call updates, MessageLog digests, users: the example ERP of tests/fakes/rest_api.py ---------------
def erp_options(api: FakeRestApi, **more: Any) -> dict[str, Any]:
    root = api.url + "/erp"
    options = {
        "lookup_url": root + "/people?phone={number}",
        "results": "items",
        "fields": {"id": "id", "name": "name", "phones": "phone"},
        "contact_uri_template": "https://erp.example/people/{id}",
        "workflows": ["CallFlow"],
        "call_log": {
            "request_url": root + "/calls", "id": "data.id", "url": "data.url",
            "body": {"contact_id": "{contact_id}", "direction": "{direction}", "status": "{status}",
                     "key": "{call_key}", "started": "{started}", "answered": "{answered}", "ended": "{ended}",
                     "duration": "{duration}", "subject": "{summary}", "note": "{note}", "owner": "{user_id}"},
        },
        "call_log_update": {
            "request_url": root + "/calls/{record_id}", "url": "data.url",
            "body": {"status": "{status}", "answered": "{answered}", "ended": "{ended}", "duration": "{duration}",
                     "subject": "{summary}", "note": "{note}"},
        },
        "message_log": {
            "request_url": root + "/messages", "id": "data.id", "url": "data.url",
            "body": {"contact_id": "{contact_id}", "kind": "{type}", "key": "{record_key}", "title": "{title}",
                     "text": "{body}", "count": "{message_count}", "link": "{link}", "owner": "{user_id}"},
        },
        "message_log_update": {
            "request_url": root + "/messages/{record_id}",
            "body": {"title": "{title}", "text": "{body}", "count": "{message_count}", "link": "{link}"},
        },
        "users": {"request_url": root + "/users", "results": "users",
                  "fields": {"id": "login", "name": "profile.display", "email": "profile.mail"}},
    }
    for key, value in more.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = value
    return options


RING = CallRecord(contact_id="1", direction="incoming", originator_number="+41215522000", originator_name="Anna",
                  started=datetime(2026, 11, 21, 9, 0, tzinfo=UTC), user_id="u7", key="ring-key")
HANG_UP = RING.merged(CallRecord(contact_id="1", direction="incoming", answered=datetime(2026, 11, 21, 9, 0, 5,
                                                                                       tzinfo=UTC),
                                 ended=datetime(2026, 11, 21, 9, 2, 10, tzinfo=UTC), note="Wants a quote", key="k"))


def digest(count: int, day: str = "2026-11-21", **fields: Any):
    from lookup_core.types import Message, MessageLog

    messages = tuple(
        Message(id=f"m-{day}-{n}", time=datetime.fromisoformat(f"{day}T09:{n:02d}:00+00:00"),
                direction="incoming" if n % 2 else "outgoing", text=f"message number {n}",
                from_number="+41215522000" if n % 2 else "+41445001020", from_name="Anna Muster" if n % 2 else None,
                to_number="+41445001020" if n % 2 else "+41215522000", to_name=None if n % 2 else "Anna Muster")
        for n in range(1, count + 1))
    return MessageLog(contact_id="1", kind="SMS", conversation_id="c-1", day=day, zone="Europe/Zurich",
                      messages=messages, key=f"digest-{day}", **fields)


def test_a_call_posted_at_ring_and_at_hang_up_is_one_record_with_the_final_duration(api, tmp_path):
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    backend = build(erp_options(api), tmp_path)
    first = backend.log_call(RING)
    assert first == WorkflowResult(id="100", url="https://erp.example/calls/100")
    assert erp.calls[100]["status"] == "missed" and erp.calls[100]["duration"] == 0
    assert backend.update_call(first.id, HANG_UP) == first
    assert list(erp.calls) == [100]
    record = erp.calls[100]
    assert (record["status"], record["duration"], record["ended"], record["note"]) == (
        "answered", 125, "2026-11-21T09:02:10Z", "Wants a quote")
    assert record["subject"] == "Incoming call from Anna, answered, 2:05\nWants a quote"
    patch = api.requests[-1]
    assert (patch.method, patch.raw_path) == ("PATCH", "/erp/calls/100")


def test_the_fake_refuses_bad_update_bodies_and_a_record_that_is_gone(api, tmp_path):
    from tests.fakes.rest_api import ErpRecords

    ErpRecords(api)
    first = build(erp_options(api), tmp_path).log_call(RING)
    read_only = erp_options(api)["call_log_update"]
    read_only["body"] = {**read_only["body"], "contact_id": "{contact_id}"}
    with pytest.raises(DeliveryRefused, match="HTTP 422"):
        build(erp_options(api, call_log_update=read_only), tmp_path).update_call(first.id, HANG_UP)
    wrong_type = dict(read_only, body={"duration": "{summary}"})
    with pytest.raises(DeliveryRefused, match="HTTP 422"):
        build(erp_options(api, call_log_update=wrong_type), tmp_path).update_call(first.id, HANG_UP)
    with pytest.raises(DeliveryRefused, match="not there any more"):
        build(erp_options(api), tmp_path).update_call("999", HANG_UP)
    assert "+41215522000" not in str(api.requests[-1].body)  # the update carries no number it does not need


def test_without_a_call_log_update_the_first_record_is_kept_and_said_once(api, tmp_path, caplog):
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    backend = build(erp_options(api, call_log_update=None), tmp_path)
    first = backend.log_call(RING)
    with caplog.at_level(logging.INFO, logger="crm_backends.rest"):
        assert backend.update_call(first.id, HANG_UP).id == first.id
        assert backend.update_call(first.id, HANG_UP).id == first.id
    assert erp.calls[100]["status"] == "missed"
    assert [r.levelname for r in caplog.records if "[call_log_update]" in r.getMessage()] == ["INFO"]
    assert config_error(erp_options(api, call_log=None, workflows=None), tmp_path).key == "call_log_update"


def test_ten_sms_make_one_record_of_ten_lines_a_second_day_a_second_record(api, tmp_path):
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    backend = build(erp_options(api), tmp_path)
    assert RestBackend.can_log_messages(backend.options)
    first = backend.log_message(digest(1))
    assert first == WorkflowResult(id="100", url="https://erp.example/messages/100")
    for count in range(2, 11):
        assert backend.update_message(first.id, digest(count)).id == first.id
    second = backend.log_message(digest(1, day="2026-11-22"))
    assert second.id != first.id and list(erp.messages) == [100, 101]
    record = erp.messages[100]
    assert record["count"] == 10 and record["title"] == "SMS conversation with Anna Muster \u2013 2026-11-21"
    lines = [line for line in record["text"].splitlines() if "message number" in line]
    assert len(lines) == 10 and lines[0] == "10:01 \u2190 Anna Muster: message number 1"
    assert record["text"].count("message number 1\n") == 1
    posts = [r for r in api.requests if r.method == "POST"]
    assert [r.headers["idempotency-key"] for r in posts] == ["digest-2026-11-21", "digest-2026-11-22"]
    assert erp.messages[101]["count"] == 1 and erp.messages[101]["kind"] == "SMS"


def test_a_voicemail_is_one_record_with_its_link(api, tmp_path):
    from lookup_core.types import Message, MessageLog
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    message = Message(id="vm-1", time=datetime(2026, 11, 21, 9, 0, tzinfo=UTC), direction="incoming",
                      from_number="+41215522000", from_name="Anna Muster", link="https://pbx.example/rec/77.mp3")
    voicemail = MessageLog(contact_id="1", kind="Voicemail", conversation_id="c", day="2026-11-21", zone="UTC",
                           messages=(message,), key="vm-key")
    build(erp_options(api), tmp_path).log_message(voicemail)
    [record] = erp.messages.values()
    assert record["kind"] == "Voicemail" and record["link"] == "https://pbx.example/rec/77.mp3"
    assert record["title"] == "Voicemail from Anna Muster \u2013 2026-11-21" and "77.mp3" in record["text"]


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotency-key", "find-message"])
def test_a_message_record_whose_answer_was_lost_is_not_duplicated(api, tmp_path, idempotent):
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api, idempotent=idempotent)
    message_log = erp_options(api)["message_log"]
    if not idempotent:  # an API ignoring Idempotency-Key: find_message asks for the record first
        message_log["find_message"] = {"request_url": api.url + "/erp/messages?key={record_key}",
                                       "results": "items", "id": "id", "url": "url"}
    erp.lose = 1
    with pytest.raises(BackendUnavailable):
        build(erp_options(api, message_log=message_log), tmp_path, timeout=0.5).log_message(digest(1))
    # the retry holds the messages posted meanwhile: the one record, brought up to date
    result = build(erp_options(api, message_log=message_log), tmp_path).log_message(digest(3))
    assert list(erp.messages) == [100] and result.id == "100"
    assert erp.messages[100]["count"] == 3


def test_users_are_listed_and_an_unknown_user_id_gets_the_default_owner_with_one_warning(api, tmp_path, caplog):
    from lookup_core.types import CrmUser
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    backend = build(erp_options(api, default_user_id="u8"), tmp_path)
    assert RestBackend.can_list_users(backend.options)
    assert backend.list_users() == [CrmUser("u7", "Ursula Seven", "u7@erp.example"), CrmUser("u8", "Ulf Eight")]
    with caplog.at_level(logging.WARNING):
        backend.log_call(dataclasses.replace(RING, user_id="ghost", key="k1"))
        backend.log_call(dataclasses.replace(RING, user_id="ghost", key="k2"))
        backend.log_call(dataclasses.replace(RING, user_id="u7", key="k3"))
        backend.log_message(digest(1, user_id="ghost"))
    assert [c["owner"] for c in erp.calls.values()] == ["u8", "u8", "u7"]
    assert [m["owner"] for m in erp.messages.values()] == ["u8"]
    assert len([r for r in caplog.records if "'ghost'" in r.getMessage()]) == 1
    bad = erp_options(api)["users"]
    bad["fields"] = {"id": "uid"}
    with pytest.raises(BackendUnavailable, match="users.fields.id"):
        build(erp_options(api, users=bad), tmp_path).list_users()


def test_message_requests_come_in_pairs(api, tmp_path):
    assert config_error(erp_options(api, message_log_update=None), tmp_path).key == "message_log"
    assert config_error(erp_options(api, message_log=None), tmp_path).key == "message_log_update"
    bad = erp_options(api)["message_log"]
    bad["body"] = {"when": "{started}"}  # a call's value, not a digest's
    assert config_error(erp_options(api, message_log=bad), tmp_path).key == "message_log.body"
    plain = build(exact_options(api), tmp_path)
    assert not RestBackend.can_log_messages(plain.options) and not RestBackend.can_list_users(plain.options)


ERP_TENANT = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
timezone = "Europe/Zurich"
  [[tenant.backend]]
  name = "erp"
  type = "rest"
  lookup_url = "{root}/people?phone={{number}}"
  results = "items"
  {formats}
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = "phone"
"""


@pytest.mark.parametrize("formats", [True, False], ids=["with-search-formats", "without"])
def test_through_the_service_a_search_format_finds_a_contact_stored_only_in_that_spelling(
        api, tmp_path, make_app, formats):
    from tests.fakes.rest_api import ErpRecords

    ErpRecords(api, people=[{"id": 7, "name": "Anna Muster", "phone": "021 552 20 00"}])
    config = tmp_path / "lookup.toml"
    config.write_text(ERP_TENANT.format(root=api.url + "/erp",
                                        formats='search_formats = ["0## ### ## ##"]' if formats else ""))
    client = make_app(LOOKUP_CONFIG=str(config)).test_client()
    answer = client.get("/Lookup?phoneNumber=41215522000", headers={"X-Execution-Token": "acme-token-1234"})
    assert answer.status_code == 200
    asked = [r.query["phone"] for r in api.requests if r.path == "/erp/people"]
    if formats:
        assert [c["name"] for c in answer.get_json()] == ["Anna Muster"]
        assert asked == ["+41215522000", "021 552 20 00"]  # the automatic spelling, then the format
    else:
        assert answer.get_json() == [] and asked == ["+41215522000"]


def _erp_client(api, tmp_path, make_app):
    """The service with the example ERP of docs/backends/rest.md as its backend ``erp``."""
    options = erp_options(api)
    del options["lookup_url"], options["fields"], options["results"]
    tenant = ERP_TENANT.format(root=api.url + "/erp", formats="")
    config = tmp_path / "lookup.toml"
    with config.open("w") as out:
        out.write(tenant.split("  [tenant.backend.fields]")[0])
        for key, table in options.items():
            if not isinstance(table, dict):
                out.write(f"  {key} = {json.dumps(table)}\n")
        out.write('  [tenant.backend.fields]\n  id = "id"\n  name = "name"\n  phones = "phone"\n')
        for key, table in options.items():
            if isinstance(table, dict):
                out.write(f"  [tenant.backend.{key}]\n")
                for name, value in table.items():
                    out.write(f"  {name} = {_toml_value(value)}\n")
    return make_app(LOOKUP_CONFIG=str(config)).test_client()


ERP_HEADERS = {"X-Execution-Token": "acme-token-1234"}
ERP_RING = {"contactCrmId": "erp:1", "direction": "incoming", "originatorNumber": "41215522000",
            "originatorName": "Anna", "startedTime": "2026-11-21T09:00:00Z"}


def test_through_the_service_a_call_completes_its_record_and_sms_share_one_digest(api, tmp_path, make_app):
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    client = _erp_client(api, tmp_path, make_app)
    headers, call = ERP_HEADERS, ERP_RING
    first = client.post("/CallFlow", json={"inputs": call}, headers=headers)
    assert first.status_code == 200, first.get_json()
    final = client.post("/CallFlow", json={"inputs": {**call, "answeredTime": "2026-11-21T09:00:05Z",
                                                      "endedTime": "2026-11-21T09:03:20Z"}}, headers=headers)
    assert final.status_code == 200 and final.get_json()["id"] == first.get_json()["id"]
    [record] = erp.calls.values()
    assert (record["status"], record["duration"]) == ("answered", 195)
    ids = set()
    for n in range(1, 11):
        sms = {"contactCrmId": "erp:1", "type": "SMS", "direction": "incoming", "fromNumber": "+41215522000",
               "fromName": "Anna Muster", "toNumber": "+41445001020", "text": f"message number {n}",
               "time": f"2026-11-21T09:{n:02d}:00Z", "messageId": f"m-{n}"}
        for _ in range(2 if n == 5 else 1):  # the fifth is posted twice
            response = client.post("/MessageLog", json={"inputs": sms}, headers=headers)
            assert response.status_code == 200, response.get_json()
            ids.add(response.get_json()["id"])
    [message] = erp.messages.values()
    assert len(ids) == 1 and message["count"] == 10 and message["text"].count("message number 5") == 1


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def test_documented_records_example_against_the_fake_erp(api, tmp_path, caplog):
    """The records example of docs/backends/rest.md, against the fake that follows its description."""
    from lookup_core.types import CrmUser
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api, people=[{"id": 1, "name": "Anna Muster", "phone": "021 552 20 00"}], idempotent=False)
    table = doc_backends(api)[-1]
    backend = build(table, tmp_path)
    [anna] = backend.lookup(NUMBER, 5)  # stored only as "021 552 20 00"
    assert anna.id == "1" and anna.contact_uri == api.url + "/people/1"
    first = backend.log_call(dataclasses.replace(RING, user_id="ghost"))
    assert backend.update_call(first.id, HANG_UP).id == first.id
    [call] = erp.calls.values()
    assert (call["status"], call["duration"], call["owner"]) == ("answered", 125, "u8")
    made = backend.log_message(digest(1))
    assert backend.update_message(made.id, digest(2)).id == made.id
    assert backend.log_message(digest(2)).id == made.id  # found by its key: not made twice
    [message] = erp.messages.values()
    assert message["count"] == 2 and message["owner"] == "u8"
    assert backend.list_users()[0] == CrmUser("u7", "Ursula Seven", "u7@erp.example")


def test_a_ring_whose_answer_was_lost_is_completed_by_the_hang_up_though_the_api_replays_it(api, tmp_path, make_app):
    """The ERP answers a repeated Idempotency-Key with the record the key made, unchanged: the
    outbox's retry (carrying the hang-up by then) writes the final call into that record."""
    from tests.fakes.rest_api import ErpRecords

    erp = ErpRecords(api)
    client = _erp_client(api, tmp_path, make_app)
    erp.lose = 1  # the ring is recorded, its answer lost: the request is kept and answered with its key
    first = client.post("/CallFlow", json={"inputs": ERP_RING}, headers=ERP_HEADERS)
    assert first.status_code == 200 and first.get_json()["url"] == ""
    final = client.post("/CallFlow", json={"inputs": {**ERP_RING, "answeredTime": "2026-11-21T09:00:05Z",
                                                      "endedTime": "2026-11-21T09:03:20Z"}}, headers=ERP_HEADERS)
    assert final.status_code == 200, final.get_json()
    [(record_id, record)] = erp.calls.items()
    assert final.get_json()["id"] == str(record_id)
    assert (record["status"], record["duration"]) == ("answered", 195)
