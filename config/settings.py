"""Settings: environment variables (12-factor) and, optionally, a TOML file of tenants and backends.

Everything is read and validated by :func:`load_settings`, called from ``create_app`` (never at
import time). A mistake is a :class:`ConfigError` whose message names the file, the tenant, the
backend and the key, and the process refuses to start.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lookup_core.redact import secret_values

if TYPE_CHECKING:
    from crm_backends.base import BackendSpec

MAX_RESULTS_CAP = 5  # the connector's documented recommendation; a lower cap may be configured
KNOWN_WORKFLOWS = ("CallFlow",)


class ConfigError(Exception):
    """The configuration is invalid; the message says where and how to fix it."""


@dataclass
class TenantConfig:
    name: str
    tokens: list[str]
    backends: list[BackendSpec]  # validated by the registry (crm_backends.registry.load_spec)
    default_region: str = "CH"
    deadline_ms: int = 1500
    max_results: int = MAX_RESULTS_CAP
    cache_ttl: float = 300.0
    negative_cache_ttl: float = 60.0
    # the contacts API (lookup_service/contacts_api.py)
    contacts_service_name: str = "PhoneLookup"
    page_size: int = 500
    allowed_origins: list[str] = field(default_factory=list)
    # CreateContact and the unknown-caller entry (README "Creating contacts")
    create_contacts_in: str | None = None
    unknown_caller_entry: bool = False
    unknown_caller_text: str = "Unknown caller \u2013 create contact"
    new_contact_name: str = "Unknown caller {number}"
    timezone: str | None = None  # the day of SMS digests (None: LOOKUP_TIMEZONE)


@dataclass
class Settings:
    tenants: list[TenantConfig]
    source: str = "environment"
    token_header: str = "X-Execution-Token"
    response_keys: str = "camel"
    redis_url: str | None = None
    database_url: str | None = None  # PostgreSQL (DATABASE_URL): the directory's contacts and call records
    metrics_token: str | None = None
    state_db: str = "instance/state.sqlite3"
    instance_dir: str = "instance"
    naive_timezone: str = "UTC"
    log_level: str = "INFO"
    log_format: str = "text"
    backend_threads: int = 32
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    max_body_bytes: int = 64 * 1024
    phone_index: bool = True
    database_url: str | None = None  # PostgreSQL for the shared state (postgres:// or postgresql://)
    workflow_deadline_ms: int = 4000  # a workflow answers within this; later deliveries go on in the background
    workflow_max_age: float = 7 * 86400.0  # how long the outbox keeps trying to deliver a call
    workflow_retry_base: float = 2.0  # first pause of the outbox's exponential backoff, seconds
    outbox_warn_age: float = 900.0  # a pending call older than this is a readiness problem
    extra: dict[str, Any] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Every token and secret option value, for the log redaction filter."""
        values = [token for tenant in self.tenants for token in tenant.tokens]
        if self.metrics_token:
            values.append(self.metrics_token)
        if self.database_url:
            values.append(self.database_url)
            password = urlsplit(self.database_url).password
            if password:
                values.append(password)
        for tenant in self.tenants:
            for backend in tenant.backends:
                values.extend(secret_values(backend.options))
        return [v for v in values if isinstance(v, str) and len(v) >= 4]


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the environment (``overrides`` win, for tests) and the TOML file it names, if any."""
    env: dict[str, Any] = dict(os.environ)
    if overrides:
        env.update({k: v for k, v in overrides.items() if v is not None})
    base = _base_settings(env)
    path = env.get("LOOKUP_CONFIG")
    if path:
        return _load_file(str(path), base, env)
    base.tenants = [_tenant_from_environment(env, base)]
    _check_tokens(base, "the environment")
    return base


def _base_settings(env: Mapping[str, Any]) -> Settings:
    where = "environment"
    settings = Settings(tenants=[])
    settings.token_header = str(env.get("LOOKUP_TOKEN_HEADER") or settings.token_header).strip()
    settings.response_keys = _response_keys(env.get("LOOKUP_RESPONSE_KEYS") or "camel", "LOOKUP_RESPONSE_KEYS")
    settings.redis_url = env.get("REDIS_URL") or None
    settings.database_url = _database_url(env.get("DATABASE_URL"))
    settings.metrics_token = env.get("LOOKUP_METRICS_TOKEN") or None
    settings.instance_dir = str(env.get("LOOKUP_INSTANCE_DIR") or "instance")
    settings.state_db = str(env.get("LOOKUP_STATE_DB") or os.path.join(settings.instance_dir, "state.sqlite3"))
    settings.naive_timezone = str(env.get("LOOKUP_TIMEZONE") or "UTC")
    settings.database_url = str(env.get("DATABASE_URL") or "").strip() or None
    if settings.database_url and not settings.database_url.startswith(("postgres://", "postgresql://", "postgresql+")):
        raise ConfigError("DATABASE_URL: expected a postgres:// or postgresql:// URL")
    settings.workflow_deadline_ms = _int(env, "LOOKUP_WORKFLOW_DEADLINE_MS", 4000, where, minimum=100)
    settings.workflow_max_age = _float(env, "LOOKUP_WORKFLOW_MAX_AGE", 7 * 86400.0, where)
    settings.workflow_retry_base = _float(env, "LOOKUP_WORKFLOW_RETRY_BASE", 2.0, where)
    settings.outbox_warn_age = _float(env, "LOOKUP_OUTBOX_WARN_AGE", 900.0, where)
    settings.log_level = str(env.get("LOG_LEVEL") or "INFO").upper()
    settings.log_format = str(env.get("LOG_FORMAT") or "text").strip().lower()
    if settings.log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT: {settings.log_format!r} is neither text nor json")
    settings.backend_threads = _int(env, "LOOKUP_BACKEND_THREADS", 32, where, minimum=1)
    settings.breaker_failures = _int(env, "LOOKUP_BREAKER_FAILURES", 5, where, minimum=1)
    settings.breaker_cooldown_s = _float(env, "LOOKUP_BREAKER_COOLDOWN", 30.0, where)
    phone_index = str(env.get("LOOKUP_PHONE_INDEX") or "1").strip().lower()
    if phone_index not in ("1", "0", "true", "false", "on", "off"):
        raise ConfigError(f"LOOKUP_PHONE_INDEX: {phone_index!r} is neither 1 nor 0")
    settings.phone_index = phone_index in ("1", "true", "on")
    try:
        ZoneInfo(settings.naive_timezone)
    except Exception:
        raise ConfigError(f"LOOKUP_TIMEZONE: unknown time zone {settings.naive_timezone!r}") from None
    if not re.fullmatch(r"[A-Za-z0-9-]+", settings.token_header):
        raise ConfigError(f"LOOKUP_TOKEN_HEADER: {settings.token_header!r} is not a valid HTTP header name")
    return settings


def _database_url(value: Any) -> str | None:
    """DATABASE_URL as a PaaS add-on gives it: ``postgres://user:password@host:port/database``."""
    text = str(value or "").strip()
    if not text:
        return None
    if not re.match(r"postgres(ql)?(\+psycopg)?://", text):
        scheme = text.split("://")[0] if "://" in text else "no scheme"
        raise ConfigError(f"DATABASE_URL: expected postgres://user:password@host:port/database, got {scheme}://...")
    return text


