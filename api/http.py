"""HTTP plumbing shared by the Training and Prediction handlers: operations, keys, parsing, errors."""
from __future__ import annotations

import asyncio
import binascii
import ipaddress
import json
import logging
import math
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from core.errors import CvError
from core.model import DEFAULT_WORKSPACE
from core.usecases import Scope, UseCases, workspace_for_key

from .limits import RateLimiter, retry_after

log = logging.getLogger(__name__)

TRAINING, PREDICTION = "training", "prediction"
KEY_HEADERS = {TRAINING: "Training-Key", PREDICTION: "Prediction-Key"}
MAX_BATCH = 64
MAX_TAGS_PER_IMAGE = 20
# Request limits. A JSON body is a few kB in practice; image uploads set their own limit when they register.
JSON_MAX_BYTES = 2 * 1024 * 1024
MAX_JSON_DEPTH = 32
INT32_MAX = 2**31 - 1  # Custom Vision's integer parameters (skip, take...) are 32-bit
INT64_MAX = 2**63 - 1  # no integer in a JSON body may be larger (databases store 64 bits)

# cvbot's core codes, spelled as Custom Vision spells them on the wire.
WIRE_CODES = {
    "BadRequestNameNotUnique": "BadRequestProjectNameNotUnique",
    "BadRequestDuplicateTag": "BadRequestTagNameNotUnique",
    "BadRequestTagTypeNegativeExists": "BadRequestMultipleNegativeTag",
    "BadRequestDomainInvalid": "BadRequestProjectUnknownDomain",
    "BadRequestIterationNotCompleted": "BadRequestIterationIsNotTrained",
    "BadRequestTagLimitExceed": "BadRequestExceedTagPerProjectLimit",
    "BadRequestNoIteration": "NotFoundProjectDefaultIteration",
    "BadRequestInvalidArgument": "BadRequestInvalid",
}


class ApiError(CvError):
    """An error raised by the HTTP layer itself (bad parameter, bad key...)."""

    def __init__(self, message: str, code: str = "BadRequest", http_status: int = 400):
        super().__init__(message, code)
        self.http_status = http_status


def error_response(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"code": WIRE_CODES.get(code, code), "message": message}, status=status)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


# --------------------------------------------------------------------------- operations
@dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"  # string | integer | number | boolean | array (of strings)
    required: bool = False
    format: str | None = None
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Operation:
    api: str  # TRAINING | PREDICTION
    method: str
    path: str  # relative to the API's prefix, e.g. /projects/{projectId}/tags
    name: str  # the SDK's operation name, used as the OpenAPI operationId
    handler: Callable[[Ctx], Awaitable[web.StreamResponse]]
    query: tuple[Param, ...] = ()
    body: str | None = None  # None | "images" (multipart or octet-stream) | a JSON schema name in openapi.py
    result: str | None = None  # JSON schema name, "[Name]" for arrays, None for 204
    statuses: tuple[int, ...] = (200,)
    summary: str = ""
    max_body: int = JSON_MAX_BYTES  # the largest request body this operation reads


@dataclass
class Registry:
    operations: list[Operation] = field(default_factory=list)

    def add(self, api: str, method: str, path: str, name: str, *, query=(), body=None, result=None,
            statuses=(200,), summary="", max_body: int = JSON_MAX_BYTES):
        def register(fn):
            self.operations.append(Operation(api, method, path, name, fn, tuple(query), body, result,
                                             tuple(statuses), summary or (fn.__doc__ or "").strip().split("\n")[0],
                                             max_body))
            return fn

        return register


REGISTRY = Registry()
training = lambda method, path, name, **kw: REGISTRY.add(TRAINING, method, path, name, **kw)  # noqa: E731
prediction = lambda method, path, name, **kw: REGISTRY.add(PREDICTION, method, path, name, **kw)  # noqa: E731


