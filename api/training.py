"""The Training API: thin handlers (parse, call one scoped use case off the event loop, render)."""
from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from core import errors
from core.backbones import domain_catalogue
from core.export import platform_names
from core.images import TRAINING_MAX_BYTES
from core.model import ClassificationType, TagType
from core.rules import clean_metadata
from core.usecases import export_file
from core.usecases.images import ImageUpload, Order
from core.views import tag_json

from . import render
from .domains import (
    OBJECT_DETECTION_DOMAINS,
    domain_json,
    lookup_domain_json,
    object_detection_domain_json,
    parse_domain,
)
from .http import (
    MAX_BATCH,
    MAX_TAGS_PER_IMAGE,
    ApiError,
    Ctx,
    Param,
    b64decode,
    base_url,
    field_list,
    field_str,
    is_guid,
    json_response,
    no_content,
    read_images,
    shown,
    training,
)
from .links import links
from .urls import fetch_image

REQUEST_MAX_BYTES = 64 * 1024 * 1024
UUID = "uuid"
TAG_IDS = Param("tagIds", "array", max_items=20, description="tag ids, comma-separated")
ORDER_BY = Param("orderBy", enum=("Newest", "Oldest"))
TAKE = Param("take", "integer", minimum=0, maximum=256)
SKIP = Param("skip", "integer", minimum=0)
ITERATION_ID = Param("iterationId", format=UUID)


def _tag_names(ctx: Ctx, project_id: str) -> dict[str, str]:
    return {t.id: t.name for t in ctx.cv.tags.list(project_id)}


def _ctype(value: str | None) -> ClassificationType | None:
    if value is None:
        return None
    try:
        return ClassificationType.parse(value)
    except ValueError as e:
        raise ApiError(str(e), "BadRequestProjectUnknownClassification") from None


def _tag_type(value) -> TagType | None:
    if value is None:
        return None
    for t in TagType:
        if isinstance(value, str) and t.value.lower() == value.strip().lower():
            return t
    raise ApiError(f"unknown tag type {value!r}; use Regular or Negative", "BadRequestTagType")


def _page(ctx: Ctx, default_take: int = 50) -> tuple[int, int, Order]:
    take = ctx.q_int("take", default_take, 0, 256)
    skip = ctx.q_int("skip", 0, 0)
    order = (ctx.q_str("orderBy") or "Newest").strip().lower()
    if order not in ("newest", "oldest"):
        raise ApiError("orderBy must be Newest or Oldest", "BadRequestInvalid")
    return skip, take, Order.Oldest if order == "oldest" else Order.Newest


def _list_images(ctx: Ctx, project_id: str, tagged: bool | None, tag_ids: list[str] | None,
                 skip: int, take: int, order: Order) -> list[dict]:
    images = ctx.cv.images.list(project_id, tagged=tagged, tag_ids=tag_ids, skip=skip, take=take, order=order)
    names, uris = _tag_names(ctx, project_id), links(ctx)
    return [render.image(i, names, uris) for i in images]


def _tagging_status(ctx: Ctx) -> bool | None:
    status = (ctx.q_str("taggingStatus") or "All").strip().lower()
    if status not in ("all", "tagged", "untagged"):
        raise ApiError("taggingStatus must be All, Tagged or Untagged", "BadRequestInvalid")
    return {"all": None, "tagged": True, "untagged": False}[status]


def _add_images(ctx: Ctx, project_id: str, uploads: list[ImageUpload]) -> dict:
    """Store a batch and answer Custom Vision's ImageCreateSummary."""
    results = ctx.cv.images.add(project_id, uploads, source="api")
    return render.image_results(results, _tag_names(ctx, project_id), links(ctx))


def _summary_response(summary: dict):
    return json_response(summary, 200 if summary["isBatchSuccessful"] else 207)


def _check_batch(entries: list) -> None:
    if not entries:
        raise ApiError("the batch has no images", "BadRequestImageBatch")
    if len(entries) > MAX_BATCH:
        raise ApiError(f"at most {MAX_BATCH} images in one batch", "BadRequestImageBatch")


