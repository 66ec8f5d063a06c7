"""Batched embedding with decoding in parallel to the model."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from .backbones.base import Backbone, Preprocessing, SerialUint8Forward
from .images import decode_rgb

Progress = Callable[[int, int], None]
Vectors = npt.NDArray[np.float32]
OnBatch = Callable[[int, Vectors], None]
# What the decoding workers hand over: uint8 (N, S, S, 3) pixels when the Embedder normalises (or the model does),
# the float32 (N, 3, S, S) of the backbone's own `preprocess` otherwise; which one is decided at run time.
Batch = npt.NDArray[Any]
Loader = Callable[[], bytes]
# images per model call when each worker runs its own single-threaded model: one image per call measured
# fastest on 2 cores (a single-threaded ONNX Runtime session is quickest per image at batch 1; +8 % vs 8)
PIPELINE_CHUNK = 1


def l2_normalise(x: npt.ArrayLike) -> Vectors:
    x = np.asarray(x, dtype=np.float32)
    norms: Vectors = np.linalg.norm(x, axis=1, keepdims=True)
    # float32 / float32; numpy's stubs lose the dtype in np.maximum and then guess float64
    return cast(Vectors, x / np.maximum(norms, 1e-12))


def normalise_batch(pixels: npt.NDArray[np.uint8], p: Preprocessing) -> npt.NDArray[np.float32]:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32, as `Preprocessing.__call__` does for one image
    ((x / 255 - mean) / std, folded into one multiply-add per channel)."""
    std = np.asarray(p.std, np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-np.asarray(p.mean, np.float64) / std).astype(np.float32)
    out = np.empty((pixels.shape[0], 3, pixels.shape[1], pixels.shape[2]), np.float32)
    for c in range(3):
        np.multiply(pixels[..., c], scale[c], out=out[:, c], dtype=np.float32)
        out[:, c] += shift[c]
    return out


class Embedder:
    """Turns encoded image bytes into L2-normalised embeddings.

    Decoding, resizing and cropping run on a thread pool (Pillow releases the GIL) while the model runs on
    the previous batch; at most `prefetch` batches wait decoded, bounding memory. Workers hand over uint8
    pixels; the batch is normalised in one vectorised step, or inside the model's own graph when the
    backbone offers `forward_uint8` (EfficientNet-Lite0 on ONNX Runtime), which saves the CPU that a
    float copy per image would cost. A backbone that overrides `preprocess` gets exactly that instead.
    """

    def __init__(self, backbone: Backbone, batch_size: int = 16, workers: int | None = None, prefetch: int = 2):
        self.backbone = backbone
        self.batch_size = batch_size
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.prefetch = prefetch
        p = getattr(backbone, "preprocessing", None)
        self._uint8 = (isinstance(p, Preprocessing) and type(p).__call__ is Preprocessing.__call__
                       and type(backbone).preprocess is Backbone.preprocess)

    def _prepare(self, loader: Loader) -> Batch:
        img = decode_rgb(loader(), min_side=self.backbone.preprocessing.size)
        if self._uint8:
            return self.backbone.preprocessing.crop(img)
        return self.backbone.preprocess(img)

    def _forward(self, batch: Batch) -> Vectors:
        if not self._uint8:
            return self.backbone.forward(batch)
        forward_uint8: Callable[[npt.NDArray[np.uint8]], Vectors] | None = getattr(self.backbone, "forward_uint8", None)
        if forward_uint8 is not None:
            return forward_uint8(batch)
        return self.backbone.forward(normalise_batch(batch, self.backbone.preprocessing))

    def _batches(self, loaders: Sequence[Loader], pool: ThreadPoolExecutor) -> Iterator[Batch]:
        pending: deque[list[Future[Batch]]] = deque()
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

    def embed(self, loaders: Sequence[Loader], progress: Progress | None = None,
              on_batch: OnBatch | None = None) -> Vectors:
        """Embed images given as zero-argument byte loaders; `on_batch(start, vectors)` sees each batch."""
        total = len(loaders)
        if total == 0:
            return np.zeros((0, self.backbone.dim), np.float32)
        out = np.empty((total, self.backbone.dim), np.float32)
        if total == 1 or self.workers == 1 and total <= self.batch_size:
            # one small batch (a prediction): decoding on this thread beats a pool's start-up and hand-over
            batches: Iterator[Batch] = iter([np.stack([self._prepare(ld) for ld in loaders])])
            return self._collect(self._forwarded(batches), out, progress, on_batch)
        pipelined = self._uint8 and self.workers > 1 and hasattr(self.backbone, "forward_uint8_serial")
        with ThreadPoolExecutor(self.workers, thread_name_prefix="embed") as pool:
            results = self._pipelined(loaders, pool) if pipelined else self._forwarded(self._batches(loaders, pool))
            return self._collect(results, out, progress, on_batch)

    def _forwarded(self, batches: Iterator[Batch]) -> Iterator[tuple[int, Vectors]]:
        start = 0
        for batch in batches:
            vecs = l2_normalise(self._forward(batch))
            yield start, vecs
            start += len(vecs)

    def _pipelined(self, loaders: Sequence[Loader], pool: ThreadPoolExecutor) -> Iterator[tuple[int, Vectors]]:
        """Each worker decodes a small chunk and runs the model on it with one thread, on its own core.

        On a few cores this beats decoding beside a model that wants every core: the two compete for
        the cores, and a multi-threaded forward pass waits for whichever of its threads was preempted
        (measured on 2 cores: +15 % images/s)."""
        size = max(1, min(self.batch_size, PIPELINE_CHUNK))
        it = iter([(i, loaders[i:i + size]) for i in range(0, len(loaders), size)])
        forward = cast(SerialUint8Forward, self.backbone).forward_uint8_serial  # embed checked that it has it

        def work(chunk: Sequence[Loader]) -> Vectors:
            return l2_normalise(forward(np.stack([self._prepare(ld) for ld in chunk])))

        pending: deque[tuple[int, Future[Vectors]]] = deque()
        try:
            for start, chunk in it:
                pending.append((start, pool.submit(work, chunk)))
                if len(pending) >= self.workers + self.prefetch:
                    break
            while pending:
                start, fut = pending.popleft()
                vecs = fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], pool.submit(work, nxt[1])))
                yield start, vecs
        finally:
            for _, fut in pending:
                fut.cancel()

    @staticmethod
    def _collect(results: Iterable[tuple[int, Vectors]], out: Vectors, progress: Progress | None,
                 on_batch: OnBatch | None) -> Vectors:
        done, total = 0, len(out)
        for start, vecs in results:
            out[start:start + len(vecs)] = vecs
            if on_batch:
                on_batch(start, vecs)
            done += len(vecs)
            if progress:
                progress(done, total)
        return out

    def embed_bytes(self, items: Sequence[bytes]) -> Vectors:
        return self.embed([_loader(b) for b in items])


def _loader(data: bytes) -> Loader:
    return lambda: data
