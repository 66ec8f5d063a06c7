"""A local Slack-compatible server for the bot's tests, and a client that sends Slack's signed requests.

`FakeSlack` answers the Web API methods the bot calls (recording every call), serves files for
`url_private_download` (checking the bot token), accepts `files.getUploadURLExternal` upload URLs, records
posts to response URLs, and can answer a method with HTTP 429 + Retry-After to exercise retries.
`SignedSender` posts slash commands, events, block actions and view submissions to `/slack/events`, signed
with the signing secret exactly as Slack signs them (v0 HMAC-SHA256 of `v0:timestamp:body`).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

JSON_FIELDS = ("blocks", "files", "view", "attachments", "metadata")


@dataclass
class Call:
    method: str
    args: dict
    auth: str | None
    at: float = field(default_factory=time.monotonic)
    result: dict | None = None


class FakeSlack:
    def __init__(self, token: str = "xoxb-test-token", team_id: str = "T0TEAM", bot_user_id: str = "UBOT",
                 app_token: str = "xapp-1-A0APP-test"):
        self.token = token
        self.app_token = app_token
        self.sockets: list[web.WebSocketResponse] = []  # Socket Mode connections of the bot
        self.socket_acks: list[dict] = []  # what the bot sent back over them (envelope acks)
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.calls: list[Call] = []
        self.responses: list[tuple[str, dict]] = []  # (response_url id, JSON posted to it)
        self.downloads: list[str] = []  # file ids fetched with the right token
        self.uploads: dict[str, bytes] = {}  # file id → bytes posted to its upload URL
        self.messages: dict[tuple[str, str], dict] = {}  # (channel, ts) → current message
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.admins: set[str] = set()
        self.not_in: set[str] = set()  # channels where chat.postMessage answers not_in_channel
        self.throttle: dict[str, int] = {}  # method → how many more calls get 429
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def start(self) -> FakeSlack:
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/api/{method}", self._api)
            app.router.add_get("/api/{method}", self._api)
            app.router.add_get("/files/{file_id}/{name}", self._download)
            app.router.add_post("/upload/{file_id}", self._upload)
            app.router.add_post("/response/{rid}", self._response)
            app.router.add_get("/socket", self._socket)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="fake-slack", daemon=True).start()
        assert ready.wait(10), "fake Slack did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    # ------------------------------------------------------------- test-facing helpers
    def add_file(self, name: str, data: bytes, mimetype: str = "image/png", size: int | None = None) -> dict:
        """A Slack file object (as in a message event's `files`) whose download this server serves."""
        fid = f"F{next(self._ids):06d}"
        filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        f = {"id": fid, "name": name, "title": name, "mimetype": mimetype, "filetype": filetype,
             "size": len(data) if size is None else size, "mode": "hosted",
             "url_private": f"{self.url}/files/{fid}/{urllib.parse.quote(name)}",
             "url_private_download": f"{self.url}/files/{fid}/{urllib.parse.quote(name)}?download=1"}
        self.files[fid] = (f, data)
        return f

    def response_url(self) -> str:
        return f"{self.url}/response/R{next(self._ids)}"

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def posts(self, channel: str | None = None, thread_ts: str | None = None) -> list[dict]:
        """Messages the bot posted (chat.postMessage arguments plus the `ts` it got), oldest first."""
        return [{**c.args, "ts": (c.result or {}).get("ts")} for c in self.calls_to("chat.postMessage")
                if (c.result or {}).get("ok") and (channel is None or c.args.get("channel") == channel)
                and (thread_ts is None or c.args.get("thread_ts") == thread_ts)]

    def message(self, channel: str, ts: str) -> dict:
        """The message as it looks now (after chat.update), with its ts."""
        with self._lock:
            return {**self.messages[(channel, ts)], "ts": ts}

    def responses_to(self, response_url: str) -> list[dict]:
        rid = response_url.rsplit("/", 1)[-1]
        with self._lock:
            return [body for r, body in self.responses if r == rid]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; calls: "
                             f"{[c.method for c in self.calls][-30:]}")

    # ------------------------------------------------------------- handlers
    async def _args(self, request: web.Request) -> dict:
        args: dict = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        for k in JSON_FIELDS:
            if isinstance(args.get(k), str):
                with contextlib.suppress(ValueError):
                    args[k] = json.loads(args[k])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization")
        call = Call(method, args, auth)
        with self._lock:
            self.calls.append(call)
            throttled = self.throttle.get(method, 0) > 0
            if throttled:
                self.throttle[method] -= 1
        if throttled:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        token = self.app_token if method == "apps.connections.open" else self.token
        if auth != f"Bearer {token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        body = handler(args) if handler else {"ok": True}
        call.result = body
        return web.json_response(body)

    async def _download(self, request: web.Request) -> web.Response:
        fid = request.match_info["file_id"]
        if request.headers.get("Authorization") != f"Bearer {self.token}" or fid not in self.files:
            # Slack answers an unauthenticated file URL with its sign-in page
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        f, data = self.files[fid]
        with self._lock:
            self.downloads.append(fid)
        return web.Response(body=data, content_type=f["mimetype"])

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        with self._lock:
            self.uploads[request.match_info["file_id"]] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.responses.append((request.match_info["rid"], body))
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._lock:
            self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                with self._lock:
                    self.socket_acks.append(json.loads(msg.data))
        return ws

    def send_envelope(self, envelope: dict) -> None:
        """Push a Socket Mode envelope (slash_commands, events_api, interactive) to the bot's open connection."""
        ws = self.sockets[-1]
        asyncio.run_coroutine_threadsafe(ws.send_json(envelope), self._loop).result(10)

    def acks_of(self, envelope_id: str) -> list[dict]:
        with self._lock:
            return [a for a in self.socket_acks if a.get("envelope_id") == envelope_id]

    # ------------------------------------------------------------- Web API methods
    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"

    def m_auth_test(self, args):
        return {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "cvbot", "team_id": self.team_id,
                "user_id": self.bot_user_id, "bot_id": "BBOT", "is_enterprise_install": False}

    def m_apps_connections_open(self, args):
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def m_chat_postMessage(self, args):
        channel = args.get("channel")
        if channel in self.not_in:
            return {"ok": False, "error": "not_in_channel"}
        ts = self._next_ts()
        msg = {"type": "message", "ts": ts, "text": args.get("text", ""), "blocks": args.get("blocks") or [],
               "thread_ts": args.get("thread_ts"), "user": self.bot_user_id, "bot_id": "BBOT"}
        with self._lock:
            self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": msg}

    def m_chat_update(self, args):
        key = (args.get("channel"), args.get("ts"))
        with self._lock:
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.messages[key].update({"text": args.get("text", ""), "blocks": args.get("blocks") or []})
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text", "")}

    def m_chat_postEphemeral(self, args):
        return {"ok": True, "message_ts": self._next_ts()}

    def m_views_open(self, args):
        return {"ok": True, "view": {"id": f"V{next(self._ids)}", **(args.get("view") or {})}}

    def m_users_info(self, args):
        user = args.get("user")
        admin = user in self.admins
        return {"ok": True, "user": {"id": user, "name": user, "is_admin": admin, "is_owner": False}}

    def m_files_info(self, args):
        fid = args.get("file")
        if fid not in self.files:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": self.files[fid][0]}

    def m_files_getUploadURLExternal(self, args):
        fid = f"FUP{next(self._ids):05d}"
        return {"ok": True, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}

    def m_files_completeUploadExternal(self, args):
        files = args.get("files") or []
        return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files]}