def _tenant_from_environment(env: Mapping[str, Any], base: Settings) -> TenantConfig:
    where = "environment"
    region = _region(env.get("LOOKUP_DEFAULT_REGION") or "CH", "LOOKUP_DEFAULT_REGION")
    deadline_ms = _int(env, "LOOKUP_DEADLINE_MS", 1500, where, minimum=50)
    tokens = [t.strip() for t in str(env.get("LOOKUP_TOKENS") or "").split(",") if t.strip()]
    options = {
        "name": "directory",
        "type": "directory",
        "path": str(env.get("LOOKUP_DIRECTORY") or "instance/directory.sqlite3"),
        "call_url_template": str(env.get("LOOKUP_CALL_URL_TEMPLATE") or ""),
    }
    for key, variable in (("crm_name", "LOOKUP_CRM_NAME"), ("crm_logo", "LOOKUP_CRM_LOGO")):
        if env.get(variable):
            options[key] = str(env[variable])
    backend = _backend_spec(options, "default", "the environment", base, region, deadline_ms)
    return TenantConfig(
        name="default",
        tokens=tokens,
        backends=[backend],
        default_region=region,
        deadline_ms=deadline_ms,
        max_results=_max_results(_int(env, "LOOKUP_MAX_RESULTS", MAX_RESULTS_CAP, where), "LOOKUP_MAX_RESULTS"),
        cache_ttl=_float(env, "LOOKUP_CACHE_TTL", 300.0, where),
        negative_cache_ttl=_float(env, "LOOKUP_NEGATIVE_CACHE_TTL", 60.0, where),
        contacts_service_name=str(env.get("LOOKUP_CONTACTS_SERVICE_NAME") or "PhoneLookup"),
        page_size=_int(env, "LOOKUP_PAGE_SIZE", 500, where, minimum=1),
        allowed_origins=_origins(str(env.get("LOOKUP_ALLOWED_ORIGINS") or "").split(","), "LOOKUP_ALLOWED_ORIGINS"),
    )


