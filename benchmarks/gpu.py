"""Benchmark 1 on a CUDA GPU: `python -m benchmarks.gpu` (one short, self-contained run, < 4 minutes).

For CLIP ViT-B-32 (random weights: throughput does not depend on their values) and Compact (EfficientNet-Lite0,
its real weights), in fp16 with large batches: the raw forward pass on tensors already on the GPU, and end to end
from encoded image bytes (decoded and cropped by cvbot's own code on CPU threads, uint8 pixels copied to the GPU,
normalised there) to L2-normalised vectors back in host memory. Names the card. Writes `$OUT/gpu.json` when
`$OUT` is set, else `benchmarks/gpu.json`. Without CUDA it says so, writes that, and exits 0.
"""
from __future__ import annotations

import io
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 210.0  # stop starting new measurements after this (the whole run must stay under 4 minutes)


def _out_path() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu.json" if out else ROOT / "benchmarks" / "gpu.json"


def _write(result: dict) -> Path:
    path = _out_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path


def _images(n: int) -> tuple[list[bytes], str]:
    """Real images when Debian's tuxpaint packages are installed (stamps and template photos), else
    photo-sized synthetic JPEGs."""
    stamps = sorted(Path("/usr/share/tuxpaint/stamps").rglob("*.png"))[:600]
    photos = sorted(Path("/usr/share/tuxpaint/templates").glob("*.jpg"))
    if stamps or photos:
        pool = [p.read_bytes() for p in stamps + photos]
        return [pool[i % len(pool)] for i in range(n)], f"Tux Paint stamps and photos ({len(pool)} distinct files)"
    from PIL import Image

    rng = np.random.default_rng(0)
    pool = []
    for i in range(16):
        arr = (rng.random((480 + 16 * i, 640, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    return [pool[i % len(pool)] for i in range(n)], "synthetic 640 x 480-720 JPEGs (Tux Paint not installed)"


def _sync(torch, device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _raw(torch, forward, size: int, batch_sizes, seconds: float, device: str = "cuda", dtype=None) -> dict[str, float]:
    dtype = dtype or torch.float16
    out = {}
    for bs in batch_sizes:
        x = torch.randn(bs, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        for _ in range(3):
            forward(x)
        _sync(torch, device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            forward(x)
            n += bs
        _sync(torch, device)
        out[str(bs)] = round(n / (time.perf_counter() - t0), 1)
    return out


def _end_to_end(torch, forward, preprocessing, items: list[bytes], batch: int, workers: int, device: str = "cuda",
                dtype=None) -> float:
    """Decode + crop on `workers` CPU threads (cvbot's code), uint8 to the GPU, normalise there, fp16 forward,
    L2-normalise, vectors back to the host. Decoding of the next batch overlaps the GPU work."""
    from core.images import decode_rgb

    dtype = dtype or torch.float16
    size = preprocessing.size
    mean = torch.tensor(preprocessing.mean, device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(preprocessing.std, device=device, dtype=dtype).view(1, 3, 1, 1) * 255

    def prepare(b: bytes) -> np.ndarray:
        return preprocessing.crop(decode_rgb(b, min_side=size))

    chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
    host = torch.empty((batch, size, size, 3), dtype=torch.uint8)
    if device == "cuda":
        host = host.pin_memory()
    vectors = []
    with ThreadPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        pending = pool.map(prepare, chunks[0])
        for i in range(len(chunks)):
            pixels = np.stack(list(pending))
            if i + 1 < len(chunks):
                pending = pool.map(prepare, chunks[i + 1])  # the CPU decodes the next batch meanwhile
            n = len(pixels)
            host[:n].copy_(torch.from_numpy(pixels))
            x = host[:n].to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            f = forward(x).float()
            vectors.append((f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu())
        _sync(torch, device)
        seconds = time.perf_counter() - t0
    assert sum(len(v) for v in vectors) == len(items)
    return round(len(items) / seconds, 1)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    result: dict = {"benchmark": "issue #5, benchmark 1 on GPU", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "host": {"python": platform.python_version(), "cpu_cores": os.cpu_count()}}
    try:
        import torch
    except ImportError as e:
        result["skipped"] = f"PyTorch is not installed ({e}): nothing measured"
        print(result["skipped"], file=sys.stderr)
        print(f"wrote {_write(result)}")
        return 0
    result["host"]["torch"] = torch.__version__
    if not torch.cuda.is_available():
        result["skipped"] = ("CUDA is not available (torch.cuda.is_available() is False): nothing measured. Run this "
                             "on a machine with an NVIDIA GPU and a CUDA build of PyTorch.")
        print(result["skipped"], file=sys.stderr)
        print(f"wrote {_write(result)}")
        return 0
    sys.path.insert(0, str(ROOT))
    torch.backends.cudnn.benchmark = True
    props = torch.cuda.get_device_properties(0)
    result["card"] = {"name": torch.cuda.get_device_name(0), "memory_gb": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version()}
    print(f"GPU: {result['card']['name']}", flush=True)
    workers = max(1, (os.cpu_count() or 2) - 1)
    items, source = _images(4096)
    result["end_to_end_images"] = {"count": len(items), "source": source, "decode_workers": workers}
    models = {}

    def compact():
        from core.backbones.efficientnet import LITE_PREPROCESSING, _FeatureNet

        net = _FeatureNet.build().cuda().half().to(memory_format=torch.channels_last).eval()
        return net, LITE_PREPROCESSING

    def clip():
        import open_clip

        from core.backbones.base import Preprocessing

        net = open_clip.create_model("ViT-B-32", pretrained=None).visual.cuda().half().eval()
        return net, Preprocessing(size=224, mean=(0.48145466, 0.4578275, 0.40821073),
                                  std=(0.26862954, 0.26130258, 0.27577711))

    models["Compact (EfficientNet-Lite0)"] = compact
    models["CLIP ViT-B-32 (random weights)"] = clip
    result["models"] = {}
    for name, build in models.items():
        if time.perf_counter() - started > BUDGET_S:
            result["models"][name] = {"skipped": "time budget spent"}
            continue
        entry: dict = {"precision": "fp16", "memory_format": "channels_last"}
        try:
            net, preprocessing = build()
            with torch.inference_mode():
                fwd = net
                entry["raw_forward_images_per_s"] = _raw(torch, fwd, preprocessing.size, (64, 256, 512), 4.0)
                best_bs = max(entry["raw_forward_images_per_s"], key=entry["raw_forward_images_per_s"].get)
                entry["raw_best"] = {"batch_size": int(best_bs),
                                     "images_per_s": entry["raw_forward_images_per_s"][best_bs]}
                _end_to_end(torch, fwd, preprocessing, items[:512], 256, workers)  # warm-up
                e2e = {str(bs): _end_to_end(torch, fwd, preprocessing, items, bs, workers) for bs in (256,)}
            entry["end_to_end_images_per_s"] = e2e
            best = max(e2e.values())
            entry["ratio_to_raw"] = round(best / entry["raw_best"]["images_per_s"], 3)
            entry["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            del net
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except Exception as e:  # noqa: BLE001 - recorded; the other model still runs
            entry["error"] = f"{type(e).__name__}: {e}"
        result["models"][name] = entry
        print(f"{name}: {json.dumps(entry)}", flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"wrote {_write(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
