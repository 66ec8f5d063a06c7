"""ONNX -> TensorFlow, run by `tensorflow.py` as a child process with the converters' own interpreter.

    python tf_convert.py MODEL.onnx OUT_DIR FLAVOR [BATCH]

This file is a script, not a cvbot module: it runs in the converter virtualenv (`make export-env`, pinned in
requirements-export.txt), where onnx2tf, TensorFlow and their own numpy / protobuf / onnx live, and it imports
nothing from cvbot. It writes the flavor's files under OUT_DIR and one line `{"files": [...]}` on stdout.

- `TensorFlowNormal`: `model.pb`, a frozen GraphDef with one Placeholder and one sink node (the tensorflow/
  sample takes the Placeholder as its input and every node no other node reads as an output).
- `TensorFlowSavedModel`: `saved_model.pb` and `variables/`, with a `serving_default` signature.
- `TensorFlowLite` / `TensorFlowLiteFloat16`: `model.tflite` (float16 weights for the latter; the input and output
  stay float32), TFLite builtin ops only (Erf written out as a polynomial); a graph they still do not cover
  also gets TF Select ops, which TensorFlow's own interpreter (the samples') runs.

Every flavor takes one float32 input `data`, N x H x W x 3, and has one output, `probabilities`, where the samples
read it. When the ONNX graph has cvbot's unknown score as a second output, each flavor also carries it as
`unknown_score` (shape [N]) without changing what the samples see: in the frozen graph a node `unknown_score` read
by the one sink node (`probabilities`, an IdentityN whose output 0 is the probabilities), in the SavedModel and the
TFLite model a second signature `with_unknown` with outputs `probabilities` and `unknown_score`. N is left
dynamic unless BATCH fixes it: onnx2tf loses track of the layout of some graphs (CLIP's vision transformers)
when the batch is unknown, and the parent retries those with a batch of 1, which is what the samples feed.

The ONNX graph is simplified first (onnxsim folds the exported padding arithmetic into the convolutions), then
onnx2tf turns it into a Keras model with NCHW rewritten to NHWC. Nothing here touches the network: onnx2tf
downloads sample images for integer quantisation (never asked for here) and, for an input with a fixed batch of 20
or fewer, to check its conversion on; those are replaced by seeded random pixels, and `requests` is made to fail
loudly so that a future onnx2tf that downloads something else cannot hang an export.
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
UNKNOWN = "unknown_score"        # cvbot's unknown score, when the ONNX graph has it as a second output
UNKNOWN_SIGNATURE = "with_unknown"
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


def _keras_model(onnx_path: Path, work: Path, batch: int | None, pseudo_ops: list[str]) -> Any:
    # onnxsim before TensorFlow is imported: both carry protobuf's C++ runtime, and onnxsim crashes in a process
    # that has loaded TensorFlow's (which is why onnx2tf itself runs it as a child process).
    import onnx
    import onnxsim

    model = onnx.load(str(onnx_path))
    shapes = None
    if batch is not None:
        (inp,) = model.graph.input
        shapes = {inp.name: [batch, *(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])]}
    simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    if not ok:
        raise RuntimeError("onnxsim could not check the simplified graph")
    path = work / "simplified.onnx"
    onnx.save(simplified, str(path))
    del model, simplified

    import numpy as np
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_module

    def sample_images() -> Any:  # instead of onnx2tf's download: 20 images of 128 x 128, NHWC, 0..1
        return np.random.default_rng(0).uniform(0, 1, (20, 128, 128, 3)).astype(np.float32)

    onnx2tf_module.download_test_image_data = sample_images
    return onnx2tf.convert(input_onnx_file_path=str(path), output_folder_path=str(work / "onnx2tf"),
                           not_use_onnxsim=True, disable_model_save=True, non_verbose=True,
                           replace_to_pseudo_operators=pseudo_ops)


def _serving_function(keras_model: Any) -> Any:
    """The converted model as a tf.function returning a tuple: (probabilities,) or, when the ONNX graph had the
    unknown score as its second output, (probabilities, unknown_score) with the score of shape [N]."""
    import tensorflow as tf

    shape = list(keras_model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise RuntimeError(f"expected an N x H x W x 3 input after conversion, got {shape}")
    outputs = len(keras_model.outputs)
    if outputs not in (1, 2):
        raise RuntimeError(f"expected the probabilities and at most the unknown score, got {outputs} outputs")

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="data")])  # type: ignore[untyped-decorator]
    def serve(data: Any) -> tuple[Any, ...]:
        out = keras_model(data, training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        if len(out) == 1:
            return (out[0],)
        # onnx2tf keeps the ONNX outputs' order; the score is one value per image, whatever rank it came back with
        return out[0], tf.reshape(out[1], [-1])

    return serve


def _carries_unknown(frozen: Any) -> bool:
    return len(frozen.outputs) == 2


def _frozen_graph(serve: Any, out: Path) -> list[str]:
    frozen = _frozen(serve)
    graph_def = frozen.graph.as_graph_def()
    if _carries_unknown(frozen):
        _one_sink_with_unknown(graph_def, [t.name.split(":")[0] for t in frozen.outputs])
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    read = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in read]
    if len(placeholders) != 1 or len(sinks) != 1:
        raise RuntimeError(f"frozen graph should have one input and one output, has {placeholders} / {sinks}")
    if OUTPUT not in {n.name for n in graph_def.node}:  # the sink (an Identity no node reads) gets a telling name
        next(n for n in graph_def.node if n.name == sinks[0]).name = OUTPUT
    (out / "model.pb").write_bytes(graph_def.SerializeToString())
    return ["model.pb"]


def _one_sink_with_unknown(graph_def: Any, outputs: list[str]) -> None:
    """Two outputs, one sink: the tensorflow/ sample reads every node no other node reads as an output, from a set
    (in no fixed order), and prints the first. So the unknown score's node is renamed `unknown_score` and read,
    together with the probabilities, by one IdentityN node `probabilities`: the graph's one sink, whose output 0
    is the probabilities (what the sample reads, `probabilities:0`); the score is `unknown_score:0` (and
    `probabilities:1`)."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2, types_pb2

    probabilities, unknown = outputs
    names = {n.name for n in graph_def.node}
    if OUTPUT in names or UNKNOWN in names:
        raise RuntimeError(f"the frozen graph already has a node named {OUTPUT} or {UNKNOWN}")
    for node in graph_def.node:
        if node.name == unknown:
            node.name = UNKNOWN
    sink = node_def_pb2.NodeDef(name=OUTPUT, op="IdentityN", input=[probabilities, UNKNOWN])
    sink.attr["T"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(
        type=[types_pb2.DT_FLOAT, types_pb2.DT_FLOAT])))
    graph_def.node.append(sink)


