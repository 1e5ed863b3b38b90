"""The contacts API for softphones and web apps, in RingCentral Embeddable's third-party contacts
shape: ``GET /contacts`` (a paged listing with incremental sync), ``GET /contacts/search``,
``POST /contacts/match`` and ``POST /contacts/view``; with CORS for the tenant's ``allowed_origins``.

Same token as ``/Lookup``; a tenant sees only its own contacts. Listings and searches come from the
local stores (the directory and the mirrors' copies); a live-only backend cannot be listed (the
``X-Contacts-Unlisted`` header names it) and is searched only when its class can search by name.
Matching asks the local stores once per store for all numbers, and live backends through the
lookup engine (its cache, deadline and breakers).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Blueprint, Flask, Response, g, request

from config.settings import TenantConfig
from crm_backends.base import Backend
from lookup_core.phone import InvalidPhoneNumber, PhoneNumber, extract_numbers, parse_number
from lookup_core.phone_types import PHONE_TYPES
from lookup_core.types import Contact
from lookup_service import keys
from lookup_service.cors import CorsPolicy
from lookup_service.errors import ApiError
from lookup_service.routes import json_response
from lookup_service.schemas import find_key
from lookup_service.service import Service
from lookup_service.tenants import BackendSlot, Tenant

log = logging.getLogger(__name__)
# A contact deleted during a listing keeps its place in the listing this long (so later pages do
# not shift), and a listing's start is remembered this long (its syncTimestamp).
HOLD_S = 600.0
MAX_MATCH_NUMBERS = 100
MAX_SEARCH_CHARS = 100
MAX_SEARCH_LIMIT = 100
MAX_PAGE = 1_000_000
_METHODS = "GET, POST, OPTIONS"
_JOB_TITLE_KEYS = ("jobtitle", "job title", "title", "position", "function")
_IMAGE_KEYS = ("profileimageurl", "photo", "avatar", "picture", "photo url", "image")


def _store_of(backend: Backend) -> Any | None:
    """The backend's local store when it can list (the directory, a mirror's copy), else None."""
    store = getattr(backend, "store", None)
    return store if store is not None and hasattr(store, "listing") else None


_EXPOSED = "X-Contacts-Unlisted, X-Contacts-Full-Listing, X-Contacts-Incomplete"


def register_contacts_api(app: Flask, service: Service) -> None:
    bp = Blueprint("contacts", __name__)
    header = service.settings.token_header
    tokens = service.tokens
    configs: dict[str, TenantConfig] = {config.name: config for config in service.settings.tenants}
    cors = CorsPolicy(configs.values(), header)
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="contacts")

    def authenticate() -> tuple[Tenant, TenantConfig]:
        tenant = tokens.require(request.headers)
        g.contacts_tenant = tenant.name
        return tenant, configs[tenant.name]

    @bp.after_request
    def readable_by_origin(response: Response) -> Response:
        return cors.answer(response, request.headers.get("Origin"), g.get("contacts_tenant"), _EXPOSED)

    def preflight() -> Response:
        return cors.preflight(request.headers.get("Origin"), _METHODS)

    @bp.route("/contacts", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    def contacts() -> Response:
        if request.method == "OPTIONS":
            return preflight()
        tenant, config = authenticate()
        page = _int_arg("page", 1, 1, MAX_PAGE)
        raw_since = request.args.get("syncTimestamp", "").strip()
        since = None
        if raw_since not in ("", "null", "undefined"):
            since_ms = _int_value(raw_since, "syncTimestamp", 0, 10**15)
            since = since_ms / 1000.0
        stores = [(slot, store) for slot in tenant.slots if (store := _store_of(slot.backend)) is not None]
        headers: dict[str, str] = {}
        unlisted = [slot.name for slot in tenant.slots if _store_of(slot.backend) is None]
        if unlisted:
            headers["X-Contacts-Unlisted"] = ", ".join(unlisted)
        if since is not None and stores and since < max(store.complete_since() for _, store in stores):
            headers["X-Contacts-Full-Listing"] = "syncTimestamp is older than the deletions this service keeps"
            since = None
        now = time.time()
        started = _listing_start(service, tenant, raw_since, page, now)
        size = config.page_size
        items, total = _page(stores, since, (page - 1) * size, size, now - HOLD_S, config, tenant.region)
        next_page = page + 1 if page * size < total else None
        return json_response({"data": items, "nextPage": next_page, "syncTimestamp": int(started * 1000)},
                             headers=headers)

    @bp.route("/contacts/search", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    def search() -> Response:
        if request.method == "OPTIONS":
            return preflight()
        tenant, config = authenticate()
        text = request.args.get("searchString", "")
        if len(text) > MAX_SEARCH_CHARS:
            raise ApiError(400, "invalid_input", f"searchString: longer than {MAX_SEARCH_CHARS} characters")
        limit = _int_arg("limit", 20, 1, MAX_SEARCH_LIMIT)
        words, digits = search_terms(text)
        if not words and not digits:
            return json_response({"data": []})
        found: list[tuple[BackendSlot, Contact]] = []
        for slot in tenant.slots:
            store = _store_of(slot.backend)
            if store is not None:
                found.extend((slot, contact) for contact in store.search(words, digits, limit))
        live = [slot for slot in tenant.slots if _store_of(slot.backend) is None and slot.backend.search_by_name]
        incomplete = False
        if live and words:
            engine = service.engine
            futures = []
            for slot in live:  # the lookup's rules: the rate limit and the circuit breaker, the deadline
                if engine.admit(tenant, slot):
                    search = functools.partial(slot.backend.search, text.strip(), limit)
                    futures.append((slot, pool.submit(engine.call, tenant, slot, search)))
                else:
                    incomplete = True
            deadline = time.monotonic() + tenant.deadline_s
            for slot, future in futures:
                try:
                    found.extend((slot, c) for c in future.result(timeout=max(0.0, deadline - time.monotonic())))
                except Exception:  # late, failed or broken: engine.call has logged and counted it
                    incomplete = True
        ranked = _rank(found, words)[:limit]
        headers = {"X-Contacts-Incomplete": "a backend did not answer in time"} if incomplete else None
        return json_response({"data": [embeddable(s, c, config, tenant.region) for s, c in ranked]}, headers=headers)

    @bp.route("/contacts/match", methods=["POST", "OPTIONS"], provide_automatic_options=False)
    def match() -> Response:
        if request.method == "OPTIONS":
            return preflight()
        tenant, config = authenticate()
        raw_numbers = _body_list("phoneNumbers")
        if len(raw_numbers) > MAX_MATCH_NUMBERS:
            raise ApiError(400, "invalid_input", f"phoneNumbers: at most {MAX_MATCH_NUMBERS} numbers per request")
        parsed: dict[str, PhoneNumber | None] = {}
        for raw in raw_numbers:
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise ApiError(400, "invalid_input", "phoneNumbers: a list of strings such as \"+41215522000\"")
            text = str(raw)
            try:
                parsed[text] = parse_number(text, tenant.region) if len(text) <= 64 else None
            except InvalidPhoneNumber:
                parsed[text] = None
        numbers = [n for n in parsed.values() if n is not None]
        results: dict[str, list[tuple[BackendSlot, Contact]]] = {n.key: [] for n in numbers}
        for slot in tenant.slots:
            store = _store_of(slot.backend)
            if store is not None and numbers:
                for key, contacts in store.lookup_many(numbers, tenant.max_results).items():
                    results[key].extend((slot, contact) for contact in contacts)
        live = {slot.name: slot for slot in tenant.slots if _store_of(slot.backend) is None}
        incomplete = False
        if live and numbers:
            unique = list({n.key: n for n in numbers}.values())
            futures = [(n, pool.submit(service.engine.lookup_rendered, tenant, n)) for n in unique]
            deadline = time.monotonic() + tenant.deadline_s + 1.0
            for number, future in futures:
                try:
                    body = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    incomplete = True
                    continue
                results[number.key].extend(_live_contacts(body, live, number))
        data = {}
        for text, number in parsed.items():
            entries = results.get(number.key, []) if number is not None else []
            data[text] = [embeddable(slot, contact, config, tenant.region) for slot, contact in entries]
        headers = {"X-Contacts-Incomplete": "a backend did not answer in time"} if incomplete else None
        return json_response({"data": data}, headers=headers)

    @bp.route("/contacts/view", methods=["POST", "OPTIONS"], provide_automatic_options=False)
    def view() -> Response:
        if request.method == "OPTIONS":
            return preflight()
        tenant, _ = authenticate()
        payload = _body()
        contact = find_key(payload, "contact") if isinstance(find_key(payload, "contact"), dict) else payload
        public_id = find_key(contact, "id")
        if not isinstance(public_id, str) or ":" not in public_id:
            raise ApiError(400, "invalid_input", 'the body must name the contact: {"id": "directory:alexa"}')
        name, _, contact_id = public_id.partition(":")
        slot = tenant.by_name.get(name)
        url = None
        if slot is not None:
            store = _store_of(slot.backend)
            if store is not None:
                found = store.get(contact_id)
                url = found.contact_uri if found else None
            else:
                url = _live_uri(service, tenant, public_id, find_key(contact, "phoneNumbers"))
        if not url:
            raise ApiError(404, "unknown_contact", f"no contact {public_id!r} with a page to open")
        return json_response({"url": url})

    app.register_blueprint(bp)


# --- listing --------------------------------------------------------------------------------------

def _listing_start(service: Service, tenant: Tenant, raw_since: str, page: int, now: float) -> float:
    """When this listing began: its syncTimestamp. Page 1 remembers it (in the lookup cache, so every
    process sees it with Redis); later pages reuse it, or assume the oldest start a listing can
    have (``now - HOLD_S``) when it is gone. Too early is safe: the next sync repeats a few changes."""
    cache = service.engine.cache
    key = keys.contacts_listing(tenant.name, raw_since)
    stored = cache.get(key)
    remembered = float(stored) if stored else None
    if remembered is not None and now - remembered > HOLD_S:
        remembered = None
    if page == 1:
        start = remembered if remembered is not None else now
        cache.set(key, repr(start).encode(), HOLD_S)
        return start
    return remembered if remembered is not None else now - HOLD_S


def _page(stores: list[tuple[BackendSlot, Any]], since: float | None, skip: int, size: int, held_after: float,
          config: TenantConfig, region: str) -> tuple[list[dict], int]:
    """One page over the stores in the tenant's order: every contact, or the changes after ``since``;
    and the number of positions in all stores."""
    items: list[dict] = []
    need = size
    before = 0  # positions in the stores already passed
    for slot, store in stores:
        offset = max(0, skip - before)
        if since is None:
            rows, total = store.listing(offset, need, held_after)
        else:
            rows, total = store.changes(since, offset, need)
        before += total
        need -= len(rows)
        for row in rows:
            if row is None:
                continue  # a position held by a contact deleted during the listing
            if isinstance(row, str):
                items.append({"id": f"{slot.name}:{row}", "deleted": True})
            else:
                item = embeddable(slot, row, config, region)
                if since is not None:
                    item["deleted"] = False
                items.append(item)
    return items, before


# --- the Embeddable contact -----------------------------------------------------------------------

def embeddable(slot: BackendSlot, contact: Contact, config: TenantConfig, region: str) -> dict[str, Any]:
    """A contact in Embeddable's third-party contact shape."""
    phones: list[dict[str, str]] = []
    seen: set[str] = set()
    types = contact.phone_types
    for raw in contact.phones:
        kind = types.get(raw, "unknown") if types else "unknown"
        kind = kind if kind in PHONE_TYPES else "other"
        for number in extract_numbers(str(raw), region)[0]:
            text = number.e164 or number.key.partition(":")[2]
            if text and text not in seen:
                seen.add(text)
                phones.append({"phoneNumber": text, "phoneType": kind if number.e164 else "extension"})
    item: dict[str, Any] = {
        "id": f"{slot.name}:{contact.id}",
        "name": contact.name or contact.company or "",
        "type": config.contacts_service_name,
        "phoneNumbers": phones,
        "company": contact.company or "",
        "jobTitle": contact.job_title or _custom(contact, _JOB_TITLE_KEYS) or "",
        "emails": [contact.email] if contact.email else [],
    }
    image = contact.image_url or _custom(contact, _IMAGE_KEYS)
    if image and image.startswith(("https://", "http://")):
        item["profileImageUrl"] = image
    return item


