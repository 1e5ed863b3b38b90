"""The registry of backend types: one build() for everyone, capabilities read from the class,
backend modules imported only when configured, and a missing optional package refused as a
configuration error that names it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from config.settings import ConfigError, load_settings
from crm_backends import registry
from crm_backends.base import Backend
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendConfigError
from lookup_service.tenants import build_tenants
from tests.conftest import ROOT

SHIPPED = ["carddav", "directory", "hubspot", "ldap", "odoo", "pipedrive", "rest", "sql"]


def write_config(tmp_path, backend: str) -> str:
    path = tmp_path / "lookup.toml"
    path.write_text(
        '[[tenant]]\nname = "acme"\ntokens = ["acme-token-1234"]\n  [[tenant.backend]]\n'
        + textwrap.indent(textwrap.dedent(backend).strip(), "  ")
        + "\n"
    )
    return str(path)


def test_unknown_type_is_a_config_error_listing_the_known_types(tmp_path):
    path = write_config(tmp_path, 'name = "crm"\ntype = "salesforce"')
    with pytest.raises(ConfigError) as raised:
        load_settings({"LOOKUP_CONFIG": path})
    message = str(raised.value)
    assert "tenant 'acme', backend 'crm', key 'type'" in message and "'salesforce'" in message
    for name in SHIPPED:
        assert repr(name) in message

    with pytest.raises(BackendConfigError) as direct:
        registry.backend_class("salesforce")
    assert direct.value.key == "type" and str(registry.known_types()) in str(direct.value)


def test_every_registered_class_declares_its_type_and_capabilities_on_the_class():
    assert set(SHIPPED) <= set(registry.TYPES) and registry.SHIPPED == frozenset(SHIPPED)
    for name in SHIPPED:
        cls = registry.backend_class(name)
        assert cls.type_name == name
        assert cls.modes and cls.modes <= {"live", "mirror"}
        assert cls.workflows <= {"CallFlow"}
        assert isinstance(cls.search_by_name, bool) and isinstance(cls.users, bool)
        # no instance sets a capability: the class attribute is the only place it lives
        assert "can_log_calls" not in vars(cls)


def test_capabilities_are_read_from_the_class_without_building_anything():
    hubspot = registry.backend_class("hubspot")
    assert hubspot.workflows == {"CallFlow"} and hubspot.modes == {"live", "mirror"}
    assert registry.backend_class("ldap").workflows == frozenset()
    assert registry.backend_class("directory").modes == {"live"}
    # types whose call logging needs its own settings narrow their workflows per configuration
    sql = registry.backend_class("sql")
    assert sql.workflows_for({"call_log_query": "INSERT ..."}) == {"CallFlow"}
    assert sql.workflows_for({}) == frozenset()
    rest = registry.backend_class("rest")
    assert rest.workflows_for({"call_log": {"request_url": "http://127.0.0.1/x"}}) == {"CallFlow"}
    assert rest.workflows_for({}) == frozenset()


def test_load_spec_refuses_a_mode_or_workflow_the_class_does_not_offer():
    where = "tenant 't', backend 'd'"
    with pytest.raises(BackendConfigError, match=r"key 'mode': 'mirror' is not supported by type 'directory'"):
        registry.load_spec({"name": "d", "type": "directory", "mode": "mirror"}, "t", where, ("CallFlow",))
    table = {"name": "d", "type": "sql", "url": "sqlite://", "query": "SELECT 1",
             "fields": {"id": "id", "name": "name", "phones": ["phone"]},
             "workflows": ["CallFlow"]}
    with pytest.raises(BackendConfigError, match=r"type 'sql' cannot run 'CallFlow' \(configure its call logging"):
        registry.load_spec(table, "t", where, ("CallFlow",))


def test_one_spec_from_the_configuration_and_one_slot_at_run_time(tmp_path):
    source = tmp_path / "erp.sqlite3"
    sqlite3.connect(source).close()
    path = write_config(tmp_path, f'''
        name = "erp"
        type = "sql"
        mode = "mirror"
        url = "sqlite:///{source}"
        list_query = "SELECT id, name, phone FROM people"
        fields = {{ id = "id", name = "name", phones = ["phone"] }}
        crm_logo = "https://erp.example/logo.png"
    ''')
    settings = load_settings({"LOOKUP_CONFIG": path, "LOOKUP_INSTANCE_DIR": str(tmp_path / "instance"),
                              "LOOKUP_DEADLINE_MS": "900"})
    [spec] = settings.tenants[0].backends
    assert (spec.tenant, spec.name, spec.type, spec.mode, spec.workflows) == ("acme", "erp", "sql", "mirror", ())
    assert spec.instance_dir == str(tmp_path / "instance") and spec.deadline_s == 1.5  # the file's default
    [tenant] = build_tenants(settings)
    try:
        [slot] = tenant.slots
        assert slot.spec is spec and isinstance(slot.backend, MirroredBackend)
        assert (slot.name, slot.mode, slot.workflows) == ("erp", "mirror", [])
        assert slot.crm_name == "Database" and slot.crm_logo == "https://erp.example/logo.png"
        assert slot.backend.can_log_calls is False
    finally:
        tenant.close()


def test_the_shared_fixture_builds_through_the_registry(build_backend, tmp_path):
    backend = build_backend("directory", name="dir", path=str(tmp_path / "dir.sqlite3"))
    assert isinstance(backend, Backend) and backend.type_name == "directory" and backend.can_log_calls
    assert backend.spec.type == "directory" and backend.spec.where() == "tenant 't', backend 'dir'"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )


MISSING = """
import json, sys
sys.modules[{package!r}] = None  # the package is not installed: importing it fails
from config.settings import ConfigError, load_settings
loaded = sorted(name for name in sys.modules if name.startswith("crm_backends."))
try:
    load_settings({{"LOOKUP_CONFIG": {path!r}}})
    outcome = "loaded"
