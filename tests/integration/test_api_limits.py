"""Hostile input on the HTTP API (issue #13): every bad request gets a 4xx in Custom Vision's error shape, never a
500; bodies are counted while they stream in; per-key rate limits. A real aiohttp server on a loopback port, in a
thread of this process (no backbone is ever loaded)."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from core.usecases import Scope
from cvbot.bootstrap import bootstrap
from cvbot.config import Settings
from cvbot.server import build_app

TRAINING_KEY, PREDICTION_KEY = "t-" + uuid.uuid4().hex, "p-" + uuid.uuid4().hex
TRAIN = "/customvision/v3.4-preview/training"
PREDICT = "/customvision/v3.1/prediction"


class LiveServer:
    """`build_app` served on 127.0.0.1 from a background thread's event loop."""

    def __init__(self, settings: Settings):
        self.container = bootstrap(settings, recover=False)
        self.app = build_app(self.container)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.runner = web.AppRunner(self.app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        def run():
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)
        self.project = self.container.usecases(Scope.of("default")).projects.create("limits").id

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def request(self, method: str, path: str, body: bytes | str | None = None, key: str = TRAINING_KEY,
                headers: dict | None = None) -> tuple[int, dict, dict | str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            h = {"Training-Key": key, "Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=h)
            r = conn.getresponse()
            raw = r.read()
            try:
                data = json.loads(raw)  # strict: the response itself must be valid JSON
            except ValueError:
                data = raw.decode(errors="replace")
            return r.status, dict(r.headers), data
        finally:
            conn.close()


def _settings(tmp_path: Path, **kw) -> Settings:
    base = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'cvbot.db'}",
                    model_dir=tmp_path / "models", training_key=TRAINING_KEY, prediction_key=PREDICTION_KEY)
    return replace(base, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(_settings(tmp_path_factory.mktemp("limits")))
    yield s
    s.close()


def _strict_json(raw: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def assert_refused(result, status: int, code: str):
    got_status, _headers, data = result
    assert isinstance(data, dict), data
    assert (got_status, data.get("code")) == (status, code), data
    assert data["message"]


# =========================================================================== item 3: no 500 for bad input
@pytest.mark.parametrize("skip", ["9223372036854775808", "1" + "0" * 5000, "%C2%B2", "-1"])
def test_out_of_range_skip_is_a_400(server, skip):
    assert_refused(server.request("GET", f"{TRAIN}/projects/{server.project}/images?skip={skip}"),
                   400, "BadRequestInvalid")


def test_int_bounds_message_names_both_ends(server):
    _status, _h, data = server.request("GET", f"{TRAIN}/projects/{server.project}/images?skip=-1")
    assert "None" not in data["message"]


@pytest.mark.parametrize("token", [
    '{"continuation": "²"}',
    '{"continuation": "%s"}' % ("9" * 5000),
    '{"continuation": "99999999999999999999999"}',
    '{"continuation": "-1"}',
    json.dumps({"tags": [{"id": str(uuid.uuid4()), "minThreshold": 10**400}]}),
    json.dumps({"tags": [{"id": str(uuid.uuid4()), "maxThreshold": "X"}]}).replace('"X"', "1e400"),
])
def test_bad_prediction_query_tokens_are_400s(server, token):
    status, _h, data = server.request("POST", f"{TRAIN}/projects/{server.project}/predictions/query", token)
    assert status == 400, data
    assert data["code"] in ("BadRequestPredictionInvalidQueryParameters", "BadRequestInvalid"), data


def test_a_good_prediction_query_still_answers(server):
    status, _h, data = server.request("POST", f"{TRAIN}/projects/{server.project}/predictions/query",
                                      '{"continuation": "0", "maxCount": 10, "extra": 1.5}')
    assert status == 200, data
    assert data["results"] == [] and data["token"]["extra"] == 1.5


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 100_000, '{"name": ' + "[" * 40 + "]" * 40 + "}"])
def test_deeply_nested_json_is_a_400(server, body):
    for path in (f"{TRAIN}/projects/{server.project}/predictions/query", f"{TRAIN}/projects/{server.project}"):
        method = "PATCH" if path.endswith(server.project) else "POST"
        status, _h, data = server.request(method, path, body)
        assert (status, data["code"]) == (400, "BadRequestInvalid"), data
        assert "nested" in data["message"]


def test_nesting_inside_strings_does_not_count(server):
    body = json.dumps({"name": "[" * 100 + "{" * 100, "description": '\\"[[[['})
    status, _h, data = server.request("PATCH", f"{TRAIN}/projects/{server.project}", body)
    assert status == 200, data
    assert data["name"].startswith("[[[")


