"""Exports: queue a model export of a Completed iteration to one of Azure's platforms, run it as a job, hand out
the finished file."""
from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from pathlib import Path

from .. import errors
from ..backbones import exportable
from ..export import graph
from ..export.base import ExportRequest
from ..export.platforms import usable_exporter
from ..model import ClassificationType, Domain, Export, ExportStatus, Iteration, IterationStatus
from .base import Deps, UseCase, collect_blobs

log = logging.getLogger(__name__)
LEGACY_EXPORTS = ("ONNX", None, Domain.Compact)  # what cvbot exported before cvbotExportFormat 2


def _exportable(it: Iteration) -> Iteration:
    """A Completed iteration, or Azure's code for why it cannot be exported yet (or at all)."""
    if it.status.running:
        raise errors.CvError(f"iteration {it.number} is still {it.status.value.lower()}; export it once it has "
                             "completed", "BadRequestExportWhileTraining")
    if it.status != IterationStatus.Completed:
        raise errors.CvError(f"iteration {it.number} is {it.status.value}: it has no model to export",
                             "BadRequestIterationIsNotTrained")
    return it


class Exports(UseCase):
    def start(self, project_id: str, iteration_id: str, platform: str = "ONNX", flavor: str | None = None) -> Export:
        """Queue an export to `platform` (Azure's names, any case) and `flavor` (an alias is stored as its
        canonical flavor). A finished export of the same platform and flavor is returned as it is. Unknown
        platform or flavor, a platform whose converter is not installed, or an iteration that is not Completed:
        Azure's error codes, and nothing is stored."""
        self.scope.require_write("export iterations")
        exporter, flavor = usable_exporter(platform, flavor, self.deps.export_settings)
        with self.deps.uow() as uow:
            it = _exportable(self.iteration(uow, project_id, iteration_id))
            if not exportable(it.domain):
                raise errors.CvError(f"the {it.domain.value} domain cannot be exported",
                                     "BadRequestExportValidationFailed")
            existing = uow.exports.list(it.id)
            if any(e.status == ExportStatus.Exporting for e in existing):
                raise errors.CvError("this iteration is already being exported", "BadRequestExportAlreadyInProgress")
            done = [e for e in existing if e.status == ExportStatus.Done and e.platform == exporter.platform
                    and e.flavor == flavor]
        current = next((e for e in done if self._current(e, it)), None)
        if current is not None:
            return current
        with self.deps.uow() as uow:
            export = Export(iteration_id=it.id, platform=exporter.platform, flavor=flavor)
            uow.exports.add(export)
            uow.commit()
        try:
            self.deps.submit("export", iteration_id=it.id, export_id=export.id)
        except Exception as e:  # the queue is unreachable: no export may stay Exporting with no job behind it
            export.status = ExportStatus.Failed
            export.failure_reason = f"the export could not be queued: {type(e).__name__}: {e}"
            with self.deps.uow() as uow:
                uow.exports.update(export)
                uow.commit()
            raise
        return export

    def _current(self, export: Export, it: Iteration) -> bool:
        """Whether a finished export follows today's conventions. Files made before cvexport.manifest carried
        cvbotExportFormat 2 (ONNX in RGB) stay downloadable as they are, but asking again makes a new one. Only
        plain ONNX of Compact iterations was exported then: other exports are current without reading them."""
        if (export.platform, export.flavor, it.domain) != LEGACY_EXPORTS:
            return True
        try:
            with zipfile.ZipFile(io.BytesIO(self.deps.blobs.get(export.blob_key or ""))) as z:
                found = json.loads(z.read("cvexport.manifest")).get("cvbotExportFormat")
        except Exception:  # noqa: BLE001 - an unreadable old file is simply not current
            return False
        return bool(found == graph.EXPORT_FORMAT)

    def list(self, project_id: str, iteration_id: str) -> list[Export]:
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            return uow.exports.list(it.id)


def export_file(deps: Deps, iteration_id: str, export_id: str) -> bytes:
    """A finished export's package (a zip: the platform's files, labels.txt, cvexport.manifest). Needs no scope:
    the random export id is the capability, as in Custom Vision's download links."""
    with deps.uow() as uow:
        found = next((e for e in uow.exports.list(iteration_id) if e.id == export_id), None)
    if found is None or found.status != ExportStatus.Done or not found.blob_key:
        raise errors.NotFound("no finished export with this id")
    return deps.blobs.get(found.blob_key)


