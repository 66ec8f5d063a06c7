"""The Training API: thin handlers (parse, call CvService off the event loop, render)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from core import errors
from core.images import TRAINING_MAX_BYTES
from core.model import ClassificationType, IterationStatus, TagType
from core.service import ImageResult, ImageUpload
from core.views import tag_json

from . import render
from .domains import domain_json, parse_domain
from .http import (
    MAX_BATCH, MAX_TAGS_PER_IMAGE, ApiError, Ctx, Param, b64decode, field_list, field_str, is_guid, json_response,
    no_content, read_images, training,
)
from .urls import fetch_image

REQUEST_MAX_BYTES = 64 * 1024 * 1024
UUID = "uuid"
TAG_IDS = Param("tagIds", "array", max_items=20, description="tag ids, comma-separated")
ORDER_BY = Param("orderBy", enum=("Newest", "Oldest"))
TAKE = Param("take", "integer", minimum=0, maximum=256)
SKIP = Param("skip", "integer", minimum=0)
ITERATION_ID = Param("iterationId", format=UUID)


def _tag_names(ctx: Ctx, project_id: str) -> dict[str, str]:
    return {t.id: t.name for t in ctx.service.list_tags(project_id)}


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


def _page(ctx: Ctx, default_take: int = 50) -> tuple[int, int, bool]:
    take = ctx.q_int("take", default_take, 0, 256)
    skip = ctx.q_int("skip", 0, 0)
    order = (ctx.q_str("orderBy") or "Newest").strip().lower()
    if order not in ("newest", "oldest"):
        raise ApiError("orderBy must be Newest or Oldest", "BadRequestInvalid")
    return skip, take, order == "oldest"


def _list_images(ctx: Ctx, project_id: str, tagged: bool | None, tag_ids: list[str] | None,
                 skip: int, take: int, oldest: bool) -> list[dict]:
    """One page of images; the store lists newest first, so Oldest pages are read from the far end."""
    ctx.project(project_id)
    if oldest:
        n = ctx.service.count_images(project_id, tagged=tagged, tag_ids=tag_ids)
        end = max(0, n - skip)
        start = max(0, end - take)
        images = ctx.service.list_images(project_id, tagged=tagged, tag_ids=tag_ids, skip=start, take=end - start)[::-1]
    else:
        images = ctx.service.list_images(project_id, tagged=tagged, tag_ids=tag_ids, skip=skip, take=take)
    names = _tag_names(ctx, project_id)
    return [render.image(i, names) for i in images]


def _tagging_status(ctx: Ctx) -> bool | None:
    status = (ctx.q_str("taggingStatus") or "All").strip().lower()
    if status not in ("all", "tagged", "untagged"):
        raise ApiError("taggingStatus must be All, Tagged or Untagged", "BadRequestInvalid")
    return {"all": None, "tagged": True, "untagged": False}[status]


def _add_images(ctx: Ctx, project_id: str, items: list[tuple[str, bytes | None, list[str], str]]) -> dict:
    """Store a batch: items are (name, data or None, tag ids, status when data is None). Returns ImageCreateSummary."""
    ctx.project(project_id)
    tags = {t.id: t for t in ctx.service.list_tags(project_id)}
    results: list[ImageResult | None] = [None] * len(items)
    uploads, where = [], []
    for i, (name, data, tag_ids, status) in enumerate(items):
        if data is None:
            results[i] = ImageResult(name, status or "ErrorSource", "the image could not be read")
        elif any(t not in tags for t in tag_ids):
            results[i] = ImageResult(name, "ErrorInvalidTag", "unknown tag id " + next(t for t in tag_ids if t not in tags))
        elif len(tag_ids) > MAX_TAGS_PER_IMAGE:
            results[i] = ImageResult(name, "ErrorTagLimitExceed", f"an image can carry at most {MAX_TAGS_PER_IMAGE} tags")
        else:
            uploads.append(ImageUpload(data, name, tag_ids))
            where.append(i)
    if uploads:
        for i, r in zip(where, ctx.service.add_images(project_id, uploads, source="api")):
            results[i] = r
    return render.image_results(results, {t.id: t.name for t in tags.values()})


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


async def _json_batch(ctx: Ctx, required_field: str) -> tuple[str, list[dict], list[str]]:
    """(project id, image entries, batch-wide tag ids) of a JSON upload batch."""
    body = await ctx.json_body()
    entries, batch_tags = field_list(body, "images"), field_list(body, "tagIds")
    _check_batch(entries)
    if not all(isinstance(t, str) for t in batch_tags):
        raise ApiError("tagIds must be a list of ids", "BadRequestInvalidIds")
    if not all(isinstance(e, dict) and e.get(required_field) is not None for e in entries):
        raise ApiError(f"each image must be an object with '{required_field}'", "BadRequestImageBatch")
    return ctx.path("projectId"), entries, batch_tags


# =========================================================================== domains
@training("GET", "/domains", "get_domains", result="[Domain]")
async def get_domains(ctx: Ctx):
    """The six domains; Compact is exportable (ONNX)."""
    return json_response([domain_json(parse_domain(d["name"]), d) for d in ctx.service.domains()])


@training("GET", "/domains/{domainId}", "get_domain", result="Domain")
async def get_domain(ctx: Ctx):
    """One domain by id."""
    domain = parse_domain(ctx.path("domainId"), not_found=True)
    entry = next(d for d in ctx.service.domains() if d["name"] == domain.value)
    return json_response(domain_json(domain, entry))


# =========================================================================== projects
@training("GET", "/projects", "get_projects", result="[Project]")
async def get_projects(ctx: Ctx):
    """The projects of the key's workspace."""
    projects = await ctx.run(ctx.service.list_projects, ctx.workspace)
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
    p = await ctx.run(ctx.service.create_project, name, domain, ctype, ctx.q_str("description", ""),
                      workspace=ctx.workspace, created_by="api")
    return json_response(render.project(p))


