"""Zero-shot classification from tag names: a CLIP domain's project answers before its first training.

The image embedding and the tags' text embeddings (each the mean of the domain's prompt templates, see
`ClipBackbone.text_features`) are L2-normalised; their cosine similarities, times CLIP's logit scale, are the
logits. Both classification types get the softmax over the Regular tags (the Negative tag has no name that
describes an image, so it takes no part), so probabilities sum to 1:

- Multiclass: Azure's meaning exactly (one tag per image).
- Multilabel: CLIP's similarities are not calibrated per tag (no bias was ever learnt for "present"), so an
  independent sigmoid per tag would be a number without meaning. The softmax says which tags fit the image
  best, relative to each other; several tags that fit share the mass. The first trained iteration gives
  Multilabel its per-tag probabilities.

Text embeddings are cached per (backbone object, tag name) in the process: a renamed or added tag embeds only
its own name, and a backbone that is replaced (other weights) starts an empty cache.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .backbones.base import Backbone
from .model import Tag, TagPrediction, TagType

DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained logit scale (exp(4.6052)), clamped there in training
MIN_TAGS = 2  # a softmax over one tag is 1.0 whatever the image


def supports(backbone: Backbone) -> bool:
    """Whether the backbone has a text tower (CLIP), so its projects can answer from tag names."""
    return backbone.zero_shot


def regular_tags(tags: Sequence[Tag]) -> list[Tag]:
    """The tags zero-shot answers over: the Regular ones, in a stable order."""
    return sorted((t for t in tags if t.type == TagType.Regular), key=lambda t: (t.name.lower(), t.id))


def probabilities(image_embedding: npt.NDArray[np.float32], text_embeddings: npt.NDArray[np.float32],
                  logit_scale: float = DEFAULT_LOGIT_SCALE) -> npt.NDArray[np.float64]:
    """Softmax over `scale * cos(image, text_k)`: (n, dim) images × (k, dim) texts -> (n, k), rows sum to 1."""
    x = np.atleast_2d(np.asarray(image_embedding, np.float64))
    t = np.atleast_2d(np.asarray(text_embeddings, np.float64))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    logits = logit_scale * (x @ t.T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def tag_predictions(tags: Sequence[Tag], probs: npt.NDArray[np.float64]) -> list[TagPrediction]:
    """One row of `probabilities` as predictions, most probable first (`tags` in the order of the text rows)."""
    preds = [TagPrediction(t.id, t.name, float(p), t.type) for t, p in zip(tags, probs, strict=True)]
    return sorted(preds, key=lambda p: -p.probability)


class TextCache:
    """Text embeddings per (backbone, tag name), computed once per process; thread-safe."""

    def __init__(self) -> None:
        self._by_backbone: weakref.WeakKeyDictionary[Backbone, dict[str, npt.NDArray[np.float32]]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def features(self, backbone: Backbone, names: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            known = self._by_backbone.setdefault(backbone, {})
            missing = [n for n in dict.fromkeys(names) if n not in known]
        if missing:
            computed = backbone.text_features(missing)
            with self._lock:
                known.update(zip(missing, computed, strict=True))
        return np.stack([known[n] for n in names])

    def cached(self, backbone: Backbone) -> int:
        with self._lock:
            return len(self._by_backbone.get(backbone, {}))


TEXT_CACHE = TextCache()
