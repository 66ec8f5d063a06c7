"""Signed, expiring links to one stored image (Custom Vision's originalImageUri, resizedImageUri and thumbnailUri),
like Azure's SAS links: whoever holds the link may fetch that one image until it expires, without a key.

A signature is HMAC-SHA256, under the server's link secret, over the image's kind, its id, the variant and the
expiry; nothing else in the URL is trusted. Pure functions: no clock, no storage (callers pass `now`)."""
from __future__ import annotations

import hashlib
import hmac

# What a link may point at: a training image (by image id) or a stored prediction's image (by prediction id).
KINDS = ("image", "prediction")
# original: the stored bytes; resized and thumbnail: JPEGs made on first request (see core.usecases.links)
VARIANTS = ("original", "resized", "thumbnail")
# A resized image fits in RESIZED_MAX_EDGE x RESIZED_MAX_EDGE, a thumbnail in THUMBNAIL_MAX_EDGE x THUMBNAIL_MAX_EDGE
# (aspect ratio kept, never enlarged).
RESIZED_MAX_EDGE = 1600
THUMBNAIL_MAX_EDGE = 200
MAX_EDGES = {"resized": RESIZED_MAX_EDGE, "thumbnail": THUMBNAIL_MAX_EDGE}
DEFAULT_TTL_S = 3600
_MAX_ID = 64


def _message(kind: str, item_id: str, variant: str, expires: int) -> bytes:
    return f"cvbot-image-link/v1\n{kind}\n{item_id}\n{variant}\n{expires}".encode()


def sign(secret: bytes, kind: str, item_id: str, variant: str, expires: int) -> str:
    """The signature (64 hex digits) of a link to `variant` of the `kind` item `item_id`, valid until `expires`
    (seconds since the epoch)."""
    if not secret:
        raise ValueError("the link secret is empty")
    if kind not in KINDS or variant not in VARIANTS:
        raise ValueError(f"no links to {kind}/{variant}")
    return hmac.new(secret, _message(kind, item_id, variant, int(expires)), hashlib.sha256).hexdigest()


def verify(secret: bytes, kind: str, item_id: str, variant: str, expires: str, signature: str, now: float) -> bool:
    """Whether a link's parts (as received, unparsed) carry a valid signature and have not expired at `now`.
    Every malformed part is simply False: the caller answers all failures alike."""
    if not secret or kind not in KINDS or variant not in VARIANTS or not item_id or len(item_id) > _MAX_ID:
        return False
    if not (expires.isascii() and expires.isdigit()) or len(expires) > 12 or len(signature) != 64:
        return False
    exp = int(expires)
    if str(exp) != expires:  # one spelling per expiry (no leading zeros)
        return False
    expected = sign(secret, kind, item_id, variant, exp)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return False
    return now <= exp


def expiry(now: float, ttl_s: int) -> int:
    """The expiry of a link made at `now`, `ttl_s` seconds later, rounded up to a step of a tenth of the lifetime (at
    most a minute): the links of pages fetched within that step are the same URLs, so a client's cache serves
    them again."""
    step = max(1, min(60, ttl_s // 10))
    return -(-(int(now) + ttl_s) // step) * step


# ---------------------------------------------------------------- dataset archives
# A link to one project's dataset zip (`/cv export dataset` posts one when the zip is larger than Slack allows):
# made on request by the server, fetched without a key until it expires. The message differs from an image link's,
# so no image signature is ever a dataset signature or the reverse.
DATASET_LINK = "/customvision/datasets/{projectId}"


def _dataset_message(project_id: str, expires: int) -> bytes:
    return f"cvbot-dataset-link/v1\n{project_id}\n{expires}".encode()


def sign_dataset(secret: bytes, project_id: str, expires: int) -> str:
    """The signature (64 hex digits) of a link to the dataset zip of `project_id`, valid until `expires`."""
    if not secret:
        raise ValueError("the link secret is empty")
    return hmac.new(secret, _dataset_message(project_id, int(expires)), hashlib.sha256).hexdigest()


def verify_dataset(secret: bytes, project_id: str, expires: str, signature: str, now: float) -> bool:
    """Whether a dataset link's parts (as received) carry a valid signature and have not expired at `now`."""
    if not secret or not project_id or len(project_id) > _MAX_ID or len(signature) != 64:
        return False
    if not (expires.isascii() and expires.isdigit()) or len(expires) > 12 or str(int(expires)) != expires:
        return False
    expected = sign_dataset(secret, project_id, int(expires))
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")) and now <= int(expires)


def dataset_url(base: str, secret: bytes, project_id: str, expires: int) -> str:
    """The signed link to a project's dataset zip on the server at `base` (CVBOT_PUBLIC_URL or its own address)."""
    return (base.rstrip("/") + DATASET_LINK.format(projectId=project_id)
            + f"?exp={int(expires)}&sig={sign_dataset(secret, project_id, expires)}")
