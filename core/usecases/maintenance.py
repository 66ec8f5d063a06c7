"""Maintenance across every workspace: recovery after a restart (interrupted work, orphan blobs, stale partial
files). `cvbot doctor` (doctor.py) runs these and more checks on demand."""
from __future__ import annotations

import logging

from .base import Deps
from .doctor import STALE_PARTIAL_SECONDS, delete_orphans, fail_interrupted, release_dangling_defaults

log = logging.getLogger(__name__)


def recover(deps: Deps, clean_blobs: bool = True) -> dict[str, int]:
    """What is safe to repair unattended at start-up: fail trainings and exports a stopped server left running
    (unless jobs live in a durable queue, where workers finish them),
    drop defaults that point nowhere, and (with `clean_blobs`, when no other process uses the store) delete blobs
    that no row references and partial blob files untouched for STALE_PARTIAL_SECONDS. On a `shared` store (other
    machines write to it, unseen by the caller's lock) orphan blobs too are deleted only once that old. Files that
    rows name but that are missing are only counted and logged: whether to fail their iterations is `cvbot doctor
    --repair`'s call, since a missing mount would look the same."""
    # with a durable queue, work left Queued or Training is still in the queue: a worker runs it (again)
    failed = 0 if getattr(deps.runner, "durable", False) else fail_interrupted(deps)[0]
    with deps.uow() as uow:
        release_dangling_defaults(uow)
        uow.commit()
    report = {"failed_iterations": failed, "orphan_blobs_deleted": 0, "stale_partial_files_deleted": 0,
              "missing_files": 0}
    keys = set(deps.blobs.keys())
    with deps.uow() as uow:
        referenced = uow.referenced_blob_keys()
    missing = [k for k in referenced - keys if not deps.blobs.exists(k)]
    if missing:
        report["missing_files"] = len(missing)
        log.warning("%d file(s) the database refers to are missing from the blob store (e.g. %s); run cvbot doctor",
                    len(missing), missing[0])
    if clean_blobs:
        min_age = STALE_PARTIAL_SECONDS if deps.blobs.shared else 0.0
        report["orphan_blobs_deleted"] = delete_orphans(deps, sorted(keys - referenced), min_age=min_age)
        for p in deps.blobs.partial_files(older_than=STALE_PARTIAL_SECONDS):
            deps.blobs.delete_partial(p.name)
            report["stale_partial_files_deleted"] += 1
    return report
