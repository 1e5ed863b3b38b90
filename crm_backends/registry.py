"""The registry of backend types and the one way to build a backend: :func:`build`.

Each type name maps to the module and class that implement it. A module is imported only when a
configuration names its type, so the optional client library of a backend nobody configured
(ldap3 for ``ldap``, jmespath for ``rest``, ...) need not be installed; when it is needed and
missing, the configuration is refused with a message naming the package.

Everything else about a type is declared on its class (:class:`~crm_backends.base.Backend`):
``type_name``, ``options_schema``, ``modes``, ``workflows``, ``search_by_name``, ``users``,
``creates_contacts`` and ``logs_messages``. The optional packages a type needs are found by
importing its module: a missing one is named in the error. Adding a backend is one line in ``TYPES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lookup_core.errors import BackendConfigError

from .base import Backend, BackendSpec, load_options

# type name -> "module:Class"; the explicit inventory (no scanning), so an unknown type fails loudly
TYPES: dict[str, str] = {
    "carddav": "crm_backends.carddav:CardDAVBackend",
    "directory": "crm_backends.directory:DirectoryBackend",
    "hubspot": "crm_backends.hubspot:HubSpotBackend",
    "ldap": "crm_backends.ldap:LdapBackend",
    "odoo": "crm_backends.odoo:OdooBackend",
    "pipedrive": "crm_backends.pipedrive:PipedriveBackend",
    "rest": "crm_backends.rest:RestBackend",
    "sql": "crm_backends.sql:SqlBackend",
}
SHIPPED = frozenset(TYPES)
# Our own packages: a failed import of one of these is a bug, never a missing optional package.
_OWN_PACKAGES = frozenset({"crm_backends", "lookup_core", "lookup_service", "config", "tests"})


def known_types() -> list[str]:
    return sorted(TYPES)


def register(type_name: str, target: str) -> None:
    """Add a type (``"module:Class"``) to the registry, e.g. a test's scripted backend."""
    current = TYPES.get(type_name)
    if current is not None and current != target:
        raise RuntimeError(f"backend type {type_name!r} is already registered as {current}")
    TYPES[type_name] = target


def backend_class(type_name: Any, where: str = "") -> type[Backend]:
    """The class of a type, imported now. A :class:`BackendConfigError` (key ``type``) for an unknown
    type, listing the known ones, or for a missing package the type needs, naming it."""
    prefix = f"{where}, key 'type'" if where else "key 'type'"
    target = TYPES.get(type_name) if isinstance(type_name, str) else None
    if target is None:
        raise BackendConfigError(
            f"{prefix}: unknown backend type {type_name!r}; known: {known_types()}", key="type"
        )
    module_name, _, class_name = target.partition(":")
    with _packages_of(type_name, prefix):
        module = importlib.import_module(module_name)
    return getattr(module, class_name)


@contextmanager
def _packages_of(type_name: str, prefix: str) -> Iterator[None]:
    """A package missing while a backend type is imported or built (some import a driver only for
    some options) is a configuration error naming it; a module of ours missing is a bug, raised."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if not package or package in _OWN_PACKAGES:
            raise
        raise BackendConfigError(
            f"{prefix}: backend type {type_name!r} needs the Python package {package!r}, which is not installed "
            f"(pip install {package}, or the pinned version from requirements.txt)", key="type") from None


def load_spec(
    table: Mapping[str, Any], tenant: str, where: str, known_workflows: tuple[str, ...], **placement: Any
) -> BackendSpec:
    """Validate one ``[[tenant.backend]]`` table into a :class:`BackendSpec`: the type exists and
    is importable, the options pass its schema, the mode and the workflows are ones it offers.
    ``placement`` fills the spec's tenant-wide fields (``default_region``, ``deadline_s``, ...)."""
    kind = table.get("type")
    cls = backend_class(kind, where)
    options = load_options(cls, dict(table), where)
    mode = options.get("mode") or ("live" if "live" in cls.modes else "mirror")
    if mode not in cls.modes:
        raise BackendConfigError(
            f"{where}, key 'mode': {mode!r} is not supported by type {kind!r}; use one of {sorted(cls.modes)}",
            key="mode",
        )
    wanted = options.get("workflows")
    for workflow in wanted or []:
        if workflow not in known_workflows:
            raise BackendConfigError(
                f"{where}, key 'workflows': unknown workflow {workflow!r}; known: {list(known_workflows)}",
                key="workflows",
            )
    offered = cls.workflows_for(options)
    for workflow in wanted or []:
        if workflow not in offered:
            raise BackendConfigError(
                f"{where}, key 'workflows': type {kind!r} cannot run {workflow!r}"
                + (" (configure its call logging first)" if workflow == "CallFlow" else ""),
                key="workflows",
            )
    workflows = tuple(wanted) if wanted is not None else tuple(w for w in known_workflows if w in offered)
    return BackendSpec(
        tenant=tenant, name=str(options["name"]), options=options, type=kind, mode=mode, workflows=workflows,
        **placement,
    )


def build_source(spec: BackendSpec) -> Backend:
    """The backend of the spec's type itself, never wrapped in a mirror (tests, benchmarks)."""
    cls = backend_class(spec.type, spec.where())
    with _packages_of(spec.type, spec.where()):
        return cls(spec)


def build(spec: BackendSpec) -> Backend:
    """The backend a spec describes, wrapped in its mirror when ``spec.mode`` is ``mirror``.
    Raises :class:`BackendConfigError` (a missing package included), never ImportError."""
    backend = build_source(spec)
    if spec.mode == "mirror":
        from .mirror import MirroredBackend

        try:
            return MirroredBackend(backend)
        except BaseException:
            backend.close()
            raise
    return backend


__all__ = ["SHIPPED", "TYPES", "backend_class", "build", "build_source", "known_types", "load_spec", "register"]