def _signatures(frozen: Any) -> dict[str, Any]:
    """`serving_default` with the one output `probabilities` (what the samples read: the first value of the
    signature's outputs, and a TFLite model's one output); with the unknown score, a second signature
    `with_unknown` with both `probabilities` and `unknown_score`. The score is not a second output of
    serving_default: a loaded SavedModel gives a signature's outputs in no fixed order (measured: unknown_score
    first), and the tensorflow_lite sample refuses a model with more than one output."""
    import tensorflow as tf

    spec = tf.TensorSpec(frozen.inputs[0].shape, tf.float32, name="data")

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serving_default(data: Any) -> dict[str, Any]:
        return {OUTPUT: frozen(data)[0]}

    signatures = {"serving_default": serving_default}
    if _carries_unknown(frozen):
        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def with_unknown(data: Any) -> dict[str, Any]:
            probabilities, unknown = frozen(data)
            return {OUTPUT: probabilities, UNKNOWN: unknown}

        signatures[UNKNOWN_SIGNATURE] = with_unknown
    return signatures


def _saved_model(serve: Any, out: Path) -> list[str]:
    import tensorflow as tf

    # The frozen function, wrapped so that its outputs keep their names in the signatures: saving the Keras model
    # itself takes a minute (every converted layer is serialised) for the same graph.
    tf.saved_model.save(tf.Module(), str(out), signatures=_signatures(_frozen(serve)))
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _frozen(serve: Any) -> Any:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(serve.get_concrete_function())


