"""The job runner port: slow work as data, run off the request path."""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Job:
    """Slow work as data: a kind from `core.usecases.jobs.KINDS` and its JSON-serialisable arguments (ids), so
    a queue can store it and any process holding `Deps` can run it."""

    kind: str
    args: dict[str, Any]

    @property
    def id(self) -> str:
        """The kind and a digest of the arguments: equal jobs have equal ids (a queue keeps one of them waiting)."""
        digest = hashlib.sha256(json.dumps(self.args, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.kind}-{digest}"


class JobRunner(ABC):
    """Runs slow work (training, export, embedding) off the request path."""

    #: True when submitted jobs outlive this process (a queue in the database that workers take them from);
    #: then start-up recovery must not fail work that is still queued or running elsewhere.
    durable: bool = False

    @abstractmethod
    def submit(self, job: Job, run: Callable[[], None]) -> None:
        """Run `job`. `run` executes it in this process (what in-process runners call); a queue stores `job`
        instead and a worker executes it with `core.usecases.jobs.run_job`."""
