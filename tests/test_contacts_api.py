"""The contacts API (Embeddable's third-party contacts): listing with incremental sync, search,
batch match, view and CORS; on the embedded directory in SQLite and in PostgreSQL (a real server,
tests/servers/postgres.py)."""

from __future__ import annotations

import time

import pytest

from crm_backends.directory_import import import_file
from lookup_core.types import Contact
from tests.conftest import DEMO_CSV, HEADERS, write_csv
from tests.test_api import CAMEL

ORIGIN = "https://softphone.example"
CSV = DEMO_CSV + ("jurg;Jürg Müller;Zürcher Kantonalbank;+41 44 500 10 20;;;de;https://crm.example/c/jurg;\n"
                  "anna;Anna Meier;Müller & Söhne;044 500 10 21;;;de;;\n")


def _contact(i: int) -> tuple[Contact, str]:
    number = f"+41 44 {500 + i // 10000:03d} {i % 10000:04d}"
    return Contact(id=f"c{i:05d}", name=f"Person {i:05d}", company="Bulk AG", phones=[number]), number


def _fill(store, count: int) -> None:
    rows = []
    for i in range(count):
        contact, number = _contact(i)
        rows.append((contact, store.normalize_phones([number])))
    store.upsert(rows)


@pytest.fixture(params=["sqlite", "postgres"])
def make_api(request, make_app):
    """``make_api(**settings)``: an app on an empty directory (SQLite file or PostgreSQL database) and its store."""
    url = None
    if request.param == "postgres":
        from tests.test_pg_directory import paas_url

        url = paas_url(request.getfixturevalue("pg"))

    def build(**settings):
        if url:
            settings["DATABASE_URL"] = url
        app = make_app(**settings)
        return app, app.extensions["lookup"].tenants[0].by_name["directory"].backend.store

    return build


@pytest.fixture(scope="module")
def pg():
    from tests.servers.postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def api(make_api, tmp_path):
    app, store = make_api(LOOKUP_ALLOWED_ORIGINS=ORIGIN, LOOKUP_CONTACTS_SERVICE_NAME="Acme Lookup")
    import_file(store, write_csv(tmp_path / "contacts.csv", CSV))
    return app.test_client()


def _all_pages(client, since: int | None = None) -> tuple[list[dict], int, int]:
    items, pages, stamp, page = [], 0, 0, 1
    while page is not None and pages < 1000:
        query = f"/contacts?page={page}" + (f"&syncTimestamp={since}" if since is not None else "")
        response = client.get(query, headers=HEADERS)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        items.extend(body["data"])
        stamp, page = body["syncTimestamp"], body["nextPage"]
        pages += 1
    return items, pages, stamp


def test_listing_pages_through_ten_thousand_contacts_and_syncs_exactly_the_changes(make_api):
    app, store = make_api(LOOKUP_PAGE_SIZE=500)
    _fill(store, 10_000)
    client = app.test_client()
    items, pages, stamp = _all_pages(client)
    assert pages == 20
    assert len(items) == 10_000 and len({item["id"] for item in items}) == 10_000
    first = items[0]
    assert first["id"] == "directory:c00000" and first["type"] == "PhoneLookup"
    assert first["phoneNumbers"] == [{"phoneNumber": "+41445000000", "phoneType": "unknown"}]
    assert "deleted" not in first
    assert client.get("/contacts?page=1", headers=HEADERS).get_json()["data"][:3] == items[:3]  # stable order

    time.sleep(0.01)
    changed, _ = _contact(17)
    changed.name = "Renamed Person"
    added = Contact(id="new-one", name="Newcomer", phones=["+41 79 123 45 67"])
    store.upsert([(changed, store.normalize_phones(changed.phones)), (added, store.normalize_phones(added.phones))])
    store.delete(["c00042"])
    time.sleep(0.01)  # the stamps are whole milliseconds, rounded down: a change in the same one comes again

    changes, _, later = _all_pages(client, stamp)
    by_id = {item["id"]: item for item in changes}
    assert set(by_id) == {"directory:c00017", "directory:new-one", "directory:c00042"}
    assert by_id["directory:c00017"]["name"] == "Renamed Person" and by_id["directory:c00017"]["deleted"] is False
    assert by_id["directory:c00042"] == {"id": "directory:c00042", "deleted": True}
    assert later >= stamp
    assert _all_pages(client, later)[0] == []


