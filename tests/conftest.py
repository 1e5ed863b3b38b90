"""Shared fixtures: an app on a temporary embedded directory, its client and its token."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from crm_backends.base import Backend  # noqa: E402
from crm_backends.contact_store import ContactStore  # noqa: E402
from crm_backends.directory_import import import_file  # noqa: E402
from lookup_service import create_app  # noqa: E402

TOKEN = "test-token-0123456789"
HEADERS = {"X-Execution-Token": TOKEN}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests configure the app explicitly; the developer's own LOOKUP_* settings stay out."""
    for name in list(os.environ):
        if name.startswith("LOOKUP_") or name in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def redis_url():
    """A redis-server of the module's own (tests flush it where they need it empty)."""
    from tests.servers.redis import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture
def make_app(tmp_path) -> Callable[..., object]:
    """Build an app; keyword arguments are settings (environment variable names)."""
    apps = []

    def build(**settings):
        config = {
            "LOOKUP_TOKENS": TOKEN,
            "LOOKUP_DIRECTORY": str(tmp_path / "directory.sqlite3"),
            "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"),
            "LOOKUP_INSTANCE_DIR": str(tmp_path / "instance"),
            # answers come from SQLite unless a test turns the snapshot on (tests/test_phone_index.py)
            "LOOKUP_PHONE_INDEX": "0",
        }
        config.update({k: str(v) for k, v in settings.items()})
        app = create_app(config)
        app.testing = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        service = app.extensions.get("lookup")
        if service is not None:
            service.close()


BackendBuilder = Callable[..., Backend]


def backend_builder(instance_dir, built: list[Backend] | None = None) -> BackendBuilder:
    """``build(type, **options)``: a backend built the way the service builds one (the registry
    validates the options with the type's schema, then ``build``), its files under ``instance_dir``.

    ``name`` (default ``"b"``) and ``tenant`` (``"t"``) name it in messages; ``deadline_s`` and
    ``default_region`` are the tenant's. The source itself is returned even with ``mode="mirror"``
    (tests wrap it in their own :class:`MirroredBackend`) unless ``mirrored=True``.
    """
    from crm_backends import registry

    def build(
        type_name: str,
        *,
        name: str = "b",
        tenant: str = "t",
        mirrored: bool = False,
        deadline_s: float = 1.5,
        default_region: str = "CH",
        **options,
    ) -> Backend:
        table = {"name": name, "type": type_name, **options}
        spec = registry.load_spec(
            table, tenant, f"tenant {tenant!r}, backend {name!r}", ("CallFlow",),
            default_region=default_region, deadline_s=deadline_s, instance_dir=str(instance_dir),
        )
        backend = registry.build(spec) if mirrored else registry.build_source(spec)
        if built is not None:
            built.append(backend)
        return backend

    return build


@pytest.fixture
def build_backend(tmp_path) -> BackendBuilder:
    """The one way tests build a backend (see :func:`backend_builder`); closed after the test."""
    built: list[Backend] = []
    yield backend_builder(tmp_path, built)
    for backend in reversed(built):
        try:
            backend.close()
        except Exception:  # a test may have closed it already; the others must still be closed
            pass


@pytest.fixture
def directory_path(tmp_path) -> str:
    return str(tmp_path / "directory.sqlite3")


def write_csv(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


@pytest.fixture
def load_contacts(tmp_path, directory_path) -> Callable[[str], object]:
    """Import CSV text into the test directory."""

    def load(text: str, name: str = "contacts.csv"):
        path = write_csv(tmp_path / name, text)
        store = ContactStore(directory_path, "CH")
        try:
            return import_file(store, path)
        finally:
            store.close()

    return load


@pytest.fixture
def client(make_app, load_contacts):
    load_contacts(DEMO_CSV)
    return make_app().test_client()


DEMO_CSV = """id;name;company;phone;mobile;email;language;contact_uri;company_uri
alexa;Alexa Holiday;White Cross Co;+41 21 552 20 00;;alexa@example.com;fr;https://crm.example/c/alexa;https://crm.example/o/wcc
bruno;Bruno Keller;Keller AG;+41 44 668 18 00;;;de;;
reception;Reception;White Cross Co;201;;;;;
"""


def wait_for_background(app, limit: float = 5.0) -> None:
    """Until no lookup is in flight any more (bounded): late backends have filled the cache."""
    engine = app.extensions["lookup"].engine
    stop_at = time.monotonic() + limit
    while engine._flights and time.monotonic() < stop_at:
        time.sleep(0.01)
    assert not engine._flights, "background lookups still running"
