"""POST /CallFlow on the embedded directory: records, times, idempotency, routing, errors."""

import threading

import pytest

from crm_backends.contact_store import ContactStore
from tests.conftest import HEADERS


def call(contact="directory:alexa", **fields):
    inputs = {
        "contactCrmId": contact,
        "userCrmId": "u-7",
        "originatorNumber": "41215522000",
        "originatorName": "Alexa Holiday",
        "destinationNumber": "41445001020",
        "destinationName": "Support",
        "direction": "incoming",
        "startedTime": "2026-11-21T09:00:00Z",
        "answeredTime": "2026-11-21T09:00:05Z",
        "endedTime": "2026-11-21T09:03:20Z",
        "declinedTime": "",
    }
    inputs.update(fields)
    return {"inputs": inputs}


def stored_calls(directory_path):
    store = ContactStore(directory_path)
    try:
        return store.calls()
    finally:
        store.close()


def test_callflow_records_an_answered_incoming_call(client, directory_path):
    response = client.post("/CallFlow", json=call(), headers=HEADERS)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"].startswith("call-") and body["url"] == ""
    [record] = stored_calls(directory_path)
    assert record["id"] == body["id"]
    assert record["contact_id"] == "alexa"
    assert record["direction"] == "incoming"
    assert record["status"] == "answered"
    assert record["duration"] == 195
    assert record["originator_number"] == "41215522000" and record["destination_name"] == "Support"
    assert record["started"] == "2026-11-21T09:00:00+00:00"
    assert record["user_id"] == "u-7"


def test_missed_and_declined_and_outgoing(client, directory_path):
    client.post("/CallFlow", json=call(answeredTime="", startedTime="2026-11-21T10:00:00Z"), headers=HEADERS)
    client.post("/CallFlow", json=call(answeredTime="", declinedTime="2026-11-21T11:00:09Z",
                                       startedTime="2026-11-21T11:00:00Z"), headers=HEADERS)
    client.post("/CallFlow", json=call(direction="outgoing", startedTime="2026-11-21T12:00:00Z"), headers=HEADERS)
    records = stored_calls(directory_path)
    assert [(r["direction"], r["status"], r["duration"]) for r in records] == [
        ("incoming", "missed", 0), ("incoming", "declined", 0), ("outgoing", "answered", 195)]


@pytest.mark.parametrize(
    "started, expected",
    [
        ("2026-11-21T09:00:00Z", "2026-11-21T09:00:00+00:00"),
        ("2026-11-21T10:00:00+01:00", "2026-11-21T09:00:00+00:00"),
        ("2026-11-21 09:00:00", "2026-11-21T09:00:00+00:00"),
        ("1795251600", "2026-11-21T09:00:00+00:00"),
        (1795251600, "2026-11-21T09:00:00+00:00"),
        ("1795251600000", "2026-11-21T09:00:00+00:00"),
        (1795251600000, "2026-11-21T09:00:00+00:00"),
    ],
)
def test_time_formats(client, directory_path, started, expected):
    response = client.post("/CallFlow", json=call(startedTime=started), headers=HEADERS)
    assert response.status_code == 200, response.get_json()
    assert stored_calls(directory_path)[0]["started"] == expected


def test_naive_times_can_be_read_in_a_local_zone(make_app, load_contacts, directory_path):
    from tests.conftest import DEMO_CSV

    load_contacts(DEMO_CSV)
    client = make_app(LOOKUP_TIMEZONE="Europe/Zurich").test_client()
    client.post("/CallFlow", json=call(startedTime="2026-11-21 10:00:00"), headers=HEADERS)
    assert stored_calls(directory_path)[0]["started"] == "2026-11-21T09:00:00+00:00"


@pytest.mark.parametrize("field", ["startedTime", "answeredTime", "endedTime", "declinedTime"])
def test_unparseable_time_is_400_naming_the_field(client, field):
    response = client.post("/CallFlow", json=call(**{field: "yesterday at noon"}), headers=HEADERS)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_time" and f"inputs.{field}" in body["message"]


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"inputs": {"direction": "incoming"}}, "contactCrmId"),
        (call(direction="sideways"), "direction"),
        ({"inputs": "x"}, "inputs"),
        ({}, "inputs"),
    ],
)
def test_bad_workflow_input_is_400(client, payload, fragment):
    response = client.post("/CallFlow", json=payload, headers=HEADERS)
    assert response.status_code == 400
    assert fragment in response.get_json()["message"]


