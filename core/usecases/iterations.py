"""Iterations: list, rename, make default, publish, delete, and their performance at any threshold."""
from __future__ import annotations

import builtins
from typing import Any

from .. import errors
from ..evaluation import performance
from ..model import Image, Iteration, IterationStatus, Project, TagPrediction, TagType, utcnow
from ..rules import clean_name, parse_threshold
from .base import UseCase, completed
from .images import Order


class Iterations(UseCase):
    def list(self, project_id: str) -> list[Iteration]:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return uow.iterations.list(project_id)

    def get(self, project_id: str, iteration_id: str) -> Iteration:
        with self.deps.uow() as uow:
            return self.iteration(uow, project_id, iteration_id)

    def current(self, project_id: str) -> Iteration:
        """The iteration a project answers with: its default, or else its newest Completed one."""
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            its = uow.iterations.list(project_id)
        done = [i for i in its if i.status == IterationStatus.Completed]
        found = next((i for i in done if i.id == project.default_iteration_id), done[-1] if done else None)
        if found is None:
            raise errors.NoDefaultIteration(f"project '{project.name}' has no trained iteration yet; train it first")
        return found

    def by_number(self, project_id: str, number: int) -> Iteration:
        for it in self.list(project_id):
            if it.number == number:
                return it
        raise errors.NotFound(f"no iteration {number} in this project")

    def rename(self, project_id: str, iteration_id: str, name: str) -> Iteration:
        self.scope.require_write("rename iterations")
        name = clean_name(name, "iteration")
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            it.name = name
            uow.iterations.update(it)
            uow.commit()
            return it

    def set_default(self, project_id: str, iteration_id: str) -> Project:
        self.scope.require_write("change the default iteration")
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            it = completed(self.iteration(uow, project_id, iteration_id), "be default")
            project.default_iteration_id = it.id
            project.modified_at = utcnow()
            uow.projects.update(project)
            uow.commit()
            return project

    def publish(self, project_id: str, iteration_id: str, publish_name: str, overwrite: bool = True,
                resource_id: str | None = None) -> Iteration:
        """Publish under a name; the name moves from another iteration only with `overwrite`. `resource_id`: the
        prediction resource the client named (Custom Vision's predictionId), kept as sent and shown back."""
        self.scope.require_write("publish iterations")
        publish_name = clean_name(publish_name, "publish name")
        with self.deps.uow() as uow:
            it = completed(self.iteration(uow, project_id, iteration_id), "be published")
            for other in uow.iterations.list(project_id):
                if other.publish_name == publish_name and other.id != it.id:
                    if not overwrite:
                        raise errors.CvError(f"'{publish_name}' is already the publish name of '{other.name}'; "
                                             "pass overwrite=true", "BadRequestInvalidPublishName")
                    other.publish_name, other.publish_resource_id = None, None
                    uow.iterations.update(other)
            it.publish_name = publish_name
            it.publish_resource_id = (resource_id or "").strip()[:1024] or None
            uow.iterations.update(it)
            uow.commit()
            return it

    def unpublish(self, project_id: str, iteration_id: str) -> Iteration:
        self.scope.require_write("unpublish iterations")
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            if not it.publish_name:
                raise errors.CvError("this iteration is not published", "BadRequestIterationNotPublished")
            it.publish_name, it.publish_resource_id = None, None
            uow.iterations.update(it)
            uow.commit()
            return it

    def delete(self, project_id: str, iteration_id: str, release_default: bool = False) -> None:
        """Delete an unpublished, finished iteration. The default one is refused unless `release_default`, which
        hands that role to the newest other Completed iteration (or to none), as Custom Vision's API has no
        default iteration to protect."""
        self.scope.require_write("delete iterations")
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            it = self.iteration(uow, project_id, iteration_id, with_snapshot=True)
            if it.publish_name:
                raise errors.CvError(f"iteration '{it.name}' is published as '{it.publish_name}'; unpublish it first",
                                     "BadRequestIterationIsPublished")
            if it.status.running:
                raise errors.TrainingInProgress(f"iteration {it.number} is still training")
            if project.default_iteration_id == it.id:
                if not release_default:
                    raise errors.CannotDeleteDefault(
                        f"iteration {it.number} is the default; make another iteration default before deleting it")
                others = [i for i in uow.iterations.list(project_id)
                          if i.id != it.id and i.status == IterationStatus.Completed]
                project.default_iteration_id = others[-1].id if others else None
                project.modified_at = utcnow()
                uow.projects.update(project)
            keys = [k for k in (it.probe_key, it.evaluation_key) if k] + [e.sha256 for e in it.snapshot]
            keys += [e.blob_key for e in uow.exports.list(it.id) if e.blob_key]
            uow.iterations.delete(it.id)
            uow.commit()
        self.collect(keys)

    def performance(self, project_id: str, iteration_id: str, threshold: float | None = None) -> dict[str, Any]:
        """Performance at any threshold, recomputed from the stored out-of-fold probabilities."""
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            it = self.iteration(uow, project_id, iteration_id)
        if it.status != IterationStatus.Completed or not it.evaluation_key:
            raise errors.IterationNotCompleted(f"iteration {it.number} is {it.status.value}; it has no performance yet")
        t = project.threshold if threshold is None else parse_threshold(threshold)
        perf = performance(self.deps.artifacts.evaluation(it.evaluation_key), t)
        perf["warnings"] = (it.performance or {}).get("warnings", [])
        perf["trainingSeconds"] = it.training_seconds
        return perf

    def image_performances(self, project_id: str, iteration_id: str, tag_ids: builtins.list[str] | None = None,
                           order: Order | str = Order.Oldest, skip: int = 0,
                           take: int | None = None) -> builtins.list[tuple[Image, builtins.list[TagPrediction]]]:
        """The iteration's training images still in the project, each with its out-of-fold predictions (what the
        model said when it had not seen it, most probable first); with `tag_ids`, those carrying any of them."""
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            if not it.evaluation_key:
                raise errors.IterationNotCompleted(f"iteration {it.number} has no performance yet")
            ev = self.deps.artifacts.evaluation(it.evaluation_key)
            images = {i.id: i for i in uow.images.get_many(list(ev.image_ids)) if i.project_id == project_id}
        wanted = set(tag_ids or [])
        rows = []
        for r, image_id in enumerate(ev.image_ids):
            img = images.get(image_id)
            if img is None or (wanted and not wanted & set(img.tag_ids)):
                continue
            preds = [TagPrediction(tid, name, float(ev.oof[r, c]), TagType(ev.tag_types[c]))
                     for c, (tid, name) in enumerate(zip(ev.tag_ids, ev.tag_names, strict=True))]
            rows.append((img, sorted(preds, key=lambda p: -p.probability)))
        rows.sort(key=lambda row: (row[0].created_at, row[0].id), reverse=Order(order) == Order.Newest)
        return rows[skip:None if take is None else skip + take]
