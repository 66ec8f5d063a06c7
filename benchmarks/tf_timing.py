"""Single-image latency of one TensorFlow export flavor, run in the converter virtualenv (not cvbot's):

    python -I benchmarks/tf_timing.py FLAVOR MODEL_DIR PIXELS.npy RUNS

PIXELS.npy is one 1 x H x W x 3 float32 image (BGR, 0..255). The model is loaded as the flavor's sample loads it,
run 3 times untimed, then RUNS times; prints one JSON line: load time, median / p90 / best latency in ms, and the
scores of the last run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def frozen_graph(model_dir: Path, x: np.ndarray):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((model_dir / "model.pb").read_bytes())
    (placeholder,) = [n.name for n in graph_def.node if n.op == "Placeholder"]
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    out = graph.get_tensor_by_name("probabilities:0")
    return lambda: session.run(out, {placeholder + ":0": x})


def saved_model(model_dir: Path, x: np.ndarray):
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    tensor = tf.convert_to_tensor(x)
    return lambda: next(iter(serve(tensor).values())).numpy()


def tflite(model_dir: Path, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_dir / "model.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


LOADERS = {"TensorFlowNormal": frozen_graph, "TensorFlowSavedModel": saved_model,
           "TensorFlowLite": tflite, "TensorFlowLiteFloat16": tflite}


def main(flavor: str, model_dir: str, pixels: str, runs: str) -> None:
    x = np.load(pixels).astype(np.float32)
    t = time.perf_counter()
    fn = LOADERS[flavor](Path(model_dir), x)
    for _ in range(3):
        fn()
    load_s = time.perf_counter() - t
    times = []
    for _ in range(int(runs)):
        t = time.perf_counter()
        scores = fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({"load_and_warm_s": round(load_s, 2), "median_ms": round(float(np.median(times)), 2),
                      "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2), "best_ms": round(times[0], 2),
                      "runs": len(times), "scores": np.asarray(scores)[0].tolist()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
