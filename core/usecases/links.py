"""Serving one stored image through a signed link (core.links): the link is the capability, so no scope is
needed; the caller has checked the signature. Resized copies and thumbnails are made on first request, stored as
blobs (content-addressed) and found again through the variants table, by every process of the install."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from .. import errors
from ..decode_budget import BUDGET
from ..images import content_type, fit_jpeg, sha256_of
from ..links import KINDS, MAX_EDGES, VARIANTS
from .base import Deps

LINK_SECRET = "image-link-signing-key"


def link_secret(deps: Deps, configured: str | None = None) -> bytes:
    """The key links are signed with: `configured` (CVBOT_SECRET_KEY) when set, else one generated once and kept in
    the database, so that every process of an install signs (and accepts) the same links."""
    if configured:
        return configured.encode()
    with deps.uow() as uow:
        value = uow.secrets.get_or_add(LINK_SECRET, secrets.token_hex(32))
        uow.commit()
    return value.encode()


@dataclass(frozen=True)
class LinkedImage:
    data: bytes
    content_type: str
    etag: str  # the sha256 of `data`


def _source_key(deps: Deps, kind: str, item_id: str) -> str | None:
    with deps.uow() as uow:
        if kind == "image":
            found = uow.images.get_many([item_id])
            return found[0].sha256 if found else None
        prediction = uow.predictions.get(item_id)
        return prediction.sha256 if prediction is not None and prediction.stored else None


def linked_image(deps: Deps, kind: str, item_id: str, variant: str) -> LinkedImage:
    """The bytes a (verified) link names. NotFound when the image or prediction is gone; Busy when the decode
    budget stays taken (making a resized copy)."""
    if kind not in KINDS or variant not in VARIANTS:
        raise errors.NotFound("no such image")
    source = _source_key(deps, kind, item_id)
    if source is None:
        raise errors.NotFound("the image is no longer stored")
    try:
        data = deps.blobs.get(source)
    except KeyError:
        raise errors.NotFound("the image is no longer stored") from None
    if variant == "original":
        return LinkedImage(data, content_type(data), source)
    with deps.uow() as uow:
        key = uow.variants.get(source, variant)
    if key is not None:
        try:
            return LinkedImage(deps.blobs.get(key), "image/jpeg", key)
        except KeyError:  # collected (the copy was an orphan once): make it again
            pass
    copy = fit_jpeg(data, MAX_EDGES[variant], BUDGET.wait_s)
    key = deps.blobs.put(copy)
    with deps.uow() as uow:
        uow.variants.put(source, variant, key)
        uow.commit()
    return LinkedImage(copy, "image/jpeg", sha256_of(copy))
