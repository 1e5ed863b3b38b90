"""Cross-origin reads for browser clients (the contacts API, the adapter's /status): the origins
listed in a tenant's ``allowed_origins`` may read that tenant's answers, with preflight."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Response

from config.settings import TenantConfig


class CorsPolicy:
    def __init__(self, tenants: Iterable[TenantConfig], token_header: str):
        self.origins = {config.name: {o.lower() for o in config.allowed_origins} for config in tenants}
        self.every_origin = set().union(*self.origins.values()) if self.origins else set()
        self.allow_headers = f"{token_header}, Content-Type"

    def allows(self, origin: str | None, tenant: str | None) -> bool:
        """Whether ``origin`` may read an answer of ``tenant``; None (a preflight, which carries no
        token): of any tenant; the real request is checked again."""
        permitted = self.every_origin if tenant is None else self.origins.get(tenant, set())
        return bool(origin) and (origin.lower() in permitted or "*" in permitted)  # type: ignore[union-attr]

    def preflight(self, origin: str | None, methods: str) -> Response:
        response = Response(status=204, headers={"Allow": methods})
        del response.headers["Content-Type"]  # no body: not even an empty text/html one
        if self.allows(origin, None):
            response.headers.update({"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": methods,
                                     "Access-Control-Allow-Headers": self.allow_headers,
                                     "Access-Control-Max-Age": "600"})
        response.vary.add("Origin")
        return response

    def answer(self, response: Response, origin: str | None, tenant: str | None, expose: str = "") -> Response:
        """``response`` readable by ``origin`` when the tenant allows it (no tenant yet, e.g. a 401:
        when any tenant does, so the page can read the error)."""
        if self.allows(origin, tenant):
            response.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
            if expose:
                response.headers["Access-Control-Expose-Headers"] = expose
        response.vary.add("Origin")
        return response
