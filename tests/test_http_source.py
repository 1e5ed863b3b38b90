"""The HTTP source base (crm_backends/http.py): what every HTTP backend gets from it, shown on a
backend of a few lines against a real HTTP server on 127.0.0.1 (tests/fakes/rest_api.py).

The example API is not a vendor's: it is the smallest REST-style CRM (``GET /people?phone=``), so
the backend below is only its mapping, as docs/adding-a-backend.md describes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import pytest
from marshmallow import fields

from crm_backends.base import BackendOptions, BackendSpec, load_options
from crm_backends.http import DailyQuota, HttpSource, next_midnight, redact, retry_after, text
from lookup_core.errors import BackendUnavailable, ContactNotFound, CredentialsRejected, DeliveryRefused, RateLimited
from lookup_core.phone import PhoneNumber, parse_number
from lookup_core.types import Contact
from tests.fakes.rest_api import FakeRestApi, Reply
from tests.servers import free_port

NUMBER = parse_number("+41 21 552 20 00", "CH")
SECRET = "tiny-secret-token"


class TinyOptions(BackendOptions):
    base_url = fields.String(required=True)
    api_key = fields.String(required=True)


class TinyCrm(HttpSource):
    """A whole backend: its requests and the mapping of its records; the rest is the base's."""

    type_name: ClassVar[str] = "tiny"
    options_schema = TinyOptions
    default_crm_name = "Tiny CRM"
    secret_keys = frozenset({"api_key"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        self.session.headers["Authorization"] = f"Bearer {self.options['api_key']}"

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        what = "GET /people"
        response = self.send("GET", self.options["base_url"] + "/people", what=what, params={"phone": number.e164})
        self.check_status(response, what)
        people = response.json()
        contacts = [Contact(id=str(p["id"]), name=text(p.get("name")), phones=[p["phone"]]) for p in people]
        return self.filter_candidates(number, contacts)[:limit]


@pytest.fixture
def api():
    server = FakeRestApi().start()
    yield server
    server.stop()


def tiny(api: FakeRestApi, tmp_path, **overrides: Any) -> TinyCrm:
    table = {"name": "crm", "type": "tiny", "base_url": api.url, "api_key": SECRET, "timeout": 0.3, **overrides}
    options = load_options(TinyCrm, table, "tenant 't', backend 'crm'")
    return TinyCrm(BackendSpec(tenant="t", name="crm", options=options, instance_dir=str(tmp_path)))


def test_the_mapping_is_the_whole_backend(api, tmp_path):
    api.route("GET", "/people", lambda r: Reply(200, [{"id": 7, "name": " Anna ", "phone": "021 552 20 00"}]))
    [contact] = tiny(api, tmp_path).lookup(NUMBER, 5)
    assert (contact.id, contact.name, contact.exact) == ("7", "Anna", True)
    sent = api.requests[-1]
    assert sent.query["phone"] == "+41215522000"
    assert sent.headers["user-agent"].startswith("phone-lookup-service")
    assert sent.headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (Reply(401, {"error": "bad key"}), CredentialsRejected, "GET /people answered HTTP 401"),
        (Reply(403, {"error": "no right"}), CredentialsRejected, "GET /people answered HTTP 403"),
        (Reply(429, {}, headers={"Retry-After": "7"}), RateLimited, "GET /people answered HTTP 429"),
        (Reply(503, {}), BackendUnavailable, "GET /people answered HTTP 503"),
        (Reply(404, {}), BackendUnavailable, "GET /people answered HTTP 404"),
        (Reply(200, {}, delay=1.0), BackendUnavailable, "GET /people did not answer within 0.3s"),
    ],
)
def test_every_failure_in_one_format(api, tmp_path, reply, error, words):
    api.route("GET", "/people", lambda r: reply)
    with pytest.raises(error) as raised:
        tiny(api, tmp_path).lookup(NUMBER, 5)
    assert str(raised.value).startswith(f"tenant 't', backend 'crm' (Tiny CRM): {words}")
    assert SECRET not in str(raised.value)
    if error is RateLimited:
        assert raised.value.retry_after == 7.0


