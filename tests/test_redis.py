"""The scale-out path: several workers or machines sharing cache, locks and the ledger in Redis.

Each app built here is a separate service instance (as a separate gunicorn worker or machine
would be) talking to a real redis-server started for the module.
"""

from __future__ import annotations

import threading
import time

import pytest

from lookup_core.types import Contact
from tests.conftest import wait_for_background
from tests.scripted_backend import SCRIPTS, Script

NUMBER = "+41215522000"
CONFIG = """
deadline_ms = 400
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "crm"
"""
HEADERS = {"X-Execution-Token": "acme-token-1234"}


@pytest.fixture
def apps(tmp_path, make_app, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushall()
    SCRIPTS.clear()
    path = tmp_path / "lookup.toml"

    def build(count=2, text=CONFIG, **settings):
        path.write_text(text)
        # separate state files: only Redis is shared, as between machines
        return [make_app(LOOKUP_CONFIG=str(path), REDIS_URL=redis_url,
                         LOOKUP_STATE_DB=str(tmp_path / f"state-{i}.sqlite3"), **settings) for i in range(count)]

    yield build
    for script in SCRIPTS.values():
        if script.release is not None:
            script.release.set()
    SCRIPTS.clear()


def lookup(app, number="41215522000"):
    response = app.test_client().get(f"/Lookup?PhoneNumber={number}", headers=HEADERS)
    assert response.status_code == 200
    return response.get_json()


def test_cache_is_shared_between_instances(apps):
    SCRIPTS["crm"] = Script(contacts={NUMBER: [Contact(id="1", name="Ann", phones=[NUMBER])]})
    first, second = apps()
    assert [c["name"] for c in lookup(first)] == ["Ann"]
    assert [c["name"] for c in lookup(second)] == ["Ann"]
    assert SCRIPTS["crm"].calls == 1


def test_single_flight_across_instances(apps):
    release = threading.Event()
    SCRIPTS["crm"] = Script(contacts={NUMBER: [Contact(id="1", name="Ann", phones=[NUMBER])]}, release=release)
    instances = apps(3)
    answers: list = []
    threads = [threading.Thread(target=lambda i=i: answers.append(lookup(instances[i % 3]))) for i in range(30)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 30 and all(a and a[0]["name"] == "Ann" for a in answers)
    assert SCRIPTS["crm"].calls == 1


def test_partial_answer_is_shared_with_waiting_instances(apps):
    SCRIPTS["crm"] = Script(contacts={NUMBER: [Contact(id="1", name="Ann", phones=[NUMBER])]}, delay=0.8)
    first, second = apps()
    answers = []
    leader = threading.Thread(target=lambda: answers.append(lookup(first)))
    leader.start()
    time.sleep(0.05)
    started = time.monotonic()
    answers.append(lookup(second))
    assert time.monotonic() - started < 0.4 + 0.15  # within its own deadline
    leader.join(5)
    assert answers == [[], []]
    wait_for_background(first)
    assert [c["name"] for c in lookup(second)] == ["Ann"]  # the late answer filled the shared cache
    assert SCRIPTS["crm"].calls == 1


def test_callflow_is_recorded_once_across_instances(apps):
    SCRIPTS["crm"] = Script()
    instances = apps(2)
    inputs = {"inputs": {"contactCrmId": "crm:1", "direction": "incoming", "startedTime": "1795251600"}}
    results: list = []
    barrier = threading.Barrier(6)

    def post(app):
        barrier.wait(5)
        results.append(app.test_client().post("/CallFlow", json=inputs, headers=HEADERS).get_json())

    threads = [threading.Thread(target=post, args=(instances[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 6 and len({r["id"] for r in results}) == 1
    assert len(SCRIPTS["crm"].logged) == 1


def test_rate_limit_is_shared_between_instances(apps):
    SCRIPTS["crm"] = Script()
    instances = apps(2, text=CONFIG.replace('script = "crm"', 'script = "crm"\n  rate_per_second = 3'))
    for i in range(8):
        lookup(instances[i % 2], f"4121552203{i}")
    assert SCRIPTS["crm"].calls <= 3 + 3  # at most two one-second windows were touched
    assert SCRIPTS["crm"].calls < 8


def test_lookups_go_on_when_redis_is_down(make_app, tmp_path):
    SCRIPTS.clear()
    SCRIPTS["crm"] = Script(contacts={NUMBER: [Contact(id="1", name="Ann", phones=[NUMBER])]})
    path = tmp_path / "lookup.toml"
    path.write_text(CONFIG)
    app = make_app(LOOKUP_CONFIG=str(path), REDIS_URL="redis://127.0.0.1:1/0")
    assert [c["name"] for c in lookup(app)] == ["Ann"]
