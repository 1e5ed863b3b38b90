"""The connector contract end to end on the embedded directory (issue: lookup service v1)."""

import io
import json
import logging

import pytest

from tests.conftest import HEADERS, TOKEN

CAMEL = ["name", "company", "contactUri", "companyUri", "id", "crmName", "crmLogo", "crmActions", "customData"]


def test_documented_get_example(client):
    response = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    contacts = response.get_json()
    assert len(contacts) == 1
    alexa = contacts[0]
    assert list(alexa) == CAMEL
    assert alexa["name"] == "Alexa Holiday"
    assert alexa["company"] == "White Cross Co"
    assert alexa["contactUri"] == "https://crm.example/c/alexa"
    assert alexa["companyUri"] == "https://crm.example/o/wcc"
    assert alexa["id"] == "directory:alexa"
    assert alexa["crmActions"] == ["CallFlow"]
    assert alexa["customData"] == {"email": "alexa@example.com", "language": "fr"}


def test_documented_post_example(client):
    response = client.post("/Lookup", json={"inputs": {"phoneNumber": "41215522000"}}, headers=HEADERS)
    assert response.status_code == 200
    assert [c["name"] for c in response.get_json()] == ["Alexa Holiday"]


@pytest.mark.parametrize("query_key", ["PhoneNumber", "phoneNumber", "phonenumber", "PHONENUMBER"])
def test_query_key_in_any_case(client, query_key):
    response = client.get(f"/Lookup?{query_key}=41446681800", headers=HEADERS)
    assert [c["name"] for c in response.get_json()] == ["Bruno Keller"]


@pytest.mark.parametrize(
    "body",
    [{"inputs": {"phoneNumber": "41446681800"}}, {"Inputs": {"PhoneNumber": "41446681800"}},
     {"inputs": {"phonenumber": 41446681800}}],
)
def test_body_keys_in_any_case(client, body):
    response = client.post("/Lookup", json=body, headers=HEADERS)
    assert [c["name"] for c in response.get_json()] == ["Bruno Keller"]


def test_body_number_wins_over_query(client):
    response = client.post(
        "/Lookup?PhoneNumber=41215522000", json={"inputs": {"phoneNumber": "41446681800"}}, headers=HEADERS
    )
    assert [c["name"] for c in response.get_json()] == ["Bruno Keller"]


def test_query_used_when_body_has_no_number(client):
    response = client.post("/Lookup?PhoneNumber=41215522000", json={"inputs": {}}, headers=HEADERS)
    assert [c["name"] for c in response.get_json()] == ["Alexa Holiday"]


def test_no_match_is_200_and_empty_list(client):
    response = client.get("/Lookup?PhoneNumber=41999999999", headers=HEADERS)
    assert response.status_code == 200
    assert response.get_data() == b"[]"


def test_short_number_matches_only_exactly(client):
    assert [c["name"] for c in client.get("/Lookup?PhoneNumber=201", headers=HEADERS).get_json()] == ["Reception"]
    assert client.get("/Lookup?PhoneNumber=000", headers=HEADERS).get_json() == []
    assert client.get("/Lookup?PhoneNumber=2000", headers=HEADERS).get_json() == []


def test_pascal_case_keys(make_app, load_contacts):
    load_contacts("id;name;phone\n1;Ann;+41 21 552 20 00\n")
    client = make_app(LOOKUP_RESPONSE_KEYS="pascal").test_client()
    contact = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()[0]
    assert list(contact) == [key[0].upper() + key[1:] for key in CAMEL]
    assert contact["Name"] == "Ann"
    assert contact["CustomData"] == {}
    assert contact["Company"] is None


def test_at_most_five_results_and_a_lower_configured_cap(make_app, load_contacts):
    rows = "".join(f"{i};Person {i};+41 21 552 20 00\n" for i in range(8))
    load_contacts("id;name;phone\n" + rows)
    assert len(make_app().test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()) == 5
    capped = make_app(LOOKUP_MAX_RESULTS=2).test_client()
    assert len(capped.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()) == 2


def test_a_cap_above_five_is_refused(make_app):
    from config.settings import ConfigError

    with pytest.raises(ConfigError, match="LOOKUP_MAX_RESULTS"):
        make_app(LOOKUP_MAX_RESULTS=6)


def test_exact_match_ranks_before_a_number_with_an_extension(make_app, load_contacts):
    load_contacts("id;name;phone\n1;Switchboard Ext;+41 21 552 20 00 ext. 12\n2;Direct Line;021 552 20 00\n")
    client = make_app().test_client()
    names = [c["name"] for c in client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()]
    assert names == ["Direct Line", "Switchboard Ext"]