class ExportJob:
    def __init__(self, deps: Deps, iteration_id: str, export_id: str):
        self.deps = deps
        self.iteration_id = iteration_id
        self.export_id = export_id

    def run(self) -> None:
        with self.deps.uow() as uow:
            it = uow.iterations.get(self.iteration_id)
            exports = uow.exports.list(self.iteration_id) if it else []
            export = next((e for e in exports if e.id == self.export_id), None)
            project = uow.projects.get(it.project_id) if it else None
        if it is None or export is None:
            return
        try:
            export.blob_key = self.deps.blobs.put(self._package(
                it, export, project.name if project else "", project.threshold if project else None,
                project.unknown_threshold if project else None))
            export.status = ExportStatus.Done
        except Exception as e:  # noqa: BLE001 - a failed export is reported on the export, not raised into the runner
            log.exception("export %s of iteration %s failed", self.export_id, self.iteration_id)
            export.status = ExportStatus.Failed
            export.failure_reason = e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}"
        with self.deps.uow() as uow:
            gone = uow.iterations.get(self.iteration_id) is None
            if not gone:
                uow.exports.update(export)
                uow.commit()
        if gone and export.blob_key:  # the iteration was deleted meanwhile
            collect_blobs(self.deps, [export.blob_key])

    def _package(self, it: Iteration, export: Export, project_name: str, threshold: float | None,
                 unknown_threshold: float | None = None) -> bytes:
        """The classifier graph in the platform's convention, the platform's files, labels and manifest, zipped."""
        exporter, flavor = usable_exporter(export.platform, export.flavor, self.deps.export_settings)
        backbone = self.deps.backbones.for_domain(it.domain)
        if backbone.id != it.backbone_id:
            raise errors.CvError(f"iteration {it.number} was trained with {it.backbone_id}, but the domain now "
                                 f"loads {backbone.id}; retrain before exporting", "BadRequestExportValidationFailed")
        multilabel = it.classification_type == ClassificationType.Multilabel
        metadata = {"projectId": it.project_id, "project": project_name, "iterationId": it.id,
                    "iteration": str(it.number), "domain": it.domain.value, "platform": exporter.platform,
                    "flavor": flavor or ""}
        if threshold is not None:
            metadata["threshold"] = repr(float(threshold))
        # the unknown score travels as a second output where the platform's files can carry it
        unknown = self.deps.artifacts.unknown(it.probe_key or "") if exporter.carries_unknown(flavor) else None
        model = graph.build_model(backbone, self.deps.artifacts.probe(it.probe_key or ""), it.tag_names, it.tag_ids,
                                  metadata, convention=exporter.convention, unknown=unknown)
        manifest = graph.manifest(backbone, multilabel, it.id, it.project_id, exporter.convention,
                                  exporter.platform, flavor,
                                  {**metadata, "tagIds": json.dumps(it.tag_ids), "backbone": backbone.id,
                                   "classificationType": "Multilabel" if multilabel else "Multiclass"})
        if unknown is not None:
            manifest["UnknownOutput"] = {
                # the project's threshold when it set one, else the iteration's calibrated default
                "name": graph.UNKNOWN_OUTPUT,
                "threshold": unknown.threshold_ if unknown_threshold is None else unknown_threshold,
                "meaning": "per image, in [0, 1]: how unlike the training images it is (cvbot's unknown score); "
                           "at or above the threshold the image looks like nothing the model was trained on"}
        with tempfile.TemporaryDirectory(prefix="cvbot-export-") as work:
            files = exporter.files(ExportRequest(onnx=model, tag_names=list(it.tag_names), manifest=manifest,
                                                 flavor=flavor, workdir=Path(work), metadata=metadata))
        if not files:
            raise errors.CvError(f"the {exporter.platform} exporter made no files", "BadRequestExportValidationFailed")
        manifest["ModelFileName"] = next(iter(files))
        manifest["Files"] = list(files)
        return graph.package_files(files, list(it.tag_names), manifest)
