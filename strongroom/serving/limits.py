"""Rate limits, token quotas, failed-auth throttling per origin, and the anomaly rule.

All state is in memory, per gateway process, guarded by one lock: limits are about the
process's own capacity, and a restart clearing them fails safe (keys suspended by the anomaly
rule stay suspended in the database). Every refusal raises ``RateLimited`` carrying the
number of seconds after which a retry can succeed, which the gateway sends as ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

from strongroom.errors import StrongroomError


class RateLimited(StrongroomError):
    """A request, token or failed-auth budget is exhausted; retry after ``retry_after`` s."""

    exit_code = 3

    def __init__(self, message: str, retry_after: float, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.code = code


@dataclass(frozen=True)
class Limits:
    """One principal's budgets (0 disables a budget)."""

    requests_per_minute: int
    tokens_per_hour: int


class RateLimiter:
    """Per-principal request rate (sliding minute) and token quota (sliding hour)."""

    def __init__(self, default: Limits, overrides: dict[str, Limits] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._default = default
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def limits_for(self, principal_id: str) -> Limits:
        key_id = principal_id.partition(":")[2]
        return self._overrides.get(key_id) or self._overrides.get(principal_id) or self._default

    def admit(self, principal_id: str) -> None:
        """Count one request; raise RateLimited if the minute's or the hour's budget is spent."""
        lim = self.limits_for(principal_id)
        now = self._clock()
        with self._lock:
            if lim.tokens_per_hour:
                window = self._tokens[principal_id]
                while window and window[0][0] <= now - 3600:
                    window.popleft()
                used = sum(n for _, n in window)
                if used >= lim.tokens_per_hour:
                    raise RateLimited("token quota exceeded for this key",
                                      window[0][0] + 3600 - now, "token_quota_exceeded")
            if lim.requests_per_minute:
                times = self._requests[principal_id]
                while times and times[0] <= now - 60:
                    times.popleft()
                if len(times) >= lim.requests_per_minute:
                    raise RateLimited("request rate limit exceeded for this key",
                                      times[0] + 60 - now)
                times.append(now)

    def refund(self, principal_id: str) -> None:
        """Give back the request counted by ``admit`` when the server, not the client, refused
        it (503 at capacity): a full queue must not also burn the caller's minute budget."""
        with self._lock:
            times = self._requests.get(principal_id)
            if times:
                times.pop()

    def spend_tokens(self, principal_id: str, tokens: int) -> None:
        """Charge the tokens a finished request used against the hour's quota."""
        if tokens > 0:
            with self._lock:
                self._tokens[principal_id].append((self._clock(), int(tokens)))


class FailureThrottle:
    """Failed authentications per origin: slowed after ``slow_after``, refused after ``refuse_after``.

    The delay doubles with each failure past the first threshold (capped at 8 s), so a
    guessing client gets slower and slower; past ``refuse_after`` every request from that origin
    is refused (even with a valid key) until the window has moved on.
    """

    def __init__(self, slow_after: int, refuse_after: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_after = slow_after
        self.refuse_after = refuse_after
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._fails: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, origin: str, now: float) -> deque[float]:
        q = self._fails[origin]
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def check(self, origin: str) -> None:
        """Raise RateLimited if ``origin`` has failed too often recently."""
        now = self._clock()
        with self._lock:
            q = self._recent(origin, now)
            if self.refuse_after and len(q) >= self.refuse_after:
                raise RateLimited("too many failed authentications from this origin",
                                  q[0] + self.window_s - now, "too_many_auth_failures")

    def failed(self, origin: str) -> float:
        """Record a failure; return how long to delay the answer to it (seconds)."""
        now = self._clock()
        with self._lock:
            q = self._recent(origin, now)
            q.append(now)
            over = len(q) - self.slow_after
        return 0.0 if over <= 0 else min(8.0, 0.05 * 2 ** min(over, 8))

    def failures(self, origin: str) -> int:
        with self._lock:
            return len(self._recent(origin, self._clock()))


class AnomalyDetector:
    """Counts suspicious events (denials, guard blocks) per API key in a sliding window.

    ``hit`` returns True exactly once, when a key reaches the threshold: the caller then
    suspends the key and audits it.
    """

    def __init__(self, threshold: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._tripped: set[str] = set()

    def hit(self, key_id: str) -> bool:
        if not self.threshold:
            return False
        now = self._clock()
        with self._lock:
            q = self._events[key_id]
            while q and q[0] <= now - self.window_s:
                q.popleft()
            q.append(now)
            if len(q) >= self.threshold and key_id not in self._tripped:
                self._tripped.add(key_id)
                return True
            return False
