"""The Odoo backend against a fake Odoo speaking the documented JSON-RPC API (tests/fakes/odoo.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from crm_backends.base import BackendSpec, load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.odoo import OdooBackend
from lookup_core.errors import BackendConfigError, BackendUnavailable, ContactNotFound, CredentialsRejected, RateLimited
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord
from tests.conftest import backend_builder
from tests.fakes.odoo import ACCESS_DENIED, ACCESS_ERROR, OdooFake
from tests.servers import wait_until

NUMBER = parse_number("41215522000")
READ_FIELDS = [
    "name",
    "phone",
    "mobile",
    "email",
    "function",
    "parent_id",
    "commercial_partner_id",
    "commercial_company_name",
    "is_company",
    "write_date",
]


@pytest.fixture
def odoo():
    started: list[OdooFake] = []

    def factory(**kwargs) -> OdooFake:
        fake = OdooFake(**kwargs).start()
        started.append(fake)
        return fake

    yield factory
    for fake in started:
        fake.stop()


def make_backend(fake: OdooFake, tmp_path, **options) -> OdooBackend:
    defaults = {"database": fake.database, "username": fake.login, "api_key": fake.api_key, "timeout": 2.0}
    return backend_builder(tmp_path)("odoo", name="erp", url=fake.url, **{**defaults, **options})


def seed_formats(fake: OdooFake) -> dict[str, int]:
    """One line stored in every spelling Odoo's free-text phone fields allow, plus near misses."""
    ids = {}
    ids["company"] = fake.add_partner("Swiss Phone Lab SA", is_company=True, phone="+41 21 552 20 00")
    ids["alice"] = fake.add_partner(
        "Alice Martin", phone="021 552 20 00", parent_id=ids["company"], email="alice@lab.example"
    )
    second_field = "mobile" if fake.has_mobile else "phone"
    ids["bob"] = fake.add_partner("Bob Keller", **{second_field: "(021) 552 20 00"})
    ids["near"] = fake.add_partner("Near Miss", phone="+41 21 552 20 01")
    # holds the digits 215522000 in order, so both the substring and the pattern query return it
    ids["scrambled"] = fake.add_partner("Scrambled Digits", phone="+41 22 155 22 000")
    ids["france"] = fake.add_partner("Paris Office", phone="+33 1 23 45 67 89")
    return ids


def search_reads(fake: OdooFake) -> list[dict]:
    return [
        r
        for r in fake.requests
        if (r["body"] or {}).get("params", {}).get("method") == "execute_kw"
        and r["body"]["params"]["args"][3:5] == ["res.partner", "search_read"]
    ]


# ---------------------------------------------------------------------------------- lookups
@pytest.mark.parametrize(
    ("version", "phone_validation"),
    [
        ("16.0", True),
        ("17.0", True),
        ("17.0", False),
        ("18.0", True),
        ("saas~18.2", True),
        ("19.0", False),
    ],
)
def test_lookup_finds_every_stored_format(odoo, tmp_path, version, phone_validation):
    fake = odoo(version=version, phone_validation=phone_validation)
    ids = seed_formats(fake)
    backend = make_backend(fake, tmp_path)

    contacts = backend.lookup(NUMBER, 5)

    assert {c.id for c in contacts} == {str(ids["company"]), str(ids["alice"]), str(ids["bob"])}
    assert all(c.exact for c in contacts)
    by_id = {c.id: c for c in contacts}
    assert by_id[str(ids["alice"])].phones == ["021 552 20 00"]
    assert by_id[str(ids["bob"])].phones == ["(021) 552 20 00"]
    # the query was loose: the scrambled number came back from Odoo and was dropped by the re-check
    (request,) = search_reads(fake)
    returned = {row["id"] for row in request["response"]["result"]}
    assert ids["scrambled"] in returned
    assert ids["near"] not in returned and ids["france"] not in returned


def test_lookup_request_bodies_with_phone_mobile_search(odoo, tmp_path):
    fake = odoo(version="17.0")
    seed_formats(fake)
    backend = make_backend(fake, tmp_path)

    backend.lookup(NUMBER, 5)

    calls = [(r["body"]["params"]["service"], r["body"]["params"]["method"]) for r in fake.requests]
    assert calls == [
        ("common", "authenticate"),
        ("object", "execute_kw"),  # res.partner.fields_get
        ("common", "version"),
        ("object", "execute_kw"),  # res.partner.search_read
    ]
    assert all(r["path"] == "/jsonrpc" for r in fake.requests)
    assert fake.requests[0]["body"] == {
        "jsonrpc": "2.0",
        "method": "call",
        "params": {
            "service": "common",
            "method": "authenticate",
            "args": ["acme", "bot@acme.test", "secret-key-1", {}],
        },
        "id": 1,
    }
    assert fake.requests[1]["body"]["params"]["args"] == [
        "acme",
        7,
        "secret-key-1",
        "res.partner",
        "fields_get",
        [],
        {"attributes": ["type"]},
    ]
    assert fake.requests[3]["body"] == {
        "jsonrpc": "2.0",
        "method": "call",
        "params": {
            "service": "object",
            "method": "execute_kw",
            "args": [
                "acme",
                7,
                "secret-key-1",
                "res.partner",
                "search_read",
                [[["phone_mobile_search", "ilike", "215522000"]]],
                {"fields": READ_FIELDS, "limit": 20, "order": "write_date desc, id desc"},
            ],
        },
        "id": 4,
    }

    # uid, version and fields are remembered: the next lookup is one request
    fake.clear_requests()
    backend.lookup(NUMBER, 5)
    assert len(fake.requests) == 1


def test_lookup_pattern_fallback_without_phone_validation(odoo, tmp_path):
    fake = odoo(version="17.0", phone_validation=False)
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    pattern = "%2%1%5%5%2%2%0%0%0%"
    args, kwargs = fake.model_calls("res.partner", "search_read")[0]
    assert args == [["|", ["phone", "=ilike", pattern], ["mobile", "=ilike", pattern]]]
    assert kwargs["fields"] == READ_FIELDS


def test_lookup_without_mobile_field_in_18_2(odoo, tmp_path):
    fake = odoo(version="saas~18.2", phone_validation=False)
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    args, kwargs = fake.model_calls("res.partner", "search_read")[0]
    assert args == [[["phone", "=ilike", "%2%1%5%5%2%2%0%0%0%"]]]
    assert "mobile" not in kwargs["fields"]


