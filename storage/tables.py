"""SQLAlchemy table definitions (the schema Alembic's migrations build)."""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID = String(36)

projects = Table(
    "projects", metadata,
    Column("id", ID, primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("name_lower", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("domain", String(32), nullable=False),
    Column("classification_type", String(16), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("created_by", String(128)),
    Column("default_iteration_id", ID),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    # the highest iteration number handed out, so a deleted iteration's number is never given again
    Column("last_iteration_number", Integer, nullable=False, server_default="0"),
    Column("retrain", String(16)),  # cvbot's scheduled retraining: "nightly", NULL = off
    Column("prediction_retention_days", Integer),  # NULL: the install's default, 0: keep stored predictions
    # the unknown score from which predictions are flagged; NULL: the iteration's calibrated default (0.95)
    Column("unknown_threshold", Float),
    UniqueConstraint("workspace", "name_lower", name="uq_projects_workspace_name"),
)

tags = Table(
    "tags", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("name_lower", String(256), nullable=False),
    Column("type", String(16), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "name_lower", name="uq_tags_project_name"),
)

images = Table(
    "images", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("original_name", String(512), nullable=False, default=""),
    Column("source", String(64), nullable=False, default=""),
    Column("uploaded_by", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("metadata", JSON(none_as_null=True)),  # key/value strings (Custom Vision's image metadata); NULL: none
    UniqueConstraint("project_id", "sha256", name="uq_images_project_sha256"),
)

image_tags = Table(
    "image_tags", metadata,
    Column("image_id", ID, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ID, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)

iterations = Table(
    "iterations", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("failure_reason", Text),
    Column("fingerprint", String(64), nullable=False),
    Column("domain", String(32), nullable=False),
    Column("classification_type", String(16), nullable=False),
    Column("backbone_id", String(256), nullable=False, default=""),
    Column("tag_ids", JSON, nullable=False),
    Column("tag_names", JSON, nullable=False),
    Column("tag_types", JSON),  # per probe column: "Regular" | "Negative"
    Column("probe_key", String(64)),
    Column("evaluation_key", String(64)),
    Column("performance", JSON),
    Column("training_seconds", Float),
    Column("publish_name", String(256)),
    Column("publish_resource_id", String(1024)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("trained_at", DateTime(timezone=True)),
    # opaque per-adapter notification targets (SQL NULL when none, not JSON null) and when the outcome was reported
    Column("notify", JSON(none_as_null=True)),
    Column("reported_at", DateTime(timezone=True)),
    UniqueConstraint("project_id", "number", name="uq_iterations_project_number"),
)

# The exact image/tag snapshot an iteration was trained on (images may be deleted later; blobs stay referenced).
iteration_images = Table(
    "iteration_images", metadata,
    Column("iteration_id", ID, ForeignKey("iterations.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("image_id", ID, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("tag_ids", JSON, nullable=False),
)

embeddings = Table(
    "embeddings", metadata,
    Column("backbone_id", String(256), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
)

predictions = Table(
    "predictions", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("iteration_id", ID, nullable=False),
    Column("sha256", String(64), index=True),
    Column("threshold", Float, nullable=False),
    Column("results", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # core.unknown's score and the threshold it was compared with; NULL before the score (migration 0013)
    Column("unknown_score", Float),
    Column("unknown_threshold", Float),
)

Index("ix_iterations_project", iterations.c.project_id, iterations.c.number)

channel_bindings = Table(
    "channel_bindings", metadata,
    Column("workspace", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("collect_tags", JSON),
    Column("bound_by", String(128)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # images posted without a tag go to the project's untagged pool (`/cv settings keep-untagged=on`)
    Column("keep_untagged", Boolean, nullable=False, server_default=false()),
)

message_images = Table(
    "message_images", metadata,
    Column("workspace", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("message_ts", String(32), primary_key=True),
    Column("image_id", ID, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
)

workspace_keys = Table(
    "workspace_keys", metadata,
    Column("workspace", String(64), primary_key=True),
    Column("training_key", String(64), nullable=False, unique=True),
    Column("prediction_key", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

exports = Table(
    "exports", metadata,
    Column("id", ID, primary_key=True),
    Column("iteration_id", ID, ForeignKey("iterations.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("platform", String(32), nullable=False),
    Column("flavor", String(64)),
    Column("status", String(16), nullable=False),
    Column("blob_key", String(64)),
    Column("failure_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Server-wide secrets shared by every process (the image-link signing key when CVBOT_SECRET_KEY is unset).
server_secrets = Table(
    "server_secrets", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

# Resized copies and thumbnails of stored images, made on first request: source blob + variant -> the copy's blob.
image_variants = Table(
    "image_variants", metadata,
    Column("source_key", String(64), primary_key=True),
    Column("variant", String(16), primary_key=True),
    Column("blob_key", String(64), nullable=False),
)

# What `cvbot migrate` copied from another Custom Vision endpoint: a rerun skips these. Deleting the target project
# drops its records, so migrating again after that copies everything again.
migrated = Table(
    "migrated", metadata,
    Column("source", String(512), primary_key=True),  # the source endpoint, normalised
    Column("kind", String(16), primary_key=True),  # project / tag / image
    Column("source_id", String(128), primary_key=True),
    Column("target_id", ID, nullable=False),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
)

# Keys claimed once across every process (processed Slack event ids), until they expire.
claims = Table(
    "claims", metadata,
    Column("key", String(255), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Scheduled jobs' runs: the first process to insert (job, slot) runs that slot; the row is the run's log.
job_runs = Table(
    "job_runs", metadata,
    Column("job", String(64), primary_key=True),
    Column("slot", String(64), primary_key=True),  # the scheduled time the run is for (UTC, ISO 8601)
    Column("owner", String(256), nullable=False),  # host and process id of the process that ran it
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, index=True),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", JSON(none_as_null=True)),
)

# Blobs a collection found unreferenced, and since when: deleted by a later collection once past a grace period.
orphan_blobs = Table(
    "orphan_blobs", metadata,
    Column("key", String(64), primary_key=True),
    Column("found_at", DateTime(timezone=True), nullable=False),
)

# What people answered about an image: the mislabel audit's Keep / Retag, a suggestion's Skip / Confirm. One row per
# (image, kind), for the tags the image carried then (`tags_key`): it is asked again only once its tags change.
label_decisions = Table(
    "label_decisions", metadata,
    Column("image_id", ID, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("tags_key", Text, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("decided_by", String(128)),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)
