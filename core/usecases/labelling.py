"""Labelling help: suggested tags for untagged images (Custom Vision's smart labeler, classification) and the
mislabel audit of tagged ones; the answers people give (Confirm / Skip, Keep / Retag) are recorded per image.

The rules (orders and scores) are `core.labelling`'s; this module finds the iteration, the embeddings and the
current tags, and keeps the decisions."""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from ..labelling import audit_ranking, entropy, suggestion_order, tags_key
from ..model import (
    ClassificationType,
    DecisionKind,
    Image,
    Iteration,
    IterationStatus,
    LabelDecision,
    TagPrediction,
    TagType,
)
from ..ports import UnitOfWork
from .base import UseCase, completed, trained_backbone
from .images import Images
from .training_job import embed_blobs

MAX_SUGGEST_BATCH = 64  # Custom Vision's limit for suggest_tags_and_regions


@dataclass
class Suggestion:
    """One untagged image scored by an iteration: its tags, most probable first."""

    image: Image
    iteration: Iteration
    predictions: list[TagPrediction]
    uncertainty: float  # entropy of the prediction (Custom Vision's predictionUncertainty)
    skipped: bool = False  # someone pressed Skip on it (it goes after the others)

    @property
    def best(self) -> TagPrediction | None:
        return self.predictions[0] if self.predictions else None


@dataclass
class AuditItem:
    """A training image whose stored tags its out-of-fold prediction contradicts."""

    image: Image
    iteration: Iteration
    tag_ids: list[str]  # the stored tags (now)
    tag_names: list[str]
    suggested_ids: list[str]  # what the out-of-fold prediction prefers
    suggested_names: list[str]
    score: float  # suspicion in [0, 1], higher = more likely mislabelled
    probabilities: dict[str, float] = field(default_factory=dict)  # tag id -> out-of-fold probability