def test_several_matches_newest_first_and_limit(odoo, tmp_path):
    fake = odoo()
    old = fake.add_partner("Old Contact", phone="+41 21 552 20 00", write_date="2023-01-01 10:00:00")
    new = fake.add_partner("New Contact", phone="0215522000", write_date="2024-06-01 10:00:00")
    mid = fake.add_partner("Mid Contact", phone="021/552.20.00", write_date="2024-02-01 10:00:00")
    ext = fake.add_partner(
        "Reception Desk", phone="+41 21 552 20 00 ext. 12", write_date="2024-07-01 10:00:00"
    )
    backend = make_backend(fake, tmp_path)

    contacts = backend.lookup(NUMBER, 5)
    assert [c.name for c in contacts] == ["New Contact", "Mid Contact", "Old Contact", "Reception Desk"]
    assert [c.exact for c in contacts] == [True, True, True, False]
    assert contacts[0].last_activity == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)

    top = backend.lookup(NUMBER, 2)
    assert [c.id for c in top] == [str(new), str(mid)]
    assert {old, ext}  # all four were stored


def test_no_match_is_empty(odoo, tmp_path):
    fake = odoo()
    seed_formats(fake)
    backend = make_backend(fake, tmp_path)
    assert backend.lookup(parse_number("41445550000"), 5) == []


def test_short_number_matches_only_exactly(odoo, tmp_path):
    fake = odoo()
    desk = fake.add_partner("Front Desk", phone="201")
    fake.add_partner("Long Number", phone="+41 21 552 02 01")
    backend = make_backend(fake, tmp_path)

    contacts = backend.lookup(parse_number("201"), 5)

    assert [c.id for c in contacts] == [str(desk)]
    args, _ = fake.model_calls("res.partner", "search_read")[0]
    assert args == [["|", ["phone", "=", "201"], ["mobile", "=", "201"]]]


def test_company_and_uris_before_17_2(odoo, tmp_path):
    fake = odoo(version="17.0")
    ids = seed_formats(fake)
    sales = fake.add_partner("Sales Team", parent_id=ids["company"], is_company=False)
    carol = fake.add_partner("Carol Weber", phone="+41 21 552 20 00", parent_id=sales)
    freelancer = fake.add_partner("Dan Solo", phone="+41 21 552 20 00", company_name="Solo Consulting")
    backend = make_backend(fake, tmp_path)

    by_id = {c.id: c for c in backend.lookup(NUMBER, 10)}
    base = fake.url

    def form(record_id: int) -> str:
        return f"{base}/web#id={record_id}&model=res.partner&view_type=form"

    alice = by_id[str(ids["alice"])]
    assert (alice.name, alice.company, alice.email) == (
        "Alice Martin",
        "Swiss Phone Lab SA",
        "alice@lab.example",
    )
    assert alice.contact_uri == form(ids["alice"])
    assert alice.company_uri == form(ids["company"])

    company = by_id[str(ids["company"])]
    assert company.company == "Swiss Phone Lab SA"
    assert company.company_uri == company.contact_uri == form(ids["company"])

    # a contact of a department of a company belongs to the company (commercial partner)
    carol_contact = by_id[str(carol)]
    assert carol_contact.company == "Swiss Phone Lab SA"
    assert carol_contact.company_uri == form(ids["company"])

    solo = by_id[str(freelancer)]
    assert solo.company == "Solo Consulting"
    assert solo.company_uri is None

    bob = by_id[str(ids["bob"])]
    assert bob.company is None and bob.company_uri is None


@pytest.mark.parametrize("version", ["saas~17.2", "18.0", "19.0"])
def test_uris_from_17_2_use_paths(odoo, tmp_path, version):
    fake = odoo(version=version)
    ids = seed_formats(fake)
    backend = make_backend(fake, tmp_path)
    alice = next(c for c in backend.lookup(NUMBER, 5) if c.id == str(ids["alice"]))
    assert alice.contact_uri == f"{fake.url}/odoo/res.partner/{ids['alice']}"
    assert alice.company_uri == f"{fake.url}/odoo/res.partner/{ids['company']}"


def test_configured_version_and_url_template(odoo, tmp_path):
    fake = odoo(version="17.0")
    ids = seed_formats(fake)
    backend = make_backend(fake, tmp_path, version="18.0", contact_url_template="{url}/odoo/contacts/{id}")
    alice = next(c for c in backend.lookup(NUMBER, 5) if c.id == str(ids["alice"]))
    assert alice.contact_uri == f"{fake.url}/odoo/contacts/{ids['alice']}"
    assert not fake.rpc_calls("common", "version")  # a configured version is not asked for


def test_bad_rows_are_skipped(odoo, tmp_path):
    fake = odoo()
    fake.add_partner(None, phone="+41 21 552 20 00", parent_id=None)  # nameless address
    fake.add_partner("No Number")
    backend = make_backend(fake, tmp_path)
    contacts = backend.lookup(NUMBER, 5)
    assert len(contacts) == 1 and contacts[0].name is None


# ---------------------------------------------------------------------------------- CallFlow
T0 = datetime(2024, 3, 5, 9, 30, 0, tzinfo=UTC)


def incoming_answered(contact_id: str, key: str = "key-in-answered") -> CallRecord:
    return CallRecord(
        contact_id=contact_id,
        direction="incoming",
        originator_number="+41215522000",
        destination_number="+41445550101",
        destination_name="Anna Agent",
        started=T0,
        answered=T0 + timedelta(seconds=10),
        ended=T0 + timedelta(seconds=135),
        user_id="9",
        key=key,
    )


def incoming_missed(contact_id: str) -> CallRecord:
    return CallRecord(
        contact_id=contact_id,
        direction="incoming",
        originator_number="+41215522000",
        originator_name="Alice Martin",
        destination_number="+41445550101",
        started=T0,
        ended=T0 + timedelta(seconds=30),
        user_id="9",
        key="key-in-missed",
    )


def outgoing(contact_id: str) -> CallRecord:
    return CallRecord(
        contact_id=contact_id,
        direction="outgoing",
        originator_number="+41445550101",
        originator_name="Anna Agent",
        destination_number="+41215522000",
        destination_name="Alice Martin",
        started=T0,
        answered=T0 + timedelta(seconds=5),
        ended=T0 + timedelta(seconds=65),
        user_id="9",
        key="key-out",
    )


def marker(key: str) -> str:
    return "peoplefone-call-" + hashlib.sha256(key.encode()).hexdigest()[:20]