# --- the TOML file -------------------------------------------------------------------------------

_TOP_KEYS = {
    "default_region", "deadline_ms", "max_results", "cache_ttl", "negative_cache_ttl",
    "response_keys", "token_header", "tenant",
}
_TENANT_KEYS = {
    "name", "tokens", "default_region", "deadline_ms", "max_results", "cache_ttl",
    "negative_cache_ttl", "backend", "contacts_service_name", "page_size", "allowed_origins",
    "create_contacts_in", "unknown_caller_entry", "unknown_caller_text", "new_contact_name", "timezone",
}


def _load_file(path: str, base: Settings, env: Mapping[str, Any]) -> Settings:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (LOOKUP_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw = _substitute(raw, env, path, [])
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}; known: {sorted(_TOP_KEYS)}")
    base.source = path
    if "response_keys" in raw:
        base.response_keys = _response_keys(raw["response_keys"], f"{path}: key 'response_keys'")
    if "token_header" in raw:
        base.token_header = str(raw["token_header"])
    defaults = {
        "default_region": _region(raw.get("default_region", "CH"), f"{path}: key 'default_region'"),
        "deadline_ms": _number(raw, "deadline_ms", 1500, f"{path}", minimum=50, integer=True),
        "max_results": _max_results(_number(raw, "max_results", 5, path, integer=True), f"{path}: key 'max_results'"),
        "cache_ttl": _number(raw, "cache_ttl", 300.0, path),
        "negative_cache_ttl": _number(raw, "negative_cache_ttl", 60.0, path),
    }
    tenants_raw = raw.get("tenant")
    if not isinstance(tenants_raw, list) or not tenants_raw:
        raise ConfigError(f"{path}: no [[tenant]] table; add at least one tenant with a token and a backend")
    names: set[str] = set()
    for index, table in enumerate(tenants_raw):
        tenant = _tenant_from_table(table, index, defaults, path, base)
        if tenant.name in names:
            raise ConfigError(f"{path}: tenant {tenant.name!r} is defined twice")
        names.add(tenant.name)
        base.tenants.append(tenant)
    _check_tokens(base, path)
    return base


