"""Per-key request rate limits, in the shape of Custom Vision's transactions-per-second limits: a token bucket
per key (refilled at the key's rate, holding at most one second's worth), kept in this process's memory."""
from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """`default` requests per second for every key (None: unlimited), `per_key` overrides (0: unlimited).

    Used from the event loop only, so no lock. Only keys that authenticated get a bucket: the table grows with the
    number of real keys, not with what clients send."""

    def __init__(self, default: float | None, per_key: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.default, self.per_key, self.clock = default, dict(per_key or {}), clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    @property
    def enabled(self) -> bool:
        return bool(self.default) or any(self.per_key.values())

    def rate(self, key: str) -> float | None:
        rate = self.per_key.get(key, self.default)
        return rate or None

    def acquire(self, key: str) -> float:
        """0 when the request may go ahead (and is counted), else the seconds until the key may send the next one."""
        rate = self.rate(key)
        if rate is None:
            return 0.0
        burst = max(1.0, rate)
        now = self.clock()
        tokens, then = self.buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate


def retry_after(seconds: float) -> str:
    """The Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
