"""Issue #13: images fetched by URL are size-checked while streaming (a declared Content-Length over the limit is
refused before the body is read), and the allow-list (CVBOT_ALLOWED_URL_HOSTS) matches ports too."""
from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest

from api.http import ApiError
from api.urls import check_url, fetch_image, host_allowed
from core.errors import ImageRejected

LIMIT = 1024 * 1024


@pytest.mark.parametrize("url, entries, ok", [
    ("http://images.example/a.png", ["images.example"], True),
    ("https://images.example/a.png", ["images.example"], True),
    ("http://images.example:80/a.png", ["images.example"], True),
    ("http://images.example:6379/a.png", ["images.example"], False),  # no port in the entry: the default one only
    ("https://images.example:80/a.png", ["images.example"], False),
    ("http://images.example:8080/a.png", ["images.example:8080"], True),
    ("http://images.example/a.png", ["images.example:8080"], False),
    ("http://images.example:8081/a.png", ["images.example:8080"], False),
    ("http://images.example:5432/a.png", ["images.example:*"], True),
    ("http://cdn.images.example:8443/a.png", ["*.images.example:8443"], True),
    ("http://cdn.images.example:8444/a.png", ["*.images.example:8443"], False),
    ("http://[::1]:8080/a.png", ["[::1]:8080"], True),
    ("http://[::1]:8081/a.png", ["[::1]:8080"], False),
    ("http://127.0.0.1:5000/a.png", ["localhost:5000"], False),
])
def test_the_allow_list_matches_host_and_port(url, entries, ok):
    if ok:
        assert check_url(url, entries) == url
    else:
        with pytest.raises(ApiError) as e:
            check_url(url, entries)
        assert e.value.code == "BadRequestImageUrl" and "allowed" in e.value.message


def test_host_allowed_without_a_port_means_the_schemes_default():
    assert host_allowed("a.example", ["a.example"], None, "https")
    assert host_allowed("a.example", ["a.example"], 443, "https")
    assert not host_allowed("a.example", ["a.example"], 8443, "https")


def test_a_bad_port_is_a_bad_url():
    with pytest.raises(ApiError, match="not a valid URL"):
        check_url("http://127.0.0.1:99999/a.png", ["127.0.0.1:*"])


class Host:
    """Loopback HTTP server: /declared says Content-Length 64 MB then stalls; /endless streams without a length."""

    def __init__(self):
        self.sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                try:
                    if self.path == "/declared":
                        self.send_header("Content-Length", str(64 * 1024 * 1024))
                        self.end_headers()
                        self.wfile.flush()
                        time.sleep(5)  # a fetch that waits for the body takes this long
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"\0" * 65536
                    for _ in range(2000):  # 128 MB at most
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        outer.sent += len(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def host():
    h = Host()
    yield h
    h.httpd.shutdown()


def test_a_declared_length_over_the_limit_is_refused_before_reading_the_body(host):
    t = time.monotonic()
    with pytest.raises(ImageRejected) as e:
        asyncio.run(fetch_image(f"http://127.0.0.1:{host.port}/declared", [f"127.0.0.1:{host.port}"], LIMIT))
    assert time.monotonic() - t < 2
    assert (e.value.status, e.value.code) == ("ErrorImageSize", "BadRequestImageSizeBytes")
    assert "64.0 MB" in e.value.message


def test_an_endless_body_is_refused_once_it_passes_the_limit(host):
    with pytest.raises(ImageRejected) as e:
        asyncio.run(fetch_image(f"http://127.0.0.1:{host.port}/endless", [f"127.0.0.1:{host.port}"], LIMIT))
    assert e.value.status == "ErrorImageSize"
    time.sleep(0.2)
    assert host.sent < 32 * LIMIT  # stopped reading: only what the socket buffers took went out


def test_a_slack_download_stops_once_it_passes_the_limit(host):
    from bot.runtime import SlackBot

    async def download(f: dict):
        bot = SlackBot(None, "xoxb-test")  # type: ignore[arg-type] - download needs no use cases
        try:
            return await bot.download(None, f, LIMIT)
        finally:
            await bot.close()

    sent = host.sent
    d = asyncio.run(download({"id": "F1", "name": "a.png", "url_private_download":
                              f"http://127.0.0.1:{host.port}/endless"}))  # no declared size
    assert d.data is None and d.problem == "too large (over 1.0 MB)"
    time.sleep(0.2)
    assert host.sent - sent < 32 * LIMIT
    d = asyncio.run(download({"id": "F2", "size": LIMIT + 1, "url_private_download": "http://127.0.0.1:9/never"}))
    assert d.data is None and d.problem.startswith("too large (1.0 MB")  # refused from its declared size
