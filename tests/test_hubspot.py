"""The HubSpot backend against a fake HubSpot API (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_backends import hubspot as hubspot_backend
from crm_backends.attempts import AttemptLog
from crm_backends.base import BackendSpec, load_options
from crm_backends.hubspot import HubSpotBackend, call_marker
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
)
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, CrmUser, Message, MessageLog
from tests.fakes.hubspot import PORTAL_ID, TOKEN, FakeHubSpot

SEARCH = "/crm/v3/objects/contacts/search"
ASSOCIATIONS = "/crm/v4/associations/contacts/companies/batch/read"
COMPANIES = "/crm/v3/objects/companies/batch/read"
CALLS = "/crm/v3/objects/calls"
CALLS_SEARCH = "/crm/v3/objects/calls/search"
ACCOUNT = "/account-info/v3/details"
NUMBER = parse_number("41215522000")
FORMS = ["+41215522000", "41215522000", "0215522000", "215522000", "0041215522000"]
PROPERTIES = [
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
]


@pytest.fixture(scope="module")
def fake():
    with FakeHubSpot() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()
    yield
    fake.reset()


@pytest.fixture
def make(fake, build_backend):
    made: list[HubSpotBackend] = []

    def build(deadline_s: float = 2.0, **options) -> HubSpotBackend:
        table = {"access_token": TOKEN, "base_url": fake.url, **options}
        backend = build_backend("hubspot", name="hs", deadline_s=deadline_s, **table)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def contact_url(contact_id: str, domain: str = "app-eu1.hubspot.com") -> str:
    return f"https://{domain}/contacts/{PORTAL_ID}/record/0-1/{contact_id}"


def company_url(company_id: str, domain: str = "app-eu1.hubspot.com") -> str:
    return f"https://{domain}/contacts/{PORTAL_ID}/record/0-2/{company_id}"


# options ----------------------------------------------------------------------------------------
def test_options_are_checked_at_start_up(fake):
    where = "tenant 't', backend 'hs'"
    with pytest.raises(BackendConfigError) as missing:
        load_options(HubSpotBackend, {"name": "hs", "type": "hubspot"}, where)
    assert missing.value.key == "access_token"
    for key, value in [
        ("base_url", "api.hubapi.com"),
        ("app_domain", "https://app.hubspot.com/"),
        ("portal_id", "hub-123"),
        ("custom_properties", ["Job Title"]),
        ("full_sync_interval", -1),
    ]:
        table = {"name": "hs", "type": "hubspot", "access_token": TOKEN, key: value}
        with pytest.raises(BackendConfigError) as bad:
            load_options(HubSpotBackend, table, where)
        assert bad.value.key == key, key
    opts = load_options(
        HubSpotBackend, {"name": "hs", "type": "hubspot", "access_token": TOKEN, "portal_id": 4455}, where
    )
    assert opts["portal_id"] == "4455"
    assert opts["base_url"] == "https://api.hubapi.com"
    assert opts["resolve_company"] is True
    backend = HubSpotBackend(BackendSpec(tenant="t", name="hs", options=opts))
    assert backend.describe()["access_token"] == "***"
    assert backend.rate_per_second == 4
    assert (backend.default_crm_name, backend.modes) == ("HubSpot", frozenset({"live", "mirror"}))
    assert backend.default_crm_logo.startswith("https://")


# lookups ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stored", ["+41 21 552 20 00", "021 552 20 00", "+41215522000"])
@pytest.mark.parametrize("prop", ["phone", "mobilephone"])
def test_match_in_each_stored_format(fake, make, stored, prop):
    wanted = fake.add_contact(firstname="Anna", lastname="Keller", email="anna@keller.ch", **{prop: stored})
    fake.add_contact(firstname="Other", lastname="Person", phone="+41 44 668 18 00")
    backend = make(portal_id=PORTAL_ID, app_domain="app-eu1.hubspot.com", resolve_company=False)

    found = backend.lookup(NUMBER, 5)

    assert [(c.id, c.name, c.phones, c.exact, c.email) for c in found] == [
        (wanted, "Anna Keller", [stored], True, "anna@keller.ch")
    ]
    assert found[0].contact_uri == contact_url(wanted)
    assert fake.recorded(path=ACCOUNT) == []  # portal id configured: never asked


def test_search_request_is_the_documented_one(fake, make):
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    backend.lookup(NUMBER, 5)
    [request] = fake.recorded()
    assert (request.method, request.path) == ("POST", SEARCH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "hs_searchable_calculated_phone_number",
                        "operator": "EQ",
                        "value": "215522000",
                    }
                ]
            },
            {
                "filters": [
                    {
                        "propertyName": "hs_searchable_calculated_mobile_number",
                        "operator": "EQ",
                        "value": "215522000",
                    }
                ]
            },
            {"filters": [{"propertyName": "phone", "operator": "IN", "values": FORMS}]},
            {"filters": [{"propertyName": "mobilephone", "operator": "IN", "values": FORMS}]},
        ],
        "properties": PROPERTIES,
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
        "limit": 20,
    }


def test_several_matches_best_first_and_capped(fake, make):
    now = datetime.now(UTC)
    old = fake.add_contact(firstname="Old", lastname="Call", phone="+41 21 552 20 00")
    fake.update_contact(old, notes_last_updated=int((now - timedelta(days=30)).timestamp() * 1000))
    recent = fake.add_contact(firstname="Recent", lastname="Call", mobilephone="0215522000")
    fake.update_contact(recent, hs_last_sales_activity_timestamp=(now - timedelta(hours=1)).isoformat())
    middle = fake.add_contact(firstname="Middle", lastname="Call", phone="021/552.20.00")
    fake.update_contact(middle, notes_last_updated=(now - timedelta(days=2)).isoformat())
    loose = fake.add_contact(firstname="Switch", lastname="Board", phone="+41 21 552 20 00 ext. 12")
    backend = make(portal_id=PORTAL_ID, resolve_company=False)

    found = backend.lookup(NUMBER, 5)
    assert [c.name for c in found] == ["Recent Call", "Middle Call", "Old Call", "Switch Board"]
    assert [c.exact for c in found] == [True, True, True, False]
    assert found[-1].id == loose
    assert [c.name for c in backend.lookup(NUMBER, 2)] == ["Recent Call", "Middle Call"]


def test_no_match_and_other_countries_dropped(fake, make):
    fake.add_contact(firstname="Chloé", lastname="Roux", phone="+33 2 15 52 20 00")  # same digits, France
    fake.add_contact(firstname="No", lastname="Phone", email="nophone@example.com")
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    assert backend.lookup(NUMBER, 5) == []
    assert backend.lookup(parse_number("41799999999"), 5) == []
    assert len(fake.recorded(path=SEARCH)) == 2


def test_short_number_matches_only_exactly(fake, make):
    ext = fake.add_contact(firstname="Front", lastname="Desk", phone="201")
    fake.add_contact(firstname="Long", lastname="Number", phone="+41 44 201 00 00")
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    found = backend.lookup(parse_number("201"), 5)
    assert [c.id for c in found] == [ext]
    body = fake.recorded(path=SEARCH)[0].body
    assert body["filterGroups"] == [
        {"filters": [{"propertyName": "phone", "operator": "IN", "values": ["201"]}]},
        {"filters": [{"propertyName": "mobilephone", "operator": "IN", "values": ["201"]}]},
    ]


def test_company_from_primary_association_and_uris(fake, make):
    anna = fake.add_contact(
        firstname="Anna", lastname="Keller", phone="+41 21 552 20 00", company="typed text"
    )
    beat = fake.add_contact(
        firstname="Beat", lastname="Huber", mobilephone="021 552 20 00", company="Huber GmbH"
    )
    cora = fake.add_contact(firstname="Cora", lastname="Frei", phone="+41215522000")
    side = fake.add_company("Side Project AG")
    main = fake.add_company("Keller & Co SA")
    only = fake.add_company("Frei Consulting")
    fake.associate(anna, side)
    fake.associate(anna, main, primary=True)
    fake.associate(cora, only)  # no primary label: the only company is used
    backend = make()  # no portal_id: read once from the account-info API, with its UI domain

    found = {c.id: c for c in backend.lookup(NUMBER, 5)}
    assert (found[anna].company, found[anna].company_uri) == ("Keller & Co SA", company_url(main))
    assert (found[beat].company, found[beat].company_uri) == ("Huber GmbH", None)
    assert (found[cora].company, found[cora].company_uri) == ("Frei Consulting", company_url(only))
    assert found[anna].contact_uri == contact_url(anna)

    assert fake.recorded(path=ASSOCIATIONS)[0].body == {"inputs": [{"id": i} for i in found]}
    companies = fake.recorded(path=COMPANIES)[0].body
    assert companies["properties"] == ["name"]
    assert sorted(i["id"] for i in companies["inputs"]) == sorted([main, only])

    backend.lookup(NUMBER, 5)
    assert len(fake.recorded(path=ACCOUNT)) == 1


def test_app_domain_option_wins_over_account_info(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(app_domain="app.hubspot.com", resolve_company=False)
    [contact] = backend.lookup(NUMBER, 5)
    assert contact.contact_uri == contact_url(anna, "app.hubspot.com")


def test_company_step_is_optional_and_best_effort(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00", company="Typed AG")
    fake.associate(anna, fake.add_company("Associated SA"), primary=True)

    [contact] = make(portal_id=PORTAL_ID, resolve_company=False).lookup(NUMBER, 5)
    assert contact.company == "Typed AG"
    assert fake.recorded(path=ASSOCIATIONS) == []

    fake.fail_next(503, path=ASSOCIATIONS)
    [contact] = make(portal_id=PORTAL_ID).lookup(NUMBER, 5)
    assert (contact.company, contact.company_uri) == ("Typed AG", None)

    # the companies scope missing: one warning, then the step is no longer tried
    backend = make(portal_id=PORTAL_ID)
    fake.fail_next(403, path=COMPANIES)
    assert backend.lookup(NUMBER, 5)[0].company == "Typed AG"
    sent = len(fake.recorded(path=ASSOCIATIONS))
    assert backend.lookup(NUMBER, 5)[0].company == "Typed AG"
    assert len(fake.recorded(path=ASSOCIATIONS)) == sent


def test_company_step_never_breaks_the_deadline(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00", company="Typed AG")
    fake.associate(anna, fake.add_company("Associated SA"), primary=True)
    fake.hang_next(3.0, path=ASSOCIATIONS)
    backend = make(deadline_s=0.6, portal_id=PORTAL_ID)
    started = time.monotonic()
    [contact] = backend.lookup(NUMBER, 5)
    assert time.monotonic() - started < 0.9
    assert contact.company == "Typed AG"


def test_custom_properties_become_custom_data(fake, make):
    fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00", jobtitle="CFO")
    backend = make(portal_id=PORTAL_ID, resolve_company=False, custom_properties=["jobtitle", "hs_language"])
    [contact] = backend.lookup(NUMBER, 5)
    assert contact.custom_data == {"jobtitle": "CFO"}
    properties = fake.recorded(path=SEARCH)[0].body["properties"]
    assert properties[-1] == "hs_language" and properties.count("jobtitle") == 1


def test_check_reads_account_and_one_contact(fake, make):
    backend = make()
    backend.check()
    assert [(r.method, r.path) for r in fake.recorded()] == [
        ("GET", ACCOUNT),
        ("GET", "/crm/v3/objects/contacts"),
    ]
    assert backend.portal_id() == str(PORTAL_ID)
    assert backend.app_domain == "app-eu1.hubspot.com"
    fake.revoke_token()
    with pytest.raises(CredentialsRejected):
        make().check()


# errors -----------------------------------------------------------------------------------------
def test_401_is_credentials_rejected_logged_once(fake, make, caplog):
    fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.revoke_token()
    backend = make(portal_id=PORTAL_ID)
    with caplog.at_level(logging.DEBUG, logger="crm_backends.hubspot"):
        for _ in range(3):
            with pytest.raises(CredentialsRejected):
                backend.lookup(NUMBER, 5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "HTTP 401: INVALID_AUTHENTICATION" in errors[0].getMessage()
    assert TOKEN not in caplog.text


def test_403_names_the_missing_scope(fake, make):
    fake.fail_next(
        403,
        body={
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call.",
            "correlationId": "c0ffee",
            "errors": [
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": ["crm.objects.contacts.read"]},
                }
            ],
            "category": "MISSING_SCOPES",
        },
    )
    with pytest.raises(CredentialsRejected, match="crm.objects.contacts.read"):
        make(portal_id=PORTAL_ID).lookup(NUMBER, 5)


def test_429_with_retry_after(fake, make):
    fake.fail_next(429, retry_after="7")
    with pytest.raises(RateLimited) as limited:
        make(portal_id=PORTAL_ID).lookup(NUMBER, 5)
    assert limited.value.retry_after == 7


def test_search_rate_limit_of_the_fake_gives_rate_limited(fake, make):
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    for _ in range(4):
        backend.lookup(NUMBER, 5)
    with pytest.raises(RateLimited, match="SECONDLY") as limited:
        backend.lookup(NUMBER, 5)
    assert limited.value.retry_after == 1.0  # no Retry-After: a secondly window frees up in 1 s
    response = requests.post(
        fake.url + SEARCH, json={}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2
    )
    assert response.status_code == 429
    assert response.json()["policyName"] == "SECONDLY"
    assert response.json()["errorType"] == "RATE_LIMIT"


def test_daily_budget_used_up_stops_calls_until_midnight(fake, make):
    fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.daily_remaining = 1
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    assert len(backend.lookup(NUMBER, 5)) == 1  # answered with X-HubSpot-RateLimit-Daily-Remaining: 0
    sent = len(fake.recorded())
    with pytest.raises(RateLimited) as limited:
        backend.lookup(NUMBER, 5)
    assert len(fake.recorded()) == sent  # HubSpot was not called again
    assert 0 < limited.value.retry_after <= 86400


def test_daily_429_blocks_until_midnight_in_the_account_zone(fake, make):
    backend = make(resolve_company=False)
    backend.check()  # learns the account's time zone (Europe/Zurich)
    fake.fail_next(
        429,
        body={
            "status": "error",
            "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "DAILY",
            "correlationId": "x",
        },
    )
    with pytest.raises(RateLimited):
        backend.lookup(NUMBER, 5)
    sent = len(fake.recorded())
    with pytest.raises(RateLimited) as limited:
        backend.log_call(CallRecord(contact_id="1", direction="incoming", key="k"))
    assert len(fake.recorded()) == sent
    zurich = datetime.now(backend._zone)
    midnight = (zurich + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(limited.value.retry_after - (midnight - zurich).total_seconds()) < 5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_unavailable(fake, make, status):
    fake.fail_next(status)
    with pytest.raises(BackendUnavailable) as failed:
        make(portal_id=PORTAL_ID).lookup(NUMBER, 5)
    assert not isinstance(failed.value, RateLimited | CredentialsRejected)


def test_timeout_is_unavailable(fake, make):
    fake.hang_next(5.0)
    backend = make(deadline_s=0.4, portal_id=PORTAL_ID)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer"):
        backend.lookup(NUMBER, 5)
    assert time.monotonic() - started < 1.0


def test_garbage_and_refused_connections_are_unavailable(fake, make):
    fake.fail_next(200, body=["not", "a", "search", "answer"])
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).lookup(NUMBER, 5)
    fake.fail_next(200, body={"results": "nope"})
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).lookup(NUMBER, 5)
    dead = make(portal_id=PORTAL_ID, base_url="http://127.0.0.1:9")
    with pytest.raises(BackendUnavailable, match="unreachable"):
        dead.lookup(NUMBER, 5)


def test_the_fake_is_strict(fake):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    six = [{"filters": [{"propertyName": "phone", "operator": "EQ", "value": str(i)}]} for i in range(6)]
    answer = requests.post(fake.url + SEARCH, json={"filterGroups": six}, headers=auth, timeout=2)
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"
    bad_operator = [{"filters": [{"propertyName": "phone", "operator": "EQUALS", "value": "1"}]}]
    assert (
        requests.post(
            fake.url + SEARCH, json={"filterGroups": bad_operator}, headers=auth, timeout=2
        ).status_code
        == 400
    )
    assert requests.post(fake.url + SEARCH, json={"limitt": 5}, headers=auth, timeout=2).status_code == 400
    missing = requests.get(fake.url + "/crm/v3/objects/deals", headers=auth, timeout=2)
    assert missing.status_code == 404 and missing.json()["status"] == "error"
    anonymous = requests.post(fake.url + SEARCH, json={}, timeout=2)
    assert anonymous.status_code == 401 and anonymous.json()["category"] == "INVALID_AUTHENTICATION"


# CallFlow ---------------------------------------------------------------------------------------
def at(seconds: int) -> datetime:
    return datetime(2024, 5, 2, 9, 0, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def association(contact_id: str) -> list[dict]:
    return [
        {
            "to": {"id": contact_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}],
        }
    ]


def test_callflow_incoming_answered(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.add_owner("Max", "Muster", "max@example.ch", owner_id="73012345")
    backend = make(portal_id=PORTAL_ID)
    call = CallRecord(
        contact_id=anna,
        direction="incoming",
        originator_number="41215522000",
        originator_name="Anna Keller",
        destination_number="41445554433",
        destination_name="Max Muster",
        started=at(0),
        answered=at(7),
        ended=at(192),
        user_id="73012345",
        key="call-1",
    )
    result = backend.log_call(call)

    [request] = fake.recorded(path=CALLS)
    assert request.body == {
        "properties": {
            "hs_timestamp": "2024-05-02T09:00:00.000Z",
            "hs_call_title": "Incoming call from Anna Keller, answered, 3:05",
            "hs_call_body": "Incoming call from Anna Keller, answered, 3:05. "
            "From: Anna Keller (+41215522000). To: Max Muster (+41445554433). "
            f"Logged by the phone lookup service. Call reference: {call_marker('call-1')}",
            "hs_call_direction": "INBOUND",
            "hs_call_status": "COMPLETED",
            "hs_call_duration": "185000",
            "hs_call_from_number": "+41215522000",
            "hs_call_to_number": "+41445554433",
            "hubspot_owner_id": "73012345",
        },
        "associations": association(anna),
    }
    [stored_id] = fake.calls
    assert result.id == stored_id
    assert result.url == contact_url(anna, "app.hubspot.com")
    assert fake.calls[stored_id].extra["contacts"] == [anna]


def test_callflow_incoming_missed(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    call = CallRecord(
        contact_id=anna,
        direction="incoming",
        originator_number="41215522000",
        destination_number="41445554433",
        started=at(0),
        ended=at(30),
        key="call-2",
    )
    make(portal_id=PORTAL_ID).log_call(call)
    assert fake.recorded(path=CALLS)[0].body == {
        "properties": {
            "hs_timestamp": "2024-05-02T09:00:00.000Z",
            "hs_call_title": "Incoming call from 41215522000, missed",
            "hs_call_body": "Incoming call from 41215522000, missed. "
            "From: (+41215522000). To: (+41445554433). Logged by the phone lookup service. "
            f"Call reference: {call_marker('call-2')}",
            "hs_call_direction": "INBOUND",
            "hs_call_status": "NO_ANSWER",
            "hs_call_duration": "0",
            "hs_call_from_number": "+41215522000",
            "hs_call_to_number": "+41445554433",
        },
        "associations": association(anna),
    }


def test_callflow_outgoing_answered_and_declined(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    backend.log_call(
        CallRecord(
            contact_id=anna,
            direction="outgoing",
            originator_number="41445554433",
            originator_name="Max Muster",
            destination_number="0215522000",
            destination_name="Anna Keller",
            started=at(0),
            answered=at(12),
            ended=at(72),
            key="call-3",
        )
    )
    assert fake.recorded(path=CALLS)[0].body == {
        "properties": {
            "hs_timestamp": "2024-05-02T09:00:00.000Z",
            "hs_call_title": "Outgoing call to Anna Keller, answered, 1:00",
            "hs_call_body": "Outgoing call to Anna Keller, answered, 1:00. From: Max Muster (+41445554433). "
            "To: Anna Keller (+41215522000). Logged by the phone lookup service. "
            f"Call reference: {call_marker('call-3')}",
            "hs_call_direction": "OUTBOUND",
            "hs_call_status": "COMPLETED",
            "hs_call_duration": "60000",
            "hs_call_from_number": "+41445554433",
            "hs_call_to_number": "+41215522000",
        },
        "associations": association(anna),
    }
    backend.log_call(
        CallRecord(
            contact_id=anna,
            direction="outgoing",
            destination_number="41215522000",
            started=at(100),
            declined=at(105),
            user_id="max@example.ch",  # not a HubSpot owner id: left out rather than refused
            key="call-4",
        )
    )
    properties = fake.recorded(path=CALLS)[1].body["properties"]
    assert (properties["hs_call_status"], properties["hs_call_duration"]) == ("CANCELED", "0")
    assert "hs_call_from_number" not in properties and "hubspot_owner_id" not in properties


def test_duplicate_callflow_creates_one_call(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    call = CallRecord(
        contact_id=anna, direction="incoming", started=at(0), answered=at(1), ended=at(9), key="same-call"
    )
    first, second = backend.log_call(call), backend.log_call(call)
    assert first == second
    assert len(fake.recorded(path=CALLS)) == 1 and len(fake.calls) == 1
    other = CallRecord(contact_id=anna, direction="incoming", started=at(50), key="next-call")
    assert backend.log_call(other).id != first.id


def test_callflow_unknown_contact(fake, make):
    backend = make(portal_id=PORTAL_ID)
    with pytest.raises(ContactNotFound):
        backend.log_call(CallRecord(contact_id="abc", direction="incoming", key="k1"))
    assert fake.recorded() == []
    with pytest.raises(ContactNotFound):
        backend.log_call(CallRecord(contact_id="999999", direction="incoming", started=at(0), key="k2"))
    assert [r.path for r in fake.recorded()] == [CALLS_SEARCH, CALLS, "/crm/v3/objects/contacts/999999"]


def test_callflow_errors(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    call = CallRecord(contact_id=anna, direction="incoming", started=at(0), key="k")
    fake.fail_next(502)
    with pytest.raises(BackendUnavailable):
        backend.log_call(call)
    fake.fail_next(429, retry_after="2")
    with pytest.raises(RateLimited):
        backend.log_call(call)
    fake.revoke_token()
    with pytest.raises(CredentialsRejected):
        backend.log_call(call)
    assert fake.calls == {}


# mirror -----------------------------------------------------------------------------------------
def test_mirror_full_listing_pages_and_companies(fake, make):
    for i in range(130):
        fake.add_contact(firstname=f"P{i}", lastname="Filler", phone=f"+41 44 000 {i:04d}")
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="021 552 20 00", company="Typed")
    fake.associate(anna, fake.add_company("Keller & Co SA"), primary=True)
    fake.add_contact(firstname="No", lastname="Phone", email="n@p.ch")
    mirror = MirroredBackend(make(portal_id=PORTAL_ID))

    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental and outcome.written == 131
    lists = fake.recorded(path="/crm/v3/objects/contacts")
    assert [r.query.get("after") for r in lists] == [None, [lists[1].query["after"][0]]]
    assert lists[0].query["limit"] == ["100"]
    assert lists[0].query["properties"] == [",".join(PROPERTIES)]
    [contact] = mirror.lookup(parse_number("+41215522000"), 5)
    assert (contact.id, contact.name, contact.company) == (anna, "Anna Keller", "Keller & Co SA")
    assert contact.contact_uri == contact_url(anna, "app.hubspot.com")
    assert fake.recorded(path=SEARCH) == []
    mirror.close()


def test_mirror_incremental(fake, make):
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00", modified=hour_ago)
    beat = fake.add_contact(firstname="Beat", lastname="Huber", phone="+41 44 668 18 00", modified=hour_ago)
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    mirror = MirroredBackend(backend)
    assert mirror.sync_now().written == 2
    cursor = mirror.store.get_meta("cursor")
    since = cursor.split(":")[0]

    later = datetime.now(UTC) + timedelta(seconds=5)
    fake.update_contact(anna, modified=later, phone="+41 31 000 00 00")
    cora = fake.add_contact(firstname="Cora", lastname="Frei", mobilephone="079 123 45 67", modified=later)
    before = len(fake.recorded())

    outcome = mirror.sync_now()
    assert outcome.ok and outcome.incremental and outcome.written == 2  # Beat did not change
    [search] = fake.recorded()[before:]
    assert search.path == SEARCH
    assert search.body == {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since}]}
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": PROPERTIES,
        "limit": 100,
    }
    assert mirror.lookup(NUMBER, 5) == []
    assert [c.id for c in mirror.lookup(parse_number("+41310000000"), 5)] == [anna]
    assert [c.id for c in mirror.lookup(parse_number("+41791234567"), 5)] == [cora]
    assert [c.id for c in mirror.lookup(parse_number("+41446681800"), 5)] == [beat]
    assert int(mirror.store.get_meta("cursor").split(":")[0]) >= int(since)
    mirror.close()


def test_mirror_incremental_moves_the_window_past_the_result_cap(fake, make):
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    mirror = MirroredBackend(backend)
    mirror.sync_now()
    base = datetime.now(UTC) + timedelta(seconds=10)
    ids = [
        fake.add_contact(
            firstname=f"N{i}",
            lastname="New",
            phone=f"+41 44 111 {i:04d}",
            modified=base + timedelta(seconds=i),
        )
        for i in range(7)
    ]
    backend.search_page, backend.search_result_cap = 2, 4
    fake.max_search_results = 4
    before = len(fake.recorded())

    outcome = mirror.sync_now()
    assert outcome.ok and outcome.incremental
    searches = [r.body for r in fake.recorded()[before:]]
    windows = [s["filterGroups"][0]["filters"][0]["value"] for s in searches]
    assert len(set(windows)) >= 2  # a new query started from the newest time seen
    assert all(s.get("after", "0") in ("0", "2") for s in searches)
    for i, contact_id in enumerate(ids):
        assert [c.id for c in mirror.lookup(parse_number(f"+41441110{i:03d}"), 5)] == [contact_id]
    mirror.close()


def test_mirror_deletions_arrive_with_the_periodic_full_listing(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    mirror = MirroredBackend(make(portal_id=PORTAL_ID, resolve_company=False))
    mirror.sync_now()
    fake.archive_contact(anna)

    assert mirror.sync_now().incremental  # the search never shows archived contacts
    assert [c.id for c in mirror.lookup(NUMBER, 5)] == [anna]

    mirror.full_interval = 0  # the mirror's schedule: the next sync is a full listing
    outcome = mirror.sync_now()
    assert not outcome.incremental and outcome.deleted == 1
    assert mirror.lookup(NUMBER, 5) == []
    mirror.close()


def test_mirror_sync_waits_out_a_secondly_429(fake, make):
    mirror = MirroredBackend(make(portal_id=PORTAL_ID, resolve_company=False))
    mirror.sync_now()
    fake.add_contact(
        firstname="Anna",
        lastname="Keller",
        phone="+41 21 552 20 00",
        modified=datetime.now(UTC) + timedelta(seconds=5),
    )
    fake.fail_next(429, retry_after="0.2", path=SEARCH)
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 1
    mirror.close()


def test_mirror_incremental_lists_everything_when_the_window_cannot_move(fake, make):
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    mirror = MirroredBackend(backend)
    mirror.sync_now()
    same = datetime.now(UTC) + timedelta(seconds=10)
    for i in range(5):
        fake.add_contact(firstname=f"N{i}", lastname="Same", phone=f"+41 44 222 {i:04d}", modified=same)
    backend.search_page, backend.search_result_cap = 2, 4
    fake.max_search_results = 4
    before = len(fake.recorded())
    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental  # fell back to the list API
    assert fake.recorded()[-1].path == "/crm/v3/objects/contacts"
    searches = [r.body for r in fake.recorded()[before:] if r.path == SEARCH]
    windows = [s["filterGroups"][0]["filters"][0]["value"] for s in searches]
    assert len(searches) == 4 and windows[2] == windows[3]  # moved once, then stuck on one time
    assert len(mirror.lookup(parse_number("+41442220003"), 5)) == 1
    mirror.close()


# exactly once through lost answers --------------------------------------------------------------
def lost_call(anna: str, key: str = "lost-call") -> CallRecord:
    return CallRecord(contact_id=anna, direction="incoming", started=at(0), answered=at(2), ended=at(40), key=key)


def test_lost_answer_the_retry_finds_the_call_instead_of_creating_another(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.lose_next(path=CALLS)  # HubSpot stores the call, the connection drops before the answer
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).log_call(lost_call(anna))
    [stored] = fake.calls
    assert call_marker("lost-call") in fake.calls[stored].properties["hs_call_body"]

    # the retry runs in another worker: nothing in memory, the search finds the stored call
    result = make(portal_id=PORTAL_ID).log_call(lost_call(anna))
    assert result.id == stored and list(fake.calls) == [stored]
    assert len(fake.recorded("POST", CALLS)) == 1
    [search] = fake.recorded("POST", CALLS_SEARCH)[-1:]
    assert search.body["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "hs_call_body", "operator": "CONTAINS_TOKEN", "value": call_marker("lost-call")}
            ]
        },
        {
            "filters": [
                {"propertyName": "associations.contact", "operator": "EQ", "value": anna},
                {"propertyName": "hs_timestamp", "operator": "EQ", "value": "2024-05-02T09:00:00.000Z"},
            ]
        },
    ]
    # another call of the same contact is not mistaken for it
    assert make(portal_id=PORTAL_ID).log_call(lost_call(anna, "other-call")).id != stored
    assert len(fake.calls) == 2


def test_lost_answer_is_found_by_contact_and_time_when_the_notes_are_not_searchable(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.unindexed_properties = {"hs_call_body"}  # should HubSpot not tokenize the call notes
    backend = make(portal_id=PORTAL_ID)
    backend.log_call(lost_call(anna, "earlier-call-same-contact"))  # another call of Anna, another time
    fake.lose_next(path=CALLS)
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).log_call(dataclasses.replace(lost_call(anna), started=at(600)))
    lost = next(i for i, c in fake.calls.items() if call_marker("lost-call") in c.properties["hs_call_body"])
    result = make(portal_id=PORTAL_ID).log_call(dataclasses.replace(lost_call(anna), started=at(600)))
    assert result.id == lost and len(fake.calls) == 2


def test_lost_answer_while_the_search_lags_is_retried_later_not_duplicated(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.index_lag = 3600.0  # the new call is not searchable yet
    backend = make(portal_id=PORTAL_ID)
    fake.lose_next(path=CALLS)
    with pytest.raises(BackendUnavailable):
        backend.log_call(lost_call(anna))
    with pytest.raises(BackendUnavailable) as refused:
        backend.log_call(lost_call(anna))
    assert "outcome" in str(refused.value)
    # another worker process of this machine (same instance directory) knows of the attempt too
    with pytest.raises(BackendUnavailable, match="outcome"):
        make(portal_id=PORTAL_ID).log_call(lost_call(anna))
    assert len(fake.recorded("POST", CALLS)) == 1 and len(fake.calls) == 1
    fake.index_lag = 0.0  # the index caught up
    [stored] = fake.calls
    assert backend.log_call(lost_call(anna)).id == stored
    assert len(fake.calls) == 1


def test_answered_refusal_is_not_an_unknown_outcome(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.index_lag = 3600.0
    backend = make(portal_id=PORTAL_ID)
    fake.fail_next(429, retry_after="1", path=CALLS)
    with pytest.raises(RateLimited):
        backend.log_call(lost_call(anna))
    # HubSpot answered, so nothing was created: the retry may create at once
    assert backend.log_call(lost_call(anna)).id in fake.calls


def test_unique_call_key_property_is_read_without_the_search(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.unique_call_properties = {"pf_call_key"}
    fake.index_lag = 3600.0  # the direct read does not depend on the search index
    fake.lose_next(path=CALLS)
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID, call_key_property="pf_call_key").log_call(lost_call(anna))
    [stored] = fake.calls
    assert fake.calls[stored].properties["pf_call_key"] == "lost-call"
    result = make(portal_id=PORTAL_ID, call_key_property="pf_call_key").log_call(lost_call(anna))
    assert result.id == stored and len(fake.calls) == 1
    assert fake.recorded("POST", CALLS_SEARCH) == []
    [read] = fake.recorded("GET", f"{CALLS}/lost-call")[-1:]
    assert read.query["idProperty"] == ["pf_call_key"]


def test_unknown_call_key_property_is_refused_for_good(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID, call_key_property="pf_call_key", dedupe_calls=False)
    with pytest.raises(DeliveryRefused):
        backend.log_call(lost_call(anna))
    assert fake.calls == {}


def test_attempt_notes_fall_back_to_memory_when_the_disk_refuses(tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    notes = AttemptLog(str(blocker / "attempts.sqlite3"))
    with caplog.at_level(logging.WARNING, logger="crm_backends.attempts"):
        notes.sent("k1")
        notes.sent("k2")
    assert notes.age("k1") is not None and notes.age("other") is None
    notes.settled("k1")
    assert notes.age("k1") is None and notes.age("k2") is not None
    assert len([r for r in caplog.records if "this process only" in r.getMessage()]) == 1

    shared = AttemptLog(str(tmp_path / "attempts.sqlite3"))
    shared.sent("k3")
    assert AttemptLog(str(tmp_path / "attempts.sqlite3")).age("k3") is not None  # another process's view
    shared.settled("k3")
    assert AttemptLog(str(tmp_path / "attempts.sqlite3")).age("k3") is None


def test_search_by_name_prefixes_first_last_and_company(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Muster", company="Acme", phone="+41 21 552 20 00")
    bruno = fake.add_contact(firstname="Bruno", lastname="Keller", company="Muster AG", phone="+41 44 668 18 00")
    backend = make()
    assert {c.id for c in backend.search("must", 20)} == {anna, bruno}  # a last name, a company
    assert [c.id for c in backend.search("ann mu", 20)] == [anna]
    assert [c.id for c in backend.search("BRU", 20)] == [bruno]
    assert backend.search("zz", 20) == [] and backend.search(" ", 20) == []


# CreateContact ----------------------------------------------------------------------------------
def test_create_contact_posts_the_documented_body_and_the_next_lookup_finds_it(fake, make):
    from lookup_core.types import NewContact

    backend = make()
    number = parse_number("41791234567")
    assert backend.lookup(number, 5) == []
    result = backend.create_contact(NewContact(number="+41791234567", name="Alexa Holiday", company="Holiday AG"))
    [sent] = fake.recorded("POST", "/crm/v3/objects/contacts")
    assert sent.body == {"properties": {"firstname": "Alexa", "lastname": "Holiday", "phone": "+41791234567",
                                        "company": "Holiday AG"}}
    assert result.url == contact_url(result.id)
    [found] = backend.lookup(number, 5)
    assert found.id == result.id and found.name == "Alexa Holiday"


def test_create_contact_with_an_email_that_exists_answers_that_contact(fake, make):
    from lookup_core.types import NewContact

    existing = fake.add_contact(firstname="Alexa", email="alexa@example.com")
    backend = make()
    result = backend.create_contact(NewContact(number="+41791234567", name="Alexa", email="alexa@example.com"))
    assert result.id == existing


def test_the_fake_refuses_what_hubspot_refuses(fake):
    url = fake.url + "/crm/v3/objects/contacts"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.post(url, json={"firstname": "x"}, headers=headers, timeout=5).status_code == 400
    assert requests.post(url, json={"properties": {"phone": "+41791234567"}}, headers=headers,
                         timeout=5).status_code == 400  # no email, firstname or lastname
    answer = requests.post(url, json={"properties": {"firstname": "x", "fax_number": "1"}}, headers=headers, timeout=5)
    assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"


def test_search_formats_are_asked_for_in_the_typed_properties(fake, make):
    fake.add_contact(firstname="Anna", phone="021/552.20.00")
    # a portal where the calculated properties do not hold it: only the typed text can match
    fake.unindexed_properties.update({"hs_searchable_calculated_phone_number",
                                      "hs_searchable_calculated_mobile_number"})
    number = parse_number("41215522000")
    assert make().lookup(number, 5) == []
    [found] = make(search_formats=["0##/###.##.##"]).lookup(number, 5)
    assert found.name == "Anna"


def test_phone_is_the_business_line_mobilephone_the_mobile_and_jobtitle_the_job_title(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00",
                            mobilephone="079 123 45 67", jobtitle="Head of Purchasing")
    backend = make(portal_id=PORTAL_ID, resolve_company=False)
    [live] = backend.lookup(NUMBER, 5)
    assert live.phone_types == {"+41 21 552 20 00": "business", "079 123 45 67": "mobile"}
    assert live.job_title == "Head of Purchasing" and live.custom_data == {}
    mirror = MirroredBackend(make(portal_id=PORTAL_ID, resolve_company=False))
    assert mirror.sync_now().ok
    stored = mirror.store.get(anna)
    assert stored.phone_types == live.phone_types and stored.job_title == "Head of Purchasing"
    mirror.close()
# call updates -----------------------------------------------------------------------------------
def ringing_call(anna: str, **changes) -> CallRecord:
    call = CallRecord(contact_id=anna, direction="incoming", originator_number="41215522000",
                      originator_name="Anna Keller", destination_number="41445554433", started=at(0), key="ring-call")
    return dataclasses.replace(call, **changes)


def test_a_call_posted_at_ring_and_at_hang_up_is_one_record_with_the_final_duration(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    ring = ringing_call(anna)
    first = backend.log_call(ring)
    assert fake.calls[first.id].properties["hs_call_status"] == "NO_ANSWER"

    final = ring.merged(ringing_call(anna, answered=at(5), ended=at(200), note="Wants a quote for 20 seats"))
    result = backend.update_call(first.id, final)

    assert result == first and list(fake.calls) == [first.id]
    [patch] = fake.recorded("PATCH", f"{CALLS}/{first.id}")
    assert set(patch.body) == {"properties"}
    assert patch.body["properties"] == {
        "hs_timestamp": "2024-05-02T09:00:00.000Z",
        "hs_call_title": "Incoming call from Anna Keller, answered, 3:15",
        "hs_call_body": "Incoming call from Anna Keller, answered, 3:15. From: Anna Keller (+41215522000). "
        "To: (+41445554433). Note: Wants a quote for 20 seats Logged by the phone lookup service. "
        f"Call reference: {call_marker('ring-call')}",
        "hs_call_direction": "INBOUND",
        "hs_call_status": "COMPLETED",
        "hs_call_duration": "195000",
        "hs_call_from_number": "+41215522000",
        "hs_call_to_number": "+41445554433",
    }
    stored = fake.calls[first.id].properties
    assert (stored["hs_call_status"], stored["hs_call_duration"]) == ("COMPLETED", "195000")
    assert fake.calls[first.id].extra["contacts"] == [anna]  # the association stays


def test_updating_a_call_deleted_in_hubspot_is_refused_for_good(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    with pytest.raises(DeliveryRefused, match="no longer exists"):
        backend.update_call("987654", ringing_call(anna, answered=at(5), ended=at(9)))
    fake.fail_next(503, path=f"{CALLS}/987654")
    with pytest.raises(BackendUnavailable) as outage:
        backend.update_call("987654", ringing_call(anna))
    assert not isinstance(outage.value, DeliveryRefused)


def test_a_lost_create_found_again_is_brought_up_to_date(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.lose_next(path=CALLS)  # the ring's call is stored, its answer lost
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).log_call(ringing_call(anna))
    # the retry carries the hang-up by now: the call found is updated, not left at "ringing"
    result = make(portal_id=PORTAL_ID).log_call(ringing_call(anna, answered=at(5), ended=at(65)))
    [stored] = fake.calls
    assert result.id == stored
    assert (fake.calls[stored].properties["hs_call_status"], fake.calls[stored].properties["hs_call_duration"]) == \
        ("COMPLETED", "60000")


def test_the_fake_patch_refuses_what_hubspot_refuses(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    call_id = make(portal_id=PORTAL_ID).log_call(ringing_call(anna)).id
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{fake.url}{CALLS}/{call_id}"

    def patch(body, target=url):
        return requests.patch(target, json=body, headers=headers, timeout=5)

    unknown = patch({"properties": {"hs_call_mood": "happy"}})
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    read_only = patch({"properties": {"hs_createdate": "2024-01-01T00:00:00Z"}})
    assert read_only.status_code == 400 and read_only.json()["errors"][0]["code"] == "READ_ONLY_VALUE"
    assert patch({"properties": {"hs_call_status": "DONE"}}).status_code == 400
    assert patch({"properties": {"hs_call_duration": "a minute"}}).status_code == 400
    assert patch({"properties": {"hubspot_owner_id": "555"}}).json()["errors"][0]["code"] == "INVALID_OWNER_ID"
    assert patch({"properties": {}, "associations": []}).status_code == 400
    assert patch({"properties": {"hs_call_status": "BUSY"}}, f"{fake.url}{CALLS}/424242").status_code == 404
    assert fake.calls[call_id].properties["hs_call_status"] == "NO_ANSWER"  # nothing refused was applied
    assert patch({"properties": {"hs_call_status": "BUSY", "hs_call_body": ""}}).status_code == 200
    assert fake.calls[call_id].properties["hs_call_status"] == "BUSY"
    assert "hs_call_body" not in fake.calls[call_id].properties  # an empty string clears


# messages ---------------------------------------------------------------------------------------
COMMUNICATIONS = "/crm/v3/objects/communications"
NOTES = "/crm/v3/objects/notes"


def sms_log(anna: str, numbers, day: str = "2024-05-02", key: str | None = None) -> MessageLog:
    messages = tuple(
        Message(id=f"m-{day}-{n}", time=datetime.fromisoformat(f"{day}T09:{n:02d}:00+00:00"),
                direction="incoming" if n % 2 else "outgoing",
                from_number="+41215522000" if n % 2 else "+41445554433",
                from_name="Anna Keller" if n % 2 else "Support",
                to_number="+41445554433" if n % 2 else "+41215522000",
                to_name="Support" if n % 2 else "Anna Keller", text=f"message number {n}")
        for n in numbers
    )
    return MessageLog(contact_id=anna, kind="SMS", conversation_id="pair", day=day, zone="Europe/Zurich",
                      messages=messages, key=key or f"t|hs|{anna}|pair|{day}")


def html_lines(body: str) -> list[str]:
    return [line for line in re.split(r"<br>|</?p>", body) if re.match(r"\d\d:\d\d ", line)]


def test_an_sms_digest_is_one_communication_replaced_by_each_later_message(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    backend = make(portal_id=PORTAL_ID)
    first = backend.log_message(sms_log(anna, [1]))
    [create] = fake.recorded("POST", COMMUNICATIONS)
    assert create.body["associations"] == [
        {"to": {"id": anna}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 81}]}
    ]
    props = create.body["properties"]
    assert (props["hs_communication_channel_type"], props["hs_communication_logged_from"]) == ("SMS", "CRM")
    assert props["hs_timestamp"] == "2024-05-02T09:01:00.000Z" and "hubspot_owner_id" not in props
    assert first.url == contact_url(anna, "app.hubspot.com")

    for count in range(2, 11):
        assert backend.update_message(first.id, sms_log(anna, range(1, count + 1))).id == first.id
    assert list(fake.communications) == [first.id] and fake.notes == {}
    body = fake.communications[first.id].properties["hs_communication_body"]
    assert "<strong>SMS conversation with Anna Keller \u2013 2024-05-02</strong>" in body
    assert "Participants: Anna Keller (+41215522000), Support (+41445554433)" in body
    lines = html_lines(body)
    assert len(lines) == 10  # replaced each time, never appended
    assert lines[0] == "11:01 \u2190 Anna Keller: message number 1"  # the digest's zone
    assert lines[1] == "11:02 \u2192 Anna Keller: message number 2"
    [patch] = fake.recorded("PATCH", f"{COMMUNICATIONS}/{first.id}")[-1:]
    assert set(patch.body["properties"]) == {"hs_communication_body", "hs_timestamp"}


def test_message_text_is_escaped_and_a_huge_digest_keeps_its_latest_lines(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    digest = sms_log(anna, [1])
    digest = dataclasses.replace(digest, messages=(dataclasses.replace(digest.first, text="<b>5 < 6</b>"),))
    record = make().log_message(digest)
    assert "&lt;b&gt;5 &lt; 6&lt;/b&gt;" in fake.communications[record.id].properties["hs_communication_body"]

    big = sms_log(anna, range(1, 60), day="2024-05-03")
    big = dataclasses.replace(big, messages=tuple(dataclasses.replace(m, text="x" * 2000) for m in big.messages))
    body = hubspot_backend.message_html(big)
    assert len(body) <= hubspot_backend.RECORD_TEXT_MAX
    lines = html_lines(body)
    assert "earlier messages left out)<br>" in body and lines[-1].startswith("11:59 \u2190")  # 09:59 UTC
    assert 0 < len(lines) < 59 and not any(line.startswith("11:01 ") for line in lines)
    assert hubspot_backend.message_marker(big.key) in body


def test_a_voicemail_is_a_note_holding_its_link(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    voicemail = MessageLog(
        contact_id=anna, kind="Voicemail", conversation_id="pair", day="2024-05-02", zone="Europe/Zurich",
        messages=(Message(id="vm-1", time=at(0), direction="incoming", from_number="+41215522000",
                          from_name="Anna Keller", to_number="+41445554433",
                          link="https://pbx.example/rec/77.mp3?a=1&b=2"),),
        key="t|hs|vm-1",
    )
    record = make(portal_id=PORTAL_ID).log_message(voicemail)
    assert fake.communications == {} and list(fake.notes) == [record.id]
    [create] = fake.recorded("POST", NOTES)
    assert create.body["associations"][0]["types"] == [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}
    ]
    assert set(create.body["properties"]) == {"hs_note_body", "hs_timestamp"}
    body = fake.notes[record.id].properties["hs_note_body"]
    assert "<strong>Voicemail from Anna Keller \u2013 2024-05-02</strong>" in body
    assert 'Recording: <a href="https://pbx.example/rec/77.mp3?a=1&amp;b=2">' in body


def test_a_message_record_whose_answer_was_lost_is_not_made_twice(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.lose_next(path=COMMUNICATIONS)
    with pytest.raises(BackendUnavailable):
        make(portal_id=PORTAL_ID).log_message(sms_log(anna, [1]))
    [stored] = fake.communications
    # the retry, in another worker, holds a second message by now: the record is found and updated
    result = make(portal_id=PORTAL_ID).log_message(sms_log(anna, [1, 2]))
    assert result.id == stored and list(fake.communications) == [stored]
    assert len(fake.recorded("POST", COMMUNICATIONS)) == 1
    assert len(html_lines(fake.communications[stored].properties["hs_communication_body"])) == 2
    # another day's digest is not mistaken for it
    assert make(portal_id=PORTAL_ID).log_message(sms_log(anna, [1], day="2024-05-03")).id != stored


def test_a_lost_message_answer_while_the_search_lags_is_retried_later(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.index_lag = 3600.0
    backend = make(portal_id=PORTAL_ID)
    fake.lose_next(path=NOTES)
    voicemail = dataclasses.replace(sms_log(anna, [1]), kind="Voicemail", key="t|hs|vm-lag")
    with pytest.raises(BackendUnavailable):
        backend.log_message(voicemail)
    with pytest.raises(BackendUnavailable, match="outcome"):
        backend.log_message(voicemail)
    assert len(fake.notes) == 1
    fake.index_lag = 0.0
    assert backend.log_message(voicemail).id == next(iter(fake.notes)) and len(fake.notes) == 1


def test_a_message_for_a_contact_hubspot_does_not_have(fake, make):
    backend = make(portal_id=PORTAL_ID)
    with pytest.raises(ContactNotFound):
        backend.log_message(sms_log("alexa", [1]))
    with pytest.raises(ContactNotFound):
        backend.log_message(sms_log("999999", [1]))
    assert fake.communications == {}


# users ------------------------------------------------------------------------------------------
def test_users_are_the_owners_of_every_page(fake, make, monkeypatch):
    monkeypatch.setattr(hubspot_backend, "OWNERS_PAGE", 2)
    ids = [fake.add_owner("Max", "Muster", "max@example.ch"), fake.add_owner("Eva", "", "eva@example.ch"),
           fake.add_owner("Tom", "Tester", "tom@example.ch")]
    fake.add_owner("Old", "Hand", "old@example.ch", archived=True)
    backend = make()
    assert backend.users and HubSpotBackend.can_list_users(backend.options)
    assert backend.list_users() == [
        CrmUser(ids[0], "Max Muster", "max@example.ch"), CrmUser(ids[1], "Eva", "eva@example.ch"),
        CrmUser(ids[2], "Tom Tester", "tom@example.ch"),
    ]
    pages = fake.recorded("GET", "/crm/v3/owners")
    assert [r.query.get("after") for r in pages] == [None, [ids[2]]]
    assert pages[0].query["limit"] == ["2"] and pages[0].query["archived"] == ["false"]


def test_an_unknown_user_crm_id_is_warned_once_and_its_calls_go_to_the_default_owner(fake, make, caplog):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    max_id = fake.add_owner("Max", "Muster", "max@example.ch")
    reception = fake.add_owner("Front", "Desk", "desk@example.ch")
    backend = make(portal_id=PORTAL_ID, default_user_id=reception)
    with caplog.at_level(logging.WARNING):
        first = backend.log_call(ringing_call(anna, user_id="4711", key="owner-1"))
        second = backend.log_call(ringing_call(anna, user_id="4711", key="owner-2", started=at(60)))
    assert len([r for r in caplog.records if "4711" in r.getMessage()]) == 1
    assert fake.calls[first.id].properties["hubspot_owner_id"] == reception
    assert fake.calls[second.id].properties["hubspot_owner_id"] == reception
    known = backend.log_message(dataclasses.replace(sms_log(anna, [1]), user_id=max_id))
    assert fake.communications[known.id].properties["hubspot_owner_id"] == max_id
    assert len(fake.recorded("GET", "/crm/v3/owners")) == 1  # read once, then trusted for a while


def test_an_unknown_user_crm_id_without_a_default_leaves_the_owner_to_hubspot(fake, make):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    fake.add_owner("Max", "Muster", "max@example.ch")
    record = make(portal_id=PORTAL_ID).log_call(ringing_call(anna, user_id="4711"))
    assert "hubspot_owner_id" not in fake.calls[record.id].properties


# through the web layer --------------------------------------------------------------------------
@pytest.fixture
def hubspot_client(fake, make_app, tmp_path):
    from tests.conftest import TOKEN as SERVICE_TOKEN

    path = tmp_path / "lookup.toml"
    path.write_text(f"""
