"""Domain objects as Custom Vision's JSON shapes (shared by the CLI's --json and the HTTP API)."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .model import DEFAULT_UNKNOWN_THRESHOLD, Image, Iteration, Prediction, Project, Tag, TagPrediction

if TYPE_CHECKING:
    from .usecases.images import ImageResult


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def project_json(p: Project, domain_id: str | None = None) -> dict[str, Any]:
    return {
        "id": p.id, "name": p.name, "description": p.description,
        "settings": {"domainId": domain_id or p.domain.value, "domain": p.domain.value,
                     "classificationType": p.classification_type.value, "threshold": p.threshold,
                     "cvbot": cvbot_settings_json(p)},
        "created": iso(p.created_at), "lastModified": iso(p.modified_at),
        "defaultIterationId": p.default_iteration_id, "workspace": p.workspace,
    }


def cvbot_settings_json(p: Project) -> dict[str, Any]:
    """cvbot's own project settings (no Custom Vision counterpart), under `settings.cvbot`: scheduled retraining
    ("nightly" or "off") and the stored predictions' retention in days (null: the install's default, 0: for
    ever)."""
    return {"retrain": p.retrain or "off", "predictionRetentionDays": p.prediction_retention_days,
            # the unknown score from which predictions are flagged (docs/unknown.md)
            "unknownThreshold": DEFAULT_UNKNOWN_THRESHOLD if p.unknown_threshold is None else p.unknown_threshold}


def tag_json(t: Tag) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "description": t.description, "type": t.type.value, "imageCount": t.image_count}


def image_json(i: Image, tag_names: dict[str, str] | None = None) -> dict[str, Any]:
    tag_names = tag_names or {}
    return {
        "id": i.id, "created": iso(i.created_at), "width": i.width, "height": i.height, "originalName": i.original_name,
        "sha256": i.sha256, "source": i.source, "uploadedBy": i.uploaded_by,
        "tags": [{"tagId": tid, "tagName": tag_names.get(tid, ""), "created": iso(i.created_at)} for tid in i.tag_ids],
    }


def image_result_json(r: ImageResult, tag_names: dict[str, str] | None = None) -> dict[str, Any]:
    return {"sourceUrl": r.source_name, "status": r.status, "message": r.message,
            "image": image_json(r.image, tag_names) if r.image else None}


def iteration_json(it: Iteration, default_id: str | None = None) -> dict[str, Any]:
    from .backbones import exportable  # the registry (and numpy) load only when an iteration is shown

    return {
        "id": it.id, "name": it.name, "number": it.number, "status": it.status.value,
        "failureReason": it.failure_reason,
        "created": iso(it.created_at), "lastModified": iso(it.trained_at or it.created_at),
        "trainedAt": iso(it.trained_at), "trainingTimeInMinutes": round((it.training_seconds or 0) / 60, 4),
        "trainingSeconds": it.training_seconds, "projectId": it.project_id, "domain": it.domain.value,
        "classificationType": it.classification_type.value, "backboneId": it.backbone_id,
        "isDefault": it.id == default_id, "publishName": it.publish_name, "exportable": exportable(it.domain),
        "imageCount": len(it.snapshot) if it.snapshot else None,
    }


def tag_prediction_json(p: TagPrediction) -> dict[str, Any]:
    return {"tagId": p.tag_id, "tagName": p.tag_name, "probability": p.probability, "tagType": p.tag_type.value}


def prediction_json(p: Prediction) -> dict[str, Any]:
    out = {
        "id": p.id, "project": p.project_id, "iteration": p.iteration_id, "created": iso(p.created_at),
        "threshold": p.threshold, "predictions": [tag_prediction_json(x) for x in p.predictions],
        "aboveThreshold": [x.tag_name for x in p.above_threshold], "stored": p.stored,
        "zeroShot": p.zero_shot,  # cvbot's own: answered from the tag names (no iteration trained yet)
    }
    out.update(unknown_json(p))
    return out


def unknown_json(p: Prediction) -> dict[str, Any]:
    """cvbot's own fields beside Custom Vision's (clients that do not know them ignore them); none for an
    iteration trained before the unknown score."""
    if p.unknown_score is None:
        return {}
    return {"unknownScore": p.unknown_score, "unknownThreshold": p.unknown_threshold, "unknown": p.unknown}
