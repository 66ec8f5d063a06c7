"""Prediction: classify an image with the default, a given or a published iteration; stored predictions."""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime

from .. import errors
from ..embedding import Embedder
from ..images import PREDICTION_MAX_BYTES, TRAINING_MAX_BYTES, validate_image
from ..model import Domain, Iteration, Prediction, Project, TagPrediction
from ..ports import UnitOfWork
from ..rules import clean_metadata
from .base import UseCase, completed, trained_backbone
from .images import ImageResult, Images, ImageUpload
from .zero_shot import ZeroShot


@dataclass
class PredictionQuery:
    iteration_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    tag_ranges: list[tuple[str, float, float]] = field(default_factory=list)  # (tag id, min, max probability)
    order: str = "Newest"  # Newest | Oldest | Suggested
    offset: int = 0
    max_count: int = 50

    def admits(self, p: Prediction) -> bool:
        if (self.start and p.created_at < self.start) or (self.end and p.created_at > self.end):
            return False
        probs = {x.tag_id: x.probability for x in p.predictions}
        return all(lo <= probs.get(tid, -1.0) <= hi for tid, lo, hi in self.tag_ranges)


@dataclass
class PredictionPage:
    results: list[tuple[Prediction, Domain]]  # each with the domain of the iteration that made it
    next_offset: int | None


