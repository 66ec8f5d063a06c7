"""`cvbot migrate`: copy projects from another Custom Vision Training endpoint (Azure's, or another cvbot) into
this store, through the `SourceProjects` port.

What is copied: settings (type, description, threshold; Azure's domain mapped by name, see `map_domain`), tags
(Regular and Negative, with descriptions), tagged and untagged images with all their tags and their metadata.
Object-detection projects, and domains cvbot has no equivalent for, are skipped with the reason.

Resumable: every project, tag and image copied is recorded (`migrated`: source endpoint + kind + source id → the
copy's id) in the same transaction that writes the copy, one image at a time. A rerun skips what is recorded, so an
interrupted run loses nothing and a rerun never duplicates. Deleting the copied project forgets its records.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import errors
from ..images import sha256_of, validate_image
from ..model import ClassificationType, Domain, Image, IterationStatus, Project, Tag, TagType
from ..ports import UnitOfWork
from ..rules import clean_description, clean_metadata, clean_name, image_tag_problem, parse_threshold
from ..sources import SourceImage, SourceProject, SourceProjects, SourceTag
from .base import UseCase
from .iterations import Iterations
from .training import Training

PAGE = 256  # Azure's largest `take` for image listings
BASE_DOMAINS = {d.value.lower(): d for d in Domain if d != Domain.Compact}
Progress = Callable[["MigrationProgress"], None]


@dataclass(frozen=True)
class MigrationProgress:
    project: str  # the source project's name
    done: int  # images handled so far in this project (copied, already copied, duplicates, failed)
    total: int


@dataclass
class ProjectOutcome:
    source_id: str
    name: str
    target_id: str | None = None
    target_name: str | None = None
    domain: str | None = None
    skipped: str | None = None  # why the project was not copied
    tags: int = 0  # tags created now
    images: int = 0  # images copied now
    bytes: int = 0
    already: int = 0  # images copied by an earlier run
    duplicates: int = 0  # images whose content the target project already had
    failures: list[str] = field(default_factory=list)


@dataclass
class MigrationSummary:
    source: str
    projects: list[ProjectOutcome] = field(default_factory=list)

    def total(self, what: str) -> int:
        return sum(int(getattr(p, what)) for p in self.projects)

    def as_json(self) -> dict[str, Any]:
        copied = [p for p in self.projects if p.skipped is None and p.target_id is not None]
        return {"source": self.source, "projects": len(copied), "tags": self.total("tags"),
                "images": self.total("images"), "bytes": self.total("bytes"),
                "skippedDuplicates": self.total("already") + self.total("duplicates"),
                "alreadyCopied": self.total("already"), "duplicates": self.total("duplicates"),
                "skippedProjects": [{"id": p.source_id, "name": p.name, "reason": p.skipped}
                                    for p in self.projects if p.skipped],
                "failures": [f"{p.name}: {f}" for p in self.projects for f in p.failures],
                "details": [asdict(p) for p in self.projects]}


def map_domain(project: SourceProject) -> tuple[Domain | None, str | None]:
    """cvbot's domain for a source project, by the source domain's name; (None, reason) when there is none.
    "General", "General [A1]", "General [A2]" → General; Food, Landmarks, Retail, Adult → the same; every
    "(compact)" classification domain → Compact; object detection → skipped."""
    if (project.domain_type or "").replace(" ", "").lower() == "objectdetection":
        return None, "object detection projects are not supported by cvbot"
    name = (project.domain_name or "").strip()
    if not name:
        return None, "the source did not say which domain the project uses"
    bare = re.sub(r"\s*\[[^\]]*\]", "", name).strip().lower()  # "General [A1]", "General (compact) [S1]"
    if "(compact)" in bare or bare == "compact":
        return Domain.Compact, None
    if bare in BASE_DOMAINS:
        return BASE_DOMAINS[bare], None
    return None, f"the domain '{name}' has no cvbot equivalent"


def source_key(endpoint: str) -> str:
    """How the migration records name a source: its endpoint without trailing slashes, scheme and host folded."""
    endpoint = endpoint.strip().rstrip("/")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/]+)(.*)$", endpoint)
    return (m.group(1).lower() + m.group(2)) if m else endpoint


def _reason(e: BaseException) -> str:
    return e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}"


class Migration(UseCase):
    def run(self, source: SourceProjects, only: Sequence[str] = (), progress: Progress | None = None,
            created_by: str | None = "migrate") -> MigrationSummary:
        """Copy the source's projects (those named or with the ids in `only`; all when empty) into the scope's
        workspace. Unknown names in `only` raise NotFound before anything is copied."""
        self.scope.require_write("migrate projects")
        key = source_key(source.endpoint)
        chosen = self._choose(source.projects(), only)
        summary = MigrationSummary(key)
        for sp in chosen:
            outcome = ProjectOutcome(sp.id, sp.name)
            summary.projects.append(outcome)
            domain, why = map_domain(sp)
            if domain is None:
                outcome.skipped = why
                continue
            outcome.domain = domain.value
            try:
                self._project(source, key, sp, domain, outcome, progress, created_by)
            except errors.StorageFull:
                raise
            except Exception as e:  # the source failed for this project: report it, go on with the next
                outcome.failures.append(_reason(e))
        return summary

    def train(self, source: SourceProjects, outcome: ProjectOutcome) -> dict[str, Any]:
        """Train the copy of a migrated project; its performance beside the source's last iteration's."""
        if outcome.target_id is None:
            raise errors.InvalidInput(f"'{outcome.name}' was not migrated")
        training = Training(self.deps, self.scope)
        it = training.train(outcome.target_id, force=True)
        it = training.wait(outcome.target_id, it.id)
        target = (Iterations(self.deps, self.scope).performance(outcome.target_id, it.id)
                  if it.status == IterationStatus.Completed else None)
        return {"project": outcome.target_name, "iteration": it.number, "status": it.status.value,
                "failure": it.failure_reason, "target": target, "source": source.last_performance(outcome.source_id)}

    @staticmethod
    def _choose(projects: list[SourceProject], only: Sequence[str]) -> list[SourceProject]:
        if not only:
            return projects
        chosen: list[SourceProject] = []
        for want in only:
            match = next((p for p in projects if p.id == want), None) or next(
                (p for p in projects if p.name.lower() == want.strip().lower()), None)
            if match is None:
                raise errors.NotFound(f"the source has no project named or with the id '{want}'")
            if match not in chosen:
                chosen.append(match)
        return chosen

    # ------------------------------------------------------------ one project
    def _project(self, source: SourceProjects, key: str, sp: SourceProject, domain: Domain, outcome: ProjectOutcome,
                 progress: Progress | None, created_by: str | None) -> None:
        source_tags = source.tags(sp.id)
        with self.deps.uow() as uow:
            project = self._target_project(uow, key, sp, domain, created_by)
            tag_ids = self._tags(uow, key, project, source_tags, outcome)
            uow.commit()
        outcome.target_id, outcome.target_name = project.id, project.name
        tags = {t.id: t for t in self._all_tags(project.id)}
        total, done = _count(source, sp.id), 0
        for tagged in (True, False):
            skip = 0
            while True:
                page = source.images(sp.id, tagged, skip, PAGE)
                for img in page:
                    self._image(source, key, project, img, tag_ids, tags, outcome)
                    done += 1
                    if progress:
                        progress(MigrationProgress(sp.name, done, max(done, total)))
                if len(page) < PAGE:
                    break
                skip += len(page)

    def _all_tags(self, project_id: str) -> list[Tag]:
        with self.deps.uow() as uow:
            return uow.tags.list(project_id)

    def _target_project(self, uow: UnitOfWork, key: str, sp: SourceProject, domain: Domain,
                        created_by: str | None) -> Project:
        recorded = uow.migrated.get(key, "project", sp.id)
        existing = uow.projects.get(recorded) if recorded else None
        if existing is not None:
            return existing
        try:
            ctype = ClassificationType.parse(sp.classification_type or "Multiclass")
        except ValueError as e:
            raise errors.InvalidInput(str(e)) from None
        project = Project(name=self._free_name(uow, sp.name), domain=domain, classification_type=ctype,
                          description=clean_description((sp.description or "")[:1024], "project"),
                          threshold=parse_threshold(sp.threshold) if sp.threshold is not None else 0.5,
                          workspace=self.scope.home, created_by=created_by)
        if uow.projects.add_if_absent(project).id != project.id:
            raise errors.Conflict(f"a project named '{project.name}' is being created at the same time")
        uow.migrated.put(key, "project", sp.id, project.id, project.id)
        return project

    def _free_name(self, uow: UnitOfWork, name: str) -> str:
        base = clean_name(name[:120], "project")
        for n in range(1, 1000):
            candidate = base if n == 1 else clean_name(f"{base[:100]} (migrated{'' if n == 2 else f' {n - 1}'})",
                                                       "project")
            if not uow.projects.get_by_name(self.scope.home, candidate):
                return candidate
        raise errors.Conflict(f"too many projects named like '{name}'")

    @staticmethod
    def _tags(uow: UnitOfWork, key: str, project: Project, source_tags: list[SourceTag],
              outcome: ProjectOutcome) -> dict[str, str]:
        ids: dict[str, str] = {}
        for st in source_tags:
            recorded = uow.migrated.get(key, "tag", st.id)
            if recorded and uow.tags.get(recorded) is not None:
                ids[st.id] = recorded
                continue
            kind = TagType.Negative if st.type.lower() == "negative" else TagType.Regular
            tag = Tag(project_id=project.id, name=clean_name(st.name, "tag"), type=kind,
                      description=clean_description((st.description or "")[:1024], "tag"))
            stored = uow.tags.add_if_absent(tag)
            if stored.id == tag.id:
                outcome.tags += 1
            ids[st.id] = stored.id
            uow.migrated.put(key, "tag", st.id, stored.id, project.id)
        return ids

    def _image(self, source: SourceProjects, key: str, project: Project, img: SourceImage, tag_ids: dict[str, str],
               tags: dict[str, Tag], outcome: ProjectOutcome) -> None:
        with self.deps.uow() as uow:
            if uow.migrated.get(key, "image", img.id) is not None:
                outcome.already += 1
                return
        try:
            unknown = [t for t in img.tag_ids if t not in tag_ids]
            if unknown:
                raise errors.InvalidInput(f"tag {unknown[0]} is not among the source project's tags")
            targets = list(dict.fromkeys(tag_ids[t] for t in img.tag_ids))
            problem = image_tag_problem(tags, targets)
            if problem:
                raise errors.InvalidInput(problem.message)
            metadata = clean_metadata(dict(img.metadata))
            data = source.image_bytes(img)
            info = validate_image(data)
        except errors.StorageFull:
            raise
        except Exception as e:
            outcome.failures.append(f"image {img.id}: {_reason(e)}")
            return
        sha = sha256_of(data)
        self.deps.blobs.put(data)
        try:
            with self.deps.uow() as uow:
                existing = uow.images.get_by_sha(project.id, sha)
                if existing is not None:  # the same content twice at the source, or already in the target
                    uow.migrated.put(key, "image", img.id, existing.id, project.id)
                    outcome.duplicates += 1
                else:
                    copy = Image(project_id=project.id, sha256=sha, width=info.width, height=info.height,
                                 original_name=(img.name or img.id)[:256], source="migrate", uploaded_by="migrate",
                                 tag_ids=targets, metadata=metadata)
                    uow.images.add(copy)
                    uow.migrated.put(key, "image", img.id, copy.id, project.id)
                    outcome.images += 1
                    outcome.bytes += len(data)
                uow.commit()
        except BaseException:
            self.collect([sha])
            raise


def _count(source: SourceProjects, project_id: str) -> int:
    try:
        return source.image_count(project_id)
    except Exception:  # a total only for the progress bar
        return 0
