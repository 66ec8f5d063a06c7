"""The service layer: one small method per use case. Adapters (CLI, HTTP API, Slack) call only this."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from . import errors
from .backbones import BackboneProvider, registry_entry
from .embedding import Embedder
from .evaluation import Evaluation, performance
from .images import PREDICTION_MAX_BYTES, TRAINING_MAX_BYTES, validate_image
from .model import (
    ChannelBinding, WorkspaceKeys, DEFAULT_WORKSPACE, ClassificationType, Domain, Export, Image, Iteration, IterationStatus, Prediction, Project,
    SnapshotEntry, Tag, TagPrediction, TagType, utcnow,
)
from .ports import BlobStore, JobRunner, UnitOfWork, UnitOfWorkFactory
from .probe import LinearProbe, LinearProbeCV
from .training import ProgressBoard, label_matrix, plan_training

log = logging.getLogger(__name__)

MAX_NAME = 256
MAX_TAGS_PER_PROJECT = 500


@dataclass
class ImageUpload:
    data: bytes
    name: str = ""
    tag_ids: list[str] = field(default_factory=list)


@dataclass
class ImageResult:
    source_name: str
    status: str  # Custom Vision's: OK, OKDuplicate, ErrorImageFormat, ErrorImageSize, ...
    message: str = ""
    image: Image | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("OK", "OKDuplicate")


@dataclass
class ProjectSummary:
    project: Project
    image_count: int
    tagged_image_count: int
    iteration_count: int
    default_iteration: Iteration | None


class InlineRunner(JobRunner):
    """Runs jobs on a plain thread each (the composition root may plug a scheduler instead)."""

    def submit(self, job_id: str, fn: Callable[[], None]) -> None:
        threading.Thread(target=fn, name=f"train-{job_id[:8]}", daemon=True).start()


class CvService:
    def __init__(self, uow_factory: UnitOfWorkFactory, blobs: BlobStore, backbones: BackboneProvider,
                 runner: JobRunner | None = None, embed_batch_size: int = 16):
        self.uow = uow_factory
        self.blobs = blobs
        self.backbones = backbones
        self.runner = runner or InlineRunner()
        self.embed_batch_size = embed_batch_size
        self.progress = ProgressBoard()
        self.images_embedded = 0  # how many images the backbones have embedded in this process
        self._train_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._artifacts: OrderedDict[str, object] = OrderedDict()

    # ----------------------------------------------------------------- projects
    def create_project(self, name: str, domain: Domain | str = Domain.Compact,
                       classification_type: ClassificationType | str = ClassificationType.Multiclass,
                       description: str = "", workspace: str = DEFAULT_WORKSPACE, created_by: str | None = None,
                       threshold: float = 0.5) -> Project:
        name = _clean_name(name, "project")
        project = Project(name=name, domain=_domain(domain), classification_type=_ctype(classification_type),
                          description=description or "", workspace=workspace, created_by=created_by,
                          threshold=_threshold(threshold))
        with self.uow() as uow:
            if uow.projects.get_by_name(workspace, name):
                raise errors.Conflict(f"a project named '{name}' already exists")
            uow.projects.add(project)
            uow.commit()
        return project

    def list_projects(self, workspace: str | None = None) -> list[Project]:
        with self.uow() as uow:
            return uow.projects.list(workspace)

    def get_project(self, project_id: str) -> Project:
        with self.uow() as uow:
            return self._project(uow, project_id)

    def find_project(self, name_or_id: str, workspace: str | None = DEFAULT_WORKSPACE) -> Project:
        with self.uow() as uow:
            p = uow.projects.get(name_or_id)
            if p and (workspace is None or p.workspace == workspace):
                return p
            if workspace is not None:
                p = uow.projects.get_by_name(workspace, name_or_id.strip())
            else:
                p = next((x for x in uow.projects.list() if x.name.lower() == name_or_id.strip().lower()), None)
            if not p:
                raise errors.NotFound(f"no project named '{name_or_id}'")
            return p

    def project_summary(self, project_id: str) -> ProjectSummary:
        with self.uow() as uow:
            p = self._project(uow, project_id)
            its = uow.iterations.list(project_id)
            default = next((i for i in its if i.id == p.default_iteration_id), None)
            return ProjectSummary(p, uow.images.count(project_id), uow.images.count(project_id, tagged=True),
                                  len(its), default)

    def update_project(self, project_id: str, *, name: str | None = None, description: str | None = None,
                       domain: Domain | str | None = None, classification_type: ClassificationType | str | None = None,
                       threshold: float | None = None) -> Project:
        with self.uow() as uow:
            p = self._project(uow, project_id)
            if name is not None and name.strip() != p.name:
                name = _clean_name(name, "project")
                other = uow.projects.get_by_name(p.workspace, name)
                if other and other.id != p.id:
                    raise errors.Conflict(f"a project named '{name}' already exists")
                p.name = name
            if description is not None:
                p.description = description
            if domain is not None:
                p.domain = _domain(domain)
            if classification_type is not None:
                p.classification_type = _ctype(classification_type)
            if threshold is not None:
                p.threshold = _threshold(threshold)
            p.modified_at = utcnow()
            uow.projects.update(p)
            uow.commit()
            return p

    def delete_project(self, project_id: str) -> None:
        with self.uow() as uow:
            self._project(uow, project_id)
            keys = self._project_blob_keys(uow, project_id)
            if uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training], project_id):
                raise errors.TrainingInProgress("the project is training; wait for it to finish before deleting it")
            uow.projects.delete(project_id)
            uow.commit()
        self._collect(keys)

    # ----------------------------------------------------------------- tags
    def create_tag(self, project_id: str, name: str, type: TagType | str = TagType.Regular,
                   description: str = "") -> Tag:
        tag_type = _tag_type(type)
        name = _clean_name(name, "tag")
        with self.uow() as uow:
            self._project(uow, project_id)
            tags = uow.tags.list(project_id)
            if any(t.name.lower() == name.lower() for t in tags):
                raise errors.Conflict(f"a tag named '{name}' already exists in this project", "BadRequestDuplicateTag")
            if tag_type == TagType.Negative and any(t.type == TagType.Negative for t in tags):
                raise errors.InvalidInput("this project already has a Negative tag", "BadRequestTagTypeNegativeExists")
            if len(tags) >= MAX_TAGS_PER_PROJECT:
                raise errors.InvalidInput(f"a project can have at most {MAX_TAGS_PER_PROJECT} tags", "BadRequestTagLimitExceed")
            tag = Tag(project_id=project_id, name=name, type=tag_type, description=description or "")
            uow.tags.add(tag)
            uow.commit()
            return tag

    def list_tags(self, project_id: str) -> list[Tag]:
        with self.uow() as uow:
            self._project(uow, project_id)
            return uow.tags.list(project_id)

    def get_tag(self, project_id: str, tag_id: str) -> Tag:
        with self.uow() as uow:
            return self._tag(uow, project_id, tag_id)

    def update_tag(self, project_id: str, tag_id: str, *, name: str | None = None, description: str | None = None,
                   type: TagType | str | None = None) -> Tag:
        with self.uow() as uow:
            tag = self._tag(uow, project_id, tag_id)
            tags = uow.tags.list(project_id)
            if name is not None:
                name = _clean_name(name, "tag")
                if any(t.name.lower() == name.lower() and t.id != tag.id for t in tags):
                    raise errors.Conflict(f"a tag named '{name}' already exists in this project", "BadRequestDuplicateTag")
                tag.name = name
            if description is not None:
                tag.description = description
            if type is not None and _tag_type(type) != tag.type:
                new_type = _tag_type(type)
                if new_type == TagType.Negative and any(t.type == TagType.Negative for t in tags):
                    raise errors.InvalidInput("this project already has a Negative tag", "BadRequestTagTypeNegativeExists")
                if new_type == TagType.Negative and tag.image_count:
                    imgs = uow.images.list(project_id, tag_ids=[tag.id])
                    if any(len(i.tag_ids) > 1 for i in imgs):
                        raise errors.NegativeAndRegularTag(
                            f"tag '{tag.name}' shares images with other tags; it cannot become the Negative tag")
                tag.type = new_type
            uow.tags.update(tag)
            uow.commit()
            return tag

    def delete_tag(self, project_id: str, tag_id: str) -> None:
        with self.uow() as uow:
            self._tag(uow, project_id, tag_id)
            uow.tags.delete(tag_id)
            uow.commit()

    def get_or_create_tags(self, project_id: str, names: Iterable[str]) -> list[Tag]:
        """Tags by case-insensitive name, created on first use; 'negative' means the Negative tag."""
        out: list[Tag] = []
        existing = {t.name.lower(): t for t in self.list_tags(project_id)}
        for raw in names:
            name = raw.strip()
            if not name:
                continue
            if name.lower() == "negative":
                tag = next((t for t in existing.values() if t.type == TagType.Negative), None) \
                    or self.create_tag(project_id, "Negative", TagType.Negative)
            else:
                tag = existing.get(name.lower()) or self.create_tag(project_id, name)
            existing[tag.name.lower()] = tag
            out.append(tag)
        return list({t.id: t for t in out}.values())

    # ----------------------------------------------------------------- images
    def add_images(self, project_id: str, uploads: list[ImageUpload], source: str = "",
                   uploaded_by: str | None = None, max_bytes: int = TRAINING_MAX_BYTES) -> list[ImageResult]:
        """Validate and store a batch; every image gets its own status and one bad image fails only itself."""
        with self.uow() as uow:
            self._project(uow, project_id)
            tags = {t.id: t for t in uow.tags.list(project_id)}
        results: list[ImageResult | None] = [None] * len(uploads)
        fresh: dict[str, tuple[int, Image]] = {}
        for i, up in enumerate(uploads):
            name = up.name or f"image {i + 1}"
            tag_ids = list(dict.fromkeys(up.tag_ids or []))
            unknown = [t for t in tag_ids if t not in tags]
            if unknown:
                results[i] = ImageResult(name, "ErrorUnknown", f"unknown tag id {unknown[0]}")
                continue
            if any(tags[t].type == TagType.Negative for t in tag_ids) and len(tag_ids) > 1:
                results[i] = ImageResult(name, "ErrorNegativeAndRegularTagOnSameImage",
                                         "the Negative tag cannot be combined with other tags")
                continue
            try:
                info = validate_image(up.data, max_bytes)
            except errors.ImageRejected as e:
                results[i] = ImageResult(name, e.status, e.message)
                continue
            if info.sha256 in fresh:
                results[i] = ImageResult(name, "OKDuplicate", "same image earlier in this batch", fresh[info.sha256][1])
                continue
            image = Image(project_id=project_id, sha256=info.sha256, width=info.width, height=info.height,
                          original_name=up.name or "", source=source, uploaded_by=uploaded_by, tag_ids=tag_ids)
            fresh[info.sha256] = (i, image)
        for attempt in (1, 2):  # a concurrent upload of the same image can win the race: re-check once
            written: list[str] = []
            stored: dict[str, Image] = {}
            try:
                with self.uow() as uow:
                    for sha, (i, image) in fresh.items():
                        existing = uow.images.get_by_sha(project_id, sha)
                        if existing:
                            results[i] = ImageResult(uploads[i].name or f"image {i + 1}", "OKDuplicate",
                                                     "this image is already in the project", existing)
                            stored[sha] = existing
                            continue
                        self.blobs.put(uploads[i].data)
                        written.append(sha)
                        uow.images.add(image)
                        results[i] = ImageResult(uploads[i].name or f"image {i + 1}", "OK", "", image)
                        stored[sha] = image
                    uow.commit()
                break
            except Exception:
                self._collect(written)
                if attempt == 2:
                    raise
        for r in results:
            if r is not None and r.status == "OKDuplicate" and r.image is not None and r.image.sha256 in stored:
                r.image = stored[r.image.sha256]
        return [r for r in results if r is not None]

    def list_images(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None,
                    skip: int = 0, take: int | None = None) -> list[Image]:
        with self.uow() as uow:
            self._project(uow, project_id)
            return uow.images.list(project_id, tagged=tagged, tag_ids=tag_ids, skip=skip, take=take)

    def count_images(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None) -> int:
        with self.uow() as uow:
            self._project(uow, project_id)
            return uow.images.count(project_id, tagged=tagged, tag_ids=tag_ids)

    def get_images(self, project_id: str, image_ids: list[str]) -> list[Image]:
        with self.uow() as uow:
            self._project(uow, project_id)
            return [i for i in uow.images.get_many(image_ids) if i.project_id == project_id]

    def image_bytes(self, project_id: str, image_id: str) -> bytes:
        img = self.get_images(project_id, [image_id])
        if not img:
            raise errors.NotFound(f"no image {image_id} in this project")
        return self.blobs.get(img[0].sha256)

    def set_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str]) -> list[Image]:
        """Replace the tags of the given images (an empty list untags them)."""
        return self._retag(project_id, image_ids, lambda current: list(dict.fromkeys(tag_ids)))

    def add_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str]) -> list[Image]:
        return self._retag(project_id, image_ids, lambda current: list(dict.fromkeys(current + tag_ids)))

    def remove_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str] | None = None) -> list[Image]:
        drop = set(tag_ids or [])
        return self._retag(project_id, image_ids, lambda current: [t for t in current if tag_ids is not None and t not in drop])

    def _retag(self, project_id: str, image_ids: list[str], change: Callable[[list[str]], list[str]]) -> list[Image]:
        with self.uow() as uow:
            self._project(uow, project_id)
            tags = {t.id: t for t in uow.tags.list(project_id)}
            images = [i for i in uow.images.get_many(list(dict.fromkeys(image_ids))) if i.project_id == project_id]
            found = {i.id for i in images}
            missing = [i for i in image_ids if i not in found]
            if missing:
                raise errors.NotFound(f"no image {missing[0]} in this project")
            for img in images:
                new = change(list(img.tag_ids))
                unknown = [t for t in new if t not in tags]
                if unknown:
                    raise errors.NotFound(f"no tag {unknown[0]} in this project")
                if len(new) > 1 and any(tags[t].type == TagType.Negative for t in new):
                    raise errors.NegativeAndRegularTag("the Negative tag cannot be combined with other tags on an image")
                uow.images.set_tags(img.id, new)
                img.tag_ids = new
            uow.commit()
            return images

    def delete_images(self, project_id: str, image_ids: list[str] | None = None, all_images: bool = False) -> int:
        with self.uow() as uow:
            self._project(uow, project_id)
            if all_images:
                images = uow.images.list(project_id)
            else:
                images = [i for i in uow.images.get_many(image_ids or []) if i.project_id == project_id]
            for img in images:
                uow.images.delete(img.id)
            uow.commit()
        self._collect([i.sha256 for i in images])
        return len(images)

    # ----------------------------------------------------------------- training
    def train(self, project_id: str, force: bool = False) -> Iteration:
        """Validate and queue a training; returns the Queued iteration (see `wait_for_training`)."""
        with self._train_lock, self.uow() as uow:
            project = self._project(uow, project_id)
            if uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training], project_id):
                raise errors.TrainingInProgress(f"project '{project.name}' is already training")
            plan = plan_training(uow.tags.list(project_id), uow.images.snapshot(project_id),
                                 project.domain, project.classification_type)
            if not force:
                done = [i for i in uow.iterations.list(project_id) if i.status == IterationStatus.Completed]
                if done and done[-1].fingerprint == plan.fingerprint:
                    raise errors.TrainingNotNeeded(
                        f"nothing changed since iteration {done[-1].number}; add or retag images, or force the training")
            number = uow.iterations.next_number(project_id)
            it = Iteration(
                project_id=project_id, number=number, name=f"Iteration {number}", domain=project.domain,
                classification_type=project.classification_type, backbone_id="", fingerprint=plan.fingerprint,
                snapshot=plan.entries, tag_ids=[t.id for t in plan.tags], tag_names=[t.name for t in plan.tags],
                performance={"warnings": plan.warnings, "tagTypes": [t.type.value for t in plan.tags]},
            )
            uow.iterations.add(it)
            uow.commit()
        self.progress.start(it.id)
        self.runner.submit(it.id, lambda: self._run_training(it.id))
        return it

    def wait_for_training(self, iteration_id: str, timeout: float | None = None) -> Iteration:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            it = self.get_iteration(iteration_id)
            if it.status in (IterationStatus.Completed, IterationStatus.Failed):
                return it
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return it
            self.progress.wait(iteration_id, min(0.5, left) if left is not None else 0.5)

    def _run_training(self, iteration_id: str) -> None:
        started = time.monotonic()
        try:
            with self.uow() as uow:
                it = uow.iterations.get(iteration_id, with_snapshot=True)
                if it is None or it.status != IterationStatus.Queued:
                    return
                project = self._project(uow, it.project_id)
                it.status = IterationStatus.Training
                uow.iterations.update(it)
                uow.commit()
            self.progress.update(iteration_id, "loading model")
            backbone = self.backbones.for_domain(it.domain)
            X = self.embeddings(backbone, [e.sha256 for e in it.snapshot],
                                lambda d, t: self.progress.update(iteration_id, "embedding", d, t))
            Y = label_matrix(it.snapshot, it.tag_ids)
            multilabel = it.classification_type == ClassificationType.Multilabel
            self.progress.update(iteration_id, "evaluating")
            cv = LinearProbeCV(multilabel=multilabel,
                               progress=lambda stage, d, t: self.progress.update(iteration_id, stage, d, t)).fit(X, Y)
            probe = cv.best_estimator_  # fitted on every image, after a "fitting" progress report
            self.progress.update(iteration_id, "saving")
            tag_types = (it.performance or {}).get("tagTypes") or ["Regular"] * len(it.tag_ids)
            ev = Evaluation([e.image_id for e in it.snapshot], Y, cv.oof_, cv.folds_, it.tag_ids, it.tag_names,
                            tag_types, multilabel, cv.C_)
            probe_key = self.blobs.put(probe.to_bytes())
            eval_key = self.blobs.put(ev.to_bytes())
            perf = performance(ev, project.threshold)
            perf["warnings"] = (it.performance or {}).get("warnings", [])
            perf["tagTypes"] = tag_types
            with self.uow() as uow:
                it = uow.iterations.get(iteration_id)
                if it is None:  # deleted while training
                    return
                it.status = IterationStatus.Completed
                it.backbone_id = backbone.id
                it.probe_key, it.evaluation_key = probe_key, eval_key
                it.performance = perf
                it.trained_at = utcnow()
                it.training_seconds = round(time.monotonic() - started, 3)
                uow.iterations.update(it)
                project = uow.projects.get(it.project_id)
                if project and not project.default_iteration_id:
                    project.default_iteration_id = it.id
                    uow.projects.update(project)
                uow.commit()
            self.progress.finish(iteration_id, "done")
        except Exception as e:  # noqa: BLE001 - any failure marks the iteration Failed with its reason
            reason = e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}"
            log.exception("training %s failed", iteration_id)
            try:
                with self.uow() as uow:
                    it = uow.iterations.get(iteration_id)
                    if it:
                        it.status = IterationStatus.Failed
                        it.failure_reason = reason
                        it.training_seconds = round(time.monotonic() - started, 3)
                        uow.iterations.update(it)
                        uow.commit()
            finally:
                self.progress.finish(iteration_id, "failed")

    def embeddings(self, backbone, sha256s: list[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Vectors for blobs, from the cache where present; the rest are embedded and cached as they come."""
        unique = list(dict.fromkeys(sha256s))
        with self.uow() as uow:
            cached = uow.embeddings.get_many(backbone.id, unique)
        missing = [s for s in unique if s not in cached]
        if missing:
            pending: dict[str, np.ndarray] = {}

            def flush():
                if pending:
                    with self.uow() as uow:
                        uow.embeddings.put_many(backbone.id, dict(pending))
                        uow.commit()
                    pending.clear()

            def on_batch(start: int, vecs: np.ndarray):
                for j, v in enumerate(vecs):
                    cached[missing[start + j]] = v
                    pending[missing[start + j]] = v
                if len(pending) >= 256:
                    flush()

            embedder = Embedder(backbone, batch_size=self.embed_batch_size)
            embedder.embed([(lambda s=s: self.blobs.get(s)) for s in missing], progress=progress, on_batch=on_batch)
            flush()
            with self._stats_lock:
                self.images_embedded += len(missing)
        elif progress:
            progress(len(unique), len(unique))
        if not sha256s:
            return np.zeros((0, backbone.dim), np.float32)
        return np.stack([cached[s] for s in sha256s]).astype(np.float32)

    # ----------------------------------------------------------------- iterations
    def list_iterations(self, project_id: str) -> list[Iteration]:
        with self.uow() as uow:
            self._project(uow, project_id)
            return uow.iterations.list(project_id)

    def get_iteration(self, iteration_id: str, project_id: str | None = None) -> Iteration:
        with self.uow() as uow:
            return self._iteration(uow, iteration_id, project_id)

    def iteration_by_number(self, project_id: str, number: int) -> Iteration:
        for it in self.list_iterations(project_id):
            if it.number == number:
                return it
        raise errors.NotFound(f"no iteration {number} in this project")

    # An adapter that announces a training (the Slack bot's progress message) stores where, so that the outcome
    # is still announced there after a restart: `unreported_iterations` lists what is left to tell.
    def set_iteration_notify(self, iteration_id: str, adapter: str, target: dict | None) -> Iteration:
        """Record (or, with None, forget) `adapter`'s opaque target for announcing the iteration's outcome."""
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id)
            notify = {k: v for k, v in {**(it.notify or {}), adapter: target}.items() if v is not None}
            uow.iterations.set_notify(it.id, notify or None)
            uow.commit()
            it.notify = notify or None
            return it

    def unreported_iterations(self, adapter: str, include_running: bool = False) -> list[Iteration]:
        """Finished (Completed or Failed) iterations with a target of `adapter` whose outcome is not reported yet,
        oldest first; with `include_running`, also the Queued and Training ones."""
        statuses = [IterationStatus.Completed, IterationStatus.Failed]
        if include_running:
            statuses += [IterationStatus.Queued, IterationStatus.Training]
        with self.uow() as uow:
            return [it for it in uow.iterations.unreported(statuses) if adapter in (it.notify or {})]

    def mark_reported(self, iteration_id: str) -> None:
        """The iteration's final outcome was announced; an iteration deleted meanwhile is ignored."""
        with self.uow() as uow:
            if uow.iterations.get(iteration_id) is not None:
                uow.iterations.set_reported(iteration_id, utcnow())
                uow.commit()

    def rename_iteration(self, project_id: str, iteration_id: str, name: str) -> Iteration:
        name = _clean_name(name, "iteration")
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id, project_id)
            it.name = name
            uow.iterations.update(it)
            uow.commit()
            return it

    def set_default_iteration(self, project_id: str, iteration_id: str) -> Project:
        with self.uow() as uow:
            project = self._project(uow, project_id)
            it = self._completed(self._iteration(uow, iteration_id, project_id), "be default")
            project.default_iteration_id = it.id
            project.modified_at = utcnow()
            uow.projects.update(project)
            uow.commit()
            return project

    def publish_iteration(self, project_id: str, iteration_id: str, publish_name: str) -> Iteration:
        publish_name = _clean_name(publish_name, "publish name")
        with self.uow() as uow:
            it = self._completed(self._iteration(uow, iteration_id, project_id), "be published")
            for other in uow.iterations.list(project_id):
                if other.publish_name == publish_name and other.id != it.id:
                    other.publish_name = None
                    uow.iterations.update(other)
            it.publish_name = publish_name
            uow.iterations.update(it)
            uow.commit()
            return it

    def unpublish_iteration(self, project_id: str, iteration_id: str) -> Iteration:
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id, project_id)
            it.publish_name = None
            uow.iterations.update(it)
            uow.commit()
            return it

    def delete_iteration(self, project_id: str, iteration_id: str) -> None:
        with self.uow() as uow:
            project = self._project(uow, project_id)
            it = self._iteration(uow, iteration_id, project_id, with_snapshot=True)
            if project.default_iteration_id == it.id:
                raise errors.CannotDeleteDefault(
                    f"iteration {it.number} is the default; make another iteration default before deleting it")
            if it.status in (IterationStatus.Queued, IterationStatus.Training):
                raise errors.TrainingInProgress(f"iteration {it.number} is still training")
            keys = [k for k in (it.probe_key, it.evaluation_key) if k] + [e.sha256 for e in it.snapshot]
            keys += [e.blob_key for e in uow.exports.list(it.id) if e.blob_key]
            uow.iterations.delete(it.id)
            uow.commit()
        self._collect(keys)

    def iteration_performance(self, iteration_id: str, threshold: float | None = None,
                              project_id: str | None = None) -> dict:
        """Performance at any threshold, recomputed from the stored out-of-fold probabilities."""
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id, project_id)
            project = self._project(uow, it.project_id)
        if it.status != IterationStatus.Completed or not it.evaluation_key:
            raise errors.IterationNotCompleted(f"iteration {it.number} is {it.status.value}; it has no performance yet")
        t = project.threshold if threshold is None else _threshold(threshold)
        perf = performance(self._evaluation(it.evaluation_key), t)
        perf["warnings"] = (it.performance or {}).get("warnings", [])
        perf["trainingSeconds"] = it.training_seconds
        return perf

    def image_performances(self, iteration_id: str, project_id: str | None = None) -> list[tuple[str, list[TagPrediction]]]:
        """Out-of-fold probabilities of each training image: [(image_id, predictions sorted)]."""
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id, project_id)
        if not it.evaluation_key:
            raise errors.IterationNotCompleted(f"iteration {it.number} has no performance yet")
        ev = self._evaluation(it.evaluation_key)
        out = []
        for r, image_id in enumerate(ev.image_ids):
            preds = [TagPrediction(tid, name, float(ev.oof[r, c]), TagType(ev.tag_types[c]))
                     for c, (tid, name) in enumerate(zip(ev.tag_ids, ev.tag_names))]
            out.append((image_id, sorted(preds, key=lambda p: -p.probability)))
        return out

    # ----------------------------------------------------------------- prediction
    def predict(self, project_id: str, data: bytes, iteration_id: str | None = None, publish_name: str | None = None,
                store: bool = True, source: str = "", max_bytes: int = PREDICTION_MAX_BYTES,
                workspace: str | None = None) -> Prediction:
        """Classify one image; with `workspace`, a project of another workspace is not found."""
        info = validate_image(data, max_bytes)
        with self.uow() as uow:
            project = self._project(uow, project_id)
            if workspace is not None and project.workspace != workspace:
                raise errors.NotFound(f"no project with id {project_id}")
            it = self._prediction_iteration(uow, project, iteration_id, publish_name)
        backbone = self.backbones.for_domain(it.domain)
        if backbone.id != it.backbone_id:
            raise errors.CvError(f"iteration {it.number} was trained with {it.backbone_id}, but the {it.domain.value} "
                                 f"domain now loads {backbone.id}; retrain the project", "BadRequestIterationBackboneChanged")
        probe = self._probe(it.probe_key)
        x = Embedder(backbone, batch_size=1, workers=1).embed_bytes([data])
        probs = probe.predict_proba(x)[0]
        tag_types = (it.performance or {}).get("tagTypes") or ["Regular"] * len(it.tag_ids)
        preds = sorted((TagPrediction(tid, name, float(p), TagType(tt))
                        for tid, name, p, tt in zip(it.tag_ids, it.tag_names, probs, tag_types)),
                       key=lambda p: -p.probability)
        prediction = Prediction(project_id=project_id, iteration_id=it.id, predictions=preds,
                                threshold=project.threshold, sha256=info.sha256)
        if store:
            self.blobs.put(data)
            try:
                with self.uow() as uow:
                    prediction.stored = True
                    uow.predictions.add(prediction)
                    uow.commit()
            except Exception:
                prediction.stored = False
                self._collect([info.sha256])
                raise
        return prediction

    def _prediction_iteration(self, uow: UnitOfWork, project: Project, iteration_id: str | None,
                              publish_name: str | None) -> Iteration:
        if iteration_id:
            it = self._iteration(uow, iteration_id, project.id)
        elif publish_name and publish_name != "default":
            it = uow.iterations.published(project.id, publish_name)
            if it is None:
                raise errors.NotFound(f"no iteration of project '{project.name}' is published as '{publish_name}'")
        else:
            if not project.default_iteration_id:
                raise errors.NoDefaultIteration(f"project '{project.name}' has no trained iteration yet; train it first")
            it = self._iteration(uow, project.default_iteration_id, project.id)
        return self._completed(it, "answer predictions")

    def get_prediction(self, project_id: str, prediction_id: str) -> Prediction:
        with self.uow() as uow:
            p = uow.predictions.get(prediction_id)
            if not p or p.project_id != project_id:
                raise errors.NotFound(f"no prediction {prediction_id} in this project")
            return p

    def list_predictions(self, project_id: str, iteration_id: str | None = None, skip: int = 0,
                         take: int | None = None) -> list[Prediction]:
        with self.uow() as uow:
            self._project(uow, project_id)
            return uow.predictions.list(project_id, iteration_id, skip, take)

    def delete_predictions(self, project_id: str, prediction_ids: list[str]) -> int:
        with self.uow() as uow:
            preds = [p for p in (uow.predictions.get(i) for i in prediction_ids) if p and p.project_id == project_id]
            for p in preds:
                uow.predictions.delete(p.id)
            uow.commit()
        self._collect([p.sha256 for p in preds if p.sha256])
        return len(preds)

    def add_prediction_to_training(self, project_id: str, prediction_id: str, tag_ids: list[str],
                                   uploaded_by: str | None = None) -> ImageResult:
        """Custom Vision's "test and retrain": the predicted image joins the training set with confirmed tags."""
        p = self.get_prediction(project_id, prediction_id)
        data = self.blobs.get(p.sha256)
        result = self.add_images(project_id, [ImageUpload(data, f"prediction {prediction_id[:8]}", tag_ids)],
                                 source="prediction", uploaded_by=uploaded_by, max_bytes=max(TRAINING_MAX_BYTES, len(data)))[0]
        if result.status == "OKDuplicate" and result.image is not None:
            self.set_image_tags(project_id, [result.image.id], tag_ids)
        return result

    # ----------------------------------------------------------------- chat channels and workspace keys
    def bind_channel(self, workspace: str, channel_id: str, project_id: str, bound_by: str | None = None) -> ChannelBinding:
        with self.uow() as uow:
            project = self._project(uow, project_id)
            if project.workspace != workspace:
                raise errors.NotFound(f"no project {project_id} in this workspace")
            binding = ChannelBinding(workspace, channel_id, project_id, None, bound_by)
            uow.channels.put(binding)
            uow.commit()
            return binding

    def channel_binding(self, workspace: str, channel_id: str) -> ChannelBinding | None:
        with self.uow() as uow:
            return uow.channels.get(workspace, channel_id)

    def channel_bindings(self, project_id: str) -> list[ChannelBinding]:
        with self.uow() as uow:
            return uow.channels.for_project(project_id)

    def set_collect_mode(self, workspace: str, channel_id: str, tag_names: list[str] | None) -> ChannelBinding:
        """Turn collect mode on with `tag_names` (created if new) or off with None."""
        with self.uow() as uow:
            binding = uow.channels.get(workspace, channel_id)
        if binding is None:
            raise errors.NotFound("this channel has no project; bind one first")
        if tag_names is not None:
            tag_names = [t.name for t in self.get_or_create_tags(binding.project_id, tag_names)]
            if not tag_names:
                raise errors.InvalidInput("collect mode needs at least one tag")
        with self.uow() as uow:
            binding.collect_tags = tag_names
            binding.updated_at = utcnow()
            uow.channels.put(binding)
            uow.commit()
            return binding

    def link_message_images(self, workspace: str, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        with self.uow() as uow:
            uow.messages.link(workspace, channel_id, message_ts, image_ids)
            uow.commit()

    def message_image_ids(self, workspace: str, channel_id: str, message_ts: str) -> list[str]:
        with self.uow() as uow:
            return uow.messages.image_ids(workspace, channel_id, message_ts)

    def workspace_keys(self, workspace: str, regenerate: bool = False) -> WorkspaceKeys:
        """The workspace's API keys, generated on first use."""
        with self.uow() as uow:
            keys = uow.keys.get(workspace)
            if keys is None or regenerate:
                keys = WorkspaceKeys(workspace, secrets.token_hex(16), secrets.token_hex(16))
                uow.keys.put(keys)
                uow.commit()
            return keys

    def workspace_for_key(self, key: str) -> tuple[str, str] | None:
        """(workspace, "training" | "prediction") for a generated key, or None."""
        if not key:
            return None
        with self.uow() as uow:
            keys = uow.keys.find(key)
        if keys is None:
            return None
        if secrets.compare_digest(keys.training_key, key):
            return keys.workspace, "training"
        return keys.workspace, "prediction"

    # ----------------------------------------------------------------- maintenance
    def recover(self) -> dict:
        """After a restart: fail interrupted trainings and delete blobs no row references."""
        failed = 0
        with self.uow() as uow:
            for it in uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training]):
                it.status = IterationStatus.Failed
                it.failure_reason = "interrupted: the server stopped while this iteration was training; train again"
                uow.iterations.update(it)
                failed += 1
            for export in uow.exports.in_status("Exporting"):
                export.status = "Failed"
                export.failure_reason = "interrupted: the server stopped during the export; export again"
                uow.exports.update(export)
            for project in uow.projects.list():
                if project.default_iteration_id:
                    d = uow.iterations.get(project.default_iteration_id)
                    if d is None or d.status != IterationStatus.Completed:
                        project.default_iteration_id = None
                        uow.projects.update(project)
            uow.commit()
        keys = list(self.blobs.keys())
        with self.uow() as uow:
            referenced = uow.referenced_blob_keys(keys)
        orphans = [k for k in keys if k not in referenced]
        for k in orphans:
            self.blobs.delete(k)
        return {"failed_iterations": failed, "orphan_blobs_deleted": len(orphans)}

    def _collect(self, keys: Iterable[str]) -> None:
        keys = list(dict.fromkeys(k for k in keys if k))
        if not keys:
            return
        with self.uow() as uow:
            referenced = uow.referenced_blob_keys(keys)
        for k in keys:
            if k not in referenced:
                self.blobs.delete(k)
                self._artifacts.pop(k, None)

    def _project_blob_keys(self, uow: UnitOfWork, project_id: str) -> list[str]:
        keys = [i.sha256 for i in uow.images.list(project_id)]
        for it in uow.iterations.list(project_id):
            keys += [k for k in (it.probe_key, it.evaluation_key) if k]
            full = uow.iterations.get(it.id, with_snapshot=True)
            keys += [e.sha256 for e in full.snapshot]
            keys += [e.blob_key for e in uow.exports.list(it.id) if e.blob_key]
        keys += [p.sha256 for p in uow.predictions.list(project_id) if p.sha256]
        return keys

    def _cached_artifact(self, key: str, load: Callable[[bytes], object]):
        if key in self._artifacts:
            self._artifacts.move_to_end(key)
            return self._artifacts[key]
        value = load(self.blobs.get(key))
        self._artifacts[key] = value
        while len(self._artifacts) > 64:
            self._artifacts.popitem(last=False)
        return value

    def _probe(self, key: str) -> LinearProbe:
        return self._cached_artifact(key, LinearProbe.from_bytes)  # type: ignore[return-value]

    def _evaluation(self, key: str) -> Evaluation:
        return self._cached_artifact(key, Evaluation.from_bytes)  # type: ignore[return-value]

    @staticmethod
    def _project(uow: UnitOfWork, project_id: str) -> Project:
        p = uow.projects.get(project_id)
        if p is None:
            raise errors.NotFound(f"no project with id {project_id}")
        return p

    @staticmethod
    def _tag(uow: UnitOfWork, project_id: str, tag_id: str) -> Tag:
        t = uow.tags.get(tag_id)
        if t is None or t.project_id != project_id:
            raise errors.NotFound(f"no tag {tag_id} in this project")
        return t

    @staticmethod
    def _iteration(uow: UnitOfWork, iteration_id: str, project_id: str | None = None,
                   with_snapshot: bool = False) -> Iteration:
        it = uow.iterations.get(iteration_id, with_snapshot=with_snapshot)
        if it is None or (project_id is not None and it.project_id != project_id):
            raise errors.NotFound(f"no iteration {iteration_id} in this project")
        return it

    @staticmethod
    def _completed(it: Iteration, action: str) -> Iteration:
        if it.status != IterationStatus.Completed:
            raise errors.IterationNotCompleted(f"iteration {it.number} is {it.status.value}; only a Completed one can {action}")
        return it

    @staticmethod
    def domains() -> list[dict]:
        return [{"name": d.value, "exportable": registry_entry(d).exportable,
                 "description": registry_entry(d).description} for d in Domain]

    def release_default_iteration(self, project_id: str, iteration_id: str) -> Project:
        """If the iteration is the project's default, hand that role to the newest other Completed iteration (or
        to none), so that it can be deleted: Custom Vision's API has no default iteration to protect."""
        with self.uow() as uow:
            project = self._project(uow, project_id)
            self._iteration(uow, iteration_id, project_id)
            if project.default_iteration_id == iteration_id:
                others = [i for i in uow.iterations.list(project_id)
                          if i.id != iteration_id and i.status == IterationStatus.Completed]
                project.default_iteration_id = others[-1].id if others else None
                project.modified_at = utcnow()
                uow.projects.update(project)
                uow.commit()
            return project

    # ----------------------------------------------------------------- export
    def export_iteration(self, project_id: str, iteration_id: str, platform: str = "ONNX",
                         flavor: str | None = None) -> Export:
        """Queue an ONNX export of a Completed iteration of an exportable domain (Compact); see `list_exports`."""
        if str(platform).strip().upper() != "ONNX":
            raise errors.InvalidInput(f"cannot export to {platform!r}; the only platform is ONNX",
                                      "BadRequestProjectUnsupportedExportPlatform")
        with self.uow() as uow:
            it = self._completed(self._iteration(uow, iteration_id, project_id), "be exported")
            if not registry_entry(it.domain).exportable:
                raise errors.CvError(f"the {it.domain.value} domain cannot be exported; train with the Compact domain",
                                     "BadRequestExportValidationFailed")
            existing = uow.exports.list(it.id)
            if any(e.status == "Exporting" for e in existing):
                raise errors.CvError("this iteration is already being exported", "BadRequestExportAlreadyInProgress")
            done = next((e for e in existing if e.status == "Done" and e.flavor == flavor), None)
            if done is not None:
                return done
            export = Export(iteration_id=it.id, platform="ONNX", flavor=flavor)
            uow.exports.add(export)
            uow.commit()
        self.runner.submit(f"export-{export.id}", lambda: self._run_export(it.id, export.id))
        return export

    def list_exports(self, project_id: str, iteration_id: str) -> list[Export]:
        with self.uow() as uow:
            it = self._iteration(uow, iteration_id, project_id)
            return uow.exports.list(it.id)

    def export_file(self, iteration_id: str, export_id: str) -> bytes:
        """The exported package (a zip: model.onnx, labels.txt, cvexport.manifest)."""
        with self.uow() as uow:
            found = next((e for e in uow.exports.list(iteration_id) if e.id == export_id), None)
        if found is None or found.status != "Done" or not found.blob_key:
            raise errors.NotFound("no finished export with this id")
        return self.blobs.get(found.blob_key)

    def _run_export(self, iteration_id: str, export_id: str) -> None:
        from . import export as onnx_export

        with self.uow() as uow:
            it = uow.iterations.get(iteration_id)
            export = next((e for e in uow.exports.list(iteration_id) if e.id == export_id), None) if it else None
        if it is None or export is None:
            return
        try:
            backbone = self.backbones.for_domain(it.domain)
            if backbone.id != it.backbone_id:
                raise errors.CvError(f"iteration {it.number} was trained with {it.backbone_id}, but the domain now loads "
                                     f"{backbone.id}; retrain before exporting", "BadRequestExportValidationFailed")
            multilabel = it.classification_type == ClassificationType.Multilabel
            model = onnx_export.build_model(backbone, self._probe(it.probe_key), it.tag_names, it.tag_ids,
                                            {"projectId": it.project_id, "iterationId": it.id})
            data = onnx_export.package(model, it.tag_names, onnx_export.manifest(backbone, multilabel, it.id, it.project_id))
            export.blob_key = self.blobs.put(data)
            export.status = "Done"
        except Exception as e:  # noqa: BLE001 - a failed export is reported on the export, not raised into the runner
            log.exception("export %s of iteration %s failed", export_id, iteration_id)
            export.status, export.failure_reason = "Failed", (e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}")
        with self.uow() as uow:
            gone = uow.iterations.get(iteration_id) is None
            if not gone:
                uow.exports.update(export)
                uow.commit()
        if gone and export.blob_key:  # the iteration was deleted meanwhile
            self._collect([export.blob_key])


def _clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise errors.InvalidInput(f"the {what} name is empty")
    if len(name) > MAX_NAME:
        raise errors.InvalidInput(f"the {what} name is longer than {MAX_NAME} characters")
    return name


def _domain(value: Domain | str) -> Domain:
    if isinstance(value, Domain):
        return value
    try:
        return Domain.parse(value)
    except ValueError as e:
        raise errors.InvalidInput(str(e), "BadRequestDomainInvalid") from None


def _ctype(value: ClassificationType | str) -> ClassificationType:
    if isinstance(value, ClassificationType):
        return value
    try:
        return ClassificationType.parse(value)
    except ValueError as e:
        raise errors.InvalidInput(str(e)) from None


def _tag_type(value: TagType | str) -> TagType:
    if isinstance(value, TagType):
        return value
    for t in TagType:
        if t.value.lower() == str(value).strip().lower():
            return t
    raise errors.InvalidInput(f"unknown tag type {value!r}; use Regular or Negative")


def _threshold(value: float) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise errors.InvalidInput(f"threshold {value!r} is not a number") from None
    if not 0.0 <= t <= 1.0:
        raise errors.InvalidInput(f"threshold {t} is outside [0, 1]")
    return t