@training("GET", "/projects/{projectId}", "get_project", result="Project")
async def get_project(ctx: Ctx):
    """One project."""
    return json_response(render.project(await ctx.run(ctx.project, ctx.path("projectId"))))


@training("DELETE", "/projects/{projectId}", "delete_project", statuses=(204,))
async def delete_project(ctx: Ctx):
    """Delete a project with its images, iterations and predictions."""
    pid = ctx.path("projectId")
    await ctx.run(lambda: (ctx.project(pid), ctx.service.delete_project(pid)))
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

    def update():
        ctx.project(pid)
        return ctx.service.update_project(pid, name=name, description=description, domain=domain,
                                          classification_type=ctype)

    return json_response(render.project(await ctx.run(update)))


# =========================================================================== tags
@training("GET", "/projects/{projectId}/tags", "get_tags", result="[Tag]", query=(ITERATION_ID,))
async def get_tags(ctx: Ctx):
    """The project's tags with their image counts (with iterationId: the tags that iteration was trained on)."""
    pid, iteration_id = ctx.path("projectId"), ctx.q_str("iterationId")

    def tags():
        ctx.project(pid)
        found = ctx.service.list_tags(pid)
        if iteration_id:
            trained = set(ctx.service.get_iteration(iteration_id, pid).tag_ids)
            found = [t for t in found if t.id in trained]
        return found

    return json_response([tag_json(t) for t in await ctx.run(tags)])


@training("POST", "/projects/{projectId}/tags", "create_tag", result="Tag", query=(
    Param("name", required=True), Param("description"), Param("type", enum=("Regular", "Negative"))))
async def create_tag(ctx: Ctx):
    """Create a tag (type Regular or Negative)."""
    pid = ctx.path("projectId")
    name, description = ctx.q_str("name", required=True), ctx.q_str("description", "")
    tag_type = _tag_type(ctx.q_str("type")) or TagType.Regular
    tag = await ctx.run(lambda: (ctx.project(pid), ctx.service.create_tag(pid, name, tag_type, description))[1])
    return json_response(tag_json(tag))


