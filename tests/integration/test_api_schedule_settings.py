"""cvbot's own project settings through the Custom Vision-compatible API (`settings.cvbot` of update_project) and
`cvbot project settings`: shown on every project, changed by PATCH, bad values refused with nothing changed."""
import asyncio
import subprocess
import sys
from pathlib import Path

from core.model import DEFAULT_UNKNOWN_THRESHOLD
from core.usecases import Scope
from tests.helpers import env_with

KEY = "k" * 32
T = "/customvision/v3.3/training"
UNKNOWN = {"unknownThreshold": DEFAULT_UNKNOWN_THRESHOLD}  # cvbot's other setting, untouched here


def _patched(tmp_path, bodies: list[dict], read_first: bool = False):
    """A cvbot app on a fresh data dir with one project 'birds': (optionally its GET, then) each PATCH's status and
    JSON, in order; and the use cases' view of the project afterwards."""
    from aiohttp.test_utils import TestClient, TestServer

    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from cvbot.server import build_app

    container = bootstrap(Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path / "data"), "CVBOT_TRAINING_KEY": KEY}))
    projects = container.usecases(Scope.of("default")).projects
    p = projects.create("birds")
    h = {"Training-Key": KEY}

    async def go():
        async with TestClient(TestServer(build_app(container))) as client:
            out = []
            if read_first:
                r = await client.get(f"{T}/projects/{p.id}", headers=h)
                out.append((r.status, await r.json()))
            for body in bodies:
                r = await client.patch(f"{T}/projects/{p.id}", json=body, headers=h)
                out.append((r.status, await r.json()))
            return out

    try:
        return asyncio.run(go()), projects.get(p.id)
    finally:
        container.close()


def test_update_project_reads_and_writes_the_cvbot_settings(tmp_path):
    (s0, got), (s1, set1), (s2, bad), (s3, bad2), (s4, reset) = _patched(tmp_path, [
        {"settings": {"cvbot": {"retrain": "nightly", "predictionRetentionDays": 30}}},
        {"settings": {"cvbot": {"retrain": "weekly"}}, "name": "renamed"},
        {"settings": {"cvbot": {"predictionRetentionDays": True}}},
        {"settings": {"cvbot": {"predictionRetentionDays": None}}, "description": "d"}], read_first=True)[0]
    assert s0 == 200 and got["settings"]["cvbot"] == {"retrain": "off", "predictionRetentionDays": None, **UNKNOWN}
    assert s1 == 200 and set1["settings"]["cvbot"] == {"retrain": "nightly", "predictionRetentionDays": 30, **UNKNOWN}
    assert (s2, bad["code"]) == (400, "BadRequestInvalid") and "nightly or off" in bad["message"]
    assert s3 == 400 and "predictionRetentionDays" in bad2["message"]
    assert s4 == 200
    assert reset["settings"]["cvbot"] == {"retrain": "nightly", "predictionRetentionDays": None, **UNKNOWN}
    assert reset["name"] == "birds"  # the refused PATCH renamed nothing


def test_cli_project_settings(tmp_path):
    cvbot = str(Path(sys.executable).parent / "cvbot")
    env = env_with(tmp_path)

    def run(*args):
        return subprocess.run([cvbot, *args], env=env, capture_output=True, text=True, timeout=120)

    assert run("project", "create", "Birds").returncode == 0
    out = run("project", "settings", "Birds", "--retrain", "nightly", "--retention", "30")
    assert out.returncode == 0 and "retraining nightly, stored predictions kept 30 days" in out.stdout, out.stderr
    out = run("--json", "project", "settings", "Birds", "--retention", "keep")
    assert out.returncode == 0 and '"predictionRetentionDays": 0' in out.stdout
    out = run("project", "settings", "Birds", "--retrain", "weekly")
    assert out.returncode == 2 and "retrain must be nightly or off" in out.stderr
    out = run("project", "settings", "Birds")
    assert "retraining nightly, stored predictions kept for ever" in out.stdout


def test_cli_schedule_runs_a_job_now_and_lists_the_run_log(tmp_path, provider, model_dir):
    import json

    from core.usecases import ImageUpload
    from tests.conftest import make_cv
    from tests.helpers import colour_images

    (tmp_path / "data").mkdir()
    seed = make_cv(tmp_path / "data", provider)
    p = seed.projects.create("nightly")
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        tag = seed.tags.create(p.id, name)
        seed.images.add(p.id, [ImageUpload(d, f"{name}{i}.png", [tag.id])
                               for i, d in enumerate(colour_images(5, colour, len(name)))])
    seed.projects.update(p.id, retrain="nightly")
    cvbot = str(Path(sys.executable).parent / "cvbot")
    env = env_with(tmp_path, CVBOT_MODEL_DIR=model_dir)

    def run(*args):
        return subprocess.run([cvbot, *args], env=env, capture_output=True, text=True, timeout=300)

    out = run("--json", "schedule", "run", "retrain")
    assert out.returncode == 0, out.stderr
    [started] = json.loads(out.stdout)["result"]["started"]
    assert (started["name"], started["status"]) == ("nightly", "Completed")  # finished before the command ended
    out = run("--json", "schedule", "run", "retrain")
    assert json.loads(out.stdout)["result"]["started"] == []  # no new images since
    assert run("schedule", "run", "backup").returncode == 2
    runs = json.loads(run("--json", "schedule", "list", "--job", "retrain").stdout)
    assert [r["status"] for r in runs] == ["Done", "Done"] and all(r["slot"].startswith("manual ") for r in runs)


def test_the_server_tells_its_adapters_of_the_runs_it_made(tmp_path):
    from aiohttp import web

    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from cvbot.server import SCHEDULED_RUN_LISTENERS, add_scheduler

    container = bootstrap(Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path / "data")}))
    heard = []

    def broken(run):
        raise RuntimeError("an adapter's bug")

    app = web.Application()
    app[SCHEDULED_RUN_LISTENERS] = [broken, heard.append]
    scheduler = add_scheduler(app, container)
    try:
        run = scheduler.fire("store-cleanup")
        assert run is not None and heard == [run]  # the broken listener stopped neither the run nor the others
        assert scheduler.fire("store-cleanup") is None and heard == [run]  # the slot is taken: nobody hears again
    finally:
        scheduler.shutdown()
        container.close()


def test_the_unknown_threshold_is_set_and_reset_through_the_api(tmp_path):
    ((s1, set1), (s2, out_of_range), (s3, not_number), (s4, reset)), stored = _patched(tmp_path, [
        {"settings": {"cvbot": {"unknownThreshold": 0.8}}},
        {"settings": {"cvbot": {"unknownThreshold": 1.5}}},
        {"settings": {"cvbot": {"unknownThreshold": "high"}}, "name": "renamed"},
        {"settings": {"cvbot": {"unknownThreshold": None}}}])
    assert s1 == 200 and set1["settings"]["cvbot"]["unknownThreshold"] == 0.8
    assert (s2, out_of_range["code"]) == (400, "BadRequestInvalid") and "outside [0, 1]" in out_of_range["message"]
    assert s3 == 400 and "unknownThreshold" in not_number["message"]
    assert s4 == 200 and reset["settings"]["cvbot"] == {"retrain": "off", "predictionRetentionDays": None, **UNKNOWN}
    assert stored.unknown_threshold is None and stored.name == "birds"