def test_a_deletion_during_a_listing_does_not_shift_the_later_pages(make_api):
    app, store = make_api(LOOKUP_PAGE_SIZE=10)
    _fill(store, 30)
    client = app.test_client()
    first = client.get("/contacts?page=1", headers=HEADERS).get_json()
    store.delete(["c00003", "c00004"])
    second = client.get("/contacts?page=2", headers=HEADERS).get_json()
    third = client.get("/contacts?page=3", headers=HEADERS).get_json()
    ids = [item["id"] for item in first["data"] + second["data"] + third["data"]]
    assert ids == [f"directory:c{i:05d}" for i in range(30)]  # c00010 is not skipped
    assert third["nextPage"] is None and first["syncTimestamp"] == third["syncTimestamp"]


def test_a_sync_older_than_the_kept_deletions_gets_everything_and_says_so(api):
    response = api.get("/contacts?syncTimestamp=1000", headers=HEADERS)
    assert response.status_code == 200
    assert "X-Contacts-Full-Listing" in response.headers
    assert len(response.get_json()["data"]) == 5


def test_search_finds_accented_names_from_plain_prefixes(api):
    def names(text: str) -> list[str]:
        response = api.get("/contacts/search", query_string={"searchString": text}, headers=HEADERS)
        assert response.status_code == 200
        return [c["name"] for c in response.get_json()["data"]]

    assert names("mül")[0] == "Jürg Müller" and "Anna Meier" in names("mül")  # the company matches too
    assert names("jürg m") == ["Jürg Müller"]
    assert names("JURG MU") == ["Jürg Müller"]
    assert names("zurcher") == ["Jürg Müller"]
    assert names("alex") == ["Alexa Holiday"]
    assert set(names("044 500 10")) == {"Jürg Müller", "Anna Meier"}
    assert names("41445001020") == ["Jürg Müller"]
    assert names("+41 21 552") == ["Alexa Holiday"]
    assert names("nobody") == [] and names("") == []
    # one or two letters: the first matches in the directory's order, still only matches
    assert {"Jürg Müller", "Anna Meier"} <= set(names("m")) and "Alexa Holiday" not in names("m")
    assert "Jürg Müller" in names("mü") and "Alexa Holiday" not in names("mü")
    found = api.get("/contacts/search?searchString=m&limit=1", headers=HEADERS).get_json()["data"]
    assert len(found) == 1 and found[0]["type"] == "Acme Lookup"


def test_batch_match_answers_every_number_as_given(api):
    spellings = ["+41215522000", "41215522000", "021 552 20 00", "0041 21 552 20 00", "+41 (0)21 552 20 00",
                 "044 500 10 20", "+41445001021", "not a number", "0795550000"]
    numbers = spellings + [f"+41 31 000 {i:04d}" for i in range(100 - len(spellings))]
    response = api.post("/contacts/match", json={"phoneNumbers": numbers}, headers=HEADERS)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert set(data) == set(numbers)
    for spelling in spellings[:5]:
        assert [c["id"] for c in data[spelling]] == ["directory:alexa"]
    assert data["044 500 10 20"][0]["name"] == "Jürg Müller"
    assert data["+41445001021"][0]["name"] == "Anna Meier"
    assert data["not a number"] == [] and data["0795550000"] == []
    alexa = data["+41215522000"][0]
    assert alexa["emails"] == ["alexa@example.com"] and alexa["company"] == "White Cross Co"
    too_many = api.post("/contacts/match", json={"phoneNumbers": ["+41215522000"] * 101}, headers=HEADERS)
    assert too_many.status_code == 400 and too_many.get_json()["error"] == "invalid_input"


