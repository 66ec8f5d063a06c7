"""TensorFlow export: a frozen graph (`TensorFlowNormal`, the default), a SavedModel, TensorFlow Lite and TensorFlow
Lite with float16 weights, in the convention of Microsoft's export samples: one float32 input N x H x W x 3, BGR,
pixels 0..255, and one output whose row 0 holds the scores in labels.txt order. cvbot's unknown score rides
along where the samples do not look: see tf_convert.py.

The converter is onnx2tf (PyPI), run on the classifier's ONNX graph in a child process with the interpreter of
its own virtualenv (`make export-env` builds `.venv-export` from requirements-export.txt). Why onnx2tf:
- it is maintained and released often, and it converts the exported EfficientNet-Lite0 / CLIP graphs op by op
  into TensorFlow, rewriting NCHW into the NHWC layout TensorFlow's samples feed (onnx-tf, its predecessor, is
  archived and keeps NCHW by inserting transposes; converting from PyTorch, e.g. with nobuco, would need torch in
  the converter environment and skip the graph every other platform is tested on);
- it needs no network at conversion time for float models (it downloads calibration images only for integer
  quantisation, which no Azure flavor asks for), so it works air-gapped;
- its release for Python 3.11 hard-pins tensorflow, protobuf, numpy, onnx and onnxruntime to versions that clash
  with cvbot's, which is why it never runs in cvbot's own environment: `tf_convert.py` is a script run by path
  with `settings.converter_python`, it imports only the converters, and its stderr tail is the failure reason.

Before conversion the graph's pixel preprocessing (BGR -> RGB gather, scale, shift) is folded into one 1x1
convolution: the same arithmetic, but onnx2tf mis-tracks the layout of a channel Gather on the input, while a
convolution is the case its NCHW -> NHWC rewriting handles best. Likewise the unknown score's column-minus-row
broadcast (one raw score per image against the calibration scores, [N, 1] - [1, n]) becomes a MatMul by ones and
a row-wise Sub: onnx2tf 1.29 converts the broadcast to an [N, 1] result (measured: every unknown score off by up
to 0.17), the MatMul form exactly.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from .base import Convention, Exporter, ExporterUnavailable, ExportRequest, ExportUnsupported

SCRIPT = Path(__file__).with_name("tf_convert.py")
INSTALL_HINT = ("TensorFlow export needs its converter environment: run `make export-env` (it creates .venv-export "
                "from requirements-export.txt) and point cvbot at its python")
TIMEOUT_S = 900.0                 # a Compact conversion takes about 20 s on two busy shared cores
MEMORY_LIMIT = 12 * 1024 ** 3     # address space of the child; TensorFlow reserves a lot more than it touches
# what a child that hit its address-space limit says (Python's own error, or the loader's for a shared library)
OUT_OF_MEMORY = ("MemoryError", "failed to map segment", "Cannot allocate memory", "std::bad_alloc")
NORMAL = "TensorFlowNormal"
# Where each flavor's files go in the zip (SavedModel: saved_model.pb and variables/ at the top, so the unpacked
# folder is the model directory the samples load).
MODEL_FILES = {NORMAL: "model.pb", "TensorFlowSavedModel": "saved_model.pb",
               "TensorFlowLite": "model.tflite", "TensorFlowLiteFloat16": "model.tflite"}


class ConversionFailed(ExportUnsupported):
    """The converter ran and failed (not a timeout, not out of memory): another setting may still work."""


class TensorFlowExporter(Exporter):
    platform = "TensorFlow"
    flavors = (None, "TensorFlowSavedModel", "TensorFlowLite", "TensorFlowLiteFloat16")
    aliases = {NORMAL: None}
    convention = Convention(colors="BGR", scale=255.0, layout="NHWC")
    usage = ("Unzip, then load it with TensorFlow: `model.pb` (frozen graph), the folder with `saved_model.pb` "
             "(TensorFlowSavedModel, signature serving_default) or `model.tflite` (TensorFlowLite, "
             "TensorFlowLiteFloat16). One float32 input `data`, NxHxWx3 (the size is in cvexport.manifest): the "
             "whole image resized, channels in BGR order, values 0-255; row 0 of the one output holds one "
             "probability per tag, in labels.txt order. Microsoft's samples "
             "samples/python/tensorflow*/classification/predict.py in Azure-Samples/customvision-export-samples "
             "run it unchanged. cvbot's unknown score (one value per image, 0-1; at or above UnknownOutput's "
             "threshold in cvexport.manifest the image looks like nothing the model was trained on) is read by name: "
             "tensor `unknown_score:0` of model.pb, or output `unknown_score` of the signature `with_unknown` "
             "(SavedModel; TFLite: interpreter.get_signature_runner('with_unknown')).")

    def carries_unknown(self, flavor: str | None) -> bool:
        # every flavor: an extra signature (SavedModel, Lite) or a named tensor (frozen graph), see tf_convert.py
        return True

    def unavailable(self) -> str | None:
        python = self.settings.converter_python
        if not python or not Path(python).exists():
            return INSTALL_HINT + (f" (not found: {python})" if python else "")
        probe = ("import importlib.util, sys; "
                 "sys.exit(0 if all(importlib.util.find_spec(m) for m in ('onnx2tf', 'tensorflow', 'onnxsim')) "
                 "else 1)")
        try:
            ok = subprocess.run([python, "-I", "-c", probe], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        return None if ok else f"{INSTALL_HINT} ({python} has no onnx2tf, tensorflow or onnxsim)"

    def files(self, request: ExportRequest) -> dict[str, bytes]:
        flavor = self.canonical_flavor(request.flavor) or NORMAL
        missing = self.unavailable()
        if missing:
            raise ExporterUnavailable(missing)
        work = request.workdir
        source, out = work / "classifier.onnx", work / "tensorflow"
        source.write_bytes(outer_broadcasts_as_matmul(preprocessing_as_conv(request.onnx)))
        python = str(self.settings.converter_python)
        try:
            result = run_converter(python, source, out, flavor, work)
        except ConversionFailed as dynamic:  # e.g. a vision transformer: onnx2tf needs a fixed batch there
            shutil.rmtree(out, ignore_errors=True)
            try:
                result = run_converter(python, source, out, flavor, work, batch=1)
            except ExportUnsupported as fixed:
                raise ExportUnsupported(f"{fixed.message} (and with a dynamic batch: {dynamic.message})") from None
        written = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
        model_file = MODEL_FILES[flavor]
        if model_file not in written:
            raise ExportUnsupported(f"the TensorFlow converter wrote no {model_file} ({sorted(written)})")
        # the model file first: the export's manifest names the first file as ModelFileName
        files = {name: written[name].read_bytes() for name in [model_file, *(n for n in written if n != model_file)]}
        request.manifest.update(tensorflow_manifest(flavor, request.manifest, result.get("batch")))
        return files


def tensorflow_manifest(flavor: str, manifest: dict[str, Any], batch: int | None = None) -> dict[str, Any]:
    """The manifest keys a TensorFlow export sets: the model file and the input as the converted model takes it
    (N x H x W x 3, BGR, 0..255; N fixed when the conversion needed a fixed batch)."""
    given = dict(manifest.get("Input", {}))
    shape = list(given.get("shape", ["batch", 224, 224, 3]))
    if len(shape) == 4 and shape[1] == 3:  # described NCHW: the converted model is NHWC
        shape = [shape[0], shape[2], shape[3], 3]
    if batch:
        shape[0] = batch
    return {"ModelFileName": MODEL_FILES[flavor],
            "Input": {**given, "name": "data", "shape": shape, "type": "float32", "layout": "NHWC", "colors": "BGR",
                      "range": [0, 255]}}


def run_converter(python: str, source: Path, out: Path, flavor: str, cwd: Path, timeout: float = TIMEOUT_S,
                  batch: int | None = None) -> dict[str, Any]:
    """Runs tf_convert.py in the converter's interpreter; its stderr tail is the error when it fails.

    The child caps its own address space (CVBOT_CONVERTER_MAX_BYTES; a preexec_fn would do it before exec, but
    is unsafe in the server's threaded process) and is killed when it outlives `timeout`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CVBOT_CONVERTER_MAX_BYTES": str(MEMORY_LIMIT)}
    try:
        args = [str(source), str(out), flavor] + ([str(batch)] if batch else [])
        done = subprocess.run([python, "-I", str(SCRIPT), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ExportUnsupported(f"the TensorFlow conversion took longer than {timeout:.0f} s; "
                                f"{tail(e.stderr)}") from None
    if done.returncode != 0:
        if any(sign in done.stderr for sign in OUT_OF_MEMORY):
            raise ExportUnsupported(f"the TensorFlow conversion ran out of memory (its limit is "
                                    f"{MEMORY_LIMIT / 1024 ** 3:.1f} GiB of address space): {tail(done.stderr, 3)}")
        raise ConversionFailed(f"the TensorFlow conversion failed (exit {done.returncode}): {tail(done.stderr)}")
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["files"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise ExportUnsupported(f"the TensorFlow converter said nothing about its files: {tail(done.stderr)}") from None
    return result


def tail(text: str | bytes | None, lines: int = 8, chars: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in (text or "").splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-chars:] or "(no output)"


def preprocessing_as_conv(model_bytes: bytes) -> bytes:
    """The graph with its input's Gather (channel order) / Mul (scale) / Add (shift) replaced by one 1x1 Conv
    computing the same per-channel affine map; unchanged after it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    data = graph.input[0].name
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    init = {t.name: t for t in graph.initializer}

    def only(tensor: str, op: str) -> Any:
        users = consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op:
            raise ExportUnsupported(f"the classifier graph's preprocessing is not the expected {op} after {tensor}")
        return users[0]

    def const(node: Any, op_input: str) -> np.ndarray[Any, Any]:
        (name,) = [n for n in node.input if n != op_input]
        if name not in init:
            raise ExportUnsupported(f"{node.op_type} {node.name} has no constant operand")
        return np.asarray(numpy_helper.to_array(init[name]))

    first = consumers.get(data, [None])[0]
    order = np.arange(3)
    removed = []
    head = data
    if first is not None and first.op_type == "Gather":
        order = const(first, data).reshape(3)
        removed.append(first)
        head = first.output[0]
    mul = only(head, "Mul")
    scale = const(mul, head).reshape(-1)
    add = only(mul.output[0], "Add")
    shift = const(add, mul.output[0]).reshape(-1)
    if scale.size != 3 or shift.size != 3:
        raise ExportUnsupported("the classifier graph's preprocessing is not per channel")
    removed += [mul, add]
    weight = np.zeros((3, 3, 1, 1), np.float32)
    for out_channel in range(3):  # output channel c reads input channel order[c]
        weight[out_channel, int(order[out_channel]), 0, 0] = scale[out_channel]
    kept = [n for n in graph.node if all(n is not r for r in removed)]
    conv = helper.make_node("Conv", [data, "cv_pre_weight", "cv_pre_bias"], [add.output[0]], name="cv_preprocess",
                            kernel_shape=[1, 1])
    del graph.node[:]
    graph.node.extend([conv, *kept])
    still_read = {name for n in graph.node for name in n.input}
    unused = [t for t in graph.initializer if t.name not in still_read]
    for t in unused:
        graph.initializer.remove(t)
    graph.initializer.extend([numpy_helper.from_array(weight, "cv_pre_weight"),
                              numpy_helper.from_array(shift.astype(np.float32), "cv_pre_bias")])
    onnx.checker.check_model(model)
    result: bytes = model.SerializeToString()
    return result


def outer_broadcasts_as_matmul(model_bytes: bytes) -> bytes:
    """The graph with each Sub of a column by a constant row ([N, 1] - [1, n], n > 1, as in core.unknown's
    calibration) written as MatMul([N, 1], ones[1, n]) - [1, n]: the same values, with a broadcast along the batch
    only, which onnx2tf handles (as it does the probe's bias)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    nodes: list[Any] = []
    for node in graph.node:
        column, row = (node.input[0], node.input[1]) if len(node.input) == 2 else ("", "")
        right = np.asarray(numpy_helper.to_array(init[row])) if row in init else None
        if (node.op_type == "Sub" and column not in init and right is not None and right.ndim == 2
                and right.shape[0] == 1 and right.shape[1] > 1 and shapes.get(column, [])[1:] == [1]):
            ones, wide = f"cv_tf_ones_{len(nodes)}", f"{node.output[0]}_cv_tf_wide"
            graph.initializer.append(numpy_helper.from_array(np.ones((1, right.shape[1]), np.float32), ones))
            nodes += [helper.make_node("MatMul", [column, ones], [wide], name=f"{node.name or wide}_matmul"),
                      helper.make_node("Sub", [wide, row], list(node.output), name=node.name)]
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    result: bytes = model.SerializeToString()
    return result
