"""The repository ports and the unit of work that groups them."""
from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import numpy as np

from ..model import (
    ChannelBinding,
    Export,
    ExportStatus,
    Image,
    Iteration,
    IterationStatus,
    JobRun,
    JobRunStatus,
    LabelDecision,
    Prediction,
    Project,
    SnapshotEntry,
    Tag,
    WorkspaceKeys,
)


class ProjectRepository(ABC):
    @abstractmethod
    def add(self, project: Project) -> None: ...

    @abstractmethod
    def add_if_absent(self, project: Project) -> Project:
        """Add `project` unless its workspace has a project of that (case-insensitive) name, also one a concurrent
        transaction is adding; returns the project stored under the name."""

    @abstractmethod
    def get(self, project_id: str) -> Project | None: ...

    @abstractmethod
    def get_by_name(self, workspace: str, name: str) -> Project | None: ...

    @abstractmethod
    def list(self, workspace: str | None = None) -> list[Project]: ...

    @abstractmethod
    def update(self, project: Project) -> None: ...

    @abstractmethod
    def delete(self, project_id: str) -> None: ...


class TagRepository(ABC):
    @abstractmethod
    def add(self, tag: Tag) -> None: ...

    @abstractmethod
    def add_if_absent(self, tag: Tag) -> Tag:
        """Add `tag` unless the project has a tag of that (case-insensitive) name, also one a concurrent
        transaction is adding; returns the tag stored under the name, `tag` itself only if it was added."""

    @abstractmethod
    def get(self, tag_id: str) -> Tag | None: ...

    @abstractmethod
    def list(self, project_id: str) -> list[Tag]:
        """Tags of a project with `image_count` filled."""

    @abstractmethod
    def update(self, tag: Tag) -> None: ...

    @abstractmethod
    def delete(self, tag_id: str) -> None: ...


class ImageRepository(ABC):
    @abstractmethod
    def add(self, image: Image) -> None: ...

    @abstractmethod
    def get_many(self, image_ids: list[str]) -> list[Image]: ...

    @abstractmethod
    def get_by_sha(self, project_id: str, sha256: str) -> Image | None: ...

    @abstractmethod
    def list(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None,
             skip: int = 0, take: int | None = None, oldest: bool = False) -> builtins.list[Image]:
        """Newest first (ties by id), or exactly the reverse with `oldest`."""

    @abstractmethod
    def count(self, project_id: str, tagged: bool | None = None, tag_ids: builtins.list[str] | None = None) -> int: ...

    @abstractmethod
    def set_tags(self, image_id: str, tag_ids: builtins.list[str]) -> None: ...

    @abstractmethod
    def set_metadata(self, image_id: str, metadata: builtins.dict[str, str]) -> None:
        """Replace the image's metadata (an empty dict: none)."""

    @abstractmethod
    def delete(self, image_id: str) -> None: ...

    @abstractmethod
    def snapshot(self, project_id: str) -> builtins.list[SnapshotEntry]:
        """Every tagged image of the project with its tags, ordered by image id."""


