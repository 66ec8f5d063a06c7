"""The Bolt app: Web API client (with 429 retries), middleware and listeners; HTTP and Socket Mode wiring."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
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


_SECRETS = re.compile(r"(xox[abpr]-|xapp-)[A-Za-z0-9-]+|((?:^|[&?\s{,])\"?token\"?\s*[=:]\s*\"?)[^&\s\",}]+")


class RedactTokens(logging.Filter):
    """Bolt logs the body of requests it rejects; blank out anything token-like before it reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRETS.sub(lambda m: (m.group(2) or "") + "***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def quiet_secrets() -> None:
    for name in ("slack_bolt.RequestVerification", "slack_bolt.AsyncApp", "slack_bolt.SslCheck"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


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


def build_bolt_app(cv: SlackBot, token: str, signing_secret: str | None, api_url: str | None = None) -> AsyncApp:
    quiet_secrets()
    app = AsyncApp(token=token, signing_secret=signing_secret, request_verification_enabled=bool(signing_secret),
                   process_before_response=False, name="cvbot")
    configure_client(app.client, api_url)

    @app.middleware
    async def provide_bot(body, context, next, logger):
        """Put the shared runtime in the context; drop redeliveries of an event already taken (Slack retries
        what it did not see acknowledged, with X-Slack-Retry-Num; a retry carries the same event_id)."""
        context["cv"] = cv
        event_id = body.get("event_id") if isinstance(body, dict) and body.get("type") == "event_callback" else None
        if event_id and not cv.seen.claim(f"event:{event_id}"):
            logger.info("ignoring redelivered event %s", event_id)
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