def _entry_tags(entry: dict, batch_tags: list[str]) -> list[str]:
    tags = field_list(entry, "tagIds")
    if not all(isinstance(t, str) for t in tags):
        raise ApiError("tagIds must be a list of ids", "BadRequestInvalidIds")
    return list(dict.fromkeys(list(tags) + batch_tags))


async def _json_batch(ctx: Ctx, required_field: str) -> tuple[str, list[dict], list[str], dict]:
    """(project id, image entries, batch-wide tag ids, batch-wide metadata) of a JSON upload batch."""
    body = await ctx.json_body()
    entries, batch_tags = field_list(body, "images"), field_list(body, "tagIds")
    _check_batch(entries)
    if not all(isinstance(t, str) for t in batch_tags):
        raise ApiError("tagIds must be a list of ids", "BadRequestInvalidIds")
    if not all(isinstance(e, dict) and e.get(required_field) is not None for e in entries):
        raise ApiError(f"each image must be an object with '{required_field}'", "BadRequestImageBatch")
    metadata = body.get("metadata") or {}
    return ctx.path("projectId"), entries, batch_tags, clean_metadata(metadata)


# =========================================================================== domains
@training("GET", "/domains", "get_domains", result="[Domain]")
async def get_domains(ctx: Ctx):
    """The six classification domains (each exportable to the registered platforms), then Azure's
    object-detection domains, listed with enabled=false: creating a project with one is refused
    (BadRequestUnsupportedDomain)."""
    return json_response([domain_json(parse_domain(str(d["name"])), d) for d in domain_catalogue()]
                         + [object_detection_domain_json(i) for i in OBJECT_DETECTION_DOMAINS])


@training("GET", "/domains/{domainId}", "get_domain", result="Domain")
async def get_domain(ctx: Ctx):
    """One domain by id (an object-detection one is listed disabled)."""
    return json_response(lookup_domain_json(ctx.path("domainId"), domain_catalogue()))


# =========================================================================== projects
@training("GET", "/projects", "get_projects", result="[Project]")
async def get_projects(ctx: Ctx):
    """The projects of the key's workspace."""
    projects = await ctx.run(ctx.cv.projects.list)
    return json_response([render.project(p) for p in projects])


@training("POST", "/projects", "create_project", result="Project", query=(
    Param("name", required=True), Param("description"), Param("domainId", format=UUID),
    Param("classificationType", enum=("Multiclass", "Multilabel")), Param("targetExportPlatforms", "array")))
async def create_project(ctx: Ctx):
    """Create a project (without domainId: the server's default domain, Compact unless configured)."""
    name = ctx.q_str("name", required=True)
    raw_domain = ctx.q_str("domainId")
    domain = parse_domain(raw_domain) if raw_domain else ctx.settings.default_domain
    ctype = _ctype(ctx.q_str("classificationType")) or ClassificationType.Multiclass
    p = await ctx.run(ctx.cv.projects.create, name, domain, ctype, ctx.q_str("description", ""), created_by="api")
    return json_response(render.project(p))


@training("GET", "/projects/{projectId}", "get_project", result="Project")
async def get_project(ctx: Ctx):
    """One project."""
    return json_response(render.project(await ctx.run(ctx.cv.projects.get, ctx.path("projectId"))))


@training("DELETE", "/projects/{projectId}", "delete_project", statuses=(204,))
async def delete_project(ctx: Ctx):
    """Delete a project with its images, iterations and predictions (refused, as by Custom Vision, while an
    iteration is published: BadRequestIterationIsPublished)."""
    await ctx.run(ctx.cv.projects.delete, ctx.path("projectId"))
    return no_content()


