"""Benchmark 1: embedding throughput, encoded bytes -> vectors, next to the raw forward pass."""
from __future__ import annotations

import os
import time

import numpy as np

from .common import Config, load_average, model_dir, rate, tuxpaint_dataset, tuxpaint_photos


def _raw_forward(backbone, tensors: np.ndarray, batch_sizes, min_seconds: float, min_images: int,
                 rounds: int = 2) -> dict[int, float]:
    """Images/s of backbone.forward on pre-decoded, preprocessed tensors, per batch size (best of `rounds`)."""
    out = {}
    for bs in batch_sizes:
        batch = np.ascontiguousarray(tensors[np.arange(bs) % len(tensors)])
        backbone.forward(batch)  # warm-up (allocations, kernel selection)
        best = 0.0
        for _ in range(rounds):
            n, t0 = 0, time.perf_counter()
            while n < min_images or time.perf_counter() - t0 < min_seconds:
                backbone.forward(batch)
                n += bs
            best = max(best, rate(n, time.perf_counter() - t0))
        out[bs] = best
    return out


def _decode_cpu_ms(backbone, items: list[bytes]) -> float:
    """CPU milliseconds per image for what the decoding threads do (decode, resize, crop), on one thread."""
    from core.embedding import Embedder

    prepare = Embedder(backbone, workers=1)._prepare
    for b in items[:4]:
        prepare(lambda b=b: b)
    t0 = time.process_time()
    for b in items:
        prepare(lambda b=b: b)
    return (time.process_time() - t0) / len(items) * 1000


def _spinning_onnx_forward(backbone):
    """The same ONNX graph in a session whose idle threads spin (ONNX Runtime's default): a little faster
    for one model alone, which is what a raw-forward reference should get."""
    from core.backbones.base import onnx_session

    session = onnx_session(backbone.onnx_path(), backbone._threads, spinning=True)

    class Spinning:
        def forward(self, batch):
            return session.run(None, {"image": batch})[0]

    return Spinning()


