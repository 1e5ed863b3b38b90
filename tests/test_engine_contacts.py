"""The engine answers with contacts; the web layer renders them, once, for the route and the CLI;
the Redis key names come from one module."""

from __future__ import annotations

import ast
import json
import os
from datetime import UTC, datetime

import pytest

from lookup_core.errors import BackendUnavailable
from lookup_core.phone import parse_number
from lookup_core.types import Contact
from lookup_service import keys
from lookup_service.cache import MemoryCache
from lookup_service.engine import Answer, LookupEngine, Match
from lookup_service.metrics import Metrics
from lookup_service.schemas import EMPTY_ANSWER, ResponseFormat
from tests.scripted_backend import SCRIPTS, Script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = "+41215522000"
HEADERS = {"X-Execution-Token": "acme-token-1234"}
CONFIG = """
deadline_ms = 300
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "crm"
  crm_name = "Acme CRM"
  crm_logo = "https://acme.example/logo.png"
  [[tenant.backend]]
  name = "erp"
  type = "scripted"
  script = "erp"
  workflows = []
"""


@pytest.fixture
def app(tmp_path, make_app):
    SCRIPTS.clear()
    SCRIPTS["crm"] = Script(contacts={NUMBER: [
        Contact(id="1", name="Zoë Ähnlich", company="Müller & Co", email="zoe@example.com", phones=[NUMBER],
                custom_data={"note": "called twice", "tags": ["vip", "de"]},
                last_activity=datetime(2026, 1, 2, tzinfo=UTC)),
        Contact(id="2", name="Old Contact", phones=[NUMBER], exact=False),
    ]})
    SCRIPTS["erp"] = Script(contacts={NUMBER: [Contact(id="e7", name="ERP Only", phones=[NUMBER],
                                                       contact_uri="https://erp.example/7")]})
    path = tmp_path / "lookup.toml"

    def build(**settings):
        path.write_text(CONFIG)
        return make_app(LOOKUP_CONFIG=str(path), **settings)

    yield build
    SCRIPTS.clear()


def test_the_engine_returns_contacts_not_bytes(app):
    service = app().extensions["lookup"]
    tenant = service.tenants[0]
    answer = service.engine.lookup(tenant, parse_number(NUMBER))
    assert isinstance(answer, Answer) and not isinstance(answer, bytes | str)
    assert all(isinstance(match, Match) and isinstance(match.contact, Contact) for match in answer.matches)
    assert [(m.source.name, m.contact.name) for m in answer.matches] == [
        ("crm", "Zoë Ähnlich"), ("erp", "ERP Only"), ("crm", "Old Contact")]
    assert [m.public_id for m in answer.matches] == ["crm:1", "erp:e7", "crm:2"]
    assert answer.complete and answer.outcome == "found"
    assert service.engine.lookup(tenant, parse_number("+41449999999")).outcome == "empty"


def test_an_answer_without_a_failed_backend_is_partial(app):
    SCRIPTS["erp"].fail = BackendUnavailable("down")
    service = app().extensions["lookup"]
    answer = service.engine.lookup(service.tenants[0], parse_number(NUMBER))
    assert [m.contact.id for m in answer.matches] == ["1", "2"]
    assert not answer.complete and answer.outcome == "partial_found"


