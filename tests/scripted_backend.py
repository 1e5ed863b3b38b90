"""A backend whose behaviour each test scripts (delay, failure, answers) and whose calls it counts.

It is a real backend type registered in the registry, driven through the real engine and HTTP
layer; only its data source is a dictionary instead of a CRM. It exists to test the engine's
deadline, single flight, circuit breaker and rate limiting, which need a source that misbehaves
on cue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from marshmallow import fields

from crm_backends import registry
from crm_backends.base import Backend, BackendOptions
from lookup_core.errors import BackendUnavailable, RateLimited
from lookup_core.phone import PhoneNumber
from lookup_core.types import CallRecord, Contact, CrmUser, WorkflowResult


@dataclass
class Script:
    contacts: dict[str, list[Contact]] = field(default_factory=dict)  # number key -> contacts
    delay: float = 0.0
    fail: Exception | None = None
    calls: int = 0
    logged: list[CallRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event | None = None  # when set, lookups block until it is set
    people: list[Contact] = field(default_factory=list)  # what a search by name finds
    search_fail: Exception | None = None
    searches: int = 0
    users: list[CrmUser] = field(default_factory=list)  # the CRM's users (flask --app wsgi users)
    users_fail: Exception | None = None
    user_reads: int = 0
    owners: list[str | None] = field(default_factory=list)  # the owner of each logged call


SCRIPTS: dict[str, Script] = {}


class ScriptedOptions(BackendOptions):
    script = fields.String(required=True)
    inline = fields.Boolean(load_default=False)  # stand in for a local index (run in the request thread)


class ScriptedBackend(Backend):
    type_name: ClassVar[str] = "scripted"
    options_schema = ScriptedOptions
    modes = frozenset({"live"})
    workflows = frozenset({"CallFlow"})
    search_by_name = True
    users = True
    default_crm_name = "Scripted"

    @property
    def inline(self) -> bool:  # type: ignore[override]
        return self.options["inline"]

    @property
    def script(self) -> Script:
        return SCRIPTS[self.options["script"]]

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        script = self.script
        with script.lock:
            script.calls += 1
        if script.release is not None:
            script.release.wait(10)
        if script.delay:
            time.sleep(script.delay)
        if script.fail is not None:
            raise script.fail
        return list(script.contacts.get(number.key, []))[:limit]

    def search(self, term: str, limit: int) -> list[Contact]:
        script = self.script
        with script.lock:
            script.searches += 1
        if script.search_fail is not None:
            raise script.search_fail
        words = term.casefold().split()
        return [c for c in script.people if all(w in (c.name or "").casefold() for w in words)][:limit]

    def list_users(self) -> list[CrmUser]:
        script = self.script
        with script.lock:
            script.user_reads += 1
        if script.users_fail is not None:
            raise script.users_fail
        return list(script.users)

    def log_call(self, call: CallRecord) -> WorkflowResult:
        self.script.owners.append(self.owner_for(call.user_id))
        self.script.logged.append(call)
        return WorkflowResult(id=f"{self.name}-call-{len(self.script.logged)}", url=None)


registry.register("scripted", "tests.scripted_backend:ScriptedBackend")

__all__ = ["SCRIPTS", "BackendUnavailable", "RateLimited", "Script", "ScriptedBackend"]
