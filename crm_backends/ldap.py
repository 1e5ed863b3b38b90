"""LDAP directories (OpenLDAP, Active Directory, 389 Directory Server, ...) as a contact source.

Live mode sends one search per lookup: an OR over every phone attribute of the number's spellings.
OpenLDAP compares ``telephoneNumber``, ``mobile``, ``homePhone`` and ``pager`` with
``telephoneNumberMatch``, which ignores spaces and hyphens, so the unformatted spellings already
find ``+41 21 552 20 00``; a ``*<national significant number>*`` substring finds the number inside
longer values. Directories that compare plain strings (Active Directory) get the number's usual
formatted spellings as well, optionally a substring over its digit groups. Whatever is found is
re-checked with the project's normalization. Directories whose numbers carry other punctuation,
``(021) 552.20.00``, are matched reliably only in mirror mode.

Mirror mode pages through the directory (simple paged results control, RFC 2696); later syncs
list only entries whose ``modifyTimestamp`` (``whenChanged`` on AD) is at or after the newest one
seen. Deletions are invisible to such a query, so the mirror asks for a full listing (no cursor)
every ``full_sync_every``-th sync, which removes the entries that disappeared.
"""

from __future__ import annotations

import json
import logging
import math
import re
import ssl
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

import ldap3
import phonenumbers
from ldap3.core.exceptions import LDAPException, LDAPInvalidDnError, LDAPStartTLSError
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from lookup_core.errors import BackendConfigError, BackendUnavailable, CredentialsRejected
from lookup_core.phone import PhoneNumber
from lookup_core.phone_types import phone_type
from lookup_core.types import Contact, SyncBatch

from .base import Backend, BackendOptions, BackendSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PHONE_ATTRIBUTES = [
    "telephoneNumber",
    "mobile",
    "homePhone",
    "ipPhone",
    "facsimileTelephoneNumber",
    "otherTelephone",
    "otherMobile",
    "otherHomePhone",
    "otherIpPhone",
]
# An attribute description (name with options) or a numeric OID.
_ATTRIBUTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*(?:;[A-Za-z0-9-]+)*|\d+(?:\.\d+)+)$")
_GENERALIZED_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})?(\d{2})?(?:[.,](\d+))?(Z|[+-]\d{4})?$")
# ldap3 decodes the server's bytes without validating them first: an answer that is not LDAP (another
# service on the port, a broken proxy) escapes its BER decoder as KeyError, IndexError, TypeError or
# ValueError instead of an LDAPException. All of them mean "the server is not usable right now".
_WIRE_ERRORS = (LDAPException, OSError, KeyError, IndexError, TypeError, ValueError)

# LDAP result codes (RFC 4511, section 4.1.9)
_SUCCESS = 0
_OPERATIONS_ERROR = 1
_TIME_LIMIT_EXCEEDED = 3
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_DN_SYNTAX = 34
_CREDENTIAL_CODES = {48, 49, 50}  # inappropriateAuthentication, invalidCredentials, insufficientAccessRights
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_SUBSTRING_MODES = ("none", "digits", "groups")


def _check_attribute(name: str) -> None:
    if not isinstance(name, str) or not _ATTRIBUTE.match(name):
        raise ValidationError(f"{name!r} is not an LDAP attribute name")


