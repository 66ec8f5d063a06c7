"""ONNX classifier -> Core ML `.mlmodel`, run as a child process by coreml.py (torch and coremltools stay out of
the server's process; imports nothing from cvbot).

    python coreml_convert.py IN.onnx OUT.mlmodel LABELS.json [--float16]

The ONNX graph (RGB pixels 0..255, NCHW) becomes a PyTorch module (onnx2torch), whose answers are checked against
ONNX Runtime on random pixels (every output) before it is traced and converted (coremltools' neural network format,
as Azure's CoreML exports; specification version 4, iOS 13+): an image input `data` (RGB, the model's size), the
outputs `classLabel` (the top tag) and `loss` (tag -> probability), as Azure's CoreML models name them. When the
graph has a second output (cvbot's unknown score, `unknown_score`), it stays a third output of the classifier, after
those two: a MultiArray of one value. Core ML itself cannot run on Linux, so the converted file's predictions are
not checked here.
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
PROBABILITIES, UNKNOWN = "loss", "unknown_score"


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


def azure_first(spec: Any) -> None:
    """Outputs in the order loss, classLabel (as Azure's classifiers have them), then the unknown score; the
    unknown score described as the one value per image it is."""
    description = spec.description
    names = [o.name for o in description.output]
    if sorted(names) != sorted([PROBABILITIES, description.predictedFeatureName, UNKNOWN]):
        raise SystemExit(f"the converted classifier has the outputs {names}, not loss, classLabel and {UNKNOWN}")
    order = [PROBABILITIES, description.predictedFeatureName, UNKNOWN]
    copies = []
    for o in sorted(description.output, key=lambda o: order.index(o.name)):
        copies.append(type(o)())
        copies[-1].CopyFrom(o)
    del description.output[:]
    description.output.extend(copies)
    (score,) = (o for o in description.output if o.name == UNKNOWN)
    score.shortDescription = "how unlike the training images the image is, in [0, 1] (cvbot's unknown score)"
    array = score.type.multiArrayType
    del array.shape[:]
    array.shape.append(1)


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
    expected = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"data": pixels})
    with torch.no_grad():
        answer = module(torch.from_numpy(pixels))
    got = [t.numpy() for t in (answer if isinstance(answer, (tuple, list)) else (answer,))]
    if len(got) != len(expected):
        raise SystemExit(f"the PyTorch translation of the graph has {len(got)} outputs, ONNX {len(expected)}")
    worst = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    if worst > TOLERANCE:
        raise SystemExit(f"the PyTorch translation of the graph differs from ONNX Runtime by {worst:.2g}")
    unknown = len(expected) == 2
    traced = torch.jit.trace(module, torch.from_numpy(pixels[:1]))  # type: ignore[no-untyped-call]

    with contextlib.redirect_stdout(io.StringIO()):  # coremltools reports progress on stdout
        import coremltools as ct

        # the classifier's dictionary is made of the first output; the unknown score, if any, stays a plain output
        outputs = [ct.TensorType(name="probabilities"), ct.TensorType(name=UNKNOWN)] if unknown else None
        mlmodel = ct.convert(traced, convert_to="neuralnetwork",
                             inputs=[ct.ImageType(name="data", shape=(1, 3, size, size),
                                                  color_layout=ct.colorlayout.RGB)],
                             outputs=outputs,
                             classifier_config=ct.ClassifierConfig(
                                 labels, predicted_probabilities_output="probabilities" if unknown else None))
        spec = mlmodel.get_spec()
        probabilities = spec.description.predictedProbabilitiesName
        if probabilities != PROBABILITIES:
            ct.utils.rename_feature(spec, probabilities, PROBABILITIES)
        if unknown:
            azure_first(spec)
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
