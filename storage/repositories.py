"""SQLAlchemy implementations of the core's repositories."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import and_, case, delete, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import ports
from core.model import (
    ChannelBinding,
    ClassificationType,
    DecisionKind,
    Domain,
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
    TagPrediction,
    TagType,
    WorkspaceKeys,
)

from . import tables as t

CHUNK = 500


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _dialect_insert(s: Session, table):
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise NotImplementedError(f"no conflict-safe insert for {dialect}")


def _insert_absent(s: Session, table, rows: list[dict], keys: list[str]) -> None:
    """Insert the rows whose `keys` are free; a row a concurrent transaction inserted first is kept as it is
    (PostgreSQL waits for that transaction, SQLite for its write lock, so a later select sees the row)."""
    for chunk in _chunks(rows):
        s.execute(_dialect_insert(s, table).on_conflict_do_nothing(index_elements=keys), chunk)


def _upsert(s: Session, table, row: dict, keys: list[str]) -> None:
    """Insert the row, or overwrite the one with the same `keys` (also one a concurrent transaction just added)."""
    stmt = _dialect_insert(s, table).values(**row)
    s.execute(stmt.on_conflict_do_update(index_elements=keys,
                                         set_={c: stmt.excluded[c] for c in row if c not in keys}))


class SqlProjects(ports.ProjectRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _row(p: Project) -> dict:
        return dict(id=p.id, workspace=p.workspace, name=p.name, name_lower=p.name.lower(), description=p.description,
                    domain=p.domain.value, classification_type=p.classification_type.value, threshold=p.threshold,
                    created_by=p.created_by, default_iteration_id=p.default_iteration_id, created_at=p.created_at,
                    modified_at=p.modified_at, retrain=p.retrain,
                    prediction_retention_days=p.prediction_retention_days, unknown_threshold=p.unknown_threshold)

    @staticmethod
    def _obj(r) -> Project:
        return Project(id=r.id, workspace=r.workspace, name=r.name, description=r.description,
                       domain=Domain(r.domain), classification_type=ClassificationType(r.classification_type),
                       threshold=r.threshold, created_by=r.created_by, default_iteration_id=r.default_iteration_id,
                       created_at=_utc(r.created_at), modified_at=_utc(r.modified_at), retrain=r.retrain,
                       prediction_retention_days=r.prediction_retention_days, unknown_threshold=r.unknown_threshold)

    def add(self, project: Project) -> None:
        self.s.execute(insert(t.projects).values(**self._row(project)))

    def add_if_absent(self, project: Project) -> Project:
        _insert_absent(self.s, t.projects, [self._row(project)], ["workspace", "name_lower"])
        return self.get_by_name(project.workspace, project.name)

    def get(self, project_id: str) -> Project | None:
        r = self.s.execute(select(t.projects).where(t.projects.c.id == project_id)).first()
        return self._obj(r) if r else None

    def get_by_name(self, workspace: str, name: str) -> Project | None:
        r = self.s.execute(select(t.projects).where(
            t.projects.c.workspace == workspace, t.projects.c.name_lower == name.strip().lower())).first()
        return self._obj(r) if r else None

    def list(self, workspace: str | None = None) -> list[Project]:
        q = select(t.projects).order_by(t.projects.c.created_at, t.projects.c.name_lower)
        if workspace is not None:
            q = q.where(t.projects.c.workspace == workspace)
        return [self._obj(r) for r in self.s.execute(q)]

    def update(self, project: Project) -> None:
        row = self._row(project)
        row.pop("id")
        self.s.execute(update(t.projects).where(t.projects.c.id == project.id).values(**row))

    def delete(self, project_id: str) -> None:
        self.s.execute(delete(t.projects).where(t.projects.c.id == project_id))


class SqlTags(ports.TagRepository):
    def __init__(self, session: Session):
        self.s = session

    def _select(self):
        count = (select(func.count()).select_from(t.image_tags).where(t.image_tags.c.tag_id == t.tags.c.id)
                 .correlate(t.tags).scalar_subquery())
        return select(t.tags, count.label("image_count"))

    @staticmethod
    def _obj(r) -> Tag:
        return Tag(id=r.id, project_id=r.project_id, name=r.name, type=TagType(r.type), description=r.description,
                   created_at=_utc(r.created_at), image_count=int(r.image_count or 0))

    @staticmethod
    def _row(tag: Tag) -> dict:
        return dict(id=tag.id, project_id=tag.project_id, name=tag.name, name_lower=tag.name.lower(),
                    type=tag.type.value, description=tag.description, created_at=tag.created_at)

    def add(self, tag: Tag) -> None:
        self.s.execute(insert(t.tags).values(**self._row(tag)))

    def add_if_absent(self, tag: Tag) -> Tag:
        _insert_absent(self.s, t.tags, [self._row(tag)], ["project_id", "name_lower"])
        return self._obj(self.s.execute(self._select().where(
            t.tags.c.project_id == tag.project_id, t.tags.c.name_lower == tag.name.lower())).one())

    def get(self, tag_id: str) -> Tag | None:
        r = self.s.execute(self._select().where(t.tags.c.id == tag_id)).first()
        return self._obj(r) if r else None

    def list(self, project_id: str) -> list[Tag]:
        q = self._select().where(t.tags.c.project_id == project_id).order_by(t.tags.c.created_at, t.tags.c.name_lower)
        return [self._obj(r) for r in self.s.execute(q)]

    def update(self, tag: Tag) -> None:
        self.s.execute(update(t.tags).where(t.tags.c.id == tag.id).values(
            name=tag.name, name_lower=tag.name.lower(), type=tag.type.value, description=tag.description))

    def delete(self, tag_id: str) -> None:
        self.s.execute(delete(t.image_tags).where(t.image_tags.c.tag_id == tag_id))
        self.s.execute(delete(t.tags).where(t.tags.c.id == tag_id))


class SqlImages(ports.ImageRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _obj(r, tag_ids: list[str]) -> Image:
        return Image(id=r.id, project_id=r.project_id, sha256=r.sha256, width=r.width, height=r.height,
                     original_name=r.original_name, source=r.source, uploaded_by=r.uploaded_by,
                     created_at=_utc(r.created_at), tag_ids=tag_ids, metadata=dict(r.metadata or {}))

    def _tags_of(self, image_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {i: [] for i in image_ids}
        for chunk in _chunks(image_ids):
            q = (select(t.image_tags.c.image_id, t.image_tags.c.tag_id)
                 .where(t.image_tags.c.image_id.in_(chunk)).order_by(t.image_tags.c.tag_id))
            for image_id, tag_id in self.s.execute(q):
                out[image_id].append(tag_id)
        return out

    def _hydrate(self, rows) -> list[Image]:
        rows = list(rows)
        tags = self._tags_of([r.id for r in rows])
        return [self._obj(r, tags[r.id]) for r in rows]

    def add(self, image: Image) -> None:
        self.s.execute(insert(t.images).values(
            id=image.id, project_id=image.project_id, sha256=image.sha256, width=image.width, height=image.height,
            original_name=image.original_name[:512], source=image.source[:64], uploaded_by=image.uploaded_by,
            created_at=image.created_at, metadata=dict(image.metadata) or None))
        if image.tag_ids:
            self.s.execute(insert(t.image_tags), [{"image_id": image.id, "tag_id": tid} for tid in image.tag_ids])

    def get_many(self, image_ids: list[str]) -> list[Image]:
        rows = []
        for chunk in _chunks(list(image_ids)):
            rows += list(self.s.execute(select(t.images).where(t.images.c.id.in_(chunk))))
        order = {i: n for n, i in enumerate(image_ids)}
        return sorted(self._hydrate(rows), key=lambda i: order.get(i.id, 0))

    def get_by_sha(self, project_id: str, sha256: str) -> Image | None:
        rows = self.s.execute(select(t.images).where(t.images.c.project_id == project_id, t.images.c.sha256 == sha256))
        found = self._hydrate(rows)
        return found[0] if found else None

    def _filtered(self, q, project_id: str, tagged: bool | None, tag_ids: list[str] | None):
        q = q.where(t.images.c.project_id == project_id)
        any_tag = exists().where(t.image_tags.c.image_id == t.images.c.id)
        if tagged is True:
            q = q.where(any_tag)
        elif tagged is False:
            q = q.where(~any_tag)
        if tag_ids:
            q = q.where(exists().where(and_(t.image_tags.c.image_id == t.images.c.id,
                                            t.image_tags.c.tag_id.in_(tag_ids))))
        return q

    def list(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None,
             skip: int = 0, take: int | None = None, oldest: bool = False) -> list[Image]:
        q = self._filtered(select(t.images), project_id, tagged, tag_ids)
        order = ((t.images.c.created_at, t.images.c.id.desc()) if oldest
                 else (t.images.c.created_at.desc(), t.images.c.id))
        q = q.order_by(*order).offset(skip)
        if take is not None:
            q = q.limit(take)
        return self._hydrate(self.s.execute(q))

    def count(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None) -> int:
        q = self._filtered(select(func.count()).select_from(t.images), project_id, tagged, tag_ids)
        return int(self.s.execute(q).scalar_one())

    def set_tags(self, image_id: str, tag_ids: list[str]) -> None:
        self.s.execute(delete(t.image_tags).where(t.image_tags.c.image_id == image_id))
        if tag_ids:
            self.s.execute(insert(t.image_tags), [{"image_id": image_id, "tag_id": tid} for tid in tag_ids])

    def set_metadata(self, image_id: str, metadata: dict[str, str]) -> None:
        self.s.execute(update(t.images).where(t.images.c.id == image_id).values(metadata=dict(metadata) or None))

    def delete(self, image_id: str) -> None:
        self.s.execute(delete(t.image_tags).where(t.image_tags.c.image_id == image_id))
        self.s.execute(delete(t.images).where(t.images.c.id == image_id))

    def snapshot(self, project_id: str) -> list[SnapshotEntry]:
        q = (select(t.images.c.id, t.images.c.sha256, t.image_tags.c.tag_id)
             .join(t.image_tags, t.image_tags.c.image_id == t.images.c.id)
             .where(t.images.c.project_id == project_id).order_by(t.images.c.id, t.image_tags.c.tag_id))
        out: dict[str, SnapshotEntry] = {}
        for image_id, sha, tag_id in self.s.execute(q):
            out.setdefault(image_id, SnapshotEntry(image_id, sha, [])).tag_ids.append(tag_id)
        return list(out.values())


class SqlIterations(ports.IterationRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _row(it: Iteration) -> dict:
        return dict(id=it.id, project_id=it.project_id, number=it.number, name=it.name, status=it.status.value,
                    failure_reason=it.failure_reason, fingerprint=it.fingerprint, domain=it.domain.value,
                    classification_type=it.classification_type.value, backbone_id=it.backbone_id,
                    tag_ids=list(it.tag_ids), tag_names=list(it.tag_names),
                    tag_types=[tt.value for tt in it.tag_types], probe_key=it.probe_key,
                    evaluation_key=it.evaluation_key, performance=it.performance,
                    training_seconds=it.training_seconds, publish_name=it.publish_name,
                    publish_resource_id=it.publish_resource_id, created_at=it.created_at,
                    trained_at=it.trained_at)

    @staticmethod
    def _obj(r) -> Iteration:
        return Iteration(id=r.id, project_id=r.project_id, number=r.number, name=r.name,
                         status=IterationStatus(r.status), failure_reason=r.failure_reason, fingerprint=r.fingerprint,
                         domain=Domain(r.domain), classification_type=ClassificationType(r.classification_type),
                         backbone_id=r.backbone_id, tag_ids=list(r.tag_ids), tag_names=list(r.tag_names),
                         tag_types=[TagType(v) for v in (r.tag_types or [])] or [TagType.Regular] * len(r.tag_ids),
                         probe_key=r.probe_key, evaluation_key=r.evaluation_key, performance=r.performance,
                         training_seconds=r.training_seconds, publish_name=r.publish_name,
                         publish_resource_id=r.publish_resource_id,
                         created_at=_utc(r.created_at), trained_at=_utc(r.trained_at),
                         notify=dict(r.notify) if r.notify else None, reported_at=_utc(r.reported_at))

    def add(self, iteration: Iteration) -> None:
        self.s.execute(insert(t.iterations).values(**self._row(iteration), notify=iteration.notify or None,
                                                   reported_at=iteration.reported_at))
        if iteration.snapshot:
            self.s.execute(insert(t.iteration_images), [
                {"iteration_id": iteration.id, "position": n, "image_id": e.image_id, "sha256": e.sha256,
                 "tag_ids": list(e.tag_ids)} for n, e in enumerate(iteration.snapshot)])

    def get(self, iteration_id: str, with_snapshot: bool = False) -> Iteration | None:
        r = self.s.execute(select(t.iterations).where(t.iterations.c.id == iteration_id)).first()
        if not r:
            return None
        it = self._obj(r)
        if with_snapshot:
            q = (select(t.iteration_images).where(t.iteration_images.c.iteration_id == iteration_id)
                 .order_by(t.iteration_images.c.position))
            it.snapshot = [SnapshotEntry(x.image_id, x.sha256, list(x.tag_ids)) for x in self.s.execute(q)]
        return it

    def list(self, project_id: str) -> list[Iteration]:
        q = select(t.iterations).where(t.iterations.c.project_id == project_id).order_by(t.iterations.c.number)
        return [self._obj(r) for r in self.s.execute(q)]

    def published(self, project_id: str, publish_name: str) -> Iteration | None:
        r = self.s.execute(select(t.iterations).where(t.iterations.c.project_id == project_id,
                                                      t.iterations.c.publish_name == publish_name)).first()
        return self._obj(r) if r else None

    def update(self, iteration: Iteration) -> None:
        row = self._row(iteration)
        row.pop("id")
        self.s.execute(update(t.iterations).where(t.iterations.c.id == iteration.id).values(**row))

    def update_if(self, iteration: Iteration, statuses: list[IterationStatus]) -> bool:
        row = self._row(iteration)
        row.pop("id")
        done = self.s.execute(update(t.iterations).where(
            t.iterations.c.id == iteration.id, t.iterations.c.status.in_([s.value for s in statuses])).values(**row))
        return bool(done.rowcount)

    def set_notify(self, iteration_id: str, notify: dict | None) -> None:
        self.s.execute(update(t.iterations).where(t.iterations.c.id == iteration_id).values(notify=notify or None))

    def set_reported(self, iteration_id: str, reported_at: datetime | None) -> None:
        self.s.execute(update(t.iterations).where(t.iterations.c.id == iteration_id).values(reported_at=reported_at))

    def unreported(self, statuses: list[IterationStatus]) -> list[Iteration]:
        q = select(t.iterations).where(t.iterations.c.status.in_([s.value for s in statuses]),
                                       t.iterations.c.notify.is_not(None), t.iterations.c.reported_at.is_(None))
        return [self._obj(r) for r in self.s.execute(q.order_by(t.iterations.c.created_at, t.iterations.c.number))]

    def delete(self, iteration_id: str) -> None:
        self.s.execute(delete(t.iteration_images).where(t.iteration_images.c.iteration_id == iteration_id))
        self.s.execute(delete(t.iterations).where(t.iterations.c.id == iteration_id))

    def in_status(self, statuses: list[IterationStatus], project_id: str | None = None) -> list[Iteration]:
        q = select(t.iterations).where(t.iterations.c.status.in_([s.value for s in statuses]))
        if project_id is not None:
            q = q.where(t.iterations.c.project_id == project_id)
        return [self._obj(r) for r in self.s.execute(q.order_by(t.iterations.c.number))]

    def next_number(self, project_id: str) -> int:
        """The project's counter, advanced in this transaction (which holds the project row's write lock until it
        ends, so concurrent trainings get different numbers); never below the highest stored number."""
        highest = select(func.coalesce(func.max(t.iterations.c.number), 0)).where(
            t.iterations.c.project_id == project_id).scalar_subquery()
        counter = t.projects.c.last_iteration_number
        self.s.execute(update(t.projects).where(t.projects.c.id == project_id).values(
            last_iteration_number=case((counter > highest, counter), else_=highest) + 1))
        return int(self.s.execute(select(counter).where(t.projects.c.id == project_id)).scalar_one())


class SqlEmbeddings(ports.EmbeddingRepository):
    def __init__(self, session: Session):
        self.s = session

    def get_many(self, backbone_id: str, sha256s: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(sha256s)):
            q = select(t.embeddings.c.sha256, t.embeddings.c.vector).where(
                t.embeddings.c.backbone_id == backbone_id, t.embeddings.c.sha256.in_(chunk))
            for sha, vec in self.s.execute(q):
                out[sha] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put_many(self, backbone_id: str, vectors: dict[str, np.ndarray]) -> None:
        existing = set(self.get_many(backbone_id, list(vectors)))
        rows = [{"backbone_id": backbone_id, "sha256": sha, "dim": int(v.shape[0]),
                 "vector": np.asarray(v, np.float32).tobytes()} for sha, v in vectors.items() if sha not in existing]
        _insert_absent(self.s, t.embeddings, rows, ["backbone_id", "sha256"])

    def count(self, backbone_id: str | None = None) -> int:
        q = select(func.count()).select_from(t.embeddings)
        if backbone_id is not None:
            q = q.where(t.embeddings.c.backbone_id == backbone_id)
        return int(self.s.execute(q).scalar_one())

    def sha256s(self) -> set[str]:
        return {v for (v,) in self.s.execute(select(t.embeddings.c.sha256).distinct())}

    def delete(self, sha256s: list[str]) -> int:
        gone = 0
        for chunk in _chunks(list(dict.fromkeys(sha256s))):
            gone += self.s.execute(delete(t.embeddings).where(t.embeddings.c.sha256.in_(chunk))).rowcount or 0
        return gone


class SqlPredictions(ports.PredictionRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _obj(r) -> Prediction:
        preds = [TagPrediction(p["tagId"], p["tagName"], float(p["probability"]), TagType(p.get("tagType", "Regular")))
                 for p in r.results]
        return Prediction(id=r.id, project_id=r.project_id, iteration_id=r.iteration_id, sha256=r.sha256,
                          threshold=r.threshold, predictions=preds, stored=True, created_at=_utc(r.created_at),
                          unknown_score=r.unknown_score, unknown_threshold=r.unknown_threshold)

    def add(self, prediction: Prediction) -> None:
        results = [{"tagId": p.tag_id, "tagName": p.tag_name, "probability": p.probability, "tagType": p.tag_type.value}
                   for p in prediction.predictions]
        self.s.execute(insert(t.predictions).values(
            id=prediction.id, project_id=prediction.project_id, iteration_id=prediction.iteration_id,
            sha256=prediction.sha256, threshold=prediction.threshold, results=results,
            created_at=prediction.created_at, unknown_score=prediction.unknown_score,
            unknown_threshold=prediction.unknown_threshold))

    def get(self, prediction_id: str) -> Prediction | None:
        r = self.s.execute(select(t.predictions).where(t.predictions.c.id == prediction_id)).first()
        return self._obj(r) if r else None

    def list(self, project_id: str, iteration_id: str | None = None, skip: int = 0,
             take: int | None = None) -> list[Prediction]:
        q = select(t.predictions).where(t.predictions.c.project_id == project_id)
        if iteration_id:
            q = q.where(t.predictions.c.iteration_id == iteration_id)
        q = q.order_by(t.predictions.c.created_at.desc(), t.predictions.c.id).offset(skip)
        if take is not None:
            q = q.limit(take)
        return [self._obj(r) for r in self.s.execute(q)]

    def delete(self, prediction_id: str) -> None:
        self.s.execute(delete(t.predictions).where(t.predictions.c.id == prediction_id))

    def older_than(self, project_id: str, before: datetime, limit: int) -> list[Prediction]:
        c = t.predictions.c
        q = (select(t.predictions).where(c.project_id == project_id, c.created_at < before)
             .order_by(c.created_at, c.id).limit(limit))
        return [self._obj(r) for r in self.s.execute(q)]


def referenced_keys(s: Session, candidates: Iterable[str] | None) -> set[str]:
    sources = [t.images.c.sha256, t.iteration_images.c.sha256, t.predictions.c.sha256,
               t.iterations.c.probe_key, t.iterations.c.evaluation_key, t.exports.c.blob_key]
    # a resized copy or thumbnail is referenced while the image it was made from is
    v = t.image_variants.c
    copies = select(v.blob_key).where(v.source_key.in_(
        select(t.images.c.sha256).union(select(t.predictions.c.sha256), select(t.iteration_images.c.sha256))))
    found: set[str] = set()
    if candidates is None:
        for col in sources:
            found |= {k for (k,) in s.execute(select(col).distinct()) if k}
        found |= {k for (k,) in s.execute(copies.distinct())}
        return found
    cands = list(dict.fromkeys(candidates))
    for chunk in _chunks(cands):
        for col in sources:
            found |= {k for (k,) in s.execute(select(col).where(col.in_(chunk)).distinct()) if k}
        found |= {k for (k,) in s.execute(copies.where(v.blob_key.in_(chunk)).distinct())}
    return found


class SqlSecrets(ports.SecretRepository):
    def __init__(self, session: Session):
        self.s = session

    def get_or_add(self, name: str, value: str) -> str:
        _insert_absent(self.s, t.server_secrets, [dict(name=name, value=value)], ["name"])
        c = t.server_secrets.c
        stored: str = self.s.execute(select(c.value).where(c.name == name)).scalar_one()
        return stored


class SqlVariants(ports.VariantRepository):
    def __init__(self, session: Session):
        self.s = session

    def get(self, source_key: str, variant: str) -> str | None:
        v = t.image_variants.c
        key: str | None = self.s.execute(select(v.blob_key).where(
            v.source_key == source_key, v.variant == variant)).scalar_one_or_none()
        return key

    def put(self, source_key: str, variant: str, blob_key: str) -> None:
        _upsert(self.s, t.image_variants, dict(source_key=source_key, variant=variant, blob_key=blob_key),
                ["source_key", "variant"])


class SqlMigrated(ports.MigrationRepository):
    def __init__(self, session: Session):
        self.s = session

    def get(self, source: str, kind: str, source_id: str) -> str | None:
        m = t.migrated.c
        target: str | None = self.s.execute(select(m.target_id).where(
            m.source == source, m.kind == kind, m.source_id == source_id)).scalar_one_or_none()
        return target

    def put(self, source: str, kind: str, source_id: str, target_id: str, project_id: str) -> None:
        _upsert(self.s, t.migrated, dict(source=source, kind=kind, source_id=source_id, target_id=target_id,
                                         project_id=project_id), ["source", "kind", "source_id"])


class SqlChannels(ports.ChannelRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _obj(r) -> ChannelBinding:
        return ChannelBinding(workspace=r.workspace, channel_id=r.channel_id, project_id=r.project_id,
                              collect_tags=list(r.collect_tags) if r.collect_tags is not None else None,
                              bound_by=r.bound_by, updated_at=_utc(r.updated_at),
                              keep_untagged=bool(r.keep_untagged))

    def get(self, workspace: str, channel_id: str) -> ChannelBinding | None:
        r = self.s.execute(select(t.channel_bindings).where(
            t.channel_bindings.c.workspace == workspace, t.channel_bindings.c.channel_id == channel_id)).first()
        return self._obj(r) if r else None

    def put(self, binding: ChannelBinding) -> None:
        _upsert(self.s, t.channel_bindings, dict(
            workspace=binding.workspace, channel_id=binding.channel_id, project_id=binding.project_id,
            collect_tags=binding.collect_tags, bound_by=binding.bound_by, updated_at=binding.updated_at,
            keep_untagged=bool(binding.keep_untagged)),
            ["workspace", "channel_id"])

    def delete(self, workspace: str, channel_id: str) -> None:
        self.s.execute(delete(t.channel_bindings).where(
            t.channel_bindings.c.workspace == workspace, t.channel_bindings.c.channel_id == channel_id))

    def for_project(self, project_id: str) -> list[ChannelBinding]:
        q = select(t.channel_bindings).where(t.channel_bindings.c.project_id == project_id)
        return [self._obj(r) for r in self.s.execute(q)]


class SqlMessages(ports.MessageRepository):
    def __init__(self, session: Session):
        self.s = session

    def link(self, workspace: str, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        have = set(self.image_ids(workspace, channel_id, message_ts))
        rows = [{"workspace": workspace, "channel_id": channel_id, "message_ts": message_ts, "image_id": i}
                for i in dict.fromkeys(image_ids) if i not in have]
        _insert_absent(self.s, t.message_images, rows, ["workspace", "channel_id", "message_ts", "image_id"])

    def image_ids(self, workspace: str, channel_id: str, message_ts: str) -> list[str]:
        q = select(t.message_images.c.image_id).where(
            t.message_images.c.workspace == workspace, t.message_images.c.channel_id == channel_id,
            t.message_images.c.message_ts == message_ts)
        return [r for (r,) in self.s.execute(q)]


class SqlKeys(ports.KeyRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _obj(r) -> WorkspaceKeys:
        return WorkspaceKeys(r.workspace, r.training_key, r.prediction_key, _utc(r.created_at))

    def get(self, workspace: str) -> WorkspaceKeys | None:
        r = self.s.execute(select(t.workspace_keys).where(t.workspace_keys.c.workspace == workspace)).first()
        return self._obj(r) if r else None

    @staticmethod
    def _row(keys: WorkspaceKeys) -> dict:
        return dict(workspace=keys.workspace, training_key=keys.training_key, prediction_key=keys.prediction_key,
                    created_at=keys.created_at)

    def put(self, keys: WorkspaceKeys) -> None:
        _upsert(self.s, t.workspace_keys, self._row(keys), ["workspace"])

    def add_if_absent(self, keys: WorkspaceKeys) -> WorkspaceKeys:
        _insert_absent(self.s, t.workspace_keys, [self._row(keys)], ["workspace"])
        return self.get(keys.workspace)

    def find(self, key: str) -> WorkspaceKeys | None:
        r = self.s.execute(select(t.workspace_keys).where(
            (t.workspace_keys.c.training_key == key) | (t.workspace_keys.c.prediction_key == key))).first()
        return self._obj(r) if r else None


class SqlExports(ports.ExportRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _row(e: Export) -> dict:
        return dict(id=e.id, iteration_id=e.iteration_id, platform=e.platform, flavor=e.flavor, status=e.status.value,
                    blob_key=e.blob_key, failure_reason=e.failure_reason, created_at=e.created_at)

    def add(self, export: Export) -> None:
        self.s.execute(insert(t.exports).values(**self._row(export)))

    def update(self, export: Export) -> None:
        row = self._row(export)
        row.pop("id")
        self.s.execute(update(t.exports).where(t.exports.c.id == export.id).values(**row))

    @staticmethod
    def _obj(r) -> Export:
        return Export(id=r.id, iteration_id=r.iteration_id, platform=r.platform, flavor=r.flavor,
                      status=ExportStatus(r.status), blob_key=r.blob_key, failure_reason=r.failure_reason,
                      created_at=_utc(r.created_at))

    def list(self, iteration_id: str) -> list[Export]:
        q = select(t.exports).where(t.exports.c.iteration_id == iteration_id).order_by(t.exports.c.created_at)
        return [self._obj(r) for r in self.s.execute(q)]

    def in_status(self, status: ExportStatus) -> list[Export]:
        return [self._obj(r) for r in self.s.execute(select(t.exports).where(t.exports.c.status == status.value))]


class SqlClaims(ports.ClaimRepository):
    def __init__(self, session: Session):
        self.s = session

    def claim(self, key: str, expires_at: datetime, now: datetime) -> bool:
        c = t.claims.c
        # RETURNING says whether the row went in (drivers report no reliable rowcount for ON CONFLICT DO NOTHING)
        inserted = self.s.execute(_dialect_insert(self.s, t.claims).values(key=key, expires_at=expires_at)
                                  .on_conflict_do_nothing(index_elements=["key"]).returning(c.key)).first()
        if inserted is not None:
            return True
        # held: taken over only if expired (a concurrent taker's update makes this one match no row)
        renewed = self.s.execute(update(t.claims).where(c.key == key, c.expires_at <= now)
                                 .values(expires_at=expires_at).returning(c.key)).first()
        return renewed is not None

    def purge(self, now: datetime) -> int:
        return int(self.s.execute(delete(t.claims).where(t.claims.c.expires_at <= now)).rowcount or 0)


class SqlJobRuns(ports.JobRunRepository):
    def __init__(self, session: Session):
        self.s = session

    @staticmethod
    def _obj(r) -> JobRun:
        return JobRun(job=r.job, slot=r.slot, owner=r.owner, started_at=_utc(r.started_at),
                      status=JobRunStatus(r.status), finished_at=_utc(r.finished_at),
                      result=dict(r.result) if r.result else None)

    def start(self, run: JobRun) -> bool:
        c = t.job_runs.c
        inserted = self.s.execute(_dialect_insert(self.s, t.job_runs).values(
            job=run.job, slot=run.slot, owner=run.owner, status=run.status.value, started_at=run.started_at,
            finished_at=run.finished_at, result=run.result).on_conflict_do_nothing(index_elements=["job", "slot"])
            .returning(c.job)).first()
        return inserted is not None

    def finish(self, job: str, slot: str, status: JobRunStatus, result: dict | None, finished_at: datetime) -> None:
        c = t.job_runs.c
        self.s.execute(update(t.job_runs).where(c.job == job, c.slot == slot).values(
            status=status.value, result=result, finished_at=finished_at))

    def list(self, job: str | None = None, limit: int = 100) -> list[JobRun]:
        c = t.job_runs.c
        q = select(t.job_runs).order_by(c.started_at.desc(), c.job, c.slot.desc()).limit(limit)
        if job is not None:
            q = q.where(c.job == job)
        return [self._obj(r) for r in self.s.execute(q)]


class SqlOrphans(ports.OrphanRepository):
    def __init__(self, session: Session):
        self.s = session

    def mark(self, keys: list[str], at: datetime) -> None:
        _insert_absent(self.s, t.orphan_blobs, [dict(key=k, found_at=at) for k in dict.fromkeys(keys)], ["key"])

    def marked(self) -> dict[str, datetime]:
        return {r.key: _utc(r.found_at) for r in self.s.execute(select(t.orphan_blobs))}

    def forget(self, keys: list[str]) -> None:
        for chunk in _chunks(list(dict.fromkeys(keys))):
            self.s.execute(delete(t.orphan_blobs).where(t.orphan_blobs.c.key.in_(chunk)))


class SqlDecisions(ports.DecisionRepository):
    def __init__(self, session: Session):
        self.s = session

    def put(self, decision: LabelDecision) -> None:
        _upsert(self.s, t.label_decisions, dict(
            image_id=decision.image_id, kind=DecisionKind(decision.kind).value, project_id=decision.project_id,
            tags_key=decision.tags_key, decision=decision.decision[:16], decided_by=decision.decided_by,
            decided_at=decision.decided_at), ["image_id", "kind"])

    def for_project(self, project_id: str, kind: str) -> dict[str, LabelDecision]:
        d = t.label_decisions.c
        q = select(t.label_decisions).where(d.project_id == project_id, d.kind == DecisionKind(kind).value)
        return {r.image_id: LabelDecision(project_id=r.project_id, image_id=r.image_id, kind=DecisionKind(r.kind),
                                          tags_key=r.tags_key, decision=r.decision, decided_by=r.decided_by,
                                          decided_at=_utc(r.decided_at))
                for r in self.s.execute(q)}