def _tflite(serve: Any, out: Path, float16: bool) -> list[str]:
    import tensorflow as tf

    # From the frozen function: the same model, but the converter need not lift the Keras model's variables,
    # which made it some twenty times slower (about 50 s against 2.5 s for EfficientNet-Lite0).
    frozen = _frozen(serve)
    # With the unknown score: the two signatures of _signatures (the converter orders the subgraphs by signature
    # key, so serving_default is the primary one, whose single output the samples read); their weights are
    # stored once.
    functions = [f.get_concrete_function() for f in _signatures(frozen).values()]

    def convert(ops: list[Any]) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, tf.Module())
        converter.target_spec.supported_ops = ops
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        model: bytes = converter.convert()
        return model

    try:
        model = convert([tf.lite.OpsSet.TFLITE_BUILTINS])
    except Exception as e:  # noqa: BLE001 - e.g. Erf (CLIP's exact GELU) has no builtin kernel
        if "TF Select" not in str(e):
            raise
        # TensorFlow's own interpreter (the samples') runs Select ops; a bare TFLite runtime needs the Flex delegate
        print(f"TFLite builtins do not cover this graph; adding TF Select ops ({str(e).splitlines()[-1][:200]})",
              file=sys.stderr)
        model = convert([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])
    if _carries_unknown(frozen):
        _check_lite_signatures(model)
    (out / "model.tflite").write_bytes(model)
    return ["model.tflite"]


def _check_lite_signatures(model: bytes) -> None:
    """The primary subgraph must be serving_default's (one output: what the tensorflow_lite sample asserts)."""
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

    interpreter = Interpreter(model_content=model)
    outputs = interpreter.get_output_details()
    signatures = interpreter.get_signature_list()
    if len(outputs) != 1 or signatures.get(UNKNOWN_SIGNATURE, {}).get("outputs") != [OUTPUT, UNKNOWN]:
        raise RuntimeError(f"the TFLite model should have one primary output and a signature {UNKNOWN_SIGNATURE} "
                           f"with {OUTPUT} and {UNKNOWN}; it has {len(outputs)} outputs and {signatures}")


def convert(onnx_path: Path, out: Path, flavor: str, batch: int | None = None) -> list[str]:
    if flavor not in FLAVORS:
        raise SystemExit(f"unknown flavor {flavor!r}; one of {', '.join(FLAVORS)}")
    work = out.parent / (out.name + "-work")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    # TFLite has no builtin Erf (CLIP's exact GELU): onnx2tf writes it out as Abramowitz & Stegun's 7.1.26
    # (absolute error under 1.5e-7), so a Lite model needs no TF Select ops; the other flavors keep tf.math.erf.
    lite = flavor.startswith("TensorFlowLite")
    keras_model = _keras_model(onnx_path, work, batch, ["erf"] if lite else [])
    serve = _serving_function(keras_model)
    if flavor == "TensorFlowNormal":
        return _frozen_graph(serve, out)
    if flavor == "TensorFlowSavedModel":
        return _saved_model(serve, out)
    return _tflite(serve, out, float16=flavor == "TensorFlowLiteFloat16")


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    limit = int(os.environ.get("CVBOT_CONVERTER_MAX_BYTES") or 0)
    if limit > 0:  # address space: TensorFlow reserves far more than it touches, so this is a generous bound
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _no_network()
    batch = int(argv[3]) if len(argv) == 4 else None
    files = convert(Path(argv[0]), Path(argv[1]), argv[2], batch)
    print(json.dumps({"files": files, "batch": batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
