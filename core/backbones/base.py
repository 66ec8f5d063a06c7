"""The embedder port: a frozen image encoder that owns its preprocessing."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image as PILImage


@dataclass(frozen=True)
class Preprocessing:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 3  # PIL.Image.Resampling.BICUBIC (Pillow is imported when an image is first read)

    def crop(self, img: PILImage.Image) -> npt.NDArray[np.uint8]:
        """The shorter side resized to `size`, centre-cropped: (size, size, 3) uint8.

        Only the cropped square is resampled (Pillow's `box`): the same pixels as resizing the whole image
        and cropping after (within rounding), for about a quarter less CPU on landscape photos."""
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
        out = img.resize((self.size, self.size), self.resample, box=box, reducing_gap=3.0 if scale < 0.5 else None)
        return np.asarray(out)

    def __call__(self, img: PILImage.Image) -> npt.NDArray[np.float32]:
        """Resize the shorter side to `size`, centre-crop, normalise; returns CHW float32."""
        arr: npt.NDArray[np.float32] = self.crop(img).astype(np.float32) * (1.0 / 255.0)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)  # type: ignore[assignment]  # numpy stubs wrongly say complex128
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


class OnnxSession(Protocol):
    """What cvbot uses of an onnxruntime.InferenceSession (onnxruntime ships no type hints)."""

    def run(self, output_names: list[str] | None, input_feed: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        ...


def onnx_session(path: str | os.PathLike[str], threads: int, spinning: bool = False) -> OnnxSession:
    """An ONNX Runtime CPU session with `threads` intra-op threads and full graph optimisation.

    Idle intra-op threads sleep unless `spinning`: decoding threads need those cores (measured: +7-15 %
    end-to-end images/s on 2 cores; at most ~1 ms more for one image). Spinning suits one model alone."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session: OnnxSession = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session


class Backbone(ABC):
    """A frozen image encoder. `id` names weights and preprocessing: embeddings are cached under it."""

    id: str
    dim: int
    preprocessing: Preprocessing
    prompt_templates: tuple[str, ...] = ()
    zero_shot: bool = False  # has a text tower: `text_features` and `logit_scale` answer (core.zero_shot)

    def preprocess(self, img: PILImage.Image) -> npt.NDArray[np.float32]:
        return self.preprocessing(img)

    @abstractmethod
    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 3, S, S) float32 -> (N, dim) float32 features (not normalised)."""

    def text_features(self, tag_names: list[str]) -> npt.NDArray[np.float32]:
        raise NotImplementedError(f"backbone {self.id} has no text encoder")

    def logit_scale(self) -> float:
        """The factor on image-text cosine similarities before a softmax (CLIP learns it; 100 once trained)."""
        return 100.0


class SerialUint8Forward(Protocol):
    """A capability a backbone may add (the Embedder looks for it by name): `forward_uint8_serial` maps
    (N, S, S, 3) uint8 pixels, resized and cropped, to (N, dim) features on the calling thread alone, and
    several threads may call it at once. EfficientNet-Lite0 has it."""

    def forward_uint8_serial(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        ...


@dataclass
class BackboneSettings:
    """Configuration the composition root hands to the registry (read once from the environment)."""

    cache_dir: str = "./data/models"
    # per-domain CLIP overrides: {"General": {"model": "...", "pretrained": "...", "checkpoint": "/path"}}
    clip: dict[str, dict[str, str]] = field(default_factory=dict)
    runtime: str = "auto"  # "auto" (ONNX Runtime where available) | "torch"
    threads: int | None = None
    device: str = "cpu"
