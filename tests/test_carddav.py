"""The CardDAV backend against a real Radicale server (and a tiny HTTP server for broken answers)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crm_backends import carddav
from crm_backends.base import load_options
from crm_backends.carddav import CardDAVBackend, search_terms
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendConfigError, BackendUnavailable, CredentialsRejected, RateLimited
from lookup_core.phone import parse_number
from tests.conftest import backend_builder
from tests.servers import free_port
from tests.servers.radicale import RadicaleServer

DATA = Path(__file__).parent / "data"
USER, PASSWORD = "alice", "alice-secret"
RADICALE_TOKEN = "http://radicale.org/ns/sync/"

# resource names of the cards of tests/data/nextcloud-export.vcf, as Nextcloud names them (<UID>.vcf)
ANNA = "0b6f1a8e-3c1d-4a52-9d1e-5a2f8c7b9e01.vcf"
BERNARD = "6d2c4b1a-8f7e-4c3d-b2a1-0e9f8d7c6b02.vcf"
CHIARA = "a3e5c7d9-1b2f-4e6a-8c0d-2f4e6a8c0d03.vcf"
DAVID = "c9d8e7f6-a5b4-4c3d-9e2f-1a0b9c8d7e04.vcf"
ELENA = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a05.vcf"  # no TEL: never in the mirror
HANS = "F2B6C0E4-7A1D-4C55-9B3E-2D8F6A4C1E06.vcf"
FRIEDA, HELEN, BAKERY = "frieda-huber.vcf", "helen-brooks.vcf", "baeckerei.vcf"
RECEPTION, SWITCHBOARD = "empfang.vcf", "zentrale.vcf"

EXTRA_CARDS = {
    RECEPTION: (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:empfang\r\nFN:Empfang\r\nTEL;TYPE=work:201\r\nEND:VCARD\r\n"
    ),
    SWITCHBOARD: (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:zentrale\r\nFN:Zentrale\r\n"
        "TEL;TYPE=work:+41215520201\r\nEND:VCARD\r\n"
    ),
}


def split_cards(text: str) -> list[str]:
    return [card + "END:VCARD\r\n" for card in re.split(r"END:VCARD\r?\n", text) if card.strip()]


def library_cards() -> dict[str, str]:
    nextcloud = split_cards((DATA / "nextcloud-export.vcf").read_bytes().decode())
    v4 = split_cards((DATA / "contacts-v4.vcf").read_bytes().decode())
    cards = dict(zip([ANNA, BERNARD, CHIARA, DAVID, ELENA, HANS], nextcloud, strict=True))
    cards.update(zip([FRIEDA, HELEN, BAKERY], v4, strict=True))
    cards.update(EXTRA_CARDS)
    return cards


def make_backend(url: str, tmp_path: Path, name: str = "nc", **extra) -> CardDAVBackend:
    defaults = {"url": url, "username": USER, "password": PASSWORD}
    return backend_builder(tmp_path)("carddav", name=name, **{**defaults, **extra})


def lookup(backend, digits: str, limit: int = 5) -> list[tuple[str, str | None, bool]]:
    return [(c.id, c.name, c.exact) for c in backend.lookup(parse_number(digits), limit)]


@pytest.fixture(scope="module")
def radicale(tmp_path_factory) -> Iterator[RadicaleServer]:
    with RadicaleServer(tmp_path_factory.mktemp("radicale"), {USER: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def library(radicale: RadicaleServer) -> str:
    """An address book holding the Nextcloud 3.0 export, the 4.0 cards and two short-number cards."""
    url = radicale.create_addressbook("library")
    for resource, card in library_cards().items():
        radicale.put_card(url, resource, card)
    return url


# options -------------------------------------------------------------------------------------------
def test_options_are_validated_with_the_key_named(tmp_path):
    base = {"name": "nc", "type": "carddav", "url": "https://cloud.example.com/remote.php/dav/x/"}
    options = load_options(CardDAVBackend, base, "w")
    assert options["mode"] == "mirror"
    assert options["verify_tls"] is True
    cases = {
        "url": {"url": "ftp://cloud.example.com/"},
        "password": {"username": "alice"},
        "username": {"password": "secret"},
        "contact_uri_template": {"contact_uri_template": "https://x/{uuid}"},
        "sync_timeout": {"sync_timeout": 0},
    }
    for key, change in cases.items():
        with pytest.raises(BackendConfigError) as caught:
            load_options(CardDAVBackend, {**base, **change}, "w")
        assert caught.value.key == key, key
    with pytest.raises(BackendConfigError) as caught:
        load_options(CardDAVBackend, {**base, "url": "https://alice:pw@cloud.example.com/dav/"}, "w")
    assert caught.value.key == "url" and "credentials" in str(caught.value)
    with pytest.raises(BackendConfigError) as caught:
        load_options(CardDAVBackend, {"name": "nc", "type": "carddav"}, "w")
    assert caught.value.key == "url"
    backend = make_backend("https://cloud.example.com/remote.php/dav/addressbooks/users/a/contacts", tmp_path)
    assert backend.describe()["password"] == "***"
    assert backend.url.endswith("/contacts/")


def test_search_terms_are_the_subscriber_part_in_common_spellings():
    assert search_terms(parse_number("41215522000")) == [
        "5522000",
        "552 20 00",
        "552-20-00",
        "552.20.00",
        "552 2000",
        "552-2000",
        "552.2000",
    ]
    assert search_terms(parse_number("12125550142")) == ["5550142", "555 0142", "555-0142", "555.0142"]
    assert search_terms(parse_number("201")) == ["201"]


# check ---------------------------------------------------------------------------------------------
def test_check(radicale, library, tmp_path):
    make_backend(library, tmp_path).check()
    with pytest.raises(BackendConfigError) as caught:
        make_backend(f"{radicale.base_url}/{USER}/no-such-book/", tmp_path).check()
    assert caught.value.key == "url" and "404" in str(caught.value)
    with pytest.raises(BackendConfigError) as caught:  # the principal collection is no address book
        make_backend(f"{radicale.base_url}/{USER}/", tmp_path).check()
    assert caught.value.key == "url" and "not a CardDAV address book" in str(caught.value)
    with pytest.raises(CredentialsRejected):
        make_backend(library, tmp_path, password="wrong").check()


# mirror --------------------------------------------------------------------------------------------
def test_mirror_full_sync(library, tmp_path):
    template = "https://cloud.example.com/apps/contacts/direct/{uid}~contacts?card={id}"
    mirror = MirroredBackend(make_backend(library, tmp_path, contact_uri_template=template))
    outcome = mirror.sync_now()
    assert (outcome.ok, outcome.incremental, outcome.written, outcome.deleted) == (True, False, 10, 0)
    assert mirror.store.contact_ids() == {
        ANNA, BERNARD, CHIARA, DAVID, HANS, FRIEDA, HELEN, BAKERY, RECEPTION, SWITCHBOARD
    }  # fmt: skip
    assert mirror.store.get_meta("cursor").startswith(RADICALE_TOKEN)
    # the same line written three ways; the Geneva number with the same subscriber part is not it
    assert lookup(mirror, "41215522000") == [
        (ANNA, "Anna Müller", True),
        (BERNARD, "Bernard Favre", True),
        (CHIARA, "Chiara Rossi", True),
    ]
    anna = mirror.lookup(parse_number("0215522000"), 5)[0]
    assert (anna.company, anna.email, anna.custom_data) == (
        "Muster Treuhand AG",
        "anna.mueller@muster-treuhand.example",
        {"title": "Leiterin Buchhaltung"},
    )
    assert anna.contact_uri == (
        "https://cloud.example.com/apps/contacts/direct/0b6f1a8e-3c1d-4a52-9d1e-5a2f8c7b9e01~contacts"
        f"?card={ANNA}"
    )
    assert lookup(mirror, "41313104040") == [(FRIEDA, "Frieda Huber", False)]  # stored with ext=123
    assert lookup(mirror, "41795551234") == [(FRIEDA, "Frieda Huber", True)]
    assert lookup(mirror, "12125550142") == [(HELEN, "Helen Brooks", True)]
    assert lookup(mirror, "41446681809") == [(HANS, "Meier, Hans", True)]
    assert lookup(mirror, "201") == [(RECEPTION, "Empfang", True)]
    assert lookup(mirror, "41215520201") == [(SWITCHBOARD, "Zentrale", True)]
    mirror.close()


def test_mirror_incremental_sync_with_sync_token(radicale, tmp_path):
    url = radicale.create_addressbook("incremental")
    cards = library_cards()
    for resource in (ANNA, BERNARD, CHIARA, DAVID, ELENA):
        radicale.put_card(url, resource, cards[resource])
    backend = make_backend(url, tmp_path)
    mirror = MirroredBackend(backend)
    first = mirror.sync_now()
    assert (first.ok, first.incremental, first.written) == (True, False, 4)
    cursor = mirror.store.get_meta("cursor")

    radicale.put_card(
        url,
        "nina.vcf",
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:nina\r\nFN:Nina Graf\r\nORG:Graf AG\r\n"
        "TEL;TYPE=CELL:+41 21 552 20 99\r\nEND:VCARD\r\n",
    )
    radicale.put_card(url, BERNARD, cards[BERNARD].replace("+41 21 552 20 00", "021 552 20 10"))
    radicale.put_card(url, ANNA, re.sub(r"TEL;[^\r\n]*\r?\n", "", cards[ANNA]))  # no number any more
    radicale.delete(url + CHIARA)

    batches = list(backend.sync(cursor))
    assert sorted(c.id for b in batches for c in b.contacts) == [BERNARD, "nina.vcf"]
    assert sorted(d for b in batches for d in b.deleted_ids) == [ANNA, CHIARA]
    assert batches[-1].cursor.startswith(RADICALE_TOKEN) and batches[-1].cursor != cursor
    assert not any(b.complete for b in batches)

    second = mirror.sync_now()
    assert (second.ok, second.incremental, second.written, second.deleted) == (True, True, 2, 2)
    assert lookup(mirror, "41215522000") == []
    assert lookup(mirror, "41215522010") == [(BERNARD, "Bernard Favre", True)]
    assert lookup(mirror, "41215522099") == [("nina.vcf", "Nina Graf", True)]
    assert lookup(mirror, "41225522000") == [(DAVID, "David Keller", True)]
    assert mirror.store.contact_ids() == {BERNARD, DAVID, "nina.vcf"}

    third = mirror.sync_now()
    assert (third.ok, third.incremental, third.written, third.deleted) == (True, True, 0, 0)
    mirror.close()


def test_expired_sync_token_falls_back_to_a_full_listing(radicale, tmp_path):
    url = radicale.create_addressbook("expired")
    cards = library_cards()
    for resource in (ANNA, BERNARD, DAVID):
        radicale.put_card(url, resource, cards[resource])
    mirror = MirroredBackend(make_backend(url, tmp_path))
    assert mirror.sync_now().written == 3
    radicale.delete(url + DAVID)
    mirror.store.set_meta("cursor", RADICALE_TOKEN + "f" * 64)  # a token the server never issued
    outcome = mirror.sync_now()
    assert (outcome.ok, outcome.incremental, outcome.written, outcome.deleted) == (True, False, 2, 1)
    assert mirror.store.contact_ids() == {ANNA, BERNARD}
    assert mirror.store.get_meta("cursor").startswith(RADICALE_TOKEN)
    mirror.close()


def test_full_listing_without_sync_collection(library, tmp_path, monkeypatch):
    monkeypatch.setattr(carddav, "MULTIGET_BATCH", 3)
    backend = make_backend(library, tmp_path)
    backend._sync_supported = False  # as after a server refused sync-collection
    batches = list(backend.sync(None))
    assert len(batches) == 5  # 12 cards in 4 multigets of 3, then the closing batch
    assert [b.complete for b in batches] == [False, False, False, False, True]
    assert batches[-1].cursor is None
    assert sorted(c.id for b in batches for c in b.contacts) == sorted(
        [ANNA, BERNARD, CHIARA, DAVID, HANS, FRIEDA, HELEN, BAKERY, RECEPTION, SWITCHBOARD]
    )
    assert [d for b in batches for d in b.deleted_ids] == [ELENA]  # no number: kept out of the mirror


# live ----------------------------------------------------------------------------------------------
def test_live_lookup_matches_every_spelling_and_rechecks(library, tmp_path):
    backend = make_backend(library, tmp_path, mode="live", contact_uri_template="https://c.example/{id}")
    assert lookup(backend, "41215522000") == [
        (ANNA, "Anna Müller", True),
        (BERNARD, "Bernard Favre", True),
        (CHIARA, "Chiara Rossi", True),
    ]  # David Keller (+41 22 552 20 00) contains "552 20 00" too: dropped by the re-check
    assert len(backend.lookup(parse_number("0215522000"), 2)) == 2
    anna = backend.lookup(parse_number("+41 79 123 45 67"), 5)[0]
    assert (anna.id, anna.company, anna.email, anna.contact_uri) == (
        ANNA,
        "Muster Treuhand AG",
        "anna.mueller@muster-treuhand.example",
        f"https://c.example/{ANNA}",
    )
    assert anna.phones == ["(021) 552 20 00", "+41 79 123 45 67"]
    assert lookup(backend, "41313104040") == [(FRIEDA, "Frieda Huber", False)]
    assert lookup(backend, "12125550142") == [(HELEN, "Helen Brooks", True)]
    assert lookup(backend, "41612611010") == [(BAKERY, "Bäckerei Sonnenschein", True)]
    assert lookup(backend, "41446681800") == [(HANS, "Meier, Hans", True)]
    assert lookup(backend, "201") == [(RECEPTION, "Empfang", True)]  # never the long number ending 201
    assert lookup(backend, "41319999999") == []
    backend.close()


# failures ------------------------------------------------------------------------------------------
def test_wrong_password(library, tmp_path):
    backend = make_backend(library, tmp_path, password="wrong")
    with pytest.raises(CredentialsRejected, match="401"):
        backend.lookup(parse_number("41215522000"), 5)
    with pytest.raises(CredentialsRejected):
        list(backend.sync(None))
    mirror = MirroredBackend(backend)
    outcome = mirror.sync_now()
    assert not outcome.ok and "401" in outcome.error
    assert mirror.store.get_meta("cursor") is None
    mirror.close()


def test_server_down_keeps_the_mirror_answering(tmp_path):
    cards = library_cards()
    with RadicaleServer(tmp_path / "radicale", {USER: PASSWORD}) as server:
        url = server.create_addressbook("contacts")
        server.put_card(url, ANNA, cards[ANNA])
        mirror = MirroredBackend(make_backend(url, tmp_path))
        assert mirror.sync_now().written == 1
    # the server is stopped now
    with pytest.raises(BackendUnavailable):
        make_backend(url, tmp_path, mode="live").lookup(parse_number("41215522000"), 5)
    with pytest.raises(BackendUnavailable):
        make_backend(url, tmp_path).check()
    outcome = mirror.sync_now()
    assert not outcome.ok and outcome.error
    assert lookup(mirror, "41215522000") == [(ANNA, "Anna Müller", True)]
    mirror.close()
    nobody = f"http://127.0.0.1:{free_port()}/dav/contacts/"
    with pytest.raises(BackendUnavailable):
        list(make_backend(nobody, tmp_path).sync(None))


class FakeDav:
    """A real HTTP server on 127.0.0.1 whose answers a test chooses; it records every request."""

    def __init__(self, answer: Callable[[str, str], tuple[int, dict[str, str], bytes]]):
        self.answer = answer
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                fake.requests.append((self.command, body, dict(self.headers)))
                status, headers, content = fake.answer(self.command, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_PROPFIND = do_REPORT = do_GET = handle_any  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dav/book/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_dav() -> Iterator[Callable[..., FakeDav]]:
    servers: list[FakeDav] = []

    def start(answer):
        servers.append(FakeDav(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


MULTISTATUS = '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">{}'
MULTISTATUS += "</D:multistatus>"


def test_live_query_body(fake_dav, tmp_path):
    card = "BEGIN:VCARD\nVERSION:3.0\nUID:u1\nFN:Urs &amp; Co\nTEL:+1 212 555 0142\nEND:VCARD\n"
    response = (
        '<D:response><D:href>/dav/book/u1.vcf</D:href><D:propstat><D:prop><D:getetag>"1"</D:getetag>'
        f"<C:address-data>{card}</C:address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status>"
        "</D:propstat></D:response>"
    )
    server = fake_dav(
        lambda method, body: (207, {"Content-Type": "application/xml"}, MULTISTATUS.format(response).encode())
    )
    backend = make_backend(server.url, tmp_path, mode="live")
    assert lookup(backend, "12125550142") == [("u1.vcf", "Urs & Co", True)]
    ((method, body, headers),) = server.requests
    assert (method, headers["Depth"], headers["Authorization"].startswith("Basic ")) == ("REPORT", "1", True)
    props = "".join(
        f'<C:prop name="{name}"/>'
        for name in ("VERSION", "UID", "FN", "N", "NICKNAME", "ORG", "TITLE", "TEL", "EMAIL", "X-ABLABEL")
    )
    filters = "".join(
        '<C:prop-filter name="TEL"><C:text-match collation="i;unicode-casemap" match-type="contains">'
        f"{term}</C:text-match></C:prop-filter>"
        for term in ("5550142", "555 0142", "555-0142", "555.0142")
    )
    assert body == (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
        f"<D:prop><D:getetag/><C:address-data>{props}</C:address-data></D:prop>"
        f'<C:filter test="anyof">{filters}</C:filter></C:addressbook-query>'
    )


@pytest.mark.parametrize(
    ("status", "headers", "content", "error", "text"),
    [
        (500, {}, b"Internal Server Error", BackendUnavailable, "HTTP 500"),
        (200, {"Content-Type": "text/html"}, b"<html><body>Login</body></html>", BackendUnavailable, "200"),
        (207, {"Content-Type": "application/xml"}, b"this is no XML <", BackendUnavailable, "not XML"),
        (207, {}, b"<html><body>hello</body></html>", BackendUnavailable, "not a DAV multistatus"),
        (403, {}, b"Forbidden", CredentialsRejected, "403"),
        (429, {"Retry-After": "7"}, b"slow down", RateLimited, "429"),
    ],
)
def test_broken_answers(fake_dav, tmp_path, status, headers, content, error, text):
    server = fake_dav(lambda method, body: (status, headers, content))
    backend = make_backend(server.url, tmp_path, mode="live")
    with pytest.raises(error, match=text) as caught:
        backend.lookup(parse_number("41215522000"), 5)
    if error is RateLimited:
        assert caught.value.retry_after == 7.0
    with pytest.raises(error):
        list(backend.sync(None))


def test_check_on_a_web_page_names_the_url(fake_dav, tmp_path):
    server = fake_dav(lambda method, body: (200, {"Content-Type": "text/html"}, b"<html>Contacts</html>"))
    with pytest.raises(BackendConfigError) as caught:
        make_backend(server.url, tmp_path).check()
    assert caught.value.key == "url" and "not a WebDAV collection" in str(caught.value)
    assert [method for method, _, _ in server.requests] == ["PROPFIND"]


def test_timeout(fake_dav, tmp_path):
    def slow(method, body):
        time.sleep(1.0)
        return 207, {}, MULTISTATUS.format("").encode()

    server = fake_dav(slow)
    backend = make_backend(server.url, tmp_path, mode="live", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer within 0.2s"):
        backend.lookup(parse_number("41215522000"), 5)
    assert time.monotonic() - started < 0.9


def test_server_without_sync_collection(fake_dav, tmp_path):
    """403 supported-report on sync-collection: PROPFIND listing, then addressbook-multiget."""
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u1\r\nFN:Paula Keel\r\nTEL:031 300 00 00\r\nEND:VCARD\r\n"

    def answer(method, body):
        if method == "REPORT" and "sync-collection" in body:
            return 403, {}, b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>'
        if method == "PROPFIND":
            members = (
                "<D:response><D:href>/dav/book/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/>"
                "</D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
                "<D:response><D:href>/dav/book/u%201.vcf</D:href><D:propstat><D:prop><D:resourcetype/>"
                '<D:getetag>"e1"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>'
                "</D:response>"
            )
            return 207, {}, MULTISTATUS.format(members).encode()
        got = (
            "<D:response><D:href>http://127.0.0.1/dav/book/u%201.vcf</D:href><D:propstat><D:prop>"
            f"<C:address-data>{card}</C:address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status>"
            "</D:propstat></D:response>"
        )
        return 207, {}, MULTISTATUS.format(got).encode()

    server = fake_dav(answer)
    backend = make_backend(server.url, tmp_path)
    batches = list(backend.sync("an-old-token"))
    assert [(c.id, c.name) for b in batches for c in b.contacts] == [("u 1.vcf", "Paula Keel")]
    assert (batches[-1].complete, batches[-1].cursor) == (True, None)
    methods = [(method, "sync-collection" in body) for method, body, _ in server.requests]
    assert methods == [("REPORT", True), ("REPORT", True), ("PROPFIND", False), ("REPORT", False)]
    assert "<D:href>/dav/book/u%201.vcf</D:href>" in server.requests[-1][1]
    server.requests.clear()
    list(backend.sync(None))  # the backend remembers: no more sync-collection attempts
    assert [method for method, _, _ in server.requests] == ["PROPFIND", "REPORT"]


def test_live_search_by_name_or_company(library, tmp_path):
    backend = make_backend(library, tmp_path, mode="live")
    assert [c.id for c in backend.search("anna m", 20)] == [ANNA]  # FN contains it, any case
    assert [c.id for c in backend.search("MÜLLER", 20)] == [ANNA]
    assert [c.id for c in backend.search("treuhand", 20)] == [ANNA]  # ORG
    assert [c.name for c in backend.search("e", 3)] == sorted([c.name for c in backend.search("e", 50)],
                                                               key=str.casefold)[:3]
    assert backend.search("nobody here", 20) == [] and backend.search(" ", 20) == []
    backend.close()


def test_tel_types_and_title_reach_the_mirror_and_a_live_search(library, tmp_path):
    mirror = MirroredBackend(make_backend(library, tmp_path))
    assert mirror.sync_now().ok
    frieda = mirror.store.get(FRIEDA)  # TEL;TYPE="work,voice" (a tel: URI with ext=123) and TYPE=cell
    assert sorted(frieda.phone_types.values()) == ["business", "mobile"]
    assert mirror.store.get(SWITCHBOARD).phone_types == {"+41215520201": "business"}
    assert mirror.store.get(ANNA).job_title == "Leiterin Buchhaltung"
    mirror.close()
    [live] = make_backend(library, tmp_path / "live").search("Frieda", 5)
    assert live.phone_types == frieda.phone_types and live.job_title == frieda.job_title
