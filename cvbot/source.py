"""A Custom Vision Training endpoint (Azure's, or another cvbot) as the source of `cvbot migrate`: the public REST
API, v3.3 training paths, the key in the `Training-Key` header; images fetched from their signed
`originalImageUri` without the key (Azure's SAS links, cvbot's signed links). Standard library only.

Azure allows about 10 training calls per second and answers 429 with `Retry-After` beyond: each call waits as
told (bounded) and retries a few times; 5xx and dropped connections are retried the same way."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from core import errors
from core.images import TRAINING_MAX_BYTES
from core.sources import SourceImage, SourceProject, SourceProjects, SourceTag

API = "/customvision/v3.3/training"
RETRIES = 6
MAX_WAIT_S = 60.0
TIMEOUT_S = 60.0


class SourceError(errors.CvError):
    code = "SourceUnavailable"


def _retry_after(value: str | None, attempt: int) -> float:
    if value:
        try:
            return min(MAX_WAIT_S, max(0.0, float(value)))
        except ValueError:
            try:
                return min(MAX_WAIT_S, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
            except (TypeError, ValueError):
                pass
    return min(MAX_WAIT_S, 0.5 * 2 ** attempt)


class _KeyStaysOnItsHost(urllib.request.HTTPRedirectHandler):
    """A redirect to another host does not carry the training key along (urllib copies every header)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Training-key")
        return new


class HttpSource(SourceProjects):
    def __init__(self, endpoint: str, training_key: str, sleep: Callable[[float], None] = time.sleep,
                 opener: Callable[..., Any] | None = None):
        endpoint = endpoint.strip().rstrip("/")
        if not endpoint.lower().startswith(("http://", "https://")):
            raise errors.InvalidInput(f"the endpoint must be an http(s) URL, not {endpoint!r}")
        if not training_key:
            raise errors.InvalidInput("a training key is needed (--training-key or CVBOT_SOURCE_TRAINING_KEY)")
        self.endpoint = endpoint
        self._key = training_key
        self._sleep = sleep
        self._open = opener or urllib.request.build_opener(_KeyStaysOnItsHost()).open
        self._domains: dict[str, dict[str, Any]] | None = None
        self.calls = 0
        self.waited = 0.0

    # ------------------------------------------------------------ HTTP
    def _fetch(self, url: str, headers: dict[str, str], limit: int | None = None) -> bytes:
        for attempt in range(RETRIES + 1):
            self.calls += 1
            try:
                with self._open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as r:
                    data: bytes = r.read(limit + 1) if limit else r.read()
                if limit and len(data) > limit:
                    raise SourceError(f"the image is larger than {limit} bytes")
                return data
            except urllib.error.HTTPError as e:
                if (e.code == 429 or e.code >= 500) and attempt < RETRIES:
                    wait = _retry_after(e.headers.get("Retry-After"), attempt)
                    self.waited += wait
                    self._sleep(wait)
                    continue
                raise SourceError(f"{url.split('?')[0]}: HTTP {e.code} {_error_text(e)}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt < RETRIES:
                    self._sleep(min(MAX_WAIT_S, 0.5 * 2 ** attempt))
                    continue
                raise SourceError(f"{url.split('?')[0]}: {getattr(e, 'reason', e)}") from None
        raise SourceError(f"{url}: no answer after {RETRIES} retries")

    def _get(self, path: str, **query: Any) -> Any:
        url = self.endpoint + API + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        body = self._fetch(url, {"Training-Key": self._key, "Accept": "application/json"})
        try:
            return json.loads(body)
        except ValueError:
            raise SourceError(f"{path}: the answer is not JSON") from None

    # ------------------------------------------------------------ the port
    def _domain(self, domain_id: str | None) -> dict[str, Any]:
        if self._domains is None:
            self._domains = {str(d.get("id")): d for d in self._get("/domains") if isinstance(d, dict)}
        return self._domains.get(str(domain_id), {})

    def projects(self) -> list[SourceProject]:
        out = []
        for p in self._get("/projects"):
            settings = p.get("settings") or {}
            domain = self._domain(settings.get("domainId"))
            threshold = settings.get("threshold")
            out.append(SourceProject(
                id=str(p["id"]), name=str(p.get("name") or ""), description=str(p.get("description") or ""),
                domain_name=domain.get("name") or settings.get("domain"), domain_type=domain.get("type"),
                classification_type=settings.get("classificationType"),
                threshold=float(threshold) if isinstance(threshold, int | float) else None))
        return out

    def tags(self, project_id: str) -> list[SourceTag]:
        return [SourceTag(str(t["id"]), str(t.get("name") or ""), str(t.get("type") or "Regular"),
                          str(t.get("description") or ""))
                for t in self._get(f"/projects/{_q(project_id)}/tags")]

    def images(self, project_id: str, tagged: bool, skip: int, take: int) -> list[SourceImage]:
        rows = self._get(f"/projects/{_q(project_id)}/images/{'tagged' if tagged else 'untagged'}",
                         take=take, skip=skip)
        return [SourceImage(str(i["id"]), str(i.get("originalImageUri") or ""),
                            tuple(str(t["tagId"]) for t in (i.get("tags") or [])),
                            tuple((str(k), str(v)) for k, v in (i.get("metadata") or {}).items()),
                            str(i.get("originalName") or ""))
                for i in rows]

    def image_count(self, project_id: str) -> int:
        base = f"/projects/{_q(project_id)}/images"
        return int(self._get(base + "/tagged/count")) + int(self._get(base + "/untagged/count"))

    def image_bytes(self, image: SourceImage) -> bytes:
        if not image.uri.lower().startswith(("http://", "https://")):
            raise SourceError("the source gave no originalImageUri to download")
        return self._fetch(image.uri, {}, TRAINING_MAX_BYTES)  # a signed link: the key is not sent

    def last_performance(self, project_id: str) -> dict[str, Any] | None:
        its = [i for i in self._get(f"/projects/{_q(project_id)}/iterations") if i.get("status") == "Completed"]
        if not its:
            return None
        last = max(its, key=lambda i: str(i.get("trainedAt") or i.get("created") or ""))
        perf = self._get(f"/projects/{_q(project_id)}/iterations/{_q(str(last['id']))}/performance")
        return {"iteration": last.get("name"), "precision": perf.get("precision"), "recall": perf.get("recall"),
                "averagePrecision": perf.get("averagePrecision")}


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read(4096) or b"{}")
        return f"{body.get('code', '')}: {body.get('message', '')}".strip(": ")
    except (ValueError, OSError, AttributeError):
        return str(e.reason or "")
