"""ONNX, as Azure exports it: the classifier graph with a BGR, 0..255, NCHW input and the metadata Microsoft's ONNX
samples read (`Image.BitmapPixelFormat` = `Bgr8`, `Image.NominalPixelRange` = `NominalRange_0_255`), so a sample
feeds the file exactly what the server sees. Flavors: float32 (none; `ONNX10` and `ONNX12` are accepted as aliases,
the opset is cvbot's), and `ONNXFloat16` (weights, input and output in float16).
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
             "output `model_output` holds one probability per tag, in labels.txt order. Microsoft's sample "
             "samples/python/onnx/classification/predict.py in Azure-Samples/customvision-export-samples runs it "
             "unchanged.")

    def carries_unknown(self, flavor: str | None) -> bool:
        return flavor is None

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
    """Weights, input and output in float16; the arithmetic stays float32. Each float32 weight is stored as float16
    behind a Cast (which ONNX Runtime folds once, at load), the float16 input is cast up and the output down.

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
    (inp,), (out,) = graph.input, graph.output
    up, down = inp.name + "_fp32", out.name + "_fp32"
    for node in graph.node:
        node.input[:] = [up if name == inp.name else name for name in node.input]
        node.output[:] = [down if name == out.name else name for name in node.output]
    nodes = casts + [helper.make_node("Cast", [inp.name], [up], to=TensorProto.FLOAT, name="cv_fp16_input")]
    nodes += list(graph.node)
    nodes.append(helper.make_node("Cast", [down], [out.name], to=TensorProto.FLOAT16, name="cv_fp16_output"))
    del graph.node[:]
    graph.node.extend(nodes)
    inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    out.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    return model
