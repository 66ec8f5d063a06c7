"""Model export: the classifier graph (graph.py), the platform contract (base.py), one module per platform, and
the registry of platforms by Azure's names (platforms.py)."""
from .base import Convention, Exporter, ExporterUnavailable, ExportRequest, ExportSettings, ExportUnsupported
from .graph import EXPORT_FORMAT, INPUT, OUTPUT, build_model, feature_model_path, manifest, package, package_files
from .platforms import PLATFORMS, canonical_platform, exporter, platform_names, usable_exporter

__all__ = ["EXPORT_FORMAT", "INPUT", "OUTPUT", "PLATFORMS", "Convention", "ExportRequest", "ExportSettings",
           "ExportUnsupported", "Exporter", "ExporterUnavailable", "build_model", "canonical_platform", "exporter",
           "feature_model_path", "manifest", "package", "package_files", "platform_names", "usable_exporter"]
