"""CreateContact and the unknown-caller entry at the workflow level: exactly one contact under
double posts, the next lookup finds it (through the cache, in every process with Redis), the entry
only when the tenant enables it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lookup_core.types import Contact
from tests.conftest import TOKEN as DEFAULT_TOKEN
from tests.fakes.rest_api import FakeRestApi, Reply
from tests.servers.redis import redis_server

pytestmark = pytest.mark.timeout(120)

TOKEN = "acme-token-1234"
HEADERS = {"X-Execution-Token": TOKEN}
NUMBER = "41791234567"
DIRECTORY = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
negative_cache_ttl = 600
create_contacts_in = "dir"
{extra}
  [[tenant.backend]]
  name = "dir"
  type = "directory"
  path = "{path}"
  crm_name = "Acme directory"
  crm_logo = "https://acme.example/logo.png"
  contact_url_template = "https://acme.example/contacts/{{id}}"
"""


def directory_app(make_app, tmp_path, extra: str = ""):
    config = tmp_path / "lookup.toml"
    config.write_text(DIRECTORY.format(path=tmp_path / "dir.sqlite3", extra=extra))
    return make_app(LOOKUP_CONFIG=str(config))


def lookup(app, number: str = NUMBER) -> list:
    response = app.test_client().get(f"/Lookup?PhoneNumber={number}", headers=HEADERS)
    assert response.status_code == 200
    return response.get_json()


def create(app, **inputs) -> tuple[int, dict]:
    body = {"inputs": {"direction": "incoming", "originatorNumber": NUMBER, **inputs}}
    response = app.test_client().post("/CreateContact", json=body, headers=HEADERS)
    return response.status_code, response.get_json()


def test_without_the_option_an_unknown_number_answers_an_empty_list(make_app, tmp_path):
    app = directory_app(make_app, tmp_path)
    assert lookup(app) == []


def test_the_unknown_caller_entry_offers_create_contact_and_its_id_creates_it(make_app, tmp_path):
    app = directory_app(make_app, tmp_path, "unknown_caller_entry = true")
    [entry] = lookup(app)
    assert entry["id"] == "new:+41791234567"
    assert entry["name"] == "Unknown caller \u2013 create contact"
    assert entry["crmName"] == "Acme directory" and entry["crmLogo"] == "https://acme.example/logo.png"
    assert entry["crmActions"] == ["CreateContact"] and entry["customData"] == {}
    # what the connector posts back from that card: only the id, no numbers
    response = app.test_client().post("/CreateContact", json={"inputs": {"contactCrmId": entry["id"]}},
                                      headers=HEADERS)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["id"].startswith("dir:new-")
    assert answer["url"] == "https://acme.example/contacts/" + answer["id"].split(":", 1)[1]
    # the [] cached before (negative_cache_ttl = 600) does not hide the new contact
    [found] = lookup(app)
    assert found["id"] == answer["id"] and found["name"] == "Unknown caller +41 79 123 45 67"
    assert found["crmActions"] == ["CallFlow"]  # a contact now: no CreateContact on its card


def test_the_name_is_the_inputs_name_else_the_remote_partys_else_the_template(make_app, tmp_path):
    app = directory_app(make_app, tmp_path, 'new_contact_name = "New caller {number}"')
    assert create(app, name="Alexa Holiday", originatorName="Ignored")[0] == 200
    assert lookup(app)[0]["name"] == "Alexa Holiday"
    assert create(app, originatorNumber="41215522000", originatorName="Bruno Keller", company="Keller AG")[0] == 200
    assert lookup(app, "41215522000")[0]["name"] == "Bruno Keller"
    assert lookup(app, "41215522000")[0]["company"] == "Keller AG"
    # outgoing: the remote party is the destination
    assert create(app, direction="outgoing", originatorNumber="41215522000", destinationNumber="41443334455")[0] == 200
    assert lookup(app, "41443334455")[0]["name"] == "New caller +41 44 333 44 55"


def test_double_posts_in_parallel_make_one_contact(make_app, tmp_path):
    app = directory_app(make_app, tmp_path)
    lookup(app)  # a cached [] first
    start = threading.Barrier(8)

    def post(_):
        start.wait(5)
        return create(app, name="Alexa Holiday")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert {status for status, _ in answers} == {200}
    assert len({body["id"] for _, body in answers}) == 1
    found = lookup(app)
    assert [c["id"] for c in found] == [answers[0][1]["id"]]
    # a retry long after returns the same contact
    assert create(app, name="Someone else")[1]["id"] == answers[0][1]["id"]


def test_a_number_that_has_a_contact_already_returns_that_contact(make_app, tmp_path):
    """What a lost answer leaves behind (the contact made, the ledger not told) is found, not doubled."""
    app = directory_app(make_app, tmp_path)
    store = app.extensions["lookup"].tenants[0].by_name["dir"].backend.store
    existing = Contact(id="c-1", name="Alexa Holiday", phones=["+41 79 123 45 67"])
    store.upsert([(existing, store.normalize_phones(existing.phones))])
    assert create(app)[1]["id"] == "dir:c-1"
    assert [c["id"] for c in lookup(app)] == ["dir:c-1"]


@pytest.mark.parametrize("inputs, code", [
    ({"direction": "sideways"}, "invalid_input"),
    ({"originatorNumber": ""}, "invalid_input"),
    ({"originatorNumber": "abc"}, "invalid_number"),
    ({"originatorNumber": "123"}, "invalid_number"),
    ({"contactCrmId": "new:"}, "invalid_input"),
])
def test_bad_inputs_get_a_clear_error(make_app, tmp_path, inputs, code):
    app = directory_app(make_app, tmp_path)
    status, body = create(app, **inputs)
    assert status == 400 and body["error"] == code and body["message"].startswith("inputs.")


