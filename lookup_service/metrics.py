"""Prometheus metrics (prometheus-client), one registry per app.

With several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory so that
``/metrics`` adds up every worker's figures (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

_BREAKER_VALUES = {"closed": 0.0, "half-open": 0.5, "open": 1.0}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.lookups = Counter("lookup_requests_total", "Lookups by outcome", ["tenant", "outcome"], registry=r)
        self.cache_misses = Counter("lookup_cache_misses_total", "Lookups not answered from cache", ["tenant"],
                                    registry=r)
        self.latency = Histogram(
            "lookup_backend_latency_seconds", "Time one backend took to answer a lookup", ["tenant", "backend"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5), registry=r,
        )
        self.errors = Counter("lookup_backend_errors_total", "Backend failures by kind", ["tenant", "backend", "kind"],
                              registry=r)
        self.skipped = Counter("lookup_backend_skipped_total", "Backends left out of a lookup, by reason",
                               ["tenant", "backend", "reason"], registry=r)
        self.breaker = Gauge("lookup_backend_breaker_state", "Circuit breaker: 0 closed, 0.5 half-open, 1 open",
                             ["tenant", "backend"], registry=r, multiprocess_mode="max")
        self.workflows = Counter("lookup_workflow_requests_total", "Workflow runs by outcome",
                                 ["tenant", "workflow", "outcome"], registry=r)
        self.last_sync = Gauge("lookup_mirror_last_sync_timestamp_seconds", "Start of the last mirror sync",
                               ["tenant", "backend"], registry=r, multiprocess_mode="max")
        self.last_sync_ok = Gauge("lookup_mirror_last_sync_success", "1 if the last mirror sync succeeded",
                                  ["tenant", "backend"], registry=r, multiprocess_mode="max")
        self.mirror_contacts = Gauge("lookup_mirror_contacts", "Contacts in the local mirror",
                                     ["tenant", "backend"], registry=r, multiprocess_mode="max")
        self.last_success = Gauge("lookup_mirror_last_success_timestamp_seconds",
                                  "Start of the last successful mirror sync (0: none yet)", ["tenant", "backend"],
                                  registry=r, multiprocess_mode="max")
        self.mirror_stale = Gauge("lookup_mirror_stale", "1 if the mirror has no successful sync within max_staleness",
                                  ["tenant", "backend"], registry=r, multiprocess_mode="mostrecent")
        self.request_latency = Histogram(
            "lookup_http_request_duration_seconds", "Time to answer a request, by endpoint", ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5), registry=r,
        )
        self._request_children: dict[str, Histogram] = {}
        self.outbox_deliveries = Counter("lookup_outbox_deliveries_total", "Outbox delivery attempts by outcome "
                                         "(delivered, retry, refused, expired)", ["tenant", "backend", "outcome"],
                                         registry=r)
        self.outbox_pending = Gauge("lookup_outbox_backlog", "Workflow calls waiting for delivery", registry=r,
                                    multiprocess_mode="max")
        self.outbox_oldest = Gauge("lookup_outbox_oldest_pending_age_seconds", "Age of the oldest call waiting for "
                                   "delivery (0 when none waits)", registry=r, multiprocess_mode="max")
        self._lookup_children: dict[tuple[str, str], Counter] = {}
        self._miss_children: dict[str, Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def lookup(self, tenant: str, outcome: str) -> None:
        # on the hot path: keep the bound children instead of resolving labels every time
        child = self._lookup_children.get((tenant, outcome))
        if child is None:
            child = self._lookup_children[(tenant, outcome)] = self.lookups.labels(tenant, outcome)
        child.inc()

    def cache_miss(self, tenant: str) -> None:
        child = self._miss_children.get(tenant)
        if child is None:
            child = self._miss_children[tenant] = self.cache_misses.labels(tenant)
        child.inc()

    def backend_latency(self, tenant: str, backend: str, seconds: float) -> None:
        child = self._latency_children.get((tenant, backend))
        if child is None:
            child = self._latency_children[(tenant, backend)] = self.latency.labels(tenant, backend)
        child.observe(seconds)

    def backend_error(self, tenant: str, backend: str, kind: str) -> None:
        self.errors.labels(tenant, backend, kind).inc()

    def backend_skipped(self, tenant: str, backend: str, reason: str) -> None:
        self.skipped.labels(tenant, backend, reason).inc()

    def breaker_state(self, tenant: str, backend: str, state: str) -> None:
        self.breaker.labels(tenant, backend).set(_BREAKER_VALUES.get(state, 0.0))

    def workflow(self, tenant: str, workflow: str, outcome: str) -> None:
        self.workflows.labels(tenant, workflow, outcome).inc()

    def outbox_delivery(self, tenant: str, backend: str, outcome: str) -> None:
        self.outbox_deliveries.labels(tenant, backend, outcome).inc()

    def outbox_backlog(self, count: int, oldest_age: float) -> None:
        self.outbox_pending.set(count)
        self.outbox_oldest.set(oldest_age)

    def mirror_status(self, tenant: str, backend: str, last_sync: dict | None, contacts: int,
                      state: dict | None = None) -> None:
        self.mirror_contacts.labels(tenant, backend).set(contacts)
        if last_sync:
            self.last_sync.labels(tenant, backend).set(last_sync.get("started_at", 0))
            self.last_sync_ok.labels(tenant, backend).set(1 if last_sync.get("ok") else 0)
        if state is not None:
            self.last_success.labels(tenant, backend).set(state.get("last_success") or 0)
            self.mirror_stale.labels(tenant, backend).set(1 if state.get("stale") else 0)

    def request_done(self, endpoint: str, seconds: float) -> None:
        child = self._request_children.get(endpoint)
        if child is None:
            child = self._request_children[endpoint] = self.request_latency.labels(endpoint)
        child.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
