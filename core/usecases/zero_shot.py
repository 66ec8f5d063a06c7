"""Zero-shot answers: a project of a CLIP domain with tags but no trained iteration classifies from its tag names
(core.zero_shot has the maths). The first Completed iteration becomes the default and replaces it.

Zero-shot predictions are never stored: a stored prediction names the iteration that made it (Custom Vision's
`iteration` field, and the key that retention, queries and "add to training" work by), and here there is none.
The answer says `stored: false`; Slack therefore offers no Correct / Wrong tag buttons on it (post the image
with `tag: NAME` to label it)."""
from __future__ import annotations

from .. import errors
from ..backbones import zero_shot as domain_answers_zero_shot
from ..embedding import Embedder
from ..model import Prediction, Project
from ..zero_shot import MIN_TAGS, TEXT_CACHE, probabilities, regular_tags, supports, tag_predictions
from .base import UseCase


def untrained(project: Project) -> errors.NoDefaultIteration:
    return errors.NoDefaultIteration(f"project '{project.name}' has no trained iteration yet; train it first")


class ZeroShot(UseCase):
    def applies(self, project: Project, iteration_id: str | None, publish_name: str | None) -> bool:
        """Whether a prediction request is answered zero-shot: it names no iteration nor publish name, and the
        project has no default iteration (the Prediction API always names a published iteration, so it keeps
        Azure's error)."""
        return iteration_id is None and publish_name is None and not project.default_iteration_id

    def predict(self, project: Project, data: bytes) -> Prediction:
        """Classify one (already validated) image from the project's Regular tag names; NoDefaultIteration when
        the domain has no text tower (Compact), it has fewer than 2 such tags, or its weights are unavailable
        (checked in that order: the cheap answers before a model loads)."""
        if not domain_answers_zero_shot(project.domain):  # decided by the registry, without loading the model
            raise untrained(project)
        with self.deps.uow() as uow:
            tags = regular_tags(uow.tags.list(project.id))
        if len(tags) < MIN_TAGS:
            raise errors.NoDefaultIteration(
                f"{untrained(project).message}, or give it at least {MIN_TAGS} tags: {project.domain.value} "
                "projects answer from their tag names until then")
        try:
            backbone = self.deps.backbones.for_domain(project.domain)
        except errors.BackboneUnavailable as e:
            raise errors.NoDefaultIteration(f"{untrained(project).message} (a zero-shot answer from the tag names "
                                            f"needs the {project.domain.value} weights: {e.message})") from e
        if not supports(backbone):
            raise untrained(project)
        text = TEXT_CACHE.features(backbone, [t.name for t in tags])
        x = Embedder(backbone, batch_size=1, workers=1).embed_bytes([data])
        probs = probabilities(x, text, backbone.logit_scale())[0]
        return Prediction(project_id=project.id, iteration_id=None, predictions=tag_predictions(tags, probs),
                          threshold=project.threshold, zero_shot=True)
