"""Domain model: Custom Vision's concepts as plain dataclasses."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def new_id() -> str:
    return str(uuid.uuid4())


class Domain(str, Enum):
    General = "General"
    Food = "Food"
    Landmarks = "Landmarks"
    Retail = "Retail"
    Adult = "Adult"
    Compact = "Compact"

    @classmethod
    def parse(cls, value: str) -> Domain:
        for d in cls:
            if d.value.lower() == str(value).strip().lower():
                return d
        raise ValueError(f"unknown domain {value!r}; choose one of: {', '.join(d.value for d in cls)}")


class ClassificationType(str, Enum):
    Multiclass = "Multiclass"
    Multilabel = "Multilabel"

    @classmethod
    def parse(cls, value: str) -> ClassificationType:
        for c in cls:
            if c.value.lower() == str(value).strip().lower():
                return c
        raise ValueError(f"unknown classification type {value!r}; choose Multiclass or Multilabel")


class TagType(str, Enum):
    Regular = "Regular"
    Negative = "Negative"


class IterationStatus(str, Enum):
    Queued = "Queued"
    Training = "Training"
    Completed = "Completed"
    Failed = "Failed"

    @property
    def running(self) -> bool:
        return self in (IterationStatus.Queued, IterationStatus.Training)


class ExportStatus(str, Enum):
    Exporting = "Exporting"
    Done = "Done"
    Failed = "Failed"


DEFAULT_WORKSPACE = "default"
DEFAULT_UNKNOWN_THRESHOLD = 0.95  # flags about 5 % of images like the training set (core.unknown)


@dataclass
class Project:
    name: str
    domain: Domain = Domain.Compact
    classification_type: ClassificationType = ClassificationType.Multiclass
    description: str = ""
    threshold: float = 0.5
    workspace: str = DEFAULT_WORKSPACE
    created_by: str | None = None
    default_iteration_id: str | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    modified_at: datetime = field(default_factory=utcnow)
    # cvbot's own settings (no Custom Vision counterpart): scheduled retraining ("nightly", None = off) and how
    # many days stored predictions are kept (None: the install's default, 0: for ever)
    retrain: str | None = None
    prediction_retention_days: int | None = None
    # the unknown score from which predictions are flagged (core.unknown); None: the iteration's default (0.95)
    unknown_threshold: float | None = None


@dataclass
class Tag:
    project_id: str
    name: str
    type: TagType = TagType.Regular
    description: str = ""
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    image_count: int = 0


@dataclass
class Image:
    project_id: str
    sha256: str
    width: int
    height: int
    original_name: str = ""
    source: str = ""
    uploaded_by: str | None = None
    tag_ids: list[str] = field(default_factory=list)
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    metadata: dict[str, str] = field(default_factory=dict)  # Custom Vision's per-image key/value pairs


@dataclass
class SnapshotEntry:
    image_id: str
    sha256: str
    tag_ids: list[str]


@dataclass
class Iteration:
    project_id: str
    number: int
    domain: Domain
    classification_type: ClassificationType
    backbone_id: str
    name: str = ""
    status: IterationStatus = IterationStatus.Queued
    failure_reason: str | None = None
    fingerprint: str = ""
    snapshot: list[SnapshotEntry] = field(default_factory=list)
    # tag ids in the column order of the probe, with their names at training time
    tag_ids: list[str] = field(default_factory=list)
    tag_names: list[str] = field(default_factory=list)
    tag_types: list[TagType] = field(default_factory=list)
    probe_key: str | None = None
    evaluation_key: str | None = None
    performance: dict[str, Any] | None = None
    training_seconds: float | None = None
    publish_name: str | None = None
    publish_resource_id: str | None = None  # the prediction resource a client named when publishing, kept as sent
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    trained_at: datetime | None = None
    # where adapters announce the outcome, as opaque data per adapter (e.g. {"slack": {"channel": …, "ts": …}}),
    # and when the final outcome was reported there; kept across restarts so no announcement is lost
    notify: dict[str, Any] | None = None
    reported_at: datetime | None = None


@dataclass
class TagPrediction:
    tag_id: str
    tag_name: str
    probability: float
    tag_type: TagType = TagType.Regular


@dataclass
class Prediction:
    project_id: str
    iteration_id: str | None  # None: a zero-shot answer from the tag names (no iteration trained yet)
    predictions: list[TagPrediction]
    threshold: float
    sha256: str | None = None
    stored: bool = False
    zero_shot: bool = False  # answered by core.zero_shot, never stored
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    # how unlike the iteration's training images the image is, in [0, 1] (core.unknown); None when the iteration
    # predates the score, or for a stored prediction read back (the score is not kept with it)
    unknown_score: float | None = None
    unknown_threshold: float | None = None  # the score from which the image counts as unknown

    @property
    def above_threshold(self) -> list[TagPrediction]:
        return [p for p in self.predictions if p.probability >= self.threshold]

    @property
    def unknown(self) -> bool:
        """True when the image looks like nothing the iteration was trained on."""
        return (self.unknown_score is not None and self.unknown_threshold is not None
                and self.unknown_score >= self.unknown_threshold)


@dataclass
class ChannelBinding:
    """A chat channel bound to a project; `collect_tags` set while collect mode is on."""

    workspace: str
    channel_id: str
    project_id: str
    collect_tags: list[str] | None = None
    bound_by: str | None = None
    updated_at: datetime = field(default_factory=utcnow)
    keep_untagged: bool = False  # images posted without a tag join the project's untagged pool


class DecisionKind(str, Enum):
    Audit = "audit"  # the mislabel audit asked about the image's stored tags
    Suggest = "suggest"  # a suggestion for an untagged image was answered


@dataclass
class LabelDecision:
    """What a person answered about one image (Keep / Retag in the audit, Skip / Confirm on a suggestion), for the
    tags the image carried then: it is not asked about again while its tags keep `tags_key`."""

    project_id: str
    image_id: str
    kind: DecisionKind
    tags_key: str
    decision: str  # keep | retag | skip | confirm
    decided_by: str | None = None
    decided_at: datetime = field(default_factory=utcnow)


@dataclass
class WorkspaceKeys:
    workspace: str
    training_key: str
    prediction_key: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class Export:
    iteration_id: str
    platform: str
    status: ExportStatus = ExportStatus.Exporting
    blob_key: str | None = None
    flavor: str | None = None
    failure_reason: str | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)


class JobRunStatus(str, Enum):
    Running = "Running"
    Done = "Done"
    Failed = "Failed"


@dataclass
class JobRun:
    """One run of a scheduled job: `slot` names the scheduled time it is for, so that every process of an install
    that fires the job for that time finds the run claimed by the first one (`owner` names that process)."""

    job: str
    slot: str
    owner: str
    started_at: datetime = field(default_factory=utcnow)
    status: JobRunStatus = JobRunStatus.Running
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
