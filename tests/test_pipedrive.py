"""The Pipedrive backend against a fake Pipedrive API (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_backends.base import load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.pipedrive import PipedriveBackend, _next_since
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
from tests.conftest import HEADERS, TOKEN
from tests.fakes.pipedrive import API_TOKEN, OAUTH_TOKEN, FakePipedrive

NUMBER = parse_number("41215522000")  # +41 21 552 20 00, as the connector sends it
APP = "https://acme.pipedrive.com"
LOGGER = "crm_backends.pipedrive"


@pytest.fixture(scope="module")
def server():
    with FakePipedrive() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture
def make(fake, build_backend):
    def build(**options) -> PipedriveBackend:
        raw = {"company_domain": "acme", "base_url": fake.base_url, "timeout": 2.0, **options}
        if "oauth_token" not in options:
            raw.setdefault("api_token", API_TOKEN)
        return build_backend("pipedrive", name="crm", **raw)

    return build


def searches(fake):
    return fake.recorded("GET", "/api/v2/persons/search")


def utc(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 5, 6, hour, minute, second, tzinfo=UTC)


# configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({}, "api_token"),
        ({"api_token": "a", "oauth_token": "b"}, "oauth_token"),
        ({"api_token": "a", "company_domain": "acme.pipedrive.com"}, "company_domain"),
        ({"api_token": "a", "call_log_as": "note"}, "call_log_as"),
        ({"api_token": "a", "search_terms": ["e164", "fuzzy"]}, "search_terms.1"),
        ({"api_token": "a", "search_limit": 500}, "search_limit"),
        ({"api_token": "a", "base_url": "ftp://proxy"}, "base_url"),
        ({"api_token": "a", "tokn": "x"}, "tokn"),
    ],
)
def test_wrong_options_name_the_key(raw, key):
    table = {"name": "crm", "type": "pipedrive", "company_domain": "acme", **raw}
    with pytest.raises(BackendConfigError) as info:
        load_options(PipedriveBackend, table, "tenant 't', backend 'crm'")
    assert info.value.key == key


def test_defaults_and_redaction(make):
    backend = make()
    assert backend.modes == {"live", "mirror"}
    assert backend.can_log_calls
    assert backend.default_crm_name == "Pipedrive"
    assert backend.default_crm_logo.startswith("https://")
    assert backend.options["call_log_as"] == "auto"
    assert backend.options["search_terms"] == ["nsn", "e164"]
    assert backend.describe()["api_token"] == "***"
    assert backend.rate_per_second == 2.5  # 5 searches a second, 2 searches a lookup
    assert make(search_terms=["nsn"], rate_per_second=1.0).rate_per_second == 1.0


def test_check_verifies_token_and_company_domain(fake, make):
    make().check()
    assert fake.recorded("GET", "/api/v1/users/me")
    fake.company_domain = "other-company"
    with pytest.raises(BackendConfigError) as info:
        make().check()
    assert info.value.key == "company_domain"


# live lookup ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stored", ["+41 21 552 20 00", "021 552 20 00", "0041 21 552 20 00", "(021) 552 20 00"]
)
def test_match_in_each_stored_format(fake, make, stored):
    org = fake.add_org("Muster AG")
    person = fake.add_person(
        "Anna Muster", [stored, "+41 79 000 00 00"], org_id=org, emails=["anna@muster.ch"]
    )
    fake.add_person("Someone Else", ["+41 22 111 22 33"])

    contacts = make().lookup(NUMBER, 5)

    assert len(contacts) == 1
    contact = contacts[0]
    assert contact.id == str(person)
    assert contact.name == "Anna Muster"
    assert contact.company == "Muster AG"
    assert contact.contact_uri == f"{APP}/person/{person}"
    assert contact.company_uri == f"{APP}/organization/{org}"
    assert contact.phones == [stored, "+41 79 000 00 00"]
    assert contact.email == "anna@muster.ch"
    assert contact.exact is True


def test_search_requests_follow_the_docs(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    make().lookup(NUMBER, 5)
    sent = searches(fake)
    assert sorted(r.query["term"] for r in sent) == ["+41215522000", "215522000"]
    for request in sent:
        assert request.query == {"term": request.query["term"], "fields": "phone", "limit": "20"}
        assert request.headers["x-api-token"] == API_TOKEN
        assert "authorization" not in request.headers
        assert API_TOKEN not in request.raw_query


def test_several_matches_other_formats_and_decoys(fake, make):
    org = fake.add_org("Muster AG")
    ids = [
        fake.add_person("Anna Muster", ["+41 21 552 20 00"], org_id=org),
        fake.add_person("Beat Muster", ["021 552 20 00"], org_id=org),
        fake.add_person("Carla Muster", ["0041215522000"]),
        fake.add_person("Dora Muster", ["(021) 552 20 00 ext. 12"]),
    ]
    decoy = fake.add_person("Décoy", ["+33 2 15 52 20 00"])  # the loose search finds it, the re-check not
    fake.add_person("No Phone", [])

    contacts = make().lookup(NUMBER, 5)

    assert {c.id for c in contacts} == {str(i) for i in ids}
    assert str(decoy) not in {c.id for c in contacts}
    assert contacts[-1].id == str(ids[3]) and contacts[-1].exact is False  # extension: loose, ranked last
    assert all(c.exact for c in contacts[:-1])
    found_by_fake = requests.get(
        f"{fake.base_url}/api/v2/persons/search",
        params={"term": "215522000", "fields": "phone"},
        headers={"x-api-token": API_TOKEN},
        timeout=5,
    ).json()
    assert decoy in {item["item"]["id"] for item in found_by_fake["data"]["items"]}
    assert len(make().lookup(NUMBER, 2)) == 2


def test_no_match(fake, make):
    fake.add_person("Someone Else", ["+41 22 111 22 33"])
    assert make().lookup(NUMBER, 5) == []
    assert len(searches(fake)) == 2


def test_person_without_organization(fake, make):
    person = fake.add_person("Solo", ["+41215522000"])
    [contact] = make().lookup(NUMBER, 5)
    assert (contact.id, contact.company, contact.company_uri) == (str(person), None, None)


def test_short_internal_number_matches_only_exactly(fake, make):
    internal = fake.add_person("Reception", ["201"])
    fake.add_person("Long", ["+41 21 552 02 01"])
    contacts = make().lookup(parse_number("201"), 5)
    assert [c.id for c in contacts] == [str(internal)]
    assert [r.query["term"] for r in searches(fake)] == ["201"]


def test_oauth_token_goes_in_the_authorization_header(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    assert len(make(oauth_token=OAUTH_TOKEN, search_terms=["nsn"]).lookup(NUMBER, 5)) == 1
    [request] = searches(fake)
    assert request.headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert "x-api-token" not in request.headers


def test_bad_data_from_the_source_is_skipped(fake, make):
    good = fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    fake.fail_next(
        200,
        body={
            "success": True,
            "data": {
                "items": [
                    {"result_score": 1, "item": {"id": "x", "name": "No id", "phones": ["+41215522000"]}},
                    {"result_score": 1, "item": {"id": 99, "name": None, "phones": None}},
                    "garbage",
                    {
                        "result_score": 1,
                        "item": {
                            "id": good,
                            "name": "Anna Muster",
                            "phones": ["+41 21 552 20 00", 5],
                            "organization": "not an object",
                        },
                    },
                ]
            },
        },
    )
    [contact] = make(search_terms=["nsn"]).lookup(NUMBER, 5)
    assert (contact.id, contact.company) == (str(good), None)


# failures -------------------------------------------------------------------------------------
def test_401_raises_credentials_rejected_once_and_stops_calling(fake, make, caplog):
    backend = make(api_token="wrong-token", search_terms=["nsn"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(CredentialsRejected):
            backend.lookup(NUMBER, 5)
        with pytest.raises(CredentialsRejected):
            backend.lookup(NUMBER, 5)
        with pytest.raises(CredentialsRejected):
            backend.log_call(CallRecord(contact_id="1", direction="incoming", key="k"))
    assert len(fake.requests) == 1  # the later calls never reached Pipedrive
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "401" in errors[0].getMessage()
    assert "wrong-token" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)

    backend.session.headers["x-api-token"] = API_TOKEN  # the token was fixed; the retry delay is over
    backend._auth_blocked_until = 0.0
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert backend.lookup(NUMBER, 5) == []
    assert "accepts the credentials again" in caplog.text


def test_429_with_retry_after(fake, make):
    backend = make(search_terms=["nsn"])
    fake.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        backend.lookup(NUMBER, 5)
    assert info.value.retry_after == 7
    with pytest.raises(RateLimited):  # Pipedrive asked to wait: no request until then
        backend.lookup(NUMBER, 5)
    assert len(fake.requests) == 1


def test_burst_window_used_up_stops_before_a_429(fake, make):
    fake.burst_limit = 1
    backend = make(search_terms=["nsn"])
    assert backend.lookup(NUMBER, 5) == []  # answered with x-ratelimit-remaining: 0
    with pytest.raises(RateLimited) as info:
        backend.lookup(NUMBER, 5)
    assert 0 < info.value.retry_after <= 2
    assert len(fake.requests) == 1


def test_daily_budget_exhausted_stops_calls_until_reset(fake, make, caplog):
    backend = make(search_terms=["nsn"])
    fake.daily_tokens = 0
    now = datetime.now(UTC)
    to_midnight = (
        now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now
    ).total_seconds()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(RateLimited) as info:
            backend.lookup(NUMBER, 5)
        assert abs(info.value.retry_after - to_midnight) < 5
        with pytest.raises(RateLimited) as again:
            backend.log_call(CallRecord(contact_id="1", direction="incoming", key="k"))
    assert "daily" in str(again.value)
    assert len(fake.requests) == 1
    assert sum("daily API token budget" in r.getMessage() for r in caplog.records) == 1


def test_daily_budget_reaching_zero_on_a_success(fake, make):
    backend = make(search_terms=["nsn"])
    fake.daily_tokens = 20  # exactly one search
    assert backend.lookup(NUMBER, 5) == []
    with pytest.raises(RateLimited):
        backend.lookup(NUMBER, 5)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(fake, make, status):
    fake.fail_next(status, times=2)
    with pytest.raises(BackendUnavailable) as info:
        make().lookup(NUMBER, 5)
    assert str(status) in str(info.value)
    assert not isinstance(info.value, RateLimited | CredentialsRejected)


def test_garbage_answer(fake, make):
    fake.fail_next(200, body=b"<html>maintenance</html>")
    with pytest.raises(BackendUnavailable):
        make(search_terms=["nsn"]).lookup(NUMBER, 5)
    fake.fail_next(200, body={"success": True, "data": ["not", "items"]})
    with pytest.raises(BackendUnavailable):
        make(search_terms=["nsn"]).lookup(NUMBER, 5)


def test_html_403_block_is_a_rate_limit(fake, make):
    fake.fail_next(403, body=b"<html>Attention Required! | Cloudflare</html>")
    with pytest.raises(RateLimited):
        make(search_terms=["nsn"]).lookup(NUMBER, 5)


def test_timeout(fake, make):
    fake.hang_next(1.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        make(timeout=0.3, search_terms=["nsn"]).lookup(NUMBER, 5)
    assert time.monotonic() - started < 1.2
    assert "0.3" in str(info.value)


def test_one_failed_search_of_two_still_answers(fake, make):
    person = fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    fake.fail_next(503)
    assert [c.id for c in make().lookup(NUMBER, 5)] == [str(person)]


# CallFlow -------------------------------------------------------------------------------------
@pytest.fixture
def anna(fake):
    org = fake.add_org("Muster AG")
    return fake.add_person("Anna Muster", ["+41 21 552 20 00"], org_id=org), org


def note(summary: str, sender: str, receiver: str, started: str, answered: str, ended: str, key: str) -> str:
    return (
        f"<p>{summary}</p><p>From: {sender}<br>To: {receiver}<br>Started: {started}<br>"
        f"Answered: {answered}<br>Ended: {ended}</p><p>Logged by the peoplefone CONNECTOR (call {key})</p>"
    )


def test_callflow_incoming_answered(fake, make, anna):
    person, org = anna
    call = CallRecord(
        contact_id=str(person),
        direction="incoming",
        originator_number="41215522000",
        originator_name="Anna Muster",
        destination_number="41215550101",
        started=utc(8, 0, 0),
        answered=utc(8, 0, 5),
        ended=utc(8, 2, 10),
        user_id="7",
        key="call-1",
    )
    result = make().log_call(call)

    [posted] = fake.recorded("POST", "/api/v1/callLogs")
    assert posted.body == {
        "outcome": "connected",
        "to_phone_number": "+41215550101",
        "from_phone_number": "+41215522000",
        "start_time": "2024-05-06 08:00:00",
        "end_time": "2024-05-06 08:02:10",
        "duration": "125",
        "subject": "Incoming call from Anna Muster, answered, 2:05",
        "person_id": person,
        "org_id": org,
        "user_id": 7,
        "note": note(
            "Incoming call from Anna Muster, answered, 2:05",
            "Anna Muster (+41215522000)",
            "+41215550101",
            "2024-05-06 08:00:00 UTC",
            "2024-05-06 08:00:05 UTC",
            "2024-05-06 08:02:10 UTC",
            "call-1",
        ),
    }
    assert posted.headers["content-type"].startswith("application/json")
    assert result.id == fake.call_logs[0]["id"]
    assert result.url == f"{APP}/person/{person}"
    # the person, the dedupe listing, the users (is userCrmId 7 one of them? read once, cached), the call log
    assert [r.path for r in fake.requests] == [f"/api/v2/persons/{person}", "/api/v2/activities", "/api/v1/users",
                                               "/api/v1/callLogs"]


def test_callflow_incoming_missed(fake, make, anna):
    person, org = anna
    call = CallRecord(
        contact_id=str(person),
        direction="incoming",
        originator_number="41215522000",
        destination_number="41215550101",
        started=utc(9, 0, 0),
        ended=utc(9, 0, 30),
        key="call-2",
    )
    make().log_call(call)
    [posted] = fake.recorded("POST", "/api/v1/callLogs")
    assert posted.body == {
        "outcome": "no_answer",
        "to_phone_number": "+41215550101",
        "from_phone_number": "+41215522000",
        "start_time": "2024-05-06 09:00:00",
        "end_time": "2024-05-06 09:00:30",
        "duration": "0",
        "subject": "Incoming call from 41215522000, missed",
        "person_id": person,
        "org_id": org,
        "note": note(
            "Incoming call from 41215522000, missed",
            "+41215522000",
            "+41215550101",
            "2024-05-06 09:00:00 UTC",
            "-",
            "2024-05-06 09:00:30 UTC",
            "call-2",
        ),
    }


def test_callflow_outgoing(fake, make, anna):
    person, org = anna
    call = CallRecord(
        contact_id=str(person),
        direction="outgoing",
        originator_number="41215550101",
        originator_name="Max Agent",
        destination_number="41215522000",
        destination_name="Anna Muster",
        started=utc(10, 0, 0),
        answered=utc(10, 0, 10),
        ended=utc(10, 5, 10),
        user_id="7",
        key="call-3",
    )
    make().log_call(call)
    [posted] = fake.recorded("POST", "/api/v1/callLogs")
    assert posted.body == {
        "outcome": "connected",
        "to_phone_number": "+41215522000",
        "from_phone_number": "+41215550101",
        "start_time": "2024-05-06 10:00:00",
        "end_time": "2024-05-06 10:05:10",
        "duration": "300",
        "subject": "Outgoing call to Anna Muster, answered, 5:00",
        "person_id": person,
        "org_id": org,
        "user_id": 7,
        "note": note(
            "Outgoing call to Anna Muster, answered, 5:00",
            "Max Agent (+41215550101)",
            "Anna Muster (+41215522000)",
            "2024-05-06 10:00:00 UTC",
            "2024-05-06 10:00:10 UTC",
            "2024-05-06 10:05:10 UTC",
            "call-3",
        ),
    }


def test_callflow_outgoing_declined_is_busy_and_default_owner(fake, make, anna, caplog):
    person, _ = anna
    call = CallRecord(
        contact_id=str(person),
        direction="outgoing",
        originator_number="201",
        destination_number="41215522000",
        started=utc(11, 0, 0),
        declined=utc(11, 0, 20),
        user_id="max@example.com",
        key="call-4",
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        make(default_user_id=12).log_call(call)
    [posted] = fake.recorded("POST", "/api/v1/callLogs")
    assert (posted.body["outcome"], posted.body["from_phone_number"], posted.body["user_id"]) == (
        "busy",
        "201",
        12,
    )
    assert posted.body["end_time"] == "2024-05-06 11:00:20"
    assert "max@example.com" not in caplog.text and "userCrmId" in caplog.text


def test_duplicate_callflow_logs_once(fake, make, anna):
    person, _ = anna
    backend = make()
    call = CallRecord(
        contact_id=str(person),
        direction="incoming",
        originator_number="41215522000",
        started=utc(8, 0),
        ended=utc(8, 1),
        key="same-call",
    )
    first = backend.log_call(call)
    second = backend.log_call(call)
    assert first == second
    assert len(fake.call_logs) == 1
    other = backend.log_call(CallRecord(contact_id=str(person), direction="incoming", key="another-call"))
    assert other.id != first.id and len(fake.call_logs) == 2


def test_callflow_unknown_person(fake, make):
    backend = make()
    with pytest.raises(ContactNotFound):
        backend.log_call(CallRecord(contact_id="424242", direction="incoming", key="k1"))
    with pytest.raises(ContactNotFound):
        backend.log_call(CallRecord(contact_id="not-a-number", direction="incoming", key="k2"))
    assert not fake.recorded("POST")


def test_callflow_falls_back_to_activity_when_call_logs_are_forbidden(fake, make, anna, caplog):
    person, org = anna
    fake.call_logs_forbidden = True
    backend = make()
    call = CallRecord(
        contact_id=str(person),
        direction="incoming",
        originator_number="41215522000",
        originator_name="Anna Muster",
        destination_number="41215550101",
        started=utc(8, 0, 0),
        answered=utc(8, 0, 5),
        ended=utc(8, 2, 10),
        user_id="7",
        key="call-1",
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = backend.log_call(call)
        backend.log_call(
            CallRecord(contact_id=str(person), direction="incoming", started=utc(9, 0), key="call-2")
        )

    assert len(fake.recorded("POST", "/api/v1/callLogs")) == 1  # tried once, then remembered
    first, second = fake.recorded("POST", "/api/v2/activities")
    assert first.body == {
        "subject": "Incoming call from Anna Muster, answered, 2:05",
        "type": "call",
        "done": True,
        "due_date": "2024-05-06",
        "due_time": "08:00",
        "duration": "00:02",
        "participants": [{"person_id": person, "primary": True}],
        "org_id": org,
        "owner_id": 7,
        "note": note(
            "Incoming call from Anna Muster, answered, 2:05",
            "Anna Muster (+41215522000)",
            "+41215550101",
            "2024-05-06 08:00:00 UTC",
            "2024-05-06 08:00:05 UTC",
            "2024-05-06 08:02:10 UTC",
            "call-1",
        ),
    }
    assert second.body["duration"] == "00:00" and second.body["due_time"] == "09:00"
    assert result.id == str(fake.activities[0]["id"])
    assert result.url == f"{APP}/person/{person}"
    assert fake.activities[0]["person_id"] == person
    assert sum("activities" in r.getMessage() for r in caplog.records) == 1


def test_call_log_modes(fake, make, anna):
    person, _ = anna
    call = CallRecord(contact_id=str(person), direction="incoming", started=utc(8, 0), key="k")
    make(call_log_as="activity", activity_type="meeting").log_call(call)
    assert not fake.recorded("POST", "/api/v1/callLogs")
    assert fake.activities[0]["type"] == "meeting"

    fake.call_logs_forbidden = True
    with pytest.raises(CredentialsRejected):
        make(call_log_as="call_log").log_call(
            CallRecord(contact_id=str(person), direction="incoming", key="k2")
        )
    assert len(fake.activities) == 1


# mirror ---------------------------------------------------------------------------------------
def test_mirror_full_then_incremental(fake, make):
    muster = fake.add_org("Muster AG")
    other = fake.add_org("Other GmbH")
    anna = fake.add_person("Anna Muster", ["+41 21 552 20 00"], org_id=muster, emails=["anna@muster.ch"])
    beat = fake.add_person("Beat Other", ["022 111 22 33"], org_id=other)
    carla = fake.add_person("Carla", ["0041 31 000 11 22"])
    eve = fake.add_person("Eve", ["+41 44 000 00 00"])
    backend = make(sync_page_size=2)
    mirror = MirroredBackend(backend)

    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental and outcome.written == 4
    [contact] = mirror.lookup(NUMBER, 5)
    assert (contact.id, contact.name, contact.company) == (str(anna), "Anna Muster", "Muster AG")
    assert contact.contact_uri == f"{APP}/person/{anna}"
    assert contact.company_uri == f"{APP}/organization/{muster}"
    assert contact.email == "anna@muster.ch"
    assert len(fake.recorded("GET", "/api/v2/persons")) == 2  # 4 persons, pages of 2
    assert [c.id for c in mirror.lookup(parse_number("+41440000000"), 5)] == [str(eve)]
    assert not searches(fake)
    cursor = json.loads(mirror.store.get_meta("cursor"))

    fake.requests.clear()
    fake.update_person(beat, phones=["+41 21 552 20 00"])
    dora = fake.add_person("Dora New", ["+41 21 552 20 00"], org_id=muster)
    fake.rename_org(muster, "Muster Holding AG")
    fake.delete_person(carla)
    fake.update_person(eve, phones=[])

    outcome = mirror.sync_now()
    assert outcome.ok and outcome.incremental
    listed = fake.recorded("GET", "/api/v2/persons")
    assert listed[0].query["updated_since"] == cursor["persons_since"]
    assert listed[0].query["sort_by"] == "update_time"
    assert all(r.query["updated_since"] == cursor["persons_since"] for r in listed if "org_id" not in r.query)
    assert [r.query["org_id"] for r in listed if "org_id" in r.query] == [str(muster)]  # the renamed org
    orgs = fake.recorded("GET", "/api/v2/organizations")
    assert orgs[0].query["updated_since"] == cursor["orgs_since"]
    found = {c.id: c.company for c in mirror.lookup(NUMBER, 5)}
    assert found == {str(anna): "Muster Holding AG", str(beat): "Other GmbH", str(dora): "Muster Holding AG"}
    assert mirror.lookup(parse_number("+41221112233"), 5) == []  # Beat's old number
    assert mirror.lookup(parse_number("+41440000000"), 5) == []  # Eve has no number any more
    # Pipedrive's list does not report deletions: the periodic full sync removes them.
    assert mirror.lookup(parse_number("+41310001122"), 5)
    outcome = mirror.sync_now(full=True)
    assert outcome.ok and outcome.deleted == 1
    assert mirror.lookup(parse_number("+41310001122"), 5) == []
    mirror.close()


def test_sync_is_full_without_a_cursor_and_incremental_with_one(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    backend = make()
    batches = list(backend.sync(None))
    assert all(b.complete for b in batches) and sum(len(b.contacts) for b in batches) == 1
    assert "updated_since" not in fake.recorded("GET", "/api/v2/persons")[0].query
    fresh = json.loads(batches[-1].cursor)
    fake.requests.clear()
    batches = list(backend.sync(json.dumps(fresh)))
    assert not any(b.complete for b in batches)
    assert fake.recorded("GET", "/api/v2/persons")[0].query["updated_since"] == fresh["persons_since"]
    # a cursor written when the backend kept its own schedule (with "full_at") still resumes
    fake.requests.clear()
    old = json.dumps({**fresh, "full_at": time.time() - 7 * 86400})
    assert not any(b.complete for b in backend.sync(old))
    assert fake.recorded("GET", "/api/v2/persons")[0].query["updated_since"] == fresh["persons_since"]


def test_mirror_lists_everything_again_after_full_sync_interval(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    mirror = MirroredBackend(make(full_sync_interval=3600))
    assert not mirror.sync_now().incremental
    assert mirror.sync_now().incremental
    mirror.store.set_meta("last_full_sync", str(time.time() - 7200))
    fake.requests.clear()
    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental
    assert "updated_since" not in fake.recorded("GET", "/api/v2/persons")[0].query
    mirror.close()


def test_sync_waits_through_a_short_429(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    mirror = MirroredBackend(make())
    fake.fail_next(429, headers={"Retry-After": "1"}, path_prefix="/api/v2/persons")
    started = time.monotonic()
    outcome = mirror.sync_now()
    assert outcome.ok, outcome.error
    assert time.monotonic() - started >= 0.9
    assert len(mirror.lookup(NUMBER, 5)) == 1
    mirror.close()


def test_sync_failure_keeps_the_last_copy(fake, make):
    fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    mirror = MirroredBackend(make())
    assert mirror.sync_now().ok
    fake.fail_next(503)
    outcome = mirror.sync_now()
    assert not outcome.ok and "503" in outcome.error
    assert len(mirror.lookup(NUMBER, 5)) == 1
    mirror.close()


def test_mirror_logs_calls_through_the_source(fake, make, anna):
    person, _ = anna
    mirror = MirroredBackend(make())
    result = mirror.log_call(CallRecord(contact_id=str(person), direction="incoming", key="k"))
    assert result.id == fake.call_logs[0]["id"]
    mirror.close()


def test_sync_cursor_overlaps_changes_made_while_listing():
    started = datetime(2024, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    assert _next_since(None, "2024-05-01T08:00:00Z", started) == "2024-05-01T08:00:00Z"
    # a change seen during the listing: the next sync starts 5 minutes before this one began
    assert _next_since(None, "2024-06-01T12:00:30Z", started) == "2024-06-01T11:55:00Z"
    # never goes back before the previous cursor
    assert _next_since("2024-06-01T11:58:00Z", None, started) == "2024-06-01T11:58:00Z"


# exactly once through lost answers ------------------------------------------------------------
def lost_call(person: int, key: str = "0123abcd" * 8) -> CallRecord:
    return CallRecord(
        contact_id=str(person), direction="incoming", originator_number="41215522000",
        started=utc(8, 0), answered=utc(8, 0, 5), ended=utc(8, 2), key=key,
    )


@pytest.mark.parametrize("call_log_as", ["call_log", "activity"])
def test_lost_answer_the_retry_finds_the_logged_call(fake, make, anna, call_log_as):
    person, _ = anna
    created = "/api/v1/callLogs" if call_log_as == "call_log" else "/api/v2/activities"
    fake.lose_next(path_prefix=created)  # Pipedrive stores it, the connection drops before the answer
    with pytest.raises(BackendUnavailable):
        make(call_log_as=call_log_as).log_call(lost_call(person))
    assert len(fake.activities) == 1

    # the retry in another worker (nothing in memory) finds it in the person's activities
    result = make(call_log_as=call_log_as).log_call(lost_call(person))
    assert result.id == str(fake.activities[0]["id"])
    assert result.url == f"{APP}/person/{person}"
    assert len(fake.activities) == 1 and len(fake.recorded("POST", created)) == 1
    listed = fake.recorded("GET", "/api/v2/activities")[-1]
    assert listed.query == {"person_id": str(person), "sort_by": "add_time", "sort_direction": "desc", "limit": "100"}

    # a different call of the same person is logged, not mistaken for it
    make(call_log_as=call_log_as).log_call(lost_call(person, key="fedc9876" * 8))
    assert len(fake.activities) == 2


def test_answer_lost_by_a_timeout_is_not_a_second_call(fake, make, anna):
    person, _ = anna
    fake.lose_next(path_prefix="/api/v1/callLogs", delay=1.5)  # the answer comes after the client's timeout
    with pytest.raises(BackendUnavailable):
        make(call_log_as="call_log", timeout=0.5).log_call(lost_call(person))
    make(call_log_as="call_log", timeout=0.5).log_call(lost_call(person))
    assert len(fake.call_logs) == 1 and len(fake.activities) == 1


def test_refused_call_log_is_a_permanent_error(fake, make, anna):
    person, _ = anna
    fake.fail_next(400, path_prefix="/api/v1/callLogs")
    with pytest.raises(DeliveryRefused):
        make(call_log_as="call_log").log_call(lost_call(person))
    fake.fail_next(404, path_prefix="/api/v1/callLogs")
    with pytest.raises(ContactNotFound):
        make(call_log_as="call_log").log_call(lost_call(person))
    assert fake.call_logs == []


def test_search_by_name_asks_the_persons_search_on_name(fake, make):
    anna = fake.add_person("Anna Muster", ["+41 21 552 20 00"])
    fake.add_person("Bruno Muster", [])  # no phone: nothing to dial
    fake.add_person("Carla Rossi", ["+41 44 668 18 00"])
    backend = make()
    assert [(c.id, c.name) for c in backend.search("muster", 20)] == [(str(anna), "Anna Muster")]
    assert backend.search("m", 20) == [] and backend.search("nobody", 20) == []  # Pipedrive wants 2 characters


# CreateContact ------------------------------------------------------------------------------------
def test_create_contact_adds_a_person_as_documented_and_the_next_lookup_finds_it(fake, make):
    from lookup_core.types import NewContact

    backend = make()
    number = parse_number("41791234567")
    assert backend.lookup(number, 5) == []
    result = backend.create_contact(NewContact(number="+41791234567", name="Alexa Holiday", email="a@h.example"))
    [sent] = fake.recorded("POST", "/api/v2/persons")
    assert sent.body == {"name": "Alexa Holiday",
                         "phones": [{"value": "+41791234567", "primary": True, "label": "work"}],
                         "emails": [{"value": "a@h.example", "primary": True, "label": "work"}]}
    assert result.url == f"https://acme.pipedrive.com/person/{result.id}"
    [found] = backend.lookup(number, 5)
    assert found.id == result.id and found.name == "Alexa Holiday"


def test_the_fake_refuses_a_person_pipedrive_refuses(fake):
    url = fake.base_url + "/api/v2/persons"
    headers = {"x-api-token": API_TOKEN}
    assert requests.post(url, headers=headers, json={"phones": [{"value": "1"}]}, timeout=5).status_code == 400
    assert requests.post(url, headers=headers, json={"name": "x", "phones": ["+41"]}, timeout=5).status_code == 400
    assert requests.post(url, headers=headers, json={"name": "x", "phone": "+41"}, timeout=5).status_code == 400
    assert requests.post(url, headers=headers, json={"name": "x"}, timeout=5).status_code == 200


def test_search_formats_become_search_terms(fake, make):
    fake.add_person("Anna", ["021/552.20.00"])
    make(search_formats=["0##/###.##.##"]).lookup(parse_number("41215522000"), 5)
    assert "021/552.20.00" in [r.query.get("term") for r in searches(fake)]


def test_a_mirrored_persons_number_labels_are_their_types(fake, make):
    anna = fake.add_person("Anna Muster", [
        {"value": "+41 21 552 20 00", "primary": True, "label": "work"},
        {"value": "079 123 45 67", "primary": False, "label": "mobile"},
        {"value": "+41 21 552 20 09", "primary": False, "label": "home"},
        {"value": "+41 21 552 20 08", "primary": False, "label": "other"},
    ], job_title="Buyer")
    beat = fake.add_person("Beat Ohne", [{"value": "+41 44 000 00 00"}])  # no label: unknown
    mirror = MirroredBackend(make())
    assert mirror.sync_now().ok
    stored = mirror.store.get(str(anna))
    assert stored.phone_types == {"+41 21 552 20 00": "business", "079 123 45 67": "mobile",
                                  "+41 21 552 20 09": "home", "+41 21 552 20 08": "other"}
    assert stored.job_title == "Buyer"
    assert mirror.store.get(str(beat)).phone_types == {} and mirror.store.get(str(beat)).job_title is None
    mirror.close()
# a later post of a call updates its record ----------------------------------------------------------
def ring_and_hang_up(person: int, key: str = "ab12" * 16) -> tuple[CallRecord, CallRecord]:
    """The connector's post at ring (a click on CallFlow) and its automatic one at hang-up, merged
    the way the outbox merges them."""
    ring = CallRecord(contact_id=str(person), direction="incoming", originator_number="41215522000",
                      originator_name="Anna Muster", destination_number="41215550101",
                      started=utc(8, 0, 0), user_id="7", key=key)
    hang_up = CallRecord(contact_id=str(person), direction="incoming", started=utc(8, 0, 0),
                         answered=utc(8, 0, 5), ended=utc(8, 2, 10), key=key, note="Wants a quote & a demo")
    return ring, ring.merged(hang_up)


def test_a_call_log_posted_at_ring_and_at_hang_up_is_one_record_with_the_final_state(fake, make, anna):
    person, _ = anna
    ring, final = ring_and_hang_up(person)
    backend = make(call_log_as="call_log")
    first = backend.log_call(ring)
    [log_] = fake.call_logs
    assert log_["outcome"] == "no_answer" and fake.activities[0]["subject"] == "Incoming call from Anna Muster, missed"

    updated = backend.update_call(first.id, final)

    assert updated == first  # the same record, the same id
    assert len(fake.call_logs) == 1 and len(fake.activities) == 1
    [read] = fake.recorded("GET", f"/api/v1/callLogs/{first.id}")
    [patch] = fake.recorded("PATCH", f"/api/v2/activities/{log_['activity_id']}")
    assert patch.body == {
        "subject": "Incoming call from Anna Muster, answered, 2:05\nWants a quote & a demo",
        "done": True,
        "due_date": "2024-05-06",
        "due_time": "08:00",
        "duration": "00:02",
        "note": note(
            "Incoming call from Anna Muster, answered, 2:05\nWants a quote &amp; a demo",
            "Anna Muster (+41215522000)",
            "+41215550101",
            "2024-05-06 08:00:00 UTC",
            "2024-05-06 08:00:05 UTC",
            "2024-05-06 08:02:10 UTC",
            "ab12" * 16,
        ),
    }
    activity = fake.activity(log_["activity_id"])
    assert activity["subject"].startswith("Incoming call from Anna Muster, answered, 2:05")
    assert activity["duration"] == "00:02" and "Ended: 2024-05-06 08:02:10 UTC" in activity["note"]
    assert fake.call_logs[0]["outcome"] == "no_answer"  # Pipedrive cannot change a call log itself

    # delivered again (a lost answer): the same update, still one record
    assert backend.update_call(first.id, final) == first
    assert len(fake.activities) == 1 and fake.activity(log_["activity_id"])["duration"] == "00:02"


def test_an_activity_posted_at_ring_and_at_hang_up_is_updated_in_place(fake, make, anna):
    person, org = anna
    ring, final = ring_and_hang_up(person)
    backend = make(call_log_as="activity")
    first = backend.log_call(ring)
    assert fake.activity(int(first.id))["duration"] == "00:00"

    assert backend.update_call(first.id, final) == first

    [activity] = fake.activities
    assert activity["id"] == int(first.id) and activity["done"] is True
    assert activity["duration"] == "00:02" and "Answered: 2024-05-06 08:00:05 UTC" in activity["note"]
    assert activity["person_id"] == person and activity["org_id"] == org and activity["type"] == "call"
    assert not fake.recorded("GET", "/api/v1/callLogs/" + first.id)  # an activity id needs no look-up


def test_updating_a_record_deleted_in_pipedrive_is_refused_for_good(fake, make, anna):
    person, _ = anna
    ring, final = ring_and_hang_up(person)
    backend = make(call_log_as="activity")
    first = backend.log_call(ring)
    fake.delete_activity(int(first.id))
    with pytest.raises(DeliveryRefused, match="gone"):
        backend.update_call(first.id, final)
    with pytest.raises(DeliveryRefused, match="gone"):
        backend.update_call("0123456789abcdef01234567", final)  # no such call log


def test_a_failed_update_is_retried(fake, make, anna):
    person, _ = anna
    ring, final = ring_and_hang_up(person)
    backend = make(call_log_as="activity")
    first = backend.log_call(ring)
    fake.fail_next(503, path_prefix="/api/v2/activities/")
    with pytest.raises(BackendUnavailable):
        backend.update_call(first.id, final)
    assert backend.update_call(first.id, final) == first
    assert fake.activity(int(first.id))["duration"] == "00:02"


def test_the_fake_refuses_an_update_pipedrive_refuses(fake, anna):
    person, _ = anna
    headers = {"x-api-token": API_TOKEN}
    created = requests.post(fake.base_url + "/api/v2/activities", headers=headers, timeout=5,
                            json={"subject": "Call", "participants": [{"person_id": person, "primary": True}]})
    url = f"{fake.base_url}/api/v2/activities/{created.json()['data']['id']}"
    for bad in ({"outcome": "connected"}, {"done": 1}, {"duration": 125}, {"due_time": "8:00:00"},
                {"person_id": person}, {"type": "sms"}, {"owner_id": 999}):
        answer = requests.patch(url, headers=headers, json=bad, timeout=5)
        assert answer.status_code == 400, bad
        assert answer.json()["success"] is False
    missing = requests.patch(fake.base_url + "/api/v2/activities/999999", headers=headers, json={"done": True},
                             timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"success": False, "error": "Activity not found", "errorCode": 404,
                              "error_info": "Please check developers.pipedrive.com", "data": None,
                              "additional_data": None, "code": "ERR_NOT_FOUND"}
    assert requests.patch(url, headers=headers, json={"done": False}, timeout=5).status_code == 200
    # the CallLogs API has no update endpoint
    assert requests.put(fake.base_url + "/api/v1/callLogs/abc", headers=headers, json={}, timeout=5).status_code == 404


# MessageLog -----------------------------------------------------------------------------------------
def digest(person: int, count: int, day: str = "2026-11-21", kind: str = "SMS", **extra) -> MessageLog:
    messages = tuple(
        Message(id=f"m-{day}-{n}", time=datetime.fromisoformat(f"{day}T09:{n:02d}:00+00:00"),
                direction="incoming" if n % 2 else "outgoing",
                from_number="+41215522000" if n % 2 else "+41445001020",
                from_name="Anna Muster" if n % 2 else "Support",
                to_number="+41445001020" if n % 2 else "+41215522000",
                to_name="Support" if n % 2 else "Anna Muster",
                text=f"message <{n}>", **extra)
        for n in range(1, count + 1)
    )
    return MessageLog(contact_id=str(person), kind=kind, conversation_id="c-1", day=day, zone="Europe/Zurich",
                      messages=messages, user_id="7", key=(day.replace("-", "") + kind).ljust(64, "0"))


def test_ten_sms_of_a_day_make_one_sms_activity_holding_ten_lines(fake, make, anna):
    person, org = anna
    fake.add_activity_type("sms", "SMS")
    backend = make()
    first = backend.log_message(digest(person, 1))
    for count in range(2, 11):
        assert backend.update_message(first.id, digest(person, count)) == first

    [activity] = fake.activities
    assert str(activity["id"]) == first.id and first.url == f"{APP}/person/{person}"
    assert activity["type"] == "sms" and activity["done"] is True and activity["due_date"] == "2026-11-21"
    assert activity["subject"] == "SMS conversation with Anna Muster \u2013 2026-11-21"
    assert activity["person_id"] == person and activity["org_id"] == org and activity["owner_id"] == 7
    lines = activity["note"].split("<p>")[2].removesuffix("</p>").split("<br>")
    assert len(lines) == 10
    assert lines[0] == "10:01 \u2190 Anna Muster: message &lt;1&gt;"
    assert lines[1] == "10:02 \u2192 Anna Muster: message &lt;2&gt;"
    assert activity["note"].startswith(
        "<p>Participants: Anna Muster (+41215522000), Support (+41445001020)</p>")
    patches = fake.recorded("PATCH")
    assert len(patches) == 9 and set(patches[-1].body) == {"subject", "note"}
    assert len(fake.recorded("GET", "/api/v1/activityTypes")) == 1  # read once, then cached

    second_day = backend.log_message(digest(person, 1, day="2026-11-22"))
    assert second_day.id != first.id and len(fake.activities) == 2


def test_without_an_sms_type_messages_are_call_activities(fake, make, anna):
    person, _ = anna
    fake.add_activity_type("sms", "SMS", active=False)
    make().log_message(digest(person, 1))
    assert fake.activities[0]["type"] == "call"


def test_a_voicemail_is_one_activity_with_its_link(fake, make, anna):
    person, _ = anna
    voicemail = digest(person, 1, kind="Voicemail", link="https://pbx.example/rec/77.mp3?a=1&b=2")
    result = make().log_message(voicemail)
    [activity] = fake.activities
    assert str(activity["id"]) == result.id
    assert activity["subject"] == "Voicemail from Anna Muster \u2013 2026-11-21"
    assert '<a href="https://pbx.example/rec/77.mp3?a=1&amp;b=2">Recording</a>' in activity["note"]


def test_a_message_record_whose_answer_was_lost_is_not_made_twice(fake, make, anna):
    person, _ = anna
    fake.lose_next(path_prefix="/api/v2/activities")
    with pytest.raises(BackendUnavailable):
        make().log_message(digest(person, 2))
    # another worker, nothing in memory; the digest has a third message by now
    result = make().log_message(digest(person, 3))
    assert len(fake.activities) == 1 and result.id == str(fake.activities[0]["id"])
    assert all(f"message &lt;{n}&gt;" in fake.activities[0]["note"] for n in (1, 2, 3))  # brought up to date
    make().log_message(digest(person, 2, day="2026-11-23"))  # another digest is made
    assert len(fake.activities) == 2


def test_a_message_for_a_person_that_is_gone(fake, make):
    with pytest.raises(ContactNotFound):
        make().log_message(digest(424242, 1))
    with pytest.raises(DeliveryRefused):
        make().update_message("not-an-activity", digest(1, 1))
    assert not fake.recorded("POST") and not fake.recorded("PATCH")


# users ----------------------------------------------------------------------------------------------
def test_users_are_the_active_pipedrive_users(fake, make):
    fake.add_user(21, "Max Agent", "max@acme.example")
    fake.add_user(22, "Former Agent", "former@acme.example", active=False)
    backend = make()
    assert backend.users and backend.can_list_users(backend.options)
    assert backend.list_users() == [CrmUser(id="7", name="Test User", email="test.user@acme.example"),
                                    CrmUser(id="21", name="Max Agent", email="max@acme.example")]


def test_an_unknown_user_id_is_warned_about_once_and_the_default_owner_used(fake, make, anna, caplog):
    person, _ = anna
    fake.add_user(12, "Default Owner", "owner@acme.example")
    backend = make(call_log_as="activity", default_user_id=12)
    with caplog.at_level(logging.WARNING):
        for key in ("call-a", "call-b"):
            backend.log_call(CallRecord(contact_id=str(person), direction="incoming", started=utc(8, 0),
                                        user_id="4242", key=key))
        backend.log_call(CallRecord(contact_id=str(person), direction="incoming", started=utc(8, 0),
                                    user_id="7", key="call-c"))
    assert [a["owner_id"] for a in fake.activities] == [12, 12, 7]
    assert sum("'4242' is not a user" in r.getMessage() for r in caplog.records) == 1
    assert len(fake.recorded("GET", "/api/v1/users")) == 1  # read once, cached


def test_without_a_default_user_pipedrive_chooses_the_owner(fake, make, anna):
    person, _ = anna
    make(call_log_as="activity").log_call(CallRecord(contact_id=str(person), direction="incoming", user_id="4242",
                                                     key="call-d"))
    [posted] = fake.recorded("POST", "/api/v2/activities")
    assert "owner_id" not in posted.body and fake.activities[0]["owner_id"] == 7


# through the web layer ------------------------------------------------------------------------------
@pytest.fixture
def web(fake, make_app, tmp_path):
    config = f"""
