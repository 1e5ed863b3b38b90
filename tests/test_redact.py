"""One way to compare tokens, mask numbers and tell a secret (lookup_core/redact.py), used by the
token table, the metrics endpoint, the logs, the CLI, `config check` and the settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lookup_core import redact
from lookup_core.phone import parse_number
from lookup_core.redact import (
    is_secret_name,
    mask,
    mask_json_secrets,
    mask_numbers,
    matching_token,
    redact_options,
    secret_values,
    tokens_equal,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_token_found_is_the_one_presented():
    tokens = ["alpha-token-1", "beta-token-2", "gamma-token-3"]
    assert matching_token("beta-token-2", tokens) == 1
    assert matching_token("beta-token-", tokens) is None
    assert matching_token("", tokens) is None and matching_token(None, tokens) is None
    assert matching_token("grüezi-\udcff", tokens) is None  # not UTF-8 encodable as given: no error
    assert tokens_equal("s3cret", "s3cret") and not tokens_equal("s3cret", "s3creT") and not tokens_equal("", "")


def test_every_token_is_compared_even_after_a_match(monkeypatch):
    compared = []
    real = redact.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(redact.hmac, "compare_digest", counting)
    tokens = [b"first-token", b"second-token", b"third-token"]
    assert matching_token("first-token", tokens) == 0
    assert compared == tokens


def test_only_the_core_compares_tokens():
    """Any other constant-time comparison would be a second way to do it."""
    callers = []
    for package in ("lookup_core", "crm_backends", "lookup_service", "config"):
        for path in (ROOT / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "compare_digest":
                    callers.append(str(path.relative_to(ROOT)))
    assert callers == ["lookup_core/redact.py"]


def test_a_number_is_masked_alike_alone_and_in_a_text():
    number = parse_number("079 861 52 37", "CH")
    assert mask("+41798615237") == "********237" == number.masked()
    assert mask_numbers("from +41 79 861 52 37 at 2026-12-01 10:00:00") == "from +********237 at 2026-12-01 10:00:00"
    assert mask_numbers("GET /Lookup?PhoneNumber=%2B41798615237") == "GET /Lookup?PhoneNumber=%2B********237"
    assert mask(None) == "-" and mask("201") == "***"


@pytest.mark.parametrize("name", ["password", "db_passwd", "pwd", "api_key", "X-API-Key", "apikey", "key", "sig",
                                  "access_token", "oauth_token", "Authorization", "client_secret", "Cookie",
                                  "session_id", "signature", "credentials", "private-key"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["name", "url", "call_key_property", "keyboard", "monkey", "phone", "base_dn",
                                  "username", "headers", "signal"])
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_options_are_shown_without_their_secrets():
    options = {"name": "erp", "password": "hunter22", "token": "", "database_url": "postgresql://u:pw1234@h/db",
               "url": "https://app:s3cr3t@erp.example/api", "connect_args": {"sslmode": "require"},
               "call_key_property": "hs_call_key"}
    shown = redact_options(options, {"connect_args"})
    assert shown == {"name": "erp", "password": "***", "token": "", "database_url": "postgresql://u:***@h/db",
                     "url": "https://app:***@erp.example/api", "connect_args": "***",
                     "call_key_property": "hs_call_key"}


def test_secret_values_for_the_log_filter():
    options = {"password": "hunter22", "headers": {"Authorization": "Bearer abc123", "Accept": "application/json"},
               "url": "postgresql://u:pw1234@h/db", "name": "erp", "call_key_property": "hs_call_key"}
    assert sorted(secret_values(options)) == ["Bearer abc123", "hunter22", "pw1234"]


def test_secrets_in_a_json_body_and_a_query():
    body = '{"api_key": "k-123", "name": "{remote_name}", "Token" : "t-9", "call_key": "{call_key}"}'
    assert mask_json_secrets(body) == '{"api_key": "***", "name": "{remote_name}", "Token" : "***", "call_key": "***"}'
    assert mask_numbers("GET /s?key=abc&q=x&session_id=zz9") == "GET /s?key=***&q=x&session_id=***"
