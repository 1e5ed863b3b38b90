"""The LDAP backend against a real OpenLDAP slapd started for this module."""

from __future__ import annotations

import base64
import socket
import time
import uuid

import ldap3
import pytest

from crm_backends.ldap import LdapBackend, parse_generalized_time
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendConfigError, BackendUnavailable, CredentialsRejected
from lookup_core.phone import parse_number
from tests.conftest import backend_builder
from tests.servers import free_port
from tests.servers.slapd import (
    PEOPLE_DN,
    READER_DN,
    READER_PW,
    ROOT_DN,
    ROOT_PW,
    SUFFIX,
    Slapd,
    SlapdMissing,
    base_ldif,
    person_ldif,
)

OLD = "20240101000000Z"  # modifyTimestamp of the loaded entries, so later changes stand out
GUID = uuid.UUID("6f1d2c3b-4a59-4e8d-9b7c-0a1b2c3d4e5f")

PEOPLE = [
    # uid, cn, attributes
    (
        "anna",
        "Anna Muster",
        {"telephoneNumber": "+41 21 552 20 00", "o": "Acme SA", "mail": "anna@acme.test", "title": "CFO"},
    ),
    ("bruno", "Bruno Beispiel", {"mobile": "079 123-45-67", "o": "Beta GmbH"}),
    ("carla", "Carla Rossi", {"telephoneNumber": "0041 44 668 18 00", "homePhone": "+41446681801"}),
    ("dora", "Dora Punkt", {"telephoneNumber": "(021) 552.20.01"}),
    ("eric", "Eric Nebenstelle", {"telephoneNumber": "+41 21 552 20 00 ext. 12"}),
    ("frank", "Frank Kurz", {"telephoneNumber": "201"}),
    ("gina", "Gina Lang", {"telephoneNumber": "+41 21 555 02 01"}),
    ("hugo", "Hugo Ohne", {"description": "no phone at all"}),
]


def ad_like_ldif() -> str:
    guid = base64.b64encode(GUID.bytes_le).decode()
    return f"""dn: cn=Hans Admin,{PEOPLE_DN}
objectClass: inetOrgPerson
objectClass: adLikePerson
cn: Hans Admin
sn: Admin
displayName: Hans Admin (IT)
company: Contoso AG
ipPhone: +41 31 123 45 67
otherTelephone: 031/987 65 43
whenChanged: 20240101000000.0Z
objectGUID:: {guid}
modifyTimestamp: {OLD}

"""


@pytest.fixture(scope="module")
def slapd():
    try:
        server = Slapd.create()
    except SlapdMissing as exc:
        pytest.fail(str(exc))
    ldif = base_ldif() + "".join(
        person_ldif(uid, cn, cn.split()[-1], modifyTimestamp=OLD, **attrs) for uid, cn, attrs in PEOPLE
    )
    server.slapadd(ldif + ad_like_ldif())
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def admin(slapd):
    conn = ldap3.Connection(slapd.url, ROOT_DN, ROOT_PW, auto_bind=True, receive_timeout=5)
    yield conn
    conn.unbind()


def make(tmp_path, url: str, **options) -> LdapBackend:
    defaults = {"url": url, "bind_dn": READER_DN, "password": READER_PW, "base_dn": PEOPLE_DN}
    return backend_builder(tmp_path)("ldap", name="dir", **{**defaults, **options})


@pytest.fixture()
def backend(slapd, tmp_path):
    b = make(tmp_path, slapd.url)
    yield b
    b.close()


def names(contacts) -> list[str]:
    return [c.name for c in contacts]


def entry_uuid(admin, dn: str) -> str:
    admin.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["entryUUID"])
    return str(admin.entries[0].entryUUID)