def _tenant_from_table(table: Any, index: int, defaults: dict[str, Any], path: str, base: Settings) -> TenantConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tenant #{index + 1} must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{path}: tenant #{index + 1}: key 'name' is required")
    where = f"{path}: tenant {name!r}"
    unknown = set(table) - _TENANT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known: {sorted(_TENANT_KEYS)}")
    tokens = table.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise ConfigError(f"{where}: key 'tokens' must be a non-empty list of strings")
    region = _region(table.get("default_region", defaults["default_region"]), f"{where}: key 'default_region'")
    deadline_ms = _number(table, "deadline_ms", defaults["deadline_ms"], where, minimum=50, integer=True)
    backends_raw = table.get("backend")
    if not isinstance(backends_raw, list) or not backends_raw:
        raise ConfigError(f"{where}: no [[tenant.backend]] table; add at least one backend")
    backends = []
    seen: set[str] = set()
    for b_index, b_table in enumerate(backends_raw):
        if not isinstance(b_table, dict):
            raise ConfigError(f"{where}: backend #{b_index + 1} must be a table")
        backend = _backend_spec(b_table, name, path, base, region, deadline_ms)
        if backend.name in seen:
            raise ConfigError(f"{where}: backend {backend.name!r} is defined twice")
        seen.add(backend.name)
        backends.append(backend)
    return TenantConfig(
        name=name,
        tokens=[t.strip() for t in tokens],
        backends=backends,
        default_region=region,
        deadline_ms=deadline_ms,
        max_results=_max_results(
            _number(table, "max_results", defaults["max_results"], where, integer=True), f"{where}: key 'max_results'"
        ),
        cache_ttl=_number(table, "cache_ttl", defaults["cache_ttl"], where),
        negative_cache_ttl=_number(table, "negative_cache_ttl", defaults["negative_cache_ttl"], where),
        **_contacts_options(table, where),
        **_contact_creation(table, backends, where),
    )


def _contacts_options(table: dict[str, Any], where: str) -> dict[str, Any]:
    """The tenant's contacts API options: ``contacts_service_name``, ``page_size``, ``allowed_origins``."""
    name = table.get("contacts_service_name", "PhoneLookup")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: key 'contacts_service_name' must be a non-empty string")
    page_size = _number(table, "page_size", 500, where, minimum=1, integer=True)
    if page_size > MAX_PAGE_SIZE:
        raise ConfigError(f"{where}: key 'page_size' must be at most {MAX_PAGE_SIZE}")
    origins = table.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError(f"{where}: key 'allowed_origins' must be a list of origins such as \"https://app.example.com\"")
    return {"contacts_service_name": name.strip(), "page_size": page_size,
            "allowed_origins": _origins(origins, f"{where}: key 'allowed_origins'")}


MAX_PAGE_SIZE = 5000


def _origins(values: list[str], where: str) -> list[str]:
    """Origins as browsers send them (scheme://host[:port], no path), or ``*``."""
    origins = []
    for value in (v.strip().rstrip("/") for v in values):
        if not value:
            continue
        if value != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", value):
            raise ConfigError(f"{where}: {value!r} is not an origin (scheme://host[:port], e.g. https://app.example.com)")
        origins.append(value.lower())
    return origins




def _contact_creation(table: dict[str, Any], backends: list[BackendSpec], where: str) -> dict[str, Any]:
    """The tenant's CreateContact settings: the backend named by ``create_contacts_in`` exists and
    can create contacts; the unknown-caller entry needs it."""
    from crm_backends.registry import backend_class

    values: dict[str, Any] = {}
    target = table.get("create_contacts_in")
    if target is not None:
        spec = next((b for b in backends if b.name == target), None)
        if spec is None:
            raise ConfigError(f"{where}: key 'create_contacts_in': no backend named {target!r}; "
                              f"this tenant has {[b.name for b in backends]}")
        if not backend_class(spec.type).can_create_contacts(spec.options):
            raise ConfigError(f"{where}: key 'create_contacts_in': backend {target!r} (type {spec.type!r}) cannot "
                              "create contacts; name a directory, sql (insert_contact_query), rest (create_contact), "
                              "odoo, pipedrive or hubspot backend")
        values["create_contacts_in"] = target
    entry = table.get("unknown_caller_entry", False)
    if not isinstance(entry, bool):
        raise ConfigError(f"{where}: key 'unknown_caller_entry' must be true or false")
    if entry and target is None:
        raise ConfigError(f"{where}: key 'unknown_caller_entry' needs 'create_contacts_in' (where to create)")
    values["unknown_caller_entry"] = entry
    for key in ("unknown_caller_text", "new_contact_name"):
        if key in table:
            text = table[key]
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}: key {key!r} must be a non-empty string")
            values[key] = text
    name = values.get("new_contact_name", "")
    if name and "{" in name.replace("{number}", ""):
        raise ConfigError(f"{where}: key 'new_contact_name': the only placeholder is {{number}}")
    if "timezone" in table:
        zone = table["timezone"]
        try:
            ZoneInfo(zone if isinstance(zone, str) else "")
        except (ValueError, OSError, ZoneInfoNotFoundError):
            raise ConfigError(f"{where}: key 'timezone': unknown time zone {zone!r} (an IANA name such as "
                              "'Europe/Zurich')") from None
        values["timezone"] = zone
    return values


