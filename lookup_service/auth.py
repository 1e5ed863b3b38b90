"""Who is asking: the token header selects the tenant. Tokens are compared in constant time."""

from __future__ import annotations

from lookup_core.redact import matching_token
from lookup_service.tenants import Tenant


class TokenTable:
    def __init__(self, tenants: list[Tenant]):
        self._tokens = [token.encode() for tenant in tenants for token in tenant.tokens]
        self._tenants = [tenant for tenant in tenants for _ in tenant.tokens]

    def tenant_for(self, presented: str | None) -> Tenant | None:
        """The tenant owning ``presented``, or None; every configured token is compared in constant
        time (:func:`lookup_core.redact.matching_token`)."""
        found = matching_token(presented, self._tokens)
        return None if found is None else self._tenants[found]
