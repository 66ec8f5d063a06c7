"""CLIP image encoders through open_clip (General, Food, Landmarks, Retail, Adult domains)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import BackboneUnavailable
from . import clip_export
from .base import Backbone, BackboneSettings, OnnxSession, Preprocessing, onnx_session

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


class ClipBackbone(Backbone):
    """A CLIP image encoder. With runtime auto or onnx the image tower runs in ONNX Runtime from an export in
    the model cache, made once by a child process: the serving process never imports torch or open_clip
    (the text tower, used only by `text_features`, is loaded on first use)."""

    def __init__(
        self,
        domain: str,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        checkpoint: str | None = None,
        settings: BackboneSettings | None = None,
        prompt_templates: tuple[str, ...] = ("a photo of a {}.",),
        random_init_for_tests: bool = False,
    ):
        """`random_init_for_tests` builds the architecture with random weights (plumbing tests and
        throughput benchmarks only); without it, missing weights raise BackboneUnavailable."""
        self.settings = settings or BackboneSettings()
        self.domain = domain
        self.model_name = model
        self.prompt_templates = prompt_templates
        self._pretrained, self._checkpoint = (None, None) if random_init_for_tests else (pretrained, checkpoint)
        self._lock = threading.Lock()
        # open_clip ships no type hints: its model and tokenizer are Any
        self._net: Any = None  # the open_clip model: runtime torch, random weights, or once text_features ran
        self._session: OnnxSession | None = None
        self._tokenizer: Any = None
        self._own_export: tempfile.TemporaryDirectory[str] | None = None
        self._threads = self.settings.threads or os.cpu_count() or 1
        if not random_init_for_tests and not (checkpoint or pretrained):
            raise BackboneUnavailable(self._help("no weights configured"))
        if checkpoint and not Path(checkpoint).is_file():
            raise BackboneUnavailable(self._help(f"checkpoint file {checkpoint} not found"))
        if random_init_for_tests:
            tag = "random-init"
        elif checkpoint:
            tag = "ckpt-" + _file_digest(checkpoint, Path(self.settings.cache_dir))
        else:
            tag = str(pretrained)
        self.id = f"clip-{model}@{tag}"
        onnx, meta = self.settings.runtime in ("auto", "onnx"), None
        if random_init_for_tests:
            meta = clip_export.describe(self._torch_net(), self.id)
            if onnx:  # random weights differ per process: an export of this model's own, removed with it
                Path(self.settings.cache_dir).mkdir(parents=True, exist_ok=True)
                self._own_export = tempfile.TemporaryDirectory(prefix=".random-init-", dir=self.settings.cache_dir)
                clip_export.export_image_tower(self._net, self.onnx_path(), meta)
                self._session = onnx_session(self.onnx_path(), self._threads)
        elif onnx:
            try:
                meta = self._open_export()
            except BackboneUnavailable:
                raise
            except Exception as e:  # noqa: BLE001 - fall back to the same weights in torch, never to other weights
                if self.settings.runtime == "onnx":
                    raise
                log.warning("ONNX export of %s unavailable (%s); running it in PyTorch", self.id, e)
        meta = meta or clip_export.describe(self._torch_net(), self.id)
        self.preprocessing = Preprocessing(size=meta["size"], mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(meta["dim"])
        self.runtime = "onnx" if self._session is not None else "torch"

    def _help(self, reason: str) -> str:
        env = f"CVBOT_{self.domain.upper()}_CHECKPOINT"
        ckpt = self._checkpoint
        return (
            f"Domain {self.domain} needs CLIP weights for {self.model_name} "
            f"({self._pretrained or 'no pretrained tag'}) "
            f"and they could not be loaded: {reason}. Fix: allow this server to download from the model hub once "
            f"(weights are cached in CVBOT_MODEL_DIR), or download the checkpoint elsewhere and set "
            f"{env}=/path/to/open_clip_model.safetensors{f' (now {ckpt})' if ckpt else ''}, or switch the project "
            f"to the Compact domain, which works offline."
        )

    def onnx_path(self) -> Path:
        """The image tower's export in the model cache, named by model and weights (the backbone id)."""
        folder = self._own_export.name if self._own_export else self.settings.cache_dir
        return Path(folder) / (re.sub(r"[^A-Za-z0-9@._-]", "_", self.id) + "-visual.onnx")

    def export_onnx(self, path: Path) -> Path:
        """The image tower as ONNX at `path` (weights in `path`.data), for model export: from the loaded network
        when there is one (random weights, runtime torch), else by the export child, as on first use."""
        if self._pretrained is None and self._checkpoint is None and self._own_export is None:
            # random weights differ per process: never reuse (or leave) a file another process could pick up
            Path(self.settings.cache_dir).mkdir(parents=True, exist_ok=True)
            self._own_export = tempfile.TemporaryDirectory(prefix=".random-init-", dir=self.settings.cache_dir)
            path = self.onnx_path()
        if path.exists() and clip_export.sidecar_path(path).exists():
            return path
        if self._net is not None:
            clip_export.export_image_tower(self._net, path, clip_export.describe(self._net, self.id))
        else:
            self._export_in_child(path)
        return path

    def _open_export(self) -> dict[str, Any]:
        """Opens the cached export, after exporting it in a child process when it is missing or unusable."""
        path, sidecar = self.onnx_path(), clip_export.sidecar_path(self.onnx_path())
        if path.exists() and sidecar.exists():
            try:
                meta: dict[str, Any] = json.loads(sidecar.read_text())
                if meta.get("id") != self.id:
                    raise ValueError(f"it was made for {meta.get('id')}")
                self._session = onnx_session(path, self._threads)
                return meta
            except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
                log.warning("cached ONNX export %s is unusable (%s); exporting it again", path, e)
        for stale in (sidecar, path, clip_export.data_path(path)):
            stale.unlink(missing_ok=True)
        log.info("exporting the image tower of %s to ONNX at %s (once)", self.id, path)
        self._export_in_child(path)
        meta = json.loads(sidecar.read_text())
        self._session = onnx_session(path, self._threads)
        return meta

    def _export_in_child(self, path: Path) -> None:
        cmd = [sys.executable, "-m", "core.backbones.clip_export", str(path), "--id", self.id,
               "--model", self.model_name, "--cache-dir", self._open_clip_cache()]
        cmd += ["--checkpoint", self._checkpoint] if self._checkpoint else ["--pretrained", str(self._pretrained)]
        root = str(Path(__file__).resolve().parents[2])  # where `core` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        if done.returncode == clip_export.WEIGHTS_ERROR:
            raise BackboneUnavailable(self._help(lines[-1] if lines else "unknown error"))
        if done.returncode != 0:
            raise RuntimeError(f"the export process exited with {done.returncode}: {' | '.join(lines[-5:])}")

    def _open_clip_cache(self) -> str:
        return str(Path(self.settings.cache_dir) / "open_clip")

    def _torch_net(self) -> Any:
        """The open_clip model, loaded on first use (BackboneUnavailable when its weights cannot be)."""
        if self._net is None:
            import torch

            try:
                self._net = clip_export.load_net(self.model_name, self._pretrained, self._checkpoint,
                                                 self._open_clip_cache())
            except clip_export.WeightsError as e:
                raise BackboneUnavailable(self._help(str(e))) from e
            torch.set_num_threads(self._threads)
        return self._net

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, np.float32)
        if self._session is not None:
            return self._session.run(None, {"image": batch})[0]
        import torch

        with self._lock, torch.inference_mode():
            features: npt.NDArray[np.float32] = self._net.encode_image(torch.from_numpy(batch)).float().numpy()
            return features

    def text_features(self, tag_names: list[str]) -> npt.NDArray[np.float32]:
        """Mean of the prompt-template embeddings per tag name, L2-normalised: (len(tag_names), dim)."""
        import open_clip
        import torch

        out = []
        with self._lock:
            net = self._torch_net()
            if self._tokenizer is None:
                self._tokenizer = open_clip.get_tokenizer(self.model_name)
            with torch.inference_mode():
                for name in tag_names:
                    tokens = self._tokenizer([t.format(name) for t in self.prompt_templates])
                    f = net.encode_text(tokens).float()
                    f = f / f.norm(dim=-1, keepdim=True)
                    f = f.mean(0)
                    out.append((f / f.norm()).numpy())
        return np.stack(out)


def _file_digest(path: str, cache_dir: Path) -> str:
    """Content digest of a checkpoint, remembered per (path, size, mtime) so a restart does not re-read it."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir / "checkpoint-digests.json"
    try:
        known: dict[str, str] = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    known[key] = h.hexdigest()[:12]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache only costs the re-hash next time
    return known[key]