@training("PATCH", "/projects/{projectId}", "update_project", body="Project", result="Project")
async def update_project(ctx: Ctx):
    """Rename, redescribe, or change the domain or classification type (applies to the next training)."""
    pid = ctx.path("projectId")
    body = await ctx.json_body()
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise ApiError("settings must be an object", "BadRequestInvalid")
    raw_domain = field_str(settings, "domainId")
    domain = parse_domain(raw_domain) if raw_domain else None
    ctype = _ctype(field_str(settings, "classificationType"))
    name, description = field_str(body, "name"), field_str(body, "description")
    own = settings.get("cvbot") or {}  # cvbot's own settings (core/views.py: cvbot_settings_json)
    if not isinstance(own, dict):
        raise ApiError("settings.cvbot must be an object", "BadRequestInvalid")
    retrain = field_str(own, "retrain")
    retention = own.get("predictionRetentionDays")
    if retention is not None and (isinstance(retention, bool) or not isinstance(retention, int | str)):
        raise ApiError("settings.cvbot.predictionRetentionDays must be a number of days", "BadRequestInvalid")
    if "predictionRetentionDays" in own and retention is None:
        retention = "default"  # null: back to the install's default
    unknown = own.get("unknownThreshold")
    if unknown is not None and (isinstance(unknown, bool) or not isinstance(unknown, int | float)):
        raise ApiError("settings.cvbot.unknownThreshold must be a number in [0, 1]", "BadRequestInvalid")
    if "unknownThreshold" in own and unknown is None:
        unknown = "default"  # null: back to the default (docs/unknown.md)
    p = await ctx.run(ctx.cv.projects.update, pid, name=name, description=description, domain=domain,
                      classification_type=ctype, retrain=retrain, prediction_retention=retention,
                      unknown_threshold=unknown)
    return json_response(render.project(p))


@training("GET", "/projects/{projectId}/export", "export_project", result="ProjectExport")
async def export_project(ctx: Ctx):
    """Counts and a token with which import_project copies the project (in this workspace, for 7 days)."""
    export = await ctx.run(ctx.cv.transfer.export, ctx.path("projectId"))
    return json_response(render.project_export(export))


@training("POST", "/projects/import", "import_project", result="Project", query=(
    Param("token", required=True), Param("name")))
async def import_project(ctx: Ctx):
    """A full copy of an exported project: settings, tags, images with their tags (iterations are not copied)."""
    token = ctx.q_str("token", required=True)
    p = await ctx.run(ctx.cv.transfer.import_token, token, ctx.q_str("name"))
    return json_response(render.project(p))


# =========================================================================== tags
@training("GET", "/projects/{projectId}/tags", "get_tags", result="[Tag]", query=(ITERATION_ID,))
async def get_tags(ctx: Ctx):
    """The project's tags with their image counts (with iterationId: the tags that iteration was trained on)."""
    tags = await ctx.run(ctx.cv.tags.list, ctx.path("projectId"), ctx.q_str("iterationId"))
    return json_response([tag_json(t) for t in tags])


@training("POST", "/projects/{projectId}/tags", "create_tag", result="Tag", query=(
    Param("name", required=True), Param("description"), Param("type", enum=("Regular", "Negative"))))
async def create_tag(ctx: Ctx):
    """Create a tag (type Regular or Negative)."""
    name, description = ctx.q_str("name", required=True), ctx.q_str("description", "")
    tag_type = _tag_type(ctx.q_str("type")) or TagType.Regular
    tag = await ctx.run(ctx.cv.tags.create, ctx.path("projectId"), name, tag_type, description)
    return json_response(tag_json(tag))


@training("GET", "/projects/{projectId}/tags/{tagId}", "get_tag", result="Tag", query=(ITERATION_ID,))
async def get_tag(ctx: Ctx):
    """One tag."""
    return json_response(tag_json(await ctx.run(ctx.cv.tags.get, ctx.path("projectId"), ctx.path("tagId"))))


@training("PATCH", "/projects/{projectId}/tags/{tagId}", "update_tag", body="Tag", result="Tag")
async def update_tag(ctx: Ctx):
    """Rename a tag, change its description or type."""
    body = await ctx.json_body()
    name, description, tag_type = field_str(body, "name"), field_str(body, "description"), _tag_type(body.get("type"))
    tag = await ctx.run(ctx.cv.tags.update, ctx.path("projectId"), ctx.path("tagId"), name=name,
                        description=description, type=tag_type)
    return json_response(tag_json(tag))