# options ------------------------------------------------------------------------------------------
def test_defaults_fit_inetorgperson_and_ad(tmp_path):
    b = make(tmp_path, "ldap://127.0.0.1:1")
    attrs = b.options["attributes"]
    assert attrs["name"] == ["displayName", "cn"]
    assert attrs["company"] == ["company", "o"]
    assert {"telephoneNumber", "mobile", "homePhone", "ipPhone", "otherTelephone"} <= set(attrs["phones"])
    assert b.options["scope"] == "sub" and b.options["changed_attribute"] == "modifyTimestamp"
    assert b.options["full_sync_every"] == 24
    assert b.modes == {"live", "mirror"} and not b.can_log_calls
    assert b.describe()["password"] == "***"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "http://dir.example"}, "url"),
        ({"url": "ldap://dir.example/dc=example,dc=org"}, "url"),
        ({"base_dn": "not a dn"}, "base_dn"),
        ({"filter": "objectClass=person"}, "filter"),
        ({"filter": "(&(objectClass=person)"}, "filter"),
        ({"scope": "base"}, "scope"),
        ({"password": ""}, "password"),
        ({"bind_dn": "", "password": "x"}, "bind_dn"),
        ({"url": "ldaps://dir.example", "start_tls": True}, "start_tls"),
        ({"attributes": {"phones": []}}, "attributes.phones"),
        ({"attributes": {"name": "display name"}}, "attributes.name"),
        ({"attributes": {"mobile": "mobile"}}, "attributes.mobile"),
        ({"contact_uri_template": "https://x/{uid!r}"}, "contact_uri_template"),
        ({"full_sync_every": 0}, "full_sync_every"),
    ],
)
def test_bad_options_name_the_key(tmp_path, options, key):
    with pytest.raises(BackendConfigError) as info:
        make(tmp_path, options.pop("url", "ldap://127.0.0.1:1"), **options)
    assert info.value.key == key


def test_lookup_filter_is_escaped_and_anded(tmp_path):
    b = make(tmp_path, "ldap://127.0.0.1:1", filter="(objectClass=person)", attributes={"phones": ["mobile"]})
    us = parse_number("+12015550123")
    text = b.lookup_filter(us)
    # the national format of a US number has parentheses: escaped per RFC 4515
    assert text == (
        "(&(objectClass=person)(|(mobile=+12015550123)(mobile=12015550123)(mobile=2015550123)"
        "(mobile=0012015550123)(mobile=+1 201-555-0123)(mobile=\\28201\\29 555-0123)(mobile=*2015550123*)))"
    )
    assert b.lookup_filter(parse_number("201")) == "(&(objectClass=person)(|(mobile=201)))"
    groups = make(
        tmp_path, "ldap://127.0.0.1:1", substring_search="groups", attributes={"phones": ["ipPhone"]}
    )
    assert "(ipPhone=*21*552*20*00*)" in groups.lookup_filter(parse_number("41215522000"))
    none = make(tmp_path, "ldap://127.0.0.1:1", substring_search="none", attributes={"phones": ["ipPhone"]})
    assert "*" not in none.lookup_filter(parse_number("41215522000"))


def test_generalized_time():
    assert parse_generalized_time("20240131120000Z").isoformat() == "2024-01-31T12:00:00+00:00"
    assert parse_generalized_time("20240131120000.5Z").isoformat() == "2024-01-31T12:00:00.500000+00:00"
    assert parse_generalized_time("20240131130000+0100").isoformat() == "2024-01-31T12:00:00+00:00"
    assert parse_generalized_time("garbage") is None


# live lookups -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "expected", "company"),
    [
        ("41215522000", ["Anna Muster", "Eric Nebenstelle"], "Acme SA"),  # spaces; then the extension
        ("41791234567", ["Bruno Beispiel"], "Beta GmbH"),  # mobile, national with hyphens
        ("41446681800", ["Carla Rossi"], None),  # 00-prefixed with spaces
        ("41446681801", ["Carla Rossi"], None),  # homePhone
        ("201", ["Frank Kurz"], None),  # a short number matches only exactly, never a tail
    ],
)
def test_live_lookup_finds_stored_formats(backend, number, expected, company):
    found = backend.lookup(parse_number(number), 5)
    assert names(found) == expected
    assert found[0].company == company
    assert found[0].exact is True


