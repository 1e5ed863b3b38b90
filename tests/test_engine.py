"""The lookup engine: tenants, parallel backends under a deadline, single flight, breaker, rate."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from lookup_core.errors import BackendUnavailable, RateLimited
from lookup_core.types import Contact
from lookup_service.engine import SENDING_MARGIN_S
from tests.conftest import wait_for_background
from tests.scripted_backend import SCRIPTS, Script

NUMBER = "+41215522000"


def contact(cid, name, company=None, exact=True, activity=None):
    return Contact(id=cid, name=name, company=company, exact=exact, phones=[NUMBER],
                   last_activity=datetime.fromtimestamp(activity, UTC) if activity else None)


@pytest.fixture
def scripts():
    SCRIPTS.clear()
    yield SCRIPTS
    for script in SCRIPTS.values():
        if script.release is not None:
            script.release.set()
    SCRIPTS.clear()


@pytest.fixture
def toml_app(tmp_path, make_app, scripts):
    def build(text: str, **settings):
        path = tmp_path / "lookup.toml"
        path.write_text(text)
        return make_app(LOOKUP_CONFIG=str(path), **settings)

    return build


TWO_TENANTS = """
deadline_ms = 300
[[tenant]]
name = "acme"
tokens = ["acme-token-1234", "acme-token-next"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "acme-crm"
  crm_name = "Acme CRM"
  crm_logo = "https://acme.example/logo.png"
  [[tenant.backend]]
  name = "erp"
  type = "scripted"
  script = "acme-erp"
  workflows = []
[[tenant]]
name = "globex"
tokens = ["globex-token-99"]
deadline_ms = 200
max_results = 2
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "globex-crm"
"""


@pytest.fixture(params=["remote", "inline"])
def two_tenants(request):
    """TWO_TENANTS with remote backends (asked on the pool under the deadline), and with local
    ones (asked in the request thread, the path of the directory and of mirrors)."""
    if request.param == "remote":
        return TWO_TENANTS
    return TWO_TENANTS.replace('type = "scripted"', 'type = "scripted"\n  inline = true')


def get(client, token, number="41215522000"):
    response = client.get(f"/Lookup?PhoneNumber={number}", headers={"X-Execution-Token": token})
    assert response.status_code == 200, response.get_data()
    return response.get_json()


def test_token_selects_the_tenant_and_tenants_stay_apart(toml_app, scripts):
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann Acme")]})
    scripts["acme-erp"] = Script()
    scripts["globex-crm"] = Script(contacts={NUMBER: [contact("1", "Gus Globex")]})
    client = toml_app(TWO_TENANTS).test_client()
    assert [c["name"] for c in get(client, "acme-token-1234")] == ["Ann Acme"]
    assert [c["name"] for c in get(client, "acme-token-next")] == ["Ann Acme"]
    assert [c["name"] for c in get(client, "globex-token-99")] == ["Gus Globex"]  # not Acme's cached answer
    acme = get(client, "acme-token-1234")[0]
    assert acme["id"] == "crm:1" and acme["crmName"] == "Acme CRM" and acme["crmLogo"].endswith("logo.png")
    # a workflow of one tenant cannot reach another tenant's backend
    response = client.post("/CallFlow", headers={"X-Execution-Token": "globex-token-99"},
                           json={"inputs": {"contactCrmId": "erp:1", "direction": "incoming"}})
    assert scripts["acme-erp"].logged == []  # "erp:1" means nothing special to globex's single backend
    assert response.status_code == 200 and scripts["globex-crm"].logged[0].contact_id == "erp:1"


def test_merge_dedupe_rank_and_cap(toml_app, scripts, two_tenants):
    scripts["acme-crm"] = Script(contacts={NUMBER: [
        contact("1", "Loose Match", exact=False),
        contact("2", "Old Friend", activity=1_000),
        contact("3", "Recent Friend", activity=2_000),
        contact("3", "Recent Friend", activity=2_000),  # same contact twice from one backend
    ]})
    scripts["acme-erp"] = Script(contacts={NUMBER: [
        contact("e1", "old friend", company="Filled In"),  # same name and number across backends
        contact("e2", "ERP Only"),
    ]})
    client = toml_app(two_tenants).test_client()
    answer = get(client, "acme-token-1234")
    assert [c["name"] for c in answer] == ["Recent Friend", "Old Friend", "ERP Only", "Loose Match"]
    assert answer[1]["company"] == "Filled In"
    assert answer[2]["crmActions"] == []  # erp declares no workflow
    assert answer[0]["crmActions"] == ["CallFlow"]
    scripts["globex-crm"] = Script(contacts={NUMBER: [contact(str(i), f"G{i}") for i in range(5)]})
    assert len(get(client, "globex-token-99")) == 2


def test_answer_leaves_by_the_deadline_and_late_work_fills_the_cache(toml_app, scripts):
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Fast")]})
    scripts["acme-erp"] = Script(contacts={NUMBER: [contact("2", "Slow")]}, delay=0.6)
    app = toml_app(TWO_TENANTS)
    client = app.test_client()
    started = time.monotonic()
    first = get(client, "acme-token-1234")
    elapsed = time.monotonic() - started
    assert [c["name"] for c in first] == ["Fast"]
    assert 0.3 - SENDING_MARGIN_S - 0.01 <= elapsed < 0.3 + 0.1  # out by the deadline, not long before
    wait_for_background(app)  # the slow backend finishes in the background
    started = time.monotonic()
    second = get(client, "acme-token-1234")
    assert time.monotonic() - started < 0.1
    assert [c["name"] for c in second] == ["Fast", "Slow"]
    assert scripts["acme-erp"].calls == 1


def test_failing_backend_is_skipped_with_a_partial_answer(toml_app, scripts, two_tenants):
    scripts["acme-crm"] = Script(fail=BackendUnavailable("connection refused"))
    scripts["acme-erp"] = Script(contacts={NUMBER: [contact("2", "Still Here")]})
    client = toml_app(two_tenants).test_client()
    assert [c["name"] for c in get(client, "acme-token-1234")] == ["Still Here"]
    scripts["acme-crm"].fail = RuntimeError("a bug in a backend")
    assert [c["name"] for c in get(client, "acme-token-1234", "41215522001")] == []


def test_concurrent_lookups_share_one_call_per_backend(toml_app, scripts):
    release = threading.Event()
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann")]}, release=release)
    scripts["acme-erp"] = Script(contacts={NUMBER: [contact("2", "Ben")]}, release=release)
    app = toml_app(TWO_TENANTS)
    answers: list = []

    def ask():
        answers.append(get(app.test_client(), "acme-token-1234"))

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for thread in threads:
        thread.start()
    stop_at = time.monotonic() + 5  # until both backends hold the one call the flight makes
    while not (scripts["acme-crm"].calls and scripts["acme-erp"].calls) and time.monotonic() < stop_at:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 50
    assert all([c["name"] for c in a] == ["Ann", "Ben"] for a in answers), answers
    assert scripts["acme-crm"].calls == 1 and scripts["acme-erp"].calls == 1


def test_circuit_breaker_opens_and_closes(toml_app, scripts, two_tenants):
    scripts["acme-crm"] = Script(fail=BackendUnavailable("down"))
    scripts["acme-erp"] = Script()
    app = toml_app(two_tenants, LOOKUP_BREAKER_FAILURES=3, LOOKUP_BREAKER_COOLDOWN=0.3)
    client = app.test_client()
    for i in range(6):
        get(client, "acme-token-1234", f"4121552200{i}")
    assert scripts["acme-crm"].calls == 3  # opened after 3 failures: the next lookups skip it
    engine = app.extensions["lookup"].engine
    assert engine.breakers[("acme", "crm")].state == "open"
    time.sleep(0.35)
    scripts["acme-crm"].fail = None
    get(client, "acme-token-1234", "41215522007")  # half-open trial succeeds
    assert scripts["acme-crm"].calls == 4
    assert engine.breakers[("acme", "crm")].state == "closed"


def test_rate_limit_keeps_a_backend_under_its_declared_rate(toml_app, scripts, two_tenants):
    config = two_tenants.replace('script = "acme-crm"', 'script = "acme-crm"\n  rate_per_second = 2')
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann")]})
    scripts["acme-erp"] = Script()
    client = toml_app(config).test_client()
    for i in range(6):
        get(client, "acme-token-1234", f"4121552201{i}")
    assert scripts["acme-crm"].calls == 2  # the bucket holds 2; the rest answered without it
    assert scripts["acme-erp"].calls == 6


def test_429_retry_after_is_honoured(toml_app, scripts, two_tenants):
    scripts["acme-crm"] = Script(fail=RateLimited("slow down", retry_after=0.4))
    scripts["acme-erp"] = Script()
    client = toml_app(two_tenants).test_client()
    get(client, "acme-token-1234", "41215522020")
    get(client, "acme-token-1234", "41215522021")
    assert scripts["acme-crm"].calls == 1  # not asked again during Retry-After
    time.sleep(0.45)
    scripts["acme-crm"].fail = None
    get(client, "acme-token-1234", "41215522022")
    assert scripts["acme-crm"].calls == 2


def test_callflow_routes_to_the_backend_that_produced_the_contact(toml_app, scripts):
    config = TWO_TENANTS.replace('script = "acme-erp"\n  workflows = []', 'script = "acme-erp"')
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("7", "Ann")]})
    scripts["acme-erp"] = Script(contacts={NUMBER: [contact("7", "Ann's twin")]})
    client = toml_app(config).test_client()
    ids = [c["id"] for c in get(client, "acme-token-1234")]
    assert ids == ["crm:7", "erp:7"]
    inputs = {"contactCrmId": "erp:7", "direction": "outgoing", "startedTime": "1795251600"}
    body = client.post("/CallFlow", json={"inputs": inputs}, headers={"X-Execution-Token": "acme-token-1234"})
    assert body.get_json()["id"] == "erp-call-1"
    assert [c.contact_id for c in scripts["acme-erp"].logged] == ["7"] and scripts["acme-crm"].logged == []
    # with two backends offering CallFlow an id without its backend prefix is ambiguous
    inputs["contactCrmId"] = "7"
    response = client.post("/CallFlow", json={"inputs": inputs}, headers={"X-Execution-Token": "acme-token-1234"})
    assert response.status_code == 400


def test_callflow_to_an_unavailable_backend_is_kept_and_retryable(toml_app, scripts):
    class Flaky(Script):
        pass

    scripts["acme-crm"] = Script()
    scripts["acme-erp"] = Script()
    app = toml_app(TWO_TENANTS)
    backend = app.extensions["lookup"].tenants[0].by_name["crm"].backend
    original = backend.log_call
    backend.log_call = lambda call: (_ for _ in ()).throw(BackendUnavailable("CRM down"))
    client = app.test_client()
    inputs = {"contactCrmId": "crm:1", "direction": "incoming", "startedTime": "1795251600"}
    headers = {"X-Execution-Token": "acme-token-1234"}
    response = client.post("/CallFlow", json={"inputs": inputs}, headers=headers)
    # kept for delivery, answered with the call's own key
    assert response.status_code == 200 and response.get_json()["url"] == ""
    backend.log_call = original
    again = client.post("/CallFlow", json={"inputs": inputs}, headers=headers)
    assert again.status_code == 200 and again.get_json()["id"] == "crm-call-1"
    assert len(scripts["acme-crm"].logged) == 1


def test_metrics_need_their_own_token(toml_app, scripts):
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann")]})
    scripts["acme-erp"] = Script(fail=BackendUnavailable("down"))
    disabled = toml_app(TWO_TENANTS).test_client()
    assert disabled.get("/metrics").status_code == 404
    client = toml_app(TWO_TENANTS, LOOKUP_METRICS_TOKEN="metrics-secret-1").test_client()
    get(client, "acme-token-1234")
    get(client, "acme-token-1234")
    assert client.get("/metrics", headers={"X-Execution-Token": "acme-token-1234"}).status_code == 401
    text = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-1"}).get_data(as_text=True)
    assert 'lookup_requests_total{outcome="cache_hit",tenant="acme"} 1.0' in text
    assert 'lookup_cache_misses_total{tenant="acme"} 1.0' in text
    assert 'lookup_backend_errors_total{backend="erp",kind="unavailable",tenant="acme"} 1.0' in text
    assert 'lookup_backend_latency_seconds_count{backend="crm",tenant="acme"} 1.0' in text
    assert 'lookup_backend_breaker_state{backend="crm",tenant="acme"} 0.0' in text


def test_a_backend_that_never_returns_opens_its_breaker(toml_app, scripts):
    never = threading.Event()  # set only at teardown: every lookup of acme-crm hangs until then
    scripts["acme-crm"] = Script(release=never)
    scripts["acme-erp"] = Script(contacts={NUMBER: [contact("2", "Still Here")]})
    app = toml_app(TWO_TENANTS, LOOKUP_BREAKER_FAILURES=3)
    client = app.test_client()
    for i in range(6):
        started = time.monotonic()
        assert get(client, "acme-token-1234", f"4121552209{i}") == []
        assert time.monotonic() - started < 0.3 + 0.15
    assert [c["name"] for c in get(client, "acme-token-1234")] == ["Still Here"]
    assert scripts["acme-crm"].calls == 3  # the hung calls opened the breaker; no thread is wasted after
    assert app.extensions["lookup"].engine.breakers[("acme", "crm")].state == "open"


def test_a_mirror_not_synced_yet_gives_a_partial_answer_that_is_never_cached(toml_app, scripts, two_tenants,
                                                                              caplog):
    from crm_backends.mirror import MirrorNotReady

    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann")]})
    scripts["acme-erp"] = Script(fail=MirrorNotReady("the mirror has not finished its first sync"))
    app = toml_app(two_tenants, LOOKUP_BREAKER_FAILURES=2, LOOKUP_METRICS_TOKEN="metrics-token-1")
    client = app.test_client()
    for _ in range(4):
        assert [c["name"] for c in get(client, "acme-token-1234")] == ["Ann"]
    # asked every time: neither the partial answer nor the crm's half of it came from the cache
    assert scripts["acme-erp"].calls == 4 and scripts["acme-crm"].calls == 4
    engine = app.extensions["lookup"].engine
    assert engine.breakers[("acme", "erp")].state == "closed"  # not synced is not broken
    assert caplog.text.count("has not finished its first sync") == 1  # said once, not at every ring
    metrics = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-1"}).get_data(True)
    assert 'lookup_requests_total{outcome="partial_found",tenant="acme"} 4.0' in metrics
    assert 'lookup_backend_skipped_total{backend="erp",reason="not_synced",tenant="acme"} 4.0' in metrics

    # synced: the contact the mirror holds shows at the next ring, no cached answer hides it
    scripts["acme-erp"].fail = None
    scripts["acme-erp"].contacts = {NUMBER: [contact("2", "Ben")]}
    assert [c["name"] for c in get(client, "acme-token-1234")] == ["Ann", "Ben"]


def test_a_lone_mirror_not_synced_answers_empty_but_caches_no_no_match(toml_app, scripts, two_tenants):
    from crm_backends.mirror import MirrorNotReady

    scripts["globex-crm"] = Script(fail=MirrorNotReady("the mirror has not finished its first sync"))
    client = toml_app(two_tenants).test_client()
    assert get(client, "globex-token-99") == []
    scripts["globex-crm"].fail = None
    scripts["globex-crm"].contacts = {NUMBER: [contact("1", "Gus")]}
    assert [c["name"] for c in get(client, "globex-token-99")] == ["Gus"]  # a cached [] would hide him
    # for contrast, an answered no-match is cached (negative_cache_ttl): the backend is not asked again
    calls = scripts["globex-crm"].calls
    assert get(client, "globex-token-99", "41446681800") == [] and get(client, "globex-token-99", "41446681800") == []
    assert scripts["globex-crm"].calls == calls + 1


def test_request_latency_is_measured_per_route(toml_app, scripts):
    scripts["acme-crm"] = Script(contacts={NUMBER: [contact("1", "Ann")]})
    scripts["acme-erp"] = Script()
    client = toml_app(TWO_TENANTS, LOOKUP_METRICS_TOKEN="metrics-token-1").test_client()
    get(client, "acme-token-1234")
    get(client, "acme-token-1234")
    client.post("/CallFlow", headers={"X-Execution-Token": "acme-token-1234"},
                json={"inputs": {"contactCrmId": "crm:1", "direction": "incoming"}})
    client.get("/no/such/path")
    metrics = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-1"}).get_data(True)
    name = "lookup_http_request_duration_seconds_count"
    assert f'{name}{{endpoint="/Lookup"}} 2.0' in metrics
    assert f'{name}{{endpoint="/<workflow>"}} 1.0' in metrics  # the route, never the path
    assert f'{name}{{endpoint="unmatched"}} 1.0' in metrics