@training("GET", "/projects/{projectId}/tags/{tagId}", "get_tag", result="Tag", query=(ITERATION_ID,))
async def get_tag(ctx: Ctx):
    """One tag."""
    pid, tid = ctx.path("projectId"), ctx.path("tagId")

    def tag():
        ctx.project(pid)
        found = next((t for t in ctx.service.list_tags(pid) if t.id == tid), None)
        if found is None:
            raise errors.NotFound(f"no tag {tid} in this project", "NotFoundTag")
        return found

    return json_response(tag_json(await ctx.run(tag)))


@training("PATCH", "/projects/{projectId}/tags/{tagId}", "update_tag", body="Tag", result="Tag")
async def update_tag(ctx: Ctx):
    """Rename a tag, change its description or type."""
    pid, tid = ctx.path("projectId"), ctx.path("tagId")
    body = await ctx.json_body()
    name, description, tag_type = field_str(body, "name"), field_str(body, "description"), _tag_type(body.get("type"))

    def update():
        ctx.project(pid)
        ctx.service.update_tag(pid, tid, name=name, description=description, type=tag_type)
        return next(t for t in ctx.service.list_tags(pid) if t.id == tid)

    return json_response(tag_json(await ctx.run(update)))


@training("DELETE", "/projects/{projectId}/tags/{tagId}", "delete_tag", statuses=(204,))
async def delete_tag(ctx: Ctx):
    """Delete a tag (its images stay, untagged from it)."""
    pid, tid = ctx.path("projectId"), ctx.path("tagId")
    await ctx.run(lambda: (ctx.project(pid), ctx.service.delete_tag(pid, tid)))
    return no_content()


# =========================================================================== images
@training("GET", "/projects/{projectId}/images", "get_images", result="[Image]", query=(
    ITERATION_ID, TAG_IDS, Param("taggingStatus", enum=("All", "Tagged", "Untagged")), Param("$filter"),
    ORDER_BY, TAKE, SKIP))
async def get_images(ctx: Ctx):
    """A page of the project's images (newest first by default)."""
    pid = ctx.path("projectId")
    tagged, tag_ids = _tagging_status(ctx), ctx.q_ids("tagIds", 20, "tag id")
    skip, take, oldest = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, pid, tagged, tag_ids, skip, take, oldest))


@training("POST", "/projects/{projectId}/images", "create_images_from_data", body="images", result="ImageCreateSummary",
          statuses=(200, 207), query=(TAG_IDS,))
async def create_images_from_data(ctx: Ctx):
    """Upload images as multipart/form-data (up to 64, 6 MB each) or one raw image body; tagIds apply to all."""
    pid = ctx.path("projectId")
    tag_ids = ctx.q_ids("tagIds", MAX_TAGS_PER_IMAGE, "tag id") or []
    await ctx.run(ctx.project, pid)
    files = await read_images(ctx.request, REQUEST_MAX_BYTES)
    _check_batch(files)
    items = [(f.name, f.data, tag_ids, "") for f in files]
    return _summary_response(await ctx.run(_add_images, ctx, pid, items))


@training("POST", "/projects/{projectId}/images/files", "create_images_from_files", body="ImageFileCreateBatch",
          result="ImageCreateSummary", statuses=(200, 207))
async def create_images_from_files(ctx: Ctx):
    """Upload a JSON batch of base64 images (up to 64), each with its own tagIds."""
    pid, entries, batch_tags = await _json_batch(ctx, "contents")
    items = [(field_str(e, "name") or f"image {n + 1}", b64decode(e["contents"]), _entry_tags(e, batch_tags),
              "ErrorImageFormat") for n, e in enumerate(entries)]
    return _summary_response(await ctx.run(_add_images, ctx, pid, items))