# --------------------------------------------------------------------------- request context
@dataclass
class Ctx:
    request: web.Request
    container: Any
    workspace: str
    key_kind: str
    max_body: int = JSON_MAX_BYTES

    @cached_property
    def cv(self) -> UseCases:
        """The use cases, scoped to the caller's workspace and key."""
        return self.container.usecases(Scope.of(self.workspace, self.key_kind))

    @property
    def settings(self):
        return self.container.settings

    async def run(self, fn: Callable, *args, **kwargs):
        """Run blocking service calls off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    # -- query parameters
    def _raw(self, name: str) -> str | None:
        q = self.request.rel_url.query
        for k in (name, name[0].lower() + name[1:], name[0].upper() + name[1:]):
            if k in q:
                return q.getone(k)
        return None

    def q_str(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        v = self._raw(name)
        if v is None or v == "":
            if required:
                raise ApiError(f"the query parameter '{name}' is required", "BadRequestRequiredParamIsNull")
            return default
        return v

    def q_bool(self, name: str, default: bool | None = None) -> bool | None:
        v = self._raw(name)
        if v is None or v == "":
            return default
        if v.strip().lower() in ("true", "1", "yes"):
            return True
        if v.strip().lower() in ("false", "0", "no"):
            return False
        raise ApiError(f"the query parameter '{name}' must be true or false, not {shown(v)}", "BadRequestInvalid")

    def q_int(self, name: str, default: int | None = None, minimum: int = -INT32_MAX - 1,
              maximum: int = INT32_MAX) -> int | None:
        """A 32-bit integer, as Custom Vision's are (ASCII digits only: int() also takes '²'... and 5,000 digits)."""
        v = self._raw(name)
        if v is None or v == "":
            return default
        if not _INTEGER.fullmatch(v.strip()):
            raise ApiError(f"the query parameter '{name}' must be an integer, not {shown(v)}", "BadRequestInvalid")
        n = int(v)
        if not minimum <= n <= maximum:
            lowest, highest = minimum == -INT32_MAX - 1, maximum == INT32_MAX  # bounds of the type, not the caller's
            bound = (f"at least {minimum}" if highest and n < minimum else f"at most {maximum}" if lowest or highest
                     else f"between {minimum} and {maximum}")
            raise ApiError(f"the query parameter '{name}' must be {bound}", "BadRequestInvalid")
        return n

    def q_float(self, name: str, default: float | None = None) -> float | None:
        v = self._raw(name)
        if v is None or v == "":
            return default
        try:
            x = float(v)
        except ValueError:
            raise ApiError(f"the query parameter '{name}' must be a number, not {shown(v)}",
                           "BadRequestInvalid") from None
        if not math.isfinite(x):
            raise ApiError(f"the query parameter '{name}' must be a finite number", "BadRequestInvalid")
        return x

    def q_list(self, name: str, max_items: int | None = None) -> list[str] | None:
        q = self.request.rel_url.query
        values: list[str] = []
        found = False
        for k in dict.fromkeys((name, name[0].lower() + name[1:], name[0].upper() + name[1:])):
            for v in q.getall(k, []):
                found = True
                values += [x.strip() for x in v.split(",") if x.strip()]
        if not found:
            return None
        values = list(dict.fromkeys(values))
        if max_items is not None and len(values) > max_items:
            raise ApiError(f"at most {max_items} values in '{name}'", "BadRequestExceededBatchSize")
        return values

    def q_ids(self, name: str, max_items: int | None = None, what: str = "id") -> list[str] | None:
        values = self.q_list(name, max_items)
        if values is not None:
            for v in values:
                if not is_guid(v):
                    raise ApiError(f"'{v}' in '{name}' is not a valid {what}", "BadRequestInvalidIds")
        return values

    async def json_body(self, required: bool = True) -> dict:
        raw = await read_body(self.request, self.max_body, "BadRequestInvalid")
        if not raw.strip():
            if required:
                raise ApiError("the request needs a JSON body", "BadRequestRequiredParamIsNull")
            return {}
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise ApiError("the request body must be a JSON object", "BadRequestInvalid")
        return body


_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")


