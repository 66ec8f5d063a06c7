"""Ports the core needs; `storage/` implements them, tests may fake them.

blobs: the blob store; repositories: the repositories and the unit of work; jobs: the job runner."""
from .blobs import BlobStore, PartialFile
from .jobs import Job, JobRunner
from .repositories import (
    ChannelRepository,
    ClaimRepository,
    DecisionRepository,
    EmbeddingRepository,
    ExportRepository,
    ImageRepository,
    IterationRepository,
    JobRunRepository,
    KeyRepository,
    MessageRepository,
    MigrationRepository,
    OrphanRepository,
    PredictionRepository,
    ProjectRepository,
    SecretRepository,
    TagRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    VariantRepository,
)

__all__ = [
    "BlobStore",
    "ChannelRepository",
    "ClaimRepository",
    "DecisionRepository",
    "EmbeddingRepository",
    "ExportRepository",
    "ImageRepository",
    "IterationRepository",
    "Job",
    "JobRunRepository",
    "JobRunner",
    "KeyRepository",
    "MessageRepository",
    "MigrationRepository",
    "OrphanRepository",
    "PartialFile",
    "PredictionRepository",
    "ProjectRepository",
    "SecretRepository",
    "TagRepository",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "VariantRepository",
]
