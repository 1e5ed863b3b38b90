"""The errors a contact source raises on purpose; the engine and the web layer act on their kind."""

from __future__ import annotations


class BackendError(Exception):
    """Base of every error a backend raises on purpose."""


class BackendUnavailable(BackendError):
    """The source could not answer this time (down, slow, refused, garbage). The engine logs it,
    counts it against the circuit breaker and answers with what the other backends found."""


class RateLimited(BackendUnavailable):
    """The source asked us to slow down (HTTP 429). ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CredentialsRejected(BackendUnavailable):
    """The source refused our credentials (401/403, bad bind). Logged once, not per request."""


class ContactNotFound(BackendError):
    """A workflow named a contact id the backend does not know (the API answers 404)."""


class DeliveryRefused(BackendError):
    """The CRM refused the record for good (400/404/422: a field rejected, the target gone);
    retrying cannot help."""


class RecordGone(DeliveryRefused):
    """The record an update was for is not in the CRM any more (deleted there). The outbox then
    makes the record again from the whole call or digest, rather than losing what came later."""


class BackendConfigError(BackendError):
    """The configuration of a backend is wrong. ``key`` names the offending setting."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key
