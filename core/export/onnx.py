"""ONNX, as Azure exports it: the classifier graph with a BGR, 0..255, NCHW input and the metadata Microsoft's ONNX
samples read (`Image.BitmapPixelFormat` = `Bgr8`, `Image.NominalPixelRange` = `NominalRange_0_255`), so a sample
feeds the file exactly what the server sees. Flavors: float32 (none; `ONNX10` and `ONNX12` are accepted as aliases,
the opset is cvbot's), and `ONNXFloat16` (weights, input and outputs in float16). Both flavors carry cvbot's unknown
score as a second output `unknown_score` after Azure's `model_output`; the samples read only the first.
"""
from __future__ import annotations

from typing import Any

from .base import Convention, Exporter, ExportRequest

MODEL_FILE = "model.onnx"
FLOAT16 = "ONNXFloat16"
# Windows ML's image metadata, which Azure's exports carry and its samples read (their spelling, exactly)
IMAGE_METADATA = {"Image.BitmapPixelFormat": "Bgr8", "Image.ColorSpaceGamma": "SRGB",
                  "Image.NominalPixelRange": "NominalRange_0_255"}


class OnnxExporter(Exporter):
    platform = "ONNX"
    flavors = (None, FLOAT16)
    aliases = {"ONNX10": None, "ONNX12": None}
    convention = Convention("BGR", 255.0)
    usage = ("Unzip, then run `model.onnx` with ONNX Runtime: one input `data`, float32 (float16 for ONNXFloat16) "
             "1x3xHxW, the whole image resized to HxW, channels in BGR order, values 0-255 (as the metadata "
             "Image.BitmapPixelFormat=Bgr8 and Image.NominalPixelRange=NominalRange_0_255 say). Row 0 of the first "
             "output `model_output` holds one probability per tag, in labels.txt order; the second output "
             "`unknown_score` (one value per image, 0-1) is cvbot's unknown score: at or above the manifest's "
             "UnknownOutput threshold the image looks like nothing the model was trained on. Microsoft's sample "
             "samples/python/onnx/classification/predict.py in Azure-Samples/customvision-export-samples runs it "
             "unchanged.")

    def carries_unknown(self, flavor: str | None) -> bool:
        return flavor in (None, FLOAT16)

    def files(self, request: ExportRequest) -> dict[str, bytes]:
        import onnx

        model = onnx.load_from_string(request.onnx)
        props = {p.key: p.value for p in model.metadata_props}
        props.update(request.metadata)
        props.update(IMAGE_METADATA)
        del model.metadata_props[:]
        for k, v in props.items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        if request.flavor == FLOAT16:
            model = _to_float16(model)
        request.manifest["Input"]["type"] = "float16" if request.flavor == FLOAT16 else "float32"
        data: bytes = model.SerializeToString()
        return {MODEL_FILE: data}


def _to_float16(model: Any) -> Any:
    """Weights, input and outputs in float16; the arithmetic stays float32. Each float32 weight is stored as float16
    behind a Cast (which ONNX Runtime folds once, at load), the float16 input is cast up and each output down.

    Why not float16 arithmetic: ONNX Runtime's CPU kernels for a float16 ViT give different answers at different
    optimisation levels and crash at the default one (measured with onnxruntime 1.32 on a CLIP tower converted by
    its own float16 converter), and Microsoft's sample runs on that CPU runtime with default options."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    limit = float(np.finfo(np.float16).max)
    casts = []
    for i, init in enumerate(list(graph.initializer)):
        if init.data_type != TensorProto.FLOAT:
            continue
        name = init.name
        value = np.clip(numpy_helper.to_array(init), -limit, limit).astype(np.float16)
        init.CopyFrom(numpy_helper.from_array(value, name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT,
                                      name=f"cv_fp16_weight_{i}"))
    # every output (Azure's model_output, and cvbot's unknown_score where the graph has it) is computed in float32
    # under a new name, which the nodes that read it (the unknown score reads the probabilities) read too
    (inp,), outs = graph.input, list(graph.output)
    up = inp.name + "_fp32"
    down = {out.name: out.name + "_fp32" for out in outs}
    for node in graph.node:
        node.input[:] = [up if name == inp.name else down.get(name, name) for name in node.input]
        node.output[:] = [down.get(name, name) for name in node.output]
    nodes = casts + [helper.make_node("Cast", [inp.name], [up], to=TensorProto.FLOAT, name="cv_fp16_input")]
    nodes += list(graph.node)
    nodes += [helper.make_node("Cast", [down[out.name]], [out.name], to=TensorProto.FLOAT16,
                               name="cv_fp16_output" + (f"_{i}" if i else "")) for i, out in enumerate(outs)]
    del graph.node[:]
    graph.node.extend(nodes)
    inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    for out in outs:
        out.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    return model
