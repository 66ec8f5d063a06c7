"""Exports: queue a model export of a Completed iteration, run it as a job, hand out the finished file."""
from __future__ import annotations

import logging

from .. import errors
from ..backbones import exportable
from ..model import ClassificationType, Export, ExportStatus
from .base import Deps, UseCase, collect_blobs, completed

log = logging.getLogger(__name__)
PLATFORMS = ("ONNX",)


class Exports(UseCase):
    def start(self, project_id: str, iteration_id: str, platform: str = "ONNX", flavor: str | None = None) -> Export:
        """Queue an export (a finished one of the same flavor is returned as it is); see `list`."""
        self.scope.require_write("export iterations")
        if str(platform).strip().upper() not in PLATFORMS:
            raise errors.InvalidInput(f"cannot export to {platform!r}; the only platform is ONNX",
                                      "BadRequestProjectUnsupportedExportPlatform")
        with self.deps.uow() as uow:
            it = completed(self.iteration(uow, project_id, iteration_id), "be exported")
            if not exportable(it.domain):
                raise errors.CvError(f"the {it.domain.value} domain cannot be exported; train with the Compact domain",
                                     "BadRequestExportValidationFailed")
            existing = uow.exports.list(it.id)
            if any(e.status == ExportStatus.Exporting for e in existing):
                raise errors.CvError("this iteration is already being exported", "BadRequestExportAlreadyInProgress")
            done = next((e for e in existing if e.status == ExportStatus.Done and e.flavor == flavor), None)
            if done is not None:
                return done
            export = Export(iteration_id=it.id, platform="ONNX", flavor=flavor)
            uow.exports.add(export)
            uow.commit()
        self.deps.runner.submit(f"export-{export.id}", ExportJob(self.deps, it.id, export.id).run)
        return export

    def list(self, project_id: str, iteration_id: str) -> list[Export]:
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            return uow.exports.list(it.id)


def export_file(deps: Deps, iteration_id: str, export_id: str) -> bytes:
    """A finished export's package (a zip: model.onnx, labels.txt, cvexport.manifest). Needs no scope: the random
    export id is the capability, as in Custom Vision's download links."""
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
        from .. import export as onnx_export

        with self.deps.uow() as uow:
            it = uow.iterations.get(self.iteration_id)
            exports = uow.exports.list(self.iteration_id) if it else []
            export = next((e for e in exports if e.id == self.export_id), None)
        if it is None or export is None:
            return
        try:
            backbone = self.deps.backbones.for_domain(it.domain)
            if backbone.id != it.backbone_id:
                raise errors.CvError(f"iteration {it.number} was trained with {it.backbone_id}, but the domain now "
                                     f"loads {backbone.id}; retrain before exporting",
                                     "BadRequestExportValidationFailed")
            multilabel = it.classification_type == ClassificationType.Multilabel
            unknown = self.deps.artifacts.unknown(it.probe_key or "")
            model = onnx_export.build_model(backbone, self.deps.artifacts.probe(it.probe_key or ""), it.tag_names,
                                            it.tag_ids, {"projectId": it.project_id, "iterationId": it.id},
                                            unknown=unknown)
            manifest = onnx_export.manifest(backbone, multilabel, it.id, it.project_id)
            if unknown is not None:
                manifest["UnknownOutput"] = {
                    "name": "unknown_score", "threshold": unknown.threshold_,
                    "meaning": "per image, in [0, 1]: how unlike the training images it is (cvbot's unknown score); "
                               "at or above the threshold the image looks like nothing the model was trained on"}
            data = onnx_export.package(model, it.tag_names, manifest)
            export.blob_key = self.deps.blobs.put(data)
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
