"""Business workflows (``POST /<workflowName>``): turning the connector's payload into a call
record, routing it to the backend that produced the contact, and running it exactly once."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from crm_backends.base import (
    BackendUnavailable,
    CallRecord,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
    WorkflowResult,
)
from lookup_service.errors import ApiError
from lookup_service.ledger import Ledger, WorkflowInProgress
from lookup_service.phone import mask
from lookup_service.schemas import WorkflowInputs
from lookup_service.tenants import BackendSlot, Tenant
from lookup_service.timeparse import InvalidTime, parse_time

log = logging.getLogger(__name__)

_DIRECTIONS = {"incoming": "incoming", "inbound": "incoming", "in": "incoming",
               "outgoing": "outgoing", "outbound": "outgoing", "out": "outgoing"}
_TIME_FIELDS = ("startedTime", "answeredTime", "endedTime", "declinedTime")
_INPUTS_SCHEMA = WorkflowInputs()


def run_workflow(
    tenant: Tenant,
    workflow: str,
    inputs: Mapping[str, Any],
    ledger: Ledger,
    naive_zone: str,
) -> tuple[WorkflowResult, bool]:
    """Run ``workflow`` for ``inputs``; returns (result, created_now). Raises :class:`ApiError`."""
    try:
        data = _INPUTS_SCHEMA.load(inputs)
    except ValidationError as exc:
        field, messages = next(iter(exc.messages.items()))  # type: ignore[union-attr]
        text = messages[0] if isinstance(messages, list) else str(messages)
        raise ApiError(400, "invalid_input", f"inputs.{field}: {text}") from None
    slot, native_id = route(tenant, workflow, data["contactCrmId"].strip())
    call = _call_record(tenant, workflow, slot, native_id, data, naive_zone)

    def create() -> WorkflowResult:
        return slot.backend.log_call(call)

    try:
        result, created = ledger.run_once(call.key, create)
    except WorkflowInProgress:
        raise ApiError(409, "in_progress", "the same call is being recorded by another request; retry in a moment",
                       {"Retry-After": "1"}) from None
    except ContactNotFound as exc:
        raise ApiError(404, "unknown_contact", f"{exc}; use the id returned by /Lookup") from None
    except DeliveryRefused as exc:
        log.warning("workflow %s on %s/%s refused: %s", workflow, tenant.name, slot.name, exc)
        raise ApiError(422, "delivery_refused", f"{slot.name} refused the call record; nothing was recorded") from None
    except RateLimited as exc:
        retry = str(int(exc.retry_after or 1) or 1)
        raise ApiError(503, "backend_busy", f"{slot.name} asks to slow down; retry in {retry}s; nothing was recorded",
                       {"Retry-After": retry}) from None
    except CredentialsRejected as exc:
        log.error("workflow %s on %s/%s: credentials rejected: %s", workflow, tenant.name, slot.name, exc)
        raise ApiError(503, "backend_credentials", f"{slot.name} rejected the service's credentials; "
                       "nothing was recorded; the administrator must renew them") from None
    except BackendUnavailable as exc:
        log.warning("workflow %s on %s/%s failed: %s", workflow, tenant.name, slot.name, exc)
        raise ApiError(503, "backend_unavailable", f"{slot.name} is unavailable; nothing was recorded; retry later",
                       {"Retry-After": "5"}) from None
    log.info("workflow %s on %s/%s: %s call with %s -> %s%s", workflow, tenant.name, slot.name, call.status,
             mask(call.remote_number), result.id, "" if created else " (already recorded)")
    return result, created


def route(tenant: Tenant, workflow: str, contact_id: str) -> tuple[BackendSlot, str]:
    """The backend that produced ``contact_id`` (``<backend>:<id>``) and the backend's own id."""
    prefix, sep, rest = contact_id.partition(":")
    slot = tenant.by_name.get(prefix) if sep else None
    if slot is not None:
        if workflow not in slot.workflows:
            raise ApiError(404, "unknown_workflow", f"backend {slot.name!r} does not offer {workflow!r}; it offers "
                           f"{slot.workflows or 'no workflow'}")
        return slot, rest
    offering = [s for s in tenant.slots if workflow in s.workflows]
    if len(offering) == 1:
        return offering[0], contact_id
    raise ApiError(400, "invalid_input", "inputs.contactCrmId: not an id returned by /Lookup "
                   "(expected '<backend>:<id>', e.g. 'directory:42')")


def _call_record(tenant: Tenant, workflow: str, slot: BackendSlot, native_id: str, data: dict, zone: str) -> CallRecord:
    times = {}
    for name in _TIME_FIELDS:
        try:
            times[name] = parse_time(data.get(name), zone)
        except InvalidTime as exc:
            raise ApiError(400, "invalid_time", f"inputs.{name}: {exc}") from None
    raw_direction = (data.get("direction") or "").strip().lower()
    direction = _DIRECTIONS.get(raw_direction)
    if direction is None:
        raise ApiError(400, "invalid_input", "inputs.direction: must be 'incoming' or 'outgoing'")
    fingerprint: list[Any] = [
        tenant.name, workflow, slot.name, native_id, direction,
        _digits(data.get("originatorNumber")), _digits(data.get("destinationNumber")),
    ]
    started = times["startedTime"]
    # The automatic CallFlow (after the call) and a click (maybe during it) differ in their end
    # times; the start identifies the call. Without a start, every time is part of the identity.
    fingerprint += [started.isoformat()] if started else [t.isoformat() if t else None for t in times.values()]
    key = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()
    return CallRecord(
        contact_id=native_id,
        direction=direction,
        originator_number=_clean(data.get("originatorNumber")),
        originator_name=_clean(data.get("originatorName")),
        destination_number=_clean(data.get("destinationNumber")),
        destination_name=_clean(data.get("destinationName")),
        started=started,
        answered=times["answeredTime"],
        ended=times["endedTime"],
        declined=times["declinedTime"],
        user_id=_clean(data.get("userCrmId")),
        key=key,
    )


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")