class AttributeNames(fields.Field):
    """One attribute name or a list of them, in order of preference; loads as a list."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            raise ValidationError("expected an attribute name or a list of attribute names")
        for name in names:
            _check_attribute(name)
        return list(names)


class AttributeMap(Schema):
    """Which LDAP attributes hold each contact field. Defaults fit inetOrgPerson and AD users."""

    name = AttributeNames(load_default=lambda: ["displayName", "cn"])
    company = AttributeNames(load_default=lambda: ["company", "o"])
    email = AttributeNames(load_default=lambda: ["mail"])
    phones = AttributeNames(load_default=lambda: list(DEFAULT_PHONE_ATTRIBUTES))
    # the contacts API's jobTitle and profileImageUrl (an attribute holding an http(s) URL)
    job_title = AttributeNames(load_default=lambda: ["title"])
    image_url = AttributeNames(load_default=list)
    # "" picks entryUUID (OpenLDAP, 389 DS) or objectGUID (AD), else the DN; "dn" forces the DN.
    id = fields.String(load_default="")
    custom_data = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)

    @validates("phones")
    def _phones(self, value: list[str], **kwargs: Any) -> None:
        if not value:
            raise ValidationError("list at least one phone attribute")

    @validates("id")
    def _id(self, value: str, **kwargs: Any) -> None:
        if value and value.lower() != "dn":
            _check_attribute(value)

    @validates("custom_data")
    def _custom(self, value: dict[str, str], **kwargs: Any) -> None:
        for attribute in value.values():
            _check_attribute(attribute)


class LdapOptions(BackendOptions):
    url = fields.String(required=True)
    start_tls = fields.Boolean(load_default=False)
    tls_verify = fields.Boolean(load_default=True)
    ca_file = fields.String(load_default=None, allow_none=True)
    bind_dn = fields.String(load_default="")
    password = fields.String(load_default="")
    base_dn = fields.String(required=True)
    filter = fields.String(load_default="")
    scope = fields.String(load_default="sub", validate=validate.OneOf(["sub", "one"]))
    attributes = fields.Nested(AttributeMap, load_default=lambda: AttributeMap().load({}))
    contact_uri_template = fields.String(load_default="")
    company_uri_template = fields.String(load_default="")
    # live lookups
    size_limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    substring_search = fields.String(load_default="digits", validate=validate.OneOf(_SUBSTRING_MODES))
    # mirror syncs
    page_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=100000))
    changed_attribute = fields.String(load_default="modifyTimestamp")
    full_sync_every = fields.Integer(load_default=24, validate=validate.Range(min=1))
    sync_timeout = fields.Float(load_default=60.0, validate=validate.Range(min=1))

    @validates("url")
    def _url(self, value: str, **kwargs: Any) -> None:
        _split_url(value)

    @validates("base_dn")
    def _base_dn(self, value: str, **kwargs: Any) -> None:
        if not value.strip():
            raise ValidationError("the base DN is empty (e.g. 'dc=example,dc=org')")
        try:
            parse_dn(value)
        except (LDAPInvalidDnError, ValueError, IndexError) as exc:
            raise ValidationError(f"{value!r} is not a valid DN: {exc}") from None

    @validates("filter")
    def _filter(self, value: str, **kwargs: Any) -> None:
        if value.strip():
            _check_filter(value.strip())

    @validates("changed_attribute")
    def _changed(self, value: str, **kwargs: Any) -> None:
        _check_attribute(value)

    @validates("contact_uri_template")
    def _contact_uri(self, value: str, **kwargs: Any) -> None:
        _template_fields(value)

    @validates("company_uri_template")
    def _company_uri(self, value: str, **kwargs: Any) -> None:
        _template_fields(value)

    @validates_schema
    def _credentials(self, data: dict[str, Any], **kwargs: Any) -> None:
        bind_dn, password = data.get("bind_dn") or "", data.get("password") or ""
        if bind_dn and not password:
            # RFC 4513 "unauthenticated bind": many servers treat it as anonymous, silently.
            raise ValidationError(
                "a bind_dn needs a password (leave both empty to bind anonymously)", "password"
            )
        if password and not bind_dn:
            raise ValidationError(
                "a password needs a bind_dn (leave both empty to bind anonymously)", "bind_dn"
            )
        url = data.get("url")
        if url and data.get("start_tls") and url.lower().startswith("ldaps:"):
            raise ValidationError("start_tls is for ldap:// URLs; ldaps:// is already encrypted", "start_tls")


def _split_url(url: str) -> tuple[str, int, bool]:
    """Host, port and whether to use TLS from the start (ldaps)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ValidationError("expected ldap://host[:port] or ldaps://host[:port]")
    if parts.path not in ("", "/") or parts.query:
        raise ValidationError("the URL holds only the server; set the search base with base_dn")
    return parts.hostname, port or (636 if scheme == "ldaps" else 389), scheme == "ldaps"