def _custom(contact: Contact, keys: tuple[str, ...]) -> str | None:
    for key, value in (contact.custom_data or {}).items():
        if key.lower() in keys and value:
            return str(value)
    return None


# --- search ---------------------------------------------------------------------------------------

def search_terms(text: str) -> tuple[list[str], str]:
    """The words (letters and digits) of a search, and its digits when it has no letters at all
    (a number being typed: ``+41 21 55``, ``0215``, ``0041``)."""
    text = text.strip()
    if not any(ch.isalpha() for ch in text):
        digits = re.sub(r"\D", "", text)
        if text.startswith("+") or digits.startswith("00"):
            digits = digits[2:] if digits.startswith("00") else digits
        return [], digits if len(digits) >= 2 else ""
    return re.findall(r"[^\W_]+", text), ""


def _fold(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))


def _rank(found: list[tuple[BackendSlot, Contact]], words: list[str]) -> list[tuple[BackendSlot, Contact]]:
    """Across sources: names that start with the typed words first, then each source's own order."""
    prefix = _fold(" ".join(words))

    def key(entry: tuple[int, tuple[BackendSlot, Contact]]) -> tuple:
        index, (_, contact) = entry
        return (not (prefix and _fold(contact.name or "").startswith(prefix)), index)

    return [entry for _, entry in sorted(enumerate(found), key=key)]