@training("DELETE", "/projects/{projectId}/tags/{tagId}", "delete_tag", statuses=(204,))
async def delete_tag(ctx: Ctx):
    """Delete a tag (its images stay, untagged from it)."""
    await ctx.run(ctx.cv.tags.delete, ctx.path("projectId"), ctx.path("tagId"))
    return no_content()


# =========================================================================== images
@training("GET", "/projects/{projectId}/images", "get_images", result="[Image]", query=(
    ITERATION_ID, TAG_IDS, Param("taggingStatus", enum=("All", "Tagged", "Untagged")), Param("$filter"),
    ORDER_BY, TAKE, SKIP))
async def get_images(ctx: Ctx):
    """A page of the project's images (newest first by default)."""
    pid = ctx.path("projectId")
    tagged, tag_ids = _tagging_status(ctx), ctx.q_ids("tagIds", 20, "tag id")
    skip, take, order = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, pid, tagged, tag_ids, skip, take, order))


@training("POST", "/projects/{projectId}/images", "create_images_from_data", body="images", result="ImageCreateSummary",
          statuses=(200, 207), query=(TAG_IDS,), max_body=REQUEST_MAX_BYTES)
async def create_images_from_data(ctx: Ctx):
    """Upload images as multipart/form-data (up to 64, 6 MB each) or one raw image body; tagIds apply to all."""
    pid = ctx.path("projectId")
    tag_ids = ctx.q_ids("tagIds", MAX_TAGS_PER_IMAGE, "tag id") or []
    await ctx.run(ctx.cv.projects.get, pid)
    files = await read_images(ctx.request, ctx.max_body)
    _check_batch(files)
    uploads = [ImageUpload(f.data, f.name, tag_ids) for f in files]
    return _summary_response(await ctx.run(_add_images, ctx, pid, uploads))


@training("POST", "/projects/{projectId}/images/files", "create_images_from_files", body="ImageFileCreateBatch",
          result="ImageCreateSummary", statuses=(200, 207), max_body=REQUEST_MAX_BYTES)
async def create_images_from_files(ctx: Ctx):
    """Upload a JSON batch of base64 images (up to 64), each with its own tagIds."""
    pid, entries, batch_tags, metadata = await _json_batch(ctx, "contents")
    uploads = []
    for n, e in enumerate(entries):
        data = b64decode(e["contents"])
        uploads.append(ImageUpload(data, field_str(e, "name") or f"image {n + 1}", _entry_tags(e, batch_tags),
                                   None if data is not None else ("ErrorImageFormat", "the contents are not base64"),
                                   metadata))
    return _summary_response(await ctx.run(_add_images, ctx, pid, uploads))


@training("POST", "/projects/{projectId}/images/urls", "create_images_from_urls", body="ImageUrlCreateBatch",
          result="ImageCreateSummary", statuses=(200, 207))
async def create_images_from_urls(ctx: Ctx):
    """Upload images by URL; only hosts allowed by CVBOT_ALLOWED_URL_HOSTS are fetched. A failed image's message
    names the cause (host not allowed, the HTTP status, too large, not an image)."""
    pid, entries, batch_tags, metadata = await _json_batch(ctx, "url")
    await ctx.run(ctx.cv.projects.get, pid)
    uploads = []
    for e in entries:
        if not isinstance(e["url"], str):
            raise ApiError("each image must be an object with a url", "BadRequestImageBatch")
        try:
            data, problem = await fetch_image(e["url"], ctx.settings.allowed_url_hosts, TRAINING_MAX_BYTES), None
        except errors.ImageRejected as rejected:  # too large (declared or while streaming): say so
            data, problem = None, (rejected.status, rejected.message)
        except errors.CvError as failed:  # the cause, in words written for the client: host not allowed, HTTP
            data, problem = None, ("ErrorSource", failed.message)  # status, unreachable, not http(s)...
        uploads.append(ImageUpload(data, e["url"], _entry_tags(e, batch_tags), problem, metadata))
    return _summary_response(await ctx.run(_add_images, ctx, pid, uploads))


@training("DELETE", "/projects/{projectId}/images", "delete_images", statuses=(204,), query=(
    Param("imageIds", "array", max_items=256), Param("allImages", "boolean"), Param("allIterations", "boolean")))