@training("POST", "/projects/{projectId}/images/urls", "create_images_from_urls", body="ImageUrlCreateBatch",
          result="ImageCreateSummary", statuses=(200, 207))
async def create_images_from_urls(ctx: Ctx):
    """Upload images by URL; only hosts allowed by CVBOT_ALLOWED_URL_HOSTS are fetched."""
    pid, entries, batch_tags = await _json_batch(ctx, "url")
    await ctx.run(ctx.project, pid)
    items = []
    for e in entries:
        if not isinstance(e["url"], str):
            raise ApiError("each image must be an object with a url", "BadRequestImageBatch")
        try:
            data = await fetch_image(e["url"], ctx.settings.allowed_url_hosts, TRAINING_MAX_BYTES)
        except errors.CvError:
            data = None
        items.append((e["url"], data, _entry_tags(e, batch_tags), "ErrorSource"))
    return _summary_response(await ctx.run(_add_images, ctx, pid, items))


@training("DELETE", "/projects/{projectId}/images", "delete_images", statuses=(204,), query=(
    Param("imageIds", "array", max_items=256), Param("allImages", "boolean"), Param("allIterations", "boolean")))
async def delete_images(ctx: Ctx):
    """Delete images by id, or all of them with allImages=true (iterations keep their own copies)."""
    pid = ctx.path("projectId")
    ids, all_images = ctx.q_ids("imageIds", 256, "image id"), ctx.q_bool("allImages", False)
    if not ids and not all_images:
        raise ApiError("give imageIds or allImages=true", "BadRequestRequiredParamIsNull")
    await ctx.run(lambda: (ctx.project(pid), ctx.service.delete_images(pid, ids, all_images=bool(all_images))))
    return no_content()


@training("GET", "/projects/{projectId}/images/count", "get_image_count", result="integer", query=(
    ITERATION_ID, Param("taggingStatus", enum=("All", "Tagged", "Untagged")), Param("$filter"), TAG_IDS))
async def get_image_count(ctx: Ctx):
    """How many images match."""
    pid = ctx.path("projectId")
    tagged, tag_ids = _tagging_status(ctx), ctx.q_ids("tagIds", None, "tag id")
    n = await ctx.run(lambda: (ctx.project(pid), ctx.service.count_images(pid, tagged=tagged, tag_ids=tag_ids))[1])
    return json_response(n)


@training("GET", "/projects/{projectId}/images/id", "get_images_by_ids", result="[Image]", query=(
    Param("imageIds", "array", max_items=256), ITERATION_ID))
async def get_images_by_ids(ctx: Ctx):
    """Images by id (unknown ids are left out)."""
    pid = ctx.path("projectId")
    ids = ctx.q_ids("imageIds", 256, "image id") or []

    def images():
        ctx.project(pid)
        names = _tag_names(ctx, pid)
        return [render.image(i, names) for i in ctx.service.get_images(pid, ids)]

    return json_response(await ctx.run(images))


@training("GET", "/projects/{projectId}/images/tagged", "get_tagged_images", result="[Image]", query=(
    ITERATION_ID, TAG_IDS, ORDER_BY, TAKE, SKIP))
async def get_tagged_images(ctx: Ctx):
    """A page of tagged images (with tagIds: those carrying any of the tags)."""
    pid, tag_ids = ctx.path("projectId"), ctx.q_ids("tagIds", 20, "tag id")
    skip, take, oldest = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, pid, True, tag_ids, skip, take, oldest))


@training("GET", "/projects/{projectId}/images/tagged/count", "get_tagged_image_count", result="integer",
          query=(ITERATION_ID, TAG_IDS))
async def get_tagged_image_count(ctx: Ctx):
    """How many tagged images (with tagIds: carrying any of the tags)."""
    pid, tag_ids = ctx.path("projectId"), ctx.q_ids("tagIds", None, "tag id")
    n = await ctx.run(lambda: (ctx.project(pid), ctx.service.count_images(pid, tagged=True, tag_ids=tag_ids))[1])
    return json_response(n)


