"""The export platforms by Azure's names: platform name (any case) -> the Exporter that makes its files.

A platform is one line in PLATFORMS. Its converter may be missing here: `Exporter.unavailable()` then says what to
install, and asking for the platform answers that message (API, CLI and Slack alike).
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidInput
from .base import Exporter, ExporterUnavailable, ExportSettings
from .coreml import CoreMLExporter
from .dockerfile import DockerFileExporter
from .onnx import OnnxExporter
from .openvino import OpenVinoExporter

# Azure's spelling of each platform -> its exporter.
PLATFORMS: dict[str, Callable[[ExportSettings], Exporter]] = {
    "ONNX": OnnxExporter,
    "OpenVino": OpenVinoExporter,
    "DockerFile": DockerFileExporter,
    "CoreML": CoreMLExporter,
}
UNSUPPORTED_PLATFORM = "BadRequestProjectUnsupportedExportPlatform"


def platform_names() -> list[str]:
    """Every registered platform, spelled as Azure spells it."""
    return list(PLATFORMS)


def canonical_platform(platform: str | None) -> str:
    """Azure's spelling of `platform` (matched in any case), or Azure's error for an unknown one."""
    key = str(platform or "").strip().lower()
    for name in PLATFORMS:
        if name.lower() == key:
            return name
    raise InvalidInput(f"cannot export to {platform!r}; the platforms are {', '.join(PLATFORMS)}",
                       UNSUPPORTED_PLATFORM)


def exporter(platform: str | None, settings: ExportSettings | None = None) -> Exporter:
    """The exporter of `platform` (any case), built from `settings`; unknown: Azure's unsupported-platform code."""
    return PLATFORMS[canonical_platform(platform)](settings or ExportSettings())


def usable_exporter(platform: str | None, flavor: str | None,
                    settings: ExportSettings | None = None) -> tuple[Exporter, str | None]:
    """The exporter and the canonical flavor, when its converter can run here; otherwise Azure's error codes
    (unknown platform or flavor) or ExporterUnavailable saying what to install."""
    found = exporter(platform, settings)
    canonical = found.canonical_flavor(flavor)
    missing = found.unavailable()
    if missing:
        raise ExporterUnavailable(f"{found.platform} export is not available on this server: {missing}")
    return found, canonical