@pytest.mark.parametrize(
    ("make_call", "headline", "details"),
    [
        (
            incoming_answered,
            "Incoming call from +41215522000, answered, 2:05",
            [
                "Direction: incoming",
                "Status: answered",
                "Duration: 2:05",
                "From: +41215522000",
                "To: Anna Agent (+41445550101)",
                "Answered: 2024-03-05 09:30:10 UTC",
            ],
        ),
        (
            incoming_missed,
            "Incoming call from Alice Martin, missed",
            ["Status: missed", "Duration: 0:00", "From: Alice Martin (+41215522000)"],
        ),
        (
            outgoing,
            "Outgoing call to Alice Martin, answered, 1:00",
            ["Direction: outgoing", "From: Anna Agent (+41445550101)", "To: Alice Martin (+41215522000)"],
        ),
    ],
)
def test_callflow_note(odoo, tmp_path, make_call, headline, details):
    fake = odoo(version="17.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    call = make_call(str(alice))

    result = backend.log_call(call)

    (message,) = fake.messages
    assert result.id == str(message["id"])
    assert result.url == f"{fake.url}/web#id={alice}&model=res.partner&view_type=form"
    assert (message["res_id"], message["message_type"], message["subtype_xmlid"]) == (
        alice,
        "comment",
        "mail.mt_note",
    )
    assert message["author_id"] == fake.agent_partner_id  # userCrmId 9 is Anna, her partner signs
    body = message["body"]
    assert body.startswith(f"<p>{headline}</p><ul>")  # stored as HTML, not escaped
    for line in details:
        assert f"<li>{line}</li>" in body
    assert f"<p>Call reference: {marker(call.key)}</p>" in body

    assert fake.model_calls("mail.message", "search_read") == [
        (
            [[["model", "=", "res.partner"], ["res_id", "=", alice], ["body", "ilike", marker(call.key)]]],
            {"fields": ["id", "body"], "limit": 1},
        )
    ]
    assert fake.model_calls("res.partner", "read") == [([[alice]], {"fields": ["display_name"]})]
    assert fake.model_calls("res.users", "read") == [([[9]], {"fields": ["partner_id"]})]
    assert fake.model_calls("res.partner", "message_post") == [
        (
            [[alice]],
            {
                "body": body,
                "message_type": "comment",
                "subtype_xmlid": "mail.mt_note",
                "body_is_html": True,
                "author_id": fake.agent_partner_id,
            },
        )
    ]


def test_callflow_note_on_16_has_no_body_is_html(odoo, tmp_path):
    fake = odoo(version="16.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    call = CallRecord(
        contact_id=str(alice), direction="incoming", originator_number="+41215522000", started=T0, key="k16"
    )
    result = backend.log_call(call)
    ((_, kwargs),) = fake.model_calls("res.partner", "message_post")
    assert "body_is_html" not in kwargs and "author_id" not in kwargs  # no userCrmId: the API user posts
    (message,) = fake.messages
    assert message["body"].startswith("<p>Incoming call from +41215522000, missed</p>")
    assert message["author_id"] == fake.bot_partner_id
    assert result.id == str(message["id"])


@pytest.mark.parametrize("make_call", [incoming_answered, incoming_missed, outgoing])
def test_callflow_activity(odoo, tmp_path, make_call):
    fake = odoo(version="18.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as="activity")
    call = make_call(str(alice))

    result = backend.log_call(call)

    assert fake.model_calls("ir.model.data", "search_read") == [
        (
            [[["module", "=", "mail"], ["name", "=", "mail_activity_data_call"]]],
            {"fields": ["res_id"], "limit": 1},
        )
    ]
    assert fake.model_calls("ir.model", "search") == [([[["model", "=", "res.partner"]]], {"limit": 1})]
    pending_domain = [
        ["res_model", "=", "res.partner"],
        ["res_id", "=", alice],
        ["note", "ilike", marker(call.key)],
    ]
    assert fake.model_calls("mail.activity", "search_read") == [
        ([pending_domain], {"fields": ["id"], "limit": 1})
    ]
    ((create_args, create_kwargs),) = fake.model_calls("mail.activity", "create")
    values = create_args[0]
    assert create_kwargs == {}
    assert {k: v for k, v in values.items() if k != "note"} == {
        "activity_type_id": 2,  # the "Call" type, xmlid mail.mail_activity_data_call
        "res_model_id": 85,
        "res_id": alice,
        "summary": call.summary(),
        "date_deadline": "2024-03-05",
        "user_id": 9,
    }
    assert values["note"].startswith("<ul><li>Direction: " + call.direction)
    assert f"Call reference: {marker(call.key)}" in values["note"]
    assert fake.model_calls("mail.activity", "action_feedback") == [([[500]], {})]
    assert fake.activities == []  # done: action_feedback removed it
    (message,) = fake.messages
    assert result.id == str(message["id"])
    assert result.url == f"{fake.url}/odoo/res.partner/{alice}"
    assert message["res_id"] == alice and message["author_id"] == fake.agent_partner_id
    assert f"Status: {call.status}" in message["body"]
    assert marker(call.key) in message["body"]


def test_activity_type_is_resolved_once_and_falls_back_to_the_category(odoo, tmp_path):
    fake = odoo()
    fake.models["ir.model.data"].records.clear()  # e.g. xmlids not readable or renamed
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as="activity")
    backend.log_call(incoming_answered(str(alice)))
    backend.log_call(outgoing(str(alice)))
    assert fake.model_calls("mail.activity.type", "search_read") == [
        ([[["category", "=", "phonecall"]]], {"fields": ["id", "name"], "limit": 1, "order": "sequence, id"})
    ]
    assert [args[0]["activity_type_id"] for args, _ in fake.model_calls("mail.activity", "create")] == [2, 2]


@pytest.mark.parametrize("mode", ["note", "activity"])
def test_duplicate_callflow_posts_once(odoo, tmp_path, mode):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as=mode)
    call = incoming_answered(str(alice))

    first = backend.log_call(call)
    fake.clear_requests()
    second = backend.log_call(call)

    assert second == first
    assert len(fake.messages) == 1
    assert [args[4] for args in fake.rpc_calls("object", "execute_kw")] == ["search_read"]  # only the check


def test_retry_after_a_timeout_finds_the_posted_note(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, write_timeout=0.3)
    call = incoming_answered(str(alice))
    backend.log_call(incoming_missed(str(alice)))  # warms the caches
    # message_post reaches Odoo, but its answer comes after the client gave up
    fake.hang_on("res.partner", "message_post", 0.6)
    with pytest.raises(BackendUnavailable):
        backend.log_call(call)
    assert wait_until(lambda: len(fake.messages) == 2)

    result = backend.log_call(call)
    assert len(fake.messages) == 2
    assert result.id == str(fake.messages[-1]["id"])


