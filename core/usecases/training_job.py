"""The training job: embed a queued iteration's snapshot, cross-validate, fit, store. Runs in a worker thread
(or, later, a worker process): it needs only `Deps` and the iteration id, no state of the process that queued it."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import numpy as np

from .. import errors
from ..backbones import Backbone
from ..embedding import Embedder
from ..evaluation import Evaluation, performance
from ..model import ClassificationType, IterationStatus, utcnow
from ..probe import LinearProbeCV
from ..training import label_matrix
from ..unknown import UnknownScorer, with_scorer
from .base import Deps

log = logging.getLogger(__name__)


class TrainingJob:
    def __init__(self, deps: Deps, iteration_id: str):
        self.deps = deps
        self.iteration_id = iteration_id

    def _progress(self, stage: str, done: int = 0, total: int = 0) -> None:
        self.deps.progress.update(self.iteration_id, stage, done, total)

    def run(self) -> None:
        started = time.monotonic()
        try:
            self._train(started)
        except Exception as e:  # noqa: BLE001 - any failure marks the iteration Failed with its reason
            log.exception("training %s failed", self.iteration_id)
            reason = e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}"
            try:
                with self.deps.uow() as uow:
                    it = uow.iterations.get(self.iteration_id)
                    if it:
                        it.status = IterationStatus.Failed
                        it.failure_reason = reason
                        it.training_seconds = round(time.monotonic() - started, 3)
                        uow.iterations.update(it)
                        uow.commit()
            finally:
                self.deps.progress.finish(self.iteration_id, "failed")

    def _train(self, started: float) -> None:
        with self.deps.uow() as uow:
            it = uow.iterations.get(self.iteration_id, with_snapshot=True)
            if it is None or it.status != IterationStatus.Queued:
                return
            project = uow.projects.get(it.project_id)
            if project is None:
                return
            it.status = IterationStatus.Training
            uow.iterations.update(it)
            uow.commit()
        self._progress("loading model")
        backbone = self.deps.backbones.for_domain(it.domain)
        X = embed_blobs(self.deps, backbone, [e.sha256 for e in it.snapshot],
                        lambda d, t: self._progress("embedding", d, t))
        Y = label_matrix(it.snapshot, it.tag_ids)
        multilabel = it.classification_type == ClassificationType.Multilabel
        self._progress("evaluating")
        cv = LinearProbeCV(multilabel=multilabel, progress=self._progress).fit(X, Y)
        probe = cv.best_estimator_
        self._progress("saving")
        ev = Evaluation([e.image_id for e in it.snapshot], Y, cv.oof_, cv.folds_, it.tag_ids, it.tag_names,
                        [t.value for t in it.tag_types], multilabel, cv.C_)
        # the unknown score, calibrated on the out-of-fold predictions just computed, travels in the probe's blob
        scorer = UnknownScorer().fit(X, cv.oof_, cv.folds_)
        probe_key = self.deps.blobs.put(with_scorer(probe.to_bytes(), scorer))
        eval_key = self.deps.blobs.put(ev.to_bytes())
        perf = performance(ev, project.threshold)
        perf["warnings"] = (it.performance or {}).get("warnings", [])
        with self.deps.uow() as uow:
            current = uow.iterations.get(self.iteration_id)
            if current is None:  # deleted while training
                return
            current.status = IterationStatus.Completed
            current.backbone_id = backbone.id
            current.probe_key, current.evaluation_key = probe_key, eval_key
            current.performance = perf
            current.trained_at = utcnow()
            current.training_seconds = round(time.monotonic() - started, 3)
            uow.iterations.update(current)
            owner = uow.projects.get(current.project_id)
            if owner and not owner.default_iteration_id:
                owner.default_iteration_id = current.id
                uow.projects.update(owner)
            uow.commit()
        self.deps.progress.finish(self.iteration_id, "done")


def embed_blobs(deps: Deps, backbone: Backbone, sha256s: list[str],
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Vectors for blobs, from the embedding cache where present; the rest are embedded and cached as they come."""
    unique = list(dict.fromkeys(sha256s))
    with deps.uow() as uow:
        cached = uow.embeddings.get_many(backbone.id, unique)
    missing = [s for s in unique if s not in cached]
    if missing:
        pending: dict[str, np.ndarray] = {}

        def flush() -> None:
            if pending:
                with deps.uow() as uow:
                    uow.embeddings.put_many(backbone.id, dict(pending))
                    uow.commit()
                pending.clear()

        def on_batch(start: int, vecs: np.ndarray) -> None:
            for j, v in enumerate(vecs):
                cached[missing[start + j]] = v
                pending[missing[start + j]] = v
            if len(pending) >= 256:
                flush()

        embedder = Embedder(backbone, batch_size=deps.embed_batch_size)
        embedder.embed([functools.partial(deps.blobs.get, s) for s in missing], progress=progress, on_batch=on_batch)
        flush()
        deps.stats.add(len(missing))
    elif progress:
        progress(len(unique), len(unique))
    if not sha256s:
        return np.zeros((0, backbone.dim), np.float32)
    return np.stack([cached[s] for s in sha256s]).astype(np.float32)
