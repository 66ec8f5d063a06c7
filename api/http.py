"""HTTP plumbing shared by the Training and Prediction handlers: operations, keys, parsing, errors."""
from __future__ import annotations

import asyncio
import binascii
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from core.errors import CvError
from core.model import DEFAULT_WORKSPACE
from core.usecases import Scope, UseCases, workspace_for_key

log = logging.getLogger(__name__)

TRAINING, PREDICTION = "training", "prediction"
KEY_HEADERS = {TRAINING: "Training-Key", PREDICTION: "Prediction-Key"}
MAX_BATCH = 64
MAX_TAGS_PER_IMAGE = 20

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


@dataclass
class Registry:
    operations: list[Operation] = field(default_factory=list)

    def add(self, api: str, method: str, path: str, name: str, *, query=(), body=None, result=None,
            statuses=(200,), summary=""):
        def register(fn):
            self.operations.append(Operation(api, method, path, name, fn, tuple(query), body, result,
                                             tuple(statuses), summary or (fn.__doc__ or "").strip().split("\n")[0]))
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
        raise ApiError(f"the query parameter '{name}' must be true or false, not {v!r}", "BadRequestInvalid")

    def q_int(self, name: str, default: int | None = None, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
        v = self._raw(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except ValueError:
            raise ApiError(f"the query parameter '{name}' must be an integer, not {v!r}", "BadRequestInvalid") from None
        if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
            bound = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                     else f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            raise ApiError(f"the query parameter '{name}' must be {bound}", "BadRequestInvalid")
        return n

    def q_float(self, name: str, default: float | None = None) -> float | None:
        v = self._raw(name)
        if v is None or v == "":
            return default
        try:
            x = float(v)
        except ValueError:
            raise ApiError(f"the query parameter '{name}' must be a number, not {v!r}", "BadRequestInvalid") from None
        if x != x or x in (float("inf"), float("-inf")):
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
        raw = await self.request.read()
        if not raw.strip():
            if required:
                raise ApiError("the request needs a JSON body", "BadRequestRequiredParamIsNull")
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError("the request body is not valid JSON", "BadRequestInvalid") from None
        if not isinstance(body, dict):
            raise ApiError("the request body must be a JSON object", "BadRequestInvalid")
        return body


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
    """The images in a multipart/form-data body (each part one image) or a raw (octet-stream/image) body."""
    ctype = request.content_type.lower()
    if ctype.startswith("multipart/"):
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
                        raise ApiError(f"the request is larger than {max_total // 1048576} MB",
                                       "BadRequestImageSizeBytes", 413)
                    chunks.append(chunk)
                files.append(UploadedFile(part.filename or part.name or f"image {len(files) + 1}", b"".join(chunks)))
        except ApiError:
            raise
        except (ValueError, RuntimeError, AssertionError, LookupError, HttpProcessingError) as e:
            raise ApiError(f"malformed multipart body: {e}", "BadRequestImageStream") from None
        return files
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(f"the request is larger than {max_total // 1048576} MB", "BadRequestImageSizeBytes",
                       413) from None
    return [UploadedFile("image", data)] if data else []


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


def make_handler(op: Operation, container) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            key = request_key(request, op.api)
            found = await asyncio.get_running_loop().run_in_executor(None, resolve_key, container, key, op.api)
            if found is None:
                header = KEY_HEADERS[op.api]
                why = "is missing" if not key else "is not valid for this API"
                return error_response("Unauthorized", f"access denied: the {header} header {why}", 401)
            return await op.handler(Ctx(request, container, found[0], found[1]))
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
