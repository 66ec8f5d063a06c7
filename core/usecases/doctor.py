"""`cvbot doctor`: check the whole store (database, blobs, caches) across every workspace, and repair what is safe.

Each check counts what it found wrong (`problems`) and, with `repair`, what it fixed (`repaired`); a store is
clean when every problem is repaired or there was none. What cannot be repaired here (an image whose file is
gone) is reported with what to do. The adapter decides whether repairing is allowed (no server may hold the
store) and says so with `exclusive`: only then are running trainings and exports known to be interrupted."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..model import ExportStatus, IterationStatus, Project
from ..ports import UnitOfWork
from .base import Deps

log = logging.getLogger(__name__)

# A partial blob file untouched this long belongs to no writer any more (a write touches its file as it goes;
# even a large export is written in seconds), so it is removed; a younger one may be a concurrent writer's.
STALE_PARTIAL_SECONDS = 3600.0
MAX_DETAILS = 20


@dataclass
class Check:
    name: str
    description: str
    problems: int = 0
    repaired: int = 0
    details: list[str] = field(default_factory=list)
    advice: str = ""  # what to do about the problems that were not repaired
    note: str = ""  # information that is not a problem

    @property
    def ok(self) -> bool:
        return self.repaired >= self.problems

    def found(self, detail: str) -> None:
        self.problems += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "ok": self.ok,
                               "problems": self.problems, "repaired": self.repaired, "details": self.details}
        if self.advice and not self.ok:
            out["advice"] = self.advice
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class DoctorReport:
    checks: list[Check]
    repair: bool
    exclusive: bool

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "repair": self.repair, "exclusive": self.exclusive,
                "checks": [c.as_dict() for c in self.checks]}


@dataclass
class _References:
    """Every blob the database names, by what names it."""

    images: dict[str, str] = field(default_factory=dict)  # sha -> "image <id> of project '<name>'"
    snapshots: dict[str, str] = field(default_factory=dict)
    predictions: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> [(project id, iteration id)]
    exports: dict[str, list[str]] = field(default_factory=dict)  # key -> [export id]


def _references(uow: UnitOfWork, projects: Iterable[Project]) -> _References:
    refs = _References()
    for p in projects:
        where = f"project '{p.name}' ({p.workspace})"
        for img in uow.images.list(p.id):
            refs.images.setdefault(img.sha256, f"image {img.id} of {where}")
        for it in uow.iterations.list(p.id):
            for key in (it.probe_key, it.evaluation_key):
                if key:
                    refs.artifacts.setdefault(key, []).append((p.id, it.id))
            full = uow.iterations.get(it.id, with_snapshot=True)
            for e in full.snapshot if full else []:
                refs.snapshots.setdefault(e.sha256, f"image {e.image_id} in iteration {it.number} of {where}")
            for ex in uow.exports.list(it.id):
                if ex.blob_key and ex.status == ExportStatus.Done:
                    refs.exports.setdefault(ex.blob_key, []).append(ex.id)
        for pred in uow.predictions.list(p.id):
            if pred.sha256:
                refs.predictions.setdefault(pred.sha256, f"prediction {pred.id} of {where}")
    return refs


def doctor(deps: Deps, repair: bool = False, exclusive: bool = False,
           partial_age: float = STALE_PARTIAL_SECONDS) -> DoctorReport:
    """Check the store; with `repair` (which needs `exclusive`: no other process using the store), fix what is
    safe: delete orphan blobs and stale partial files, drop orphan embedding rows, fail interrupted work and
    iterations or exports whose files are missing, and release such iterations as default or published."""
    if repair and not exclusive:
        raise ValueError("repair needs the store to itself (exclusive)")
    database = Check("database", "the database's own consistency check",
                     advice="restore the database from a backup; cvbot cannot repair it")
    interrupted = Check("interrupted", "trainings and exports left running by a stopped server")
    missing_images = Check("missing_image_files", "images, training snapshots and stored predictions whose file "
                           "is missing", advice="restore the blob files from a backup, or delete those images")
    iterations = Check("broken_iterations", "iterations whose model files are missing, and defaults that point "
                       "to no trained iteration")
    exports = Check("broken_exports", "finished exports whose file is missing")
    orphans = Check("orphan_blobs", "blob files that nothing references")
    partials = Check("partial_files", "unfinished blob writes left by a crash")
    embeddings = Check("orphan_embeddings", "cached embeddings of contents no image uses any more")
    report = DoctorReport([database, interrupted, missing_images, iterations, exports, orphans, partials,
                           embeddings], repair, exclusive)

    with deps.uow() as uow:
        for problem in uow.integrity_problems():
            database.found(problem)
    if database.problems:  # the rows cannot be trusted: repair nothing from them
        return report

    # blobs first, then the rows that name them: a blob stored meanwhile is written before its row, so it is
    # never taken for missing (it can look orphan; orphans are re-checked right before each delete)
    blob_keys = set(deps.blobs.keys())
    with deps.uow() as uow:
        projects = uow.projects.list()
        refs = _references(uow, projects)
        running = uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training])
        exporting = uow.exports.in_status(ExportStatus.Exporting)
        cached = uow.embeddings.sha256s()
    def missing(key: str) -> bool:
        return key not in blob_keys and not deps.blobs.exists(key)

    _check_interrupted(deps, interrupted, running, exporting, repair, exclusive)
    for kind in (refs.images, refs.snapshots, refs.predictions):
        for key, what in kind.items():
            if missing(key):
                missing_images.found(f"{what}: file {key} is missing")
    broken = {iid: pid for key, owners in refs.artifacts.items() if missing(key) for pid, iid in owners}
    _check_iterations(deps, iterations, projects, broken, repair)
    broken_exports = {eid for key, ids in refs.exports.items() if missing(key) for eid in ids}
    _check_exports(deps, exports, broken_exports, repair)
    _check_orphans(deps, orphans, blob_keys, repair, partial_age)
    _check_partials(deps, partials, partial_age, repair)
    _check_embeddings(deps, embeddings, cached, repair)
    return report


def _check_interrupted(deps: Deps, check: Check, running: list[Any], exporting: list[Any], repair: bool,
                       exclusive: bool) -> None:
    if not exclusive:
        if running or exporting:
            check.note = (f"{len(running)} training(s) and {len(exporting)} export(s) are running; another cvbot "
                          "process holds the store, so they are not taken for interrupted")
        return
    for it in running:
        check.found(f"iteration {it.number} ({it.id}) is {it.status.value}")
    for ex in exporting:
        check.found(f"export {ex.id} of iteration {ex.iteration_id} is Exporting")
    if repair and (running or exporting):
        failed, failed_exports = fail_interrupted(deps)
        check.repaired = failed + failed_exports


def fail_interrupted(deps: Deps) -> tuple[int, int]:
    """Fail the trainings and exports a stopped server left running; (iterations, exports) failed."""
    failed = failed_exports = 0
    with deps.uow() as uow:
        for it in uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training]):
            it.status = IterationStatus.Failed
            it.failure_reason = "interrupted: the server stopped while this iteration was training; train again"
            uow.iterations.update(it)
            failed += 1
        for export in uow.exports.in_status(ExportStatus.Exporting):
            export.status = ExportStatus.Failed
            export.failure_reason = "interrupted: the server stopped during the export; export again"
            uow.exports.update(export)
            failed_exports += 1
        uow.commit()
    return failed, failed_exports


def release_dangling_defaults(uow: UnitOfWork) -> int:
    """Clear defaults that point to a missing or not Completed iteration (in `uow`, uncommitted)."""
    released = 0
    for project in uow.projects.list():
        if project.default_iteration_id:
            d = uow.iterations.get(project.default_iteration_id)
            if d is None or d.status != IterationStatus.Completed:
                project.default_iteration_id = None
                uow.projects.update(project)
                released += 1
    return released


def _check_iterations(deps: Deps, check: Check, projects: list[Project], broken: dict[str, str],
                      repair: bool) -> None:
    names = {p.id: p.name for p in projects}
    with deps.uow() as uow:
        for iid in sorted(broken):
            it = uow.iterations.get(iid)
            if it is None or it.status == IterationStatus.Failed:
                continue
            check.found(f"iteration {it.number} of project '{names.get(it.project_id, it.project_id)}' is "
                        f"{it.status.value} but its model files are missing")
            if repair:  # Failed, and neither published nor default: nothing predicts with it any more
                it.status = IterationStatus.Failed
                it.failure_reason = "its model files are missing (found by cvbot doctor); train again"
                it.publish_name, it.publish_resource_id = None, None
                uow.iterations.update(it)
                check.repaired += 1
        dangling = []
        for p in uow.projects.list():
            if p.default_iteration_id and p.default_iteration_id not in broken:
                d = uow.iterations.get(p.default_iteration_id)
                if d is None or d.status != IterationStatus.Completed:
                    dangling.append(p)
                    check.found(f"the default iteration of project '{p.name}' is not a trained iteration")
        if repair:
            release_dangling_defaults(uow)  # also the defaults of the iterations just failed
            check.repaired += len(dangling)
            uow.commit()


def _check_exports(deps: Deps, check: Check, broken: set[str], repair: bool) -> None:
    if not broken:
        return
    with deps.uow() as uow:
        for ex in uow.exports.in_status(ExportStatus.Done):
            if ex.id not in broken:
                continue
            check.found(f"export {ex.id} of iteration {ex.iteration_id} is Done but its file is missing")
            if repair:
                ex.status = ExportStatus.Failed
                ex.failure_reason = "its file is missing (found by cvbot doctor); export again"
                ex.blob_key = None
                uow.exports.update(ex)
                check.repaired += 1
        uow.commit()


def _unreferenced(deps: Deps, check: Check, keys: set[str], label: str) -> list[str]:
    """The `keys` no row references, each reported on `check`."""
    with deps.uow() as uow:
        found = sorted(keys - uow.referenced_blob_keys(keys))
    for k in found:
        check.found(f"{label} {k}")
    return found


def _check_orphans(deps: Deps, check: Check, blob_keys: set[str], repair: bool, age: float) -> None:
    with deps.uow() as uow:
        candidates = sorted(blob_keys - uow.referenced_blob_keys(blob_keys))
    young = 0
    if deps.blobs.shared:  # another machine may be between writing a blob and committing its row
        ages = {k: a for k in candidates if (a := deps.blobs.age_seconds(k)) is not None}  # None: deleted since
        orphans = [k for k, a in ages.items() if a >= age]
        young = len(ages) - len(orphans)
    else:
        orphans = [k for k in candidates if deps.blobs.exists(k)]  # not deleted since the listing
    for k in orphans:
        check.found(f"blob {k}")
    if young:
        check.note = (f"{young} unreferenced blob(s) younger than {age / 3600:g} h left alone: the store is shared, "
                      "so a write may be in progress")
    if repair and orphans:
        check.repaired = delete_orphans(deps, orphans, min_age=age if deps.blobs.shared else 0.0)


def delete_orphans(deps: Deps, candidates: list[str], min_age: float = 0.0) -> int:
    """Delete the blobs among `candidates` that no row references when asked again now, and (with `min_age`, for
    a store other machines write to) that were not written for `min_age` seconds."""
    with deps.uow() as uow:
        referenced = uow.referenced_blob_keys(candidates)
    gone = [k for k in candidates if k not in referenced]
    if min_age > 0:
        gone = [k for k in gone if (a := deps.blobs.age_seconds(k)) is not None and a >= min_age]
    for k in gone:
        deps.blobs.delete(k)
        deps.artifacts.forget(k)
    return len(gone)


def _check_partials(deps: Deps, check: Check, age: float, repair: bool) -> None:
    every = deps.blobs.partial_files()
    stale = [p for p in every if p.age_seconds >= age]
    for p in stale:
        check.found(f"{p.name} ({p.size:,} bytes, untouched for {p.age_seconds / 3600:.1f} h)")
    if len(every) > len(stale):
        check.note = (f"{len(every) - len(stale)} younger partial file(s) left alone: a write may be in progress "
                      f"(removed once untouched for {age / 3600:g} h)")
    if repair:
        for p in stale:
            deps.blobs.delete_partial(p.name)
            check.repaired += 1


def _check_embeddings(deps: Deps, check: Check, cached: set[str], repair: bool) -> None:
    orphans = _unreferenced(deps, check, cached, "embeddings of")
    if repair and orphans:
        with deps.uow() as uow:  # asked again in the transaction that deletes, so a new image keeps its vector
            still = sorted(set(orphans) - uow.referenced_blob_keys(orphans))
            uow.embeddings.delete(still)
            uow.commit()
        check.repaired = len(still)
