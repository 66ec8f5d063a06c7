"""Hostile requests to POST /slack/events (issue #13 items 2 and 3): a body-size limit, one short log line per
refused request (never its body), and a clean 4xx for malformed headers or bodies instead of a 500."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import bot

SECRET = "test-signing-secret"
LONGEST_LINE = 400  # characters: a refused request's log line is short whatever the body


def settings(**kw):
    base = dict(slack_bot_token="xoxb-test-token", slack_signing_secret=SECRET, slack_app_token=None,
                slack_api_url="http://127.0.0.1:9/api/", default_domain=None)
    return SimpleNamespace(**{**base, **kw})


def signed(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> dict:
    ts = timestamp or str(int(time.time()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()  # as Slack signs
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/json"}


def post(body, headers: dict, chunked: bool = False) -> tuple[int, str]:
    async def go():
        app = web.Application(client_max_size=64 * 1024 * 1024)
        bot.setup(app, SimpleNamespace(settings=settings(), deps=None))
        app.on_startup.clear()  # no store here: skip the start-up report of missed trainings
        async with TestClient(TestServer(app)) as client:
            data = body
            if chunked:
                async def stream():
                    for i in range(0, len(body), 65536):
                        yield body[i:i + 65536]
                data = stream()
            resp = await client.post("/slack/events", data=data, headers=headers)
            return resp.status, await resp.text()

    return asyncio.run(go())


def refusals(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("bot", "slack_bolt", "aiohttp"))
            and r.name != "aiohttp.access" and r.levelno >= logging.INFO
            and not r.getMessage().startswith("Slack is on")]


def assert_one_short_line(caplog):
    records = refusals(caplog)
    assert len(records) == 1, [r.getMessage()[:200] for r in records]
    assert len(records[0].getMessage()) <= LONGEST_LINE, records[0].getMessage()[:600]
    assert records[0].exc_info is None and "Traceback" not in caplog.text


def test_an_unsigned_body_is_logged_as_one_short_redacted_line(caplog):
    body = b'{"token": "legacy-secret-123", "text": "' + b"A" * 200_000 + b'"}'
    with caplog.at_level(logging.DEBUG):
        status, _ = post(body, {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(int(time.time())),
                                "X-Slack-Signature": "v0=00"})
    assert status == 401
    assert_one_short_line(caplog)
    assert "legacy-secret-123" not in caplog.text and "A" * 100 not in caplog.text


def test_a_body_over_the_limit_gets_413_without_being_read_or_logged(caplog):
    body = b"[" + b"0," * 3_000_000 + b"0]"  # 6 MB: Slack's own payloads are a few kB
    with caplog.at_level(logging.DEBUG):
        status, text = post(body, signed(body))
        assert status == 413 and "1 MB" in text
        assert_one_short_line(caplog)
        caplog.clear()
        status, _ = post(body, signed(body), chunked=True)  # no Content-Length: counted while read
        assert status == 413
        assert_one_short_line(caplog)


def test_deep_nesting_is_refused_with_a_4xx_not_a_recursion_error(caplog):
    body = b"[" * 100_000
    with caplog.at_level(logging.DEBUG):
        unsigned, _ = post(body, {"Content-Type": "application/json"})
        assert unsigned == 401
        assert_one_short_line(caplog)
        caplog.clear()
        status, _ = post(body, signed(body))  # even signed with the secret
        assert status == 400
        assert_one_short_line(caplog)


def test_malformed_timestamps_and_signatures_get_a_4xx(caplog):
    body = b'{"type": "event_callback"}'
    cases = [({**signed(body), "X-Slack-Request-Timestamp": "abc"}, 400),
             ({**signed(body), "X-Slack-Request-Timestamp": "9" * 5000}, 400),
             ({**signed(body), "X-Slack-Request-Timestamp": str(int(time.time()) - 3600)}, 401),
             ({**signed(body), "X-Slack-Signature": "v0=\u00e9\u00e9"}, 401),
             ({"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(int(time.time()))}, 401)]
    for headers, expected in cases:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            status, _ = post(body, headers)
        assert status == expected, (headers, status)
        assert_one_short_line(caplog)


def test_a_signed_body_that_is_not_utf8_gets_400(caplog):
    body = b'{"type": "\xff\xfe"}'
    with caplog.at_level(logging.DEBUG):
        status, _ = post(body, signed(body))
    assert status == 400
    assert_one_short_line(caplog)


def test_a_signed_payload_not_shaped_like_slacks_gets_400(caplog):
    body = b'payload=%7B%22type%22%3A+%22block_actions%22%2C+%22actions%22%3A+null%7D'  # Bolt: 'NoneType' ... 500
    with caplog.at_level(logging.DEBUG):
        status, _ = post(body, {**signed(body), "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    assert_one_short_line(caplog)