def test_a_tenant_without_create_contacts_in_has_no_create_contact(make_app, tmp_path):
    app = make_app()
    response = app.test_client().post("/CreateContact", json={"inputs": {"contactCrmId": "new:+41791234567"}},
                                      headers={"X-Execution-Token": DEFAULT_TOKEN})
    assert response.status_code == 404 and response.get_json()["error"] == "unknown_workflow"


# --- a live REST CRM, two processes sharing Redis (cache and ledger) ------------------------------------
REST = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
negative_cache_ttl = 600
create_contacts_in = "erp"
  [[tenant.backend]]
  name = "erp"
  type = "rest"
  lookup_url = "{api}/people?phone={{e164}}"
  results = "items"
    [tenant.backend.fields]
    id = "id"
    name = "name"
    phones = "phone"
    [tenant.backend.create_contact]
    request_url = "{api}/people"
    body = {{name = "{{name}}", phone = "{{e164}}"}}
    id = "id"
    url = "link"
"""


class People:
    """An exact-match people API: GET /people?phone=, POST /people (name and phone required)."""

    def __init__(self, api: FakeRestApi):
        self.people: list[dict] = []
        self.lock = threading.Lock()
        api.route("GET", "/people", self.search)
        api.route("POST", "/people", self.create)

    def search(self, request) -> Reply:
        with self.lock:
            return Reply(200, {"items": [p for p in self.people if p["phone"] == request.query.get("phone")]})

    def create(self, request) -> Reply:
        body = request.json()
        if not body.get("name") or not body.get("phone"):
            return Reply(422, {"error": "name and phone are required"})
        with self.lock:
            person = {"id": str(len(self.people) + 1), "link": f"https://erp.example/p/{len(self.people) + 1}", **body}
            self.people.append(person)
        return Reply(201, person)


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
def people():
    api = FakeRestApi().start()
    yield api, People(api)
    api.stop()


def test_two_processes_one_contact_and_the_other_process_sees_it_at_once(make_app, tmp_path, redis_url, people):
    import redis

    redis.Redis.from_url(redis_url).flushall()
    api, crm = people
    config = tmp_path / "lookup.toml"
    config.write_text(REST.format(api=api.url))
    first, second = make_app(LOOKUP_CONFIG=str(config), REDIS_URL=redis_url), \
        make_app(LOOKUP_CONFIG=str(config), REDIS_URL=redis_url)
    assert lookup(second) == []  # cached in Redis for 600 s
    start = threading.Barrier(6)

    def post(i):
        start.wait(5)
        return create(first if i % 2 else second, name="Alexa Holiday")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert {status for status, _ in answers} == {200}
    assert {body["id"] for _, body in answers} == {"erp:1"}
    assert {body["url"] for _, body in answers} == {"https://erp.example/p/1"}
    assert len(crm.people) == 1
    assert [c["id"] for c in lookup(second)] == ["erp:1"]
    assert [c["id"] for c in lookup(first)] == ["erp:1"]


def test_without_redis_the_other_workers_of_the_machine_see_it_at_once(make_app, tmp_path, people):
    """Two apps on one instance folder: two gunicorn workers, each with its own in-process cache."""
    api, crm = people
    config = tmp_path / "lookup.toml"
    config.write_text(REST.format(api=api.url))
    first, second = make_app(LOOKUP_CONFIG=str(config)), make_app(LOOKUP_CONFIG=str(config))
    assert lookup(second) == [] and lookup(first) == []  # each caches [] for 600 s
    status, body = create(first, name="Alexa Holiday")
    assert status == 200 and body["id"] == "erp:1"
    assert [c["id"] for c in lookup(second)] == ["erp:1"]
    assert [c["id"] for c in lookup(first)] == ["erp:1"]


def test_a_refusal_is_a_clear_error_and_nothing_is_created(make_app, tmp_path, people):
    api, crm = people
    config = tmp_path / "lookup.toml"
    config.write_text(REST.format(api=api.url).replace('name = "{name}", ', ""))
    app = make_app(LOOKUP_CONFIG=str(config))
    status, body = create(app)
    assert status == 422 and body["error"] == "refused" and crm.people == []


@pytest.mark.parametrize("backend, message", [
    ('type = "ldap"\n  url = "ldap://127.0.0.1:1"\n  base_dn = "dc=x"', "cannot create contacts"),
    ('type = "directory"', "no backend named 'nowhere'"),
])
def test_create_contacts_in_must_name_a_backend_that_can_create(make_app, tmp_path, backend, message):
    from config.settings import ConfigError

    target = "nowhere" if "no backend" in message else "dir"
    config = tmp_path / "lookup.toml"
    config.write_text(f'[[tenant]]\nname = "acme"\ntokens = ["acme-token-1234"]\ncreate_contacts_in = "{target}"\n'
                      f'  [[tenant.backend]]\n  name = "dir"\n  {backend}\n')
    with pytest.raises(ConfigError) as info:
        make_app(LOOKUP_CONFIG=str(config))
    assert message in str(info.value) and "create_contacts_in" in str(info.value)


def test_the_unknown_caller_entry_needs_a_backend_to_create_in(make_app, tmp_path):
    from config.settings import ConfigError

    config = tmp_path / "lookup.toml"
    config.write_text('[[tenant]]\nname = "acme"\ntokens = ["acme-token-1234"]\nunknown_caller_entry = true\n'
                      f'  [[tenant.backend]]\n  name = "dir"\n  type = "directory"\n  path = "{tmp_path}/d.sqlite3"\n')
    with pytest.raises(ConfigError, match="create_contacts_in"):
        make_app(LOOKUP_CONFIG=str(config))
