"""A fake Odoo server: the JSON-RPC external API on a real HTTP server on 127.0.0.1.

It answers exactly the requests :mod:`crm_backends.odoo` sends, in the shapes Odoo documents, and
refuses anything else the way Odoo does (a JSON-RPC error carrying the Python exception's name), so
a backend that sends a wrong model, method, field or argument shape fails its tests.

Sources the behaviour follows (cited again at each method):

* External API (connection, ``common.version``/``authenticate``, ``execute_kw``, ``search``,
  ``read``, ``fields_get``, ``search_read``, ``create``, pagination):
  https://www.odoo.com/documentation/17.0/developer/reference/external_api.html
  (same content for 16.0 and 18.0; in 19.0 it moved to ``external_rpc_api.html``).
* Domains (``|``, ``&``, ``!``, ``=ilike`` patterns, ``active_test``):
  https://www.odoo.com/documentation/17.0/developer/reference/backend/orm.html#reference-orm-domains
* ``message_post`` (``body_is_html`` since 17.0) and activities:
  https://www.odoo.com/documentation/17.0/developer/reference/backend/mixins.html
* JSON-RPC transport and its error object (``code`` 200 "Odoo Server Error", 100 "Odoo Session
  Expired", ``data.name`` the exception's dotted name): ``JsonRPCDispatcher.handle_error`` and
  ``serialize_exception`` in odoo/http.py; ``authenticate`` answering ``false`` for bad credentials:
  ``exp_authenticate`` in odoo/service/common.py; "Object x doesn't exist" and
  ``security.check`` (AccessDenied on a wrong key): odoo/service/model.py (github.com/odoo/odoo).
* ``phone_mobile_search``: ``mail.thread.phone._search_phone_mobile_search`` in
  addons/phone_validation (separators ``[\\s\\\\./()-]`` stripped; ``+``/``00`` prefixes
  equivalent; otherwise a substring match); ``res.partner`` lost ``mobile`` in saas-18.2
  (odoo/odoo#189739), so 18.2 and 19.0 have ``phone`` only.
* ``mail.activity.action_feedback`` posts the "activity done" message on the document and returns
  its id (addons/mail/models/mail_activity.py).
* ``write`` (External API, "Update records": ``write([ids], {values})`` answers ``true``) on
  ``mail.message``: ``MailMessage.write`` in addons/mail/models/mail_message.py refuses ``model`` and
  ``res_id`` to non-administrators (AccessError), the ORM's ``write`` refuses an unknown field
  ("Invalid field ... on model ...", ValueError), a value of the wrong type, and a record that no
  longer exists (MissingError); a computed field without inverse (``preview``) is read-only, its value
  dropped. Who may write a message (``_filter_accessible_from_query``): its author, or a user with
  write access to the document it is posted on; the API user here may write partners.
* ``res.users`` (``share``: portal and public users; ``active``; ``email`` related to the partner).
"""

from __future__ import annotations

import html
import json
import operator as op
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCESS_DENIED = "odoo.exceptions.AccessDenied"
ACCESS_ERROR = "odoo.exceptions.AccessError"
USER_ERROR = "odoo.exceptions.UserError"
MISSING_ERROR = "odoo.exceptions.MissingError"

_PHONE_SEPARATORS = re.compile(r"[\s\\./()\-]")


class RpcError(Exception):
    """Raised inside the fake; becomes the JSON-RPC ``error`` object Odoo sends."""

    def __init__(self, name: str, message: str, code: int = 200):
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code


def _type_error(message: str) -> RpcError:
    return RpcError("builtins.TypeError", message)


def _value_error(message: str) -> RpcError:
    return RpcError("builtins.ValueError", message)


