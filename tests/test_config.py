"""The TOML configuration: validation that names the place of a mistake, ${VAR}, config check."""

from __future__ import annotations

import pytest

from config.settings import ConfigError, load_settings
from lookup_service import create_app
from tests.servers import free_port

VALID = """
default_region = "DE"
deadline_ms = 800
max_results = 4
cache_ttl = 120
negative_cache_ttl = 30

[[tenant]]
name = "acme"
tokens = ["${ACME_TOKEN}"]
max_results = 3
  [[tenant.backend]]
  name = "phonebook"
  type = "directory"
  path = "${DIR}/acme.sqlite3"
  crm_name = "Acme Phonebook"
  call_url_template = "https://pbx.example/calls/{id}"
"""


def write(tmp_path, text):
    path = tmp_path / "lookup.toml"
    path.write_text(text)
    return str(path)


def test_valid_file_with_defaults_overrides_and_variables(tmp_path):
    settings = load_settings({"LOOKUP_CONFIG": write(tmp_path, VALID), "ACME_TOKEN": "acme-secret-1",
                              "DIR": str(tmp_path)})
    [tenant] = settings.tenants
    assert tenant.tokens == ["acme-secret-1"]
    assert (tenant.default_region, tenant.deadline_ms, tenant.max_results) == ("DE", 800, 3)
    assert (tenant.cache_ttl, tenant.negative_cache_ttl) == (120, 30)
    backend = tenant.backends[0]
    assert backend.options["path"] == f"{tmp_path}/acme.sqlite3"
    assert backend.crm_name == "Acme Phonebook"


@pytest.mark.parametrize(
    "change, message",
    [
        (("${ACME_TOKEN}", "${NOT_SET_ANYWHERE}"), "environment variable NOT_SET_ANYWHERE is not set"),
        (('type = "directory"', 'type = "oracle"'), "backend 'phonebook', key 'type': unknown backend type 'oracle'"),
        (('path = "${DIR}/acme.sqlite3"', "path = 42"), "backend 'phonebook', key 'path'"),
        (('crm_name = "Acme Phonebook"', 'colour = "red"'), "backend 'phonebook', key 'colour': unknown key"),
        (("max_results = 3", "max_results = 9"), "tenant 'acme': key 'max_results': must be between 1 and 5"),
        (('default_region = "DE"', 'default_region = "Germany"'), "key 'default_region'"),
        (('name = "acme"', 'name = "acme"\ncolour = 1'), "tenant 'acme': unknown key 'colour'"),
        (('tokens = ["${ACME_TOKEN}"]', "tokens = []"), "tenant 'acme': key 'tokens'"),
        (("deadline_ms = 800", 'deadline_ms = "fast"'), "key 'deadline_ms'"),
        (('type = "directory"', 'type = "directory"\n  mode = "mirror"'), "key 'mode'"),
        (('type = "directory"', 'type = "directory"\n  workflows = ["Teleport"]'), "unknown workflow 'Teleport'"),
        (("[[tenant]]", "[tenant_typo]\n[[tenant]]"), "unknown top-level key 'tenant_typo'"),
        (("max_results = 4", "max_results = 4\n[[["), "not valid TOML"),
    ],
)
def test_errors_name_the_file_tenant_backend_and_key(tmp_path, change, message):
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_settings({"LOOKUP_CONFIG": path, "ACME_TOKEN": "acme-secret-1", "DIR": str(tmp_path)})
    assert message in str(error.value)
    assert str(error.value).startswith(path)


