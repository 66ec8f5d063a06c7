"""A query parameter with only a lower bound says so (issue #13: "must be between 0 and None")."""
import asyncio

from core.usecases import Scope


def test_a_query_bound_without_a_maximum_reads_at_least_not_none(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from cvbot.server import build_app

    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path / "data"), "CVBOT_TRAINING_KEY": "k" * 32})
    container = bootstrap(settings)
    p = container.usecases(Scope.of("default")).projects.create("skip")

    async def go():
        async with TestClient(TestServer(build_app(container))) as client:
            r = await client.get(f"/customvision/v3.4-preview/training/projects/{p.id}/images/tagged?skip=-1",
                                 headers={"Training-Key": "k" * 32})
            return r.status, await r.json()

    status, body = asyncio.run(go())
    assert status == 400 and "None" not in body["message"], body
    assert "'skip' must be at least 0" in body["message"]
