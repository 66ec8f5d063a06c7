"""Trained artifacts (probes, evaluations) loaded from blobs and kept in a small per-process LRU cache."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from .evaluation import Evaluation
from .ports import BlobStore
from .probe import LinearProbe
from .unknown import UnknownScorer

T = TypeVar("T")


class ArtifactCache:
    """Blobs are content-addressed, so a key always means the same artifact: entries never go stale."""

    def __init__(self, blobs: BlobStore, capacity: int = 64):
        self.blobs = blobs
        self.capacity = capacity
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def probe(self, key: str) -> LinearProbe:
        return self._get(key, LinearProbe.from_bytes)

    def evaluation(self, key: str) -> Evaluation:
        return self._get(key, Evaluation.from_bytes)

    def unknown(self, probe_key: str) -> UnknownScorer | None:
        """The unknown-score model stored in the probe's blob; None for iterations trained before it existed."""
        return self._get(probe_key, UnknownScorer.from_bytes, "unknown:")

    def forget(self, key: str) -> None:
        with self._lock:
            for prefix in ("", "unknown:"):
                self._items.pop(prefix + key, None)

    def _get(self, key: str, load: Callable[[bytes], T], kind: str = "") -> T:
        with self._lock:
            if kind + key in self._items:
                self._items.move_to_end(kind + key)
                return self._items[kind + key]  # type: ignore[return-value]
        value = load(self.blobs.get(key))
        with self._lock:
            self._items[kind + key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value