def _check_filter(text: str) -> None:
    try:
        compile_filter(parse_filter(text, None, False, True, None, False).elements[0])
    except (LDAPException, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValidationError(
            f"{text!r} is not a valid LDAP filter ({exc}); e.g. '(objectClass=person)'"
        ) from None


def _template_fields(template: str) -> list[str]:
    """The attribute names a URI template uses besides ``{id}`` and ``{dn}``."""
    names: list[str] = []
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if not name or spec or conversion:
                raise ValidationError("use plain placeholders such as {id}, {dn} or {uid}")
            if name not in ("id", "dn"):
                _check_attribute(name)
                names.append(name)
    except ValueError as exc:
        raise ValidationError(f"malformed template: {exc}") from None
    return names


def parse_generalized_time(text: str) -> datetime | None:
    """An LDAP GeneralizedTime (``20240131120000Z``, AD's ``20240131120000.0Z``) as aware UTC."""
    match = _GENERALIZED_TIME.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if fraction:
        moment += timedelta(seconds=float("0." + fraction))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
    return moment.replace(tzinfo=UTC)


class _Entry:
    """One search result: the DN and its attribute values, names compared case-insensitively."""

    __slots__ = ("dn", "values")

    def __init__(self, dn: str, raw: dict[str, list[bytes]]):
        self.dn = dn
        self.values = {name.lower(): vals for name, vals in raw.items()}

    def raw(self, name: str) -> list[bytes]:
        return self.values.get(name.lower(), [])

    def texts(self, name: str) -> list[str]:
        result = []
        for value in self.raw(name):
            text = (
                value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value).strip()
            )
            if text:
                result.append(text)
        return result

    def first(self, names: list[str]) -> str | None:
        for name in names:
            texts = self.texts(name)
            if texts:
                return texts[0]
        return None