def _per_core_forward(backbone, tensors: np.ndarray, batch_sizes, min_seconds: float, min_images: int,
                      rounds: int = 2) -> dict[int, float]:
    """Images/s of one single-threaded ONNX Runtime session run from one thread per core at once (the
    arrangement the Embedder's workers use), on pre-decoded tensors."""
    import threading

    from core.backbones.base import onnx_session

    session = onnx_session(backbone.onnx_path(), 1)
    cores = os.cpu_count() or 1
    out = {}
    for bs in batch_sizes:
        batch = np.ascontiguousarray(tensors[np.arange(bs) % len(tensors)])
        session.run(None, {"image": batch})
        best = 0.0
        for _ in range(rounds):
            counts = [0] * cores
            stop = time.perf_counter() + min_seconds

            def work(i: int, counts=counts, stop=stop, batch=batch, bs=bs) -> None:
                while counts[i] * cores < min_images or time.perf_counter() < stop:
                    session.run(None, {"image": batch})
                    counts[i] += bs

            threads = [threading.Thread(target=work, args=(i,)) for i in range(cores)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            best = max(best, rate(sum(counts), time.perf_counter() - t0))
        out[bs] = best
    return out


def _end_to_end(backbone, items: list[bytes], batch_sizes, repeats: int) -> dict[int, float]:
    """Images/s of Embedder.embed from in-memory encoded bytes to stored vectors, per batch size."""
    from core.embedding import Embedder

    out = {}
    for bs in batch_sizes:
        store: dict[int, np.ndarray] = {}

        def on_batch(start: int, vecs: np.ndarray, store=store):
            for j, v in enumerate(vecs):
                store[start + j] = v

        embedder = Embedder(backbone, batch_size=bs)
        embedder.embed([(lambda b=b: b) for b in items[:max(bs, 8)]])  # warm-up
        best = 0.0
        for _ in range(repeats):
            store.clear()
            t0 = time.perf_counter()
            embedder.embed([(lambda b=b: b) for b in items], on_batch=on_batch)
            best = max(best, rate(len(items), time.perf_counter() - t0))
        assert len(store) == len(items)
        out[bs] = best
    return out


def _service_path(backbone_provider, items: list[bytes], tmp) -> float:
    """Images/s through the training job's embed_blobs: blob store reads, embedding, SQLite cache writes."""
    from core.usecases import Deps, embed_blobs
    from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory

    engine = make_engine(f"sqlite:///{tmp / 'embed.db'}")
    migrate(engine)
    blobs = LocalBlobStore(tmp / "blobs")
    deps = Deps(unit_of_work_factory(engine), blobs, backbone_provider)
    keys = [blobs.put(b) for b in items]
    backbone = backbone_provider.for_domain("Compact")
    t0 = time.perf_counter()
    X = embed_blobs(deps, backbone, keys)
    seconds = time.perf_counter() - t0
    assert X.shape[0] == len(items) and deps.stats.images == len(set(keys))
    engine.dispose()
    return rate(len(set(keys)), seconds)


def _case(name: str, backbone, sets: dict[str, list[bytes]], batch_sizes, raw_batch_sizes, cfg: Config,
          min_seconds: float) -> dict:
    from core.images import decode_rgb

    first = next(iter(sets.values()))
    size = backbone.preprocessing.size
    tensors = np.stack([backbone.preprocess(decode_rgb(b, min_side=size)) for b in first[:32]])
    min_images, rounds = cfg.pick(64, 16), cfg.pick(2, 1)
    raws = {"backbone.forward": _raw_forward(backbone, tensors, raw_batch_sizes, min_seconds, min_images, rounds)}
    if getattr(backbone, "runtime", None) == "onnx":
        raws["onnx, spinning threads"] = _raw_forward(_spinning_onnx_forward(backbone), tensors, raw_batch_sizes,
                                                      min_seconds, min_images, rounds)
        if (os.cpu_count() or 1) > 1:
            raws["onnx, one single-threaded run per core"] = _per_core_forward(
                backbone, tensors, raw_batch_sizes, min_seconds, min_images, rounds)
    sets_out = {}
    for set_name, items in sets.items():
        e2e = _end_to_end(backbone, items, batch_sizes, repeats=cfg.pick(2, 1))
        # the raw pass again right after, so that a burst of load on this shared machine during either
        # measurement does not decide the ratio (each side keeps its best)
        own = raws["backbone.forward"]
        bs = max(own, key=own.get)
        own[bs] = max(own[bs], _raw_forward(backbone, tensors, [bs], min_seconds, min_images, rounds)[bs])
        best_bs = max(e2e, key=e2e.get)
        sets_out[set_name] = {"images": len(items), "e2e": e2e, "best_bs": best_bs,
                              "decode_ms": _decode_cpu_ms(backbone, items)}
    best_name, best_raw_bs = max(((n, b) for n, r in raws.items() for b in r), key=lambda nb: raws[nb[0]][nb[1]])
    best_raw = raws[best_name][best_raw_bs]
    fwd_ms = (os.cpu_count() or 1) / best_raw * 1000  # CPU per image when the forward pass has every core
    result = {"backbone": backbone.id, "runtime": getattr(backbone, "runtime", "torch"),
              "raw_forward_images_per_s": {n: {str(k): round(v, 1) for k, v in r.items()} for n, r in raws.items()},
              "raw_best": {"how": best_name, "batch_size": best_raw_bs, "images_per_s": round(best_raw, 1)},
              "forward_cpu_ms_per_image": round(fwd_ms, 2), "sets": {}, "load_average": load_average()}
    for set_name, x in sets_out.items():
        ips = x["e2e"][x["best_bs"]]
        result["sets"][set_name] = {
            "images": x["images"],
            "end_to_end_images_per_s": {str(k): round(v, 1) for k, v in x["e2e"].items()},
            "best": {"batch_size": x["best_bs"], "images_per_s": round(ips, 1)},
            "ratio_to_raw": round(ips / best_raw, 3),
            "decode_cpu_ms_per_image": round(x["decode_ms"], 2),
            # with every core busy, images/s cannot exceed cores / (CPU per image for decoding + forward)
            "cpu_bound_ratio_ceiling": round(fwd_ms / (fwd_ms + x["decode_ms"]), 3),
        }
    return result


def run(cfg: Config, tmp) -> dict:
    from core.backbones import BackboneProvider, BackboneSettings, ClipBackbone

    settings = BackboneSettings(cache_dir=str(model_dir()))
    provider = BackboneProvider(settings)
    stamps, _, _ = tuxpaint_dataset()
    photos = tuxpaint_photos()
    stamps = stamps[:cfg.pick(len(stamps), 96)]
    photos = (photos * cfg.pick(8, 2))[:cfg.pick(152, 38)]
    sets = {k: v for k, v in (("tuxpaint stamps (PNG)", stamps), ("photos (JPEG, 0.3-1.1 MP)", photos)) if v}
    results = {}
    compact = provider.for_domain("Compact")
    results["Compact"] = _case("Compact", compact, sets, cfg.pick((1, 8, 16, 32), (8, 16)),
                               cfg.pick((1, 8, 16, 32), (1, 8)), cfg, min_seconds=cfg.pick(3.0, 0.8))
    first = next(iter(sets.values()))
    results["Compact"]["service_path_images_per_s"] = round(_service_path(provider, first, tmp), 1)
    clip = ClipBackbone("General", settings=settings, random_init_for_tests=True)
    clip_sets = {k: v[:cfg.pick(96, 16)] for k, v in sets.items()}
    results["CLIP ViT-B-32"] = _case("CLIP ViT-B-32", clip, clip_sets, cfg.pick((8, 16, 32), (8,)),
                                     cfg.pick((8, 16, 32), (8,)), cfg, min_seconds=cfg.pick(4.0, 1.0))
    results["CLIP ViT-B-32"]["note"] = "random weights (throughput does not depend on their values)"
    return results
