"""ONNX classifier -> Core ML `.mlmodel`, run as a child process by coreml.py (torch and coremltools stay out of
the server's process; imports nothing from cvbot).

    python coreml_convert.py IN.onnx OUT.mlmodel LABELS.json [--float16]

The ONNX graph (RGB pixels 0..255, NCHW) becomes a PyTorch module (onnx2torch), whose answers are checked
against ONNX Runtime on random pixels before it is traced and converted (coremltools' neural network format,
iOS 11+, as Azure's CoreML exports): an image input `data` (RGB, the model's size), the outputs `classLabel`
(the top tag) and `loss` (tag -> probability), as Azure's CoreML models name them. Core ML itself cannot run on
Linux, so the converted file's predictions are not checked here.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from typing import Any

TOLERANCE = 1e-4


def convertible(model: Any) -> Any:
    """The graph with the op onnx2torch turns into something coremltools cannot convert rewritten:
    Max(x, constant) (the L2 normalisation's epsilon) becomes Clip(x, min=constant)."""
    from onnx import helper

    constants = {i.name for i in model.graph.initializer}
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Max" and len(node.input) == 2 and node.input[1] in constants:
            model.graph.node[i].CopyFrom(helper.make_node("Clip", [node.input[0], node.input[1]], list(node.output),
                                                          name=node.name or f"clip_{i}"))
    return model


def convert(onnx_path: str, out_path: str, labels: list[str], float16: bool) -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import numpy as np
    import onnx
    import onnxruntime as ort

    source = onnx.load(onnx_path)
    import torch
    from onnx2torch import convert as to_torch

    dims = source.graph.input[0].type.tensor_type.shape.dim
    size = int(dims[2].dim_value)
    module = to_torch(convertible(onnx.load(onnx_path))).eval()
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, size, size)).astype(np.float32)
    expected = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"data": pixels})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(pixels)).numpy()
    worst = float(np.abs(got - expected).max())
    if worst > TOLERANCE:
        raise SystemExit(f"the PyTorch translation of the graph differs from ONNX Runtime by {worst:.2g}")
    traced = torch.jit.trace(module, torch.from_numpy(pixels[:1]))  # type: ignore[no-untyped-call]

    with contextlib.redirect_stdout(io.StringIO()):  # coremltools reports progress on stdout
        import coremltools as ct

        mlmodel = ct.convert(traced, convert_to="neuralnetwork",
                             inputs=[ct.ImageType(name="data", shape=(1, 3, size, size),
                                                  color_layout=ct.colorlayout.RGB)],
                             classifier_config=ct.ClassifierConfig(labels))
        spec = mlmodel.get_spec()
        probabilities = spec.description.predictedProbabilitiesName
        if probabilities != "loss":
            ct.utils.rename_feature(spec, probabilities, "loss")
        mlmodel = ct.models.MLModel(spec)
        if float16:
            from coremltools.models.neural_network import quantization_utils

            mlmodel = quantization_utils.quantize_weights(mlmodel, nbits=16)
    meta = {p.key: p.value for p in source.metadata_props}
    mlmodel.short_description = "cvbot image classifier"
    mlmodel.author = "cvbot"
    mlmodel.user_defined_metadata.update({k: v for k, v in meta.items() if k != "labels"})
    mlmodel.save(out_path)


def main(argv: list[str]) -> None:
    onnx_path, out_path, labels_path = argv[:3]
    with open(labels_path, encoding="utf-8") as f:
        labels = json.load(f)
    convert(onnx_path, out_path, labels, "--float16" in argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])