class SignedSender:
    """Posts Slack's requests to a bot's `/slack/events`, signed like Slack signs them."""

    def __init__(self, events_url: str, signing_secret: str, team_id: str = "T0TEAM"):
        self.url = events_url
        self.secret = signing_secret
        self.team_id = team_id
        self._event_ids = itertools.count(1)

    def post(self, body: str, content_type: str, secret: str | None = None, timestamp: int | None = None,
             headers: dict | None = None) -> tuple[int, str, float]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = SignatureVerifier(secret or self.secret).generate_signature(timestamp=ts, body=body)
        h = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, **(headers or {})}
        req = urllib.request.Request(self.url, data=body.encode(), headers=h, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode(), time.monotonic() - started
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), time.monotonic() - started

    def command(self, text: str, *, channel: str, user: str, response_url: str, trigger_id: str = "T-trigger",
                team_id: str | None = None, **kw) -> tuple[int, str, float]:
        form = {"token": "unused", "team_id": team_id or self.team_id, "team_domain": "test", "channel_id": channel,
                "channel_name": "test", "user_id": user, "user_name": user, "command": "/cv", "text": text,
                "api_app_id": "A0APP", "response_url": response_url, "trigger_id": trigger_id}
        return self.post(urllib.parse.urlencode(form), "application/x-www-form-urlencoded", **kw)

    def event(self, event: dict, *, event_id: str | None = None, retry_num: int | None = None,
              team_id: str | None = None, **kw) -> tuple[int, str, float]:
        event_id = event_id or f"Ev{next(self._event_ids):08d}"
        body = {"token": "unused", "team_id": team_id or self.team_id, "api_app_id": "A0APP", "type": "event_callback",
                "event_id": event_id, "event_time": int(time.time()), "event": event,
                "authorizations": [{"team_id": team_id or self.team_id, "user_id": "UBOT", "is_bot": True}]}
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_num else None
        return self.post(json.dumps(body), "application/json", headers=headers, **kw)

    def interaction(self, payload: dict, **kw) -> tuple[int, str, float]:
        payload = {"team": {"id": self.team_id, "domain": "test"}, "api_app_id": "A0APP", "token": "unused", **payload}
        return self.post(urllib.parse.urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded",
                         **kw)

    def block_action(self, message: dict, action: dict, *, channel: str, user: str, response_url: str,
                     ephemeral: bool = False, selected: str | None = None, **kw) -> tuple[int, str, float]:
        act = {"action_id": action["action_id"], "block_id": action["block_id"], "type": action["type"],
               "action_ts": str(time.time())}
        if action["type"] == "button":
            act["value"] = action.get("value", "")
        else:
            act["selected_option"] = next(o for o in action["options"] if o["value"] == selected)
        payload = {"type": "block_actions", "user": {"id": user, "team_id": self.team_id},
                   "container": {"type": "message", "message_ts": message.get("ts"), "channel_id": channel,
                                 "is_ephemeral": ephemeral, "thread_ts": message.get("thread_ts")},
                   "channel": {"id": channel}, "message": message, "response_url": response_url,
                   "trigger_id": "T-trigger", "actions": [act]}
        return self.interaction(payload, **kw)


def message_event(channel: str, user: str, text: str, ts: str, files: list[dict] | None = None,
                  thread_ts: str | None = None, channel_type: str = "channel") -> dict:
    ev = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "channel_type": channel_type,
          "event_ts": ts}
    if files:
        ev["subtype"] = "file_share"
        ev["files"] = files
        ev["upload"] = False
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


def actions_in(blocks: list[dict]) -> list[dict]:
    """Every interactive element of a message, each with its block_id."""
    out = []
    for b in blocks or []:
        if b.get("type") == "actions":
            for el in b.get("elements", []):
                out.append({**el, "block_id": b.get("block_id")})
    return out


def text_of(msg: dict) -> str:
    """All the text of a message: its fallback and every block's text, for assertions."""
    parts = [msg.get("text") or ""]
    for b in msg.get("blocks") or []:
        for key in ("text",):
            if isinstance(b.get(key), dict):
                parts.append(b[key].get("text", ""))
        for f in b.get("fields") or []:
            parts.append(f.get("text", ""))
        for el in b.get("elements") or []:
            if isinstance(el, dict):
                t = el.get("text")
                parts.append(t.get("text", "") if isinstance(t, dict) else (t or ""))
    return "\n".join(parts)
