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
    """Weights, input and output in float16 (ONNX Runtime's converter; it keeps the ops it must in float32)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=False)