@pytest.mark.parametrize("style", ["camel", "pascal"])
def test_the_cli_and_the_route_render_an_answer_identically(app, style):
    served = app(LOOKUP_RESPONSE_KEYS=style)
    route = served.test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS)
    assert route.status_code == 200
    printed = app(LOOKUP_RESPONSE_KEYS=style).test_cli_runner().invoke(args=["lookup", "021 552 20 00"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == route.get_json()
    first = route.get_json()[0]
    name, custom = ("Name", "CustomData") if style == "pascal" else ("name", "customData")
    assert first[name] == "Zoë Ähnlich" and first[custom] == {"email": "zoe@example.com", "note": "called twice",
                                                              "tags": "vip, de"}
    assert "Zoë" in printed.output  # printed as text, not as \\u escapes


def test_the_route_serves_the_renderers_bytes_from_the_cache(app):
    served = app()
    client = served.test_client()
    first = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_data()
    again = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_data()
    assert SCRIPTS["crm"].calls == 1  # the second answer came from the cache
    service = served.extensions["lookup"]
    fresh = service.engine.lookup(service.tenants[0], parse_number(NUMBER))
    assert first == again == ResponseFormat("camel").render(fresh)


def test_the_engine_takes_any_cache_with_the_interface(app):
    """No test of the cache's type in the engine: an object of another class with the same methods
    serves for answers and coordination alike."""

    class Foreign:  # neither a MemoryCache nor a RedisCache: it delegates to one
        shared = False

        def __init__(self) -> None:
            self.inner = MemoryCache()
            self.sets: list[str] = []

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def set(self, key: str, value: bytes, ttl: float) -> None:
            self.sets.append(key)
            self.inner.set(key, value, ttl)

    tenant = app().extensions["lookup"].tenants[0]
    cache = Foreign()
    engine = LookupEngine([tenant], cache, ResponseFormat("camel").render, Metrics())
    try:
        number = parse_number(NUMBER)
        body = engine.lookup_rendered(tenant, number)
        assert [c["id"] for c in json.loads(body)] == ["crm:1", "erp:e7", "crm:2"]
        assert cache.sets == [engine.cache_key(tenant, number)]
        assert engine.lookup_rendered(tenant, number) == body  # a hit: nothing asked, nothing set
        assert cache.sets == [engine.cache_key(tenant, number)] and SCRIPTS["crm"].calls == 1
        assert engine.lookup_rendered(tenant, parse_number("+41449999999")) == EMPTY_ANSWER
    finally:
        engine.close()


# --- Redis key names ---------------------------------------------------------------------------

def _string_constants(path: str):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_redis_key_names_are_spelled_only_in_the_keys_module():
    offenders = []
    for package in ("lookup_service", "crm_backends", "lookup_core", "config"):
        folder = os.path.join(ROOT, package)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path == keys.__file__:
                continue
            offenders += [f"{package}/{name}:{line}: {value!r}" for line, value in _string_constants(path)
                          if value.startswith(keys.PREFIX)]
    assert offenders == [], "build Redis keys with lookup_service.keys"


def test_key_names_stay_those_earlier_versions_wrote():
    """A rolling deploy shares Redis between versions: the outbox and the ledger's results must be
    found under the names the previous version used."""
    assert keys.answer("acme|+41215522000|3") == "lookup:acme|+41215522000|3"
    assert keys.partial_answer("k") == "lookup:partial:k" and keys.flight_lock("k") == "lookup:lock:k"
    assert keys.rate_window("acme:crm", 17) == "lookup:rate:acme:crm:17"
    assert keys.blocked("acme:crm") == "lookup:blocked:acme:crm"
    assert (keys.outbox_item("k"), keys.outbox_claim("k")) == ("lookup:outbox:item:k", "lookup:outbox:claim:k")
    assert (keys.OUTBOX_DUE, keys.OUTBOX_FAILED) == ("lookup:outbox:due", "lookup:outbox:failed")
    assert keys.workflow_result("k") == "lookup:workflow:k"


def test_every_key_the_service_writes_in_redis_is_named_by_the_keys_module(app, tmp_path):
    import redis

    from tests.servers.redis import redis_server

    with redis_server() as url:
        client = redis.Redis.from_url(url)
        served = app(REDIS_URL=url)
        served.test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS)
        served.test_client().post("/CallFlow", headers=HEADERS, json={"inputs": {
            "contactCrmId": "crm:1", "direction": "incoming", "startedTime": "1795251600"}})
        names = sorted(name.decode() for name in client.scan_iter(count=1000))
        service = served.extensions["lookup"]
        answer_key = keys.answer(service.engine.cache_key(service.tenants[0], parse_number(NUMBER)))
        assert answer_key in names
        assert client.get(answer_key) == served.test_client().get(
            "/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_data()
        assert names and all(name.startswith(keys.PREFIX) for name in names), names
        assert any(name.startswith(keys.OUTBOX) for name in names), names
        service.close()


# --- out of the garbage collector's way ------------------------------------------------------------

def test_the_memory_cache_expires_is_bounded_and_is_no_work_for_the_collector():
    import gc
    import time

    cache = MemoryCache(maxsize=1000)
    cache.set("short", b"[1]", 0.05)
    cache.set("never", b"[2]", 0)  # a zero TTL caches nothing
    assert cache.get("short") == b"[1]" and cache.get("never") is None
    deadline = time.monotonic() + 5
    while cache.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("short") is None
    for i in range(3000):
        cache.set(f"k{i}", b"[]", 60)
    held = [i for i in range(3000) if cache.get(f"k{i}") is not None]
    assert len(held) <= 1000 and held[-1] == 2999 and held == list(range(held[0], 3000))
    cache.set("k0", b"[0]", 60)  # set again after its eviction: the newest value
    assert cache.get("k0") == b"[0]"
    gc.collect()
    assert not gc.is_tracked(cache._young) and not gc.is_tracked(cache._old)


def test_freezing_the_startup_objects_leaves_them_to_reference_counting():
    import gc

    from lookup_service import FULL_COLLECTION_EVERY, freeze_startup_objects

    threshold = gc.get_threshold()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # the loaded modules' objects, at least
        assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
        assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
