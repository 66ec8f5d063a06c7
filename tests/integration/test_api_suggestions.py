"""The suggestion calls of the Training API in-process (aiohttp's test server over SQLite and the real Compact
backbone): bad input gets Custom Vision's 4xx codes and changes nothing; a project without a trained iteration is
refused; pages follow continuations."""
import asyncio

import pytest

from core.model import IterationStatus
from core.usecases import ImageUpload, InlineRunner, Scope
from tests.helpers import colour_images

KEY = "k" * 32
BASE = "/customvision/v3.3/training"
RED, BLUE = (220, 30, 30), (30, 40, 220)


@pytest.fixture(scope="module")
def app(tmp_path_factory, model_dir):
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    tmp = tmp_path_factory.mktemp("suggest-api")
    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp / "data"), "CVBOT_TRAINING_KEY": KEY,
                                  "CVBOT_MODEL_DIR": str(model_dir)})
    container = bootstrap(settings)
    container.deps.runner = InlineRunner()  # the server's scheduler starts with the server; train on a thread here
    uc = container.usecases(Scope.of("default"))
    p = uc.projects.create("api-suggest")
    fresh = uc.projects.create("untrained")
    red, blue = uc.tags.get_or_create(p.id, ["red", "blue"])
    ups = [ImageUpload(d, f"r{i}", [red.id]) for i, d in enumerate(colour_images(5, RED, 91))]
    ups += [ImageUpload(d, f"b{i}", [blue.id]) for i, d in enumerate(colour_images(5, BLUE, 92))]
    ups += [ImageUpload(d, f"u{i}") for i, d in enumerate(colour_images(3, RED, 93))]
    uc.images.add(p.id, ups)
    it = uc.training.train(p.id)
    assert uc.training.wait(p.id, it.id, 120).status == IterationStatus.Completed
    yield container, p, fresh, it, red
    container.close()


def _call(container, method, path, body=None):
    from aiohttp.test_utils import TestClient, TestServer

    from cvbot.server import build_app

    async def go():
        async with TestClient(TestServer(build_app(container))) as client:
            r = await client.request(method, BASE + path, json=body, headers={"Training-Key": KEY})
            return r.status, await r.json()

    return asyncio.run(go())


def test_bad_suggestion_queries_get_4xx(app):
    container, p, fresh, it, red = app
    q = f"/projects/{p.id}/images/suggested?iterationId={it.id}"
    for body, code in (({"maxCount": 0}, "BadRequestInvalid"), ({"maxCount": "5"}, "BadRequestInvalid"),
                       ({"threshold": 2}, "BadRequestInvalid"), ({"sortBy": "Newest"}, "BadRequestInvalid"),
                       ({"continuation": "x"}, "BadRequestInvalid"), ({"tagIds": ["nope"]}, "BadRequestInvalidIds")):
        status, out = _call(container, "POST", q, body)
        assert status == 400 and out["code"] == code, (body, out)
    status, out = _call(container, "POST", f"/projects/{p.id}/images/suggested", {})
    assert status == 400 and out["code"] == "BadRequestRequiredParamIsNull"
    status, out = _call(container, "POST", f"/projects/{p.id}/tagsandregions/suggestions?iterationId={it.id}")
    assert status == 400 and out["code"] == "BadRequestRequiredParamIsNull"
    status, out = _call(container, "POST", f"/projects/{fresh.id}/images/suggested/count?iterationId={it.id}")
    assert status == 404


def test_pages_cover_the_pool_once(app):
    container, p, fresh, it, red = app
    seen, continuation = [], None
    while True:
        status, out = _call(container, "POST", f"/projects/{p.id}/images/suggested?iterationId={it.id}",
                            {"maxCount": 2, "continuation": continuation})
        assert status == 200
        seen += [r["id"] for r in out["results"]]
        continuation = out["token"]["continuation"]
        if continuation is None:
            break
    assert len(seen) == len(set(seen)) == 3
    status, counts = _call(container, "POST", f"/projects/{p.id}/images/suggested/count?iterationId={it.id}",
                           {"tagIds": [red.id], "threshold": 0.5})
    assert status == 200 and counts == {red.id: 3}