def shown(value: str, limit: int = 40) -> str:
    """A client's value, quoted for an error message, cut to `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


# --------------------------------------------------------------------------- request bodies
def _too_large(limit: int, code: str) -> ApiError:
    size = f"{limit / 1048576:g} MB" if limit >= 1048576 else f"{limit // 1024} kB"
    return ApiError(f"the request body is larger than {size}, the most this operation takes", code, 413)


async def read_body(request: web.Request, limit: int, code: str) -> bytes:
    """The whole body, counted while it streams in: refused (413, `code`) as soon as it passes `limit`, or at once
    when its Content-Length says it will, so an oversized body is never buffered."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, code)
    buf = bytearray()
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            if len(buf) + len(chunk) > limit:
                raise _too_large(limit, code)
            buf += chunk
    except HttpProcessingError as e:
        raise ApiError(f"malformed request body: {e.message}", "BadRequestInvalid") from None
    return bytes(buf)


class _JsonNumberError(ValueError):
    pass


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise _JsonNumberError(f"the number {shown(text)} is out of range")
    return x


def _bounded_int(text: str) -> int:
    if len(text) > 20 or not -INT64_MAX - 1 <= (n := int(text)) <= INT64_MAX:
        raise _JsonNumberError(f"the integer {shown(text)} is out of range")
    return n


def _no_constant(name: str):
    raise _JsonNumberError(f"{name} is not a number JSON allows")


_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
_SCAN_BLOCK = 1 << 18


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of a UTF-8 JSON text nest deeper than `limit` (brackets inside strings do not
    count), found by a scan before any parser recurses: escapes removed with bytes.replace, then numpy over the
    blocks that hold brackets (the parity of the quotes seen so far tells whether a bracket is inside a string), so
    even a 64 MB body costs milliseconds."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b"\\" in data:  # left to right, "\\\\" pairs first: what remains of a backslash escapes a quote or a letter
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth, in_string = 0, 0
    for start in range(0, len(data), _SCAN_BLOCK):
        end = min(start + _SCAN_BLOCK, len(data))
        if all(data.find(c, start, end) < 0 for c in (b"[", b"{", b"]", b"}")):  # e.g. inside base64 images
            in_string ^= data.count(b'"', start, end) & 1
            continue
        block = np.frombuffer(data, np.uint8, count=end - start, offset=start)
        inside = (np.cumsum(block == ord('"'), dtype=np.int64) + in_string) & 1
        levels = np.cumsum(np.where(inside == 1, 0, _BRACKET_STEP[block]), dtype=np.int64) + depth
        if int(levels.max()) > limit:
            return True
        depth, in_string = int(levels[-1]), int(inside[-1])
    return False


def parse_json(raw: bytes):
    """A request's JSON: at most MAX_JSON_DEPTH levels deep, numbers finite (no NaN/Infinity, nothing that
    overflows a double) and integers within 64 bits, else ApiError (400 BadRequestInvalid)."""
    encoding = json.detect_encoding(raw)
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise ApiError("the request body is not valid JSON (it is not UTF-8 text)", "BadRequestInvalid") from None
    if json_depth_exceeds(raw if encoding.startswith("utf-8") else text.encode()):
        raise ApiError(f"the request body's JSON is nested more than {MAX_JSON_DEPTH} levels deep",
                       "BadRequestInvalid")
    try:
        return json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except _JsonNumberError as e:
        raise ApiError(f"the request body is not valid JSON: {e}", "BadRequestInvalid") from None
    except RecursionError:  # the scan above makes this unreachable; kept as a guard
        raise ApiError("the request body's JSON is nested too deeply", "BadRequestInvalid") from None
    except ValueError as e:
        raise ApiError(f"the request body is not valid JSON: {str(e)[:120]}", "BadRequestInvalid") from None


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def field_str(body: dict, name: str, default: str | None = None) -> str | None:
    v = body.get(name, default)
    if v is not None and not isinstance(v, str):
        raise ApiError(f"'{name}' must be a string", "BadRequestInvalid")
    return v