[[tenant]]
name = "acme"
tokens = ["{TOKEN}"]

[[tenant.backend]]
name = "crm"
type = "pipedrive"
api_token = "{API_TOKEN}"
company_domain = "acme"
base_url = "{fake.base_url}"
call_log_as = "call_log"
timeout = 2.0
"""
    path = tmp_path / "lookup.toml"
    path.write_text(config)
    return make_app(LOOKUP_CONFIG=str(path), LOOKUP_TIMEZONE="Europe/Zurich").test_client()


def test_through_the_service_sms_make_one_digest_and_a_call_one_record(fake, web, anna):
    person, _ = anna
    fake.add_activity_type("sms", "SMS")

    def sms(number: int, day: str = "2026-11-21") -> dict:
        return {"inputs": {"contactCrmId": f"crm:{person}", "type": "SMS", "direction": "incoming",
                           "fromNumber": "+41215522000", "fromName": "Anna Muster", "toNumber": "+41445001020",
                           "text": f"message number {number}", "time": f"{day}T09:{number:02d}:00Z",
                           "messageId": f"m-{day}-{number}"}}

    ids = set()
    for number in (*range(1, 11), 3):  # the third message posted twice
        response = web.post("/MessageLog", json=sms(number), headers=HEADERS)
        assert response.status_code == 200, response.get_json()
        ids.add(response.get_json()["id"])
    [activity] = fake.activities
    assert ids == {str(activity["id"])}
    assert activity["note"].count("message number 3<") == 1
    assert sum(activity["note"].count(f"message number {n}<") for n in range(1, 11)) == 10
    web.post("/MessageLog", json=sms(1, day="2026-11-22"), headers=HEADERS)
    assert len(fake.activities) == 2

    ring = {"inputs": {"contactCrmId": f"crm:{person}", "direction": "incoming", "originatorNumber": "41215522000",
                       "destinationNumber": "41445001020", "startedTime": "2026-11-21T09:00:00Z"}}
    first = web.post("/CallFlow", json=ring, headers=HEADERS).get_json()
    hang_up = {"inputs": dict(ring["inputs"], answeredTime="2026-11-21T09:00:05Z", endedTime="2026-11-21T09:03:20Z")}
    final = web.post("/CallFlow", json=hang_up, headers=HEADERS)
    assert final.status_code == 200 and final.get_json()["id"] == first["id"]
    assert len(fake.call_logs) == 1
    call_activity = fake.activity(fake.call_logs[0]["activity_id"])
    assert call_activity["duration"] == "00:03" and "answered, 3:15" in call_activity["subject"]


def test_the_users_command_lists_the_pipedrive_users(fake, web):
    fake.add_user(21, "Max Agent", "max@acme.example")
    result = web.application.test_cli_runner().invoke(args=["users", "acme", "crm", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["users"] == [
        {"id": "7", "name": "Test User", "email": "test.user@acme.example"},
        {"id": "21", "name": "Max Agent", "email": "max@acme.example"}]


def test_a_digest_whose_activity_was_deleted_in_pipedrive_is_made_again_with_the_whole_day(fake, web, anna):
    person, _ = anna
    fake.add_activity_type("sms", "SMS")

    def sms(number: int) -> dict:
        return {"inputs": {"contactCrmId": f"crm:{person}", "type": "SMS", "direction": "incoming",
                           "fromNumber": "+41215522000", "toNumber": "+41445001020", "text": f"message number {number}",
                           "time": f"2026-11-21T09:{number:02d}:00Z", "messageId": f"m-{number}"}}

    first = web.post("/MessageLog", json=sms(1), headers=HEADERS).get_json()
    fake.delete_activity(int(first["id"]))  # a user deleted the day's record in Pipedrive
    again = web.post("/MessageLog", json=sms(2), headers=HEADERS)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] != first["id"]
    [live] = [a for a in fake.activities if not a.get("is_deleted")]
    assert str(live["id"]) == again.get_json()["id"]
    assert "message number 1<" in live["note"] and "message number 2<" in live["note"]
    # the next message of the day updates the new record
    assert web.post("/MessageLog", json=sms(3), headers=HEADERS).get_json()["id"] == again.get_json()["id"]
    assert "message number 3<" in fake.activity(live["id"])["note"]