def test_view_answers_the_contact_page_or_404(api):
    response = api.post("/contacts/view", json={"id": "directory:jurg", "name": "Jürg Müller"}, headers=HEADERS)
    assert response.status_code == 200 and response.get_json() == {"url": "https://crm.example/c/jurg"}
    for body in ({"id": "directory:bruno"}, {"id": "directory:nobody"}, {"id": "elsewhere:jurg"}):
        missing = api.post("/contacts/view", json=body, headers=HEADERS)
        assert missing.status_code == 404 and missing.get_json()["error"] == "unknown_contact"
    bad = api.post("/contacts/view", json={"name": "x"}, headers=HEADERS)
    assert bad.status_code == 400 and set(bad.get_json()) == {"error", "message"}


def test_the_token_is_needed_and_errors_are_json(api):
    for response in (api.get("/contacts"), api.get("/contacts/search?searchString=a"),
                     api.post("/contacts/match", json={"phoneNumbers": []}), api.post("/contacts/view", json={})):
        assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"
    bad_page = api.get("/contacts?page=zero", headers=HEADERS)
    assert bad_page.status_code == 400 and set(bad_page.get_json()) == {"error", "message"}
    assert api.post("/contacts/match", data="{", headers=HEADERS).get_json()["error"] == "malformed_json"