def test_shared_token_between_tenants_is_refused(tmp_path):
    text = VALID + VALID.split("[[tenant]]")[1].join(["[[tenant]]", ""]).replace('name = "acme"', 'name = "beta"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="share a token"):
        load_settings({"LOOKUP_CONFIG": path, "ACME_TOKEN": "acme-secret-1", "DIR": str(tmp_path)})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings({"LOOKUP_CONFIG": str(tmp_path / "nope.toml")})


def test_config_check_prints_a_redacted_summary(tmp_path, monkeypatch):
    path = write(tmp_path, VALID)
    monkeypatch.setenv("ACME_TOKEN", "acme-secret-1")
    monkeypatch.setenv("DIR", str(tmp_path))
    app = create_app({"LOOKUP_CONFIG": path, "LOOKUP_STATE_DB": str(tmp_path / "s.sqlite3")})
    result = app.test_cli_runner().invoke(args=["config", "check", path])
    assert result.exit_code == 0, result.output
    assert "tenant acme: 1 token(s), region DE, deadline 800 ms, max 3 results" in result.output
    assert "backend phonebook: type directory, mode live, crm 'Acme Phonebook', workflows ['CallFlow', 'MessageLog']" \
        in result.output
    assert "check: ok" in result.output
    assert "acme-secret-1" not in result.output


def test_config_check_reports_an_invalid_file(tmp_path, monkeypatch):
    good = write(tmp_path, VALID)
    bad = tmp_path / "bad.toml"
    bad.write_text(VALID.replace('type = "directory"', 'type = "nope"'))
    monkeypatch.setenv("ACME_TOKEN", "acme-secret-1")
    monkeypatch.setenv("DIR", str(tmp_path))
    app = create_app({"LOOKUP_CONFIG": good, "LOOKUP_STATE_DB": str(tmp_path / "s.sqlite3")})
    result = app.test_cli_runner().invoke(args=["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "INVALID" in result.output and "unknown backend type 'nope'" in result.output


def test_secret_options_are_redacted(tmp_path):
    from crm_backends.base import BackendSpec
    from crm_backends.directory import DirectoryBackend

    backend = DirectoryBackend(BackendSpec("t", "d", {"path": str(tmp_path / "d.sqlite3"), "password": "hunter22"}))
    assert backend.describe()["password"] == "***"


def test_startup_check_stops_on_configuration_and_warns_on_a_source_that_is_down(tmp_path):
    import sqlite3

    from lookup_service.startup import startup_check

    source = tmp_path / "erp.sqlite3"
    sqlite3.connect(source).execute("CREATE TABLE people (id INTEGER, name TEXT, phone TEXT)")
    closed_port = free_port()
    text = f"""
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "erp"
  type = "sql"
  url = "sqlite:///{source}"
  query = "SELECT id, name, phone FROM no_such_table WHERE phone = :e164"
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = ["phone"]
  [[tenant.backend]]
  name = "api"
  type = "rest"
  lookup_url = "http://127.0.0.1:{closed_port}/search?q={{e164}}"
  results = "items"
  timeout = 0.5
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = "phone"
"""
    settings = load_settings({"LOOKUP_CONFIG": write(tmp_path, text), "LOOKUP_INSTANCE_DIR": str(tmp_path)})
    fatal, warnings = startup_check(settings, timeout=10)
    assert len(fatal) == 1 and "tenant 'acme', backend 'erp'" in fatal[0] and "'query'" in fatal[0]
    assert len(warnings) == 1 and "backend 'api': unavailable at start" in warnings[0]


def test_config_check_fails_for_a_backend_that_cannot_work(tmp_path):
    closed_port = free_port()
    path = write(tmp_path, f"""
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "api"
  type = "rest"
  lookup_url = "http://127.0.0.1:{closed_port}/search?q={{e164}}"
  results = "items"
  timeout = 0.5
  headers = {{ Authorization = "Bearer very-secret-api-token" }}
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = "phone"
""")
    app = create_app({"LOOKUP_CONFIG": path, "LOOKUP_STATE_DB": str(tmp_path / "s.sqlite3"),
                      "LOOKUP_INSTANCE_DIR": str(tmp_path)})
    result = app.test_cli_runner().invoke(args=["config", "check"])
    assert result.exit_code == 1
    assert "backend api: type rest" in result.output and "check: FAILED" in result.output
    assert "very-secret-api-token" not in result.output