class IterationRepository(ABC):
    @abstractmethod
    def add(self, iteration: Iteration) -> None: ...

    @abstractmethod
    def get(self, iteration_id: str, with_snapshot: bool = False) -> Iteration | None: ...

    @abstractmethod
    def list(self, project_id: str) -> list[Iteration]: ...

    def published(self, project_id: str, publish_name: str) -> Iteration | None:
        """The project's iteration published under `publish_name` (adapters may answer it with one query)."""
        return next((i for i in self.list(project_id) if i.publish_name == publish_name), None)

    @abstractmethod
    def update(self, iteration: Iteration) -> None:
        """Persist every field except the snapshot (written once by `add`) and `notify` / `reported_at` (written
        only by `set_notify` / `set_reported`, so a training thread's update cannot overwrite them)."""

    def update_if(self, iteration: Iteration, statuses: builtins.list[IterationStatus]) -> bool:
        """`update`, but only while the stored status is one of `statuses` (a compare-and-set, so two workers
        finishing the same training complete it once); False, changing nothing, when it is not."""
        current = self.get(iteration.id)
        if current is None or current.status not in statuses:
            return False
        self.update(iteration)
        return True

    @abstractmethod
    def set_notify(self, iteration_id: str, notify: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def set_reported(self, iteration_id: str, reported_at: datetime | None) -> None: ...

    def unreported(self, statuses: builtins.list[IterationStatus]) -> builtins.list[Iteration]:
        """Iterations in `statuses` with a notification target whose outcome is not reported yet."""
        return [i for i in self.in_status(statuses) if i.notify and i.reported_at is None]

    @abstractmethod
    def delete(self, iteration_id: str) -> None: ...

    @abstractmethod
    def in_status(self, statuses: builtins.list[IterationStatus],
                  project_id: str | None = None) -> builtins.list[Iteration]: ...

    @abstractmethod
    def next_number(self, project_id: str) -> int: ...


class EmbeddingRepository(ABC):
    @abstractmethod
    def get_many(self, backbone_id: str, sha256s: list[str]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def put_many(self, backbone_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Store the vectors not stored yet; one a concurrent transaction stores first is kept."""

    @abstractmethod
    def count(self, backbone_id: str | None = None) -> int: ...

    @abstractmethod
    def sha256s(self) -> set[str]:
        """The content hashes that have a cached vector (for any backbone)."""

    @abstractmethod
    def delete(self, sha256s: builtins.list[str]) -> int:
        """Drop the cached vectors of these contents (every backbone's); returns how many rows went."""


class PredictionRepository(ABC):
    @abstractmethod
    def add(self, prediction: Prediction) -> None: ...

    @abstractmethod
    def get(self, prediction_id: str) -> Prediction | None: ...

    @abstractmethod
    def list(self, project_id: str, iteration_id: str | None = None, skip: int = 0,
             take: int | None = None) -> list[Prediction]: ...

    @abstractmethod
    def delete(self, prediction_id: str) -> None: ...

    def older_than(self, project_id: str, before: datetime, limit: int) -> builtins.list[Prediction]:
        """At most `limit` of the project's stored predictions made before `before`, oldest first (adapters may
        answer it with one query)."""
        found = [p for p in self.list(project_id) if p.created_at < before]
        return sorted(found, key=lambda p: (p.created_at, p.id))[:limit]


class ChannelRepository(ABC):
    @abstractmethod
    def get(self, workspace: str, channel_id: str) -> ChannelBinding | None: ...

    @abstractmethod
    def put(self, binding: ChannelBinding) -> None:
        """Insert or replace the channel's binding (the last of concurrent puts wins, none fails)."""

    @abstractmethod
    def delete(self, workspace: str, channel_id: str) -> None: ...

    @abstractmethod
    def for_project(self, project_id: str) -> list[ChannelBinding]: ...


class MessageRepository(ABC):
    """Which images a chat message brought in (so thread replies can retag or remove them)."""

    @abstractmethod
    def link(self, workspace: str, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        """Add the links not there yet (concurrent links of the same message do not fail)."""

    @abstractmethod
    def image_ids(self, workspace: str, channel_id: str, message_ts: str) -> list[str]: ...


class KeyRepository(ABC):
    @abstractmethod
    def get(self, workspace: str) -> WorkspaceKeys | None: ...

    @abstractmethod
    def put(self, keys: WorkspaceKeys) -> None:
        """Insert or replace the workspace's keys."""

    @abstractmethod
    def add_if_absent(self, keys: WorkspaceKeys) -> WorkspaceKeys:
        """Add `keys` unless the workspace has keys (also ones a concurrent transaction is adding); returns
        the workspace's stored keys."""

    @abstractmethod
    def find(self, key: str) -> WorkspaceKeys | None:
        """The workspace whose training or prediction key this is."""


class ExportRepository(ABC):
    @abstractmethod
    def add(self, export: Export) -> None: ...

    @abstractmethod
    def update(self, export: Export) -> None: ...

    @abstractmethod
    def list(self, iteration_id: str) -> list[Export]: ...

    @abstractmethod
    def in_status(self, status: ExportStatus) -> builtins.list[Export]: ...


class SecretRepository(ABC):
    """Server-wide secrets shared by every process of an install (e.g. the image-link signing key)."""

    @abstractmethod
    def get_or_add(self, name: str, value: str) -> str:
        """The stored secret `name`; stores `value` first when there is none (a concurrent process's wins)."""


class VariantRepository(ABC):
    """Derived copies of stored images (resized, thumbnail): the blob key made from a source blob."""

    @abstractmethod
    def get(self, source_key: str, variant: str) -> str | None: ...

    @abstractmethod
    def put(self, source_key: str, variant: str, blob_key: str) -> None:
        """Insert or replace (concurrent puts do not fail)."""


class MigrationRepository(ABC):
    """What `cvbot migrate` copied: (source endpoint, kind, source id) -> the id of the copy in this store. A record
    goes with the target project (`project_id`): deleting the copy forgets what was copied into it."""

    @abstractmethod
    def get(self, source: str, kind: str, source_id: str) -> str | None: ...

    @abstractmethod
    def put(self, source: str, kind: str, source_id: str, target_id: str, project_id: str) -> None:
        """Insert or replace."""


class ClaimRepository(ABC):
    """Keys taken once across every process of an install (e.g. a Slack event id, so that a redelivery to any web
    process is dropped), each until it expires."""

    @abstractmethod
    def claim(self, key: str, expires_at: datetime, now: datetime) -> bool:
        """True when this transaction takes `key`: nobody holds it, or its claim expired by `now`; False while
        another claim stands (also one a concurrent transaction is adding, once that one commits)."""

    @abstractmethod
    def purge(self, now: datetime) -> int:
        """Drop the claims expired by `now`; returns how many."""


class JobRunRepository(ABC):
    """The log of scheduled jobs' runs; (job, slot) is taken once, by the first process to start it."""

    @abstractmethod
    def start(self, run: JobRun) -> bool:
        """Record `run` unless its (job, slot) is recorded already (also by a concurrent transaction); True if this
        one was recorded, i.e. the caller runs the job."""

    @abstractmethod
    def finish(self, job: str, slot: str, status: JobRunStatus, result: dict[str, Any] | None,
               finished_at: datetime) -> None: ...

    @abstractmethod
    def list(self, job: str | None = None, limit: int = 100) -> builtins.list[JobRun]:
        """The newest runs first."""


class OrphanRepository(ABC):
    """Blobs found unreferenced by a collection, with when they were first found so: a later collection deletes those
    still unreferenced after a grace period (a blob is written before the row that names it, so a young orphan may
    be an upload in progress, in any process)."""

    @abstractmethod
    def mark(self, keys: builtins.list[str], at: datetime) -> None:
        """Remember `keys` as found unreferenced at `at`, keeping the earlier time of those already marked."""

    @abstractmethod
    def marked(self) -> dict[str, datetime]: ...

    @abstractmethod
    def forget(self, keys: builtins.list[str]) -> None: ...


class DecisionRepository(ABC):
    """What people answered about images (the audit's Keep / Retag, a suggestion's Skip / Confirm)."""

    @abstractmethod
    def put(self, decision: LabelDecision) -> None:
        """Insert or replace the image's decision of that kind."""

    @abstractmethod
    def for_project(self, project_id: str, kind: str) -> dict[str, LabelDecision]:
        """The project's decisions of one kind, by image id."""


class UnitOfWork(ABC):
    """One transaction over every repository; rolls back unless `commit()` was called."""

    projects: ProjectRepository
    tags: TagRepository
    images: ImageRepository
    iterations: IterationRepository
    embeddings: EmbeddingRepository
    predictions: PredictionRepository
    channels: ChannelRepository
    messages: MessageRepository
    keys: KeyRepository
    exports: ExportRepository
    secrets: SecretRepository
    variants: VariantRepository
    migrated: MigrationRepository
    claims: ClaimRepository
    job_runs: JobRunRepository
    orphans: OrphanRepository
    decisions: DecisionRepository

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def referenced_blob_keys(self, candidates: Iterable[str] | None = None) -> set[str]:
        """Blob keys still referenced by an image, an iteration (snapshot, probe, evaluation), a
        stored prediction or a derived copy (resized, thumbnail) of a blob still referenced; limited to
        `candidates` when given."""

    def integrity_problems(self) -> builtins.list[str]:
        """What the database's own consistency check reports (empty when sound); a store without one answers []."""
        return []


UnitOfWorkFactory = Callable[[], UnitOfWork]