class Labelling(UseCase):
    # ------------------------------------------------------------- shared
    def _newest_completed(self, uow: UnitOfWork, project_id: str, iteration_id: str | None) -> Iteration:
        project = self.project(uow, project_id)
        if iteration_id:
            return completed(self.iteration(uow, project_id, iteration_id, with_snapshot=True), "suggest tags")
        done = [i for i in uow.iterations.list(project_id) if i.status == IterationStatus.Completed]
        if not done:
            raise errors.NoDefaultIteration(f"project '{project.name}' has no trained iteration yet; train it first")
        newest = max(done, key=lambda i: i.number)
        found = uow.iterations.get(newest.id, with_snapshot=True)
        return found if found is not None else newest

    # ------------------------------------------------------------- suggestions
    def suggest(self, project_id: str, iteration_id: str | None = None,
                image_ids: builtins.list[str] | None = None) -> builtins.list[Suggestion]:
        """Suggested tags for the project's untagged images (or the given images of the project) by the given
        iteration (default: the newest Completed one), in the order that saves labels (`core.labelling`); images
        someone skipped come last."""
        with self.deps.uow() as uow:
            it = self._newest_completed(uow, project_id, iteration_id)
            if image_ids is not None:
                wanted = list(dict.fromkeys(image_ids))
                images = [i for i in uow.images.get_many(wanted) if i.project_id == project_id]
            else:
                images = uow.images.list(project_id, tagged=False, oldest=True)
            decisions = uow.decisions.for_project(project_id, DecisionKind.Suggest)
        if not images:
            return []
        backbone = trained_backbone(self.deps, it)
        probe = self.deps.artifacts.probe(it.probe_key or "")
        X = embed_blobs(self.deps, backbone, [i.sha256 for i in images])
        P = probe.predict_proba(X)
        multilabel = it.classification_type == ClassificationType.Multilabel
        with self.deps.uow() as uow:
            known = uow.embeddings.get_many(backbone.id, list(dict.fromkeys(e.sha256 for e in it.snapshot)))
        labelled = np.stack(list(known.values())) if known else None
        order = [int(i) for i in suggestion_order(P, X, multilabel, labelled=labelled)]
        unc = entropy(P, multilabel)
        skipped = {i for i, img in enumerate(images)
                   if (d := decisions.get(img.id)) is not None and d.decision == "skip"
                   and d.tags_key == tags_key(img.tag_ids)}
        order = [i for i in order if i not in skipped] + [i for i in order if i in skipped]
        out = []
        for i in order:
            preds = sorted((TagPrediction(tid, name, float(p), TagType(tt))
                            for tid, name, p, tt in zip(it.tag_ids, it.tag_names, P[i], it.tag_types, strict=True)),
                           key=lambda p: -p.probability)
            out.append(Suggestion(images[i], it, preds, float(unc[i]), i in skipped))
        return out

    def confirm(self, project_id: str, image_id: str, tag_ids: builtins.list[str],
                decided_by: str | None = None) -> Image:
        """Tag an untagged image as suggested (or with another tag) and record the answer."""
        image = Images(self.deps, self.scope).set_tags(project_id, [image_id], tag_ids)[0]
        self._record(project_id, image, DecisionKind.Suggest, "confirm", decided_by)
        return image

    def skip(self, project_id: str, image_id: str, decided_by: str | None = None) -> Image:
        """Leave the image untagged; later suggestions list it after the others."""
        self.scope.require_write("answer suggestions")
        image = self._image(project_id, image_id)
        self._record(project_id, image, DecisionKind.Suggest, "skip", decided_by)
        return image

    # ------------------------------------------------------------- audit
    def audit(self, project_id: str, iteration_id: str | None = None,
              include_decided: bool = False) -> builtins.list[AuditItem]:
        """The training images of the newest Completed iteration (or the given one) still in the project, ranked by
        how much their out-of-fold prediction contradicts the tags they carry now, most suspicious first. Images
        someone answered Keep / Retag for with their current tags are left out (unless `include_decided`)."""
        with self.deps.uow() as uow:
            it = self._newest_completed(uow, project_id, iteration_id)
            if not it.evaluation_key:
                raise errors.IterationNotCompleted(f"iteration {it.number} has no out-of-fold predictions")
            ev = self.deps.artifacts.evaluation(it.evaluation_key)
            images = {i.id: i for i in uow.images.get_many(list(ev.image_ids)) if i.project_id == project_id}
            decisions = uow.decisions.for_project(project_id, DecisionKind.Audit)
            names = {t.id: t.name for t in uow.tags.list(project_id)}
        col = {tid: c for c, tid in enumerate(ev.tag_ids)}
        rows, Y = [], []
        for r, image_id in enumerate(ev.image_ids):
            img = images.get(image_id)
            if img is None or not img.tag_ids or any(t not in col for t in img.tag_ids):
                continue  # deleted, untagged since, or carrying a tag this iteration never learned
            d = decisions.get(image_id)
            if d is not None and d.tags_key == tags_key(img.tag_ids) and not include_decided:
                continue
            y = np.zeros(len(ev.tag_ids), np.float32)
            y[[col[t] for t in img.tag_ids]] = 1
            rows.append(r)
            Y.append(y)
        if not rows:
            return []
        P = ev.oof[rows]
        out = []
        for e in audit_ranking(np.stack(Y), P, ev.multilabel):
            img = images[ev.image_ids[rows[e.row]]]
            suggested = [ev.tag_ids[c] for c in e.suggested]
            out.append(AuditItem(
                img, it, list(img.tag_ids), [names.get(t, t) for t in img.tag_ids], suggested,
                [names.get(t, ev.tag_names[col[t]]) for t in suggested], e.score,
                {tid: float(P[e.row, c]) for c, tid in enumerate(ev.tag_ids)}))
        return out

    def keep(self, project_id: str, image_id: str, decided_by: str | None = None) -> Image:
        """The stored tags are right: the audit does not ask about this image again until its tags change."""
        self.scope.require_write("answer the audit")
        image = self._image(project_id, image_id)
        self._record(project_id, image, DecisionKind.Audit, "keep", decided_by)
        return image

    def retag(self, project_id: str, image_id: str, tag_ids: builtins.list[str],
              decided_by: str | None = None) -> Image:
        """Replace the image's tags (the audit's Retag) and record the answer for the new tags."""
        image = Images(self.deps, self.scope).set_tags(project_id, [image_id], tag_ids)[0]
        self._record(project_id, image, DecisionKind.Audit, "retag", decided_by)
        return image

    # ------------------------------------------------------------- helpers
    def _image(self, project_id: str, image_id: str) -> Image:
        found = Images(self.deps, self.scope).get_many(project_id, [image_id])
        if not found:
            raise errors.NotFound(f"no image {image_id} in this project")
        return found[0]

    def _record(self, project_id: str, image: Image, kind: DecisionKind, decision: str,
                decided_by: str | None) -> None:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            uow.decisions.put(LabelDecision(project_id, image.id, kind, tags_key(image.tag_ids), decision,
                                            decided_by))
            uow.commit()