def test_retry_finishes_an_activity_left_open(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as="activity")
    call = outgoing(str(alice))
    fake.fail_on("mail.activity", "action_feedback", 502)
    with pytest.raises(BackendUnavailable, match="HTTP 502"):
        backend.log_call(call)
    (left_open,) = fake.activities
    assert fake.messages == []

    result = backend.log_call(call)

    assert len(fake.model_calls("mail.activity", "create")) == 1
    assert fake.model_calls("mail.activity", "action_feedback")[-1] == ([[left_open["id"]]], {})
    assert fake.activities == []
    (message,) = fake.messages
    assert result.id == str(message["id"])


def test_activity_for_an_unknown_user_goes_to_the_api_user(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as="activity")
    backend.log_call(
        CallRecord(contact_id=str(alice), direction="incoming", user_id="4242", key="u2", started=T0)
    )
    ((args, _),) = fake.model_calls("mail.activity", "create")
    assert "user_id" not in args[0]
    assert fake.messages[0]["author_id"] == fake.bot_partner_id


def test_dedupe_can_be_turned_off(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, dedupe_calls=False)
    backend.log_call(incoming_answered(str(alice)))
    assert not fake.model_calls("mail.message", "search_read")
    assert "Call reference" not in fake.messages[0]["body"]


def test_callflow_unknown_contact(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    with pytest.raises(ContactNotFound):
        backend.log_call(incoming_answered("99999"))
    fake.clear_requests()
    with pytest.raises(ContactNotFound):
        backend.log_call(incoming_answered("hubspot-123"))
    assert fake.requests == []
    assert fake.messages == []


def test_unknown_user_posts_as_api_user_with_one_warning(odoo, tmp_path, caplog):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    with caplog.at_level(logging.WARNING):
        for key in ("u1", "u2"):
            backend.log_call(
                CallRecord(contact_id=str(alice), direction="incoming", user_id="4242", key=key, started=T0)
            )
    assert [m["author_id"] for m in fake.messages] == [fake.bot_partner_id] * 2
    warnings = [r.getMessage() for r in caplog.records if "4242" in r.getMessage()]
    assert len(warnings) == 1 and "is not a user of the CRM" in warnings[0]
    # the users were read once, not per call; the unknown id was never looked up as a user
    assert len(fake.model_calls("res.users", "search_read")) == 1
    assert fake.model_calls("res.users", "read") == []


def test_unknown_user_goes_to_the_default_user(odoo, tmp_path, caplog):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, default_user_id=str(fake.agent_user_id))
    with caplog.at_level(logging.WARNING):
        backend.log_call(CallRecord(contact_id=str(alice), direction="incoming", user_id="4242", key="u1",
                                    started=T0))
        # an archived user and a portal user are not owners either
        backend.log_call(CallRecord(contact_id=str(alice), direction="incoming", user_id="11", key="u2",
                                    started=T0))
        backend.log_call(CallRecord(contact_id=str(alice), direction="incoming", user_id="12", key="u3",
                                    started=T0))
    assert [m["author_id"] for m in fake.messages] == [fake.agent_partner_id] * 3
    assert sum("is not a user of the CRM" in r.getMessage() for r in caplog.records) == 3


def test_list_users_are_the_active_internal_users(odoo, tmp_path):
    from lookup_core.types import CrmUser

    fake = odoo()
    backend = make_backend(fake, tmp_path)
    assert backend.users and backend.can_list_users(backend.options)
    assert backend.list_users() == [
        CrmUser(id="9", name="Anna Agent", email="anna@acme.test"),  # the partner's e-mail (login "anna")
        CrmUser(id=str(fake.uid), name="Lookup Bot", email=fake.login),  # no e-mail: the login is one
    ]
    assert fake.model_calls("res.users", "search_read") == [
        ([[["share", "=", False]]], {"fields": ["name", "login", "email"], "order": "name, id"})
    ]


# ---------------------------------------------------------------------------------- errors
def test_wrong_api_key_is_rejected_once_and_not_hammered(odoo, tmp_path, caplog):
    fake = odoo()
    seed_formats(fake)
    backend = make_backend(fake, tmp_path, api_key="not-the-key")

    with caplog.at_level(logging.DEBUG, logger="crm_backends.odoo"):
        with pytest.raises(CredentialsRejected):
            backend.lookup(NUMBER, 5)
        sent = len(fake.requests)
        with pytest.raises(CredentialsRejected):
            backend.lookup(NUMBER, 5)
    assert sent == 1 and len(fake.requests) == 1  # the second attempt did not reach Odoo
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "not-the-key" not in caplog.text


def test_revoked_key_reauthenticates_once_then_rejects(odoo, tmp_path, caplog):
    fake = odoo()
    seed_formats(fake)
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.api_key = "rotated"  # the key was deleted in Odoo's preferences
    fake.clear_requests()

    with caplog.at_level(logging.ERROR, logger="crm_backends.odoo"), pytest.raises(CredentialsRejected):
        backend.lookup(NUMBER, 5)
    methods = [r["body"]["params"]["method"] for r in fake.requests]
    assert methods == ["execute_kw", "authenticate"]
    assert fake.requests[0]["response"]["error"]["data"]["name"] == ACCESS_DENIED
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    # fixed on the Odoo side; after the pause the backend works again
    fake.api_key = "secret-key-1"
    backend.rejected_retry_s = 0.0
    backend._rejected_until = 0.0
    assert len(backend.lookup(NUMBER, 5)) == 3


def test_transient_access_denied_reauthenticates(odoo, tmp_path):
    fake = odoo()
    seed_formats(fake)
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.clear_requests()
    fake.rpc_error_next(ACCESS_DENIED, "Access Denied")
    assert len(backend.lookup(NUMBER, 5)) == 3
    assert [r["body"]["params"]["method"] for r in fake.requests] == [
        "execute_kw",
        "authenticate",
        "execute_kw",
    ]


