"""POST /MessageLog (SMS digests per contact, conversation and day; voicemail and fax records) and
later posts of a call updating its record, on the embedded directory and through every ledger."""

import threading

import pytest

from crm_backends.contact_store import ContactStore
from lookup_service.ledger import DONE
from tests.conftest import HEADERS


def sms(number: int, day: str = "2026-11-21", **fields):
    inputs = {
        "contactCrmId": "directory:alexa",
        "type": "SMS",
        "direction": "incoming" if number % 2 else "outgoing",
        "fromNumber": "+41215522000" if number % 2 else "+41445001020",
        "fromName": "Alexa Holiday" if number % 2 else "Support",
        "toNumber": "+41445001020" if number % 2 else "+41215522000",
        "toName": "Support" if number % 2 else "Alexa Holiday",
        "text": f"message number {number}",
        "time": f"{day}T09:{number:02d}:00Z",
        "messageId": f"m-{day}-{number}",
    }
    inputs.update(fields)
    return {"inputs": inputs}


def stored(directory_path, kind="messages"):
    store = ContactStore(directory_path)
    try:
        return store.messages() if kind == "messages" else store.calls()
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "redis"])
def ledger_client(request, make_app, load_contacts, tmp_path, redis_url):
    from tests.conftest import DEMO_CSV

    load_contacts(DEMO_CSV)
    if request.param == "redis":
        import redis

        redis.Redis.from_url(redis_url).flushall()
        return make_app(REDIS_URL=redis_url, LOOKUP_TIMEZONE="Europe/Zurich").test_client()
    return make_app(LOOKUP_TIMEZONE="Europe/Zurich").test_client()


def test_ten_sms_of_a_day_make_one_digest_of_ten_lines(ledger_client, directory_path):
    ids = set()
    for number in range(1, 11):
        response = ledger_client.post("/MessageLog", json=sms(number), headers=HEADERS)
        assert response.status_code == 200, response.get_json()
        ids.add(response.get_json()["id"])
    assert len(ids) == 1
    [record] = stored(directory_path)
    assert record["id"] == ids.pop() and record["contact_id"] == "alexa" and record["type"] == "SMS"
    assert record["title"] == "SMS conversation with Alexa Holiday \u2013 2026-11-21"
    lines = [line for line in record["body"].splitlines() if line.startswith(("10:", "09:"))]
    assert len(lines) == 10 and record["message_count"] == 10
    # the tenant's zone (Europe/Zurich, UTC+1 in November), in time order, one line per message
    assert lines[0] == "10:01 \u2190 Alexa Holiday: message number 1"
    assert lines[1] == "10:02 \u2192 Alexa Holiday: message number 2"
    assert "Participants: Alexa Holiday (+41215522000), Support (+41445001020)" in record["body"]


def test_a_second_day_makes_a_second_record_and_a_repeat_appears_once(ledger_client, directory_path):
    first = ledger_client.post("/MessageLog", json=sms(1), headers=HEADERS).get_json()
    again = ledger_client.post("/MessageLog", json=sms(1), headers=HEADERS)
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    other_day = ledger_client.post("/MessageLog", json=sms(1, day="2026-11-22"), headers=HEADERS).get_json()
    assert other_day["id"] != first["id"]
    records = {r["day"]: r for r in stored(directory_path)}
    assert set(records) == {"2026-11-21", "2026-11-22"}
    assert records["2026-11-21"]["message_count"] == 1
    assert records["2026-11-21"]["body"].count("message number 1") == 1


def test_the_day_is_the_tenants_day_not_utc(ledger_client, directory_path):
    # 23:30 UTC on the 21st is 00:30 on the 22nd in Zurich: the 22nd's digest
    ledger_client.post("/MessageLog", json=sms(1, time="2026-11-21T23:30:00Z"), headers=HEADERS)
    ledger_client.post("/MessageLog", json=sms(2, time="2026-11-22T08:00:00Z"), headers=HEADERS)
    [record] = stored(directory_path)
    assert record["day"] == "2026-11-22" and record["message_count"] == 2