class LdapBackend(Backend):
    type_name: ClassVar[str] = "ldap"
    options_schema = LdapOptions
    modes = frozenset({"live", "mirror"})
    search_by_name = True
    default_crm_name = "LDAP directory"
    secret_keys = frozenset({"password"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        opts = self.options
        try:
            self.host, self.port, self.use_ssl = _split_url(opts["url"])
        except ValidationError as exc:
            raise BackendConfigError(f"{spec.where('url')}: {exc.messages[0]}", key="url") from None
        self.attrs: dict[str, Any] = opts["attributes"]
        self.base_filter = (opts.get("filter") or "").strip()
        self.scope = ldap3.SUBTREE if opts["scope"] == "sub" else ldap3.LEVEL
        self.changed_attribute: str = opts["changed_attribute"]
        self._uri_fields = _template_fields(opts["contact_uri_template"]) + _template_fields(
            opts["company_uri_template"]
        )
        id_attr = self.attrs["id"]
        self._id_attrs = (
            ["entryUUID", "objectGUID"] if not id_attr else ([] if id_attr.lower() == "dn" else [id_attr])
        )
        wanted = (
            self.attrs["name"]
            + self.attrs["company"]
            + self.attrs["email"]
            + self.attrs["phones"]
            + self.attrs["job_title"]
            + self.attrs["image_url"]
            + list(self.attrs["custom_data"].values())
            + self._uri_fields
            + self._id_attrs
        )
        self.lookup_attributes = list(dict.fromkeys(wanted))
        self.sync_attributes = list(dict.fromkeys(self.lookup_attributes + [self.changed_attribute]))
        self._local = threading.local()
        self._connections: set[ldap3.Connection] = set()
        self._lock = threading.Lock()
        self._closed = False

    # connections ----------------------------------------------------------------------------
    def _connect(self, timeout: float) -> ldap3.Connection:
        """A new bound connection; raises CredentialsRejected or BackendUnavailable."""
        opts = self.options
        tls = None
        if self.use_ssl or opts["start_tls"]:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if opts["tls_verify"] else ssl.CERT_NONE,
                ca_certs_file=opts.get("ca_file") or None,
            )
        server = ldap3.Server(
            self.host,
            port=self.port,
            use_ssl=self.use_ssl,
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=timeout,
        )
        bind_dn = opts["bind_dn"] or None
        conn = ldap3.Connection(
            server,
            user=bind_dn,
            password=opts["password"] or None,
            authentication=ldap3.SIMPLE if bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds; the exact value is set below
            receive_timeout=max(1, math.ceil(timeout)),
            auto_referrals=False,
            read_only=True,
            check_names=False,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if opts["start_tls"] and not conn.start_tls(read_server_info=False):
                raise BackendUnavailable(f"{self._where()}: StartTLS refused: {_describe(conn.result)}")
            if conn.socket is not None:
                conn.socket.settimeout(timeout)
            if not conn.bind():
                raise self._error(conn.result, "bind")
        except LDAPStartTLSError as exc:
            _quiet_unbind(conn)
            raise BackendUnavailable(f"{self._where()}: StartTLS failed: {exc}") from None
        except _WIRE_ERRORS as exc:
            _quiet_unbind(conn)
            reason = exc if isinstance(exc, LDAPException | OSError) else "its answer is not LDAP"
            raise BackendUnavailable(
                f"{self._where()}: cannot reach {self.host}:{self.port}: {reason}"
            ) from None
        except BackendUnavailable:
            _quiet_unbind(conn)
            raise
        return conn

    def _thread_connection(self) -> ldap3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            if self._closed:
                raise BackendUnavailable(f"{self._where()}: backend closed")
            conn = self._connect(self.timeout_s)
            self._local.conn = conn
            with self._lock:
                self._connections.add(conn)
        return conn

    def _discard(self, conn: ldap3.Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._connections.discard(conn)
        _quiet_unbind(conn)

    def _with_connection(self, operation: Callable[[ldap3.Connection], T]) -> T:
        """Run ``operation`` on this thread's connection; reconnect and retry once when a kept
        connection turns out to be dead (server restart, idle timeout), if time allows."""
        started = time.monotonic()
        for attempt in (1, 2):
            conn = self._thread_connection()
            try:
                return operation(conn)
            except _WIRE_ERRORS as exc:
                self._discard(conn)
                if attempt == 2 or time.monotonic() - started > self.timeout_s / 2:
                    raise BackendUnavailable(f"{self._where()}: {type(exc).__name__}: {exc}") from None
                log.info("%s: connection lost (%s), reconnecting", self._where(), exc)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            _quiet_unbind(conn)

    # errors ---------------------------------------------------------------------------------
    def _where(self, key: str | None = None) -> str:
        return self.spec.where(key)

    def _error(self, result: dict | None, operation: str) -> BackendUnavailable:
        code = (result or {}).get("result")
        text = f"{self._where()}: {operation} failed: {_describe(result)}"
        if code in _CREDENTIAL_CODES:
            return CredentialsRejected(text)
        if code == _OPERATIONS_ERROR and "successful bind" in str((result or {}).get("message", "")):
            return CredentialsRejected(text)  # AD refusing an anonymous search
        if code == _TIME_LIMIT_EXCEEDED:
            return BackendUnavailable(f"{self._where()}: the directory hit the search time limit")
        return BackendUnavailable(text)

    # searching ------------------------------------------------------------------------------
    def _and(self, *parts: str) -> str:
        parts = tuple(p for p in (self.base_filter, *parts) if p)
        return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"

    def lookup_filter(self, number: PhoneNumber) -> str:
        """The search filter for ``number``: values escaped, substrings from digits only."""
        assertions = []
        equal = [escape_filter_chars(value) for value in self._spellings(number)]
        substrings = self._substrings(number)
        for attribute in self.attrs["phones"]:
            assertions += [f"({attribute}={value})" for value in equal]
            assertions += [f"({attribute}={pattern})" for pattern in substrings]
        return self._and("(|" + "".join(assertions) + ")")

    def _spellings(self, number: PhoneNumber) -> list[str]:
        forms = self.search_forms(number)
        parsed = self._phonenumber(number)
        if parsed is not None:
            # For directories that compare plain strings (AD): the usual written forms.
            for style in (
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ):
                forms.append(phonenumbers.format_number(parsed, style))
        return list(dict.fromkeys(forms))

    def _substrings(self, number: PhoneNumber) -> list[str]:
        mode = self.options["substring_search"]
        if mode == "none" or number.is_short or not number.nsn or len(number.nsn) < 6:
            return []
        patterns = [f"*{number.nsn}*"]
        parsed = self._phonenumber(number)
        if mode == "groups" and parsed is not None:
            # The digit groups of the international format, any separators between them.
            written = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
            groups = re.findall(r"\d+", written)[1:]
            if len(groups) > 1:
                patterns.append("*" + "*".join(groups) + "*")
        return patterns

    @staticmethod
    def _phonenumber(number: PhoneNumber) -> phonenumbers.PhoneNumber | None:
        if number.is_short or not number.e164:
            return None
        try:
            return phonenumbers.parse(number.e164, None)
        except phonenumbers.NumberParseException:
            return None

    def _search(
        self,
        conn: ldap3.Connection,
        search_filter: str,
        attributes: list[str],
        size_limit: int = 0,
        time_limit: int = 0,
        paged_size: int | None = None,
        cookie: bytes | None = None,
    ) -> tuple[list[_Entry], bytes | None]:
        conn.search(
            self.options["base_dn"],
            search_filter,
            search_scope=self.scope,
            dereference_aliases=ldap3.DEREF_NEVER,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=time_limit,
            paged_size=paged_size,
            paged_cookie=cookie,
            auto_escape=False,
        )
        result = conn.result or {}
        code = result.get("result")
        if code == _SIZE_LIMIT_EXCEEDED and not paged_size:
            log.debug("%s: size limit reached, using the first %d entries", self._where(), size_limit)
        elif code == _SIZE_LIMIT_EXCEEDED:
            raise BackendUnavailable(
                f"{self._where()}: the server's size limit stopped the listing; let the bind account page "
                'through every entry (OpenLDAP: limits dn.exact="<bind_dn>" size.prtotal=unlimited)'
            )
        elif code != _SUCCESS:
            raise self._error(result, "search")
        entries = [
            _Entry(item["dn"], item.get("raw_attributes") or {})
            for item in conn.response or []
            if item.get("type") == "searchResEntry"
        ]
        next_cookie = None
        if paged_size:
            control = (result.get("controls") or {}).get(_PAGED_RESULTS) or {}
            next_cookie = (control.get("value") or {}).get("cookie") or None
        return entries, next_cookie

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        search_filter = self.lookup_filter(number)
        size_limit = max(self.options["size_limit"], limit)
        # The server's time limit is in whole seconds; the receive timeout bounds it on our side.
        time_limit = max(1, int(self.timeout_s))
        entries, _ = self._with_connection(
            lambda conn: self._search(conn, search_filter, self.lookup_attributes, size_limit, time_limit)
        )
        contacts = [c for c in (self.to_contact(e) for e in entries) if c is not None]
        kept = self.filter_candidates(number, contacts)
        kept.sort(key=lambda c: (not c.exact, (c.name or "").casefold()))
        log.debug(
            "%s: %s -> %d candidates, %d kept", self._where(), number.masked(), len(contacts), len(kept)
        )
        return kept[:limit]

    def search_filter(self, term: str) -> str:
        """Entries whose name attributes (cn and displayName, and the configured ones) hold the typed
        words in order: ``(|(cn=*jürg*m*)(displayName=*jürg*m*))``, values escaped."""
        pattern = "*" + "*".join(escape_filter_chars(word) for word in term.split()) + "*"
        attributes = dict.fromkeys(["cn", "displayName", *self.attrs["name"]])
        return self._and("(|" + "".join(f"({attribute}={pattern})" for attribute in attributes) + ")")

    def search(self, term: str, limit: int) -> list[Contact]:
        """Contacts by name, sorted by name, at most ``limit``; within the lookup's time limit."""
        if not term.split():
            return []
        search_filter = self.search_filter(term)
        time_limit = max(1, int(self.timeout_s))
        entries, _ = self._with_connection(
            lambda conn: self._search(conn, search_filter, self.lookup_attributes, max(limit, 1), time_limit)
        )
        contacts = [c for c in (self.to_contact(e) for e in entries) if c is not None]
        contacts.sort(key=lambda c: (c.name or "").casefold())
        return contacts[:limit]

    # entries to contacts --------------------------------------------------------------------
    def contact_id(self, entry: _Entry) -> str | None:
        for attribute in self._id_attrs:
            raw = entry.raw(attribute)
            if not raw:
                continue
            value = raw[0]
            if attribute.lower() == "objectguid" and isinstance(value, bytes) and len(value) == 16:
                return str(uuid.UUID(bytes_le=value))  # AD stores the GUID little-endian
            texts = entry.texts(attribute)
            if texts:
                return texts[0]
        # An explicitly configured id attribute that is missing: the entry cannot be addressed.
        if self.attrs["id"] and self.attrs["id"].lower() != "dn":
            return None
        return entry.dn

    def to_contact(self, entry: _Entry) -> Contact | None:
        contact_id = self.contact_id(entry)
        if contact_id is None:
            log.debug("%s: entry without id attribute skipped", self._where())
            return None
        phones: list[str] = []
        types: dict[str, str] = {}
        for attribute in self.attrs["phones"]:
            values = entry.texts(attribute)
            phones += values
            for value in values:  # the attribute names the type: mobile, homePhone, facsimileTelephoneNumber...
                types.setdefault(value, phone_type(attribute))
        custom = {}
        for label, attribute in self.attrs["custom_data"].items():
            values = entry.texts(attribute)
            if values:
                custom[label] = ", ".join(values)
        name = entry.first(self.attrs["name"]) or _rdn_value(entry.dn)
        return Contact(
            id=contact_id,
            name=name,
            company=entry.first(self.attrs["company"]),
            email=entry.first(self.attrs["email"]),
            phones=list(dict.fromkeys(phones)),
            custom_data=custom,
            contact_uri=self._uri(self.options["contact_uri_template"], entry, contact_id),
            company_uri=self._uri(self.options["company_uri_template"], entry, contact_id),
            phone_types=types,
            job_title=entry.first(self.attrs["job_title"]),
            image_url=next((url for url in (u.split()[0] for a in self.attrs["image_url"] for u in entry.texts(a))
                            if url.lower().startswith(("https://", "http://"))), None),
        )

    def _uri(self, template: str, entry: _Entry, contact_id: str) -> str | None:
        if not template:
            return None
        values = {"id": quote(contact_id, safe=""), "dn": quote(entry.dn, safe="")}
        for name in self._uri_fields:
            values[name] = quote(entry.first([name]) or "", safe="")
        return template.format(**values)

    # mirror -----------------------------------------------------------------------------------
    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        state = _decode_cursor(cursor)
        changed_since = state.get("changed") if state else None
        full = not changed_since
        if full:
            presence = "(|" + "".join(f"({a}=*)" for a in self.attrs["phones"]) + ")"
            search_filter = self._and(presence)
            newest: str | None = None
        else:
            # Entries that lost their phones are listed too: they are removed from the mirror.
            search_filter = self._and(f"({self.changed_attribute}>={escape_filter_chars(changed_since)})")
            newest = changed_since
        newest_moment = parse_generalized_time(newest) if newest else None
        conn = self._connect(max(self.timeout_s, self.options["sync_timeout"]))
        listed = 0
        try:
            cookie: bytes | None = None
            while True:
                try:
                    entries, cookie = self._search(
                        conn,
                        search_filter,
                        self.sync_attributes,
                        paged_size=self.options["page_size"],
                        cookie=cookie,
                    )
                except _WIRE_ERRORS as exc:
                    raise BackendUnavailable(
                        f"{self._where()}: sync failed: {type(exc).__name__}: {exc}"
                    ) from None
                contacts: list[Contact] = []
                gone: list[str] = []
                for entry in entries:
                    for text in entry.texts(self.changed_attribute)[:1]:
                        moment = parse_generalized_time(text)
                        if moment is not None and (newest_moment is None or moment > newest_moment):
                            newest, newest_moment = text, moment
                    contact = self.to_contact(entry)
                    if contact is None:
                        continue
                    if contact.phones:
                        contacts.append(contact)
                    elif not full:
                        gone.append(contact.id)
                listed += len(entries)
                batch = SyncBatch(contacts=contacts, deleted_ids=gone, complete=full)
                if not cookie:
                    batch.cursor = _encode_cursor(newest)
                    yield batch
                    break
                yield batch
        finally:
            _quiet_unbind(conn)
        if full and listed and newest is None:
            log.warning(
                "%s: no entry carries %r (unreadable for the bind account?): every sync is a full listing",
                self._where(),
                self.changed_attribute,
            )

    # start-up check ---------------------------------------------------------------------------
    def check(self) -> None:
        conn = self._connect(self.timeout_s)
        base_dn = self.options["base_dn"]
        try:
            conn.search(base_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"])
            code = (conn.result or {}).get("result")
            if code in (_NO_SUCH_OBJECT, _INVALID_DN_SYNTAX):
                raise BackendConfigError(
                    f"{self._where('base_dn')}: {base_dn!r} does not exist or the bind account "
                    f"cannot read it ({_describe(conn.result)})",
                    key="base_dn",
                )
            if code != _SUCCESS:
                raise self._error(conn.result, "reading base_dn")
            if self.base_filter:
                conn.search(
                    base_dn,
                    self.base_filter,
                    search_scope=self.scope,
                    attributes=["1.1"],
                    size_limit=1,
                    auto_escape=False,
                )
                code = (conn.result or {}).get("result")
                if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
                    raise BackendConfigError(
                        f"{self._where('filter')}: the directory rejected {self.base_filter!r} "
                        f"({_describe(conn.result)})",
                        key="filter",
                    )
        except _WIRE_ERRORS as exc:
            raise BackendUnavailable(f"{self._where()}: check failed: {type(exc).__name__}: {exc}") from None
        finally:
            _quiet_unbind(conn)


def _describe(result: dict | None) -> str:
    if not result:
        return "no answer"
    message = str(result.get("message") or "").strip()
    text = f"{result.get('description')} ({result.get('result')})"
    return f"{text}: {message}" if message else text


def _quiet_unbind(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except (LDAPException, OSError):
        pass


def _rdn_value(dn: str) -> str | None:
    try:
        return parse_dn(dn)[0][1] or None
    except (LDAPInvalidDnError, ValueError, IndexError):
        return None


def _encode_cursor(changed: str | None) -> str | None:
    if not changed:
        return None  # nothing to resume from: the next sync is a full listing
    return json.dumps({"changed": changed}, separators=(",", ":"))


def _decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        state = json.loads(cursor)
    except ValueError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("changed"), str):
        return None
    return state