# =========================================================================== item 9: non-finite numbers
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused_not_echoed(server, value):
    body = json.dumps({"maxCount": 10, "note": "X"}).replace('"X"', value)
    result = server.request("POST", f"{TRAIN}/projects/{server.project}/predictions/query", body)
    assert_refused(result, 400, "BadRequestInvalid")


# =========================================================================== item 8 + body limits
def _raw_exchange(port: int, head: bytes, body_chunks, timeout: float = 10) -> bytes:
    """Send a request head and then body chunks as long as the server reads them; the server's answer (whatever
    was received before it closed the connection or `timeout` passed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.settimeout(0.05)
        answer = b""
        deadline = time.monotonic() + timeout
        for chunk in body_chunks:
            with contextlib.suppress(TimeoutError, BlockingIOError):
                answer += s.recv(65536)
            if answer:
                break
            try:
                s.sendall(chunk)
            except OSError:
                break
            if time.monotonic() > deadline:
                break
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while b"\r\n\r\n" not in answer:
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except (TimeoutError, OSError):
            pass
        return answer


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head, "no answer"
    status = int(head.split(b" ")[1])
    return status, json.loads(rest[:rest.rfind(b"}") + 1] or b"{}")


def test_oversized_raw_prediction_is_refused_while_it_streams(server):
    """A 30 MB chunked body: the server answers 413 after about 5 MB, while the client is still sending."""
    path = f"{TRAIN}/projects/{server.project}/quicktest/image"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTraining-Key: {TRAINING_KEY}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    block = b"%x\r\n" % 65536 + b"\x89" * 65536 + b"\r\n"
    sent = []

    def chunks():
        for _ in range(30 * 16):  # 30 MB, never terminated: only a streaming reader can answer
            sent.append(1)
            yield block

    status, data = _status_and_json(_raw_exchange(server.port, head, chunks()))
    assert (status, data.get("code")) == (413, "BadRequestImageSizeBytes"), data
    assert len(sent) < 30 * 16


def test_oversized_multipart_prediction_is_refused_while_it_streams(server):
    path = f"{TRAIN}/projects/{server.project}/quicktest/image"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTraining-Key: {TRAINING_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=BOUNDARY\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    part = b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.png\"\r\n\r\n"
    sent = []

    def chunks():
        yield b"%x\r\n" % len(part) + part + b"\r\n"
        for _ in range(30 * 16):
            sent.append(1)
            yield b"%x\r\n" % 65536 + b"\x89" * 65536 + b"\r\n"

    status, data = _status_and_json(_raw_exchange(server.port, head, chunks()))
    assert (status, data.get("code")) == (413, "BadRequestImageSizeBytes"), data
    assert len(sent) < 30 * 16


def test_oversized_content_length_is_refused_before_the_body(server):
    for path, ctype, code in (
            (f"{TRAIN}/projects/{server.project}/quicktest/image", "application/octet-stream",
             "BadRequestImageSizeBytes"),
            (f"{PREDICT}/{server.project}/classify/iterations/x/image", "application/octet-stream",
             "BadRequestImageSizeBytes"),
            (f"{TRAIN}/projects/{server.project}/predictions/query", "application/json", "BadRequestInvalid"),
            (f"{TRAIN}/projects/{server.project}/images", "application/octet-stream", "BadRequestImageSizeBytes")):
        size = 30 * 1024 * 1024 if "images" not in path.rsplit("/", 1)[-1] else 100 * 1024 * 1024
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTraining-Key: {TRAINING_KEY}\r\n"
                f"Prediction-Key: {PREDICTION_KEY}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {size}\r\n\r\n").encode()
        status, data = _status_and_json(_raw_exchange(server.port, head, iter([b"x" * 100]), timeout=5))
        assert (status, data.get("code")) == (413, code), (path, data)


def test_json_routes_take_at_most_a_few_megabytes(server):
    body = json.dumps({"continuation": "0", "pad": "x" * (3 * 1024 * 1024)})
    result = server.request("POST", f"{TRAIN}/projects/{server.project}/predictions/query", body)
    assert_refused(result, 413, "BadRequestInvalid")


# =========================================================================== item 9: downloadUri
def _ctx(settings: Settings, headers: dict, remote: str = "127.0.0.1"):
    from api.http import Ctx

    transport = SimpleNamespace(get_extra_info=lambda name, default=None: {
        "peername": (remote, 50000), "sockname": ("127.0.0.1", 8123)}.get(name, default),
        is_closing=lambda: False)
    request = make_mocked_request("GET", "/x", headers={"Host": "127.0.0.1:8123", **headers}, transport=transport)
    return Ctx(request, SimpleNamespace(settings=settings), "default", "training")


EXPORT = SimpleNamespace(iteration_id=str(uuid.uuid4()), id=str(uuid.uuid4()))
EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(tmp_path):
    from api.training import download_uri

    uri = download_uri(_ctx(_settings(tmp_path), EVIL), EXPORT)
    assert uri.startswith("http://127.0.0.1:8123/customvision/exports/"), uri
    # the Host header alone is the client's word too: the server's own address it is
    uri = download_uri(_ctx(_settings(tmp_path), {"Host": "evil.example"}), EXPORT)
    assert uri.startswith("http://127.0.0.1:8123/"), uri


def test_forwarded_headers_from_a_trusted_proxy_are_used(tmp_path):
    from api.training import download_uri

    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path), "CVBOT_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert download_uri(_ctx(settings, EVIL, remote="10.1.2.3"), EXPORT).startswith("https://evil.example/")
    assert download_uri(_ctx(settings, EVIL, remote="::ffff:10.1.2.3"), EXPORT).startswith("https://evil.example/")
    assert download_uri(_ctx(settings, EVIL, remote="192.0.2.7"), EXPORT).startswith("http://127.0.0.1:8123/")
    bad = {"X-Forwarded-Host": "a.example/@b", "X-Forwarded-Proto": "javascript"}
    assert download_uri(_ctx(settings, bad, remote="10.1.2.3"), EXPORT).startswith("http://127.0.0.1:8123/")


def test_public_url_wins(tmp_path):
    from api.training import download_uri

    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path), "CVBOT_PUBLIC_URL": "https://cv.example.org/"})
    uri = download_uri(_ctx(settings, EVIL), EXPORT)
    assert uri == f"https://cv.example.org/customvision/exports/{EXPORT.iteration_id}/{EXPORT.id}/model.zip"


# =========================================================================== item 9: over-long request lines
def test_over_long_request_line_is_a_one_line_warning(server, caplog):
    caplog.set_level(logging.DEBUG)
    path = f"{TRAIN}/projects?x=" + "a" * 70_000
    answer = _raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), iter([]), timeout=5)
    assert answer.startswith(b"HTTP/1.") and answer[8:13] == b" 400 ", answer[:200]
    answer = _raw_exchange(server.port, f"GET {TRAIN}/projects HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 70_000}\r\n\r\n"
                           .encode(), iter([]), timeout=5)
    assert answer.startswith(b"HTTP/1.") and answer[8:13] == b" 400 ", answer[:200]
    time.sleep(0.1)
    bad = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert bad, "the bad requests are logged"
    assert all(r.levelno <= logging.WARNING and not r.exc_info for r in bad), [(r.levelname, r.msg) for r in bad]
    assert all("a" * 200 not in r.getMessage() and "b" * 200 not in r.getMessage() for r in bad)


# =========================================================================== rate limits
def test_rate_limits_per_key(tmp_path):
    settings = _settings(tmp_path, rate_limit=5.0)
    s = LiveServer(settings)
    try:
        other = s.container.usecases(Scope.of("w2")).channels.keys().training_key  # another workspace's key
        results = [s.request("GET", f"{TRAIN}/projects") for _ in range(20)]
        limited = [r for r in results if r[0] == 429]
        assert 0 < len(limited) <= 15, [r[0] for r in results]
        assert all(r[2]["code"] == "TooManyRequests" and int(r[1]["Retry-After"]) >= 1 for r in limited)
        assert all(r[0] == 200 for r in results[:5])
        assert s.request("GET", f"{TRAIN}/projects", key=other)[0] == 200  # another key is unaffected
        time.sleep(1.1)
        assert s.request("GET", f"{TRAIN}/projects")[0] == 200  # and the first one recovers
    finally:
        s.close()


def test_rate_limit_overrides_parse():
    s = Settings.from_env({"CVBOT_RATE_LIMIT": "10", "CVBOT_RATE_LIMITS": "abc:20, def:0.5"})
    assert s.rate_limit == 10.0 and s.rate_limits == {"abc": 20.0, "def": 0.5}
    assert "abc" not in repr(s)
    assert Settings.from_env({}).rate_limit is None
    with pytest.raises(ValueError, match="CVBOT_RATE_LIMITS"):
        Settings.from_env({"CVBOT_RATE_LIMITS": "abc"})


def test_token_bucket_refills_at_the_rate():
    from api.limits import RateLimiter, retry_after

    now = [0.0]
    limiter = RateLimiter(2.0, {"vip": 0.0, "slow": 0.5}, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(2)] == [0.0, 0.0]  # a burst of one second's worth
    wait = limiter.acquire("k")
    assert wait == pytest.approx(0.5) and retry_after(wait) == "1"
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0 and limiter.acquire("k") > 0
    assert all(limiter.acquire("vip") == 0.0 for _ in range(100))  # 0 overrides: unlimited
    assert limiter.acquire("slow") == 0.0 and retry_after(limiter.acquire("slow")) == "2"
    assert not RateLimiter(None, {"k": 0.0}).enabled and RateLimiter(None, {"k": 1.0}).enabled
