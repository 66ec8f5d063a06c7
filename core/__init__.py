"""cvbot's engine: domain model, ports, linear probes on frozen embeddings, and the service layer."""
from .backbones import Backbone, BackboneProvider, BackboneSettings, register_backbone, registry_entry
from .embedding import Embedder, l2_normalise
from .errors import CvError, ImageRejected, NotFound
from .evaluation import Evaluation, performance
from .images import PREDICTION_MAX_BYTES, TRAINING_MAX_BYTES, decode_rgb, validate_image
from .model import (
    ClassificationType, Domain, Image, Iteration, IterationStatus, Prediction, Project, SnapshotEntry, Tag,
    TagPrediction, TagType,
)
from .ports import BlobStore, JobRunner, UnitOfWork
from .probe import LinearProbe, LinearProbeCV
from .service import CvService, ImageResult, ImageUpload, InlineRunner, ProjectSummary

__all__ = [
    "Backbone", "BackboneProvider", "BackboneSettings", "register_backbone", "registry_entry", "Embedder",
    "l2_normalise", "CvError", "ImageRejected", "NotFound", "Evaluation", "performance",
    "PREDICTION_MAX_BYTES", "TRAINING_MAX_BYTES", "decode_rgb", "validate_image", "ClassificationType", "Domain",
    "Image", "Iteration", "IterationStatus", "Prediction", "Project", "SnapshotEntry", "Tag", "TagPrediction",
    "TagType", "BlobStore", "JobRunner", "UnitOfWork", "LinearProbe", "LinearProbeCV", "CvService", "ImageResult", "ImageUpload",
    "InlineRunner", "ProjectSummary",
]