# --- auth -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-Execution-Token": "wrong-token-000"}, {"X-Execution-Token": ""}])
def test_missing_or_wrong_token_is_401_json(client, headers):
    response = client.get("/Lookup?PhoneNumber=41215522000", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_rotation_accepts_every_listed_token(make_app):
    client = make_app(LOOKUP_TOKENS="old-token-12345, new-token-67890").test_client()
    for token in ("old-token-12345", "new-token-67890"):
        assert client.get("/Lookup?PhoneNumber=201", headers={"X-Execution-Token": token}).status_code == 200


def test_header_name_is_configurable(make_app):
    client = make_app(LOOKUP_TOKEN_HEADER="X-Api-Key").test_client()
    assert client.get("/Lookup?PhoneNumber=201", headers={"X-Api-Key": TOKEN}).status_code == 200
    assert client.get("/Lookup?PhoneNumber=201", headers=HEADERS).status_code == 401


def test_service_refuses_to_start_without_a_token(tmp_path):
    from config.settings import ConfigError
    from lookup_service import create_app

    with pytest.raises(ConfigError, match="LOOKUP_TOKENS"):
        create_app({"LOOKUP_DIRECTORY": str(tmp_path / "d.sqlite3")})


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "method, url, kwargs, status, code",
    [
        ("get", "/Lookup", {}, 400, "missing_number"),
        ("post", "/Lookup", {"json": {"inputs": {}}}, 400, "missing_number"),
        ("get", "/Lookup?PhoneNumber=abcdef", {}, 400, "invalid_number"),
        ("get", "/Lookup?PhoneNumber=4121552200O", {}, 400, "invalid_number"),
        ("get", "/Lookup?PhoneNumber=1", {}, 400, "invalid_number"),
        ("get", "/Lookup?PhoneNumber=" + "1" * 21, {}, 400, "invalid_number"),
        ("post", "/Lookup", {"json": {"inputs": {"phoneNumber": True}}}, 400, "invalid_number"),
        ("post", "/Lookup", {"json": {"inputs": {"phoneNumber": ["4121"]}}}, 400, "invalid_number"),
        ("post", "/Lookup", {"data": "{not json", "content_type": "application/json"}, 400, "malformed_json"),
        ("post", "/Lookup", {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "malformed_json"),
        ("post", "/Lookup", {"json": [1, 2]}, 400, "invalid_input"),
        ("post", "/Lookup", {"data": "x" * (64 * 1024 + 1), "content_type": "application/json"}, 413,
         "body_too_large"),
        ("put", "/Lookup?PhoneNumber=41215522000", {}, 405, "method_not_allowed"),
        ("delete", "/Lookup", {}, 405, "method_not_allowed"),
        ("post", "/healthz", {}, 405, "method_not_allowed"),
        ("get", "/CallFlow", {}, 405, "method_not_allowed"),
        ("post", "/NoSuchFlow", {"json": {"inputs": {}}}, 404, "unknown_workflow"),
        ("get", "/a/b/c", {}, 404, "not_found"),
    ],
)
def test_bad_input_gets_a_clear_json_error(client, method, url, kwargs, status, code):
    response = getattr(client, method)(url, headers=HEADERS, **kwargs)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert body["message"]
    assert b"<html" not in response.get_data().lower() and b"Traceback" not in response.get_data()


def test_unknown_workflow_names_the_existing_ones(client):
    body = client.post("/Ticket", json={"inputs": {}}, headers=HEADERS).get_json()
    assert "CallFlow" in body["message"]


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_an_import_is_visible_at_the_next_lookup(make_app, load_contacts):
    load_contacts("id;name;phone\n1;Before;+41 21 552 20 00\n")
    client = make_app().test_client()
    assert client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()[0]["name"] == "Before"
    assert client.get("/Lookup?PhoneNumber=41215522001", headers=HEADERS).get_json() == []  # cached as empty
    load_contacts("id;name;phone\n1;After;+41 21 552 20 00\n2;New;+41 21 552 20 01\n")
    assert client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()[0]["name"] == "After"
    assert client.get("/Lookup?PhoneNumber=41215522001", headers=HEADERS).get_json()[0]["name"] == "New"


def test_tokens_and_numbers_never_reach_the_logs(make_app, load_contacts):
    load_contacts("id;name;phone\n1;Ann;+41 21 552 20 00\n")
    app = make_app()
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_lookup_service", False))
    old = handler.setStream(stream)
    try:
        logging.getLogger("tests").warning("lookup of 41215522000 with %s", TOKEN)
        client = app.test_client()
        client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS)
        client.post("/CallFlow", json={"inputs": {"contactCrmId": "directory:1", "direction": "incoming",
                                                  "originatorNumber": "41215522000", "startedTime": "1700000000"}},
                    headers=HEADERS)
    finally:
        handler.setStream(old)
    text = stream.getvalue()
    assert "********000" in text
    assert "41215522000" not in text and "215522000" not in text
    assert TOKEN not in text


def test_access_log_masks_numbers_in_the_path():
    from config.gunicorn_logging import MaskingLogger
    from lookup_service.logs import mask_numbers

    assert mask_numbers("GET /Lookup/41215522000 HTTP/1.1") == "GET /Lookup/********000 HTTP/1.1"
    assert MaskingLogger.atoms  # the gunicorn hook exists
    assert json.dumps  # keep json imported for readability of other tests
