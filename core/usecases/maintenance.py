"""Maintenance across every workspace: recovery after a restart (interrupted work, orphan blobs)."""
from __future__ import annotations

from ..model import ExportStatus, IterationStatus
from .base import Deps


def recover(deps: Deps) -> dict[str, int]:
    """Fail trainings and exports a stopped server left running, drop defaults that point nowhere, and delete
    blobs that no row references."""
    failed = 0
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
        for project in uow.projects.list():
            if project.default_iteration_id:
                d = uow.iterations.get(project.default_iteration_id)
                if d is None or d.status != IterationStatus.Completed:
                    project.default_iteration_id = None
                    uow.projects.update(project)
        uow.commit()
    keys = list(deps.blobs.keys())
    with deps.uow() as uow:
        referenced = uow.referenced_blob_keys(keys)
    orphans = [k for k in keys if k not in referenced]
    for k in orphans:
        deps.blobs.delete(k)
    return {"failed_iterations": failed, "orphan_blobs_deleted": len(orphans)}
