"""The Bolt app: Web API client (with 429 retries), middleware and listeners; HTTP and Socket Mode wiring."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request import payload_utils
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from .listeners import register_listeners
from .runtime import SlackBot

log = logging.getLogger("bot")
SLACK_API_URL = "https://slack.com/api/"


@dataclass
class SlackMode:
    """How the bot connects: `http` (POST /slack/events), `socket` (Socket Mode) or both; `off` with the reason."""

    http: bool
    socket: bool
    reason: str = ""
    problem: bool = False  # partly configured (worth a warning) rather than simply not configured

    @property
    def on(self) -> bool:
        return self.http or self.socket

    def describe(self) -> str:
        ways = [w for w, on in (("HTTP mode at POST /slack/events", self.http), ("Socket Mode", self.socket)) if on]
        return " and ".join(ways)


def slack_mode(settings) -> SlackMode:
    token, secret, app_token = settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token
    if not token:
        if secret or app_token:
            return SlackMode(False, False, "SLACK_BOT_TOKEN is not set (SLACK_SIGNING_SECRET/SLACK_APP_TOKEN alone "
                                           "cannot call Slack's Web API)", problem=True)
        return SlackMode(False, False, "SLACK_BOT_TOKEN is not set; set it with SLACK_SIGNING_SECRET (HTTP mode) or "
                                       "SLACK_APP_TOKEN (Socket Mode) to turn the bot on")
    if app_token and not app_token.startswith("xapp-"):
        return SlackMode(False, False, "SLACK_APP_TOKEN does not look like an app-level token (xapp-…)", problem=True)
    if not secret and not app_token:
        return SlackMode(False, False, "SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (HTTP mode) nor "
                                       "SLACK_APP_TOKEN (Socket Mode) is", problem=True)
    return SlackMode(http=bool(secret), socket=bool(app_token))


_SECRETS = re.compile(r"(xox[abpr]-|xapp-)[A-Za-z0-9-]+|((?:^|[&?\s{,(])\"?token\"?\s*[=:]\s*\"?)[^&\s\",}]+")
LONGEST_LOG_LINE = 300  # characters of one Bolt log line (bodies it logs are cut to this)


def redact(text: str, limit: int = LONGEST_LOG_LINE) -> str:
    """`text` with anything token-like blanked out, cut to `limit` characters (redacted before the cut, with a
    margin, so that a cut never leaves a token's first characters behind)."""
    return _SECRETS.sub(lambda m: (m.group(2) or "") + "***", text[:limit + 256])[:limit]


class RedactTokens(logging.Filter):
    """Bolt logs the body of requests it rejects or does not handle: blank out anything token-like and cut the
    line short before it reaches a handler (a body can be up to MAX_EVENT_BODY)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if len(message) > LONGEST_LOG_LINE:
            redacted += f"… ({len(message) - LONGEST_LOG_LINE} more characters)"
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def quiet_secrets() -> None:
    # Bolt's framework loggers, and the app's own logger (named after the app) that listeners get.
    for name in ("slack_bolt.RequestVerification", "slack_bolt.AsyncApp", "slack_bolt.SslCheck", "cvbot"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


MAX_EVENT_BODY = 1024 * 1024  # bytes: Slack's events, commands and interactions are a few kB
PAYLOAD_READERS = (payload_utils.to_options, payload_utils.to_shortcut, payload_utils.to_action, payload_utils.to_view,
                   payload_utils.to_command, payload_utils.to_event, payload_utils.to_message, payload_utils.to_step)
MAX_CLOCK_SKEW = 5 * 60  # seconds, as Slack's signature check allows (against replays)


class Refused(Exception):
    """A request to /slack/events answered with `status` before Bolt sees it; `reason` goes to the log."""

    def __init__(self, status: int, error: str, reason: str):
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


async def read_limited(request: web.Request, limit: int = MAX_EVENT_BODY) -> bytes:
    """The request's body, refused with 413 as soon as it passes `limit` (before reading the rest; a declared
    Content-Length over it is refused unread)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise Refused(413, f"request body over {limit // (1024 * 1024)} MB", f"body of {declared} bytes declared")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"request body over {limit // (1024 * 1024)} MB", f"body over {limit} bytes (chunked)")
        chunks.append(chunk)
    return b"".join(chunks)


def verify_signature(secret: str, body: bytes, timestamp: str | None, signature: str | None,
                     now: float | None = None) -> None:
    """Slack's v0 signature check (HMAC-SHA256 of `v0:timestamp:body`), over the raw bytes, tolerating any header
    value: a missing, malformed, stale or wrong one raises `Refused` (400 for a timestamp that is not a number,
    401 otherwise) instead of an exception from deep inside Bolt."""
    if not timestamp or not signature:
        raise Refused(401, "invalid request", "no X-Slack-Request-Timestamp or X-Slack-Signature")
    if len(timestamp) > 20 or not timestamp.isascii() or not timestamp.isdigit():
        raise Refused(400, "X-Slack-Request-Timestamp must be a number of seconds",
                      f"X-Slack-Request-Timestamp {redact(timestamp, 40)!r} is not a number")
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_CLOCK_SKEW:
        raise Refused(401, "invalid request", f"stale X-Slack-Request-Timestamp {timestamp}")
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body,
                                hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
        raise Refused(401, "invalid request", "invalid signature")


