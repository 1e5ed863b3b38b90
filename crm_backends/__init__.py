"""Contact sources. Each module registers one backend type; the list below is the registry's
explicit inventory (no filesystem scanning), so an unknown ``type`` fails loudly at start-up."""

from . import (
    carddav,  # noqa: F401
    directory,  # noqa: F401
    hubspot,  # noqa: F401
    ldap,  # noqa: F401
    odoo,  # noqa: F401
    pipedrive,  # noqa: F401
    rest,  # noqa: F401
    sql,  # noqa: F401
)
from .base import BACKEND_TYPES, Backend, BackendSpec

__all__ = ["BACKEND_TYPES", "Backend", "BackendSpec"]