def test_live_lookup_marks_extension_match_loose(backend):
    found = backend.lookup(parse_number("41215522000"), 5)
    assert [c.exact for c in found] == [True, False]
    assert found[1].phones == ["+41 21 552 20 00 ext. 12"]


def test_live_lookup_contact_fields(backend, slapd, admin, tmp_path):
    b = make(
        tmp_path,
        slapd.url,
        contact_uri_template="https://people.example/{uid}?dn={dn}&id={id}",
        attributes={"custom_data": {"Title": "title", "E-mail": "mail"}},
    )
    [anna] = b.lookup(parse_number("+41 21 552 20 00"), 1)
    anna_dn = f"uid=anna,{PEOPLE_DN}"
    assert anna.id == entry_uuid(admin, anna_dn)
    assert anna.email == "anna@acme.test"
    assert anna.phones == ["+41 21 552 20 00"]
    assert anna.custom_data == {"Title": "CFO", "E-mail": "anna@acme.test"}
    assert anna.contact_uri == (
        f"https://people.example/anna?dn=uid%3Danna%2Cou%3Dpeople%2Cdc%3Dexample%2Cdc%3Dorg&id={anna.id}"
    )
    b.close()


def test_dn_as_id_and_limit(slapd, tmp_path):
    b = make(tmp_path, slapd.url, attributes={"id": "dn"})
    found = b.lookup(parse_number("41215522000"), 1)
    assert [c.id for c in found] == [f"uid=anna,{PEOPLE_DN}"]
    b.close()


def test_size_limit_is_not_an_error(slapd, tmp_path):
    b = make(tmp_path, slapd.url, size_limit=1)
    found = b.lookup(parse_number("41215522000"), 1)
    assert len(found) == 1 and found[0].name in ("Anna Muster", "Eric Nebenstelle")
    b.close()


def test_other_punctuation_is_missed_live(backend):
    # "(021) 552.20.01": dots and parentheses defeat telephoneNumberMatch; mirror mode finds it
    assert backend.lookup(parse_number("41215522001"), 5) == []


def test_unknown_number_and_wrong_candidates(backend):
    assert backend.lookup(parse_number("41999999999"), 5) == []
    # "+41 21 555 02 01" ends in 201 but the short number 201 must not find it (covered above);
    # its own full number does
    assert names(backend.lookup(parse_number("41215550201"), 5)) == ["Gina Lang"]


def test_anonymous_bind(slapd, tmp_path):
    b = make(tmp_path, slapd.url, bind_dn="", password="")
    assert names(b.lookup(parse_number("41791234567"), 5)) == ["Bruno Beispiel"]
    b.check()
    b.close()


def test_extra_filter_is_anded(slapd, tmp_path):
    b = make(tmp_path, slapd.url, filter="(o=Acme SA)")
    assert names(b.lookup(parse_number("41215522000"), 5)) == ["Anna Muster"]
    assert b.lookup(parse_number("41791234567"), 5) == []
    b.close()


# errors -------------------------------------------------------------------------------------------
def test_wrong_password_is_credentials_rejected(slapd, tmp_path):
    b = make(tmp_path, slapd.url, password="wrong")
    with pytest.raises(CredentialsRejected, match="invalidCredentials"):
        b.lookup(parse_number("41215522000"), 5)
    with pytest.raises(CredentialsRejected):
        b.check()
    with pytest.raises(CredentialsRejected):
        list(b.sync(None))
    b.close()