def _backend_spec(
    table: dict[str, Any], tenant: str, source: str, base: Settings, region: str, deadline_ms: int
) -> BackendSpec:
    from crm_backends.registry import load_spec
    from lookup_core.errors import BackendConfigError

    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise ConfigError(
            f"{source}: tenant {tenant!r}: every backend needs a 'name' of letters, digits, '_', '.' or '-'"
        )
    where = f"{source}: tenant {tenant!r}, backend {name!r}"
    try:
        spec = load_spec(
            table, tenant, where, KNOWN_WORKFLOWS, default_region=region, deadline_s=deadline_ms / 1000.0,
            instance_dir=base.instance_dir, phone_index=base.phone_index,
        )
    except BackendConfigError as exc:
        raise ConfigError(str(exc)) from None
    if spec.type == "directory" and base.database_url and not spec.options.get("database_url"):
        spec = replace(spec, options={**spec.options, "database_url": base.database_url})  # the PaaS's PostgreSQL
    return spec


def _check_tokens(settings: Settings, source: str) -> None:
    seen: dict[str, str] = {}
    for tenant in settings.tenants:
        if not tenant.tokens:
            raise ConfigError(
                f"{source}: no token configured for tenant {tenant.name!r}. Set LOOKUP_TOKENS to one or more "
                "comma-separated secrets, e.g. "
                "LOOKUP_TOKENS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        for token in tenant.tokens:
            if len(token) < 8:
                raise ConfigError(f"{source}: tenant {tenant.name!r}: a token must have at least 8 characters")
            if token in seen and seen[token] != tenant.name:
                raise ConfigError(f"{source}: tenants {seen[token]!r} and {tenant.name!r} share a token")
            seen[token] = tenant.name


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, env: Mapping[str, Any], path: str, trail: list[str]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable not in env:
                place = ".".join(trail) or "top level"
                raise ConfigError(f"{path}: {place}: environment variable {variable} is not set")
            return str(env[variable])

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(v, env, path, [*trail, _label(v, i)]) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, env, path, [*trail, k]) for k, v in value.items()}
    return value


def _label(value: Any, index: int) -> str:
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return repr(value["name"])
    return f"#{index + 1}"


def _response_keys(value: Any, where: str) -> str:
    text = str(value).strip().lower()
    if text not in ("camel", "pascal"):
        raise ConfigError(f"{where}: must be 'camel' or 'pascal', not {value!r}")
    return text


def _region(value: Any, where: str) -> str:
    import phonenumbers

    text = str(value).strip().upper()
    if text not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"{where}: {value!r} is not a two-letter region code such as CH, DE or FR")
    return text


def _max_results(value: int, where: str) -> int:
    if not 1 <= value <= MAX_RESULTS_CAP:
        raise ConfigError(f"{where}: must be between 1 and {MAX_RESULTS_CAP}, not {value}")
    return value


def _int(env: Mapping[str, Any], name: str, default: int, where: str, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, Any], name: str, default: float, where: str) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative")
    return value


def _number(table: Mapping[str, Any], key: str, default: Any, where: str, minimum: float = 0, integer: bool = False):
    value = table.get(key, default)
    valid = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not valid:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{where}: key {key!r}: expected {kind}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: key {key!r}: must be at least {minimum}, got {value}")
    return value
