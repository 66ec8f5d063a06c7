"""The classifier as one self-contained ONNX graph: pixels in the platform's convention, the backbone's
normalisation, backbone features, L2 normalisation, the linear probe and softmax (Multiclass) or sigmoid
(Multilabel). Every platform's exporter starts from this graph.

The input is float32 NCHW, already resized to the input size; its channel order and range are the `Convention`'s.
The output has one column per tag, in labels.txt order. Given the iteration's `UnknownScorer`, a second output
`unknown_score` (one value per image, in [0, 1]) computes core.unknown's score from the same embedding and
probabilities.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..backbones.base import Backbone
from ..probe import LinearProbe
from ..unknown import UnknownScorer
from .base import Convention, ExportUnsupported

# Azure's names: its ONNX exports take "data" and answer "model_output" (the ML.NET sample binds both by name);
# cvbot's unknown score (core.unknown) is a second output, after Azure's, in the ONNX platforms' exports
INPUT, OUTPUT, UNKNOWN_OUTPUT = "data", "model_output", "unknown_score"
EXPORT_FORMAT = 2  # cvexport.manifest's "cvbotExportFormat": 2 = the platform's own input convention (issue #11)
OPSET = 17
RGB_0_255 = Convention()


def feature_model_path(backbone: Backbone) -> Path:
    """The backbone's features as an ONNX file (written once into the model cache if needed)."""
    # capabilities of a backbone that can be exported (EfficientNetLite0), looked up by name
    onnx_path: Callable[[], Path] | None = getattr(backbone, "onnx_path", None)
    export: Callable[[Path], Path] | None = getattr(backbone, "export_onnx", None)
    if onnx_path is None or export is None:
        raise ExportUnsupported(f"backbone {backbone.id} cannot be exported to ONNX")
    path = Path(onnx_path())
    if not path.exists():
        path = Path(export(path))
    return path


