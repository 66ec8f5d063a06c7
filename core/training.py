"""Training rules (what may be trained) and progress reporting, independent of storage."""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import TrainingValidationFailed
from .model import ClassificationType, Domain, SnapshotEntry, Tag, TagType

MIN_IMAGES_PER_TAG = 5
RECOMMENDED_IMAGES_PER_TAG = 30


@dataclass
class TrainingPlan:
    tags: list[Tag]  # probe columns, in order
    entries: list[SnapshotEntry]
    warnings: list[str]
    fingerprint: str


def fingerprint(domain: Domain, ctype: ClassificationType, entries: list[SnapshotEntry]) -> str:
    h = hashlib.sha256(f"{domain.value}|{ctype.value}".encode())
    for e in sorted(entries, key=lambda e: e.sha256):
        h.update(f"|{e.sha256}:{','.join(sorted(e.tag_ids))}".encode())
    return h.hexdigest()


def plan_training(tags: list[Tag], entries: list[SnapshotEntry], domain: Domain,
                  ctype: ClassificationType) -> TrainingPlan:
    """Check Custom Vision's training rules; raise TrainingValidationFailed listing every problem."""
    counts = {t.id: 0 for t in tags}
    for e in entries:
        for tid in e.tag_ids:
            if tid in counts:
                counts[tid] += 1
    used = [t for t in tags if counts[t.id] > 0]
    used.sort(key=lambda t: (t.type == TagType.Negative, t.name.lower()))
    regular = [t for t in used if t.type == TagType.Regular]
    problems: list[str] = []
    need_tags = 2 if ctype == ClassificationType.Multiclass else 1
    if len(regular) < need_tags:
        problems.append(
            f"a {ctype.value} project needs at least {need_tags} regular tag{'s' if need_tags > 1 else ''} with "
            f"{MIN_IMAGES_PER_TAG}+ images each; it has {len(regular)}"
        )
    for t in used:
        if counts[t.id] < MIN_IMAGES_PER_TAG:
            problems.append(f"tag '{t.name}' has {counts[t.id]} image{'s' if counts[t.id] != 1 else ''} "
                            f"(needs {MIN_IMAGES_PER_TAG - counts[t.id]} more)")
    if ctype == ClassificationType.Multiclass:
        multi = sum(1 for e in entries if len(e.tag_ids) > 1)
        if multi:
            problems.append(f"{multi} image{'s carry' if multi > 1 else ' carries'} more than one tag; a Multiclass "
                            "project needs exactly one tag per image (untag them or switch the project to Multilabel)")
    else:
        n = len(entries)
        for t in regular:
            without = n - counts[t.id]
            if without < MIN_IMAGES_PER_TAG:
                problems.append(f"tag '{t.name}' is missing from only {without} image{'s' if without != 1 else ''}; "
                                f"a Multilabel tag needs {MIN_IMAGES_PER_TAG}+ images without it "
                                "(add other tags or Negative images)")
    if problems:
        listing = ", ".join(f"{t.name}: {counts[t.id]}" for t in sorted(tags, key=lambda t: t.name.lower()))
        raise TrainingValidationFailed(
            "Cannot train: " + "; ".join(problems) + f". Images per tag: {listing or 'no tags'}.")
    warnings = [
        f"tag '{t.name}' has {counts[t.id]} images; {RECOMMENDED_IMAGES_PER_TAG}+ per tag are recommended"
        for t in used if counts[t.id] < RECOMMENDED_IMAGES_PER_TAG
    ]
    used_ids = {t.id for t in used}
    # in content order, so that the same images and tags always give the same folds, and so the same iteration
    kept = [SnapshotEntry(e.image_id, e.sha256, [tid for tid in e.tag_ids if tid in used_ids])
            for e in sorted(entries, key=lambda e: (e.sha256, e.image_id))]
    return TrainingPlan(tags=used, entries=kept, warnings=warnings, fingerprint=fingerprint(domain, ctype, kept))


def label_matrix(entries: list[SnapshotEntry], tag_ids: list[str]) -> np.ndarray:
    col = {tid: i for i, tid in enumerate(tag_ids)}
    Y = np.zeros((len(entries), len(tag_ids)), np.float32)
    for r, e in enumerate(entries):
        for tid in e.tag_ids:
            if tid in col:
                Y[r, col[tid]] = 1
    return Y


@dataclass
class TrainingProgress:
    iteration_id: str
    stage: str = "queued"  # queued | loading model | embedding | evaluating | fitting | saving | done | failed
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        if self.stage == "embedding":
            return f"embedding {self.done}/{self.total} images"
        if self.stage == "evaluating" and self.total:
            return f"evaluating (fold {self.done}/{self.total})"
        return self.stage


ProgressListener = Callable[[TrainingProgress], None]


class ProgressBoard:
    """In-memory progress of running trainings, with listeners (CLI bars, Slack message updates)."""

    def __init__(self) -> None:
        self._items: dict[str, TrainingProgress] = {}
        self._done: dict[str, threading.Event] = {}
        self._listeners: list[ProgressListener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: ProgressListener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def start(self, iteration_id: str) -> None:
        with self._lock:
            self._items[iteration_id] = TrainingProgress(iteration_id)
            self._done[iteration_id] = threading.Event()

    def update(self, iteration_id: str, stage: str, done: int = 0, total: int = 0) -> None:
        with self._lock:
            p = self._items.setdefault(iteration_id, TrainingProgress(iteration_id))
            p.stage, p.done, p.total = stage, done, total
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):  # a broken listener must not break training
                listener(p)

    def finish(self, iteration_id: str, stage: str) -> None:
        self.update(iteration_id, stage)
        with self._lock:
            ev = self._done.setdefault(iteration_id, threading.Event())
        ev.set()

    def get(self, iteration_id: str) -> TrainingProgress | None:
        return self._items.get(iteration_id)

    def wait(self, iteration_id: str, timeout: float | None) -> bool:
        with self._lock:
            ev = self._done.setdefault(iteration_id, threading.Event())
        return ev.wait(timeout)