async def delete_images(ctx: Ctx):
    """Delete images by id, or all of them with allImages=true (iterations keep their own copies)."""
    pid = ctx.path("projectId")
    ids, all_images = ctx.q_ids("imageIds", 256, "image id"), ctx.q_bool("allImages", False)
    if not ids and not all_images:
        raise ApiError("give imageIds or allImages=true", "BadRequestRequiredParamIsNull")
    await ctx.run(ctx.cv.images.delete, pid, ids, all_images=bool(all_images))
    return no_content()


@training("GET", "/projects/{projectId}/images/count", "get_image_count", result="integer", query=(
    ITERATION_ID, Param("taggingStatus", enum=("All", "Tagged", "Untagged")), Param("$filter"), TAG_IDS))
async def get_image_count(ctx: Ctx):
    """How many images match."""
    tagged, tag_ids = _tagging_status(ctx), ctx.q_ids("tagIds", None, "tag id")
    return json_response(await ctx.run(ctx.cv.images.count, ctx.path("projectId"), tagged=tagged, tag_ids=tag_ids))


@training("GET", "/projects/{projectId}/images/id", "get_images_by_ids", result="[Image]", query=(
    Param("imageIds", "array", max_items=256), ITERATION_ID))
async def get_images_by_ids(ctx: Ctx):
    """Images by id (unknown ids are left out)."""
    pid = ctx.path("projectId")
    ids = ctx.q_ids("imageIds", 256, "image id") or []

    def images():
        found = ctx.cv.images.get_many(pid, ids)
        names, uris = _tag_names(ctx, pid), links(ctx)
        return [render.image(i, names, uris) for i in found]

    return json_response(await ctx.run(images))


@training("GET", "/projects/{projectId}/images/tagged", "get_tagged_images", result="[Image]", query=(
    ITERATION_ID, TAG_IDS, ORDER_BY, TAKE, SKIP))
async def get_tagged_images(ctx: Ctx):
    """A page of tagged images (with tagIds: those carrying any of the tags)."""
    pid, tag_ids = ctx.path("projectId"), ctx.q_ids("tagIds", 20, "tag id")
    skip, take, order = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, pid, True, tag_ids, skip, take, order))


@training("GET", "/projects/{projectId}/images/tagged/count", "get_tagged_image_count", result="integer",
          query=(ITERATION_ID, TAG_IDS))
async def get_tagged_image_count(ctx: Ctx):
    """How many tagged images (with tagIds: carrying any of the tags)."""
    tag_ids = ctx.q_ids("tagIds", None, "tag id")
    return json_response(await ctx.run(ctx.cv.images.count, ctx.path("projectId"), tagged=True, tag_ids=tag_ids))


@training("GET", "/projects/{projectId}/images/untagged", "get_untagged_images", result="[Image]", query=(
    ITERATION_ID, ORDER_BY, TAKE, SKIP))
async def get_untagged_images(ctx: Ctx):
    """A page of untagged images."""
    skip, take, order = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, ctx.path("projectId"), False, None, skip, take, order))


@training("GET", "/projects/{projectId}/images/untagged/count", "get_untagged_image_count", result="integer",
          query=(ITERATION_ID,))
async def get_untagged_image_count(ctx: Ctx):
    """How many untagged images."""
    return json_response(await ctx.run(ctx.cv.images.count, ctx.path("projectId"), tagged=False))


@training("POST", "/projects/{projectId}/images/tags", "create_image_tags", body="ImageTagCreateBatch",
          result="ImageTagCreateSummary")
async def create_image_tags(ctx: Ctx):
    """Add tags to images: {"tags": [{"imageId", "tagId"}]}."""
    body = await ctx.json_body()
    pairs = field_list(body, "tags")
    if not pairs:
        raise ApiError("the batch has no tags", "BadRequestImageTags")
    if len(pairs) > 256:
        raise ApiError("at most 256 image tags in one batch", "BadRequestExceededBatchSize")
    clean = []
    for e in pairs:
        if not isinstance(e, dict) or not is_guid(e.get("imageId", "")) or not is_guid(e.get("tagId", "")):
            raise ApiError("each entry needs an imageId and a tagId", "BadRequestInvalidIds")
        clean.append((e["imageId"], e["tagId"]))
    done = await ctx.run(ctx.cv.images.tag_images, ctx.path("projectId"), clean)
    return json_response({"created": [{"imageId": i, "tagId": t} for i, t in done.created],
                          "duplicated": [{"imageId": i, "tagId": t} for i, t in done.duplicated], "exceeded": []})