def build_model(backbone: Backbone, probe: LinearProbe, tag_names: list[str], tag_ids: list[str],
                metadata: dict[str, str] | None = None, convention: Convention = RGB_0_255,
                unknown: UnknownScorer | None = None) -> bytes:
    """One ONNX graph: pixels -> normalise -> backbone features -> L2 normalise -> linear -> softmax/sigmoid
    (and, with `unknown`, the unknown score as a second output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(feature_model_path(backbone)))
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportUnsupported(f"the {backbone.id} feature graph should have one input and one output")
    feat_in, feat_out = graph.input[0].name, graph.output[0].name
    size = backbone.preprocessing.size
    mean = np.asarray(backbone.preprocessing.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(backbone.preprocessing.std, np.float32).reshape(1, 3, 1, 1)
    coef = np.asarray(probe.coef_, np.float32)
    if coef.shape != (backbone.dim + 1, len(tag_ids)):
        raise ExportUnsupported(
            f"probe weights {coef.shape} do not fit {backbone.dim} features and {len(tag_ids)} tags")

    def const(name: str, value: npt.NDArray[Any]) -> None:
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))

    const("cv_scale", (1.0 / (convention.scale * std)).astype(np.float32))
    const("cv_shift", (-mean / std).astype(np.float32))
    const("cv_eps", np.asarray([1e-12], np.float32))
    const("cv_weight", coef[:-1])
    const("cv_bias", coef[-1])
    # Pixels in, the backbone's own normalisation first: (x / range - mean) / std == x * scale + shift.
    pixels = INPUT
    if convention.colors == "BGR":
        const("cv_bgr_to_rgb", np.asarray([2, 1, 0], np.int64))
        pixels = "cv_rgb"
    pre = ([helper.make_node("Gather", [INPUT, "cv_bgr_to_rgb"], [pixels], axis=1)] if pixels != INPUT else []) + [
        helper.make_node("Mul", [pixels, "cv_scale"], ["cv_scaled"]),
        helper.make_node("Add", ["cv_scaled", "cv_shift"], [feat_in])]
    post = [
        helper.make_node("ReduceL2", [feat_out], ["cv_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["cv_norm", "cv_eps"], ["cv_norm_safe"]),
        helper.make_node("Div", [feat_out, "cv_norm_safe"], ["cv_embedding"]),
        helper.make_node("MatMul", ["cv_embedding", "cv_weight"], ["cv_logits_nobias"]),
        helper.make_node("Add", ["cv_logits_nobias", "cv_bias"], ["cv_logits"]),
        helper.make_node("Sigmoid", ["cv_logits"], [OUTPUT]) if probe.multilabel
        else helper.make_node("Softmax", ["cv_logits"], [OUTPUT], axis=1),
    ]
    if unknown is not None:
        post += _unknown_nodes(unknown, const)
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, size, size]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", len(tag_ids)]))
    if unknown is not None:
        graph.output.append(helper.make_tensor_value_info(UNKNOWN_OUTPUT, TensorProto.FLOAT, ["batch"]))
    graph.name = "cvbot_classifier"
    props = {"labels": json.dumps(tag_names), "tagIds": json.dumps(tag_ids),
             "classificationType": "Multilabel" if probe.multilabel else "Multiclass", "backbone": backbone.id,
             **(metadata or {})}
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    model.producer_name = "cvbot"
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()  # Any to mypy: onnx types protobuf messages loosely
    return serialized


def _unknown_nodes(u: UnknownScorer, const: Callable[[str, npt.NDArray[Any]], None]) -> list[Any]:
    """core.unknown's score on `cv_embedding` and the probabilities: the two signals (the distance in the
    standardised embedding space), their weighted standardised mean,
    then the kernel-smoothed fraction of the out-of-fold calibration scores below it: mean Φ((raw − c) / h),
    with Φ(z) = (1 + erf(z / √2)) / 2."""
    from onnx import helper

    const("cv_u_refs", np.ascontiguousarray(u.references_.T))  # (d, n)
    const("cv_u_center", u.center_.astype(np.float32).reshape(1, -1))
    const("cv_u_inv_spread", (1.0 / u.spread_.astype(np.float64)).astype(np.float32).reshape(1, -1))
    const("cv_u_one", np.asarray([1.0], np.float32))
    # wc * (conf - cm) / cs + wd * (dist - dm) / ds == conf * a + dist * b + c
    wc, wd = u.weights_
    a, b = wc / u.confidence_std_, wd / u.distance_std_
    c = -(wc * u.confidence_mean_ / u.confidence_std_ + wd * u.distance_mean_ / u.distance_std_)
    const("cv_u_a", np.asarray([a], np.float32))
    const("cv_u_b", np.asarray([b], np.float32))
    const("cv_u_c", np.asarray([c], np.float32))
    const("cv_u_calibration", u.calibration_.astype(np.float32).reshape(1, -1))  # (1, n)
    const("cv_u_inv_width", np.asarray([1.0 / (u.bandwidth_ * np.sqrt(2.0))], np.float32))
    const("cv_u_half", np.asarray([0.5], np.float32))
    return [
        helper.make_node("ReduceMax", [OUTPUT], ["cv_u_pmax"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["cv_u_one", "cv_u_pmax"], ["cv_u_conf"]),
        helper.make_node("Sub", ["cv_embedding", "cv_u_center"], ["cv_u_centred"]),
        helper.make_node("Mul", ["cv_u_centred", "cv_u_inv_spread"], ["cv_u_scaled"]),
        helper.make_node("ReduceL2", ["cv_u_scaled"], ["cv_u_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["cv_u_norm", "cv_eps"], ["cv_u_norm_safe"]),
        helper.make_node("Div", ["cv_u_scaled", "cv_u_norm_safe"], ["cv_u_standard"]),
        helper.make_node("MatMul", ["cv_u_standard", "cv_u_refs"], ["cv_u_sims"]),
        helper.make_node("ReduceMax", ["cv_u_sims"], ["cv_u_nearest"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["cv_u_one", "cv_u_nearest"], ["cv_u_dist"]),
        helper.make_node("Mul", ["cv_u_conf", "cv_u_a"], ["cv_u_conf_s"]),
        helper.make_node("Mul", ["cv_u_dist", "cv_u_b"], ["cv_u_dist_s"]),
        helper.make_node("Add", ["cv_u_conf_s", "cv_u_dist_s"], ["cv_u_sum"]),
        helper.make_node("Add", ["cv_u_sum", "cv_u_c"], ["cv_u_raw"]),  # (batch, 1)
        helper.make_node("Sub", ["cv_u_raw", "cv_u_calibration"], ["cv_u_gap"]),  # (batch, n)
        helper.make_node("Mul", ["cv_u_gap", "cv_u_inv_width"], ["cv_u_z"]),
        helper.make_node("Erf", ["cv_u_z"], ["cv_u_erf"]),
        helper.make_node("ReduceMean", ["cv_u_erf"], ["cv_u_erf_mean"], axes=[1], keepdims=0),  # (batch,)
        helper.make_node("Mul", ["cv_u_erf_mean", "cv_u_half"], ["cv_u_half_erf"]),
        helper.make_node("Add", ["cv_u_half_erf", "cv_u_half"], [UNKNOWN_OUTPUT]),
    ]


def package(model: bytes, tag_names: list[str], manifest: dict[str, Any]) -> bytes:
    """The download of a single-file ONNX model: model.onnx, labels.txt and cvexport.manifest."""
    return package_files({"model.onnx": model}, tag_names, manifest)


def package_files(files: dict[str, bytes], tag_names: list[str], manifest: dict[str, Any]) -> bytes:
    """The download: the platform's files (names may hold folders), labels.txt (one tag per line, in output order)
    and cvexport.manifest."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("labels.txt", "\n".join(tag_names) + "\n")
        z.writestr("cvexport.manifest", json.dumps(manifest, indent=2))
    return buf.getvalue()


def manifest(backbone: Backbone, multilabel: bool, iteration_id: str, project_id: str,
             convention: Convention = RGB_0_255, platform: str = "ONNX", flavor: str | None = None,
             metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """cvexport.manifest before the exporter's files are known (ModelFileName and Files are added with them)."""
    p = backbone.preprocessing
    nchw = convention.layout == "NCHW"
    shape: list[int | str] = ["batch", 3, p.size, p.size] if nchw else ["batch", p.size, p.size, 3]
    top = 255 if convention.scale == 255.0 else convention.scale
    return {
        "DomainType": "Classification", "Platform": platform, "Flavor": flavor or "",
        "ExportFormat": platform, "ExportedBy": "cvbot", "cvbotExportFormat": EXPORT_FORMAT,
        "ProjectId": project_id, "IterationId": iteration_id,
        "ModelFileName": "model.onnx", "LabelFileName": "labels.txt",
        "ClassificationType": "Multilabel" if multilabel else "Multiclass",
        "Input": {"name": INPUT, "shape": shape, "type": "float32", "layout": convention.layout,
                  "colors": convention.colors, "range": [0, top],
                  "preprocessing": f"decode to RGB, resize the whole image to {p.size}x{p.size}, give the channels in "
                                   f"{convention.colors} order with values in 0..{top:g}; the backbone's normalisation "
                                   "is inside the model. The server itself resizes the shorter side to "
                                   f"{p.size} px (Pillow bicubic) and centre-crops, with transparent pixels on white: "
                                   "the same pixels for a square RGB image"},
        "Output": {"name": OUTPUT, "meaning": "probability per tag (row 0 of the first output), in labels.txt order"},
        "Metadata": dict(metadata or {}),
    }
