"""CRM users: `flask --app wsgi users [TENANT [BACKEND]]` and the owner of records whose userCrmId
the CRM does not know (crm_backends.base.Backend.owner_for), on the scripted backend type. Each
CRM's own listing is tested in its module (test_odoo, test_pipedrive, test_hubspot, test_sql, test_rest)."""

import json
import logging

import pytest

from lookup_core.errors import BackendUnavailable
from lookup_core.types import CrmUser
from tests.scripted_backend import SCRIPTS, Script

CONFIG = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "acme-crm"
  crm_name = "Acme CRM"
  default_user_id = "7"
  [[tenant.backend]]
  name = "directory"
  type = "directory"
  path = "{directory}"
[[tenant]]
name = "globex"
tokens = ["globex-token-99"]
  [[tenant.backend]]
  name = "crm"
  type = "scripted"
  script = "globex-crm"
"""
ACME = {"X-Execution-Token": "acme-token-1234"}


@pytest.fixture
def app(tmp_path, make_app):
    SCRIPTS.clear()
    SCRIPTS["acme-crm"] = Script(users=[CrmUser("7", "Zoé Favre", "zoe@acme.example"),
                                        CrmUser("12", "Luca Rossi", None)])
    SCRIPTS["globex-crm"] = Script(users=[CrmUser("u-1", "Ann Lee", "ann@globex.example")])
    path = tmp_path / "lookup.toml"
    path.write_text(CONFIG.replace("{directory}", str(tmp_path / "d.sqlite3")))
    yield make_app(LOOKUP_CONFIG=str(path))
    SCRIPTS.clear()


def test_users_lists_each_backend_with_users_as_a_table(app):
    result = app.test_cli_runner().invoke(args=["users"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "acme/crm (Acme CRM): 2 user(s)"
    assert lines[1].split() == ["id", "name", "email"]
    assert lines[2].split() == ["7", "Zoé", "Favre", "zoe@acme.example"]
    assert lines[3].split() == ["12", "Luca", "Rossi"]
    assert "globex/crm (Scripted): 1 user(s)" in lines
    assert not any(line.startswith("acme/directory") for line in lines)  # the directory has no users


def test_users_of_one_tenant_and_backend_as_json(app):
    result = app.test_cli_runner().invoke(args=["users", "globex", "crm", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"tenant": "globex", "backend": "crm", "users": [
        {"id": "u-1", "name": "Ann Lee", "email": "ann@globex.example"}]}


@pytest.mark.parametrize("args, message", [
    (["users", "initech"], "no tenant named 'initech'"),
    (["users", "acme", "erp"], "no backend named 'erp'"),
    (["users", "acme", "directory"], "has no users to list"),
])
def test_users_names_what_is_wrong(app, args, message):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0 and message in result.output


def test_a_crm_that_cannot_list_its_users_fails_the_command_in_one_line(app):
    SCRIPTS["acme-crm"].users_fail = BackendUnavailable("connection refused")
    result = app.test_cli_runner().invoke(args=["users", "acme"])
    assert result.exit_code == 1
    assert "acme/crm: cannot list users: connection refused" in result.output
    assert "Traceback" not in result.output


def call(user):
    return {"inputs": {"contactCrmId": "crm:c-1", "userCrmId": user, "direction": "incoming",
                       "originatorNumber": "41215522000", "startedTime": f"2026-11-21T09:{len(user):02d}:00Z"}}


def test_an_unknown_user_id_is_logged_with_the_default_owner_and_warned_about_once(app, caplog):
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="crm_backends.base"):
        for user in ("12", "99", "999", "99"):
            body = call(user)
            body["inputs"]["startedTime"] = f"2026-11-21T09:{len(SCRIPTS['acme-crm'].logged):02d}:00Z"
            assert client.post("/CallFlow", json=body, headers=ACME).status_code == 200
    assert SCRIPTS["acme-crm"].owners == ["12", "7", "7", "7"]  # default_user_id for the unknown ones
    warnings = [r.getMessage() for r in caplog.records if "is not a user of the CRM" in r.getMessage()]
    assert len(warnings) == 2 and "'99'" in warnings[0] and "'999'" in warnings[1]
    assert SCRIPTS["acme-crm"].user_reads == 1  # the list is read once, then trusted for a while


def test_when_the_users_cannot_be_read_the_user_id_is_trusted(app):
    SCRIPTS["acme-crm"].users_fail = BackendUnavailable("users endpoint down")
    assert app.test_client().post("/CallFlow", json=call("55"), headers=ACME).status_code == 200
    assert SCRIPTS["acme-crm"].owners == ["55"]


def test_config_check_says_which_backends_have_users_and_what_they_run(app, tmp_path):
    result = app.test_cli_runner().invoke(args=["config", "check", "--no-connect"])
    assert result.exit_code == 0, result.output
    assert "backend crm: type scripted, mode live, crm 'Acme CRM', workflows ['CallFlow'], lists users" in result.output
    assert "backend directory: type directory, mode live, crm 'Directory', workflows ['CallFlow', 'MessageLog']\n" \
        in result.output
