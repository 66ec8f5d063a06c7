"""What the listeners share: the use cases (scoped to the Slack workspace), event deduplication (across every web
process, in the database), file downloads, permission checks.

Listeners find it as `context["cv"]` (a global middleware puts it there)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from core import errors
from core.images import PREDICTION_MAX_BYTES, TRAINING_MAX_BYTES
from core.model import Domain, Project
from core.usecases import Deps, Scope, UseCases, claim_once

from .errors import NoProject

log = logging.getLogger("bot")
T = TypeVar("T")

IMAGE_FILETYPES = {"jpg", "jpeg", "png", "gif", "bmp", "webp", "jfif", "mpo"}


class Seen:
    """Keys this process saw recently (event ids, message timestamps), in memory: the quick first look of
    `SharedSeen`, which answers a redelivery to the same process without asking the database."""

    def __init__(self, ttl: float = 3600.0, max_items: int = 50_000):
        self.ttl = ttl
        self.max_items = max_items
        self._items: OrderedDict[str, float] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen (within the ttl), False afterwards."""
        now = time.monotonic()
        while self._items:
            oldest, at = next(iter(self._items.items()))
            if now - at > self.ttl or len(self._items) > self.max_items:
                self._items.popitem(last=False)
            else:
                break
        if key in self._items:
            return False
        self._items[key] = now
        return True


class SharedSeen:
    """Keys seen by any web process of the install, so that an event Slack redelivers (X-Slack-Retry-Num, the same
    event_id) to another process behind the load balancer is processed once: claimed in the database's `claims`
    table (insert-if-absent, expiring after `ttl` seconds), after a look at this process's memory."""

    def __init__(self, deps: Deps, ttl: float = 3600.0):
        self.deps = deps
        self.ttl = ttl
        self.local = Seen(ttl)

    async def claim(self, key: str, ttl: float | None = None) -> bool:
        """True for the first process to see `key` within the ttl (this one's, or `ttl` seconds). Fails open: when
        the database cannot be asked, the event is processed (a repeated reply is better than a lost one) and the
        problem logged."""
        if ttl is None and not self.local.claim(key):
            return False
        try:
            return await asyncio.to_thread(claim_once, self.deps, key, ttl or self.ttl)
        except Exception:  # noqa: BLE001 - see above
            log.exception("could not record Slack key %s as seen; processing it", key)
            return True


@dataclass
class Download:
    file: dict
    data: bytes | None = None
    problem: str | None = None  # why the file was rejected before validation (too large, download failed)

    @property
    def name(self) -> str:
        return self.file.get("name") or self.file.get("title") or self.file.get("id") or "image"


def mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def is_image_file(f: dict) -> bool:
    mimetype = (f.get("mimetype") or "").lower()
    filetype = (f.get("filetype") or "").lower()
    if f.get("mode") in ("tombstone", "hidden_by_limit"):
        return False
    return mimetype.startswith("image/") or filetype in IMAGE_FILETYPES