# --- live backends --------------------------------------------------------------------------------

def _live_contacts(body: bytes, live: dict[str, BackendSlot], number: PhoneNumber) -> list[tuple[BackendSlot, Contact]]:
    """The engine's answer for ``number``, only the contacts of live (not locally stored) backends."""
    kept = []
    for entry in json.loads(body):
        public_id = find_key(entry, "id") or ""
        name, _, contact_id = str(public_id).partition(":")
        slot = live.get(name)
        if slot is not None:
            kept.append((slot, Contact(id=contact_id, name=find_key(entry, "name"), company=find_key(entry, "company"),
                                       contact_uri=find_key(entry, "contactUri"), phones=[number.e164 or number.key])))
    return kept


def _live_uri(service: Service, tenant: Tenant, public_id: str, phone_numbers: Any) -> str | None:
    """A live backend's contact page: found again by the contact's numbers (the engine caches them)."""
    if not isinstance(phone_numbers, list):
        return None
    for entry in phone_numbers[:3]:
        raw = find_key(entry, "phoneNumber") if isinstance(entry, dict) else entry
        try:
            number = parse_number(str(raw), tenant.region)
        except InvalidPhoneNumber:
            continue
        for found in json.loads(service.engine.lookup_rendered(tenant, number)):
            if find_key(found, "id") == public_id:
                return find_key(found, "contactUri")
    return None


# --- request parsing ------------------------------------------------------------------------------

def _int_value(text: str, name: str, minimum: int, maximum: int) -> int:
    if not re.fullmatch(r"\d{1,16}", text):
        raise ApiError(400, "invalid_input", f"{name}: must be a whole number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ApiError(400, "invalid_input", f"{name}: must be between {minimum} and {maximum}")
    return value


def _int_arg(name: str, default: int, minimum: int, maximum: int) -> int:
    text = request.args.get(name, "").strip()
    return default if text in ("", "null") else _int_value(text, name, minimum, maximum)


def _body() -> dict[str, Any]:
    from lookup_service.routes import _json_body

    payload = _json_body()
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_input", "the body must be a JSON object")
    return payload


def _body_list(name: str) -> list[Any]:
    value = find_key(_body(), name)
    if not isinstance(value, list):
        raise ApiError(400, "invalid_input", f'the body must be {{"{name}": ["+41215522000", ...]}}')
    return value
