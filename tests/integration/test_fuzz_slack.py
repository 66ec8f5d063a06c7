"""Property-based fuzzing of POST /slack/events (issue #13): arbitrary bodies and headers, signed with the signing
secret (as Slack signs them) or not. Never a 5xx; a request whose signature is wrong never reaches Bolt's
middleware or a listener; every refusal is one short log line."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bot
import bot.app
from tests.conftest import make_deps
from tests.fakes import FakeBackbones
from tests.slack_server import FakeSlack

SECRET = "fuzz-signing-secret"
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


class Events:
    """The bot's /slack/events on an in-process server, over a small store and a fake Slack Web API; `reached`
    records every request that got past Bolt's request verification."""

    def __init__(self, tmp, monkeypatch):
        self.slack = FakeSlack().start()
        self.reached: list[dict] = []
        build = bot.app.build_bolt_app

        def spied(*args, **kwargs):
            app = build(*args, **kwargs)

            @app.middleware
            async def spy(body, next):
                self.reached.append(body)
                await next()

            return app

        monkeypatch.setattr(bot.app, "build_bolt_app", spied)
        s = SimpleNamespace(slack_bot_token=self.slack.token, slack_signing_secret=SECRET, slack_app_token=None,
                            slack_api_url=self.slack.api_url, default_domain=None)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        bot.setup(app, SimpleNamespace(settings=s, deps=make_deps(tmp, FakeBackbones())))
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def post(self, body: bytes, headers: dict) -> tuple[int, str]:
        async def go():
            resp = await self.client.post("/slack/events", data=body, headers=headers)
            return resp.status, await resp.text()

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.slack.stop()


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    server = Events(tmp_path_factory.mktemp("fuzz-slack"), mp)
    yield server
    server.close()
    mp.undo()


def sign(body: bytes, ts: str, secret: str = SECRET) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=10)
# Bodies shaped like Slack's (an event, a slash command, an interaction) with fields replaced, and arbitrary ones.
EVENT = {"token": "unused", "team_id": "T0TEAM", "api_app_id": "A0APP", "type": "event_callback", "event_id": "Ev1",
         "event_time": 1, "authorizations": [{"team_id": "T0TEAM", "user_id": "UBOT", "is_bot": True}],
         "event": {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.1"}}
COMMAND = {"team_id": "T0TEAM", "channel_id": "C1", "user_id": "U1", "command": "/cv", "text": "help",
           "response_url": "http://127.0.0.1:9/r", "trigger_id": "t"}
ACTION = {"type": "block_actions", "team": {"id": "T0TEAM"}, "user": {"id": "U1"}, "actions": [{"action_id": "x"}]}


@st.composite
def bodies(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["event", "command", "action", "json", "bytes", "nested"]))
    if kind == "event":
        event = {**EVENT, "event_id": f"Ev{draw(st.integers(0, 10**9))}"}
        key = draw(st.sampled_from(sorted(EVENT) + ["event.text", "event.type", "event.files"]))
        if key.startswith("event."):
            event["event"] = {**EVENT["event"], key[6:]: draw(json_values)}
        else:
            event[key] = draw(json_values)
        return json.dumps(event).encode(), "application/json"
    if kind == "command":
        form = {**COMMAND, "text": draw(st.text(max_size=60)),
                draw(st.sampled_from(sorted(COMMAND))): draw(st.text(max_size=20))}
        return urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if kind == "action":
        payload = {**ACTION, draw(st.sampled_from(sorted(ACTION))): draw(json_values)}
        return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded"
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), "application/json"
    if kind == "nested":
        return b"[" * draw(st.integers(900, 100_000)), "application/json"
    return draw(st.binary(max_size=200)), draw(st.sampled_from(["application/json", "text/plain", ""]))


timestamps = st.one_of(st.just("now"), st.sampled_from(["abc", "", "-1", "1e9", "١٢٣", "9" * 30, "0x10", " 1"]),
                       st.integers(-(2**70), 2**70).map(str))


@FUZZ
@given(body=bodies(), ts=timestamps, signed=st.booleans())
def test_slack_events_never_get_a_5xx_and_unsigned_ones_never_reach_bolt(events, body, ts, signed, caplog):
    data, content_type = body
    ts = str(int(time.time())) if ts == "now" else ts
    signature = sign(data, ts) if signed else sign(data, ts, "wrong-secret")
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
    before = len(events.reached)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status, text = events.post(data, headers)
    assert status < 500, (status, text[:200], data[:200])
    fresh = signed and ts.isascii() and ts.isdigit() and abs(int(ts) - time.time()) < 300
    if not fresh:
        assert status in (400, 401) and len(events.reached) == before, (status, data[:200])
        lines = [r for r in caplog.records if r.name == "bot" and "refused" in r.getMessage()]
        assert len(lines) == 1 and len(lines[0].getMessage()) < 400 and lines[0].exc_info is None


def test_a_valid_signature_reaches_bolt(events):
    ts = str(int(time.time()))
    data = json.dumps({**EVENT, "event_id": "EvValid"}).encode()
    before = len(events.reached)
    status, _ = events.post(data, {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
                                   "X-Slack-Signature": sign(data, ts)})
    assert status == 200 and len(events.reached) == before + 1