class Predictions(UseCase):
    def predict(self, project_id: str, data: bytes, iteration_id: str | None = None, publish_name: str | None = None,
                store: bool = True, max_bytes: int = PREDICTION_MAX_BYTES) -> Prediction:
        """Classify one image; stored (with its image) unless `store` is False."""
        info = validate_image(data, max_bytes)
        zero_shot = ZeroShot(self.deps, self.scope)
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            it = (None if zero_shot.applies(project, iteration_id, publish_name)
                  else self._iteration_for(uow, project, iteration_id, publish_name))
        if it is None:  # no iteration trained yet: a CLIP domain answers from the tag names, never stored
            return zero_shot.predict(project, data)
        backbone = trained_backbone(self.deps, it)
        probe = self.deps.artifacts.probe(it.probe_key or "")
        x = Embedder(backbone, batch_size=1, workers=1).embed_bytes([data])
        P = probe.predict_proba(x)
        probs = P[0]
        scorer = self.deps.artifacts.unknown(it.probe_key or "")
        preds = sorted((TagPrediction(tid, name, float(p), tt)
                        for tid, name, p, tt in zip(it.tag_ids, it.tag_names, probs, it.tag_types, strict=True)),
                       key=lambda p: -p.probability)
        prediction = Prediction(project_id=project_id, iteration_id=it.id, predictions=preds,
                                threshold=project.threshold, sha256=info.sha256)
        if scorer is not None:  # iterations trained before the unknown score answer without one
            prediction.unknown_score = float(scorer.score(x, P)[0])
            prediction.unknown_threshold = (scorer.threshold_ if project.unknown_threshold is None
                                            else project.unknown_threshold)
        if store:
            self.deps.blobs.put(data)
            try:
                with self.deps.uow() as uow:
                    prediction.stored = True
                    uow.predictions.add(prediction)
                    uow.commit()
            except Exception:
                prediction.stored = False
                self.collect([info.sha256])
                raise
        return prediction

    def _iteration_for(self, uow: UnitOfWork, project: Project, iteration_id: str | None,
                       publish_name: str | None) -> Iteration:
        if iteration_id:
            it = self.iteration(uow, project.id, iteration_id)
        elif publish_name and publish_name != "default":
            found = uow.iterations.published(project.id, publish_name)
            if found is None:
                raise errors.NotFound(f"no iteration of project '{project.name}' is published as '{publish_name}'")
            it = found
        else:
            if not project.default_iteration_id:
                raise errors.NoDefaultIteration(
                    f"project '{project.name}' has no trained iteration yet; train it first")
            it = self.iteration(uow, project.id, project.default_iteration_id)
        return completed(it, "answer predictions")

    def get(self, project_id: str, prediction_id: str) -> Prediction:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            p = uow.predictions.get(prediction_id)
            if not p or p.project_id != project_id:
                raise errors.NotFound(f"no prediction {prediction_id} in this project")
            return p

    def image_data(self, project_id: str, prediction_id: str) -> bytes:
        """The image of a stored prediction (NotFound when the prediction was made without storing it)."""
        p = self.get(project_id, prediction_id)
        if not p.sha256:
            raise errors.NotFound(f"prediction {prediction_id} was made without storing its image")
        return self.deps.blobs.get(p.sha256)

    def list(self, project_id: str, iteration_id: str | None = None, skip: int = 0,
             take: int | None = None) -> builtins.list[Prediction]:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return uow.predictions.list(project_id, iteration_id, skip, take)

    def query(self, project_id: str, q: PredictionQuery) -> PredictionPage:
        """Stored predictions filtered by iteration, time and per-tag probability ranges, one page at a time."""
        with self.deps.uow() as uow:
            project = self.project(uow, project_id)
            preds = uow.predictions.list(project_id, q.iteration_id)
            domains = {it.id: it.domain for it in uow.iterations.list(project_id)}
        preds = [p for p in preds if q.admits(p)]
        if q.order == "Oldest":
            preds = preds[::-1]
        elif q.order == "Suggested":  # least certain first: the ones worth tagging
            preds = sorted(preds, key=lambda p: max((x.probability for x in p.predictions), default=0.0))
        page = preds[q.offset:q.offset + q.max_count]
        more = q.offset + q.max_count < len(preds)
        return PredictionPage([(p, domains.get(p.iteration_id or "", project.domain)) for p in page],
                              q.offset + q.max_count if more else None)

    def delete(self, project_id: str, prediction_ids: builtins.list[str]) -> int:
        self.scope.require_write("delete predictions")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            preds = [p for p in (uow.predictions.get(i) for i in prediction_ids) if p and p.project_id == project_id]
            for p in preds:
                uow.predictions.delete(p.id)
            uow.commit()
        self.collect([p.sha256 for p in preds if p.sha256])
        return len(preds)

    def add_to_training(self, project_id: str, prediction_id: str, tag_ids: builtins.list[str],
                        uploaded_by: str | None = None, metadata: dict[str, str] | None = None) -> ImageResult:
        """Custom Vision's "test and retrain": the predicted image joins the training set with confirmed tags."""
        p = self.get(project_id, prediction_id)
        data = self.deps.blobs.get(p.sha256 or "")
        images = Images(self.deps, self.scope)
        upload = ImageUpload(data, f"prediction {prediction_id[:8]}", tag_ids, metadata=dict(metadata or {}))
        result = images.add(project_id, [upload],
                            source="prediction", uploaded_by=uploaded_by,
                            max_bytes=max(TRAINING_MAX_BYTES, len(data)))[0]
        if result.status == "OKDuplicate" and result.image is not None:
            images.set_tags(project_id, [result.image.id], tag_ids)
        return result

    def add_many_to_training(self, project_id: str, entries: builtins.list[tuple[str, builtins.list[str]]],
                             metadata: dict[str, str] | None = None,
                             uploaded_by: str | None = None) -> builtins.list[ImageResult]:
        """Custom Vision's create_images_from_predictions: each (prediction id, tag ids) adds that stored
        prediction's image to the training set; each gets its own status (an unknown or unstored prediction:
        ErrorSource) and one bad entry fails only itself."""
        self.scope.require_write("add images")
        metadata = clean_metadata(metadata or {})
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            stored = {p.id for p in (uow.predictions.get(i) for i, _ in entries)
                      if p is not None and p.project_id == project_id and p.sha256}
        results = []
        for prediction_id, tag_ids in entries:
            if prediction_id not in stored:
                results.append(ImageResult(prediction_id, "ErrorSource",
                                           f"no stored prediction {prediction_id} in this project"))
                continue
            results.append(self.add_to_training(project_id, prediction_id, tag_ids, uploaded_by, metadata))
        return results
