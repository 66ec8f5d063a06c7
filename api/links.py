"""Signed image links (originalImageUri, resizedImageUri, thumbnailUri), like Custom Vision's SAS links: a link
names one image and expires; whoever holds it may fetch the image without a key. Signed dataset links (what
`/cv export dataset` posts when the zip is larger than Slack allows) work alike for one project's dataset zip.
Signing is core.links; what a link serves is core.usecases.linked_image. Links start with CVBOT_PUBLIC_URL (see
http.base_url: never the client's own headers unless a trusted proxy sent them)."""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from core import errors
from core.links import DATASET_LINK, expiry, sign, verify, verify_dataset
from core.usecases import Scope, link_secret, linked_image

from .http import Ctx, base_url, error_response

log = logging.getLogger(__name__)

IMAGE_LINK = "/customvision/images/{kind}/{itemId}/{variant}"
FIELDS = {"originalImageUri": "original", "resizedImageUri": "resized", "thumbnailUri": "thumbnail"}
Uris = Callable[[str, str], dict[str, str]]


class Signer:
    """Makes and checks the links of one server process (the secret and lifetime are the install's)."""

    def __init__(self, secret: bytes, ttl_s: int, clock: Callable[[], float] = time.time):
        self.secret, self.ttl_s, self.clock = secret, ttl_s, clock

    def uris(self, base: str, kind: str, item_id: str) -> dict[str, str]:
        exp = expiry(self.clock(), self.ttl_s)
        return {name: base + IMAGE_LINK.format(kind=kind, itemId=item_id, variant=variant)
                + f"?exp={exp}&sig={sign(self.secret, kind, item_id, variant, exp)}"
                for name, variant in FIELDS.items()}


SIGNER = web.AppKey("image-link-signer", Signer)


def links(ctx: Ctx) -> Uris:
    """`uris(kind, id)` for the responses of this request: the three signed links of one image."""
    signer, base = ctx.request.app[SIGNER], base_url(ctx.request, ctx.settings)
    return lambda kind, item_id: signer.uris(base, kind, item_id)


def _denied() -> web.Response:
    # the same answer for a tampered, expired or malformed link: nothing about the image or the reason
    return error_response("Forbidden", "this link is not valid or has expired", 403)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def serve_image(request: web.Request, container, signer: Signer) -> web.StreamResponse:
    kind, item_id, variant = (request.match_info[k] for k in ("kind", "itemId", "variant"))
    query = request.rel_url.query
    exp, sig = query.get("exp", ""), query.get("sig", "")
    now = signer.clock()
    if not verify(signer.secret, kind, item_id, variant, exp, sig, now):
        return _denied()
    loop = asyncio.get_running_loop()
    try:
        image = await loop.run_in_executor(None, linked_image, container.deps, kind, item_id, variant)
    except errors.NotFound:
        return error_response("NotFound", "the image is no longer stored", 404)
    except errors.Busy as e:
        response = error_response(e.code, e.message, e.http_status)
        response.headers["Retry-After"] = str(e.retry_after)
        return response
    etag = f'"{image.etag}"'
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={max(0, int(exp) - int(now))}, immutable",
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}
    if _matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=image.data, content_type=image.content_type, headers=headers)


def _export_to_temp(container, project_id: str) -> tuple[str, str]:
    """(path of a temporary zip of the project's dataset, the project's name); the caller removes the file."""
    fd, path = tempfile.mkstemp(prefix="cvbot-dataset-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as f:
            summary = container.usecases(Scope.system()).transfer.export_dataset(project_id, f)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return path, summary.project.name


async def serve_dataset(request: web.Request, container, signer: Signer) -> web.StreamResponse:
    """The dataset zip of the one project a signed link names, made on request into a temporary file and streamed
    from it (never the whole archive in memory)."""
    project_id = request.match_info["projectId"]
    query = request.rel_url.query
    if not verify_dataset(signer.secret, project_id, query.get("exp", ""), query.get("sig", ""), signer.clock()):
        return _denied()
    loop = asyncio.get_running_loop()
    try:
        path, name = await loop.run_in_executor(None, _export_to_temp, container, project_id)
    except errors.NotFound:
        return error_response("NotFound", "the project is no longer stored", 404)
    try:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "dataset"
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Disposition": f'attachment; filename="{safe}.zip"',
            "Content-Length": str(os.path.getsize(path)), "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff"})
        await response.prepare(request)
        with open(path, "rb") as f:
            while chunk := await loop.run_in_executor(None, f.read, 1024 * 1024):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        Path(path).unlink(missing_ok=True)


def setup_links(app: web.Application, container) -> None:
    """Resolve the signing key (CVBOT_SECRET_KEY, or the one stored in the database, made on first start) and add
    the image route."""
    settings = container.settings
    signer = Signer(link_secret(container.deps, settings.secret_key), settings.link_ttl)
    app[SIGNER] = signer
    app.router.add_get(IMAGE_LINK, lambda request: serve_image(request, container, signer))
    app.router.add_get(DATASET_LINK, lambda request: serve_dataset(request, container, signer))
    log.info("image links expire after %d s; signed with %s", settings.link_ttl,
             "CVBOT_SECRET_KEY" if settings.secret_key else "the key stored in the database")
