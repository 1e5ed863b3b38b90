"""The README's examples are copy-paste material: every TOML file in it must load and validate."""

from __future__ import annotations

import os
import re
import tomllib

import pytest

from config.settings import load_settings

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
BLOCKS = re.findall(r"```toml\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


def test_the_readme_has_an_example_for_every_backend_type():
    from crm_backends.registry import SHIPPED

    types = {
        backend["type"]
        for block in BLOCKS
        for tenant in tomllib.loads(block).get("tenant", [])
        for backend in tenant.get("backend", [])
    }
    assert types == set(SHIPPED)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_toml_example_is_a_valid_configuration(index, tmp_path):
    text = BLOCKS[index]
    if "[[tenant]]" not in text:
        text = '[[tenant]]\nname = "t"\ntokens = ["example-token-1"]\n' + text
    path = tmp_path / "lookup.toml"
    path.write_text(text)
    variables = {name: f"example-{name.lower()}" for name in re.findall(r"\$\{(\w+)\}", text)}
    settings = load_settings({"LOOKUP_CONFIG": str(path), **variables})
    assert settings.tenants and all(tenant.backends for tenant in settings.tenants)


# Every `curl ... http://127.0.0.1:8000/<Workflow> -d '{...}'` of the README, posted to the demo's
# contacts: the examples of CallFlow, MessageLog and CreateContact answer 200 as shown.
POSTS = re.findall(r"http://127\.0\.0\.1:8000/(\w+)(?: \\\n\s*)? -d '(\{.*?\})'", open(README, encoding="utf-8").read(),
                   re.S)


def test_the_readme_has_post_examples_for_each_workflow():
    assert {path for path, _ in POSTS} >= {"CallFlow", "MessageLog", "CreateContact"}


def test_every_workflow_example_of_the_readme_answers_200(make_app, load_contacts, tmp_path):
    import json

    from tests.conftest import DEMO_CSV, HEADERS

    load_contacts(DEMO_CSV)
    path = tmp_path / "lookup.toml"
    path.write_text(f'[[tenant]]\nname = "t"\ntokens = ["{HEADERS["X-Execution-Token"]}"]\ncreate_contacts_in = '
                    f'"directory"\n  [[tenant.backend]]\n  name = "directory"\n  type = "directory"\n'
                    f'  path = "{tmp_path / "directory.sqlite3"}"\n')
    client = make_app(LOOKUP_CONFIG=str(path)).test_client()
    for workflow, body in POSTS:
        response = client.post(f"/{workflow}", json=json.loads(body), headers=HEADERS)
        assert response.status_code == 200, (workflow, body, response.get_json())
        assert response.get_json()["id"]
