"""Issue #13: a prediction whose image cannot get its share of the process-wide decode budget in time is refused
with 503 and Retry-After (nothing stored), and the same image is accepted once the budget is free."""
from __future__ import annotations

import asyncio
import io
import time
import uuid

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw

from core import images
from core.decode_budget import DecodeBudget
from core.images import MAX_EDGE
from cvbot.bootstrap import bootstrap
from cvbot.config import Settings
from cvbot.server import build_app
from tests.helpers import env_with

KEY = "budget-prediction-key"


def bomb() -> bytes:
    img = Image.new("1", (MAX_EDGE, MAX_EDGE), 1)
    ImageDraw.Draw(img).ellipse((1000, 1000, 9000, 9000), fill=0)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def container(tmp_path, model_dir):
    c = bootstrap(Settings.from_env(env_with(tmp_path, CVBOT_MODEL_DIR=model_dir, CVBOT_PREDICTION_KEY=KEY)),
                  recover=False)
    yield c
    c.close()


async def _classify_all(container, data: bytes, n: int) -> list[tuple[int, dict, str | None, float]]:
    server = TestServer(build_app(container), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url(f"/customvision/v3.1/prediction/{uuid.uuid4()}/classify/iterations/x/image/nostore"))
    try:
        async with ClientSession() as session:
            async def one():
                t = time.monotonic()
                async with session.post(url, data=data, headers={"Prediction-Key": KEY,
                                                                 "Content-Type": "application/octet-stream"}) as r:
                    return r.status, await r.json(), r.headers.get("Retry-After"), time.monotonic() - t

            return list(await asyncio.gather(*(one() for _ in range(n))))
    finally:
        await server.close()


def test_predictions_beyond_the_decode_budget_wait_then_get_503_with_retry_after(container, monkeypatch):
    budget = DecodeBudget(capacity=256 * 2**20, reserve=32 * 2**20, wait_s=0.3, max_waiting=8)
    monkeypatch.setattr(images, "BUDGET", budget)
    data = bomb()
    with budget.hold(10**12, wait_s=None):  # another decode over the budget is running
        answers = asyncio.run(_classify_all(container, data, 3))
    for status, body, retry_after, seconds in answers:
        assert status == 503 and body["code"] == "ErrorFeaturizationQueueTimeout", body
        assert retry_after is not None and int(retry_after) >= 1 and seconds >= 0.3
    # the budget free again: the same 10,240 x 10,240 image is decoded (then the made-up project is not found);
    # three at once take turns within the wait
    budget.wait_s = 30
    answers = asyncio.run(_classify_all(container, data, 3))
    assert [a[0] for a in answers] == [404] * 3, answers
    assert budget.used == 0