@training("GET", "/projects/{projectId}/images/untagged", "get_untagged_images", result="[Image]", query=(
    ITERATION_ID, ORDER_BY, TAKE, SKIP))
async def get_untagged_images(ctx: Ctx):
    """A page of untagged images."""
    pid = ctx.path("projectId")
    skip, take, oldest = _page(ctx)
    return json_response(await ctx.run(_list_images, ctx, pid, False, None, skip, take, oldest))


@training("GET", "/projects/{projectId}/images/untagged/count", "get_untagged_image_count", result="integer",
          query=(ITERATION_ID,))
async def get_untagged_image_count(ctx: Ctx):
    """How many untagged images."""
    pid = ctx.path("projectId")
    n = await ctx.run(lambda: (ctx.project(pid), ctx.service.count_images(pid, tagged=False))[1])
    return json_response(n)


@training("POST", "/projects/{projectId}/images/tags", "create_image_tags", body="ImageTagCreateBatch",
          result="ImageTagCreateSummary")
async def create_image_tags(ctx: Ctx):
    """Add tags to images: {"tags": [{"imageId", "tagId"}]}."""
    pid = ctx.path("projectId")
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
        clean.append({"imageId": e["imageId"], "tagId": e["tagId"]})

    def tag():
        ctx.project(pid)
        current = {i.id: set(i.tag_ids) for i in ctx.service.get_images(pid, [e["imageId"] for e in clean])}
        created, duplicated = [], []
        by_image: dict[str, list[str]] = {}
        for e in clean:
            if e["tagId"] in current.get(e["imageId"], set()) or e["tagId"] in by_image.get(e["imageId"], []):
                duplicated.append(e)
            else:
                by_image.setdefault(e["imageId"], []).append(e["tagId"])
                created.append(e)
        for image_id, tag_ids in by_image.items():
            ctx.service.add_image_tags(pid, [image_id], tag_ids)
        return {"created": created, "duplicated": duplicated, "exceeded": []}

    return json_response(await ctx.run(tag))


@training("DELETE", "/projects/{projectId}/images/tags", "delete_image_tags", statuses=(204,), query=(
    Param("imageIds", "array", required=True, max_items=64), Param("tagIds", "array", required=True, max_items=20)))
async def delete_image_tags(ctx: Ctx):
    """Remove tags from images."""
    pid = ctx.path("projectId")
    image_ids, tag_ids = ctx.q_ids("imageIds", 64, "image id"), ctx.q_ids("tagIds", 20, "tag id")
    if not image_ids or not tag_ids:
        raise ApiError("imageIds and tagIds are required", "BadRequestRequiredParamIsNull")
    await ctx.run(lambda: (ctx.project(pid), ctx.service.remove_image_tags(pid, image_ids, tag_ids)))
    return no_content()


# =========================================================================== training and iterations
def _default_id(ctx: Ctx, pid: str) -> str | None:
    return ctx.project(pid).default_iteration_id


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
        p = ctx.project(pid)
        return render.iteration(ctx.service.train(pid, force=bool(force)), p.default_iteration_id)

    return json_response(await ctx.run(train))


@training("GET", "/projects/{projectId}/iterations", "get_iterations", result="[Iteration]")
async def get_iterations(ctx: Ctx):
    """The project's iterations."""
    pid = ctx.path("projectId")

    def iterations():
        default = _default_id(ctx, pid)
        return [render.iteration(it, default) for it in ctx.service.list_iterations(pid)]

    return json_response(await ctx.run(iterations))


