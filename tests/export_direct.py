"""Exporting an iteration straight through one exporter, before the use case dispatches to it.

TODO(merge exp-onnx): once `core/export/platforms.py` and the use-case dispatch land, tests call
`trained.export(PLATFORM, FLAVOR)` instead of `direct_export(trained, EXPORTER, FLAVOR)` (same ZipFile back).
"""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from core.export import ExportRequest, build_model, manifest
from core.export.base import Exporter
from core.model import ClassificationType
from tests.export_support import Trained


def direct_export(trained: Trained, exporter: Exporter, flavor: str | None = None) -> zipfile.ZipFile:
    """The iteration's classifier graph in the exporter's convention, through `exporter.files`, zipped with
    labels.txt and cvexport.manifest as the export package holds them."""
    deps = trained.cv.deps
    with deps.uow() as uow:
        it = uow.iterations.get(trained.iteration_id)
    backbone = deps.backbones.for_domain(it.domain)
    meta = {"projectId": it.project_id, "iterationId": it.id}
    onnx = build_model(backbone, deps.artifacts.probe(it.probe_key or ""), it.tag_names, it.tag_ids, meta,
                       exporter.convention)
    man = manifest(backbone, it.classification_type == ClassificationType.Multilabel, it.id, it.project_id)
    with tempfile.TemporaryDirectory() as work:
        files = exporter.files(ExportRequest(onnx, it.tag_names, man, exporter.canonical_flavor(flavor),
                                             Path(work), meta))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("labels.txt", "\n".join(it.tag_names) + "\n")
        z.writestr("cvexport.manifest", json.dumps(man, indent=2))
    return zipfile.ZipFile(io.BytesIO(buf.getvalue()))