def bolt_request(body: bytes, request: web.Request) -> AsyncBoltRequest:
    """The Bolt request for a verified body; a body Bolt cannot read (not UTF-8, not JSON, too deeply nested, not
    an object) raises `Refused` with 400."""
    try:
        text = body.decode("utf-8")
        req = AsyncBoltRequest(body=text, query=request.query_string, headers=dict(request.headers))
        if isinstance(req.body, dict):
            for read in PAYLOAD_READERS:  # what Bolt extracts for every middleware, where it would fail with a 500
                read(req.body)
    except RecursionError:
        raise Refused(400, "invalid request body", "body nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - whatever Bolt's parsing trips on, the body is at fault
        raise Refused(400, "invalid request body", f"unreadable body ({type(e).__name__})") from None
    if not isinstance(req.body, dict):
        raise Refused(400, "invalid request body", f"body is a JSON {type(req.body).__name__}, not an object")
    return req


def events_handler(bolt: AsyncApp, signing_secret: str):
    """The aiohttp handler of POST /slack/events: reads at most MAX_EVENT_BODY, checks Slack's signature itself
    (so that Bolt never parses nor logs an unsigned body), then hands the request to Bolt. A refused request
    is logged as one line, with at most a short redacted prefix of its body."""
    from slack_bolt.adapter.aiohttp import to_aiohttp_response

    async def slack_events(request: web.Request) -> web.StreamResponse:
        body = b""
        try:
            body = await read_limited(request)
            verify_signature(signing_secret, body, request.headers.get("X-Slack-Request-Timestamp"),
                             request.headers.get("X-Slack-Signature"))
            req = bolt_request(body, request)
        except Refused as e:
            prefix = redact(body[:200].decode("utf-8", "replace"), 80) if body else ""
            log.info("refused a request to /slack/events from %s: %s (%d; %d bytes%s)", request.remote, e.reason,
                     e.status, request.content_length or len(body), f", body starts {prefix!r}" if prefix else "")
            response = web.json_response({"error": e.error}, status=e.status)
            if e.status == 413:
                response.force_close()  # do not read the rest of the body to keep the connection
            return response
        return await to_aiohttp_response(await bolt.async_dispatch(req))

    return slack_events


def api_base_url(url: str | None) -> str:
    url = (url or SLACK_API_URL).strip()
    return url if url.endswith("/") else url + "/"


def retry_handlers(max_retries: int = 3) -> list:
    """Retry 429s (after their Retry-After), 5xx answers and dropped connections."""
    return [AsyncRateLimitErrorRetryHandler(max_retry_count=max_retries),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2)]


def configure_client(client: AsyncWebClient, api_url: str | None = None) -> AsyncWebClient:
    """Point a Web API client at SLACK_API_URL with the retry handlers (Bolt copies both into each
    request's `client`)."""
    client.base_url = api_base_url(api_url)
    client.retry_handlers = retry_handlers()
    return client


async def take_event(cv: SlackBot, body) -> bool:
    """Whether to process a request: False for an event some web process of the install took already (Slack
    retries what it did not see acknowledged, with X-Slack-Retry-Num, possibly to another process behind the load
    balancer; a retry carries the same event_id). Requests that are not events are always processed."""
    event_id = body.get("event_id") if isinstance(body, dict) and body.get("type") == "event_callback" else None
    return not event_id or await cv.seen.claim(f"event:{event_id}")


def build_bolt_app(cv: SlackBot, token: str, signing_secret: str | None, api_url: str | None = None) -> AsyncApp:
    quiet_secrets()
    app = AsyncApp(token=token, signing_secret=signing_secret, request_verification_enabled=bool(signing_secret),
                   process_before_response=False, name="cvbot")
    configure_client(app.client, api_url)

    @app.middleware
    async def provide_bot(body, context, next, logger):
        """Put the shared runtime in the context; drop redeliveries of an event already taken (`take_event`)."""
        context["cv"] = cv
        if not await take_event(cv, body):
            logger.info("ignoring redelivered event %s", body.get("event_id"))
            return BoltResponse(status=200, body="")
        await next()

    register_listeners(app)
    return app


class SocketModeRunner:
    """Socket Mode on the server's event loop; keeps trying to connect in the background if Slack is unreachable."""

    def __init__(self, app: AsyncApp, app_token: str, retry_seconds: float = 30.0):
        self.app = app
        self.app_token = app_token
        self.retry_seconds = retry_seconds
        self.handler = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        while True:
            try:
                self.handler = AsyncSocketModeHandler(self.app, self.app_token)
                await self.handler.connect_async()
                log.info("Slack Socket Mode connected")
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep serving everything else and retry
                log.error("Slack Socket Mode could not connect (%s: %s); retrying in %.0f s",
                          type(e).__name__, e, self.retry_seconds)
                await asyncio.sleep(self.retry_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.handler is not None:
            with contextlib.suppress(Exception):  # shutting down: a failed close leaves nothing to do
                await self.handler.close_async()
