"""Where image links point (CVBOT_PUBLIC_URL, a trusted proxy, else the server's own address; never the client's
headers) and how their settings are read."""
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api.http import Ctx
from api.links import SIGNER, Signer, links
from core.links import verify
from cvbot.config import Settings

EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
ID = "5f0c9a6e-2b7d-4e1f-8a3c-9d6b2e4f1a7c"


def _ctx(settings: Settings, headers: dict, remote: str = "127.0.0.1") -> Ctx:
    app = web.Application()
    app[SIGNER] = Signer(b"s" * 32, 60, clock=lambda: 1000.0)
    transport = SimpleNamespace(get_extra_info=lambda name, default=None: {
        "peername": (remote, 50000), "sockname": ("127.0.0.1", 8123)}.get(name, default),
        is_closing=lambda: False)
    request = make_mocked_request("GET", "/x", headers={"Host": "127.0.0.1:8123", **headers}, transport=transport,
                                  app=app)
    return Ctx(request, SimpleNamespace(settings=settings), "default", "training")


def _settings(**env) -> Settings:
    return Settings.from_env({"CVBOT_DATA_DIR": "/nonexistent", **env})


def test_links_use_the_servers_own_address_not_the_clients_headers():
    for headers in (EVIL, {"Host": "evil.example"}):
        uris = links(_ctx(_settings(), headers))("image", ID)
        assert set(uris) == {"originalImageUri", "resizedImageUri", "thumbnailUri"}
        for uri in uris.values():
            assert uri.startswith(f"http://127.0.0.1:8123/customvision/images/image/{ID}/"), uri


def test_links_use_the_public_url_or_a_trusted_proxy():
    uri = links(_ctx(_settings(CVBOT_PUBLIC_URL="https://cv.example.org/"), EVIL))("prediction", ID)["thumbnailUri"]
    assert uri.startswith(f"https://cv.example.org/customvision/images/prediction/{ID}/thumbnail?exp=1062&sig="), uri
    proxied = _settings(CVBOT_TRUSTED_PROXIES="10.0.0.0/8")
    assert links(_ctx(proxied, EVIL, "10.1.2.3"))("image", ID)["originalImageUri"].startswith("https://evil.example/")
    assert links(_ctx(proxied, EVIL, "192.0.2.7"))("image", ID)["originalImageUri"].startswith("http://127.0.0.1:8123/")


def test_each_link_carries_its_own_signature():
    uris = links(_ctx(_settings(), {}))("image", ID)
    for field, variant in (("originalImageUri", "original"), ("resizedImageUri", "resized"),
                           ("thumbnailUri", "thumbnail")):
        path, query = uris[field].split("?")
        params = dict(p.split("=") for p in query.split("&"))
        assert path.endswith(f"/{variant}") and params["exp"] == "1062"  # 1060 rounded up to a tenth of the lifetime
        assert verify(b"s" * 32, "image", ID, variant, params["exp"], params["sig"], 1000.0)


def test_link_settings():
    assert _settings().link_ttl == 3600 and _settings().secret_key is None
    s = _settings(CVBOT_LINK_TTL="30", CVBOT_SECRET_KEY="a-very-secret-value")
    assert s.link_ttl == 30 and s.secret_key == "a-very-secret-value"
    assert "a-very-secret-value" not in repr(s)
    for bad in ("0", "-5", "1.5", "soon", "604801"):
        with pytest.raises(ValueError, match="CVBOT_LINK_TTL"):
            _settings(CVBOT_LINK_TTL=bad)
