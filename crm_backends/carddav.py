"""CardDAV address books (Nextcloud, Radicale, Baïkal, SOGo, Fastmail, ...), RFC 6352.

Mirror mode (the default) copies the address book into the local index: the first sync lists every
card, later ones ask only for what changed since the last sync token (WebDAV sync-collection,
RFC 6578). A server without sync-collection, or an expired token, gets a full listing (PROPFIND
for the members, then addressbook-multiget in batches).

Live mode asks the server at every lookup with an addressbook-query whose TEL text-match terms are
the spellings a person may have typed (see :func:`search_terms`); every card returned is checked
again with the project's number normalization, so a loose match never shows a wrong contact.

A contact's id is the card's resource name in the collection (``<uid>.vcf`` on most servers), in
both modes: it is what a deletion reported by sync-collection names.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import phonenumbers
import requests
from marshmallow import ValidationError, fields, validates, validates_schema

from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
)
from lookup_core.phone import PhoneNumber
from lookup_core.types import Contact, SyncBatch

from .base import BackendOptions, BackendSpec
from .http import HttpSource
from .vcard import parse_vcards

log = logging.getLogger(__name__)

DAV = "{DAV:}"
CARD = "{urn:ietf:params:xml:ns:carddav}"
# Cards fetched per addressbook-multiget during a sync.
MULTIGET_BATCH = 500
# Only the properties the service reads are asked for (RFC 6352 section 10.4): no photos.
_ADDRESS_DATA = "<C:address-data>{}</C:address-data>".format(
    "".join(
        f'<C:prop name="{name}"/>'
        for name in ("VERSION", "UID", "FN", "N", "NICKNAME", "ORG", "TITLE", "TEL", "EMAIL", "X-ABLABEL")
    )
)
_XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
_NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"'
_PROPFIND_COLLECTION = (
    f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
    "<D:supported-report-set/></D:prop></D:propfind>"
)
_PROPFIND_MEMBERS = (
    f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>"
)
_SYNC_COLLECTION = (
    f"{_XML_HEAD}<D:sync-collection {_NS}><D:sync-token>{{token}}</D:sync-token>"
    "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"
)
_MULTIGET = (
    f"{_XML_HEAD}<C:addressbook-multiget {_NS}><D:prop><D:getetag/>{_ADDRESS_DATA}</D:prop>"
    "{hrefs}</C:addressbook-multiget>"
)
_QUERY = (
    f"{_XML_HEAD}<C:addressbook-query {_NS}><D:prop><D:getetag/>{_ADDRESS_DATA}</D:prop>"
    '<C:filter test="anyof">{filters}</C:filter></C:addressbook-query>'
)
_TEXT_MATCH = (
    '<C:prop-filter name="TEL"><C:text-match collation="i;unicode-casemap" match-type="contains">'
    "{}</C:text-match></C:prop-filter>"
)
_NAME_MATCH = (
    '<C:prop-filter name="{}"><C:text-match collation="i;unicode-casemap" match-type="contains">'
    "{}</C:text-match></C:prop-filter>"
)
_TEMPLATE_KEYS = {"id", "uid", "href"}


class CardDAVOptions(BackendOptions):
    mode = fields.String(load_default="mirror")
    url = fields.String(required=True)
    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True)
    verify_tls = fields.Boolean(load_default=True)
    contact_uri_template = fields.String(load_default=None, allow_none=True)
    # Read timeout of one request of a mirror sync (listing a large address book takes a while).
    sync_timeout = fields.Float(load_default=60.0)

    @validates("url")
    def _check_url(self, value: str, **_: Any) -> None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("must be the http(s) URL of an address book collection")
        if parts.username or parts.password:
            raise ValidationError("must not carry credentials; use the username and password keys")

    @validates("contact_uri_template")
    def _check_template(self, value: str | None, **_: Any) -> None:
        if value:
            _check_template(value)

    @validates("sync_timeout")
    def _check_sync_timeout(self, value: float, **_: Any) -> None:
        if value <= 0:
            raise ValidationError("must be a number of seconds above 0")

    @validates_schema
    def _check_credentials(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("username") and not data.get("password"):
            raise ValidationError("is required when username is set", "password")
        if data.get("password") and not data.get("username"):
            raise ValidationError("is required when password is set", "username")


def _check_template(template: str) -> None:
    names = {name for name in re.findall(r"{([^{}]*)}", template)}
    unknown = names - _TEMPLATE_KEYS
    if unknown:
        raise ValidationError(
            f"unknown placeholder(s) {sorted(unknown)}; use {{id}} (resource name), {{uid}} or {{href}}"
        )


@dataclass(slots=True)
class _Member:
    """One ``<D:response>`` of a multistatus."""

    href: str
    status: int
    vcard: str | None = None
    collection: bool = False


class _TokenRejected(Exception):
    """The server no longer knows our sync token (RFC 6578 valid-sync-token)."""


class _ReportUnsupported(Exception):
    """The server does not implement sync-collection."""


class CardDAVBackend(HttpSource):
    type_name: ClassVar[str] = "carddav"
    options_schema = CardDAVOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True
    default_crm_name = "CardDAV"
    secret_keys = frozenset({"password"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        url = self.options["url"]
        self.url = url if url.endswith("/") else url + "/"
        self.collection_path = unquote(urlsplit(self.url).path)
        self.sync_timeout = float(self.options.get("sync_timeout") or 60.0)
        self.template = self.options.get("contact_uri_template") or None
        if self.options.get("username"):
            self.session.auth = (self.options["username"], self.options.get("password") or "")
        self._sync_supported: bool | None = None

    # Backend interface ------------------------------------------------------------------------
    def check(self) -> None:
        response = self._send("PROPFIND", self.url, _PROPFIND_COLLECTION, self.timeout_s, depth="0")
        if response.status_code == 404:
            raise BackendConfigError(
                f"{self.spec.where('url')}: no address book at {self.url} (404); "
                "for Nextcloud the URL looks like https://HOST/remote.php/dav/addressbooks/users/USER/contacts/",
                key="url",
            )
        if response.status_code in (200, 204, 405):
            raise BackendConfigError(
                f"{self.spec.where('url')}: {self.url} is not a WebDAV collection (PROPFIND answered "
                f"HTTP {response.status_code}); use the address book's CardDAV URL",
                key="url",
            )
        root = self._multistatus(response, "PROPFIND")
        own = next((m for m in _members(root) if self._resource_name(m.href) == ""), None)
        if own is None or root.find(f".//{DAV}resourcetype/{CARD}addressbook") is None:
            raise BackendConfigError(
                f"{self.spec.where('url')}: {self.url} is not a CardDAV address book collection", key="url"
            )

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        candidates = self._query("".join(_TEXT_MATCH.format(escape(term)) for term in search_terms(number)))
        found = self.filter_candidates(number, candidates)
        found.sort(key=lambda c: (not c.exact, (c.name or "").casefold(), c.id))
        log.debug(
            "carddav %s: %d candidate(s), %d match(es) for %s",
            self.name,
            len(candidates),
            len(found),
            number.masked(),
        )
        return found[:limit]

    def search(self, term: str, limit: int) -> list[Contact]:
        """Cards whose FN or ORG contains the typed text (an addressbook-query, any case), sorted by name."""
        term = " ".join(term.split())
        if not term:
            return []
        found = self._query("".join(_NAME_MATCH.format(prop, escape(term)) for prop in ("FN", "ORG")))
        found.sort(key=lambda c: ((c.name or "").casefold(), c.id))
        return found[:limit]

    def _query(self, filters: str) -> list[Contact]:
        """The cards an addressbook-query REPORT with ``filters`` finds, as contacts."""
        response = self._send("REPORT", self.url, _QUERY.format(filters=filters), self.timeout_s, depth="1")
        return [
            contact
            for member in _members(self._multistatus(response, "addressbook-query"))
            if member.status == 200 and member.vcard
            for contact in [self._contact(member)]
            if contact is not None
        ]

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        members, token, full = self._changes(cursor)
        deleted = [self._resource_name(m.href) for m in members if m.status == 404]
        changed = [m.href for m in members if m.status == 200 and not m.collection]
        log.debug(
            "carddav %s: %s sync, %d changed, %d deleted",
            self.name,
            "full" if full else "incremental",
            len(changed),
            len(deleted),
        )
        for start in range(0, len(changed), MULTIGET_BATCH):
            yield self._multiget(changed[start : start + MULTIGET_BATCH])
        yield SyncBatch(deleted_ids=[d for d in deleted if d], cursor=token, complete=full)

    # syncing -----------------------------------------------------------------------------------
    def _changes(self, cursor: str | None) -> tuple[list[_Member], str | None, bool]:
        """The members to fetch or delete, the next cursor, and whether it is a full listing."""
        if self._sync_supported is not False:
            if cursor:
                try:
                    members, token = self._sync_collection(cursor)
                    return members, token, False
                except (_TokenRejected, _ReportUnsupported):
                    log.info(
                        "carddav %s: the sync token was refused; listing the whole address book", self.name
                    )
            try:
                members, token = self._sync_collection("")
                self._sync_supported = True
                return members, token, True
            except (_TokenRejected, _ReportUnsupported):
                log.info("carddav %s: no sync-collection support; full listings only", self.name)
                self._sync_supported = False
        response = self._send("PROPFIND", self.url, _PROPFIND_MEMBERS, self.sync_timeout, depth="1")
        root = self._multistatus(response, "PROPFIND")
        members = [m for m in _members(root) if self._resource_name(m.href)]
        return members, None, True

    def _sync_collection(self, token: str) -> tuple[list[_Member], str | None]:
        members: list[_Member] = []
        for _ in range(10_000):  # a server truncating its answer (507) is asked again from the new token
            body = _SYNC_COLLECTION.format(token=escape(token))
            response = self._send("REPORT", self.url, body, self.sync_timeout, depth="0")
            if response.status_code in (403, 409) and b"valid-sync-token" in response.content:
                raise _TokenRejected()
            if response.status_code in (400, 403, 405, 415, 501) and (
                response.status_code != 403 or b"supported-report" in response.content
            ):
                raise _ReportUnsupported()
            root = self._multistatus(response, "sync-collection")
            page = list(_members(root))
            new_token = (root.findtext(f"{DAV}sync-token") or "").strip() or None
            truncated = any(m.status == 507 and not self._resource_name(m.href) for m in page)
            members.extend(m for m in page if self._resource_name(m.href))
            if not truncated or not new_token or new_token == token:
                return members, new_token
            token = new_token
        raise BackendUnavailable(self.fail("the server kept truncating sync-collection"))

    def _multiget(self, hrefs: list[str]) -> SyncBatch:
        body = _MULTIGET.format(hrefs="".join(f"<D:href>{escape(href)}</D:href>" for href in hrefs))
        response = self._send("REPORT", self.url, body, self.sync_timeout, depth=None)
        batch = SyncBatch()
        for member in _members(self._multistatus(response, "addressbook-multiget")):
            name = self._resource_name(member.href)
            if not name:
                continue
            contact = self._contact(member) if member.status == 200 and member.vcard else None
            if contact is not None:
                batch.contacts.append(contact)
            elif member.status in (200, 404):
                # gone since the listing, or no usable number any more: not in the mirror
                batch.deleted_ids.append(name)
        return batch

    # cards -------------------------------------------------------------------------------------
    def _contact(self, member: _Member) -> Contact | None:
        entry = next(parse_vcards(member.vcard or "", self.spec.default_region), None)
        if entry is None or entry.problem:
            return None
        contact = entry.contact
        contact.id = self._resource_name(member.href)
        if self.template:
            contact.contact_uri = self.template.format(
                id=quote(contact.id, safe=""),
                uid=quote(entry.uid or "", safe=""),
                href=urljoin(self.url, member.href),
            )
        return contact

    def _resource_name(self, href: str) -> str:
        """The member's name inside the collection ("" for the collection itself)."""
        path = unquote(urlsplit(href).path)
        if path.startswith(self.collection_path):
            return path[len(self.collection_path) :]
        return "" if path.rstrip("/") == self.collection_path.rstrip("/") else path

    # HTTP --------------------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: str, timeout: float, depth: str | None) -> requests.Response:
        headers = {"Content-Type": "application/xml; charset=utf-8"}
        if depth is not None:
            headers["Depth"] = depth
        return self.send(method, url, what=method, data=body.encode("utf-8"), headers=headers, timeout=timeout)

    def _multistatus(self, response: requests.Response, what: str) -> ET.Element:
        status = response.status_code
        if status == 404:
            raise BackendUnavailable(self.fail(f"{what}: no address book at the configured url (HTTP 404)"))
        if status != 207:
            raise self.status_error(response, what) or BackendUnavailable(
                self.fail(f"{what} answered HTTP {status} instead of 207")
            )
        self.credentials.accepted()
        try:
            # ElementTree never fetches external entities; expat caps entity expansion (billion laughs).
            root = ET.fromstring(response.content)
        except ET.ParseError as exc:
            raise BackendUnavailable(self.fail(f"the {what} answer is not XML ({exc})")) from None
        if root.tag != f"{DAV}multistatus":
            raise BackendUnavailable(self.fail(f"the {what} answer is not a DAV multistatus"))
        return root


