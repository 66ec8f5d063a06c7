"""In-memory implementations of `core/ports/` for unit tests of the rules: no SQLite, no files.

`FakeDatabase` holds committed rows; each `FakeUnitOfWork` works on its own copy taken when it begins, so its
changes are seen by other units of work only after `commit()` (and never after `rollback()`). Repositories copy
objects on the way in and out, as a database does: a use case that changes an object and forgets its `update`
call changes nothing."""
from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np

from core import ports
from core.model import (
    ChannelBinding,
    DecisionKind,
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

TABLES = ("projects", "tags", "images", "iterations", "embeddings", "predictions", "channels", "messages", "keys",
          "exports", "counters", "server_secrets", "image_variants",
          "migrated", "claims", "job_runs", "orphan_blobs", "decisions")


def _copy(obj: Any) -> Any:
    return copy.deepcopy(obj)


class FakeDatabase:
    """The committed state: one dict per table, keyed like the table's primary key."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Any]] = {name: {} for name in TABLES}
        self.lock = threading.Lock()
        self.begun = 0
        self.commits = 0

    def __call__(self) -> FakeUnitOfWork:  # a UnitOfWorkFactory
        return FakeUnitOfWork(self)


class _Repo:
    table = ""

    def __init__(self, uow: FakeUnitOfWork):
        self.uow = uow

    @property
    def rows(self) -> dict[Any, Any]:
        return self.uow.data[self.table]

    def _put(self, key: Any, value: Any, table: str | None = None) -> None:
        self.uow.data[table or self.table][key] = _copy(value)
        self.uow.dirty.add((table or self.table, key))

    def _drop(self, key: Any, table: str | None = None) -> None:
        self.uow.data[table or self.table].pop(key, None)
        self.uow.dirty.add((table or self.table, key))


class FakeProjects(_Repo, ports.ProjectRepository):
    table = "projects"

    def add(self, project: Project) -> None:
        assert project.id not in self.rows, "duplicate primary key"
        self._put(project.id, project)

    def add_if_absent(self, project: Project) -> Project:
        taken = self.get_by_name(project.workspace, project.name)
        if taken:
            return taken
        self.add(project)
        return _copy(project)

    def get(self, project_id: str) -> Project | None:
        return _copy(self.rows.get(project_id))

    def get_by_name(self, workspace: str, name: str) -> Project | None:
        return next((_copy(p) for p in self.rows.values()
                     if p.workspace == workspace and p.name.lower() == name.strip().lower()), None)

    def list(self, workspace: str | None = None) -> list[Project]:
        found = [p for p in self.rows.values() if workspace is None or p.workspace == workspace]
        return [_copy(p) for p in sorted(found, key=lambda p: (p.created_at, p.name.lower()))]

    def update(self, project: Project) -> None:
        if project.id in self.rows:
            self._put(project.id, project)

    def delete(self, project_id: str) -> None:
        self._drop(project_id)
        for tag in [t for t in self.uow.data["tags"].values() if t.project_id == project_id]:
            self._drop(tag.id, "tags")
        for img in [i for i in self.uow.data["images"].values() if i.project_id == project_id]:
            self._drop(img.id, "images")
        for it in [i for i in self.uow.data["iterations"].values() if i.project_id == project_id]:
            self.uow.iterations.delete(it.id)
        for p in [p for p in self.uow.data["predictions"].values() if p.project_id == project_id]:
            self._drop(p.id, "predictions")
        for key, b in list(self.uow.data["channels"].items()):
            if b.project_id == project_id:
                self._drop(key, "channels")


class FakeTags(_Repo, ports.TagRepository):
    table = "tags"

    def add(self, tag: Tag) -> None:
        assert tag.id not in self.rows, "duplicate primary key"
        self._put(tag.id, tag)

    def add_if_absent(self, tag: Tag) -> Tag:
        taken = next((t for t in self.list(tag.project_id) if t.name.lower() == tag.name.lower()), None)
        if taken:
            return taken
        self.add(tag)
        return tag

    def get(self, tag_id: str) -> Tag | None:
        return _copy(self.rows.get(tag_id))

    def list(self, project_id: str) -> list[Tag]:
        tags = sorted((t for t in self.rows.values() if t.project_id == project_id),
                      key=lambda t: (t.created_at, t.name.lower()))
        out = []
        for t in tags:
            t = _copy(t)
            t.image_count = sum(1 for i in self.uow.data["images"].values() if t.id in i.tag_ids)
            out.append(t)
        return out

    def update(self, tag: Tag) -> None:
        if tag.id in self.rows:
            stored = _copy(tag)
            stored.image_count = 0  # computed by `list`, not stored
            self._put(tag.id, stored)

    def delete(self, tag_id: str) -> None:
        self._drop(tag_id)
        for img in self.uow.data["images"].values():
            if tag_id in img.tag_ids:
                img.tag_ids = [t for t in img.tag_ids if t != tag_id]
                self.uow.dirty.add(("images", img.id))


class FakeImages(_Repo, ports.ImageRepository):
    table = "images"

    def add(self, image: Image) -> None:
        assert image.id not in self.rows, "duplicate primary key"
        assert self.get_by_sha(image.project_id, image.sha256) is None, "unique (project, sha256)"
        image = _copy(image)
        image.tag_ids = sorted(image.tag_ids)
        self._put(image.id, image)

    def get_many(self, image_ids: list[str]) -> list[Image]:
        return [_copy(self.rows[i]) for i in dict.fromkeys(image_ids) if i in self.rows]

    def get_by_sha(self, project_id: str, sha256: str) -> Image | None:
        return next((_copy(i) for i in self.rows.values() if i.project_id == project_id and i.sha256 == sha256), None)

    def _filtered(self, project_id: str, tagged: bool | None, tag_ids: list[str] | None) -> list[Image]:
        out = [i for i in self.rows.values() if i.project_id == project_id]
        if tagged is not None:
            out = [i for i in out if bool(i.tag_ids) == tagged]
        if tag_ids:
            out = [i for i in out if set(i.tag_ids) & set(tag_ids)]
        return out

    def list(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None,
             skip: int = 0, take: int | None = None, oldest: bool = False) -> list[Image]:
        newest = sorted(sorted(self._filtered(project_id, tagged, tag_ids), key=lambda i: i.id),
                        key=lambda i: i.created_at, reverse=True)
        ordered = newest[::-1] if oldest else newest
        return [_copy(i) for i in ordered[skip:None if take is None else skip + take]]

    def count(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None) -> int:
        return len(self._filtered(project_id, tagged, tag_ids))

    def set_tags(self, image_id: str, tag_ids: list[str]) -> None:
        img = self.rows.get(image_id)
        if img is None:
            return
        assert all(t in self.uow.data["tags"] for t in tag_ids), "foreign key: image_tags.tag_id"
        assert len(set(tag_ids)) == len(tag_ids), "primary key: image_tags"
        img = _copy(img)
        img.tag_ids = sorted(tag_ids)
        self._put(image_id, img)

    def set_metadata(self, image_id: str, metadata: dict[str, str]) -> None:
        img = self.rows.get(image_id)
        if img is None:
            return
        img = _copy(img)
        img.metadata = dict(metadata)
        self._put(image_id, img)

    def delete(self, image_id: str) -> None:
        self._drop(image_id)

    def snapshot(self, project_id: str) -> list[SnapshotEntry]:
        return [SnapshotEntry(i.id, i.sha256, sorted(i.tag_ids))
                for i in sorted(self.rows.values(), key=lambda i: i.id) if i.project_id == project_id and i.tag_ids]


class FakeIterations(_Repo, ports.IterationRepository):
    table = "iterations"

    def add(self, iteration: Iteration) -> None:
        assert iteration.id not in self.rows, "duplicate primary key"
        assert all(i.number != iteration.number for i in self.rows.values() if i.project_id == iteration.project_id)
        self._put(iteration.id, iteration)

    def get(self, iteration_id: str, with_snapshot: bool = False) -> Iteration | None:
        it = _copy(self.rows.get(iteration_id))
        if it is not None and not with_snapshot:
            it.snapshot = []
        return it

    def update_if(self, iteration: Iteration, statuses: list[IterationStatus]) -> bool:
        """As SQL's UPDATE ... WHERE status IN: the check reads the committed row, not this unit of work's copy."""
        with self.uow.db.lock:
            committed = self.uow.db.tables[self.table].get(iteration.id)
        mine = self.rows.get(iteration.id)
        if committed is None or mine is None or committed.status not in statuses:
            return False
        self.update(iteration)
        return True

    def list(self, project_id: str) -> list[Iteration]:
        return [self.get(i.id) for i in sorted(self.rows.values(), key=lambda i: i.number)  # type: ignore[misc]
                if i.project_id == project_id]

    def update(self, iteration: Iteration) -> None:
        stored = self.rows.get(iteration.id)
        if stored is None:
            return
        new = _copy(iteration)
        new.snapshot, new.notify, new.reported_at = stored.snapshot, stored.notify, stored.reported_at
        self._put(iteration.id, new)

    def _set(self, iteration_id: str, **fields: Any) -> None:
        stored = self.rows.get(iteration_id)
        if stored is not None:
            new = _copy(stored)
            for k, v in fields.items():
                setattr(new, k, v)
            self._put(iteration_id, new)

    def set_notify(self, iteration_id: str, notify: dict | None) -> None:
        self._set(iteration_id, notify=notify)

    def set_reported(self, iteration_id: str, reported_at: datetime | None) -> None:
        self._set(iteration_id, reported_at=reported_at)

    def delete(self, iteration_id: str) -> None:
        self._drop(iteration_id)
        for e in [e for e in self.uow.data["exports"].values() if e.iteration_id == iteration_id]:
            self._drop(e.id, "exports")

    def in_status(self, statuses: list[IterationStatus], project_id: str | None = None) -> list[Iteration]:
        return [self.get(i.id) for i in sorted(self.rows.values(), key=lambda i: i.number)  # type: ignore[misc]
                if i.status in statuses and (project_id is None or i.project_id == project_id)]

    def next_number(self, project_id: str) -> int:
        """Never reused after a deletion, as the database's per-project counter."""
        highest = max((i.number for i in self.rows.values() if i.project_id == project_id), default=0)
        n = max(highest, self.uow.data["counters"].get(project_id, 0)) + 1
        self._put(project_id, n, "counters")
        return n


class FakeEmbeddings(_Repo, ports.EmbeddingRepository):
    table = "embeddings"

    def get_many(self, backbone_id: str, sha256s: list[str]) -> dict[str, np.ndarray]:
        return {s: self.rows[(backbone_id, s)].copy() for s in sha256s if (backbone_id, s) in self.rows}

    def put_many(self, backbone_id: str, vectors: dict[str, np.ndarray]) -> None:
        for s, v in vectors.items():
            if (backbone_id, s) not in self.rows:
                self._put((backbone_id, s), np.asarray(v, np.float32))

    def count(self, backbone_id: str | None = None) -> int:
        return sum(1 for b, _ in self.rows if backbone_id is None or b == backbone_id)

    def sha256s(self) -> set[str]:
        return {s for _, s in self.rows}

    def delete(self, sha256s: list[str]) -> int:
        gone = [k for k in self.rows if k[1] in set(sha256s)]
        for k in gone:
            self._drop(k)
        return len(gone)


class FakePredictions(_Repo, ports.PredictionRepository):
    table = "predictions"

    def add(self, prediction: Prediction) -> None:
        assert prediction.id not in self.rows, "duplicate primary key"
        self._put(prediction.id, prediction)

    def get(self, prediction_id: str) -> Prediction | None:
        return _copy(self.rows.get(prediction_id))

    def list(self, project_id: str, iteration_id: str | None = None, skip: int = 0,
             take: int | None = None) -> list[Prediction]:
        found = [p for p in self.rows.values()
                 if p.project_id == project_id and (iteration_id is None or p.iteration_id == iteration_id)]
        found = sorted(sorted(found, key=lambda p: p.id), key=lambda p: p.created_at, reverse=True)
        return [_copy(p) for p in found[skip:None if take is None else skip + take]]

    def delete(self, prediction_id: str) -> None:
        self._drop(prediction_id)


class FakeChannels(_Repo, ports.ChannelRepository):
    table = "channels"

    def get(self, workspace: str, channel_id: str) -> ChannelBinding | None:
        return _copy(self.rows.get((workspace, channel_id)))

    def put(self, binding: ChannelBinding) -> None:
        self._put((binding.workspace, binding.channel_id), binding)

    def delete(self, workspace: str, channel_id: str) -> None:
        self._drop((workspace, channel_id))

    def for_project(self, project_id: str) -> list[ChannelBinding]:
        return [_copy(b) for b in self.rows.values() if b.project_id == project_id]


class FakeMessages(_Repo, ports.MessageRepository):
    table = "messages"

    def link(self, workspace: str, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        for image_id in image_ids:
            if image_id in self.uow.data["images"]:
                self._put((workspace, channel_id, message_ts, image_id), True)

    def image_ids(self, workspace: str, channel_id: str, message_ts: str) -> list[str]:
        return sorted(k[3] for k in self.rows if k[:3] == (workspace, channel_id, message_ts)
                      and k[3] in self.uow.data["images"])


class FakeKeys(_Repo, ports.KeyRepository):
    table = "keys"

    def get(self, workspace: str) -> WorkspaceKeys | None:
        return _copy(self.rows.get(workspace))

    def put(self, keys: WorkspaceKeys) -> None:
        self._put(keys.workspace, keys)

    def add_if_absent(self, keys: WorkspaceKeys) -> WorkspaceKeys:
        if keys.workspace not in self.rows:
            self.put(keys)
        return self.get(keys.workspace)  # type: ignore[return-value]

    def find(self, key: str) -> WorkspaceKeys | None:
        return next((_copy(k) for k in self.rows.values() if key in (k.training_key, k.prediction_key)), None)


class FakeExports(_Repo, ports.ExportRepository):
    table = "exports"

    def add(self, export: Export) -> None:
        assert export.id not in self.rows, "duplicate primary key"
        self._put(export.id, export)

    def update(self, export: Export) -> None:
        if export.id in self.rows:
            self._put(export.id, export)

    def list(self, iteration_id: str) -> list[Export]:
        return [_copy(e) for e in sorted(self.rows.values(), key=lambda e: e.created_at)
                if e.iteration_id == iteration_id]

    def in_status(self, status: ExportStatus) -> list[Export]:
        return [_copy(e) for e in self.rows.values() if e.status == status]


class FakeSecrets(_Repo, ports.SecretRepository):
    table = "server_secrets"

    def get_or_add(self, name: str, value: str) -> str:
        if name not in self.rows:
            self._put(name, value)
        stored: str = self.rows[name]
        return stored


class FakeVariants(_Repo, ports.VariantRepository):
    table = "image_variants"

    def get(self, source_key: str, variant: str) -> str | None:
        key: str | None = self.rows.get((source_key, variant))
        return key

    def put(self, source_key: str, variant: str, blob_key: str) -> None:
        self._put((source_key, variant), blob_key)


class FakeMigrated(_Repo, ports.MigrationRepository):
    table = "migrated"

    def get(self, source: str, kind: str, source_id: str) -> str | None:
        row = self.rows.get((source, kind, source_id))
        if row is None or row[1] not in self.uow.data["projects"]:  # the target project's records go with it
            return None
        target: str = row[0]
        return target

    def put(self, source: str, kind: str, source_id: str, target_id: str, project_id: str) -> None:
        self._put((source, kind, source_id), (target_id, project_id))


class FakeClaims(_Repo, ports.ClaimRepository):
    table = "claims"

    def claim(self, key: str, expires_at: datetime, now: datetime) -> bool:
        with self.uow.db.lock:  # a claim is decided against what is committed, as the database's unique key does
            held = self.uow.db.tables[self.table].get(key)
        held = self.rows.get(key, held)
        if held is not None and held > now:
            return False
        self._put(key, expires_at)
        return True

    def purge(self, now: datetime) -> int:
        gone = [k for k, exp in self.rows.items() if exp <= now]
        for k in gone:
            self._drop(k)
        return len(gone)


class FakeJobRuns(_Repo, ports.JobRunRepository):
    table = "job_runs"

    def start(self, run: JobRun) -> bool:
        with self.uow.db.lock:
            taken = (run.job, run.slot) in self.uow.db.tables[self.table]
        if taken or (run.job, run.slot) in self.rows:
            return False
        self._put((run.job, run.slot), run)
        return True

    def finish(self, job: str, slot: str, status: JobRunStatus, result: dict[str, Any] | None,
               finished_at: datetime) -> None:
        run = self.rows.get((job, slot))
        if run is not None:
            run = _copy(run)
            run.status, run.result, run.finished_at = status, result, finished_at
            self._put((job, slot), run)

    def list(self, job: str | None = None, limit: int = 100) -> list[JobRun]:
        found = [r for r in self.rows.values() if job is None or r.job == job]
        return [_copy(r) for r in sorted(found, key=lambda r: (r.started_at, r.slot), reverse=True)[:limit]]


class FakeOrphans(_Repo, ports.OrphanRepository):
    table = "orphan_blobs"

    def mark(self, keys: list[str], at: datetime) -> None:
        for k in keys:
            if k not in self.rows:
                self._put(k, at)

    def marked(self) -> dict[str, datetime]:
        return dict(self.rows)

    def forget(self, keys: list[str]) -> None:
        for k in keys:
            self._drop(k)


class FakeDecisions(_Repo, ports.DecisionRepository):
    table = "decisions"

    def put(self, decision: LabelDecision) -> None:
        self._put((decision.image_id, DecisionKind(decision.kind).value), decision)

    def for_project(self, project_id: str, kind: str) -> dict[str, LabelDecision]:
        images = self.uow.data["images"]  # a decision goes with its image
        return {d.image_id: _copy(d) for (image_id, k), d in self.rows.items()
                if d.project_id == project_id and k == DecisionKind(kind).value and image_id in images}


class FakeUnitOfWork(ports.UnitOfWork):
    """A transaction: a copy of the committed rows taken at begin; `commit` writes back the rows it changed."""

    def __init__(self, db: FakeDatabase):
        self.db = db
        with db.lock:
            self.data = copy.deepcopy(db.tables)
            db.begun += 1
        self.dirty: set[tuple[str, Any]] = set()
        self.projects = FakeProjects(self)
        self.tags = FakeTags(self)
        self.images = FakeImages(self)
        self.iterations = FakeIterations(self)
        self.embeddings = FakeEmbeddings(self)
        self.predictions = FakePredictions(self)
        self.channels = FakeChannels(self)
        self.messages = FakeMessages(self)
        self.keys = FakeKeys(self)
        self.exports = FakeExports(self)
        self.secrets = FakeSecrets(self)
        self.variants = FakeVariants(self)
        self.migrated = FakeMigrated(self)
        self.claims = FakeClaims(self)
        self.job_runs = FakeJobRuns(self)
        self.orphans = FakeOrphans(self)
        self.decisions = FakeDecisions(self)

    def commit(self) -> None:
        with self.db.lock:
            for table, key in self.dirty:
                if key in self.data[table]:
                    self.db.tables[table][key] = _copy(self.data[table][key])
                else:
                    self.db.tables[table].pop(key, None)
            self.db.commits += 1
        self.dirty = set()

    def rollback(self) -> None:
        for table, key in self.dirty:  # back to what was committed when this unit of work began
            with self.db.lock:
                committed = self.db.tables[table].get(key)
            if committed is None:
                self.data[table].pop(key, None)
            else:
                self.data[table][key] = _copy(committed)
        self.dirty = set()

    def referenced_blob_keys(self, candidates: Iterable[str] | None = None) -> set[str]:
        found: set[str] = set()
        for i in self.data["images"].values():
            found.add(i.sha256)
        for it in self.data["iterations"].values():
            found |= {it.probe_key, it.evaluation_key} | {e.sha256 for e in it.snapshot}
        found |= {p.sha256 for p in self.data["predictions"].values()}
        found |= {e.blob_key for e in self.data["exports"].values()}
        sources = set(found)
        found |= {key for (source, _), key in self.data["image_variants"].items() if source in sources}
        found.discard(None)  # type: ignore[arg-type]
        return found if candidates is None else found & set(candidates)


class FakeBlobStore(ports.BlobStore):
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.partials: dict[str, float] = {}  # unfinished writes a crash left: name -> age in seconds

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        self.blobs[key] = bytes(data)
        return key

    def get(self, key: str) -> bytes:
        if key not in self.blobs:
            raise KeyError(key)
        return self.blobs[key]

    def exists(self, key: str) -> bool:
        return key in self.blobs

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    def keys(self) -> Iterable[str]:
        return list(self.blobs)

    def partial_files(self, older_than: float = 0.0) -> list[ports.PartialFile]:
        return [ports.PartialFile(n, 1, age) for n, age in sorted(self.partials.items()) if age >= older_than]

    def delete_partial(self, name: str) -> None:
        self.partials.pop(name, None)


class FakeBackbones:
    """A backbone provider that answers every domain with one `FakeBackbone` (no model files, no ONNX)."""

    def __init__(self) -> None:
        from tests.helpers import FakeBackbone

        self.backbone = FakeBackbone()

    def for_domain(self, domain: Any) -> Any:
        return self.backbone


class ManualRunner(ports.JobRunner):
    """Keeps submitted jobs until `run_all`, so a test decides when (and whether) a training runs."""

    def __init__(self) -> None:
        self.jobs: list[tuple[ports.Job, Any]] = []

    def submit(self, job: ports.Job, run: Any) -> None:
        self.jobs.append((job, run))

    def run_all(self) -> None:
        jobs, self.jobs = self.jobs, []
        for _, fn in jobs:
            fn()


def fake_deps(runner: ports.JobRunner | None = None) -> Any:
    """`Deps` over a `FakeDatabase`, a `FakeBlobStore` and `FakeBackbones`; `deps.uow` is the database."""
    from core.usecases import Deps

    return Deps(FakeDatabase(), FakeBlobStore(), FakeBackbones(), runner or ManualRunner())  # type: ignore[arg-type]
