"""What every use case is given (`Deps`), and the scope-checked look-ups they share (`UseCase`)."""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..artifacts import ArtifactCache
from ..backbones import BackboneProvider
from ..backbones.base import Backbone
from ..export.base import ExportSettings
from ..model import Iteration, IterationStatus, Project, Tag
from ..ports import BlobStore, Job, JobRunner, UnitOfWork, UnitOfWorkFactory
from ..training import ProgressBoard
from .scope import Scope


class InlineRunner(JobRunner):
    """Runs jobs on a plain thread each (the composition root may plug a scheduler or a queue instead)."""

    def submit(self, job: Job, run: Callable[[], None]) -> None:
        threading.Thread(target=run, name=f"job-{job.id[:14]}", daemon=True).start()


@dataclass
class EmbeddingStats:
    """How many images this process's backbones embedded (benchmarks and tests read it)."""

    images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.images += n


@dataclass
class Deps:
    """The ports and per-process objects the use cases work with; built once by the composition root."""

    uow: UnitOfWorkFactory
    blobs: BlobStore
    backbones: BackboneProvider
    runner: JobRunner = field(default_factory=InlineRunner)
    embed_batch_size: int = 16
    progress: ProgressBoard = field(default_factory=ProgressBoard)
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)
    artifacts: ArtifactCache = None  # type: ignore[assignment]
    train_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    export_settings: ExportSettings = field(default_factory=ExportSettings)  # where export converters live
    #: 0: uploads are embedded when a training needs them. N > 0: each upload's new images are also handed to
    #: the runner as embedding jobs of N images (set where workers take jobs from a queue, so that several workers
    #: embed one large import in parallel and the training finds the vectors cached).
    embed_chunk: int = 0

    def __post_init__(self) -> None:
        if self.artifacts is None:
            self.artifacts = ArtifactCache(self.blobs)

    def submit(self, kind: str, **args: Any) -> Job:
        """Hand the job `kind(**args)` (see `jobs.KINDS`) to the runner: in-process runners run it here, a queue
        stores it for a worker."""
        from .jobs import run_job

        job = Job(kind, dict(args))
        self.runner.submit(job, functools.partial(run_job, self, job))
        return job


def collect_blobs(deps: Deps, keys: Iterable[str]) -> None:
    """Delete the blobs among `keys` that no row references any more, with their cached embeddings."""
    wanted = list(dict.fromkeys(k for k in keys if k))
    if not wanted:
        return
    with deps.uow() as uow:
        referenced = uow.referenced_blob_keys(wanted)
        gone = [k for k in wanted if k not in referenced]
        uow.embeddings.delete(gone)
        uow.commit()
    for k in gone:
        deps.blobs.delete(k)
        deps.artifacts.forget(k)


def completed(it: Iteration, action: str) -> Iteration:
    if it.status != IterationStatus.Completed:
        raise errors.IterationNotCompleted(
            f"iteration {it.number} is {it.status.value}; only a Completed one can {action}")
    return it


def trained_backbone(deps: Deps, it: Iteration) -> Backbone:
    """The backbone `it` was trained with, or Azure-style refusal when its domain now loads another one."""
    backbone = deps.backbones.for_domain(it.domain)
    if backbone.id != it.backbone_id:
        raise errors.CvError(f"iteration {it.number} was trained with {it.backbone_id}, but the {it.domain.value} "
                             f"domain now loads {backbone.id}; retrain the project",
                             "BadRequestIterationBackboneChanged")
    return backbone


class UseCase:
    """One area's use cases; each call sees only the projects its scope admits."""

    def __init__(self, deps: Deps, scope: Scope):
        self.deps = deps
        self.scope = scope

    def project(self, uow: UnitOfWork, project_id: str) -> Project:
        p = uow.projects.get(project_id)
        if p is None or not self.scope.sees(p):
            raise errors.NotFound(f"no project with id {project_id}")
        return p

    def tag(self, uow: UnitOfWork, project_id: str, tag_id: str, code: str | None = None) -> Tag:
        self.project(uow, project_id)
        t = uow.tags.get(tag_id)
        if t is None or t.project_id != project_id:
            raise errors.NotFound(f"no tag {tag_id} in this project", code)
        return t

    def iteration(self, uow: UnitOfWork, project_id: str, iteration_id: str, with_snapshot: bool = False) -> Iteration:
        self.project(uow, project_id)
        it = uow.iterations.get(iteration_id, with_snapshot=with_snapshot)
        if it is None or it.project_id != project_id:
            raise errors.NotFound(f"no iteration {iteration_id} in this project")
        return it

    def collect(self, keys: Iterable[str]) -> None:
        collect_blobs(self.deps, keys)