def search_terms(number: PhoneNumber) -> list[str]:
    """Substrings that a stored spelling of ``number`` contains, for TEL text-match queries.

    CardDAV servers compare raw text, so the query uses the subscriber part of the number (without
    country and area code), which every spelling ends with: its digits (``5522000`` is in
    ``+41215522000``, ``0041215522000``, ``021 5522000``) and its usual groupings with a space, a
    dash or a dot (``552 20 00`` is in ``(021) 552 20 00`` and ``+41 21 552 20 00``). Other numbers
    sharing the subscriber part come back too and are dropped by the re-check.
    """
    if number.is_short or not number.e164 or not number.nsn:
        return [number.key.split(":", 1)[-1]]
    parsed = phonenumbers.parse(number.e164, None)
    area = phonenumbers.length_of_national_destination_code(parsed)
    subscriber = number.nsn[area:]
    if len(subscriber) < 4:  # too short to be selective
        subscriber = number.nsn
    terms = [subscriber]
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    groupings = [_tail_groups(national, len(subscriber))]
    if len(subscriber) >= 6:
        groupings.append([subscriber[:3], subscriber[3:]])
    for groups in groupings:
        if groups and len(groups) > 1:
            terms += [separator.join(groups) for separator in (" ", "-", ".")]
    return list(dict.fromkeys(terms))


def _tail_groups(formatted: str, length: int) -> list[str] | None:
    """The last digit groups of ``formatted`` holding exactly ``length`` digits."""
    groups: list[str] = []
    count = 0
    for group in reversed(re.findall(r"\d+", formatted)):
        if count >= length:
            break
        groups.insert(0, group)
        count += len(group)
    return groups if count == length else None


def _members(root: ET.Element) -> Iterable[_Member]:
    for response in root.iter(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        if not href:
            continue
        direct = response.findtext(f"{DAV}status")
        if direct is not None:
            yield _Member(href, _status(direct))
            continue
        member = _Member(href, 0)
        for propstat in response.iter(f"{DAV}propstat"):
            status = _status(propstat.findtext(f"{DAV}status") or "")
            if status != 200:
                member.status = member.status or status
                continue
            member.status = 200
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            data = prop.find(f"{CARD}address-data")
            if data is not None and data.text:
                member.vcard = data.text
            member.collection = prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
        yield member


def _status(line: str) -> int:
    match = re.search(r"\s(\d{3})(?:\s|$)", " " + line.strip())
    return int(match.group(1)) if match else 0
