"""The port `cvbot migrate` reads from: another Custom Vision Training endpoint (Azure's, or another cvbot), as
its public API describes projects, tags and images. `cvbot/source.py` implements it over HTTP."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SourceProject:
    """A project of another Custom Vision Training endpoint, as its API describes it."""

    id: str
    name: str
    description: str = ""
    domain_name: str | None = None  # the name of its domain ("General [A1]", "Retail (compact)"...)
    domain_type: str | None = None  # "Classification" or "ObjectDetection"
    classification_type: str | None = None  # "Multiclass" / "Multilabel"; None for object detection
    threshold: float | None = None


@dataclass(frozen=True)
class SourceTag:
    id: str
    name: str
    type: str = "Regular"
    description: str = ""


@dataclass(frozen=True)
class SourceImage:
    id: str
    uri: str  # originalImageUri: signed, fetched without the key
    tag_ids: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    name: str = ""  # the file name it was uploaded with, where the source keeps one (cvbot's originalName)


class SourceProjects(ABC):
    """Another Custom Vision Training endpoint that `cvbot migrate` copies from (Azure's, or another cvbot)."""

    endpoint: str  # identifies the source in the migration records

    @abstractmethod
    def projects(self) -> list[SourceProject]: ...

    @abstractmethod
    def tags(self, project_id: str) -> list[SourceTag]: ...

    @abstractmethod
    def images(self, project_id: str, tagged: bool, skip: int, take: int) -> list[SourceImage]:
        """One page of the project's tagged (or untagged) images."""

    def image_count(self, project_id: str) -> int:
        """How many images (tagged and untagged) the project has; only for progress (0: unknown)."""
        return 0

    @abstractmethod
    def image_bytes(self, image: SourceImage) -> bytes: ...

    @abstractmethod
    def last_performance(self, project_id: str) -> dict[str, Any] | None:
        """The performance of the project's last trained iteration (precision, recall, averagePrecision), if any."""