def test_missing_permission_is_a_credentials_problem(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.rpc_error_next(ACCESS_ERROR, "You are not allowed to access 'Contact' (res.partner) records.")
    with pytest.raises(CredentialsRejected, match="may not use res.partner.search_read"):
        backend.lookup(NUMBER, 5)


def test_http_401_is_rejected(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    fake.fail_next(401)
    with pytest.raises(CredentialsRejected):
        backend.lookup(NUMBER, 5)


def test_429_with_retry_after(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.fail_next(429, retry_after="7")
    with pytest.raises(RateLimited) as caught:
        backend.lookup(NUMBER, 5)
    assert caught.value.retry_after == 7.0


def test_503_with_retry_after_date(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.fail_next(503, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))
    with pytest.raises(RateLimited) as caught:
        backend.lookup(NUMBER, 5)
    assert 25 <= caught.value.retry_after <= 31


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"<html>Internal Server Error</html>"),
        (502, b"Bad Gateway"),
        (503, b"down"),
        (200, b"<html>maintenance</html>"),
        (200, b"[1, 2]"),
    ],
)
def test_server_errors_are_unavailable(odoo, tmp_path, status, body):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.fail_next(status, body=body)
    with pytest.raises(BackendUnavailable) as caught:
        backend.lookup(NUMBER, 5)
    assert not isinstance(caught.value, CredentialsRejected | RateLimited)