@pytest.mark.parametrize("contact", ["directory:ghost", "ghost"])
def test_unknown_contact_is_404(client, contact):
    # with a single backend an id without the backend prefix is routed to it
    response = client.post("/CallFlow", json=call(contact=contact), headers=HEADERS)
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_contact"


def test_the_same_call_twice_is_recorded_once(client, directory_path):
    first = client.post("/CallFlow", json=call(), headers=HEADERS).get_json()
    # the automatic CallFlow after a click during the call: same start, the end now known
    second = client.post("/CallFlow", json=call(endedTime="2026-11-21T09:04:00Z"), headers=HEADERS).get_json()
    assert first == second
    assert len(stored_calls(directory_path)) == 1


def test_concurrent_posts_of_one_call_create_one_record(client, directory_path, make_app):
    clients = [make_app().test_client() for _ in range(4)]  # separate apps: like separate workers
    results, barrier = [], threading.Barrier(8)

    def post(c):
        barrier.wait(5)
        results.append(c.post("/CallFlow", json=call(), headers=HEADERS).get_json())

    threads = [threading.Thread(target=post, args=(clients[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 8 and len({r["id"] for r in results}) == 1
    assert len(stored_calls(directory_path)) == 1


def test_call_url_template(make_app, load_contacts):
    from tests.conftest import DEMO_CSV

    load_contacts(DEMO_CSV)
    client = make_app(LOOKUP_CALL_URL_TEMPLATE="https://pbx.example/calls/{id}?contact={contact_id}").test_client()
    body = client.post("/CallFlow", json=call(), headers=HEADERS).get_json()
    assert body["url"] == f"https://pbx.example/calls/{body['id']}?contact=alexa"


def test_a_call_moves_the_contact_up_by_recent_activity(make_app, load_contacts):
    load_contacts("id;name;phone\na;Anna;+41 21 552 20 00\nb;Berta;+41 21 552 20 00\n")
    client = make_app().test_client()
    names = lambda: [c["name"] for c in client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()]  # noqa: E731
    assert names() == ["Anna", "Berta"]
    client.post("/CallFlow", json=call(contact="directory:b"), headers=HEADERS)
    assert names() == ["Berta", "Anna"]  # the workflow's change is visible at the next lookup


def test_a_call_whose_first_attempt_died_is_recorded_at_once_not_409(make_app, load_contacts, directory_path, tmp_path):
    """A worker killed during its attempt leaves a claim; the next post takes it over at once."""
    import multiprocessing
    import os
    import signal

    from crm_backends.directory_import import import_file
    from lookup_service.ledger import SqlLedger
    from tests.conftest import DEMO_CSV, write_csv
    from tests.test_outbox import _hold_claim

    load_contacts(DEMO_CSV)
    # the call's key and stored form, as a first post would have written them (on a separate service)
    probe_directory = tmp_path / "probe-directory.sqlite3"
    store = ContactStore(str(probe_directory), "CH")
    import_file(store, write_csv(tmp_path / "probe.csv", DEMO_CSV))
    store.close()
    probe = make_app(LOOKUP_STATE_DB=str(tmp_path / "probe.sqlite3"), LOOKUP_DIRECTORY=str(probe_directory))
    probe.test_client().post("/CallFlow", json=call(), headers=HEADERS)
    [item] = probe.extensions["lookup"].ledger.listing(("done",), 5)
    state = tmp_path / "state.sqlite3"
    ledger = SqlLedger.sqlite(str(state))
    ledger.put(item.key, item.tenant, item.backend, item.workflow, item.payload, item.created_at)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    worker = context.Process(target=_hold_claim, args=("sqlite:///" + str(state), item.key, ready, 60))
    worker.start()
    try:
        assert ready.wait(30)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        assert ledger.get(item.key).owner  # the dead worker's claim, its lease still running
        response = make_app().test_client().post("/CallFlow", json=call(), headers=HEADERS)
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join(10)
    assert response.status_code == 200 and response.get_json()["id"].startswith("call-")
    assert len(stored_calls(directory_path)) == 1
    ledger.close()
