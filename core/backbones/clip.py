"""CLIP image encoders through open_clip (General, Food, Landmarks, Retail, Adult domains)."""
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

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


class ClipBackbone(Backbone):
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
        import open_clip
        import torch

        self.settings = settings or BackboneSettings()
        self.domain = domain
        self.model_name = model
        self.prompt_templates = prompt_templates
        self._lock = threading.Lock()
        source = checkpoint or pretrained
        if random_init_for_tests:
            source = None
        elif not source:
            raise BackboneUnavailable(self._help(domain, model, pretrained, checkpoint, "no weights configured"))
        if checkpoint and not Path(checkpoint).is_file():
            raise BackboneUnavailable(self._help(domain, model, pretrained, checkpoint, f"checkpoint file {checkpoint} not found"))
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=source, cache_dir=str(Path(self.settings.cache_dir) / "open_clip"),
            )
        except Exception as e:  # noqa: BLE001 - download/network/format errors all mean "no weights"
            raise BackboneUnavailable(self._help(domain, model, pretrained, checkpoint, str(e))) from e
        net.eval()
        torch.set_num_threads(self.settings.threads or os.cpu_count() or 1)
        self._net = net
        self._tokenizer = open_clip.get_tokenizer(model)
        cfg = net.visual.preprocess_cfg if hasattr(net.visual, "preprocess_cfg") else {}
        size = net.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.preprocessing = Preprocessing(
            size=size,
            mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        )
        with torch.inference_mode():
            self.dim = int(net.encode_image(torch.zeros(1, 3, size, size)).shape[1])
        if random_init_for_tests:
            tag = "random-init"
        elif checkpoint:
            tag = "ckpt-" + _file_digest(checkpoint, Path(self.settings.cache_dir))
        else:
            tag = str(pretrained)
        self.id = f"clip-{model}@{tag}"

    @staticmethod
    def _help(domain: str, model: str, pretrained: str | None, checkpoint: str | None, reason: str) -> str:
        env = f"CVBOT_{domain.upper()}_CHECKPOINT"
        return (
            f"Domain {domain} needs CLIP weights for {model} ({pretrained or 'no pretrained tag'}) and they could not be "
            f"loaded: {reason}. Fix: allow this server to download from the model hub once (weights are cached in "
            f"CVBOT_MODEL_DIR), or download the checkpoint elsewhere and set {env}=/path/to/open_clip_model.safetensors"
            f"{f' (now {checkpoint})' if checkpoint else ''}, or switch the project to the Compact domain, which works offline."
        )

    def forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            return self._net.encode_image(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).float().numpy()

    def text_features(self, tag_names: list[str]) -> np.ndarray:
        """Mean of the prompt-template embeddings per tag name, L2-normalised: (len(tag_names), dim)."""
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for name in tag_names:
                tokens = self._tokenizer([t.format(name) for t in self.prompt_templates])
                f = self._net.encode_text(tokens).float()
                f = f / f.norm(dim=-1, keepdim=True)
                f = f.mean(0)
                out.append((f / f.norm()).numpy())
        return np.stack(out)


def _file_digest(path: str, cache_dir: Path) -> str:
    """Content digest of a checkpoint, remembered per (path, size, mtime) so a restart does not re-read it."""
    import json

    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir / "checkpoint-digests.json"
    try:
        known = json.loads(memo.read_text())
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
