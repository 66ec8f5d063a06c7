"""Batched embedding with decoding in parallel to the model."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np

from .backbones.base import Backbone
from .images import decode_rgb

Progress = Callable[[int, int], None]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder:
    """Turns encoded image bytes into L2-normalised embeddings.

    Decoding and preprocessing run on a thread pool (Pillow releases the GIL) while the model
    runs on the previous batch; at most `prefetch` batches wait decoded, bounding memory.
    """

    def __init__(self, backbone: Backbone, batch_size: int = 16, workers: int | None = None, prefetch: int = 2):
        self.backbone = backbone
        self.batch_size = batch_size
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.prefetch = prefetch

    def _prepare(self, loader: Callable[[], bytes]) -> np.ndarray:
        img = decode_rgb(loader(), min_side=self.backbone.preprocessing.size)
        return self.backbone.preprocess(img)

    def _batches(self, loaders: Sequence[Callable[[], bytes]], pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
        pending: deque = deque()
        chunks = [loaders[i:i + self.batch_size] for i in range(0, len(loaders), self.batch_size)]
        it = iter(chunks)
        for chunk in it:
            pending.append([pool.submit(self._prepare, ld) for ld in chunk])
            if len(pending) > self.prefetch:
                break
        while pending:
            futures = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append([pool.submit(self._prepare, ld) for ld in nxt])
            yield np.stack([f.result() for f in futures])

    def embed(self, loaders: Sequence[Callable[[], bytes]], progress: Progress | None = None,
              on_batch: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
        """Embed images given as zero-argument byte loaders; `on_batch(start, vectors)` sees each batch."""
        total = len(loaders)
        if total == 0:
            return np.zeros((0, self.backbone.dim), np.float32)
        out = np.empty((total, self.backbone.dim), np.float32)
        done = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            for batch in self._batches(loaders, pool):
                vecs = l2_normalise(self.backbone.forward(batch))
                out[done:done + len(vecs)] = vecs
                if on_batch:
                    on_batch(done, vecs)
                done += len(vecs)
                if progress:
                    progress(done, total)
        return out

    def embed_bytes(self, items: Sequence[bytes]) -> np.ndarray:
        return self.embed([(lambda b=b: b) for b in items])
