"""Contact sources. The registry (:mod:`crm_backends.registry`) names every backend type and
imports a backend's module only when a configuration uses it, so an optional client library is
needed only by the tenants that configure its backend."""

from .base import Backend, BackendSpec
from .registry import build, known_types

__all__ = ["Backend", "BackendSpec", "build", "known_types"]