[[tenant]]
name = "acme"
tokens = ["{SERVICE_TOKEN}"]

[[tenant.backend]]
name = "crm"
type = "hubspot"
access_token = "{TOKEN}"
base_url = "{fake.url}"
portal_id = {PORTAL_ID}
resolve_company = false
timeout = 5
""")
    fake.search_rate = None
    return make_app(LOOKUP_CONFIG=str(path), LOOKUP_TIMEZONE="Europe/Zurich").test_client()


def test_sms_voicemail_and_a_call_through_the_web_layer(fake, hubspot_client):
    from tests.conftest import HEADERS

    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")

    def sms(number: int, day: str = "2026-11-21") -> dict:
        return {"inputs": {"contactCrmId": f"crm:{anna}", "type": "SMS", "direction": "incoming",
                           "fromNumber": "+41215522000", "fromName": "Anna Keller", "toNumber": "+41445554433",
                           "text": f"message number {number}", "time": f"{day}T09:{number:02d}:00Z",
                           "messageId": f"m-{day}-{number}"}}

    ids = set()
    for number in [*range(1, 11), 3]:  # the third message posted twice
        answer = hubspot_client.post("/MessageLog", json=sms(number), headers=HEADERS)
        assert answer.status_code == 200, answer.get_json()
        ids.add(answer.get_json()["id"])
    assert ids == set(fake.communications)
    [record] = fake.communications.values()
    lines = html_lines(record.properties["hs_communication_body"])
    assert len(lines) == 10 and sum("message number 3" in line for line in lines) == 1
    assert lines[0] == "10:01 \u2190 Anna Keller: message number 1"
    other_day = hubspot_client.post("/MessageLog", json=sms(1, "2026-11-22"), headers=HEADERS).get_json()
    assert other_day["id"] not in ids and len(fake.communications) == 2

    voicemail = {"inputs": {"contactCrmId": f"crm:{anna}", "type": "Voicemail", "direction": "incoming",
                            "fromNumber": "+41215522000", "time": "2026-11-21T12:00:00Z",
                            "recordingLink": "https://pbx.example/rec/77.mp3"}}
    first = hubspot_client.post("/MessageLog", json=voicemail, headers=HEADERS).get_json()
    assert hubspot_client.post("/MessageLog", json=voicemail, headers=HEADERS).get_json()["id"] == first["id"]
    assert list(fake.notes) == [first["id"]]
    assert "https://pbx.example/rec/77.mp3" in fake.notes[first["id"]].properties["hs_note_body"]

    ring = {"inputs": {"contactCrmId": f"crm:{anna}", "direction": "incoming", "originatorNumber": "41215522000",
                       "destinationNumber": "41445554433", "startedTime": "2026-11-21T09:00:00Z"}}
    call = hubspot_client.post("/CallFlow", json=ring, headers=HEADERS).get_json()
    hang_up = {"inputs": dict(ring["inputs"], answeredTime="2026-11-21T09:00:05Z", endedTime="2026-11-21T09:03:20Z")}
    assert hubspot_client.post("/CallFlow", json=hang_up, headers=HEADERS).get_json()["id"] == call["id"]
    assert list(fake.calls) == [call["id"]]
    assert (fake.calls[call["id"]].properties["hs_call_status"],
            fake.calls[call["id"]].properties["hs_call_duration"]) == ("COMPLETED", "195000")
    patches = len(fake.recorded("PATCH"))
    assert hubspot_client.post("/CallFlow", json=hang_up, headers=HEADERS).get_json()["id"] == call["id"]
    assert len(fake.recorded("PATCH")) == patches  # a post that adds nothing changes nothing


def test_the_fake_refuses_message_records_hubspot_refuses(fake):
    anna = fake.add_contact(firstname="Anna", lastname="Keller", phone="+41 21 552 20 00")
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post(path, properties, type_id):
        body = {"properties": properties, "associations": [
            {"to": {"id": anna}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]}
        return requests.post(fake.url + path, json=body, headers=headers, timeout=5).status_code

    sms = {"hs_communication_channel_type": "SMS", "hs_communication_logged_from": "CRM",
           "hs_communication_body": "hi", "hs_timestamp": "2024-05-02T09:00:00.000Z"}
    assert post(COMMUNICATIONS, dict(sms, hs_communication_channel_type="VOICEMAIL"), 81) == 400  # no such channel
    assert post(COMMUNICATIONS, {k: v for k, v in sms.items() if k != "hs_communication_logged_from"}, 81) == 400
    assert post(COMMUNICATIONS, sms, 202) == 400  # a note's association type
    note = {"hs_note_body": "x", "hs_timestamp": "2024-05-02T09:00:00.000Z"}
    assert post(NOTES, dict(note, hs_note_body="x" * 65_537), 202) == 400
    assert post(NOTES, {"hs_note_body": "x"}, 202) == 400  # hs_timestamp is required
    assert fake.communications == {} and fake.notes == {}
    assert (post(COMMUNICATIONS, sms, 81), post(NOTES, note, 202)) == (201, 201)
    owners = requests.get(fake.url + "/crm/v3/owners", params={"limit": "501"}, headers=headers, timeout=5)
    assert owners.status_code == 400


def test_the_users_command_lists_the_hubspot_owners(fake, hubspot_client):
    owner = fake.add_owner("Max", "Muster", "max@example.ch")
    result = hubspot_client.application.test_cli_runner().invoke(args=["users"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "acme/crm (HubSpot): 1 user(s)"
    assert lines[2].split() == [str(owner), "Max", "Muster", "max@example.ch"]
