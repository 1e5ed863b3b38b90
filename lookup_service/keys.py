"""Every name this service gives a key in Redis, in one place.

All of them start with ``lookup:``, so one Redis can serve other applications too and
``redis-cli --scan --pattern 'lookup:*'`` lists this service's keys. Each function names the
module that writes the key; nothing else builds a Redis key by hand (a test checks the sources).
"""

from __future__ import annotations

PREFIX = "lookup:"

# lookup_service.cache: the answer cache and the engine's coordination
ANSWER = PREFIX
"""Prefix of the cached answers (the rest of the key is the engine's cache key)."""


def answer(key: str) -> str:
    """A cached answer: the rendered answer for the engine's cache key (tenant|number|generation)."""
    return ANSWER + key


def partial_answer(key: str) -> str:
    """The answer a process gave at the deadline without every backend, for the other processes
    waiting on its single-flight lock."""
    return ANSWER + "partial:" + key


def flight_lock(key: str) -> str:
    """The single-flight lock: held by the one process that asks the backends for ``key``."""
    return ANSWER + "lock:" + key


def contacts_listing(tenant: str, sync_timestamp: str) -> str:
    """lookup_service.contacts_api, through the cache (so under :data:`ANSWER`): when a client's
    listing of ``GET /contacts`` (with this ``syncTimestamp`` text) began, for its later pages."""
    return f"contacts-listing:{tenant}|{sync_timestamp}"


def rate_window(name: str, window: int) -> str:
    """The requests sent to backend ``name`` (``tenant:backend``) in the second ``window``."""
    return f"{PREFIX}rate:{name}:{window}"


def blocked(name: str) -> str:
    """Until when backend ``name`` asked (with a 429) to be sent nothing."""
    return f"{PREFIX}blocked:{name}"


# lookup_service.ledger: the workflow outbox and the results of the ledger before it
OUTBOX = PREFIX + "outbox:"


def outbox_item(key: str) -> str:
    return OUTBOX + "item:" + key


def outbox_claim(key: str) -> str:
    return OUTBOX + "claim:" + key


OUTBOX_DUE = OUTBOX + "due"
OUTBOX_FAILED = OUTBOX + "failed"


def workflow_result(key: str) -> str:
    """The result of a workflow call recorded by the ledger that came before the outbox; still
    the answer to a repeated call."""
    return PREFIX + "workflow:" + key