@dataclass
class Fault:
    """An injected transport fault answered instead of the next request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    hang_s: float = 0.0
    rpc_error: tuple[str, str] | None = None  # (exception name, message) as a JSON-RPC error


@dataclass
class _Model:
    name: str
    # field name -> (type, comodel)
    fields: dict[str, tuple[str, str | None]]
    methods: frozenset[str]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def has_active(self) -> bool:
        return "active" in self.fields


def _parse_version(version: str) -> tuple[int, int]:
    match = re.search(r"(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not an Odoo version: {version!r}")
    return int(match.group(1)), int(match.group(2))


class OdooFake:
    """An in-memory Odoo with partners, chatter messages and activities.

    ``version``: "16.0", "17.0", "saas~17.2", "18.0", "saas~18.2" or "19.0" (the field set and
    ``message_post`` arguments follow it). ``phone_validation``: whether the module providing
    ``res.partner.phone_mobile_search`` is installed.
    """

    def __init__(
        self,
        version: str = "17.0",
        phone_validation: bool = True,
        database: str = "acme",
        login: str = "bot@acme.test",
        api_key: str = "secret-key-1",
        uid: int = 7,
    ):
        self.version = version
        self.version_info = _parse_version(version)
        self.phone_validation = phone_validation
        self.database = database
        self.login = login
        self.api_key = api_key
        self.uid = uid
        self.has_mobile = self.version_info < (18, 2)
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.slow_calls: dict[tuple[str, str], float] = {}
        self.failing_calls: dict[tuple[str, str], int] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._clock = datetime(2024, 1, 1, 8, 0, 0)
        self._next_id: dict[str, int] = {}
        self.models = self._build_models()
        self._seed()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- server lifecycle
    def start(self) -> OdooFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # one segment per answer, sent at once: avoids the Nagle/delayed-ACK 40 ms stall
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def do_GET(self) -> None:  # noqa: N802
                self._send(405, b"Method Not Allowed", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, body = fake._handle(self.path, dict(self.headers.items()), raw)
                self._send(status, body, headers.pop("Content-Type", "application/json"), headers)

            def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="odoo-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OdooFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---------------------------------------------------------------- test helpers
    def fail_next(self, status: int, retry_after: str | None = None, body: bytes | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.append(Fault(status=status, headers=headers, body=body))

    def hang_next(self, seconds: float) -> None:
        self.faults.append(Fault(hang_s=seconds))

    def fail_on(self, model: str, method: str, status: int = 502) -> None:
        """Answer the next ``model.method`` call with HTTP ``status``, without processing it."""
        self.failing_calls[(model, method)] = status

    def hang_on(self, model: str, method: str, seconds: float) -> None:
        """Process the next ``model.method`` call only after ``seconds`` (the client may be gone)."""
        self.slow_calls[(model, method)] = seconds

    def rpc_error_next(self, name: str, message: str) -> None:
        self.faults.append(Fault(rpc_error=(name, message)))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def rpc_calls(self, service: str | None = None, method: str | None = None) -> list[list[Any]]:
        """``params.args`` of the recorded requests, filtered by service and method."""
        out = []
        for request in self.requests:
            params = (request.get("body") or {}).get("params") or {}
            if service and params.get("service") != service:
                continue
            if method and params.get("method") != method:
                continue
            out.append(params.get("args"))
        return out

    def model_calls(self, model: str | None = None, method: str | None = None) -> list[tuple[list, dict]]:
        """``(args, kwargs)`` of the recorded ``execute_kw`` calls on ``model.method``."""
        out = []
        for args in self.rpc_calls("object", "execute_kw"):
            if not isinstance(args, list) or len(args) < 6:
                continue
            if model and args[3] != model:
                continue
            if method and args[4] != method:
                continue
            out.append((args[5], args[6] if len(args) > 6 else {}))
        return out

    def tick(self, seconds: int = 1) -> str:
        """Advance the server clock; returns the new time as Odoo writes it."""
        with self._lock:
            self._clock += timedelta(seconds=seconds)
            return self._clock.strftime("%Y-%m-%d %H:%M:%S")

    def add_partner(self, name: str | None, **values: Any) -> int:
        """Create a partner as the Contacts form would (phone fields are free text)."""
        with self._lock:
            record = {
                "name": name,
                "phone": None,
                "mobile": None,
                "email": None,
                "function": None,
                "parent_id": None,
                "is_company": False,
                "company_name": None,
                "active": True,
                "type": "contact",
            }
            if "mobile" in values and not self.has_mobile:
                raise ValueError(f"Odoo {self.version} has no res.partner.mobile")
            record.update(values)
            record["write_date"] = values.get("write_date") or self.tick()
            record["create_date"] = record["write_date"]
            return self._insert("res.partner", record)

    def write_partner(self, partner_id: int, **values: Any) -> None:
        with self._lock:
            record = self.models["res.partner"].records[partner_id]
            record.update(values)
            record["write_date"] = values.get("write_date") or self.tick()

    def delete_partner(self, partner_id: int) -> None:
        with self._lock:
            del self.models["res.partner"].records[partner_id]

    def partner(self, partner_id: int) -> dict[str, Any]:
        return self.models["res.partner"].records[partner_id]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.models["mail.message"].records.values())

    @property
    def activities(self) -> list[dict[str, Any]]:
        return list(self.models["mail.activity"].records.values())

    # ---------------------------------------------------------------- data model
    def _build_models(self) -> dict[str, _Model]:
        partner_fields: dict[str, tuple[str, str | None]] = {
            "id": ("integer", None),
            "name": ("char", None),
            "display_name": ("char", None),
            "phone": ("char", None),
            "email": ("char", None),
            "function": ("char", None),  # "Job Position" on the Contacts form (base module)
            "parent_id": ("many2one", "res.partner"),
            "commercial_partner_id": ("many2one", "res.partner"),
            "commercial_company_name": ("char", None),
            "company_name": ("char", None),
            "is_company": ("boolean", None),
            "active": ("boolean", None),
            "type": ("selection", None),
            "write_date": ("datetime", None),
            "create_date": ("datetime", None),
        }
        if self.has_mobile:
            partner_fields["mobile"] = ("char", None)
        if self.phone_validation:
            partner_fields["phone_mobile_search"] = ("char", None)
        return {
            "res.partner": _Model(
                "res.partner",
                partner_fields,
                frozenset({"fields_get", "search_read", "search", "search_count", "read", "message_post", "create"}),
            ),
            "res.users": _Model(
                "res.users",
                {
                    "id": ("integer", None),
                    "name": ("char", None),
                    "login": ("char", None),
                    "email": ("char", None),
                    "partner_id": ("many2one", "res.partner"),
                    "share": ("boolean", None),
                    "active": ("boolean", None),
                },
                frozenset({"read", "search_read"}),
            ),
            "ir.model": _Model(
                "ir.model",
                {"id": ("integer", None), "model": ("char", None), "name": ("char", None)},
                frozenset({"search", "search_read", "read"}),
            ),
            "ir.model.data": _Model(
                "ir.model.data",
                {
                    "id": ("integer", None),
                    "module": ("char", None),
                    "name": ("char", None),
                    "model": ("char", None),
                    "res_id": ("integer", None),
                },
                frozenset({"search_read"}),
            ),
            "mail.activity.type": _Model(
                "mail.activity.type",
                {
                    "id": ("integer", None),
                    "name": ("char", None),
                    "category": ("selection", None),
                    "sequence": ("integer", None),
                    "active": ("boolean", None),
                },
                frozenset({"search_read"}),
            ),
            "mail.activity": _Model(
                "mail.activity",
                {
                    "id": ("integer", None),
                    "activity_type_id": ("many2one", "mail.activity.type"),
                    "res_model_id": ("many2one", "ir.model"),
                    "res_model": ("char", None),
                    "res_id": ("integer", None),
                    "user_id": ("many2one", "res.users"),
                    "summary": ("char", None),
                    "note": ("html", None),
                    "date_deadline": ("date", None),
                },
                frozenset({"create", "action_feedback", "read", "search_read"}),
            ),
            "mail.message": _Model(
                "mail.message",
                {
                    "id": ("integer", None),
                    "model": ("char", None),
                    "res_id": ("integer", None),
                    "body": ("html", None),
                    "message_type": ("selection", None),
                    "subtype_xmlid": ("char", None),
                    "author_id": ("many2one", "res.partner"),
                    "date": ("datetime", None),
                    "subject": ("char", None),
                    "preview": ("char", None),  # computed from the body, no inverse
                },
                frozenset({"search_read", "read", "write"}),
            ),
        }

    def _seed(self) -> None:
        self._next_id = {"res.partner": 1, "mail.message": 1000, "mail.activity": 500}
        company = self._insert("res.partner", self._partner_row("Acme Phone Services", is_company=True))
        bot = self._insert("res.partner", self._partner_row("Lookup Bot", parent_id=company))
        agent = self._insert("res.partner", self._partner_row("Anna Agent", parent_id=company))
        former = self._insert("res.partner", self._partner_row("Fred Former", parent_id=company, active=False))
        customer = self._insert("res.partner", self._partner_row("Paula Portal", email="paula@customer.test"))
        self.own_company_id, self.agent_partner_id, self.bot_partner_id = company, agent, bot
        self._next_id["res.partner"] = 10
        users = self.models["res.users"].records
        for user_id, name, login, partner, share, active in (
            (self.uid, "Lookup Bot", self.login, bot, False, True),
            (9, "Anna Agent", "anna", agent, False, True),
            (11, "Fred Former", "fred@acme.test", former, False, False),  # archived
            (12, "Paula Portal", "paula@customer.test", customer, True, True),  # a portal user
        ):
            users[user_id] = {"id": user_id, "name": name, "login": login, "partner_id": partner, "share": share,
                              "active": active}
        self.agent_user_id = 9
        self.partner(agent)["email"] = "anna@acme.test"
        models = self.models["ir.model"].records
        for model_id, model, name in (
            (85, "res.partner", "Contact"),
            (86, "mail.activity", "Activity"),
            (87, "mail.message", "Message"),
        ):
            models[model_id] = {"id": model_id, "model": model, "name": name}
        types = self.models["mail.activity.type"].records
        for type_id, name, category, seq in (
            (1, "Email", "default", 5),
            (2, "Call", "phonecall", 6),
            (4, "To-Do", "default", 12),
        ):
            types[type_id] = {
                "id": type_id,
                "name": name,
                "category": category,
                "sequence": seq,
                "active": True,
            }
        xmlids = self.models["ir.model.data"].records
        for xml_id, (module, name, model, res_id) in enumerate(
            (
                ("mail", "mail_activity_data_call", "mail.activity.type", 2),
                ("mail", "mail_activity_data_todo", "mail.activity.type", 4),
                ("mail", "mt_note", "mail.message.subtype", 2),
                ("base", "model_res_partner", "ir.model", 85),
            ),
            start=1,
        ):
            xmlids[xml_id] = {"id": xml_id, "module": module, "name": name, "model": model, "res_id": res_id}

    def _partner_row(self, name: str, **values: Any) -> dict[str, Any]:
        row = {
            "name": name,
            "phone": None,
            "mobile": None,
            "email": None,
            "parent_id": None,
            "is_company": False,
            "company_name": None,
            "active": True,
            "type": "contact",
            "write_date": "2023-12-01 00:00:00",
            "create_date": "2023-12-01 00:00:00",
        }
        row.update(values)
        return row

    def _insert(self, model: str, record: dict[str, Any]) -> int:
        record_id = self._next_id.get(model, 1)
        self._next_id[model] = record_id + 1
        record["id"] = record_id
        self.models[model].records[record_id] = record
        return record_id

    # ---------------------------------------------------------------- field values
    def _commercial(self, record: dict[str, Any]) -> dict[str, Any]:
        partners = self.models["res.partner"].records
        current = record
        while not current.get("is_company") and current.get("parent_id") in partners:
            current = partners[current["parent_id"]]
        return current

    def _display_name(self, model: str, record: dict[str, Any]) -> str:
        if model == "res.partner":
            name = record.get("name") or ""
            parent = self.models["res.partner"].records.get(record.get("parent_id"))
            if parent and not record.get("is_company"):
                parent_name = self._commercial(record).get("name") or ""
                return f"{parent_name}, {name}" if name else parent_name
            return name
        return str(record.get("name") or record.get("model") or record.get("id"))

    def _raw(self, model: str, record: dict[str, Any], fname: str) -> Any:
        """The stored or computed value of a field, ``None`` when empty."""
        if model == "res.partner":
            if fname == "display_name":
                return self._display_name(model, record)
            if fname == "commercial_partner_id":
                return self._commercial(record)["id"]
            if fname == "commercial_company_name":
                commercial = self._commercial(record)
                return commercial.get("name") if commercial.get("is_company") else record.get("company_name")
        if model == "res.users" and fname == "email":
            return self.models["res.partner"].records.get(record.get("partner_id"), {}).get("email")
        if model == "mail.message" and fname == "preview":
            return re.sub(r"<[^>]+>", " ", record.get("body") or "").strip()[:190] or None
        if fname == "res_model" and model == "mail.activity":
            return self.models["ir.model"].records[record["res_model_id"]]["model"]
        return record.get(fname)

    def _read_value(self, model: str, record: dict[str, Any], fname: str) -> Any:
        ftype, comodel = self.models[model].fields[fname]
        value = self._raw(model, record, fname)
        if ftype == "many2one":
            target = self.models[comodel].records.get(value) if value else None
            return [target["id"], self._display_name(comodel, target)] if target else False
        if ftype == "boolean":
            return bool(value)
        if value is None or value == "":
            return False
        return value

    def _check_fields(self, model: _Model, names: Any) -> list[str]:
        if names is None:
            return [name for name in model.fields if name != "phone_mobile_search"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _type_error("fields must be a list of field names")
        for name in names:
            if name not in model.fields:
                raise _value_error(f"Invalid field {name!r} on model {model.name!r}")
        return names

    def _read(
        self, model: _Model, records: Iterable[dict[str, Any]], fields: list[str]
    ) -> list[dict[str, Any]]:
        out = []
        for record in records:
            row = {"id": record["id"]}
            for name in fields:
                if name == "phone_mobile_search":
                    row[name] = False  # non-stored search-only field
                else:
                    row[name] = self._read_value(model.name, record, name)
            out.append(row)
        return out

    # ---------------------------------------------------------------- domains
    def _filter(self, model: _Model, domain: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
        """Records matching ``domain`` (prefix notation, implicit AND between top-level terms)."""
        if not isinstance(domain, list):
            raise _type_error("the domain must be a list")
        predicate, used = self._compile(model, domain)
        active_test = context.get("active_test", True) if isinstance(context, dict) else True
        check_active = model.has_active and active_test and "active" not in used
        return [
            record
            for record in model.records.values()
            if (not check_active or record.get("active", True)) and predicate(record)
        ]

    def _compile(self, model: _Model, domain: list) -> tuple[Callable[[dict], bool], set[str]]:
        used: set[str] = set()
        position = 0

        def parse() -> Callable[[dict], bool]:
            nonlocal position
            if position >= len(domain):
                raise _value_error(f"Invalid domain {domain!r}: an operator lacks its operands")
            term = domain[position]
            position += 1
            if term == "!":
                inner = parse()
                return lambda r: not inner(r)
            if term in ("|", "&"):
                left, right = parse(), parse()
                if term == "|":
                    return lambda r: left(r) or right(r)
                return lambda r: left(r) and right(r)
            return self._leaf(model, term, used)

        terms = []
        while position < len(domain):
            terms.append(parse())
        return (lambda r: all(t(r) for t in terms)), used

    def _leaf(self, model: _Model, leaf: Any, used: set[str]) -> Callable[[dict], bool]:
        if not isinstance(leaf, list | tuple) or len(leaf) != 3 or not isinstance(leaf[0], str):
            raise _value_error(f"Invalid leaf {leaf!r}")
        fname, operator, value = leaf
        if fname not in model.fields:
            raise _value_error(f"Invalid field {model.name}.{fname} in leaf {tuple(leaf)!r}")
        valid = {
            "=",
            "!=",
            ">",
            ">=",
            "<",
            "<=",
            "in",
            "not in",
            "like",
            "ilike",
            "=like",
            "=ilike",
            "not like",
            "not ilike",
        }
        if operator not in valid:
            raise _value_error(f"Invalid leaf {tuple(leaf)!r}: unknown operator {operator!r}")
        used.add(fname)
        if fname == "phone_mobile_search":
            return self._phone_search(operator, value)

        def get(record: dict) -> Any:
            return self._raw(model.name, record, fname)

        return _compare(get, operator, value)

    def _phone_search(self, operator: str, value: Any) -> Callable[[dict], bool]:
        # mail.thread.phone._search_phone_mobile_search:
        # https://github.com/odoo/odoo/blob/17.0/addons/phone_validation/models/mail_thread_phone.py
        if operator not in ("=", "ilike", "like", "=like", "=ilike"):
            raise _value_error(f"unsupported operator {operator!r} on phone_mobile_search")
        if not isinstance(value, str):
            raise _value_error("phone_mobile_search expects a string")
        value = value.strip()
        if len(value) < 3:
            raise RpcError(
                USER_ERROR, "Please enter at least 3 characters when searching a Phone/Mobile number."
            )
        likeop = operator != "="
        number_fields = ["mobile", "phone"] if self.has_mobile else ["phone"]
        if value.startswith("+") or value.startswith("00"):
            term = _PHONE_SEPARATORS.sub("", value[1 if value.startswith("+") else 2 :])
            patterns = ["00" + term + ("%" if likeop else ""), "+" + term + ("%" if likeop else "")]
        else:
            term = _PHONE_SEPARATORS.sub("", value)
            patterns = [f"%{term}%" if likeop else term]
        regexes = [_like_regex(p, ignore_case=operator in ("ilike", "=ilike")) for p in patterns]

        def match(record: dict) -> bool:
            for fname in number_fields:
                stored = record.get(fname)
                if stored:
                    cleaned = _PHONE_SEPARATORS.sub("", stored)
                    if any(rx.fullmatch(cleaned) for rx in regexes):
                        return True
            return False

        return match

    @staticmethod
    def _order(
        model: _Model, records: list[dict], order: Any, getter: Callable[[dict, str], Any]
    ) -> list[dict]:
        if order is None:
            return sorted(records, key=lambda r: r["id"])
        if not isinstance(order, str):
            raise _type_error("order must be a string")
        keys = []
        for part in order.split(","):
            bits = part.split()
            if (
                not bits
                or len(bits) > 2
                or bits[0] not in model.fields
                or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc"))
            ):
                raise _value_error(f'Invalid "order" specified ({order}).')
            keys.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
        ordered = sorted(records, key=lambda r: r["id"])
        for fname, desc in reversed(keys):
            ordered.sort(key=lambda r, f=fname: _sortable(getter(r, f)), reverse=desc)
        return ordered

    # ---------------------------------------------------------------- HTTP entry
    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        entry: dict[str, Any] = {"path": path, "headers": headers, "body": body}
        with self._lock:
            self.requests.append(entry)
            fault = self.faults.pop(0) if self.faults else None
        status, out_headers, payload = self._answer(path, body, fault)
        entry["status"] = status
        try:
            entry["response"] = json.loads(payload)
        except ValueError:
            entry["response"] = None
        return status, out_headers, payload

    def _answer(self, path: str, body: Any, fault: Fault | None) -> tuple[int, dict[str, str], bytes]:
        if fault is not None:
            if fault.hang_s:
                self._stop.wait(fault.hang_s)
            elif fault.rpc_error is None:
                payload = fault.body if fault.body is not None else b'{"error": "injected"}'
                return fault.status, {"Content-Type": "text/html", **fault.headers}, payload
        if path != "/jsonrpc":
            # Odoo answers an unknown route of a JSON request with a JSON-RPC error code 404.
            return (
                200,
                {},
                self._error_body(body, RpcError("werkzeug.exceptions.NotFound", "404: Not Found", 404)),
            )
        if not isinstance(body, dict):
            return 400, {"Content-Type": "text/plain"}, b"Invalid JSON data"
        if fault is not None and fault.rpc_error is not None:
            return 200, {}, self._error_body(body, RpcError(*fault.rpc_error))
        args = (body.get("params") or {}).get("args") if isinstance(body.get("params"), dict) else None
        if isinstance(args, list) and len(args) > 4:
            with self._lock:
                delay = self.slow_calls.pop((args[3], args[4]), 0.0)
                failing = self.failing_calls.pop((args[3], args[4]), None)
            if failing:
                return failing, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"
            if delay:
                self._stop.wait(delay)
        try:
            result = self._dispatch(body)
        except RpcError as exc:
            return 200, {}, self._error_body(body, exc)
        return 200, {}, json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": result}).encode()

    @staticmethod
    def _error_body(body: Any, exc: RpcError) -> bytes:
        # JsonRPCDispatcher.handle_error and serialize_exception in
        # https://github.com/odoo/odoo/blob/17.0/odoo/http.py
        message = {100: "Odoo Session Expired", 404: "404: Not Found"}.get(exc.code, "Odoo Server Error")
        error = {
            "code": exc.code,
            "message": message,
            "data": {
                "name": exc.name,
                "debug": f"Traceback (most recent call last):\n  (fake)\n{exc.name}: {exc.message}\n",
                "message": exc.message,
                "arguments": [exc.message],
                "context": {},
            },
        }
        request_id = body.get("id") if isinstance(body, dict) else None
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()

    def _dispatch(self, body: dict[str, Any]) -> Any:
        # the /jsonrpc route, jsonrpc(service, method, args) -> dispatch_rpc(service, method, args):
        # https://github.com/odoo/odoo/blob/17.0/odoo/addons/base/controllers/rpc.py
        params = body.get("params")
        if body.get("jsonrpc") != "2.0" or not isinstance(params, dict):
            raise _type_error(
                "jsonrpc() missing 3 required positional arguments: 'service', 'method', and 'args'"
            )
        service, method, args = params.get("service"), params.get("method"), params.get("args")
        if not isinstance(args, list):
            raise _type_error("jsonrpc() missing 1 required positional argument: 'args'")
        if service == "common":
            return self._common(method, args)
        if service == "object":
            return self._object(method, args)
        raise RpcError("builtins.KeyError", repr(service))

    def _common(self, method: Any, args: list) -> Any:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#logging-in
        # version() needs no authentication; authenticate(db, login, password, user_agent_env)
        # returns the uid, or False when the credentials are wrong (exp_authenticate in
        # https://github.com/odoo/odoo/blob/17.0/odoo/service/common.py).
        if method == "version":
            return {
                "server_version": self.version,
                "server_version_info": self._version_info_list(),
                "server_serie": self.version.split("+")[0],
                "protocol_version": 1,
            }
        if method in ("authenticate", "login"):
            expected = 4 if method == "authenticate" else 3
            if len(args) != expected:
                raise _type_error(
                    f"exp_{method}() takes {expected} positional arguments but {len(args)} were given"
                )
            db, login, password = args[:3]
            self._check_db(db)
            if method == "authenticate" and not isinstance(args[3], dict):
                raise RpcError("builtins.AttributeError", "'list' object has no attribute 'get'")
            return self.uid if (login == self.login and password == self.api_key) else False
        raise RpcError("builtins.Exception", f"Method not found: {method}")

    def _version_info_list(self) -> list[Any]:
        major, minor = self.version_info
        serie = self.version.split("+")[0]
        head: Any = f"saas~{major}" if serie.startswith("saas~") else major
        return [head, minor, 0, "final", 0, "e" if self.version.endswith("+e") else ""]

    def _check_db(self, db: Any) -> None:
        if db != self.database:
            raise RpcError(
                "psycopg2.OperationalError",
                f'connection to server failed: FATAL:  database "{db}" does not exist',
            )

    def _object(self, method: Any, args: list) -> Any:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#calling-methods
        # execute_kw(db, uid, password, model, method, args[, kwargs]); a wrong password is
        # AccessDenied, an unknown model "Object x doesn't exist":
        # https://github.com/odoo/odoo/blob/17.0/odoo/service/model.py
        if method not in ("execute", "execute_kw"):
            raise RpcError("builtins.NameError", f"Method not available {method}")
        if len(args) < 3:
            raise RpcError("builtins.IndexError", "tuple index out of range")
        db, uid, password = args[:3]
        self._check_db(db)
        if uid != self.uid or password != self.api_key:
            raise RpcError(ACCESS_DENIED, "Access Denied")  # security.check(db, uid, passwd)
        if method != "execute_kw" or len(args) not in (6, 7):
            raise _type_error("execute_kw() takes from 6 to 7 positional arguments")
        model_name, model_method, margs = args[3], args[4], args[5]
        kwargs = args[6] if len(args) == 7 else {}
        if not isinstance(margs, list) or not isinstance(kwargs, dict):
            raise _type_error("execute_kw() args must be a list and kwargs a dict")
        kwargs = dict(kwargs)  # the recorded request must stay as it was sent
        if isinstance(model_method, str) and model_method.startswith("_"):
            raise RpcError(
                ACCESS_ERROR,
                f"Private methods (such as {model_name}.{model_method}) cannot be called remotely.",
            )
        model = self.models.get(model_name)
        if model is None:
            raise RpcError(USER_ERROR, f"Object {model_name} doesn't exist")
        if model_method not in model.methods:
            raise RpcError(
                "builtins.AttributeError",
                f"The method '{model_method}' does not exist on the model '{model_name}'",
            )
        context = kwargs.pop("context", {}) if isinstance(kwargs.get("context", {}), dict) else None
        if context is None:
            raise _type_error("context must be a dict")
        with self._lock:
            handler = getattr(self, "_m_" + model_method.replace(".", "_"))
            return handler(model, margs, kwargs, context)

    # ---------------------------------------------------------------- ORM methods
    @staticmethod
    def _bind(method: str, names: list[str], args: list, kwargs: dict, required: int = 0) -> dict[str, Any]:
        if len(args) > len(names):
            raise _type_error(
                f"{method}() takes {len(names)} positional arguments but {len(args)} were given"
            )
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names:
                raise _type_error(f"{method}() got an unexpected keyword argument '{key}'")
            if key in bound:
                raise _type_error(f"{method}() got multiple values for argument '{key}'")
            bound[key] = value
        missing = [n for n in names[:required] if n not in bound]
        if missing:
            raise _type_error(f"{method}() missing required positional argument: '{missing[0]}'")
        return bound

    def _m_fields_get(self, model: _Model, args: list, kwargs: dict, context: dict) -> dict[str, Any]:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#list-record-fields
        bound = self._bind("fields_get", ["allfields", "attributes"], args, kwargs)
        attributes = bound.get("attributes")
        if attributes is not None and not isinstance(attributes, list):
            raise _type_error("attributes must be a list")
        out = {}
        for name, (ftype, comodel) in model.fields.items():
            description = {
                "type": ftype,
                "string": name.replace("_", " ").title(),
                "store": name != "phone_mobile_search",
            }
            if comodel:
                description["relation"] = comodel
            out[name] = {k: v for k, v in description.items() if attributes is None or k in attributes}
        allfields = bound.get("allfields")
        if allfields:
            out = {k: v for k, v in out.items() if k in allfields}
        return out

    def _m_search_read(self, model: _Model, args: list, kwargs: dict, context: dict) -> list[dict[str, Any]]:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#search-and-read
        # and #pagination: search_read(domain, fields, offset, limit, order)
        bound = self._bind("search_read", ["domain", "fields", "offset", "limit", "order"], args, kwargs)
        fields = self._check_fields(model, bound.get("fields"))
        records = self._search(model, bound.get("domain") or [], bound, context)
        return self._read(model, records, fields)

    def _m_search(self, model: _Model, args: list, kwargs: dict, context: dict) -> list[int]:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#list-records
        bound = self._bind("search", ["domain", "offset", "limit", "order"], args, kwargs, required=1)
        return [r["id"] for r in self._search(model, bound["domain"], bound, context)]

    def _m_search_count(self, model: _Model, args: list, kwargs: dict, context: dict) -> int:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#count-records
        bound = self._bind("search_count", ["domain", "limit"], args, kwargs, required=1)
        return len(self._search(model, bound["domain"], {}, context))

    def _search(self, model: _Model, domain: Any, bound: dict, context: dict) -> list[dict[str, Any]]:
        offset, limit = bound.get("offset") or 0, bound.get("limit")
        if not isinstance(offset, int) or (
            limit is not None and limit is not False and not isinstance(limit, int)
        ):
            raise _type_error("offset and limit must be integers")
        records = self._filter(model, domain, context)
        records = self._order(model, records, bound.get("order"), lambda r, f: self._raw(model.name, r, f))
        records = records[offset:]
        return records[:limit] if limit else records

    def _m_read(self, model: _Model, args: list, kwargs: dict, context: dict) -> list[dict[str, Any]]:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#read-records
        # read(ids, fields); ids that no longer exist are left out
        bound = self._bind("read", ["ids", "fields", "load"], args, kwargs, required=1)
        ids = bound["ids"]
        if isinstance(ids, int):
            ids = [ids]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _type_error("read() expects a list of record ids")
        fields = self._check_fields(model, bound.get("fields"))
        return self._read(model, [model.records[i] for i in ids if i in model.records], fields)

    def _record_ids(self, method: str, ids: Any) -> list[int]:
        if isinstance(ids, int) and not isinstance(ids, bool):
            return [ids]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _type_error(f"{method}(): the first argument must be the record ids")
        return ids

    def _m_message_post(self, model: _Model, args: list, kwargs: dict, context: dict) -> int:
        # https://www.odoo.com/documentation/17.0/developer/reference/backend/mixins.html#messaging-integration
        # message_post on a record (ids first), keyword arguments only; body is escaped when a str
        # unless body_is_html=True (17.0+; 16.0 stores it as HTML).
        if len(args) != 1:
            raise _type_error("message_post() takes 1 positional argument (the record ids)")
        ids = self._record_ids("message_post", args[0])
        if len(ids) != 1:
            raise _value_error(f"Expected singleton: res.partner{tuple(ids)!r}")
        allowed = {
            "body",
            "subject",
            "message_type",
            "subtype_xmlid",
            "subtype_id",
            "author_id",
            "partner_ids",
            "parent_id",
            "email_from",
            "attachments",
            "attachment_ids",
        }
        if self.version_info >= (17, 0):
            allowed.add("body_is_html")
        for key in kwargs:
            if key not in allowed:
                raise _type_error(f"message_post() got an unexpected keyword argument '{key}'")
        record = model.records.get(ids[0])
        if record is None:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        message_type = kwargs.get("message_type", "notification")
        if message_type not in ("comment", "notification", "email", "auto_comment"):
            raise _value_error(f"Wrong value for mail.message.message_type: {message_type!r}")
        subtype = kwargs.get("subtype_xmlid")
        if subtype not in (None, "mail.mt_note", "mail.mt_comment"):
            raise _value_error(f"External ID not found in the system: {subtype}")
        author = kwargs.get("author_id")
        if author is not None and author not in self.models["res.partner"].records:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        body = kwargs.get("body", "")
        if not isinstance(body, str):
            raise _type_error("body must be a string")
        if self.version_info >= (17, 0) and not kwargs.get("body_is_html"):
            body = html.escape(body)
        return self._post_message(
            ids[0],
            body,
            message_type,
            subtype or "mail.mt_note",
            author or self.models["res.users"].records[self.uid]["partner_id"],
        )

    def _post_message(self, res_id: int, body: str, message_type: str, subtype: str, author: int) -> int:
        return self._insert(
            "mail.message",
            {
                "model": "res.partner",
                "res_id": res_id,
                "body": body,
                "message_type": message_type,
                "subtype_xmlid": subtype,
                "author_id": author,
                "date": self.tick(0),
            },
        )

    def _m_write(self, model: _Model, args: list, kwargs: dict, context: dict) -> bool:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#update-records
        # write(ids, vals) -> True; only mail.message offers it here (MailMessage.write)
        bound = self._bind("write", ["ids", "vals"], args, kwargs, required=2)
        ids = self._record_ids("write", bound["ids"])
        values = bound["vals"]
        if not isinstance(values, dict):
            raise _type_error("write() expects a dict of values")
        for name, value in values.items():
            if name not in model.fields:
                raise _value_error(f"Invalid field {name!r} on model {model.name!r}")
            if name in ("model", "res_id"):
                raise RpcError(ACCESS_ERROR, "Only administrators can modify 'model' and 'res_id' fields.")
            self._check_value(model, name, value)
        missing = [i for i in ids if i not in model.records]
        if missing:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.\n"
                                          f"(Record: {model.name}({missing[0]},), User: {self.uid})")
        stored = {k: v for k, v in values.items() if k not in ("id", "preview")}  # dropped by the ORM
        for record_id in ids:
            model.records[record_id].update(stored)
        return True

    def _check_value(self, model: _Model, name: str, value: Any) -> None:
        """A value of the field's type, as the ORM converts it (``False`` empties any field)."""
        ftype, comodel = model.fields[name]
        if value is False:
            return
        if ftype in ("char", "html", "text") and not isinstance(value, str):
            raise _value_error(f"Wrong value for {model.name}.{name}: {value!r}")
        if ftype == "selection" and name == "message_type" and value not in (
            "email", "comment", "notification", "auto_comment", "user_notification"
        ):
            raise _value_error(f"Wrong value for {model.name}.{name}: {value!r}")
        if ftype in ("integer", "many2one") and (not isinstance(value, int) or isinstance(value, bool)):
            raise _value_error(f"Wrong value for {model.name}.{name}: {value!r}")
        if ftype == "many2one" and value not in self.models[comodel].records:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        if ftype == "datetime" and (not isinstance(value, str) or _datetime(value) is None):
            raise _value_error(f"time data {value!r} does not match format '%Y-%m-%d %H:%M:%S'")

    def _m_create(self, model: _Model, args: list, kwargs: dict, context: dict) -> Any:
        # https://www.odoo.com/documentation/17.0/developer/reference/external_api.html#create-records
        # create({...}) -> id (a list of dicts -> list of ids)
        bound = self._bind("create", ["vals_list"], args, kwargs, required=1)
        values = bound["vals_list"]
        single = isinstance(values, dict)
        rows = [values] if single else values
        if not isinstance(rows, list) or not all(isinstance(v, dict) for v in rows):
            raise _type_error("create() expects a dict of values or a list of them")
        make = self._create_partner if model.name == "res.partner" else self._create_activity
        ids = [make(model, dict(v)) for v in rows]
        return ids[0] if single else ids

    def _create_partner(self, model: _Model, values: dict[str, Any]) -> int:
        # res.partner create: only stored fields; a contact needs a name (the model's SQL constraint
        # res_partner_check_name: type 'contact' requires a name); char fields take strings.
        for name, value in values.items():
            kind = model.fields.get(name, (None,))[0]
            if kind is None or name in ("id", "display_name", "commercial_partner_id", "commercial_company_name",
                                        "write_date", "create_date", "phone_mobile_search"):
                raise _value_error(f"Invalid field {name!r} on model {model.name!r}")
            if kind == "char" and value is not False and not isinstance(value, str):
                raise _value_error(f"{name} must be a string")
        if values.get("type", "contact") == "contact" and not values.get("name"):
            raise RpcError("odoo.exceptions.ValidationError", "Contacts require a name")
        stamp = self.tick()
        return self._insert("res.partner", self._partner_row(values.pop("name"), **values, write_date=stamp,
                                                             create_date=stamp))

    def _create_activity(self, model: _Model, values: dict[str, Any]) -> int:
        for name in values:
            if name not in model.fields or name in ("id", "res_model"):
                raise _value_error(f"Invalid field {name!r} on model {model.name!r}")
        model_id = values.get("res_model_id")
        ir_model = self.models["ir.model"].records.get(model_id)
        if ir_model is None:
            raise _value_error("mail.activity needs res_model_id, the id of an ir.model")
        target = self.models.get(ir_model["model"])
        if (
            not isinstance(values.get("res_id"), int)
            or target is None
            or values["res_id"] not in target.records
        ):
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        type_id = values.get("activity_type_id")
        if type_id is not None and type_id not in self.models["mail.activity.type"].records:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        user_id = values.setdefault("user_id", self.uid)
        if user_id not in self.models["res.users"].records:
            raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
        deadline = values.get("date_deadline")
        if not isinstance(deadline, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", deadline):
            raise _value_error(f"time data {deadline!r} does not match format '%Y-%m-%d'")
        for text in ("summary", "note"):
            if values.get(text) is not None and not isinstance(values[text], str):
                raise _value_error(f"{text} must be a string")
        return self._insert("mail.activity", values)

    def _m_action_feedback(self, model: _Model, args: list, kwargs: dict, context: dict) -> Any:
        # https://www.odoo.com/documentation/17.0/developer/reference/backend/mixins.html#activities-tracking
        # https://github.com/odoo/odoo/blob/17.0/addons/mail/models/mail_activity.py
        # action_feedback(feedback=False, attachment_ids=None) marks the activity done, posts the
        # "activity done" message on the document and returns that message's id.
        if len(args) != 1:
            raise _type_error("action_feedback() takes 1 positional argument (the record ids)")
        ids = self._record_ids("action_feedback", args[0])
        self._bind("action_feedback", ["feedback", "attachment_ids"], [], kwargs)
        message_ids = []
        for activity_id in ids:
            activity = model.records.get(activity_id)
            if activity is None:
                raise RpcError(MISSING_ERROR, "Record does not exist or has been deleted.")
            type_name = (
                self.models["mail.activity.type"]
                .records.get(activity.get("activity_type_id"), {})
                .get("name")
            )
            feedback = kwargs.get("feedback")
            body = (
                f"<div><p><span>{html.escape(type_name or 'Activity')}</span> done"
                f"{': ' + html.escape(activity['summary']) if activity.get('summary') else ''}</p>"
                f"{activity.get('note') or ''}"
                f"{'<div>Feedback: ' + html.escape(feedback) + '</div>' if feedback else ''}</div>"
            )
            user = self.models["res.users"].records[activity["user_id"]]
            message_ids.append(
                self._post_message(
                    activity["res_id"], body, "notification", "mail.mt_activities", user["partner_id"]
                )
            )
            del model.records[activity_id]
        return message_ids[0] if message_ids else False


def _datetime(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _compare(get: Callable[[dict], Any], operator: str, value: Any) -> Callable[[dict], bool]:
    def empty(v: Any) -> bool:
        return v is None or v is False or v == ""

    if operator in ("=", "!="):

        def equal(record: dict) -> bool:
            current = get(record)
            if value is False or value is None:
                return empty(current)
            return current == value

        return equal if operator == "=" else (lambda r: not equal(r))
    if operator in ("in", "not in"):
        if not isinstance(value, list):
            raise _value_error(f"the value of {operator!r} must be a list")

        def contained(record: dict) -> bool:
            return get(record) in value

        return contained if operator == "in" else (lambda r: not contained(r))
    if operator in (">", ">=", "<", "<="):
        fn = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le}[operator]

        def ordered(record: dict) -> bool:
            current = get(record)
            if empty(current):
                return False
            try:
                return fn(current, value)
            except TypeError as exc:
                raise _value_error(f"cannot compare {current!r} with {value!r}") from exc

        return ordered
    # https://www.odoo.com/documentation/17.0/developer/reference/backend/orm.html#reference-orm-domains
    # 'like'/'ilike' wrap the value in %...% (wildcards inside it stay wildcards); '=ilike' does not
    if not isinstance(value, str):
        raise _value_error(f"the value of {operator!r} must be a string")
    pattern = value if operator.startswith("=") else f"%{value}%"
    regex = _like_regex(pattern, ignore_case="ilike" in operator)
    negative = operator.startswith("not")

    def like(record: dict) -> bool:
        current = get(record)
        matched = isinstance(current, str) and regex.fullmatch(current) is not None
        return not matched if negative else matched

    return like


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None or value is False:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))