def field_list(body: dict, name: str) -> list:
    v = body.get(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ApiError(f"'{name}' must be a list", "BadRequestInvalid")
    return v


def b64decode(value) -> bytes | None:
    import base64

    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None


# --------------------------------------------------------------------------- images in request bodies
@dataclass
class UploadedFile:
    name: str
    data: bytes


async def read_images(request: web.Request, max_total: int, max_count: int = MAX_BATCH) -> list[UploadedFile]:
    """The images in a multipart/form-data body (each part one image) or a raw (octet-stream/image) body, counted
    while they stream in: refused (413) as soon as they pass `max_total` bytes."""
    ctype = request.content_type.lower()
    if request.content_length is not None and request.content_length > max_total:
        raise _too_large(max_total, "BadRequestImageSizeBytes")
    # Microsoft's REST quickstart sends one image's raw bytes labelled multipart/form-data, with no boundary: a
    # body that cannot be multipart (no boundary) is read as the raw image it is.
    has_boundary = "boundary=" in (request.headers.get("Content-Type") or "").lower()
    if ctype.startswith("multipart/") and has_boundary:
        files: list[UploadedFile] = []
        total = 0
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise ApiError("nested multipart bodies are not supported", "BadRequestImageStream")
                if len(files) >= max_count:
                    raise ApiError(f"at most {max_count} images in one request", "BadRequestImageExceededCount")
                chunks = []
                while True:
                    chunk = await part.read_chunk(1 << 16)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > max_total:
                        raise _too_large(max_total, "BadRequestImageSizeBytes")
                    chunks.append(chunk)
                files.append(UploadedFile(part.filename or part.name or f"image {len(files) + 1}", b"".join(chunks)))
        except ApiError:
            raise
        except (ValueError, RuntimeError, AssertionError, LookupError, HttpProcessingError) as e:
            raise ApiError(f"malformed multipart body: {e}", "BadRequestImageStream") from None
        return files
    data = await read_body(request, max_total, "BadRequestImageSizeBytes")
    return [UploadedFile("image", data)] if data else []


# --------------------------------------------------------------------------- links to this server
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def from_trusted_proxy(request: web.Request, settings) -> bool:
    if not settings.trusted_proxies or not request.remote:
        return False
    try:
        remote = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    if isinstance(remote, ipaddress.IPv6Address) and remote.ipv4_mapped:  # a dual-stack socket's IPv4 peer
        remote = remote.ipv4_mapped
    return any(remote in ipaddress.ip_network(n) for n in settings.trusted_proxies)


def base_url(request: web.Request, settings) -> str:
    """Where clients reach this server, for links in responses: CVBOT_PUBLIC_URL when set; what a trusted proxy
    (CVBOT_TRUSTED_PROXIES) says in X-Forwarded-Proto/-Host; else the address the request arrived on. Never the
    client's own Host or X-Forwarded-* headers."""
    if settings.public_url:
        return settings.public_url
    if from_trusted_proxy(request, settings):
        proto = _first(request.headers.get("X-Forwarded-Proto")).lower() or request.scheme
        host = _first(request.headers.get("X-Forwarded-Host")) or request.host
        if proto in ("http", "https") and _HOST.fullmatch(host):
            return f"{proto}://{host}"
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sock, tuple) and len(sock) >= 2:
        host, port = str(sock[0]), int(sock[1])
    else:
        host, port = settings.host, settings.port
    return f"{request.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


# --------------------------------------------------------------------------- keys
def _same(a: str | None, b: str) -> bool:
    return bool(a) and secrets.compare_digest(a.encode(), b.encode())


def resolve_key(container, key: str | None, api: str) -> tuple[str, str] | None:
    """(workspace, kind) for a key that may call `api`, or None. Blocking (may read the database).

    Training keys may also call the Prediction API; prediction keys may call only the Prediction API."""
    if not key:
        return None
    s = container.settings
    if _same(s.training_key, key):
        found = (DEFAULT_WORKSPACE, TRAINING)
    elif _same(s.prediction_key, key):
        found = (DEFAULT_WORKSPACE, PREDICTION)
    else:
        owner = workspace_for_key(container.deps, key)
        found = None if owner is None else (owner[0], owner[1].value)
    if found is None:
        return None
    workspace, kind = found
    if api == TRAINING and kind != TRAINING:
        return None
    return workspace, kind


