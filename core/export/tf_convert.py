"""ONNX -> TensorFlow, run by `tensorflow.py` as a child process with the converters' own interpreter.

    python tf_convert.py MODEL.onnx OUT_DIR FLAVOR

This file is a script, not a cvbot module: it runs in the converter virtualenv (`make export-env`, pinned in
requirements-export.txt), where onnx2tf, TensorFlow and their own numpy / protobuf / onnx live, and it imports
nothing from cvbot. It writes the flavor's files under OUT_DIR and one line `{"files": [...]}` on stdout.

- `TensorFlowNormal`: `model.pb`, a frozen GraphDef with one Placeholder and one sink node (the tensorflow/
  sample takes the Placeholder as its input and every node no other node reads as an output).
- `TensorFlowSavedModel`: `saved_model.pb` and `variables/`, with a `serving_default` signature.
- `TensorFlowLite` / `TensorFlowLiteFloat16`: `model.tflite` (float16 weights for the latter; the input and output
  stay float32), TFLite builtin ops only.

Every flavor takes one float32 input `data`, N x H x W x 3, and has one output, `probabilities`.

The ONNX graph is simplified first (onnxsim folds the exported padding arithmetic into the convolutions), then
onnx2tf turns it into a Keras model with NCHW rewritten to NHWC. Nothing here touches the network: onnx2tf only
downloads calibration images for integer quantisation or for an input with a fixed batch of 20 or fewer, and the
classifier's batch is left dynamic; `requests` is made to fail loudly anyway so that a future onnx2tf that tries
cannot hang an export.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# This folder holds cvbot's tensorflow.py (and other platforms' modules): run as a script, it must not shadow the
# real packages. The parent starts it with `python -I`, which already leaves it out; this covers a plain start.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]

OUTPUT = "probabilities"
FLAVORS = ("TensorFlowNormal", "TensorFlowSavedModel", "TensorFlowLite", "TensorFlowLiteFloat16")


def _no_network() -> None:
    try:
        import requests
    except ImportError:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cvbot's TensorFlow export never downloads anything; onnx2tf asked for a URL")

    requests.get = refuse  # type: ignore[assignment]
    requests.Session.request = refuse  # type: ignore[assignment,method-assign]


def _keras_model(onnx_path: Path, work: Path) -> Any:
    # onnxsim before TensorFlow is imported: both carry protobuf's C++ runtime, and onnxsim crashes in a process
    # that has loaded TensorFlow's (which is why onnx2tf itself runs it as a child process).
    import onnx
    import onnxsim

    model = onnx.load(str(onnx_path))
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim could not check the simplified graph")
    path = work / "simplified.onnx"
    onnx.save(simplified, str(path))
    del model, simplified

    import onnx2tf

    return onnx2tf.convert(input_onnx_file_path=str(path), output_folder_path=str(work / "onnx2tf"),
                           not_use_onnxsim=True, disable_model_save=True, non_verbose=True)


def _serving_function(keras_model: Any) -> Any:
    import tensorflow as tf

    shape = [None, *keras_model.inputs[0].shape[1:]]
    if len(shape) != 4 or shape[3] != 3:
        raise RuntimeError(f"expected an N x H x W x 3 input after conversion, got {shape}")

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="data")])  # type: ignore[untyped-decorator]
    def serve(data: Any) -> dict[str, Any]:
        out = keras_model(data, training=False)
        if isinstance(out, (list, tuple)):
            (out,) = out
        return {OUTPUT: out}

    return serve


def _frozen_graph(serve: Any, out: Path) -> list[str]:
    graph_def = _frozen(serve).graph.as_graph_def()
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    read = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in read]
    if len(placeholders) != 1 or len(sinks) != 1:
        raise RuntimeError(f"frozen graph should have one input and one output, has {placeholders} / {sinks}")
    if OUTPUT not in {n.name for n in graph_def.node}:  # the sink (an Identity no node reads) gets a telling name
        next(n for n in graph_def.node if n.name == sinks[0]).name = OUTPUT
    (out / "model.pb").write_bytes(graph_def.SerializeToString())
    return ["model.pb"]


def _saved_model(serve: Any, out: Path) -> list[str]:
    import tensorflow as tf

    # The frozen function, wrapped so that its one output keeps its name in the signature: saving the Keras model
    # itself takes a minute (every converted layer is serialised) for the same graph.
    frozen = _frozen(serve)
    spec = serve.get_concrete_function().structured_input_signature[0][0]

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serving_default(data: Any) -> dict[str, Any]:
        return {OUTPUT: frozen(data)[0]}

    tf.saved_model.save(tf.Module(), str(out), signatures={"serving_default": serving_default})
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _frozen(serve: Any) -> Any:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(serve.get_concrete_function())


def _tflite(serve: Any, out: Path, float16: bool) -> list[str]:
    import tensorflow as tf

    # From the frozen function: the same model, but the converter need not lift the Keras model's variables,
    # which made it some twenty times slower (about 50 s against 2.5 s for EfficientNet-Lite0).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(serve)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    (out / "model.tflite").write_bytes(converter.convert())
    return ["model.tflite"]


def convert(onnx_path: Path, out: Path, flavor: str) -> list[str]:
    if flavor not in FLAVORS:
        raise SystemExit(f"unknown flavor {flavor!r}; one of {', '.join(FLAVORS)}")
    work = out.parent / (out.name + "-work")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    keras_model = _keras_model(onnx_path, work)
    serve = _serving_function(keras_model)
    if flavor == "TensorFlowNormal":
        return _frozen_graph(serve, out)
    if flavor == "TensorFlowSavedModel":
        return _saved_model(serve, out)
    return _tflite(serve, out, float16=flavor == "TensorFlowLiteFloat16")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    limit = int(os.environ.get("CVBOT_CONVERTER_MAX_BYTES") or 0)
    if limit > 0:  # address space: TensorFlow reserves far more than it touches, so this is a generous bound
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _no_network()
    files = convert(Path(argv[0]), Path(argv[1]), argv[2])
    print(json.dumps({"files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
