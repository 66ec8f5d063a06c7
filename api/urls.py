"""Fetching images by URL, only from hosts the operator allowed (no server-side fetches of arbitrary URLs)."""
from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

import aiohttp

from core.errors import ImageRejected

from .http import ApiError

FETCH_TIMEOUT_S = 15
DEFAULT_PORTS = {"http": 80, "https": 443}


def _entry(entry: str) -> tuple[str, str | None]:
    """An allow-list entry as (host, port): port None for an entry without one, "*" for any port."""
    entry = entry.lower().strip()
    if entry.startswith("["):  # [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") and rest[1:] else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, port or None
    return entry, None  # a host name, an IPv4 address or a bare IPv6 address


def host_allowed(host: str, allowed: list[str], port: int | None = None, scheme: str = "https") -> bool:
    """Exact host names; an entry starting with '.' or '*.' also allows its subdomains.

    Ports: an entry without one allows only the scheme's default port (80 for http, 443 for https); `host:8080`
    allows that port only; `host:*` any port. (`port` None: the scheme's default port.)"""
    host = host.lower().rstrip(".")
    port = port if port is not None else DEFAULT_PORTS.get(scheme)
    for raw in allowed:
        entry, entry_port = _entry(raw)
        if entry_port is None:
            if port != DEFAULT_PORTS.get(scheme):
                continue
        elif entry_port != "*" and entry_port != str(port):
            continue
        if entry.startswith("*."):
            entry = entry[1:]
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry:
            return True
    return False


def _parts(url: str) -> tuple[SplitResult, str, int | None]:
    try:
        parts = urlsplit(url.strip())
        return parts, parts.hostname or "", parts.port
    except ValueError:  # also an out-of-range or non-numeric port
        raise ApiError(f"not a valid URL: {url!r}", "BadRequestImageUrl") from None


def check_url(url: str, allowed: list[str]) -> str:
    parts, host, port = _parts(url)
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError("only http and https URLs are supported", "BadRequestImageUrl")
    if not allowed:
        raise ApiError("this server does not fetch images from URLs; upload the image instead "
                       "(an operator can allow hosts with CVBOT_ALLOWED_URL_HOSTS)", "BadRequestImageUrl")
    if not host_allowed(host, allowed, port, parts.scheme):
        where = host if port is None else f"{host} port {port}"
        raise ApiError(f"the host {where} is not in this server's allowed URL hosts (CVBOT_ALLOWED_URL_HOSTS); "
                       "upload the image instead", "BadRequestImageUrl")
    return url.strip()


def _too_large(size: str, max_bytes: int) -> ImageRejected:
    return ImageRejected("ErrorImageSize", f"the image at the URL is {size}; the limit is {max_bytes // 1048576} MB",
                         "BadRequestImageSizeBytes")


async def fetch_image(url: str, allowed: list[str], max_bytes: int) -> bytes:
    """The bytes at an allowed URL (no redirects). Refused as ImageRejected (ErrorImageSize) from a declared
    Content-Length over `max_bytes` before reading the body, or as soon as the body read passes `max_bytes`."""
    url = check_url(url, allowed)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise ApiError(f"fetching the image URL returned HTTP {resp.status}", "BadRequestImageUrl")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise _too_large(f"{resp.content_length / 1048576:.1f} MB", max_bytes)
            chunks, total = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:  # read no further
                    raise _too_large(f"over {max_bytes // 1048576} MB", max_bytes)
    except (ApiError, ImageRejected):
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ApiError(f"could not fetch the image URL: {type(e).__name__}", "BadRequestImageUrl") from None
    return b"".join(chunks)
