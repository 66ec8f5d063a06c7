"""How `cvbot serve` turns the bot on or off, and the Web API client it gets."""
import asyncio
import logging
from types import SimpleNamespace

from aiohttp import web
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler

import bot
from bot.app import RedactTokens, api_base_url, build_bolt_app, slack_mode
from bot.runtime import Seen, SlackBot, is_image_file


def settings(**kw):
    base = dict(slack_bot_token=None, slack_signing_secret=None, slack_app_token=None, slack_api_url=None,
                default_domain=None)
    return SimpleNamespace(**{**base, **kw})


def test_modes():
    assert not slack_mode(settings()).on and not slack_mode(settings()).problem
    assert "SLACK_BOT_TOKEN is not set" in slack_mode(settings()).reason
    only_secret = slack_mode(settings(slack_signing_secret="s"))
    assert not only_secret.on and only_secret.problem
    token_only = slack_mode(settings(slack_bot_token="xoxb-1"))
    assert not token_only.on and "neither SLACK_SIGNING_SECRET" in token_only.reason
    http = slack_mode(settings(slack_bot_token="xoxb-1", slack_signing_secret="s"))
    assert (http.http, http.socket) == (True, False)
    both = slack_mode(settings(slack_bot_token="xoxb-1", slack_signing_secret="s", slack_app_token="xapp-1"))
    assert (both.http, both.socket) == (True, True)
    assert both.describe() == "HTTP mode at POST /slack/events and Socket Mode"
    wrong = slack_mode(settings(slack_bot_token="xoxb-1", slack_app_token="xoxb-oops"))
    assert not wrong.on and "xapp-" in wrong.reason


def _routes(app):
    return {(r.method, r.resource.canonical) for r in app.router.routes()}


def test_setup_without_tokens_logs_one_line_and_answers_503(caplog):
    app = web.Application()
    with caplog.at_level(logging.INFO, logger="bot"):
        bot.setup(app, SimpleNamespace(settings=settings(), deps=None))
    assert [r.getMessage() for r in caplog.records if r.name == "bot"] == [
        "Slack is off: SLACK_BOT_TOKEN is not set; set it with SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN "
        "(Socket Mode) to turn the bot on"]
    assert ("POST", "/slack/events") in _routes(app)


def test_setup_with_tokens_mounts_the_events_endpoint_and_never_logs_tokens(caplog):
    app = web.Application()
    s = settings(slack_bot_token="xoxb-very-secret", slack_signing_secret="sig-very-secret", slack_api_url="http://x/api")
    with caplog.at_level(logging.DEBUG):
        bot.setup(app, SimpleNamespace(settings=s, deps=None))
    assert ("POST", "/slack/events") in _routes(app)
    assert "very-secret" not in caplog.text and "Slack is on: HTTP mode at POST /slack/events" in caplog.text
    assert not any(getattr(f, "__name__", "") == "start_socket" for f in app.on_startup)  # no SLACK_APP_TOKEN


def test_setup_with_an_app_token_starts_socket_mode_on_startup():
    app = web.Application()
    s = settings(slack_bot_token="xoxb-1", slack_app_token="xapp-1")
    bot.setup(app, SimpleNamespace(settings=s, deps=None))
    assert any(getattr(f, "__name__", "") == "start_socket" for f in app.on_startup)
    assert ("POST", "/slack/events") not in _routes(app)  # no signing secret, no HTTP endpoint


def test_client_points_at_slack_api_url_and_retries_rate_limits():
    app = build_bolt_app(SlackBot(None, "xoxb-1"), "xoxb-1", "secret", "http://127.0.0.1:9/api")
    assert app.client.base_url == "http://127.0.0.1:9/api/"
    assert any(isinstance(h, AsyncRateLimitErrorRetryHandler) for h in app.client.retry_handlers)
    assert api_base_url(None) == "https://slack.com/api/"


def test_rejected_request_bodies_are_logged_without_tokens():
    record = logging.LogRecord("slack_bolt.RequestVerification", logging.INFO, "", 0,
                               "Invalid request signature detected (body: %s)", ("token=legacy123&text=hi",), None)
    RedactTokens().filter(record)
    assert record.getMessage() == "Invalid request signature detected (body: token=***&text=hi)"


def test_bolt_log_lines_are_cut_short_after_redaction():
    body = "token=legacy123&text=" + "A" * 100_000
    record = logging.LogRecord("slack_bolt.AsyncApp", logging.WARNING, "", 0, "Unhandled request (%s)", (body,), None)
    RedactTokens().filter(record)
    message = record.getMessage()
    assert message.startswith("Unhandled request (token=***&text=AAA") and "legacy123" not in message
    assert len(message) < 400 and message.endswith(f"… ({len(body) + 20 - 300} more characters)")


def test_seen_claims_once_and_forgets_after_the_ttl():
    seen = Seen(ttl=0.05)
    assert seen.claim("a") and not seen.claim("a")
    asyncio.run(asyncio.sleep(0.06))
    assert seen.claim("a")


def test_only_image_files_count():
    assert is_image_file({"mimetype": "image/jpeg"}) and is_image_file({"filetype": "png"})
    assert not is_image_file({"mimetype": "application/pdf", "filetype": "pdf"})
    assert not is_image_file({"mimetype": "image/png", "mode": "tombstone"})


def test_setup_with_tokens_listens_to_the_servers_scheduled_runs():
    from cvbot.server import SCHEDULED_RUN_LISTENERS

    app = web.Application()
    bot.setup(app, SimpleNamespace(settings=settings(slack_bot_token="xoxb-1", slack_signing_secret="s"), deps=None))
    [listener] = app[SCHEDULED_RUN_LISTENERS]  # cvbot/server.py calls it for each run this process makes
    assert bot.SCHEDULED_RUN_LISTENERS == SCHEDULED_RUN_LISTENERS
    listener(SimpleNamespace(job="store-cleanup", result={}))  # not a retraining: nothing to announce
    off = web.Application()
    bot.setup(off, SimpleNamespace(settings=settings(), deps=None))
    assert SCHEDULED_RUN_LISTENERS not in off
