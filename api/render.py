"""Custom Vision's wire shapes, built on the shared ones in core.views."""
from __future__ import annotations

from collections.abc import Callable

from core import views
from core.model import (
    Domain,
    Export,
    ExportStatus,
    Image,
    Iteration,
    IterationStatus,
    Prediction,
    Project,
    TagPrediction,
)

from .domains import EXPORT_PLATFORMS, domain_id


def project(p: Project) -> dict:
    out = views.project_json(p, domain_id(p.domain))
    out["settings"].update({"targetExportPlatforms": [], "useNegativeSet": True, "imageProcessingSettings": None})
    out.update({"thumbnailUri": None, "drModeEnabled": False, "status": "Succeeded"})
    return out


# uris(kind, id): the signed originalImageUri, resizedImageUri and thumbnailUri of one stored image (api/links.py)
Uris = Callable[[str, str], dict[str, str]]
NO_URIS = {"resizedImageUri": None, "thumbnailUri": None, "originalImageUri": None}


def image(i: Image, tag_names: dict[str, str], uris: Uris | None = None) -> dict:
    out = views.image_json(i, tag_names)
    out.update(NO_URIS if uris is None else uris("image", i.id))
    out.update({"regions": [], "metadata": dict(i.metadata)})
    return out


def image_results(results, tag_names: dict[str, str], uris: Uris | None = None) -> dict:
    """ImageCreateSummary: isBatchSuccessful only when every image is a new OK (as Custom Vision)."""
    images = []
    for r in results:
        item = views.image_result_json(r, tag_names)
        if r.image is not None:
            item["image"] = image(r.image, tag_names, uris)
        images.append(item)
    return {"isBatchSuccessful": bool(results) and all(r.status == "OK" for r in results), "images": images}


def iteration(it: Iteration, default_id: str | None) -> dict:
    out = views.iteration_json(it, default_id)
    exportable = bool(out["exportable"])
    out.update({
        # Custom Vision has no "Queued": a queued iteration is "Training" until it completes or fails.
        "status": IterationStatus.Training.value if it.status == IterationStatus.Queued else it.status.value,
        "domainId": domain_id(it.domain), "exportable": exportable,
        "exportableTo": EXPORT_PLATFORMS if exportable else [], "trainingType": "Regular", "reservedBudgetInHours": 0,
        "trainingTimeInMinutes": int(round((it.training_seconds or 0) / 60)),
        "originalPublishResourceId": it.publish_resource_id if it.publish_name else None,
        "customBaseModelInfo": None,
        "trainingErrorDetails": it.failure_reason,
    })
    return out


def tag_prediction(p: TagPrediction) -> dict:
    out = views.tag_prediction_json(p)
    out["boundingBox"] = None
    return out


def image_prediction(p: Prediction) -> dict:
    out = views.prediction_json(p)
    out["predictions"] = [tag_prediction(x) for x in p.predictions]
    return out


def stored_prediction(p: Prediction, domain: Domain, uris: Uris | None = None) -> dict:
    """A stored prediction; its image links are scoped to the prediction (its id), not to the bytes."""
    out = image_prediction(p)
    out.update(NO_URIS if uris is None or not (p.stored and p.sha256) else uris("prediction", p.id))
    out["domain"] = domain_id(domain)
    return out


def image_performance(img: Image, preds: list[TagPrediction], tag_names: dict[str, str],
                      uris: Uris | None = None) -> dict:
    out = image(img, tag_names, uris)
    out.update({"predictions": [tag_prediction(x) for x in preds], "imageUri": out["originalImageUri"]})
    return out


def export(e: Export, download_uri: str | None) -> dict:
    done = e.status == ExportStatus.Done
    return {"platform": e.platform, "status": e.status.value, "downloadUri": download_uri if done else None,
            "flavor": e.flavor, "newerVersionAvailable": False, "failureReason": e.failure_reason}


def project_export(e) -> dict:
    """Azure's ProjectExport (a copy here is one transaction: the estimate is a guess from the image count)."""
    return {"iterationCount": e.iteration_count, "imageCount": e.image_count, "tagCount": e.tag_count,
            "regionCount": 0, "estimatedImportTimeInMS": 1000 + e.image_count, "token": e.token}


def metadata_results(results) -> dict:
    """ImageMetadataUpdateSummary: isBatchSuccessful only when every image is OK."""
    return {"isBatchSuccessful": bool(results) and all(r.status == "OK" for r in results),
            "images": [{"imageId": r.image_id, "status": r.status, "metadata": r.metadata} for r in results]}
