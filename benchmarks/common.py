"""Shared pieces of the benchmarks: machine description, timing on a noisy shared machine, real data sets."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"  # scratch (git-ignored)
TUXPAINT_PHOTOS = Path("/usr/share/tuxpaint/templates")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def model_dir() -> Path:
    """The model cache: the tests' one when present, so that EfficientNet-Lite0 is exported to ONNX once."""
    env = os.environ.get("CVBOT_BENCH_MODEL_DIR")
    if env:
        return Path(env)
    tests_cache = Path(os.environ.get("CVBOT_TEST_MODEL_DIR", ROOT / ".venv" / "cvbot-test-models"))
    path = tests_cache if tests_cache.parent.is_dir() else OUT_DIR / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Config:
    quick: bool = False
    seed: int = 0
    only: set[int] = field(default_factory=set)

    def pick(self, full, quick):
        return quick if self.quick else full


# ---------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        info["cpu_features"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["ram_gb"] = round(int(mem.split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    versions = {}
    for mod in ("numpy", "scipy", "torch", "onnxruntime", "open_clip", "sklearn", "PIL", "sqlalchemy", "aiohttp"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            versions[mod] = None
    info["versions"] = versions
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["command"] = "python -m benchmarks" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    return info


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    """Best (least disturbed) wall time of `repeats` runs, every time, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t, out = timed(fn)
        times.append(t)
    return min(times), times, out


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Run several contenders in turn, `repeats` rounds, so that each sees the same machine load.

    Returns per name: best and median seconds, all times, and the last result."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t, results[name] = timed(fn)
            times[name].append(t)
    return {k: {"best_s": min(v), "median_s": statistics.median(v), "times_s": [round(x, 4) for x in v],
                "result": results[k]} for k, v in times.items()}


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def rss_mb(pid: int | None = None) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB of a process, from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    fields = {ln.split(":")[0]: ln.split(":")[1].strip() for ln in status.splitlines() if ":" in ln}
    cur = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    peak = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    return cur, peak


# ---------------------------------------------------------------------------------------------- data
class MissingData(RuntimeError):
    """A Debian data package a benchmark needs is not installed: `python -m benchmarks` skips that benchmark and
    says what to install."""


def tuxpaint_dataset() -> tuple[list[bytes], np.ndarray, list[str]]:
    """The 8 stamp categories as (png bytes, labels, category names), one copy of each distinct image.

    A few stamps ship byte-identical in two categories: those are left out (their label is ambiguous and
    a copy in another fold would leak); byte-identical copies within one category are kept once."""
    from tests.helpers import missing_debian_data, tuxpaint_categories

    cats = tuxpaint_categories(min_images=30)
    if not cats:
        raise MissingData(missing_debian_data("tuxpaint-stamps-default"))
    names = list(cats)
    by_hash: dict[str, tuple[bytes, set[int]]] = {}
    for i, name in enumerate(names):
        for f in cats[name]:
            data = f.read_bytes()
            h = hashlib.sha256(data).hexdigest()
            entry = by_hash.setdefault(h, (data, set()))
            entry[1].add(i)
    items = [(data, next(iter(labels))) for data, labels in by_hash.values() if len(labels) == 1]
    return [d for d, _ in items], np.array([y for _, y in items]), names


def tuxpaint_photos() -> list[bytes]:
    """Real photographs (0.3-1.1 megapixel JPEGs) shipped as Tux Paint templates."""
    if not TUXPAINT_PHOTOS.is_dir():
        return []
    return [p.read_bytes() for p in sorted(TUXPAINT_PHOTOS.glob("*.jpg"))]


def megapixel_jpeg(progressive: bool = False) -> bytes:
    """A real 1-megapixel photo: the first Tux Paint template of at least 1 MP that is a baseline JPEG (what
    cameras and phones write; rocks.jpg, 1296 x 864), or with `progressive` the first progressive one
    (cliff.jpg, slower to decode). Falls back to a synthetic image of that size."""
    from PIL import Image

    photos = sorted(TUXPAINT_PHOTOS.glob("*.jpg")) if TUXPAINT_PHOTOS.is_dir() else []
    for p in photos:
        with Image.open(p) as im:
            if im.size[0] * im.size[1] >= 1_000_000 and bool(im.info.get("progressive")) == progressive:
                return p.read_bytes()
    rng = np.random.default_rng(0)
    arr = (rng.random((864, 1296, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_test(per_class: int = 100) -> tuple[list[bytes], np.ndarray, list[str]]:
    """The test split of Fashion-MNIST, the first `per_class` images of each class, as PNG bytes."""
    from PIL import Image

    from tests.helpers import missing_debian_data

    if not have_fashion_mnist():
        raise MissingData(missing_debian_data("dataset-fashion-mnist"))
    images = _idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = _idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    picked: list[int] = []
    for c in range(10):
        picked += list(np.flatnonzero(labels == c)[:per_class])
    picked.sort()
    out = []
    for i in picked:
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, labels[picked].astype(int), list(FASHION_CLASSES)


def have_fashion_mnist() -> bool:
    return (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file()


def synthetic_embeddings(n: int, k: int, d: int, seed: int = 0, sep: float = 0.5, rank: int = 64):
    """Embedding-like features: class means in a low-rank subspace, structured within-class spread and
    isotropic noise, a shared offset, L2-normalised. With sep=0.5 a linear probe reaches about 85-90 %."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d)) / np.sqrt(rank)
    decay = 1.0 / np.sqrt(1 + np.arange(rank))
    means = (rng.normal(size=(k, rank)) * decay) @ basis
    y = np.arange(n) % k
    rng.shuffle(y)
    X = np.empty((n, d), np.float32)
    offset = rng.normal(size=d) / np.sqrt(d)
    for i in range(0, n, 8192):
        j = slice(i, min(n, i + 8192))
        m = j.stop - j.start
        X[j] = (sep * means[y[j]] + (rng.normal(size=(m, rank)) * decay) @ basis
                + 0.5 * rng.normal(size=(m, d)) / np.sqrt(d) + offset)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def onehot(y: np.ndarray, k: int | None = None) -> np.ndarray:
    k = int(y.max()) + 1 if k is None else k
    return np.eye(k, dtype=np.float32)[y]
