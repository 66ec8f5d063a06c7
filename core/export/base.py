"""What every export platform shares: the input convention its samples expect, and the exporter contract.

An exporter turns the classifier graph (ONNX, built by `graph.build_model` for the exporter's `convention`) into
the files of the download; `package` zips them with labels.txt and cvexport.manifest.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import CvError


class ExportUnsupported(CvError):
    code = "BadRequestExportValidationFailed"


class ExporterUnavailable(CvError):
    """The converter a platform needs is not installed here; the message says what to install."""
    code = "BadRequestExportValidationFailed"


@dataclass(frozen=True)
class Convention:
    """The pixels a platform's model takes: channel order, range and layout (of the input the *samples* feed)."""
    colors: Literal["RGB", "BGR"] = "RGB"
    scale: float = 255.0  # 255.0: pixels in 0..255; 1.0: pixels in 0..1
    layout: Literal["NCHW", "NHWC"] = "NCHW"


@dataclass(frozen=True)
class ExportSettings:
    """Where the converters live: read once at the edge (cvbot/config.py), handed to every exporter."""
    converter_python: str | None = None   # the interpreter of the converters' own virtualenv (TensorFlow, ...)


@dataclass(frozen=True)
class ExportRequest:
    onnx: bytes                       # the classifier graph, NCHW, for the exporter's convention
    tag_names: list[str]
    manifest: dict[str, Any]          # cvbot's manifest so far; an exporter may add keys
    flavor: str | None
    workdir: Path                     # an empty scratch directory the exporter may use
    metadata: dict[str, str] = field(default_factory=dict)


class Exporter(ABC):
    platform: str
    flavors: tuple[str | None, ...] = (None,)
    aliases: dict[str, str | None] = {}   # accepted flavor name -> canonical flavor
    convention: Convention = Convention()
    usage: str = ""                       # a short note on running the files, shown with the download (Slack, CLI)

    def __init__(self, settings: ExportSettings | None = None):
        self.settings = settings or ExportSettings()

    def canonical_flavor(self, flavor: str | None) -> str | None:
        """The flavor as stored, or ExportUnsupported naming the ones this platform has."""
        if flavor in (None, ""):
            return self.flavors[0]
        for f in self.flavors:
            if f is not None and f.lower() == str(flavor).lower():
                return f
        for alias, canonical in self.aliases.items():
            if alias.lower() == str(flavor).lower():
                return canonical
        known = ", ".join(f for f in self.flavors if f) or "none"
        # Azure's SDK names no code of its own for a flavor: its export validation code
        raise ExportUnsupported(f"{self.platform} has no flavor {flavor!r} (flavors: {known})")

    def unavailable(self) -> str | None:
        """None when the converter can run here; otherwise what to install, said to the user."""
        return None

    def carries_unknown(self, flavor: str | None) -> bool:
        """Whether the files of `flavor` carry cvbot's unknown score (core.unknown) as an output after Azure's:
        when True, ExportRequest.onnx has the second output graph.UNKNOWN_OUTPUT and the files must keep it."""
        return False

    @abstractmethod
    def files(self, request: ExportRequest) -> dict[str, bytes]:
        """The platform's files for the zip (model files, and any extra files such as a Dockerfile)."""
