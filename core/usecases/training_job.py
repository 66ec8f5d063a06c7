"""The training job: embed a queued iteration's snapshot, cross-validate, fit, store. Runs in a worker thread or a
worker process: it needs only `Deps` and the iteration id, no state of the process that queued it. Running it
again is safe: a run that finds the iteration Training (its first run was cut off) trains it again, and every
status change is a compare-and-set, so an iteration is completed once even if two runs overlap."""
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
from .base import Deps, collect_blobs

log = logging.getLogger(__name__)
RUNNING = [IterationStatus.Queued, IterationStatus.Training]


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
                        if uow.iterations.update_if(it, RUNNING):  # never over another run's Completed
                            uow.commit()
            finally:
                self.deps.progress.finish(self.iteration_id, "failed")

    def _train(self, started: float) -> None:
        with self.deps.uow() as uow:
            it = uow.iterations.get(self.iteration_id, with_snapshot=True)
            if it is None or it.status not in RUNNING:
                return  # deleted, or finished by an earlier run of this job
            project = uow.projects.get(it.project_id)
            if project is None:
                return
            if it.status == IterationStatus.Training:  # the run that set it was cut off (a worker died): start over
                log.warning("training %s was interrupted; training it again", self.iteration_id)
            it.status = IterationStatus.Training
            if not uow.iterations.update_if(it, RUNNING):
                return
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
            won = False
            if current is not None:  # else deleted while training
                current.status = IterationStatus.Completed
                current.backbone_id = backbone.id
                current.probe_key, current.evaluation_key = probe_key, eval_key
                current.performance = perf
                current.trained_at = utcnow()
                current.training_seconds = round(time.monotonic() - started, 3)
                # only from Training: a second run of this job that finishes later changes nothing
                won = uow.iterations.update_if(current, [IterationStatus.Training])
            if won:
                owner = uow.projects.get(it.project_id)
                if owner and not owner.default_iteration_id:
                    owner.default_iteration_id = self.iteration_id
                    uow.projects.update(owner)
                uow.commit()
        if not won:  # the files stay where the winning run's rows name the same content
            collect_blobs(self.deps, [probe_key, eval_key])
            return
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
