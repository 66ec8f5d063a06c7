"""The use cases, one module per area. Each area's class takes `Deps` and a `Scope`; `UseCases(deps, scope)` holds
them all for one caller, so an adapter gets no way in without saying whose call it is."""
from __future__ import annotations

from .base import Deps, EmbeddingStats, InlineRunner
from .channels import Channels, workspace_for_key
from .doctor import Check, DoctorReport, doctor
from .exports import Exports, export_file
from .images import ImageResult, Images, ImageUpload, MetadataResult, Order, TagPairs
from .iterations import Iterations
from .labelling import AuditItem, Labelling, Suggestion
from .links import LinkedImage, link_secret, linked_image
from .maintenance import recover
from .migration import Migration, MigrationProgress, MigrationSummary, ProjectOutcome, map_domain
from .notifications import Notifications
from .prediction import Predictions
from .projects import Projects, ProjectSummary
from .schedule import JOBS, Schedule, ScheduleSettings, claim_once, run_once
from .scope import Role, Scope
from .tags import Tags
from .training import Training
from .training_job import TrainingJob, embed_blobs
from .transfer import ArchiveSummary, ArchiveTooLarge, ProjectExport, Transfer


class UseCases:
    """Every area's use cases for one scope."""

    def __init__(self, deps: Deps, scope: Scope):
        self.deps = deps
        self.scope = scope
        self.projects = Projects(deps, scope)
        self.tags = Tags(deps, scope)
        self.images = Images(deps, scope)
        self.training = Training(deps, scope)
        self.iterations = Iterations(deps, scope)
        self.predictions = Predictions(deps, scope)
        self.exports = Exports(deps, scope)
        self.channels = Channels(deps, scope)
        self.notifications = Notifications(deps, scope)
        self.transfer = Transfer(deps, scope)
        self.migration = Migration(deps, scope)
        self.labelling = Labelling(deps, scope)


__all__ = [
    "Channels", "Check", "Deps", "DoctorReport", "EmbeddingStats", "Exports", "ImageResult", "ImageUpload", "Images",
    "InlineRunner", "Iterations", "LinkedImage", "MetadataResult", "Notifications", "Order", "Predictions",
    "ProjectSummary", "Projects", "Role", "Scope", "TagPairs", "Tags", "Training", "TrainingJob", "UseCases", "doctor",
    "embed_blobs", "export_file", "link_secret", "linked_image", "recover", "workspace_for_key",
]
__all__ += ["Migration", "MigrationProgress", "MigrationSummary", "ProjectOutcome", "map_domain"]
__all__ += ["ArchiveSummary", "ArchiveTooLarge", "ProjectExport", "Transfer"]
__all__ += ["JOBS", "Schedule", "ScheduleSettings", "claim_once", "run_once"]
__all__ += ["AuditItem", "Labelling", "Suggestion"]
