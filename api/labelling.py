"""Suggested tags for untagged images (Custom Vision's smart labeler, classification projects): thin handlers."""
from __future__ import annotations

import datetime as dt

from core.usecases import Suggestion
from core.views import iso

from . import render
from .domains import domain_id
from .http import ApiError, Ctx, Param, field_list, is_guid, json_response, training
from .links import links

ITERATION = Param("iterationId", format="uuid", required=True)
SORTS = {"uncertaintyascending": "UncertaintyAscending", "uncertaintydescending": "UncertaintyDescending"}
MAX_QUERY = 256


def _iteration_id(ctx: Ctx) -> str:
    value = ctx.q_str("iterationId")
    if not value:
        raise ApiError("iterationId is required", "BadRequestRequiredParamIsNull")
    if not is_guid(value):
        raise ApiError("iterationId must be a GUID", "BadRequestInvalidIds")
    return value


def _suggestion(s: Suggestion, created: str | None) -> dict:
    return {"id": s.image.id, "project": s.image.project_id, "iteration": s.iteration.id, "created": created,
            "predictions": [render.tag_prediction(p) for p in s.predictions],
            "predictionUncertainty": s.uncertainty}


def _threshold(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ApiError("threshold must be a number between 0 and 1", "BadRequestInvalid")
    return float(value)


def _tag_ids(body: dict) -> list[str]:
    tag_ids = field_list(body, "tagIds")
    if not all(isinstance(t, str) and is_guid(t) for t in tag_ids):
        raise ApiError("tagIds must be a list of tag ids", "BadRequestInvalidIds")
    if len(tag_ids) > 20:
        raise ApiError("at most 20 tagIds", "BadRequestExceededBatchSize")
    return list(dict.fromkeys(tag_ids))


def _matches(s: Suggestion, tag_ids: list[str], threshold: float) -> bool:
    """The image's suggested tags (probability at or above `threshold`) include one of `tag_ids` (any tag if none)."""
    return any(p.probability >= threshold and (not tag_ids or p.tag_id in tag_ids) for p in s.predictions)


@training("POST", "/projects/{projectId}/tagsandregions/suggestions", "suggest_tags_and_regions",
          result="[SuggestedTagAndRegion]", query=(ITERATION, Param("imageIds", "array", required=True, max_items=64)))
async def suggest_tags_and_regions(ctx: Ctx):
    """Suggested tags for up to 64 images (usually untagged ones), by a Completed iteration: every tag's probability
    and the prediction's uncertainty (entropy), in the order the ids were given."""
    iteration_id = _iteration_id(ctx)
    image_ids = ctx.q_ids("imageIds", 64, "image id")
    if not image_ids:
        raise ApiError("imageIds is required", "BadRequestRequiredParamIsNull")
    found = await ctx.run(ctx.cv.labelling.suggest, ctx.path("projectId"), iteration_id, image_ids)
    by_id = {s.image.id: s for s in found}
    created = iso(dt.datetime.now(dt.UTC).replace(microsecond=0))
    return json_response([_suggestion(by_id[i], created) for i in dict.fromkeys(image_ids) if i in by_id])


@training("POST", "/projects/{projectId}/images/suggested", "query_suggested_images",
          body="SuggestedTagAndRegionQueryToken", result="SuggestedTagAndRegionQuery", query=(ITERATION,))
async def query_suggested_images(ctx: Ctx):
    """Untagged images whose suggested tags (probability ≥ threshold) include one of tagIds (any tag when none are
    given), a page at a time: in cvbot's label-saving order, or by uncertainty with sortBy."""
    pid, iteration_id = ctx.path("projectId"), _iteration_id(ctx)
    body = await ctx.json_body()
    tag_ids, threshold = _tag_ids(body), _threshold(body.get("threshold"))
    max_count = body.get("maxCount")
    if max_count is None:
        max_count = 50
    if isinstance(max_count, bool) or not isinstance(max_count, int) or not 1 <= max_count <= MAX_QUERY:
        raise ApiError(f"maxCount must be an integer from 1 to {MAX_QUERY}", "BadRequestInvalid")
    sort_by = body.get("sortBy")
    if sort_by is not None and (not isinstance(sort_by, str) or sort_by.strip().lower() not in SORTS):
        raise ApiError("sortBy must be UncertaintyAscending or UncertaintyDescending", "BadRequestInvalid")
    continuation = body.get("continuation")
    if continuation in (None, ""):
        offset = 0
    elif isinstance(continuation, str) and continuation.isascii() and continuation.isdigit() and len(continuation) < 10:
        offset = int(continuation)
    else:
        raise ApiError("continuation must be the value a previous page returned", "BadRequestInvalid")

    def page() -> dict:
        found = [s for s in ctx.cv.labelling.suggest(pid, iteration_id) if _matches(s, tag_ids, threshold)]
        if sort_by is not None:
            descending = SORTS[sort_by.strip().lower()] == "UncertaintyDescending"
            found.sort(key=lambda s: -s.uncertainty if descending else s.uncertainty)
        chunk = found[offset:offset + max_count]
        more = offset + max_count < len(found)
        uris, created = links(ctx), iso(dt.datetime.now(dt.UTC).replace(microsecond=0))
        results = []
        for s in chunk:
            item = {"width": s.image.width, "height": s.image.height, **uris("image", s.image.id),
                    "domain": domain_id(s.iteration.domain), **_suggestion(s, created)}
            results.append(item)
        token = {"tagIds": tag_ids, "threshold": threshold, "session": iteration_id,
                 "continuation": str(offset + max_count) if more else None, "maxCount": max_count,
                 "sortBy": SORTS[sort_by.strip().lower()] if sort_by is not None else None}
        return {"token": token, "results": results}

    return json_response(await ctx.run(page))


@training("POST", "/projects/{projectId}/images/suggested/count", "query_suggested_image_count", body="TagFilter",
          result="SuggestedImageCounts", query=(ITERATION,))
async def query_suggested_image_count(ctx: Ctx):
    """Per tag id, how many untagged images have it suggested with probability ≥ threshold (every tag of the
    iteration when tagIds is empty)."""
    pid, iteration_id = ctx.path("projectId"), _iteration_id(ctx)
    body = await ctx.json_body(required=False)
    tag_ids, threshold = _tag_ids(body), _threshold(body.get("threshold"))

    def counts() -> dict[str, int]:
        found = ctx.cv.labelling.suggest(pid, iteration_id)
        wanted = tag_ids or (list(found[0].iteration.tag_ids) if found else [])
        out = {t: 0 for t in wanted}
        for s in found:
            for p in s.predictions:
                if p.tag_id in out and p.probability >= threshold:
                    out[p.tag_id] += 1
        return out

    return json_response(await ctx.run(counts))