@training("GET", "/projects/{projectId}/iterations/{iterationId}", "get_iteration", result="Iteration")
async def get_iteration(ctx: Ctx):
    """One iteration; status Training, then Completed or Failed (trainingErrorDetails says why)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")

    def iteration():
        default = _default_id(ctx, pid)
        return render.iteration(ctx.service.get_iteration(iid, pid), default)

    return json_response(await ctx.run(iteration))


@training("PATCH", "/projects/{projectId}/iterations/{iterationId}", "update_iteration", body="Iteration",
          result="Iteration")
async def update_iteration(ctx: Ctx):
    """Rename an iteration (and, as in API v3.0, make it the default with isDefault=true)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    body = await ctx.json_body()
    name, make_default = field_str(body, "name"), body.get("isDefault")

    def update():
        ctx.project(pid)
        it = ctx.service.get_iteration(iid, pid)
        if name is not None and name.strip() != it.name:
            it = ctx.service.rename_iteration(pid, iid, name)
        if make_default is True:
            ctx.service.set_default_iteration(pid, iid)
        return render.iteration(it, _default_id(ctx, pid))

    return json_response(await ctx.run(update))


@training("DELETE", "/projects/{projectId}/iterations/{iterationId}", "delete_iteration", statuses=(204,))
async def delete_iteration(ctx: Ctx):
    """Delete an iteration (unpublish it first); if it was the default, the newest other one takes over."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")

    def delete():
        ctx.project(pid)
        it = ctx.service.get_iteration(iid, pid)
        if it.publish_name:
            raise errors.CvError(f"iteration '{it.name}' is published as '{it.publish_name}'; unpublish it first",
                                 "BadRequestIterationIsPublished")
        if it.status in (IterationStatus.Queued, IterationStatus.Training):
            raise errors.TrainingInProgress(f"iteration '{it.name}' is still training")
        ctx.service.release_default_iteration(pid, iid)
        ctx.service.delete_iteration(pid, iid)

    await ctx.run(delete)
    return no_content()


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance", "get_iteration_performance",
          result="IterationPerformance", query=(Param("threshold", "number", minimum=0, maximum=1),
                                                Param("overlapThreshold", "number")))
async def get_iteration_performance(ctx: Ctx):
    """Precision, recall and average precision, overall and per tag, from k-fold out-of-fold predictions."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    threshold = ctx.q_float("threshold")
    ctx.q_float("overlapThreshold")

    def perf():
        ctx.project(pid)
        return ctx.service.iteration_performance(iid, threshold, project_id=pid)

    return json_response(await ctx.run(perf))


def _image_performances(ctx: Ctx, pid: str, iid: str, tag_ids: list[str] | None):
    """[(image, out-of-fold predictions)] of the iteration's images still in the project, oldest first."""
    ctx.project(pid)
    rows = ctx.service.image_performances(iid, project_id=pid)
    images = {i.id: i for i in ctx.service.get_images(pid, [r[0] for r in rows])}
    out = [(images[image_id], preds) for image_id, preds in rows if image_id in images]
    if tag_ids:
        wanted = set(tag_ids)
        out = [(img, preds) for img, preds in out if wanted & set(img.tag_ids)]
    return sorted(out, key=lambda r: (r[0].created_at, r[0].id))


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance/images", "get_image_performances",
          result="[ImagePerformance]", query=(TAG_IDS, ORDER_BY, TAKE, SKIP))
async def get_image_performances(ctx: Ctx):
    """Each training image with its out-of-fold predictions (what the model said when it had not seen it)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    tag_ids = ctx.q_ids("tagIds", 20, "tag id")
    skip, take, oldest = _page(ctx)

    def page():
        rows = _image_performances(ctx, pid, iid, tag_ids)
        rows = (rows if oldest else rows[::-1])[skip:skip + take]
        names = _tag_names(ctx, pid)
        return [render.image_performance(img, preds, names) for img, preds in rows]

    return json_response(await ctx.run(page))


@training("GET", "/projects/{projectId}/iterations/{iterationId}/performance/images/count",
          "get_image_performance_count", result="integer", query=(TAG_IDS,))
async def get_image_performance_count(ctx: Ctx):
    """How many images the iteration was evaluated on (with tagIds: carrying any of the tags)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    tag_ids = ctx.q_ids("tagIds", None, "tag id")
    return json_response(len(await ctx.run(_image_performances, ctx, pid, iid, tag_ids)))


