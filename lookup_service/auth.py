"""Who is asking: the token header selects the tenant. Tokens are compared in constant time."""

from __future__ import annotations

import hmac

from lookup_service.tenants import Tenant


class TokenTable:
    def __init__(self, tenants: list[Tenant]):
        self._entries = [(token.encode(), tenant) for tenant in tenants for token in tenant.tokens]

    def tenant_for(self, presented: str | None) -> Tenant | None:
        """The tenant owning ``presented``, or None. Every configured token is compared, with
        ``hmac.compare_digest``, so the time taken says nothing about which one came close."""
        if not presented:
            return None
        candidate = presented.encode("utf-8", "surrogateescape")
        found = None
        for token, tenant in self._entries:
            if hmac.compare_digest(candidate, token):
                found = tenant
        return found