def request_key(request: web.Request, api: str) -> str | None:
    """The key for `api`: its own header (any case); the Prediction API also takes the training key's header."""
    h = request.headers
    key = h.get(KEY_HEADERS[api])
    if not key and api == PREDICTION:
        key = h.get(KEY_HEADERS[TRAINING])
    if not key:
        key = h.get("Ocp-Apim-Subscription-Key")
    return key.strip() if key else None


def make_handler(op: Operation, container,
                 limiter: RateLimiter | None = None) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    body_code = "BadRequestImageSizeBytes" if op.body == "images" else "BadRequestInvalid"

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            key = request_key(request, op.api)
            found = await asyncio.get_running_loop().run_in_executor(None, resolve_key, container, key, op.api)
            if found is None:
                header = KEY_HEADERS[op.api]
                why = "is missing" if not key else "is not valid for this API"
                return error_response("Unauthorized", f"access denied: the {header} header {why}", 401)
            assert key is not None
            if limiter is not None and (wait := limiter.acquire(key)):
                response = error_response(
                    "TooManyRequests", f"this key may send {limiter.rate(key):g} requests per second; "
                    f"retry after {retry_after(wait)} s", 429)
                response.headers["Retry-After"] = retry_after(wait)
                return response
            if request.content_length is not None and request.content_length > op.max_body:
                raise _too_large(op.max_body, body_code)
            return await op.handler(Ctx(request, container, found[0], found[1], op.max_body))
        except CvError as e:
            response = error_response(e.code, e.message, getattr(e, "http_status", 400))
            if getattr(e, "retry_after", None):  # Busy: at capacity now, the same request may succeed later
                response.headers["Retry-After"] = str(e.retry_after)
            return response
        except web.HTTPException as e:
            return error_response("BadRequest" if e.status < 500 else "ErrorUnknown", e.reason or "", e.status)
        except Exception:  # noqa: BLE001 - one broken request must not take the server down; it is logged
            log.exception("%s %s failed", request.method, op.name)
            return error_response("ErrorUnknown", "internal error; see the server log", 500)

    return handle


@web.middleware
async def json_errors(request: web.Request, handler):
    """Unknown paths and methods under /customvision answer in Custom Vision's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if not request.path.startswith("/customvision") or e.status < 400:
            raise
        code = {404: "NotFound", 405: "BadRequestNotSupported",
                413: "BadRequestImageSizeBytes"}.get(e.status, "BadRequest")
        message = {404: f"no such operation: {request.method} {request.path}",
                   405: f"{request.method} is not supported on {request.path}"}.get(e.status, e.reason or "")
        return error_response(code, message, e.status)


# "/customvision/<version>/<api>" in any case: Azure routes case-insensitively, and Microsoft's REST quickstart
# sends "/customvision/v3.3/Training/..." and "/customvision/v3.1/Prediction/...".
_API_PREFIX = re.compile(r"/customvision/v[0-9][^/]*/(?:training|prediction)(?=/|$)", re.IGNORECASE)


@web.middleware
async def any_case_prefix(request: web.Request, handler):
    """A request whose API prefix is not lower case (`/customvision/V3.3/Training/...`) is routed as if it were;
    only the prefix is folded: ids and names later in the path keep their case. It must be the app's first
    middleware: the others run around the re-resolved handler."""
    m = _API_PREFIX.match(request.rel_url.raw_path)
    if m is None or request.match_info.http_exception is None or m.group(0) == m.group(0).lower():
        return await handler(request)
    raw = request.rel_url.raw_path
    alt = request.clone(rel_url=URL.build(path=m.group(0).lower() + raw[m.end():],
                                          query_string=request.rel_url.raw_query_string, encoded=True))
    match = await request.app.router.resolve(alt)
    if isinstance(match.http_exception, web.HTTPNotFound):  # no such operation in any case: say so as sent
        return await handler(request)
    match.add_app(request.app)
    match.freeze()
    alt._match_info = match  # what aiohttp's own normalize_path_middleware sets on a re-resolved request
    inner = match.handler
    rest = list(request.app.middlewares)
    for mw in reversed(rest[rest.index(any_case_prefix) + 1:] if any_case_prefix in rest else rest):
        inner = partial(mw, handler=inner)
    return await inner(alt)
