"""OpenVINO: the classifier as an IR (model.xml + model.bin), in the convention of Azure's `openvino` sample.

That sample resizes the whole image to the input's height and width, feeds RGB pixels divided by 255 (0..1) as
NCHW with a batch of one, and reads the first output's row 0 as the scores in labels.txt order. The IR here has
that input, a static shape [1, 3, S, S] (the sample reads the size from it), and float32 weights. Its first output
is Azure's (`model_output`, [1, tags]); a second output `unknown_score` ([1]) is cvbot's unknown score
(core.unknown), which the sample does not read.

OpenVINO's CPU plugin runs float32 models in bfloat16 by default on CPUs that have it (AVX512-BF16, AMX), which
moves probabilities by up to ~0.02; compile with INFERENCE_PRECISION_HINT=f32 for cvbot's numbers (the manifest
says so). The precision hint cannot be stored in the IR: the plugin ignores it there.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from .base import Convention, Exporter, ExporterUnavailable, ExportRequest, ExportUnsupported
from .graph import OUTPUT

INSTALL = "pip install 'cvbot[export]' (or: pip install openvino)"
XML, BIN = "model.xml", "model.bin"


class OpenVinoExporter(Exporter):
    platform = "OpenVino"
    convention = Convention("RGB", 1.0, "NCHW")
    usage = ("Unzip, then read `model.xml` + `model.bin` with OpenVINO and compile with "
             "INFERENCE_PRECISION_HINT=f32: one input 1x3xHxW, the whole image resized to HxW, RGB, values 0-1. "
             "Row 0 of the first output `model_output` holds one probability per tag, in labels.txt order; the "
             "second output `unknown_score` is cvbot's unknown score of the image (0-1, at or above the manifest's "
             "UnknownOutput threshold it looks like nothing the model was trained on).")

    def carries_unknown(self, flavor: str | None) -> bool:
        return True

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return f"exporting to OpenVINO needs the openvino package: {INSTALL}"
        return None

    def files(self, request: ExportRequest) -> dict[str, bytes]:
        missing = self.unavailable()
        if missing:
            raise ExporterUnavailable(missing)
        import onnx
        import openvino as ov  # an optional dependency, imported when an export runs

        source = onnx.load_from_string(request.onnx)
        props = {p.key: p.value for p in source.metadata_props}
        onnx_path = request.workdir / "classifier.onnx"
        onnx_path.write_bytes(request.onnx)
        model: Any = ov.convert_model(str(onnx_path))
        if len(model.inputs) != 1:
            raise ExportUnsupported("the classifier graph should have exactly one input")
        shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        if len(shape) != 4 or shape[1] != 3 or shape[2] is None or shape[3] is None:
            raise ExportUnsupported(f"the classifier graph's input should be N x 3 x H x W, not {shape}")
        # Azure's output first (the sample reads outputs[0]), then the unknown score when the graph has it
        expected = [o.name for o in source.graph.output]
        names = [sorted(o.get_names()) for o in model.outputs]
        if expected[:1] != [OUTPUT] or len(names) != len(expected) or any(
                want not in got for want, got in zip(expected, names, strict=True)):
            raise ExportUnsupported(f"the converted model's outputs are {names}, not {expected}")
        model.reshape({0: [1, 3, shape[2], shape[3]]})  # Azure's sample reads H and W from the input's shape
        for key, value in {**props, **request.metadata}.items():
            model.set_rt_info(str(value), ["cvbot", key])
        xml = request.workdir / XML
        ov.save_model(model, str(xml), compress_to_fp16=False)  # fp16 weights would cost cvbot's 1e-4 parity
        request.manifest.update({
            "ExportFormat": "OpenVino", "ModelFileName": XML, "WeightsFileName": BIN,
            "Input": {**request.manifest.get("Input", {}), "shape": [1, 3, shape[2], shape[3]], "layout": "NCHW",
                      "colors": "RGB", "range": [0, 1]},
            "Runtime": "compile with INFERENCE_PRECISION_HINT=f32 (CPUs with bfloat16 otherwise run the model in "
                       "bfloat16, and probabilities move by up to about 0.02)",
        })
        return {XML: xml.read_bytes(), BIN: (request.workdir / BIN).read_bytes()}