@training("DELETE", "/projects/{projectId}/images/tags", "delete_image_tags", statuses=(204,), query=(
    Param("imageIds", "array", required=True, max_items=64), Param("tagIds", "array", required=True, max_items=20)))
async def delete_image_tags(ctx: Ctx):
    """Remove tags from images."""
    image_ids, tag_ids = ctx.q_ids("imageIds", 64, "image id"), ctx.q_ids("tagIds", 20, "tag id")
    if not image_ids or not tag_ids:
        raise ApiError("imageIds and tagIds are required", "BadRequestRequiredParamIsNull")
    await ctx.run(ctx.cv.images.remove_tags, ctx.path("projectId"), image_ids, tag_ids)
    return no_content()


@training("POST", "/projects/{projectId}/images/metadata", "update_image_metadata", body="ImageMetadata",
          result="ImageMetadataUpdateSummary", statuses=(200, 207),
          query=(Param("imageIds", "array", required=True, max_items=64),))
async def update_image_metadata(ctx: Ctx):
    """Merge key/value pairs into images' metadata (at most 10 pairs per image, keys up to 128 characters, values
    up to 256); each image gets its own status."""
    ids = ctx.q_ids("imageIds", 64, "image id")
    if not ids:
        raise ApiError("imageIds is required", "BadRequestRequiredParamIsNull")
    metadata = await ctx.json_body()
    results = await ctx.run(ctx.cv.images.update_metadata, ctx.path("projectId"), ids, metadata)
    return _summary_response(render.metadata_results(results))


@training("POST", "/projects/{projectId}/images/predictions", "create_images_from_predictions",
          body="ImageIdCreateBatch", result="ImageCreateSummary", statuses=(200, 207))
async def create_images_from_predictions(ctx: Ctx):
    """Add stored predictions' images to the training set (up to 64), each with its own and the batch's tagIds."""
    pid, entries, batch_tags, metadata = await _json_batch(ctx, "id")
    pairs = []
    for e in entries:
        if not isinstance(e["id"], str) or not is_guid(e["id"]):
            raise ApiError("each image's id must be the id of a stored prediction", "BadRequestInvalidIds")
        pairs.append((e["id"], _entry_tags(e, batch_tags)))

    def add():
        results = ctx.cv.predictions.add_many_to_training(pid, pairs, metadata, uploaded_by="api")
        return render.image_results(results, _tag_names(ctx, pid))

    return _summary_response(await ctx.run(add))


ARTIFACT_PATHS = "images/{imageId} (a training image's original bytes) or predictions/{predictionId}"


@training("GET", "/projects/{projectId}/artifacts", "get_artifact", result="binary",
          query=(Param("path", required=True, description=ARTIFACT_PATHS),))
async def get_artifact(ctx: Ctx):
    """A stored file of the project by its relative path: images/{imageId} (a training image as uploaded) or
    predictions/{predictionId} (a stored prediction's image)."""
    pid, path = ctx.path("projectId"), ctx.q_str("path", required=True) or ""
    kind, _, item = path.strip().strip("/").partition("/")
    if kind.lower() not in ("images", "predictions") or not is_guid(item):
        raise ApiError(f"no artifact path {shown(path)}; use {ARTIFACT_PATHS}", "BadRequestInvalidArtifactUri")
    item = str(uuid.UUID(item))  # ids are stored in the canonical lower-case form
    if kind.lower() == "images":
        data = await ctx.run(ctx.cv.images.data, pid, item)
    else:
        data = await ctx.run(ctx.cv.predictions.image_data, pid, item)
    return web.Response(body=data, content_type=sniff_image_type(data),
                        headers={"Content-Disposition": f'attachment; filename="{kind.lower()}-{item}"'})


