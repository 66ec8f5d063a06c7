"""Prediction: the Prediction API (classify by publish name) and the Training API's quick tests and stored
predictions."""
from __future__ import annotations

import math
from datetime import UTC, datetime

from core import errors
from core.images import PREDICTION_MAX_BYTES
from core.usecases.prediction import PredictionPage, PredictionQuery

from . import render
from .http import (
    ApiError,
    Ctx,
    Param,
    field_list,
    field_str,
    is_guid,
    json_response,
    no_content,
    prediction,
    read_images,
    training,
)
from .links import links
from .urls import fetch_image

APPLICATION = Param("application", description="optional name of the calling application (recorded nowhere)")
ITERATION_ID = Param("iterationId", format="uuid")
STORE = Param("store", "boolean")
IMAGE_MAX_BODY = PREDICTION_MAX_BYTES + 1024 * 1024  # the image plus a multipart envelope; the image is checked alone
MAX_CONTINUATION_DIGITS = 18  # an offset that fits the database's 64-bit integers


async def _one_image(ctx: Ctx) -> bytes:
    files = await read_images(ctx.request, ctx.max_body, max_count=1)
    if not files:
        raise ApiError("the request has no image", "BadRequestImageStream")
    return files[0].data


async def _url_image(ctx: Ctx) -> bytes:
    body = await ctx.json_body()
    url = field_str(body, "url") or field_str(body, "Url")
    if not url:
        raise ApiError("the body needs {\"url\": ...}", "BadRequestImageUrl")
    return await fetch_image(url, ctx.settings.allowed_url_hosts, PREDICTION_MAX_BYTES)


async def _classify(ctx: Ctx, data: bytes, store: bool, iteration_id: str | None = None,
                    publish_name: str | None = None):
    pid = ctx.path("projectId")

    prediction = await ctx.run(ctx.cv.predictions.predict, pid, data, iteration_id=iteration_id,
                               publish_name=publish_name, store=store)
    return json_response(render.image_prediction(prediction))


# =========================================================================== Prediction API
@prediction("POST", "/{projectId}/classify/iterations/{publishedName}/image", "classify_image", body="images",
            result="ImagePrediction", query=(APPLICATION,), max_body=IMAGE_MAX_BODY)
async def classify_image(ctx: Ctx):
    """Classify an image with the iteration published under publishedName, and store the prediction."""
    ctx.q_str("application")
    return await _classify(ctx, await _one_image(ctx), True, publish_name=ctx.path("publishedName"))


@prediction("POST", "/{projectId}/classify/iterations/{publishedName}/image/nostore", "classify_image_with_no_store",
            body="images", result="ImagePrediction", query=(APPLICATION,), max_body=IMAGE_MAX_BODY)
async def classify_image_with_no_store(ctx: Ctx):
    """Classify an image without storing it."""
    return await _classify(ctx, await _one_image(ctx), False, publish_name=ctx.path("publishedName"))


@prediction("POST", "/{projectId}/classify/iterations/{publishedName}/url", "classify_image_url", body="ImageUrl",
            result="ImagePrediction", query=(APPLICATION,))
async def classify_image_url(ctx: Ctx):
    """Classify the image at a URL whose host the server allows (CVBOT_ALLOWED_URL_HOSTS)."""
    return await _classify(ctx, await _url_image(ctx), True, publish_name=ctx.path("publishedName"))


@prediction("POST", "/{projectId}/classify/iterations/{publishedName}/url/nostore", "classify_image_url_with_no_store",
            body="ImageUrl", result="ImagePrediction", query=(APPLICATION,))
async def classify_image_url_with_no_store(ctx: Ctx):
    """Classify the image at an allowed URL without storing it."""
    return await _classify(ctx, await _url_image(ctx), False, publish_name=ctx.path("publishedName"))


async def _detection(ctx: Ctx):
    raise ApiError("cvbot does image classification only; object detection is not supported",
                   "BadRequestNotSupported")


for _suffix, _name in (("image", "detect_image"), ("image/nostore", "detect_image_with_no_store"),
                       ("url", "detect_image_url"), ("url/nostore", "detect_image_url_with_no_store")):
    prediction("POST", "/{projectId}/detect/iterations/{publishedName}/" + _suffix, _name,
               result="ImagePrediction", summary="Not supported: cvbot does image classification only.")(_detection)


# =========================================================================== Training API: quick test
@training("POST", "/projects/{projectId}/quicktest/image", "quick_test_image", body="images", result="ImagePrediction",
          query=(ITERATION_ID, STORE), max_body=IMAGE_MAX_BODY)