def test_without_message_ids_the_same_message_is_still_added_once(ledger_client, directory_path):
    for _ in range(3):
        body = sms(3)
        del body["inputs"]["messageId"]
        assert ledger_client.post("/MessageLog", json=body, headers=HEADERS).status_code == 200
    [record] = stored(directory_path)
    assert record["message_count"] == 1


def test_conversations_are_separate_digests(ledger_client, directory_path):
    ledger_client.post("/MessageLog", json=sms(1, conversationId="c-1"), headers=HEADERS)
    ledger_client.post("/MessageLog", json=sms(2, conversationId="c-2"), headers=HEADERS)
    assert sorted(r["conversation_id"] for r in stored(directory_path)) == ["c-1", "c-2"]


def test_messages_posted_at_once_all_reach_the_digest(ledger_client, directory_path):
    # each post revises the digest with compare and set: none is lost to a concurrent one
    results, errors = [], []

    def post(number):
        response = ledger_client.post("/MessageLog", json=sms(number), headers=HEADERS)
        (results if response.status_code == 200 else errors).append(response.get_json())

    threads = [threading.Thread(target=post, args=(n,)) for n in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(results) == 12
    app = ledger_client.application
    outbox = app.extensions["lookup"].outbox
    for _ in range(200):  # deliveries that waited for another attempt finish in the background
        if all(i.state == DONE for i in outbox.ledger.listing(("pending", "done"), 50)):
            break
        outbox.deliver_due()
        threading.Event().wait(0.05)
    [record] = stored(directory_path)
    assert record["message_count"] == 12
    assert all(record["body"].count(f"message number {n}\n") + record["body"].endswith(f"message number {n}") == 1
               for n in range(1, 13))


def test_a_voicemail_is_one_record_holding_its_link(ledger_client, directory_path):
    body = {"inputs": {"contactCrmId": "directory:alexa", "type": "Voicemail", "direction": "incoming",
                       "fromNumber": "+41215522000", "fromName": "Alexa Holiday", "toNumber": "+41445001020",
                       "time": "2026-11-21T09:00:00Z", "recordingLink": "https://pbx.example/rec/77.mp3"}}
    first = ledger_client.post("/MessageLog", json=body, headers=HEADERS).get_json()
    assert ledger_client.post("/MessageLog", json=body, headers=HEADERS).get_json()["id"] == first["id"]
    second = dict(body["inputs"], time="2026-11-21T11:00:00Z", recordingLink="https://pbx.example/rec/78.mp3")
    assert ledger_client.post("/MessageLog", json={"inputs": second}, headers=HEADERS).get_json()["id"] != first["id"]
    records = stored(directory_path)
    assert [r["type"] for r in records] == ["Voicemail", "Voicemail"]
    assert records[0]["link"] == "https://pbx.example/rec/77.mp3"
    assert "https://pbx.example/rec/77.mp3" in records[0]["body"]
    assert records[0]["title"] == "Voicemail from Alexa Holiday \u2013 2026-11-21"


def test_a_fax_keeps_its_document(ledger_client, directory_path):
    body = {"inputs": {"contactCrmId": "directory:alexa", "type": "fax", "direction": "outgoing",
                       "toNumber": "+41215522000", "toName": "Alexa Holiday", "time": "2026-11-21T09:00:00Z",
                       "faxDocLink": "https://pbx.example/fax/9.pdf", "recordingLink": "https://ignored"}}
    assert ledger_client.post("/MessageLog", json=body, headers=HEADERS).status_code == 200
    [record] = stored(directory_path)
    assert record["type"] == "Fax" and record["link"] == "https://pbx.example/fax/9.pdf"
    assert record["title"] == "Fax to Alexa Holiday \u2013 2026-11-21"


@pytest.mark.parametrize("change, status, error, text", [
    ({"type": "MMS"}, 400, "invalid_input", "inputs.type"),
    ({"direction": "sideways"}, 400, "invalid_input", "inputs.direction"),
    ({"time": "yesterday"}, 400, "invalid_time", "inputs.time"),
    ({"contactCrmId": "directory:nobody"}, 404, "unknown_contact", "nobody"),
    ({"contactCrmId": "nowhere:1"}, 404, "unknown_contact", "nowhere:1"),  # the only backend that logs
    ({"text": "x" * 10001}, 400, "invalid_input", "inputs.text"),
])
def test_bad_messages_get_a_clear_error(client, change, status, error, text):
    response = client.post("/MessageLog", json=sms(1, **change), headers=HEADERS)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == error and text in body["message"]


def test_message_log_is_not_a_button_on_the_caller_card(client):
    [contact] = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()
    assert contact["crmActions"] == ["CallFlow"]


def test_message_log_needs_the_token(client):
    assert client.post("/MessageLog", json=sms(1)).status_code == 401


# --- a call posted again with more information ------------------------------------------------
def ringing(**fields):
    inputs = {"contactCrmId": "directory:alexa", "direction": "incoming", "originatorNumber": "41215522000",
              "originatorName": "Alexa Holiday", "destinationNumber": "41445001020",
              "startedTime": "2026-11-21T09:00:00Z"}
    inputs.update(fields)
    return {"inputs": inputs}


def test_a_call_posted_at_ring_and_at_hang_up_is_one_record_with_the_final_duration(ledger_client, directory_path):
    first = ledger_client.post("/CallFlow", json=ringing(), headers=HEADERS).get_json()
    [record] = stored(directory_path, "calls")
    assert record["status"] == "missed" and record["duration"] == 0
    final = ledger_client.post("/CallFlow", json=ringing(answeredTime="2026-11-21T09:00:05Z",
                                                         endedTime="2026-11-21T09:03:20Z"), headers=HEADERS)
    assert final.status_code == 200 and final.get_json()["id"] == first["id"]
    [record] = stored(directory_path, "calls")
    assert record["id"] == first["id"]
    assert (record["status"], record["duration"], record["ended"]) == ("answered", 195, "2026-11-21T09:03:20+00:00")


def test_a_note_added_later_updates_the_record_and_a_repeat_changes_nothing(ledger_client, directory_path):
    done = ringing(answeredTime="2026-11-21T09:00:05Z", endedTime="2026-11-21T09:01:05Z")
    first = ledger_client.post("/CallFlow", json=done, headers=HEADERS).get_json()
    noted = {"inputs": dict(done["inputs"], note="Wants a quote for 20 seats")}
    assert ledger_client.post("/CallFlow", json=noted, headers=HEADERS).get_json()["id"] == first["id"]
    [record] = stored(directory_path, "calls")
    assert record["note"] == "Wants a quote for 20 seats" and record["duration"] == 60
    created_at = record["created_at"]
    # the first post again (no note): adds nothing, so the note stays
    assert ledger_client.post("/CallFlow", json=done, headers=HEADERS).get_json()["id"] == first["id"]
    [record] = stored(directory_path, "calls")
    assert record["note"] == "Wants a quote for 20 seats" and record["created_at"] == created_at


def test_a_long_day_goes_on_in_further_records_and_a_repeat_stays_where_it_is(ledger_client, directory_path,
                                                                             monkeypatch):
    from lookup_service import workflows

    monkeypatch.setattr(workflows, "MAX_DIGEST_MESSAGES", 3)
    ids = [ledger_client.post("/MessageLog", json=sms(n), headers=HEADERS).get_json()["id"] for n in range(1, 8)]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5] != ids[6]
    assert ledger_client.post("/MessageLog", json=sms(2), headers=HEADERS).get_json()["id"] == ids[0]
    records = sorted(stored(directory_path), key=lambda r: r["created_at"])
    assert [r["message_count"] for r in records] == [3, 3, 1]
    assert records[0]["title"] == "SMS conversation with Alexa Holiday \u2013 2026-11-21"
    assert records[1]["title"].endswith(" (part 2)")
    assert records[2]["title"] == "SMS conversation with Alexa Holiday \u2013 2026-11-21 (part 3)"


def test_a_record_is_bounded_by_characters_too(ledger_client, directory_path, monkeypatch):
    from lookup_service import workflows

    monkeypatch.setattr(workflows, "MAX_DIGEST_SIZE", 2000)  # two messages of 1,000 characters fill it
    for n in range(1, 5):
        body = sms(n, text=f"message number {n} " + "x" * 1000)
        assert ledger_client.post("/MessageLog", json=body, headers=HEADERS).status_code == 200
    assert sorted(r["message_count"] for r in stored(directory_path)) == [2, 2]
