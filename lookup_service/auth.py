"""Who is asking: the token header selects the tenant. Tokens are compared in constant time."""

from __future__ import annotations

from collections.abc import Mapping

from lookup_core.redact import matching_token
from lookup_service.errors import ApiError
from lookup_service.logs import set_tenant
from lookup_service.tenants import Tenant


class TokenTable:
    def __init__(self, tenants: list[Tenant], header: str = "X-Execution-Token"):
        self.header = header
        self._tokens = [token.encode() for tenant in tenants for token in tenant.tokens]
        self._tenants = [tenant for tenant in tenants for _ in tenant.tokens]

    def tenant_for(self, presented: str | None) -> Tenant | None:
        """The tenant owning ``presented``, or None; every configured token is compared in constant
        time (:func:`lookup_core.redact.matching_token`)."""
        found = matching_token(presented, self._tokens)
        return None if found is None else self._tenants[found]

    def require(self, headers: Mapping[str, str]) -> Tenant:
        """The tenant whose token the request's header carries, named for its log lines; a 401
        JSON error when the header is missing or wrong."""
        tenant = self.tenant_for(headers.get(self.header))
        if tenant is None:
            raise ApiError(401, "unauthorized", f"missing or wrong {self.header} header")
        set_tenant(tenant.name)
        return tenant