except ConfigError as exc:
    outcome = str(exc)
print(json.dumps({{"outcome": outcome, "loaded_before": loaded}}))
"""


@pytest.mark.parametrize(
    ("package", "backend"),
    [
        ("ldap3", 'name = "staff"\ntype = "ldap"\nurl = "ldap://127.0.0.1:1"\nbase_dn = "dc=example,dc=org"'),
        ("jmespath", 'name = "erp"\ntype = "rest"\nlookup_url = "http://127.0.0.1:1/c?q={e164}"\n'
                     'results = "data"\nfields = { id = "id", name = "name", phones = ["phone"] }'),
        ("sqlalchemy", 'name = "erp"\ntype = "sql"\nurl = "sqlite://"\nquery = "SELECT 1"\n'
                       'fields = { id = "id", name = "name", phones = ["phone"] }'),
    ],
)
def test_a_missing_optional_package_is_a_config_error_naming_it(tmp_path, package, backend):
    path = write_config(tmp_path, backend)
    result = run_python(MISSING.format(package=package, path=path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["loaded_before"] == [], "backend modules must not be imported before they are configured"
    outcome = report["outcome"]
    assert f"needs the Python package {package!r}" in outcome and "key 'type'" in outcome
    assert "tenant 'acme'" in outcome


def test_the_service_starts_without_the_optional_packages_it_does_not_use(tmp_path):
    result = run_python(f"""
        import sys
        for package in ("ldap3", "jmespath", "openpyxl"):  # SQLAlchemy: the ledger needs it
            sys.modules[package] = None
        from lookup_service import create_app
        app = create_app({{"LOOKUP_TOKENS": "test-token-0123456789", "LOOKUP_PHONE_INDEX": "0",
                          "LOOKUP_DIRECTORY": {str(tmp_path / "d.sqlite3")!r},
                          "LOOKUP_STATE_DB": {str(tmp_path / "state.sqlite3")!r},
                          "LOOKUP_INSTANCE_DIR": {str(tmp_path / "instance")!r}}})
        answer = app.test_client().get("/Lookup?PhoneNumber=41215522000",
                                       headers={{"X-Execution-Token": "test-token-0123456789"}})
        print(answer.status_code, answer.get_data(as_text=True).strip())
        app.extensions["lookup"].close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "[]"]


def test_registering_a_type_twice_under_another_class_fails_loudly():
    registry.register("scripted", "tests.scripted_backend:ScriptedBackend")  # the same again: fine
    with pytest.raises(RuntimeError, match="already registered"):
        registry.register("scripted", "tests.somewhere:Else")


def test_a_package_needed_only_by_some_options_is_named_when_the_backend_is_built(tmp_path):
    """The directory needs psycopg only with a PostgreSQL URL: building it then is a config error."""
    result = run_python(f"""
        import sys
        sys.modules["psycopg"] = None
        from config.settings import ConfigError, load_settings
        from lookup_service.tenants import build_tenants
        settings = load_settings({{"LOOKUP_TOKENS": "test-token-0123456789",
                                  "DATABASE_URL": "postgresql://lookup@127.0.0.1:1/contacts",
                                  "LOOKUP_INSTANCE_DIR": {str(tmp_path)!r}}})
        try:
            build_tenants(settings)
            print("built")
        except ConfigError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "needs the Python package 'psycopg'" in result.stdout
    assert "tenant 'default', backend 'directory'" in result.stdout
