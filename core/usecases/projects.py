"""Projects: create, find, summarise, change settings, delete."""
from __future__ import annotations

import builtins
from dataclasses import dataclass

from .. import errors
from ..model import ClassificationType, Domain, Iteration, Project, utcnow
from ..ports import UnitOfWork
from ..rules import (
    clean_description,
    clean_name,
    parse_classification_type,
    parse_domain,
    parse_retention,
    parse_retrain,
    parse_threshold,
)
from .base import UseCase


@dataclass
class ProjectSummary:
    project: Project
    image_count: int
    tagged_image_count: int
    iteration_count: int
    default_iteration: Iteration | None


class Projects(UseCase):
    def create(self, name: str, domain: Domain | str = Domain.Compact,
               classification_type: ClassificationType | str = ClassificationType.Multiclass,
               description: str = "", created_by: str | None = None, threshold: float = 0.5) -> Project:
        self.scope.require_write("create projects")
        project = Project(name=clean_name(name, "project"), domain=parse_domain(domain),
                          classification_type=parse_classification_type(classification_type),
                          description=clean_description(description, "project"), workspace=self.scope.home,
                          created_by=created_by, threshold=parse_threshold(threshold))
        with self.deps.uow() as uow:
            taken = uow.projects.get_by_name(project.workspace, project.name)
            if taken or uow.projects.add_if_absent(project).id != project.id:  # also when a concurrent create won
                raise errors.Conflict(f"a project named '{project.name}' already exists")
            uow.commit()
        return project

    def list(self) -> list[Project]:
        with self.deps.uow() as uow:
            return uow.projects.list(self.scope.workspace)

    def get(self, project_id: str) -> Project:
        with self.deps.uow() as uow:
            return self.project(uow, project_id)

    def find(self, name_or_id: str) -> Project:
        """A project by id, or by its (case-insensitive) name in the scope's workspace."""
        with self.deps.uow() as uow:
            p = uow.projects.get(name_or_id)
            if p and self.scope.sees(p):
                return p
            name = name_or_id.strip()
            if self.scope.workspace is not None:
                p = uow.projects.get_by_name(self.scope.workspace, name)
            else:
                p = next((x for x in uow.projects.list() if x.name.lower() == name.lower()), None)
            if not p:
                raise errors.NotFound(f"no project named '{name_or_id}'")
            return p

    def summary(self, project_id: str) -> ProjectSummary:
        with self.deps.uow() as uow:
            p = self.project(uow, project_id)
            its = uow.iterations.list(project_id)
            default = next((i for i in its if i.id == p.default_iteration_id), None)
            return ProjectSummary(p, uow.images.count(project_id), uow.images.count(project_id, tagged=True),
                                  len(its), default)

    def update(self, project_id: str, *, name: str | None = None, description: str | None = None,
               domain: Domain | str | None = None, classification_type: ClassificationType | str | None = None,
               threshold: float | None = None, retrain: str | None = None,
               prediction_retention: str | int | None = None,
               unknown_threshold: float | str | None = None) -> Project:
        """Change what is given. `retrain`: "nightly" or "off"; `prediction_retention`: days, "keep" (0) or
        "default" (schedule.parse_retention); `unknown_threshold`: in [0, 1], or "default" for the iteration's
        calibrated default (docs/unknown.md)."""
        self.scope.require_write("change projects")
        schedule = parse_retrain(retrain) if retrain is not None else None
        keep = parse_retention(prediction_retention) if prediction_retention is not None else None
        unknown = (None if unknown_threshold is None or unknown_threshold == "default"
                   else parse_threshold(unknown_threshold))
        with self.deps.uow() as uow:
            p = self.project(uow, project_id)
            if name is not None and name.strip() != p.name:
                name = clean_name(name, "project")
                other = uow.projects.get_by_name(p.workspace, name)
                if other and other.id != p.id:
                    raise errors.Conflict(f"a project named '{name}' already exists")
                p.name = name
            if description is not None:
                p.description = clean_description(description, "project")
            if domain is not None:
                p.domain = parse_domain(domain)
            if classification_type is not None:
                p.classification_type = parse_classification_type(classification_type)
            if threshold is not None:
                p.threshold = parse_threshold(threshold)
            if retrain is not None:
                p.retrain = schedule
            if prediction_retention is not None:
                p.prediction_retention_days = keep
            if unknown_threshold is not None:
                p.unknown_threshold = unknown
            p.modified_at = utcnow()
            uow.projects.update(p)
            uow.commit()
            return p

    def delete(self, project_id: str) -> None:
        self.scope.require_write("delete projects")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            iterations = uow.iterations.list(project_id)
            if any(it.status.running for it in iterations):
                raise errors.TrainingInProgress("the project is training; wait for it to finish before deleting it")
            published = [it for it in iterations if it.publish_name]
            if published:  # as Custom Vision: a published model may be serving clients; unpublish it first
                raise errors.CvError(f"the project has a published iteration ('{published[0].name}', published as "
                                     f"'{published[0].publish_name}'); unpublish it before deleting the project",
                                     "BadRequestIterationIsPublished")
            keys = project_blob_keys(uow, project_id)
            uow.projects.delete(project_id)
            uow.commit()
        self.collect(keys)


def project_blob_keys(uow: UnitOfWork, project_id: str) -> builtins.list[str]:
    """Every blob a project's rows reference: images, iteration artifacts and snapshots, exports, predictions."""
    keys = [i.sha256 for i in uow.images.list(project_id)]
    for it in uow.iterations.list(project_id):
        keys += [k for k in (it.probe_key, it.evaluation_key) if k]
        full = uow.iterations.get(it.id, with_snapshot=True)
        keys += [e.sha256 for e in (full.snapshot if full else [])]
        keys += [e.blob_key for e in uow.exports.list(it.id) if e.blob_key]
    keys += [p.sha256 for p in uow.predictions.list(project_id) if p.sha256]
    return keys