def test_cors_answers_the_tenants_origins_with_preflight(api):
    preflight = api.options("/contacts/match", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-execution-token, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "X-Execution-Token" in preflight.headers["Access-Control-Allow-Headers"]
    answer = api.get("/contacts", headers={**HEADERS, "Origin": ORIGIN})
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = api.get("/contacts", headers={**HEADERS, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    refused = api.options("/contacts", headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_live_backends_are_searched_and_matched_but_not_listed(make_app, tmp_path):
    import sqlite3

    erp = tmp_path / "erp.sqlite3"
    with sqlite3.connect(erp) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, phone TEXT, url TEXT)")
        conn.execute("INSERT INTO people VALUES (7, 'Zoë Živković', '+41 31 322 21 11', 'https://erp.example/p/7')")
    config = tmp_path / "lookup.toml"
    config.write_text(f'''
[[tenant]]
name = "acme"
tokens = ["{HEADERS["X-Execution-Token"]}"]
allowed_origins = ["{ORIGIN}"]

[[tenant.backend]]
name = "directory"
type = "directory"
path = "{tmp_path / "directory.sqlite3"}"

[[tenant.backend]]
name = "erp"
type = "sql"
url = "sqlite:///{erp}"
query = "SELECT id, name, phone, url FROM people WHERE REPLACE(phone, ' ', '') = :e164"
name_query = "SELECT id, name, phone, url FROM people WHERE name LIKE :pattern LIMIT :limit"
fields = {{ id = "id", name = "name", phones = "phone", contact_uri = "url" }}
''')
    client = make_app(LOOKUP_CONFIG=str(config)).test_client()
    listing = client.get("/contacts", headers=HEADERS)
    assert listing.headers["X-Contacts-Unlisted"] == "erp" and listing.get_json()["data"] == []
    found = client.get("/contacts/search?searchString=Zo", headers=HEADERS).get_json()["data"]
    assert [(c["id"], c["phoneNumbers"][0]["phoneNumber"]) for c in found] == [("erp:7", "+41313222111")]
    matched = client.post("/contacts/match", json={"phoneNumbers": ["031 322 21 11", "+41 44 000 00 00"]},
                          headers=HEADERS).get_json()["data"]
    assert [c["id"] for c in matched["031 322 21 11"]] == ["erp:7"] and matched["+41 44 000 00 00"] == []
    view = client.post("/contacts/view", json=matched["031 322 21 11"][0], headers=HEADERS)
    assert view.get_json() == {"url": "https://erp.example/p/7"}
    with sqlite3.connect(erp) as conn:
        conn.execute("DROP TABLE people")  # the source fails: the search still answers, and says so
    broken = client.get("/contacts/search?searchString=Zo", headers=HEADERS)
    assert broken.status_code == 200 and broken.get_json()["data"] == []
    assert "X-Contacts-Incomplete" in broken.headers


def test_a_live_search_follows_the_lookups_rules(make_app, tmp_path):
    """A search by name goes through the engine's one backend call: a 429 pauses the backend
    (the next search does not ask it) without counting against its circuit breaker."""
    from lookup_core.errors import RateLimited
    from tests.scripted_backend import SCRIPTS, Script

    SCRIPTS["crm"] = script = Script(people=[Contact(id="9", name="Jürg Müller", phones=["+41215522000"])])
    config = tmp_path / "lookup.toml"
    config.write_text(f'''
[[tenant]]
name = "acme"
tokens = ["{HEADERS["X-Execution-Token"]}"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "crm"
''')
    app = make_app(LOOKUP_CONFIG=str(config), LOOKUP_BREAKER_FAILURES=1)
    client = app.test_client()
    found = client.get("/contacts/search?searchString=jürg", headers=HEADERS)
    assert [c["id"] for c in found.get_json()["data"]] == ["crm:9"] and "X-Contacts-Incomplete" not in found.headers
    script.search_fail = RateLimited("slow down", retry_after=60)
    limited = client.get("/contacts/search?searchString=jürg", headers=HEADERS)
    assert limited.get_json()["data"] == [] and "X-Contacts-Incomplete" in limited.headers
    engine = app.extensions["lookup"].engine
    assert engine.breaker_states()[("acme", "crm")] == "closed"
    assert engine.limiters[("acme", "crm")].blocked_for() > 50
    asked = script.searches
    paused = client.get("/contacts/search?searchString=jürg", headers=HEADERS)
    assert "X-Contacts-Incomplete" in paused.headers and script.searches == asked  # not asked while paused


GOOGLE_CSV = (
    "First Name,Last Name,Organization Name,Organization Title,Photo,Phone 1 - Label,Phone 1 - Value,"
    "Phone 2 - Label,Phone 2 - Value,Phone 3 - Label,Phone 3 - Value\n"
    "Jürg,Müller,Zürcher Kantonalbank,Head of Sales,https://lh3.googleusercontent.com/contacts/jurg,"
    "Mobile,+41 79 555 10 20,Work,+41 44 500 10 20,,+41 44 500 10 21\n"
    "Reception,,Zürcher Kantonalbank,,,Work,201,Home Fax,+41 44 500 10 22,,\n"
)


def test_numbers_answer_the_type_the_source_gives_with_job_title_and_picture(make_api, tmp_path):
    app, store = make_api()
    import_file(store, write_csv(tmp_path / "google.csv", GOOGLE_CSV))
    client = app.test_client()
    listed = {item["name"]: item for item in _all_pages(client)[0]}
    jurg = listed["Jürg Müller"]
    assert jurg["phoneNumbers"] == [{"phoneNumber": "+41795551020", "phoneType": "mobile"},
                                    {"phoneNumber": "+41445001020", "phoneType": "business"},
                                    {"phoneNumber": "+41445001021", "phoneType": "unknown"}]
    assert jurg["jobTitle"] == "Head of Sales"
    assert jurg["profileImageUrl"] == "https://lh3.googleusercontent.com/contacts/jurg"
    reception = listed["Reception"]
    assert reception["phoneNumbers"] == [{"phoneNumber": "201", "phoneType": "extension"},
                                         {"phoneNumber": "+41445001022", "phoneType": "fax"}]
    assert reception["jobTitle"] == "" and "profileImageUrl" not in reception

    matched = client.post("/contacts/match", json={"phoneNumbers": ["0795551020"]}, headers=HEADERS).get_json()
    assert matched["data"]["0795551020"][0]["phoneNumbers"][0] == {"phoneNumber": "+41795551020",
                                                                  "phoneType": "mobile"}
    found = client.get("/contacts/search?searchString=mull", headers=HEADERS).get_json()["data"]
    assert found[0]["phoneNumbers"][1]["phoneType"] == "business" and found[0]["jobTitle"] == "Head of Sales"

    # the /Lookup answer keeps its shape: the job title stays in customData, nothing else is added
    lookup = client.get("/Lookup?PhoneNumber=41795551020", headers=HEADERS).get_json()
    assert lookup[0]["customData"].get("title") == "Head of Sales"
    assert list(lookup[0]) == CAMEL