async def quick_test_image(ctx: Ctx):
    """Classify an image with an iteration (default: the project's default iteration), stored unless store=false."""
    store = ctx.q_bool("store", True)
    return await _classify(ctx, await _one_image(ctx), bool(store), iteration_id=ctx.q_str("iterationId"))


@training("POST", "/projects/{projectId}/quicktest/url", "quick_test_image_url", body="ImageUrl",
          result="ImagePrediction", query=(ITERATION_ID, STORE))
async def quick_test_image_url(ctx: Ctx):
    """Classify the image at an allowed URL with an iteration."""
    store = ctx.q_bool("store", True)
    return await _classify(ctx, await _url_image(ctx), bool(store), iteration_id=ctx.q_str("iterationId"))


# =========================================================================== Training API: stored predictions
def _time(value, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ApiError(f"'{name}' must be an ISO 8601 time", "BadRequestPredictionInvalidQueryParameters")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"'{name}' must be an ISO 8601 time", "BadRequestPredictionInvalidQueryParameters") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t


def _number(value, default: float, name: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"'{name}' must be a number", "BadRequestPredictionInvalidQueryParameters")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise ApiError(f"'{name}' must be a finite number", "BadRequestPredictionInvalidQueryParameters")
    return x


@training("POST", "/projects/{projectId}/predictions/query", "query_predictions", body="PredictionQueryToken",
          result="PredictionQueryResult")
async def query_predictions(ctx: Ctx):
    """Stored predictions, filtered by iteration, time and per-tag probability range, in pages (continuation)."""
    pid = ctx.path("projectId")
    token = await ctx.json_body(required=False)
    iteration_id = field_str(token, "iterationId")
    start, end = _time(token.get("startTime"), "startTime"), _time(token.get("endTime"), "endTime")
    order = (field_str(token, "orderBy") or "Newest").lower()
    if order not in ("newest", "oldest", "suggested"):
        raise ApiError("orderBy must be Newest, Oldest or Suggested", "BadRequestPredictionInvalidQueryParameters")
    max_count = token.get("maxCount") or 50
    if isinstance(max_count, bool) or not isinstance(max_count, int) or not 1 <= max_count <= 256:
        raise ApiError("maxCount must be between 1 and 256", "BadRequestPredictionResultsExceededCount")
    continuation = field_str(token, "continuation") or "0"
    # str.isdigit() also takes '²' and 5,000 digits; the offset must be ASCII and fit the database's integers.
    if not (continuation.isascii() and continuation.isdigit() and len(continuation) <= MAX_CONTINUATION_DIGITS):
        raise ApiError("continuation is not one this server issued", "BadRequestPredictionInvalidQueryParameters")
    tag_filters = []
    for t in field_list(token, "tags"):
        if not isinstance(t, dict) or not is_guid(t.get("id", "")):
            raise ApiError("each tag filter needs an id", "BadRequestPredictionInvalidQueryParameters")
        tag_filters.append((t["id"], _number(t.get("minThreshold"), 0.0, "minThreshold"),
                            _number(t.get("maxThreshold"), 1.0, "maxThreshold")))
    if len(tag_filters) > 20:
        raise ApiError("at most 20 tag filters", "BadRequestPredictionTagsExceededCount")

    query = PredictionQuery(iteration_id if iteration_id and is_guid(iteration_id) else None, start, end, tag_filters,
                            {"newest": "Newest", "oldest": "Oldest", "suggested": "Suggested"}[order],
                            int(continuation), max_count)
    if iteration_id and not is_guid(iteration_id):  # no iteration has such an id
        await ctx.run(ctx.cv.projects.get, pid)
        page = PredictionPage([], None)
    else:
        page = await ctx.run(ctx.cv.predictions.query, pid, query)
    uris = links(ctx)
    out_token = dict(token)
    out_token.update({"continuation": None if page.next_offset is None else str(page.next_offset),
                      "maxCount": max_count})
    return json_response({"token": out_token,
                          "results": [render.stored_prediction(p, domain, uris) for p, domain in page.results]})


@training("DELETE", "/projects/{projectId}/predictions", "delete_prediction", statuses=(204,),
          query=(Param("ids", "array", required=True, max_items=64),))
async def delete_prediction(ctx: Ctx):
    """Delete stored predictions (and their images)."""
    pid = ctx.path("projectId")
    ids = ctx.q_ids("ids", 64, "prediction id")
    if not ids:
        raise ApiError("ids is required", "BadRequestPredictionIdsMissing")

    if await ctx.run(ctx.cv.predictions.delete, pid, ids) == 0:
        raise errors.NotFound("none of these predictions is in this project")
    return no_content()
