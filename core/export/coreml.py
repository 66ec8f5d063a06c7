"""CoreML (flavors: none, `CoreMLFloat16`): `model.mlmodel` in the shape Azure's CoreML exports and its `coreml`
sample use: one image input `data` (RGB, the model's size; the sample resizes the whole image to it and hands
Core ML the picture), outputs `classLabel` and `loss` (tag -> probability), and after them cvbot's unknown score
`unknown_score` (core.unknown; a MultiArray of one value in [0, 1]), which the sample ignores.

Best effort: coremltools converts from PyTorch, not ONNX, so the classifier graph goes ONNX -> PyTorch
(onnx2torch, checked against ONNX Runtime) -> Core ML, in a child process (torch and coremltools are not loaded
into the server). coremltools is tested with older PyTorch releases than cvbot pins; where it cannot convert,
the export fails with its reason. Core ML cannot run on Linux, so an export's predictions are not checked when it
is made: cvbot's tests execute the file's layers with their own interpreter instead, and a Mac runs it with
`coremltools.models.MLModel("model.mlmodel").predict({"data": image})`.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from .base import Convention, Exporter, ExporterUnavailable, ExportRequest, ExportUnsupported
from .graph import UNKNOWN_OUTPUT

INSTALL = "pip install 'cvbot[export]' (or: pip install coremltools onnx2torch)"
MODEL = "model.mlmodel"
TIMEOUT_S = 900


class CoreMLExporter(Exporter):
    platform = "CoreML"
    flavors = (None, "CoreMLFloat16")
    aliases = {"CoreML": None, "Float16": "CoreMLFloat16"}
    convention = Convention("RGB", 255.0, "NCHW")  # Core ML hands an image input over as 0..255 pixels
    usage = ("Unzip, then use `model.mlmodel` with Core ML (iOS 13+ / macOS 10.15+): one image input `data` "
             "(RGB, 224x224: resize the whole image to it), outputs `classLabel` (the most probable tag) and `loss` "
             "(tag -> probability), as Azure's CoreML exports; Microsoft's `coreml` sample in "
             "Azure-Samples/customvision-export-samples runs it unchanged (it prints every output). A third output "
             "`unknown_score` (one value in [0, 1]) says how unlike the training images the picture is: at or above "
             "the manifest's UnknownOutput threshold it looks like nothing the model was trained on.")

    def carries_unknown(self, flavor: str | None) -> bool:
        return True  # both flavors: the converter keeps the graph's second output (coreml_convert.azure_first)

    def unavailable(self) -> str | None:
        missing = [m for m in ("coremltools", "onnx2torch", "torch") if importlib.util.find_spec(m) is None]
        if missing:
            return f"exporting to CoreML needs {', '.join(missing)}: {INSTALL}"
        return None

    def files(self, request: ExportRequest) -> dict[str, bytes]:
        missing = self.unavailable()
        if missing:
            raise ExporterUnavailable(missing)
        flavor = self.canonical_flavor(request.flavor)
        onnx_path, out, labels = (request.workdir / n for n in ("classifier.onnx", MODEL, "labels.json"))
        onnx_path.write_bytes(request.onnx)
        labels.write_text(json.dumps(request.tag_names), encoding="utf-8")
        # -P: the script's folder (core/export, which holds onnx.py) must not shadow the libraries it imports
        args = [sys.executable, "-P", str(Path(__file__).with_name("coreml_convert.py")), str(onnx_path), str(out),
                str(labels)] + (["--float16"] if flavor == "CoreMLFloat16" else [])
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=request.workdir)
        except subprocess.TimeoutExpired as e:
            raise ExportUnsupported(f"the CoreML conversion took longer than {TIMEOUT_S} s") from e
        if done.returncode != 0 or not out.exists():
            lines = [x for x in (done.stderr or "").splitlines() if x.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise ExportUnsupported(f"coremltools could not convert this model here: {reason[:500]}")
        request.manifest.update({
            "ExportFormat": "CoreML", "Flavor": flavor or "CoreML", "ModelFileName": MODEL,
            "Input": {**request.manifest.get("Input", {}), "name": "data", "type": "image", "colors": "RGB",
                      "range": [0, 255]},
            "Output": {"classLabel": "the most probable tag", "loss": "probability per tag",
                       **({UNKNOWN_OUTPUT: "cvbot's unknown score: one value in [0, 1], see UnknownOutput"}
                          if "UnknownOutput" in request.manifest else {})},
            "Note": "converted with coremltools; Core ML does not run on Linux, so these predictions were not "
                    "checked against cvbot's",
        })
        return {MODEL: out.read_bytes()}
