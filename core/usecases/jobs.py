"""Jobs as data: each kind a runner may be handed, and how any process holding `Deps` runs one.

A job carries only ids (and, for embedding, content hashes), never objects of the process that queued it, so a
queue in the database can store it and a worker process on another machine can run it. Every job is safe to run
again after it was cut off (a worker killed mid-job): training restarts from its snapshot and completes the
iteration once, an export writes the same content-addressed file, embedding skips what is already cached."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ..model import Domain
from ..ports import Job
from .base import Deps
from .exports import ExportJob
from .training_job import TrainingJob, embed_blobs
from .transfer import CopyJob

log = logging.getLogger(__name__)


class Runnable(Protocol):
    def run(self) -> None: ...


class EmbedJob:
    """Embed (and cache) a chunk of uploaded images with a domain's backbone, ahead of the training that needs
    them; several workers each take a chunk of one large import."""

    def __init__(self, deps: Deps, domain: str, sha256s: list[str]):
        self.deps = deps
        self.domain = Domain(domain)
        self.sha256s = list(sha256s)

    def run(self) -> None:
        backbone = self.deps.backbones.for_domain(self.domain)
        present = [s for s in self.sha256s if self.deps.blobs.exists(s)]  # images deleted meanwhile are skipped
        embed_blobs(self.deps, backbone, present)


#: kind -> a factory taking `Deps` and the job's arguments.
KINDS: dict[str, Callable[..., Runnable]] = {
    "train": lambda deps, iteration_id: TrainingJob(deps, iteration_id),
    "export": lambda deps, iteration_id, export_id: ExportJob(deps, iteration_id, export_id),
    "embed": lambda deps, domain, sha256s: EmbedJob(deps, domain, sha256s),
    "copy": lambda deps, source_id, target_id: CopyJob(deps, source_id, target_id),
}


def run_job(deps: Deps, job: Job) -> None:
    """Run one job in this process. An unknown kind (queued by a newer version) raises, so a queue
    keeps it for a worker that knows it."""
    factory = KINDS.get(job.kind)
    if factory is None:
        raise ValueError(f"unknown job kind {job.kind!r}; this worker knows {sorted(KINDS)}")
    factory(deps, **job.args).run()
