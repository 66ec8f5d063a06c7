"""Model export: the classifier graph (graph.py), the platform contract (base.py) and one module per platform."""
from .base import Convention, Exporter, ExporterUnavailable, ExportRequest, ExportSettings, ExportUnsupported
from .graph import INPUT, OUTPUT, build_model, feature_model_path, manifest, package

__all__ = ["INPUT", "OUTPUT", "Convention", "ExportRequest", "ExportSettings", "ExportUnsupported", "Exporter",
           "ExporterUnavailable", "build_model", "feature_model_path", "manifest", "package"]