def test_server_down_is_unavailable(tmp_path):
    b = make(tmp_path, f"ldap://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(BackendUnavailable) as info:
        b.lookup(parse_number("41215522000"), 5)
    assert not isinstance(info.value, CredentialsRejected)
    with pytest.raises(BackendUnavailable):
        b.check()
    mirror = MirroredBackend(b)
    outcome = mirror.sync_now()
    assert not outcome.ok and "cannot reach" in outcome.error
    mirror.close()


def test_silent_server_times_out_within_the_timeout(tmp_path):
    # accepts connections but never answers: the bind must give up after `timeout`, not hang
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        b = make(tmp_path, f"ldap://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            b.lookup(parse_number("41215522000"), 5)
        assert time.monotonic() - started < 1.5
        b.close()
    finally:
        listener.close()


def test_start_tls_refused_is_unavailable(slapd, tmp_path):
    b = make(tmp_path, slapd.url, start_tls=True)
    with pytest.raises(BackendUnavailable, match="StartTLS"):
        b.lookup(parse_number("41215522000"), 5)
    b.close()


def test_ldaps_and_start_tls(tmp_path):
    server = Slapd.create(tls=True)
    try:
        server.slapadd(base_ldif() + person_ldif("anna", "Anna Muster", "M", telephoneNumber="+41215522000"))
        server.start()
        number = parse_number("41215522000")
        for options in (
            {"url": server.ldaps_url, "ca_file": server.cert_path},
            {"url": server.url, "start_tls": True, "ca_file": server.cert_path},
            {"url": server.ldaps_url, "tls_verify": False},
        ):
            b = make(tmp_path, **options)
            assert names(b.lookup(number, 5)) == ["Anna Muster"], options
            b.close()
        # a certificate no trusted CA signed is refused
        untrusted = make(tmp_path, server.ldaps_url)
        with pytest.raises(BackendUnavailable) as info:
            untrusted.lookup(number, 5)
        assert not isinstance(info.value, CredentialsRejected)
    finally:
        server.destroy()


def test_check_names_bad_base_dn(slapd, tmp_path):
    make(tmp_path, slapd.url).check()
    b = make(tmp_path, slapd.url, base_dn=f"ou=nowhere,{SUFFIX}")
    with pytest.raises(BackendConfigError) as info:
        b.check()
    assert info.value.key == "base_dn"
    b.close()


def test_reconnects_after_server_restart_and_size_limits(tmp_path):
    server = Slapd.create(size_limit=2)
    try:
        people = "".join(
            person_ldif(f"p{i}", f"Person {i}", "P", telephoneNumber=f"+4121552200{i}") for i in range(3)
        )
        server.slapadd(base_ldif() + people)
        server.start()
        b = make(tmp_path, server.url)
        assert names(b.lookup(parse_number("41215522000"), 5)) == ["Person 0"]
        server.stop()
        with pytest.raises(BackendUnavailable):
            b.lookup(parse_number("41215522000"), 5)
        server.start()  # same port
        assert names(b.lookup(parse_number("41215522000"), 5)) == ["Person 0"]
        b.close()

        # paging past slapd's sizelimit needs `limits ... size.prtotal=unlimited` (the reader has it)
        assert sum(len(batch.contacts) for batch in make(tmp_path, server.url, page_size=1).sync(None)) == 3
        anonymous = make(tmp_path, server.url, page_size=1, bind_dn="", password="")
        with pytest.raises(BackendUnavailable, match="size.prtotal"):
            list(anonymous.sync(None))
    finally:
        server.destroy()


# mirror -------------------------------------------------------------------------------------------
def test_mirror_lookup_finds_every_format(slapd, tmp_path):
    mirror = MirroredBackend(make(tmp_path, slapd.url, page_size=2))
    outcome = mirror.sync_now()
    assert outcome.ok and not outcome.incremental
    # the seven people with a phone and Hans; hugo has none
    assert outcome.written == 8
    assert mirror.store.stats()["contacts"] == 8
    assert names(mirror.lookup(parse_number("41215522001"), 5)) == ["Dora Punkt"]
    assert names(mirror.lookup(parse_number("41791234567"), 5)) == ["Bruno Beispiel"]
    assert mirror.lookup(parse_number("41791234567"), 5)[0].company == "Beta GmbH"
    found = mirror.lookup(parse_number("41215522000"), 5)
    assert names(found) == ["Anna Muster", "Eric Nebenstelle"] and [c.exact for c in found] == [True, False]
    assert names(mirror.lookup(parse_number("201"), 5)) == ["Frank Kurz"]
    mirror.close()


@pytest.fixture()
def sync_ou(admin):
    """A fresh OU with two people, for the tests that change the directory."""
    created: list[str] = []

    def make_ou(ou: str) -> str:
        base = f"ou={ou},{SUFFIX}"
        admin.add(base, ["organizationalUnit"], {"ou": ou})
        created.append(base)
        for uid, phone in (("p1", "+41 21 000 00 01"), ("p2", "+41 21 000 00 02")):
            assert admin.add(
                f"uid={uid},{base}",
                ["inetOrgPerson"],
                {"cn": f"Person {uid}", "sn": uid, "telephoneNumber": phone},
            ), admin.result
        return base

    yield make_ou
    for base in created:
        admin.search(base, "(objectClass=*)", ldap3.LEVEL, attributes=["1.1"])
        for dn in [e.entry_dn for e in admin.entries]:
            admin.delete(dn)
        admin.delete(base)


def test_incremental_sync_picks_up_a_modified_entry(slapd, admin, sync_ou, tmp_path):
    base = sync_ou("sync1")
    # the loaded entries are old (OLD): after a full sync, only p1 and p2 are as new as the cursor
    b = make(tmp_path, slapd.url, base_dn=SUFFIX, filter="(objectClass=inetOrgPerson)")
    mirror = MirroredBackend(b)
    first = mirror.sync_now()
    assert first.ok and not first.incremental and first.written == 10
    cursor = mirror.store.get_meta("cursor")
    assert cursor and '"changed"' in cursor

    assert admin.modify(f"uid=p1,{base}", {"mobile": [(ldap3.MODIFY_ADD, ["+41 79 555 11 22"])]}), (
        admin.result
    )
    second = mirror.sync_now()
    assert second.ok and second.incremental
    # p2 was added (timestamp now) before the full sync; p1 now changed: only those two are listed
    assert second.written == 2
    [p1] = mirror.lookup(parse_number("41795551122"), 5)
    assert p1.name == "Person p1"

    # a phone removed: the entry is listed by the next incremental sync and leaves the mirror
    assert admin.modify(f"uid=p2,{base}", {"telephoneNumber": [(ldap3.MODIFY_DELETE, [])]}), admin.result
    third = mirror.sync_now()
    assert third.incremental and third.deleted == 1
    assert mirror.lookup(parse_number("41210000002"), 5) == []
    mirror.close()


def test_full_sync_removes_a_deleted_entry(slapd, admin, sync_ou, tmp_path):
    base = sync_ou("sync2")
    b = make(tmp_path, slapd.url, base_dn=base, full_sync_every=2, page_size=1)
    mirror = MirroredBackend(b)
    assert mirror.sync_now().written == 2
    assert admin.delete(f"uid=p2,{base}"), admin.result
    # incremental listings cannot see a deletion
    second = mirror.sync_now()
    assert second.incremental and second.deleted == 0
    assert names(mirror.lookup(parse_number("41210000002"), 5)) == ["Person p2"]
    # every 2nd sync is a full listing
    third = mirror.sync_now()
    assert third.ok and not third.incremental and third.deleted == 1
    assert mirror.lookup(parse_number("41210000002"), 5) == []
    assert names(mirror.lookup(parse_number("41210000001"), 5)) == ["Person p1"]
    mirror.close()


# Active Directory-style attribute map -------------------------------------------------------------
AD_MAP = {
    "name": ["displayName", "cn"],
    "company": ["company"],
    "phones": ["telephoneNumber", "mobile", "ipPhone", "otherTelephone"],
    "id": "objectGUID",
}


def test_ad_style_attribute_map_live(slapd, tmp_path):
    b = make(tmp_path, slapd.url, attributes=AD_MAP, filter="(objectClass=adLikePerson)")
    # ipPhone compares plain strings (as AD does): found through the formatted spelling
    [hans] = b.lookup(parse_number("41311234567"), 5)
    assert (hans.name, hans.company, hans.id) == ("Hans Admin (IT)", "Contoso AG", str(GUID))
    # "031/987 65 43" needs the digit-group substring
    assert b.lookup(parse_number("41319876543"), 5) == []
    groups = make(tmp_path, slapd.url, attributes=AD_MAP, substring_search="groups")
    assert names(groups.lookup(parse_number("41319876543"), 5)) == ["Hans Admin (IT)"]
    # inetOrgPerson entries without objectGUID have no id under this map: skipped
    assert groups.lookup(parse_number("41215522000"), 5) == []
    b.close()
    groups.close()


def test_ad_style_mirror_with_when_changed(slapd, admin, tmp_path):
    b = make(
        tmp_path,
        slapd.url,
        attributes=AD_MAP,
        filter="(objectClass=adLikePerson)",
        changed_attribute="whenChanged",
    )
    mirror = MirroredBackend(b)
    assert mirror.sync_now().written == 1
    assert '"changed":"20240101000000.0Z"' in mirror.store.get_meta("cursor")
    assert mirror.sync_now().written == 1  # whenChanged >= cursor: the newest entry again
    dn = f"cn=Hans Admin,{PEOPLE_DN}"
    changes = {
        "mobile": [(ldap3.MODIFY_REPLACE, ["+41 79 444 33 22"])],
        "whenChanged": [(ldap3.MODIFY_REPLACE, ["20250601120000.0Z"])],
    }
    assert admin.modify(dn, changes), admin.result
    outcome = mirror.sync_now()
    assert outcome.incremental and outcome.written == 1
    assert '"changed":"20250601120000.0Z"' in mirror.store.get_meta("cursor")
    [hans] = mirror.lookup(parse_number("41794443322"), 5)
    assert hans.id == str(GUID) and hans.company == "Contoso AG"
    assert names(mirror.lookup(parse_number("41319876543"), 5)) == ["Hans Admin (IT)"]
    mirror.close()


def test_search_by_name_as_typed(backend, tmp_path):
    assert names(backend.search("muster", 20)) == ["Anna Muster"]
    assert names(backend.search("anna m", 20)) == ["Anna Muster"]  # the words in order, any case
    assert names(backend.search("RO", 20)) == ["Carla Rossi"]
    assert len(backend.search("a", 2)) == 2 and backend.search("  ", 20) == []
    assert backend.search("*)(uid=*", 20) == []  # filter characters are escaped, not obeyed
    assert backend.search_filter("a*b") == r"(|(cn=*a\2ab*)(displayName=*a\2ab*))"


def test_search_formats_become_equality_assertions(tmp_path):
    b = make(tmp_path, "ldap://127.0.0.1:1", substring_search="none", attributes={"phones": ["telephoneNumber"]},
             search_formats=["0##/###.##.##"])
    assert "(telephoneNumber=021/552.20.00)" in b.lookup_filter(parse_number("41215522000"))
    plain = make(tmp_path, "ldap://127.0.0.1:1", substring_search="none", attributes={"phones": ["telephoneNumber"]})
    assert "021/552.20.00" not in plain.lookup_filter(parse_number("41215522000"))


def test_the_attribute_a_number_sits_in_is_its_type_and_title_the_job_title(backend, slapd, tmp_path):
    [bruno] = backend.lookup(parse_number("41791234567"), 5)
    assert bruno.phone_types == {"079 123-45-67": "mobile"}
    [carla] = backend.lookup(parse_number("41446681800"), 5)
    assert carla.phone_types == {"0041 44 668 18 00": "business", "+41446681801": "home"}
    [anna] = backend.search("anna", 5)
    assert anna.job_title == "CFO" and bruno.job_title is None
    # mirrored: the store keeps them for the contacts API
    mirror = MirroredBackend(make(tmp_path, slapd.url))
    assert mirror.sync_now().ok
    [stored] = [c for c in mirror.store.listing(0, 100, 0.0)[0] if c and c.name == "Bruno Beispiel"]
    assert stored.phone_types == {"079 123-45-67": "mobile"}
    [stored] = [c for c in mirror.store.listing(0, 100, 0.0)[0] if c and c.name == "Anna Muster"]
    assert stored.job_title == "CFO"
    mirror.close()
