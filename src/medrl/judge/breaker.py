"""A circuit breaker: after repeated failures stop calling a dead server, and later let one probe call through.

closed -> (N consecutive failures) -> open -> (reset_s later) -> half_open: one probe; success -> closed,
failure -> open again. Not tied to an event loop, so one breaker spans every batch a judge is asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.opened = 0  # times it opened
        self.closed = 0  # times it closed again after being open
        self.probing = False
        self._opened_at = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a call go out now? In half-open state only the one probe may."""
        with self._lock:
            if self.state == "open" and self.clock() - self._opened_at >= self.reset_s:
                self.state = "half_open"
                self.probing = False
            if self.state == "closed":
                return True
            if self.state == "half_open" and not self.probing:
                self.probing = True
                return True
            return False

    def waiting_on_probe(self) -> bool:
        """True while the half-open probe is out: callers wait for its verdict rather than give up."""
        with self._lock:
            return self.state == "half_open" and self.probing

    def success(self) -> None:
        with self._lock:
            self.consecutive = 0
            if self.state != "closed":
                self.state = "closed"
                self.probing = False
                self.closed += 1

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self.state == "half_open" or (self.state == "closed" and self.consecutive >= self.threshold):
                self.state = "open"
                self.probing = False
                self._opened_at = self.clock()
                self.opened += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self.state, "opened": self.opened, "closed": self.closed}