def test_unreachable_names_the_reason(api, tmp_path):
    backend = tiny(api, tmp_path, base_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(BackendUnavailable, match=r"\(Tiny CRM\): GET /people unreachable: Connection refused"):
        backend.lookup(NUMBER, 5)


def test_a_rejected_credential_is_logged_once_until_it_works_again(api, tmp_path, caplog):
    status = {"code": 401}
    api.route("GET", "/people", lambda r: Reply(status["code"], [] if status["code"] == 200 else {"e": "no"}))
    backend = tiny(api, tmp_path)
    with caplog.at_level(logging.INFO, logger=__name__):
        for _ in range(3):
            with pytest.raises(CredentialsRejected):
                backend.lookup(NUMBER, 5)
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        status["code"] = 200
        assert backend.lookup(NUMBER, 5) == []
        assert "accepts the credentials again" in caplog.text
        status["code"] = 401
        with pytest.raises(CredentialsRejected):
            backend.lookup(NUMBER, 5)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2  # rejected again: said again
    assert SECRET not in caplog.text
    assert all(r.name == __name__ for r in caplog.records)  # said in the backend module's name


def test_a_used_up_rate_window_holds_requests_back(api, tmp_path):
    window = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}
    api.route("GET", "/people", lambda r: Reply(200, [], headers=window))
    backend = tiny(api, tmp_path)
    backend.note_rate_headers(backend.send("GET", api.url + "/people", what="GET /people"))
    with pytest.raises(RateLimited) as raised:
        backend.wait_for_window()
    assert 4 < raised.value.retry_after <= 5
    assert len(api.requests) == 1


def test_daily_quota_refuses_until_reset_and_says_so_once(api, tmp_path, caplog):
    backend = tiny(api, tmp_path)
    quota = DailyQuota(backend, "daily allowance")
    quota.check()  # not used up: nothing happens
    with caplog.at_level(logging.WARNING, logger=__name__):
        quota.exhaust(time.time() + 60)
        quota.exhaust(time.time() + 60)
    assert sum("daily allowance used up" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(RateLimited, match=r"^tenant 't', backend 'crm' \(Tiny CRM\): daily allowance") as raised:
        quota.check()
    assert 55 < raised.value.retry_after <= 60
    assert 0 < next_midnight() - time.time() <= 86400


def test_description_is_redacted(api, tmp_path):
    backend = tiny(api, tmp_path, base_url="https://user:pw@crm.example/api?token=abc&x=1")
    info = backend.describe()
    assert info["api_key"] == "***"
    assert info["base_url"] == "https://***@crm.example/api?token=***&x=1"
    headers = {"X-Api-Key": "k", "Accept": "json"}
    assert redact({"headers": headers}) == {"headers": {"X-Api-Key": "***", "Accept": "json"}}


def test_retry_after_headers():
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"X-RateLimit-Reset": "3"}) == 3.0
    assert retry_after({"RateLimit-Reset": "2"}) == 2.0
    assert retry_after({"Retry-After": "0"}) is None  # "no wait known"
    assert retry_after({}) is None
    assert 0 < retry_after({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})


def test_with_retries_waits_out_short_limits_only(api, tmp_path):
    backend = tiny(api, tmp_path)
    tries: list[float] = []

    def limited_once() -> str:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise RateLimited("slow down", 0.05)
        return "done"

    assert backend.with_retries(limited_once, attempts=3, max_wait_s=1.0) == "done"
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.05

    def always_limited() -> str:
        tries.append(time.monotonic())
        raise RateLimited("slow down", 0.01)

    tries.clear()
    with pytest.raises(RateLimited):
        backend.with_retries(always_limited, attempts=3, max_wait_s=1.0)
    assert len(tries) == 3
    tries.clear()
    with pytest.raises(RateLimited):
        backend.with_retries(always_limited, attempts=3, max_wait_s=0.001)  # longer than it may wait
    assert len(tries) == 1
    quota = DailyQuota(backend, "daily allowance")
    quota.exhaust(time.time() + 60)
    tries.clear()
    with pytest.raises(RateLimited):
        backend.with_retries(always_limited, attempts=3, max_wait_s=1.0, quota=quota)
    assert len(tries) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, ContactNotFound), (410, ContactNotFound), (400, DeliveryRefused), (422, DeliveryRefused)],
)
def test_a_refused_write_is_for_good(api, tmp_path, status, error):
    api.route("POST", "/calls", lambda r: Reply(status, {"message": "no contact +41 21 552 20 00"}))
    backend = tiny(api, tmp_path)
    response = backend.send("POST", api.url + "/calls", what="POST /calls", json={})
    with pytest.raises(error) as raised:
        backend.check_status(response, "POST /calls", write=True, detail=response.json()["message"])
    assert f"POST /calls answered HTTP {status}: no contact" in str(raised.value)
    assert "552 20 00" not in str(raised.value)  # a number the source quotes is masked
