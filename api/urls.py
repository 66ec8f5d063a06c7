"""Fetching images by URL, only from hosts the operator allowed (no server-side fetches of arbitrary URLs)."""
from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from .http import ApiError

FETCH_TIMEOUT_S = 15


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Exact host names; an entry starting with '.' or '*.' also allows its subdomains."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().strip()
        if entry.startswith("*."):
            entry = entry[1:]
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry:
            return True
    return False


def check_url(url: str, allowed: list[str]) -> str:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        raise ApiError(f"not a valid URL: {url!r}", "BadRequestImageUrl") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError("only http and https URLs are supported", "BadRequestImageUrl")
    if not allowed:
        raise ApiError("this server does not fetch images from URLs; upload the image instead "
                       "(an operator can allow hosts with CVBOT_ALLOWED_URL_HOSTS)", "BadRequestImageUrl")
    if not host_allowed(host, allowed):
        raise ApiError(f"the host {host} is not in this server's allowed URL hosts (CVBOT_ALLOWED_URL_HOSTS); "
                       "upload the image instead", "BadRequestImageUrl")
    return url.strip()


async def fetch_image(url: str, allowed: list[str], max_bytes: int) -> bytes:
    """The bytes at an allowed URL (no redirects, at most `max_bytes` + 1 read)."""
    url = check_url(url, allowed)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise ApiError(f"fetching the image URL returned HTTP {resp.status}", "BadRequestImageUrl")
            chunks, total = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:  # enough to be rejected as too large; read no further
                    break
    except ApiError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ApiError(f"could not fetch the image URL: {type(e).__name__}", "BadRequestImageUrl") from None
    return b"".join(chunks)