def test_odoo_server_error_is_unavailable(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    backend.lookup(NUMBER, 5)
    fake.rpc_error_next("psycopg2.errors.SerializationFailure", "could not serialize access")
    with pytest.raises(BackendUnavailable, match="SerializationFailure") as caught:
        backend.lookup(NUMBER, 5)
    assert not isinstance(caught.value, CredentialsRejected)


def test_timeout(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path, timeout=0.3)
    backend.lookup(NUMBER, 5)
    fake.hang_next(1.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer"):
        backend.lookup(NUMBER, 5)
    assert time.monotonic() - started < 1.0


def test_connection_refused(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = load_options(
        OdooBackend,
        {
            "name": "erp",
            "type": "odoo",
            "url": f"http://127.0.0.1:{port}",
            "database": "acme",
            "username": "bot",
            "api_key": "k",
            "timeout": 1.0,
        },
        "here",
    )
    backend = OdooBackend(BackendSpec(tenant="t", name="erp", options=opts, instance_dir=str(tmp_path)))
    with pytest.raises(BackendUnavailable, match=r"\(Odoo\): .* unreachable"):
        backend.lookup(NUMBER, 5)


def test_check(odoo, tmp_path):
    fake = odoo()
    make_backend(fake, tmp_path).check()
    with pytest.raises(BackendConfigError) as caught:
        make_backend(fake, tmp_path, database="nope").check()
    assert caught.value.key == "database"
    with pytest.raises(CredentialsRejected):
        make_backend(fake, tmp_path, username="someone-else").check()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("call_log_as", "sms"),
        ("url", "odoo.example.com"),
        ("contact_url_template", "{url}/x/{record}"),
        ("version", "latest"),
        ("page_size", 0),
    ],
)
def test_bad_options(key, value):
    table = {
        "name": "erp",
        "type": "odoo",
        "url": "https://acme.odoo.com",
        "database": "acme",
        "username": "bot",
        "api_key": "k",
        key: value,
    }
    with pytest.raises(BackendConfigError) as caught:
        load_options(OdooBackend, table, "tenant 't', backend 'erp'")
    assert caught.value.key == key


def test_missing_api_key():
    with pytest.raises(BackendConfigError) as caught:
        load_options(
            OdooBackend,
            {"name": "erp", "type": "odoo", "url": "https://a.odoo.com", "database": "a", "username": "bot"},
            "here",
        )
    assert caught.value.key == "api_key"


def test_describe_redacts_the_key(odoo, tmp_path):
    backend = make_backend(odoo(), tmp_path)
    assert backend.describe()["api_key"] == "***"
    assert (backend.default_crm_name, backend.default_crm_logo.startswith("https://")) == ("Odoo", True)


# ---------------------------------------------------------------------------------- mirror
def test_mirror_full_then_incremental_then_periodic_full(odoo, tmp_path):
    fake = odoo(version="17.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    bob = fake.add_partner("Bob Keller", mobile="+41 79 555 01 01")
    carl = fake.add_partner("Carl Meier", phone="+41 44 555 02 02")
    fake.add_partner("Dora No-Number")
    backend = make_backend(fake, tmp_path, page_size=2, sync_overlap=0)
    mirror = MirroredBackend(backend, store_path=str(tmp_path / "mirror.sqlite3"))

    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 3 and not outcome.incremental
    pages = fake.model_calls("res.partner", "search_read")
    has_number = ["|", ["phone", "!=", False], ["mobile", "!=", False]]
    assert [args for args, _ in pages] == [
        [has_number + [["id", ">", 0]]],
        [has_number + [["id", ">", bob]]],
    ]
    assert pages[0][1] == {"fields": READ_FIELDS + ["active"], "limit": 2, "order": "id asc"}
    assert [c.id for c in mirror.lookup(NUMBER, 5)] == [str(alice)]
    found = mirror.lookup(parse_number("+41795550101"), 5)[0]
    assert (found.name, found.contact_uri) == (
        "Bob Keller",
        f"{fake.url}/web#id={bob}&model=res.partner&view_type=form",
    )

    # changes: a new number, an archived partner, a new partner
    since = fake.partner(carl)["write_date"]
    fake.write_partner(alice, phone="+41 44 555 03 03")
    fake.write_partner(bob, active=False)
    erin = fake.add_partner("Erin Frei", phone="+41 31 555 04 04")
    fake.clear_requests()

    outcome = mirror.sync_now()
    # alice and erin changed; carl comes again because the bound is inclusive (same second)
    assert outcome.ok and outcome.incremental and outcome.written == 3 and outcome.deleted == 1
    pages = fake.model_calls("res.partner", "search_read")
    assert len(pages) == 3  # 4 changed rows by 2, then an empty page
    args, kwargs = pages[0]
    assert args == [[["write_date", ">=", since], ["id", ">", 0]]]
    assert kwargs["context"] == {"active_test": False}
    assert mirror.lookup(NUMBER, 5) == []
    assert [c.id for c in mirror.lookup(parse_number("+41445550303"), 5)] == [str(alice)]
    assert mirror.lookup(parse_number("+41795550101"), 5) == []
    assert [c.id for c in mirror.lookup(parse_number("+41315550404"), 5)] == [str(erin)]

    # a hard delete is only visible to a full listing, which the mirror asks for every full_sync_interval
    fake.delete_partner(carl)
    assert mirror.sync_now().deleted == 0
    assert mirror.lookup(parse_number("+41445550202"), 5) != []
    mirror.full_interval = 0
    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental and outcome.deleted == 1
    assert mirror.lookup(parse_number("+41445550202"), 5) == []
    mirror.close()


def test_mirror_incremental_overlap_and_callflow(odoo, tmp_path):
    fake = odoo(version="18.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00", write_date="2024-05-01 10:00:00")
    backend = make_backend(fake, tmp_path)  # default overlap: 300 s
    mirror = MirroredBackend(backend, store_path=str(tmp_path / "m.sqlite3"))
    assert mirror.sync_now().ok
    fake.clear_requests()
    assert mirror.sync_now().ok
    ((args, _),) = fake.model_calls("res.partner", "search_read")
    assert args == [[["write_date", ">=", "2024-05-01 09:55:00"], ["id", ">", 0]]]
    result = mirror.log_call(incoming_answered(str(alice)))
    assert result.url == f"{fake.url}/odoo/res.partner/{alice}"
    mirror.close()


def test_mirror_keeps_last_copy_when_odoo_is_down(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    mirror = MirroredBackend(backend, store_path=str(tmp_path / "m.sqlite3"))
    assert mirror.sync_now().ok
    fake.fail_next(500)
    outcome = mirror.sync_now()
    assert not outcome.ok and "HTTP 500" in outcome.error
    assert [c.id for c in mirror.lookup(NUMBER, 5)] == [str(alice)]
    mirror.close()


# ---------------------------------------------------------------------------------- the fake itself
def test_fake_is_strict(odoo, tmp_path):
    fake = odoo(version="19.0")
    backend = make_backend(fake, tmp_path)
    with pytest.raises(BackendUnavailable, match="Invalid field 'mobile'"):
        backend._execute("res.partner", "search_read", [[]], {"fields": ["mobile"]})
    with pytest.raises(BackendUnavailable, match="Object res.partnr doesn't exist"):
        backend._execute("res.partnr", "search_read", [[]])
    with pytest.raises(CredentialsRejected, match="Private methods"):
        backend._execute("ir.model", "_get_id", ["res.partner"])
    with pytest.raises(BackendUnavailable, match="unexpected keyword argument 'fields_list'"):
        backend._execute("res.partner", "search_read", [[]], {"fields_list": ["name"]})
    with pytest.raises(BackendUnavailable, match="Invalid leaf"):
        backend._execute("res.partner", "search_read", [[["phone", "~", "1"]]])


def test_search_by_name_is_name_ilike(odoo, tmp_path):
    fake = odoo()
    zoe = fake.add_partner("Zoë Müller", phone="+41 21 552 20 00")
    fake.add_partner("Max Meier", phone="+41 44 668 18 00")
    backend = make_backend(fake, tmp_path)
    assert [c.id for c in backend.search("zoë mü", 20)] == [str(zoe)]  # any case, the words as typed
    assert {"Zoë Müller", "Max Meier"} <= {c.name for c in backend.search("m", 20)}
    assert len(backend.search("m", 1)) == 1 and backend.search("  ", 20) == [] and backend.search("nobody", 5) == []


# CreateContact ------------------------------------------------------------------------------------
def test_create_contact_creates_a_partner_and_the_next_lookup_finds_it(odoo, tmp_path):
    from lookup_core.types import NewContact

    fake = odoo()
    backend = make_backend(fake, tmp_path)
    number = parse_number("41791234567")
    assert backend.lookup(number, 5) == []
    result = backend.create_contact(NewContact(number="+41791234567", name="Alexa Holiday", company="Holiday AG"))
    [(args, _kwargs)] = fake.model_calls("res.partner", "create")
    assert args == [{"name": "Alexa Holiday", "phone": "+41791234567", "company_name": "Holiday AG"}]
    assert fake.partner(int(result.id))["name"] == "Alexa Holiday"
    assert result.url.endswith(f"/odoo/res.partner/{result.id}") or f"id={result.id}&" in result.url
    [found] = backend.lookup(number, 5)
    assert found.id == result.id


def test_a_partner_odoo_refuses_is_a_refusal_for_good(odoo, tmp_path):
    from lookup_core.errors import DeliveryRefused
    from lookup_core.types import NewContact

    fake = odoo()
    backend = make_backend(fake, tmp_path)
    with pytest.raises(DeliveryRefused, match="Contacts require a name"):
        backend.create_contact(NewContact(number="+41791234567", name=""))


def test_phone_is_the_business_line_mobile_the_mobile_and_function_the_job_title(odoo, tmp_path):
    fake = odoo(version="17.0")
    alice = fake.add_partner("Alice Martin", phone="+41 21 552 20 00", mobile="079 123 45 67",
                             function="Sales Manager")
    backend = make_backend(fake, tmp_path)
    [live] = backend.lookup(NUMBER, 5)
    assert live.phone_types == {"+41 21 552 20 00": "business", "079 123 45 67": "mobile"}
    assert live.job_title == "Sales Manager"
    mirror = MirroredBackend(backend, store_path=str(tmp_path / "m.sqlite3"))
    assert mirror.sync_now().ok
    stored = mirror.store.get(str(alice))
    assert stored.phone_types == live.phone_types and stored.job_title == "Sales Manager"
    mirror.close()
    # 18.2 has no mobile field: phone alone, still the business line
    newer = odoo(version="saas~18.2")
    newer.add_partner("Bob Keller", phone="021 552 20 00")
    [bob] = make_backend(newer, tmp_path / "new").lookup(NUMBER, 5)
    assert bob.phone_types == {"021 552 20 00": "business"} and bob.job_title is None
# Call updates, message logs, through the backend and the web layer ----------------------------------
def ring(contact_id: str, **later) -> CallRecord:
    """A call as posted while it rings; ``later`` adds what the post at hang-up knows."""
    call = CallRecord(contact_id=contact_id, direction="incoming", originator_number="+41215522000",
                      originator_name="Alice Martin", destination_number="+41445550101", started=T0,
                      user_id="9", key="key-ring")
    return call.merged(CallRecord(contact_id=contact_id, direction="incoming", **later)) if later else call


HUNG_UP = {"answered": T0 + timedelta(seconds=5), "ended": T0 + timedelta(seconds=200)}


@pytest.mark.parametrize("mode", ["note", "activity"])
def test_a_call_logged_at_ring_is_updated_in_place_at_hang_up(odoo, tmp_path, mode):
    fake = odoo(version="18.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, call_log_as=mode)
    first = backend.log_call(ring(str(alice)))
    (message,) = fake.messages
    assert "Status: missed" in message["body"]

    final = ring(str(alice), note="Wants a quote <20 seats>", **HUNG_UP)
    updated = backend.update_call(first.id, final)

    assert updated == first  # the same record and link
    (message,) = fake.messages
    body = message["body"]
    assert "<li>Status: answered</li>" in body and "<li>Duration: 3:15</li>" in body
    assert "<li>Ended: 2024-03-05 09:33:20 UTC</li>" in body
    assert "Wants a quote &lt;20 seats&gt;" in body  # the note, escaped
    assert marker("key-ring") in body  # a retry of the first post still finds the record
    assert fake.model_calls("mail.message", "write") == [([[message["id"]], {"body": body}], {})]
    # the update is idempotent: a retry after a lost answer writes the same body again
    assert backend.update_call(first.id, final) == first
    assert fake.messages[0]["body"] == body and len(fake.messages) == 1


def test_a_retried_first_post_carrying_the_hang_up_brings_the_record_up_to_date(odoo, tmp_path):
    # the first attempt posted the ringing call but its answer was lost; meanwhile the hang-up
    # revised the outbox item, so the retry is log_call with the final call
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    first = backend.log_call(ring(str(alice)))
    again = backend.log_call(ring(str(alice), **HUNG_UP))
    assert again == first
    (message,) = fake.messages
    assert "Duration: 3:15" in message["body"]
    fake.clear_requests()
    assert backend.log_call(ring(str(alice), **HUNG_UP)) == first  # nothing new: nothing written
    assert fake.model_calls("mail.message", "write") == []


def test_an_update_odoo_refuses_is_a_refusal_for_good(odoo, tmp_path):
    from lookup_core.errors import DeliveryRefused, RecordGone

    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    first = backend.log_call(ring(str(alice)))
    del fake.models["mail.message"].records[int(first.id)]  # someone deleted the note in Odoo
    with pytest.raises(RecordGone, match="not in Odoo any more"):  # the outbox makes it again
        backend.update_call(first.id, ring(str(alice), **HUNG_UP))
    with pytest.raises(DeliveryRefused, match="not a mail.message id"):
        backend.update_call("erp-1", ring(str(alice), **HUNG_UP))


def test_the_fakes_write_is_strict(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    message_id = int(backend.log_call(ring(str(alice))).id)
    with pytest.raises(BackendUnavailable, match="Invalid field 'content' on model 'mail.message'"):
        backend._execute("mail.message", "write", [[message_id], {"content": "x"}])
    with pytest.raises(CredentialsRejected, match="Only administrators can modify 'model' and 'res_id'"):
        backend._execute("mail.message", "write", [[message_id], {"res_id": alice + 1}])
    with pytest.raises(BackendUnavailable, match="Wrong value for mail.message.body"):
        backend._execute("mail.message", "write", [[message_id], {"body": ["<p>x</p>"]}])
    with pytest.raises(BackendUnavailable, match="write\\(\\) expects a dict"):
        backend._execute("mail.message", "write", [[message_id], "<p>x</p>"])
    with pytest.raises(BackendUnavailable, match="does not exist on the model 'res.partner'"):
        backend._execute("res.partner", "write", [[alice], {"name": "x"}])
    # a computed field without inverse is read-only: Odoo drops the value
    assert backend._execute("mail.message", "write", [[message_id], {"preview": "x"}]) is True
    assert "Call reference" in fake.messages[0]["body"]


def sms_log(contact_id: str, count: int, day: str = "2024-03-05", **fields):
    from lookup_core.types import Message, MessageLog

    messages = tuple(
        Message(id=f"m{n}", time=datetime.fromisoformat(f"{day}T09:{n:02d}:00+00:00"),
                direction="incoming" if n % 2 else "outgoing",
                from_number="+41215522000" if n % 2 else "+41445550101",
                from_name="Alice Martin" if n % 2 else None,
                to_number="+41445550101" if n % 2 else "+41215522000",
                to_name=None if n % 2 else "Alice Martin", text=f"text <{n}> & more")
        for n in range(1, count + 1)
    )
    values = {"contact_id": contact_id, "kind": "SMS", "conversation_id": "c-1", "day": day, "zone": "UTC",
              "messages": messages, "user_id": "9", "key": f"digest-{contact_id}-{day}"}
    values.update(fields)
    return MessageLog(**values)


def test_a_digest_is_one_note_rewritten_as_messages_arrive(odoo, tmp_path):
    fake = odoo(version="17.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path)
    assert backend.logs_messages and backend.can_log_messages(backend.options)

    first = backend.log_message(sms_log(str(alice), 1))
    ((args, kwargs),) = fake.model_calls("res.partner", "message_post")
    assert args == [[alice]]
    assert {k: v for k, v in kwargs.items() if k != "body"} == {
        "message_type": "comment", "subtype_xmlid": "mail.mt_note", "body_is_html": True,
        "author_id": fake.agent_partner_id,  # userCrmId 9, a user of the CRM
    }
    for count in range(2, 11):
        assert backend.update_message(first.id, sms_log(str(alice), count)) == first

    (message,) = fake.messages
    assert first.id == str(message["id"]) and first.url == f"{fake.url}/web#id={alice}&model=res.partner&view_type=form"
    assert (message["res_id"], message["message_type"], message["subtype_xmlid"]) == (alice, "comment", "mail.mt_note")
    paragraphs = re.findall(r"<p>(.*?)</p>", message["body"])
    assert paragraphs[0] == "<b>SMS conversation with Alice Martin \u2013 2024-03-05</b>"
    assert paragraphs[1] == "Participants: Alice Martin (+41215522000), +41445550101"
    lines = paragraphs[2:-1]
    assert len(lines) == 10
    assert lines[0] == "09:01 \u2190 Alice Martin: text &lt;1&gt; &amp; more"
    assert lines[1] == "09:02 \u2192 Alice Martin: text &lt;2&gt; &amp; more"
    assert paragraphs[-1].startswith("Message log reference: peoplefone-msg-")
    assert len(fake.model_calls("mail.message", "write")) == 9


def test_a_lost_answer_to_the_first_message_does_not_make_a_second_note(odoo, tmp_path):
    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, write_timeout=0.3)
    backend.log_message(sms_log(str(alice), 1, day="2024-03-04"))  # warms the caches
    fake.hang_on("res.partner", "message_post", 0.6)
    with pytest.raises(BackendUnavailable):
        backend.log_message(sms_log(str(alice), 1))
    assert wait_until(lambda: len(fake.messages) == 2)

    # the retry carries the digest as it is now (a second message arrived meanwhile)
    result = backend.log_message(sms_log(str(alice), 2))
    assert len(fake.messages) == 2 and result.id == str(fake.messages[-1]["id"])
    assert "text &lt;2&gt;" in fake.messages[-1]["body"]
    fake.clear_requests()
    assert backend.log_message(sms_log(str(alice), 2)) == result
    assert fake.model_calls("mail.message", "write") == []  # the same digest: nothing to write


def test_a_voicemail_note_holds_its_link(odoo, tmp_path):
    from lookup_core.types import Message, MessageLog

    fake = odoo()
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    backend = make_backend(fake, tmp_path, default_user_id=str(fake.uid))
    voicemail = MessageLog(
        contact_id=str(alice), kind="Voicemail", conversation_id="v", day="2024-03-05", zone="UTC",
        messages=(Message(id="v1", time=T0, direction="incoming", from_number="+41215522000",
                          link="https://pbx.example/rec/77.mp3?a=1&b=2"),),
        user_id="4242", key="vm-1",
    )
    result = backend.log_message(voicemail)
    (message,) = fake.messages
    assert result.id == str(message["id"]) and message["author_id"] == fake.bot_partner_id  # the default user
    assert "<p><b>Voicemail from +41215522000 \u2013 2024-03-05</b></p>" in message["body"]
    assert ('<p>Recording: <a href="https://pbx.example/rec/77.mp3?a=1&amp;b=2">'
            'https://pbx.example/rec/77.mp3?a=1&amp;b=2</a></p>') in message["body"]


def test_a_message_log_for_an_unknown_partner_is_not_found(odoo, tmp_path):
    fake = odoo()
    backend = make_backend(fake, tmp_path)
    with pytest.raises(ContactNotFound):
        backend.log_message(sms_log("99999", 1))
    with pytest.raises(ContactNotFound):
        backend.log_message(sms_log("hubspot-1", 1))
    assert fake.messages == []


ODOO_TENANT = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
timezone = "Europe/Zurich"
  [[tenant.backend]]
  name = "erp"
  type = "odoo"
  url = "{url}"
  database = "{database}"
  username = "{login}"
  api_key = "{api_key}"
  call_log_as = "{mode}"
"""
ACME = {"X-Execution-Token": "acme-token-1234"}


def odoo_app(make_app, tmp_path, fake: OdooFake, mode: str = "note"):
    config = tmp_path / "lookup.toml"
    config.write_text(ODOO_TENANT.format(url=fake.url, database=fake.database, login=fake.login,
                                         api_key=fake.api_key, mode=mode))
    return make_app(LOOKUP_CONFIG=str(config)).test_client()


def sms_post(partner: int, number: int, day: str = "2026-11-21", **fields) -> dict:
    inputs = {"contactCrmId": f"erp:{partner}", "type": "SMS", "direction": "incoming" if number % 2 else "outgoing",
              "fromNumber": "+41215522000" if number % 2 else "+41445550101",
              "toNumber": "+41445550101" if number % 2 else "+41215522000",
              "fromName": "Alice Martin" if number % 2 else "Support", "toName": "Support" if number % 2 else
              "Alice Martin", "text": f"message number {number}", "time": f"{day}T09:{number:02d}:00Z",
              "messageId": f"m-{day}-{number}", **fields}
    return {"inputs": inputs}


def test_message_log_through_the_web_layer(odoo, make_app, tmp_path):
    fake = odoo(version="18.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    client = odoo_app(make_app, tmp_path, fake)
    ids = set()
    for number in range(1, 11):
        response = client.post("/MessageLog", json=sms_post(alice, number), headers=ACME)
        assert response.status_code == 200, response.get_json()
        ids.add(response.get_json()["id"])
    again = client.post("/MessageLog", json=sms_post(alice, 3), headers=ACME)  # posted twice: once
    other_day = client.post("/MessageLog", json=sms_post(alice, 1, day="2026-11-22"), headers=ACME).get_json()
    voicemail = client.post("/MessageLog", headers=ACME, json={"inputs": {
        "contactCrmId": f"erp:{alice}", "type": "Voicemail", "direction": "incoming", "fromNumber": "+41215522000",
        "fromName": "Alice Martin", "time": "2026-11-21T15:00:00Z", "recordingLink": "https://pbx.example/rec/9.mp3"}})

    assert len(ids) == 1 and again.get_json()["id"] in ids and other_day["id"] not in ids
    assert voicemail.status_code == 200
    notes = {str(m["id"]): m["body"] for m in fake.messages}
    assert len(notes) == 3 and set(notes) == {*ids, other_day["id"], voicemail.get_json()["id"]}
    digest = notes[ids.pop()]
    assert "SMS conversation with Alice Martin \u2013 2026-11-21" in digest
    # ten lines in the tenant's time (Zurich, UTC+1), message 3 once
    assert len(re.findall(r"<p>10:\d\d [\u2190\u2192] ", digest)) == 10 and digest.count("message number 3<") == 1
    assert "<p>10:01 \u2190 Alice Martin: message number 1</p>" in digest
    assert notes[other_day["id"]].count("message number") == 1
    assert "https://pbx.example/rec/9.mp3" in notes[voicemail.get_json()["id"]]
    assert all(m["res_id"] == alice for m in fake.messages)


@pytest.mark.parametrize("mode", ["note", "activity"])
def test_callflow_at_ring_and_at_hang_up_through_the_web_layer(odoo, make_app, tmp_path, mode):
    fake = odoo(version="18.0")
    alice = fake.add_partner("Alice Martin", phone="021 552 20 00")
    client = odoo_app(make_app, tmp_path, fake, mode)
    inputs = {"contactCrmId": f"erp:{alice}", "direction": "incoming", "originatorNumber": "41215522000",
              "destinationNumber": "41445550101", "startedTime": "2026-11-21T09:00:00Z", "userCrmId": "9"}
    first = client.post("/CallFlow", json={"inputs": inputs}, headers=ACME)
    assert first.status_code == 200, first.get_json()
    final = client.post("/CallFlow", headers=ACME, json={"inputs": dict(
        inputs, answeredTime="2026-11-21T09:00:05Z", endedTime="2026-11-21T09:03:20Z")})
    assert final.status_code == 200 and final.get_json()["id"] == first.get_json()["id"]
    (message,) = fake.messages
    assert str(message["id"]) == first.get_json()["id"]
    assert "Duration: 3:15" in message["body"] and "Status: answered" in message["body"]
    assert message["author_id"] == fake.agent_partner_id


def test_the_users_command_lists_the_odoo_users(odoo, make_app, tmp_path):
    fake = odoo()
    client = odoo_app(make_app, tmp_path, fake)
    result = client.application.test_cli_runner().invoke(args=["users", "--json"])
    assert result.exit_code == 0, result.output
    assert [(u["id"], u["name"]) for u in json.loads(result.output)["users"]] == [
        ("9", "Anna Agent"), (str(fake.uid), "Lookup Bot")]
