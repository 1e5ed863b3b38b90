"""gunicorn's threaded worker, made to share keep-alive connections evenly between the workers.

A keep-alive connection stays with the worker that accepted it. The stock gthread workers all
watch the listening socket, and the first one to wake takes the connection, so a load balancer
or a PaaS router that opens a set of long-lived connections at once often leaves one worker with
nearly all of them while another idles: measured here, 15 of 16 connections on one worker, and
half the throughput of an even split. This worker stops watching the socket while it already
holds at least as many connections as it has threads, so an idle sibling gets the new one. Every
``HOLD_OFF_S`` it looks whether a connection is waiting, and takes one that was already waiting
at its previous look (or that waits at a look the worker's loop was late for): no idle sibling is
there to take it. So when every worker is busy a new connection waits about twice ``HOLD_OFF_S``.
"""

from __future__ import annotations

import select
import time

from gunicorn.workers.gthread import ThreadWorker

HOLD_OFF_S = 0.002


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next_look = 0.0
        self._waited: set = set()  # listening sockets with a connection waiting at the last look

    def _busy(self) -> bool:
        return self.alive and self.nr_conns >= self.cfg.threads

    def set_accept_enabled(self, enabled: bool) -> None:
        # run() turns accepting on at each turn of its loop while below worker_connections
        super().set_accept_enabled(enabled and not self._busy())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._busy() and self.nr_conns < self.worker_connections:
            self.set_accept_enabled(False)
            now = time.monotonic()
            if now >= self._next_look:
                # A look that comes late (the loop waited for the GIL behind busy request threads)
                # takes what waits: an idle sibling, which wakes at once, would have taken it.
                late = now - self._next_look > HOLD_OFF_S
                self._next_look = now + HOLD_OFF_S
                waiting = set(select.select(self.sockets, [], [], 0)[0])
                for listener in waiting if late else waiting & self._waited:
                    self.accept(listener)
                self._waited = waiting
            timeout = min(timeout, max(0.0, self._next_look - now))
        super().wait_for_and_dispatch_events(timeout)