@training("POST", "/projects/{projectId}/iterations/{iterationId}/publish", "publish_iteration", result="boolean",
          query=(Param("publishName", required=True), Param("predictionId"), Param("overwrite", "boolean")))
async def publish_iteration(ctx: Ctx):
    """Publish a Completed iteration under a name; the Prediction API classifies with it by that name."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    name = ctx.q_str("publishName", required=True)
    overwrite = ctx.q_bool("overwrite")

    def publish():
        ctx.project(pid)
        if overwrite is False:
            taken = next((i for i in ctx.service.list_iterations(pid) if i.publish_name == name and i.id != iid), None)
            if taken is not None:
                raise errors.CvError(f"'{name}' is already the publish name of '{taken.name}'; pass overwrite=true",
                                     "BadRequestInvalidPublishName")
        ctx.service.publish_iteration(pid, iid, name)

    await ctx.run(publish)
    return json_response(True)


@training("DELETE", "/projects/{projectId}/iterations/{iterationId}/publish", "unpublish_iteration", statuses=(204,))
async def unpublish_iteration(ctx: Ctx):
    """Unpublish an iteration."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")

    def unpublish():
        ctx.project(pid)
        if not ctx.service.get_iteration(iid, pid).publish_name:
            raise errors.CvError("this iteration is not published", "BadRequestIterationNotPublished")
        ctx.service.unpublish_iteration(pid, iid)

    await ctx.run(unpublish)
    return no_content()


# =========================================================================== export
EXPORT_DOWNLOAD = "/customvision/exports/{iterationId}/{exportId}/model.zip"


def download_uri(ctx: Ctx, export) -> str:
    """A capability URL, like Custom Vision's SAS links: the random export id is the secret, no key needed."""
    h = ctx.request.headers
    scheme = (h.get("X-Forwarded-Proto") or ctx.request.scheme).split(",")[0].strip()
    host = (h.get("X-Forwarded-Host") or ctx.request.host).split(",")[0].strip()
    return f"{scheme}://{host}" + EXPORT_DOWNLOAD.format(iterationId=export.iteration_id, exportId=export.id)


@training("GET", "/projects/{projectId}/iterations/{iterationId}/export", "get_exports", result="[Export]")
async def get_exports(ctx: Ctx):
    """The iteration's exports; poll until status is Done, then download downloadUri."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    exports = await ctx.run(lambda: (ctx.project(pid), ctx.service.list_exports(pid, iid))[1])
    return json_response([render.export(e, download_uri(ctx, e)) for e in exports])


@training("POST", "/projects/{projectId}/iterations/{iterationId}/export", "export_iteration", result="Export",
          query=(Param("platform", required=True, enum=("ONNX",)), Param("flavor")))
async def export_iteration(ctx: Ctx):
    """Export a Compact iteration as ONNX (features, probe and softmax/sigmoid in one graph, zipped with labels)."""
    pid, iid = ctx.path("projectId"), ctx.path("iterationId")
    platform, flavor = ctx.q_str("platform", required=True), ctx.q_str("flavor")
    export = await ctx.run(lambda: (ctx.project(pid), ctx.service.export_iteration(pid, iid, platform, flavor))[1])
    return json_response(render.export(export, download_uri(ctx, export)))


async def download_export(request: web.Request, container) -> web.Response:
    iid, eid = request.match_info["iterationId"], request.match_info["exportId"]
    if not (is_guid(iid) and is_guid(eid)):
        raise web.HTTPNotFound()
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, container.service.export_file, iid, eid)
    except errors.NotFound:
        raise web.HTTPNotFound() from None
    return web.Response(body=data, content_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="cvbot-{iid[:8]}-onnx.zip"'})
