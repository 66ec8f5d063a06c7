"""Runs a TensorFlow export the way Microsoft's samples load each flavor, in the converter virtualenv.

    python tests/tf_runner.py FLAVOR MODEL_DIR INPUTS.npy OUTPUTS.npy

INPUTS.npy holds N x H x W x 3 float32 pixels (BGR, 0..255); each image is fed on its own, as the samples do
(batch of one), and row 0 of the one output is kept. It also checks the structure the samples rely on and
prints it as one JSON line: the input's shape, and for the frozen graph its Placeholders and sink nodes (the
tensorflow/ sample reads every node no other node consumes as an output).

cvbot's unknown score, where the model carries it, is read by name, as its users would (the samples ignore it):
the tensor `unknown_score:0` of the frozen graph, the output `unknown_score` of the signature `with_unknown` of a
SavedModel or TFLite model; it is saved next to OUTPUTS.npy as OUTPUTS.unknown.npy (one value per image).

It imports nothing from cvbot, and re-implements the samples' loading conventions; it copies none of their code.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

UNKNOWN, UNKNOWN_SIGNATURE = "unknown_score", "with_unknown"


def frozen_graph(model_dir: Path, xs: np.ndarray) -> tuple[np.ndarray, dict]:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((model_dir / "model.pb").read_bytes())
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in consumed]
    shape = [d.size for d in placeholders[0].attr["shape"].shape.dim]
    info = {"inputs": [p.name for p in placeholders], "outputs": sinks, "shape": shape}
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    rows, unknown = [], []
    carries = UNKNOWN in {n.name for n in graph_def.node}
    with tf.compat.v1.Session(graph=graph) as session:
        out = graph.get_tensor_by_name(sinks[0] + ":0")
        for x in xs:
            feed = {placeholders[0].name + ":0": x[None]}
            rows.append(session.run(out, feed)[0])
            if carries:
                unknown.append(session.run(graph.get_tensor_by_name(UNKNOWN + ":0"), feed)[0])
    return np.stack(rows), {**info, UNKNOWN: np.array(unknown) if carries else None}


def saved_model(model_dir: Path, xs: np.ndarray) -> tuple[np.ndarray, dict]:
    signatures = tf.saved_model.load(str(model_dir)).signatures
    serve = signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    info = {"inputs": [spec.name], "outputs": list(serve.structured_outputs), "shape": spec.shape.as_list(),
            "signatures": sorted(signatures.keys())}
    rows = [next(iter(serve(tf.convert_to_tensor(x[None])).values())).numpy()[0] for x in xs]
    unknown = None
    if UNKNOWN_SIGNATURE in signatures:
        both = signatures[UNKNOWN_SIGNATURE]
        info["unknown_signature_outputs"] = sorted(both.structured_outputs)
        unknown = np.array([both(data=tf.convert_to_tensor(x[None]))[UNKNOWN].numpy()[0] for x in xs])
    return np.stack(rows), {**info, UNKNOWN: unknown}


def tflite(model_dir: Path, xs: np.ndarray) -> tuple[np.ndarray, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_dir / "model.tflite"))
    interpreter.allocate_tensors()
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    info = {"inputs": [d["name"] for d in ins], "outputs": [d["name"] for d in outs],
            "shape": [int(v) for v in ins[0]["shape"]], "dtype": str(np.dtype(ins[0]["dtype"]))}
    signatures = interpreter.get_signature_list()
    info["signatures"] = sorted(signatures)
    rows, unknown = [], []
    for x in xs:
        interpreter.set_tensor(ins[0]["index"], x[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(outs[0]["index"])[0].copy())
    if UNKNOWN_SIGNATURE in signatures:
        info["unknown_signature_outputs"] = sorted(signatures[UNKNOWN_SIGNATURE]["outputs"])
        both = interpreter.get_signature_runner(UNKNOWN_SIGNATURE)
        unknown = [both(data=x[None].astype(np.float32))[UNKNOWN][0] for x in xs]
    return np.stack(rows), {**info, UNKNOWN: np.array(unknown) if unknown else None}


RUNNERS = {"TensorFlowNormal": frozen_graph, "TensorFlowSavedModel": saved_model,
           "TensorFlowLite": tflite, "TensorFlowLiteFloat16": tflite}


def main(flavor: str, model_dir: str, inputs: str, outputs: str) -> None:
    scores, info = RUNNERS[flavor](Path(model_dir), np.load(inputs).astype(np.float32))
    np.save(outputs, scores.astype(np.float32))
    unknown = info.pop(UNKNOWN)
    info["unknown"] = unknown is not None
    if unknown is not None:
        np.save(Path(outputs).with_suffix(".unknown.npy"), unknown.astype(np.float32))
    print(json.dumps(info))


if __name__ == "__main__":
    main(*sys.argv[1:])