def sniff_image_type(data: bytes) -> str:
    """The image's media type from its first bytes (the formats cvbot accepts), else application/octet-stream."""
    for magic, mime in ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                        (b"GIF8", "image/gif"), (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


# =========================================================================== training and iterations
def _iteration_json(ctx: Ctx, pid: str, iteration) -> dict:
    return render.iteration(iteration, ctx.cv.projects.get(pid).default_iteration_id)


@training("POST", "/projects/{projectId}/train", "train_project", body="TrainingParameters", result="Iteration", query=(
    Param("trainingType", enum=("Regular", "Advanced")), Param("reservedBudgetInHours", "integer"),
    Param("forceTrain", "boolean"), Param("notificationEmailAddress")))
async def train_project(ctx: Ctx):
    """Queue a training; poll get_iteration until its status is Completed (or Failed)."""
    pid = ctx.path("projectId")
    force = ctx.q_bool("forceTrain", False)
    if (ctx.q_str("trainingType") or "Regular").lower() not in ("regular", "advanced"):
        raise ApiError("trainingType must be Regular or Advanced", "BadRequestInvalid")
    ctx.q_int("reservedBudgetInHours", 0, 0)

    def train():
        default = ctx.cv.projects.get(pid).default_iteration_id
        return render.iteration(ctx.cv.training.train(pid, force=bool(force)), default)

    return json_response(await ctx.run(train))


@training("GET", "/projects/{projectId}/iterations", "get_iterations", result="[Iteration]")
async def get_iterations(ctx: Ctx):
    """The project's iterations."""
    pid = ctx.path("projectId")

    def iterations():
        default = ctx.cv.projects.get(pid).default_iteration_id
        return [render.iteration(it, default) for it in ctx.cv.iterations.list(pid)]

    return json_response(await ctx.run(iterations))


@training("GET", "/projects/{projectId}/iterations/{iterationId}", "get_iteration", result="Iteration")
async def get_iteration(ctx: Ctx):
    """One iteration; status Training, then Completed or Failed (trainingErrorDetails says why)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    return json_response(await ctx.run(lambda: _iteration_json(ctx, pid, ctx.cv.iterations.get(pid, iid))))


@training("PATCH", "/projects/{projectId}/iterations/{iterationId}", "update_iteration", body="Iteration",
          result="Iteration")
async def update_iteration(ctx: Ctx):
    """Rename an iteration (and, as in API v3.0, make it the default with isDefault=true)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    body = await ctx.json_body()
    name, make_default = field_str(body, "name"), body.get("isDefault")

    def update():
        it = ctx.cv.iterations.get(pid, iid)
        if name is not None and name.strip() != it.name:
            it = ctx.cv.iterations.rename(pid, iid, name)
        if make_default is True:
            ctx.cv.iterations.set_default(pid, iid)
        return _iteration_json(ctx, pid, it)

    return json_response(await ctx.run(update))


@training("DELETE", "/projects/{projectId}/iterations/{iterationId}", "delete_iteration", statuses=(204,))
async def delete_iteration(ctx: Ctx):
    """Delete an iteration (unpublish it first); if it was the default, the newest other one takes over."""
    await ctx.run(ctx.cv.iterations.delete, ctx.path("projectId"), ctx.path("iterationId"), release_default=True)
    return no_content()


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance", "get_iteration_performance",
          result="IterationPerformance", query=(Param("threshold", "number", minimum=0, maximum=1),
                                                Param("overlapThreshold", "number")))
async def get_iteration_performance(ctx: Ctx):
    """Precision, recall and average precision, overall and per tag, from k-fold out-of-fold predictions."""
    threshold = ctx.q_float("threshold")
    ctx.q_float("overlapThreshold")
    perf = await ctx.run(ctx.cv.iterations.performance, ctx.path("projectId"), ctx.path("iterationId"), threshold)
    return json_response(perf)


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance/images", "get_image_performances",
          result="[ImagePerformance]", query=(TAG_IDS, ORDER_BY, TAKE, SKIP))