class SlackBot:
    def __init__(self, deps: Deps, token: str, default_domain: Domain = Domain.Compact, *,
                 training_max_bytes: int = TRAINING_MAX_BYTES, prediction_max_bytes: int = PREDICTION_MAX_BYTES,
                 progress_interval: float = 1.5, download_timeout: float = 60.0):
        self.deps = deps
        self._token = token
        self.default_domain = default_domain or Domain.Compact
        self.training_max_bytes = training_max_bytes
        self.prediction_max_bytes = prediction_max_bytes
        self.progress_interval = progress_interval
        self.download_timeout = download_timeout
        self.seen = SharedSeen(deps)
        self._admins: dict[tuple[str, str], tuple[bool, float]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()
        # iterations whose outcome this process reports already (ids, kept for the process's life), so the
        # start-up catch-up (bot.training.report_unreported) never reports one twice
        self.following: set[str] = set()
        # project id → a signed, expiring link to its dataset zip on this server (`/cv export dataset` posts one
        # when the zip is larger than Slack allows); None where no server serves them
        self.dataset_url: Callable[[str], str] | None = None
        # image id → a signed thumbnail link Slack can fetch (only where CVBOT_PUBLIC_URL says where Slack reaches
        # this server: Slack refuses a whole message whose image it cannot download); None: no pictures
        self.image_url: Callable[[str], str] | None = None

    # ------------------------------------------------------------- plumbing
    def scoped(self, workspace: str) -> UseCases:
        """The use cases for a caller in one Slack workspace (team id): they see that workspace's projects only."""
        return UseCases(self.deps, Scope.of(workspace))

    def system(self) -> UseCases:
        """The use cases across every workspace, for background work that no Slack workspace asked for."""
        return UseCases(self.deps, Scope.system())

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (blocking) use case off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def spawn(self, coro) -> asyncio.Task:
        """Run slow work in the background, keeping a reference so it is not collected mid-way."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background Slack task failed", exc_info=task.exception())

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------- projects and permissions
    async def bound_project(self, uc: UseCases, channel: str) -> Project:
        """The channel's project; raises NoProject when the channel has none (or the scope no longer finds it)."""
        binding = await self.call(uc.channels.binding, channel)
        if binding is None:
            raise NoProject("this channel has no project")
        try:
            return await self.call(uc.projects.get, binding.project_id)
        except errors.NotFound:
            raise NoProject("this channel's project was deleted") from None

    async def is_admin(self, client, workspace: str, user: str) -> bool:
        key = (workspace, user)
        hit = self._admins.get(key)
        if hit and time.monotonic() - hit[1] < 300:
            return hit[0]
        try:
            resp = await client.users_info(user=user)
            u = resp.get("user") or {}
            admin = bool(u.get("is_admin") or u.get("is_owner") or u.get("is_primary_owner"))
        except SlackApiError as e:
            log.warning("users.info failed (%s); treating the user as no admin", e.response.get("error"))
            return False
        self._admins[key] = (admin, time.monotonic())
        return admin

    async def may_administer(self, client, workspace: str, user: str, project: Project) -> bool:
        """Destructive actions: the project's creator and workspace admins."""
        if project.created_by and project.created_by == user:
            return True
        return await self.is_admin(client, workspace, user)

    async def require_admin(self, client, workspace: str, user: str, project: Project, what: str) -> None:
        if not await self.may_administer(client, workspace, user, project):
            owner = f"<@{project.created_by}>" if project.created_by else "its creator"
            raise errors.Forbidden(f"only the project's creator ({owner}) or a workspace admin can {what}")

    # ------------------------------------------------------------- files
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.download_timeout))
        return self._session

    async def download(self, client, f: dict, max_bytes: int) -> Download:
        """Fetch a Slack file with the bot token; refuse it from its declared size before downloading."""
        d = Download(f)
        size = f.get("size")
        if isinstance(size, int) and size > max_bytes:
            d.problem = f"too large ({mb(size)}; the limit is {mb(max_bytes)}), not downloaded"
            return d
        url = f.get("url_private_download") or f.get("url_private")
        if not url and f.get("id"):
            try:
                info = (await client.files_info(file=f["id"])).get("file") or {}
            except SlackApiError as e:
                d.problem = f"could not read the file's details ({e.response.get('error')})"
                return d
            d.file = f = {**f, **info}
            size = f.get("size")
            if isinstance(size, int) and size > max_bytes:
                d.problem = f"too large ({mb(size)}; the limit is {mb(max_bytes)}), not downloaded"
                return d
            url = f.get("url_private_download") or f.get("url_private")
        if not url:
            d.problem = "Slack gave no download address for this file"
            return d
        try:
            async with self._http().get(url, headers={"Authorization": f"Bearer {self._token}"}) as r:
                if r.status != 200:
                    d.problem = f"download failed (HTTP {r.status})"
                    return d
                if r.content_type == "text/html":
                    d.problem = ("Slack answered with a web page instead of the file "
                                 "(does the app have the files:read scope?)")
                    return d
                chunks, total = [], 0
                async for chunk in r.content.iter_chunked(64 * 1024):
                    total += len(chunk)
                    if total > max_bytes:
                        d.problem = f"too large (over {mb(max_bytes)})"
                        return d
                    chunks.append(chunk)
                d.data = b"".join(chunks)
        except (TimeoutError, aiohttp.ClientError) as e:
            d.problem = f"download failed ({type(e).__name__})"
        return d

    async def download_all(self, client, files: list[dict], max_bytes: int, parallel: int = 4) -> list[Download]:
        gate = asyncio.Semaphore(parallel)

        async def one(f: dict) -> Download:
            async with gate:
                return await self.download(client, f, max_bytes)

        return list(await asyncio.gather(*(one(f) for f in files)))
