"""The process-wide budget of decoded pixels: how much image memory every request and embedding thread may hold at
once. Image decoding (`core/images.py`) takes its share before it decodes."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Busy

# Bytes of decoded pixels that the whole process holds at once (every request and every embedding thread): what a
# decode will hold is known from the header before decoding, so a decode waits for its share first. A decode larger
# than the budget (Azure accepts 10,240 x 10,240 images) is still done, alone: it takes the whole budget except the
# reserve kept for small images (a normal prediction is never queued behind a giant image).
DECODE_BUDGET_BYTES = 256 * 2**20
DECODE_RESERVE_BYTES = 32 * 2**20
# A request waits this long for its share, then fails with Busy (HTTP 503 with Retry-After); at most
# DECODE_MAX_WAITING requests wait at once (each holds a server thread), the others fail at once.
DECODE_WAIT_S = 2.0
DECODE_MAX_WAITING = 4


class DecodeBudget:
    """A counting semaphore in bytes, process-wide, for decoded pixels."""

    def __init__(self, capacity: int = DECODE_BUDGET_BYTES, reserve: int = DECODE_RESERVE_BYTES,
                 wait_s: float = DECODE_WAIT_S, max_waiting: int = DECODE_MAX_WAITING):
        if not 0 <= reserve < capacity:
            raise ValueError("the reserve must be smaller than the capacity")
        self.capacity, self.reserve, self.wait_s, self.max_waiting = capacity, reserve, wait_s, max_waiting
        self.used = 0
        self.waiting = 0
        self._cond = threading.Condition()

    def charge(self, nbytes: int) -> int:
        """What a decode of `nbytes` takes from the budget: all of it, up to everything but the reserve."""
        return max(1, min(nbytes, self.capacity - self.reserve))

    @contextmanager
    def hold(self, nbytes: int, wait_s: float | None) -> Iterator[int]:
        """Hold a share for `nbytes` while the block runs; waits at most `wait_s` seconds for it (None: as long as
        it takes), then raises Busy."""
        cost = self.charge(nbytes)
        # a small decode may use the whole capacity; larger ones share all of it but the reserve
        limit = self.capacity if cost <= self.reserve else self.capacity - self.reserve
        with self._cond:
            if self.used + cost > limit:
                self._wait(cost, limit, wait_s)
            self.used += cost
        try:
            yield cost
        finally:
            with self._cond:
                self.used -= cost
                self._cond.notify_all()

    def _wait(self, cost: int, limit: int, wait_s: float | None) -> None:
        retry = max(1, math.ceil(self.wait_s))
        if wait_s is not None and self.waiting >= self.max_waiting:
            raise Busy(f"the server is decoding other large images; retry in {retry} s", retry)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        self.waiting += 1
        try:
            while self.used + cost > limit:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Busy(f"the server is decoding other large images; retry in {retry} s", retry)
                self._cond.wait(left)
        finally:
            self.waiting -= 1


BUDGET = DecodeBudget()