async def get_image_performances(ctx: Ctx):
    """Each training image with its out-of-fold predictions (what the model said when it had not seen it)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    tag_ids = ctx.q_ids("tagIds", 20, "tag id")
    skip, take, order = _page(ctx)

    def page():
        rows = ctx.cv.iterations.image_performances(pid, iid, tag_ids, order, skip, take)
        names, uris = _tag_names(ctx, pid), links(ctx)
        return [render.image_performance(img, preds, names, uris) for img, preds in rows]

    return json_response(await ctx.run(page))


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance/images/count",
          "get_image_performance_count", result="integer", query=(TAG_IDS,))
async def get_image_performance_count(ctx: Ctx):
    """How many images the iteration was evaluated on (with tagIds: carrying any of the tags)."""
    tag_ids = ctx.q_ids("tagIds", None, "tag id")
    rows = await ctx.run(ctx.cv.iterations.image_performances, ctx.path("projectId"), ctx.path("iterationId"), tag_ids)
    return json_response(len(rows))


@training("POST", "/projects/{projectId}/iterations/{iterationId}/publish", "publish_iteration", result="boolean",
          query=(Param("publishName", required=True), Param("predictionId"), Param("overwrite", "boolean")))
async def publish_iteration(ctx: Ctx):
    """Publish a Completed iteration under a name; the Prediction API classifies with it by that name."""
    name, resource_id = ctx.q_str("publishName", required=True), ctx.q_str("predictionId")
    overwrite = ctx.q_bool("overwrite") is not False
    await ctx.run(ctx.cv.iterations.publish, ctx.path("projectId"), ctx.path("iterationId"), name, overwrite,
                  resource_id)
    return json_response(True)


@training("DELETE", "/projects/{projectId}/iterations/{iterationId}/publish", "unpublish_iteration", statuses=(204,))
async def unpublish_iteration(ctx: Ctx):
    """Unpublish an iteration."""
    await ctx.run(ctx.cv.iterations.unpublish, ctx.path("projectId"), ctx.path("iterationId"))
    return no_content()


# =========================================================================== export
EXPORT_DOWNLOAD = "/customvision/exports/{iterationId}/{exportId}/model.zip"


def download_uri(ctx: Ctx, export) -> str:
    """A capability URL, like Custom Vision's SAS links: the random export id is the secret, no key needed."""
    return base_url(ctx.request, ctx.settings) + EXPORT_DOWNLOAD.format(iterationId=export.iteration_id,
                                                                        exportId=export.id)


@training("GET", "/projects/{projectId}/iterations/{iterationId}/export", "get_exports", result="[Export]")
async def get_exports(ctx: Ctx):
    """The iteration's exports; poll until status is Done, then download downloadUri."""
    exports = await ctx.run(ctx.cv.exports.list, ctx.path("projectId"), ctx.path("iterationId"))
    return json_response([render.export(e, download_uri(ctx, e)) for e in exports])


@training("POST", "/projects/{projectId}/iterations/{iterationId}/export", "export_iteration", result="Export",
          query=(Param("platform", required=True, enum=tuple(platform_names())), Param("flavor")))
async def export_iteration(ctx: Ctx):
    """Export an iteration of any domain to one of Azure's platforms and flavors (the model in the conventions
    Microsoft's export samples expect, zipped with labels.txt and cvexport.manifest)."""
    platform, flavor = ctx.q_str("platform", required=True), ctx.q_str("flavor")
    export = await ctx.run(ctx.cv.exports.start, ctx.path("projectId"), ctx.path("iterationId"), platform, flavor)
    return json_response(render.export(export, download_uri(ctx, export)))


async def download_export(request: web.Request, container) -> web.Response:
    iid, eid = request.match_info["iterationId"], request.match_info["exportId"]
    if not (is_guid(iid) and is_guid(eid)):
        raise web.HTTPNotFound()
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, export_file, container.deps, iid, eid)
    except errors.NotFound:
        raise web.HTTPNotFound() from None
    return web.Response(body=data, content_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="cvbot-{iid[:8]}-export.zip"'})
