"""The PyTorch side of the CLIP backbone: open_clip models with their weights, and the ONNX export of the image
tower. `python -m core.backbones.clip_export` runs the export in a child process, so that the process that
serves never imports torch; it exits with WEIGHTS_ERROR, the reason on its last stderr line, when the weights
cannot be loaded."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

WEIGHTS_ERROR = 3
# open_clip ships no type hints: its models (torch modules with encode_image, encode_text, visual) are Any here.


class WeightsError(Exception):
    """The weights could not be obtained or do not fit the model."""


class _QuietRandomInit(logging.Filter):
    """open_clip warns that a model built without weights is random; ours get theirs right after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def load_net(model: str, pretrained: str | None, checkpoint: str | None, cache_dir: str) -> Any:
    """open_clip `model` in eval mode with the weights of `checkpoint` (a file) or else `pretrained` (a tag,
    downloaded once into cache_dir); random weights when both are None. Raises WeightsError."""
    try:
        import open_clip
        from open_clip.pretrained import download_pretrained, get_pretrained_cfg

        if ":" in model:  # hf-hub: and local-dir: names carry their own weights
            return open_clip.create_model(model, cache_dir=cache_dir).eval()
        path, tag_cfg = checkpoint, None
        if not path and pretrained:
            tag_cfg = get_pretrained_cfg(model, pretrained)
            if not tag_cfg:
                known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
                raise WeightsError(f"pretrained tag {pretrained!r} is not known for {model} (known: {known})")
            path = download_pretrained(tag_cfg, cache_dir=cache_dir)
            if not path:  # never random weights in place of the ones asked for
                raise WeightsError(f"open_clip has no download for the pretrained tag {pretrained!r}")
        quiet = _QuietRandomInit() if path else logging.Filter()
        logging.getLogger().addFilter(quiet)
        try:
            net = open_clip.create_model(model, pretrained=None, force_preprocess_cfg=tag_cfg)
        finally:
            logging.getLogger().removeFilter(quiet)
        if path:
            _load_weights(net, path)
        return net.eval()
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - download, network, format and shape errors all mean "no weights"
        raise WeightsError(str(e)) from e


def _load_weights(net: Any, path: str) -> None:
    """open_clip.load_checkpoint (it knows the checkpoint variants), but with the file memory-mapped and its
    tensors assigned to the model rather than copied: one copy of the weights in memory, not two."""
    import open_clip
    import torch
    from torch.utils.serialization import config

    mapped_before = config.load.mmap
    net.load_state_dict = functools.partial(torch.nn.Module.load_state_dict, net, assign=True)
    try:
        for mmap in (True, False):  # files from before torch's zip format cannot be mapped
            config.load.mmap = mmap
            try:
                open_clip.load_checkpoint(net, path, strict=True)
                break
            except RuntimeError as e:
                if not mmap or "mmap" not in str(e):
                    raise
    finally:
        config.load.mmap = mapped_before
        del net.load_state_dict
    net.float()  # copy_ would have converted a half-precision checkpoint; assignment keeps its dtype


def describe(net: Any, backbone_id: str) -> dict[str, Any]:
    """What the serving side needs besides the graph: input size, normalisation, feature dimension."""
    import torch

    cfg = getattr(net.visual, "preprocess_cfg", {})
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    with torch.inference_mode():
        dim = int(net.encode_image(torch.zeros(1, 3, size, size)).shape[1])
    return {"id": backbone_id, "size": size, "dim": dim,
            "mean": list(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            "std": list(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))}


def export_image_tower(net: Any, path: Path, meta: dict[str, Any]) -> None:
    """Writes the image tower (`encode_image`) as ONNX at `path`, its weights at `path`.data, then `meta` at
    `path`.json. Each is written aside and moved into place, the sidecar last: a crash never leaves a half file
    that looks complete, and a process that has the old files mapped keeps them."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        whole = aside / "whole.onnx"
        torch.onnx.export(  # net.visual is encode_image without its optional normalisation
            net.visual, (torch.zeros(1, 3, meta["size"], meta["size"]),), str(whole), input_names=["image"],
            output_names=["features"], dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
        # weights in a file of their own: ONNX Runtime maps them instead of parsing a copy (less, steadier RSS)
        onnx.save(onnx.load(str(whole)), str(aside / path.name), save_as_external_data=True,
                  all_tensors_to_one_file=True, location=data_path(path).name, size_threshold=1024)
        os.replace(aside / data_path(path).name, data_path(path))
        os.replace(aside / path.name, path)
        (aside / "meta.json").write_text(json.dumps(meta))
        os.replace(aside / "meta.json", sidecar_path(path))
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def data_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path, help="where the .onnx file goes (the sidecar: OUTPUT.json)")
    parser.add_argument("--id", required=True, help="the backbone id the export is for")
    parser.add_argument("--model", required=True)
    parser.add_argument("--pretrained")
    parser.add_argument("--checkpoint")
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args(argv)
    try:
        net = load_net(args.model, args.pretrained, args.checkpoint, args.cache_dir)
    except WeightsError as e:
        sys.stderr.write("\n" + " ".join(str(e).split()) + "\n")
        return WEIGHTS_ERROR
    export_image_tower(net, args.output, describe(net, args.id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
