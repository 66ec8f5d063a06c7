"""`cvbot migrate` end to end: two real `cvbot serve` processes; the source (the server fixture of test_sdk_api.py)
is filled through the official Azure SDK 3.1.1 with real images (a Multiclass and a Multilabel project, a Negative
tag, untagged images, metadata); `cvbot migrate` copies into the target's data dir while the target server runs on
it. The target then equals the source (image bytes by sha256, tags per image, settings, metadata); a rerun adds
nothing; a migration killed half way (SIGKILL) and rerun completes with nothing duplicated or lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.e2e import test_sdk_api
from tests.e2e.test_sdk_api import CVBOT, TRAINING_KEY, Server, start_serve
from tests.e2e.test_sdk_transfer import real_images
from tests.helpers import colour_images, free_port

pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
)

pytestmark = pytest.mark.slow
server, image_host = test_sdk_api.server, test_sdk_api.image_host  # the source: a real `cvbot serve`
API = "/customvision/v3.3/training"


@pytest.fixture(scope="module")
def target(tmp_path_factory, server):
    """A second `cvbot serve` on its own data dir (the same keys, so one helper reads both)."""
    tmp = tmp_path_factory.mktemp("target")
    env = dict(server.env, CVBOT_DATA_DIR=str(tmp / "data"))
    port = free_port()
    with open(tmp / "server.log", "w+") as log:
        proc, url = start_serve(port, env, log)
        yield Server(url, tmp / "data", env, proc)
        proc.terminate()
        proc.wait(timeout=30)


def _get(srv: Server, path: str):
    status, body = srv.raw("GET", API + path, {"Training-Key": TRAINING_KEY})
    assert status == 200, body
    return json.loads(body)


def state(srv: Server, names: set[str]) -> dict:
    """Per project name: settings, tags, and {sha256: (tag names, metadata)} over the raw API (read twice, so a
    duplicate would show in the count)."""
    out = {}
    for p in _get(srv, "/projects"):
        if p["name"] not in names:
            continue
        tags = sorted((t["name"], t["type"], t["description"], t["imageCount"])
                      for t in _get(srv, f"/projects/{p['id']}/tags"))
        images, count = {}, 0
        for kind in ("tagged", "untagged"):
            skip = 0
            while True:
                page = _get(srv, f"/projects/{p['id']}/images/{kind}?take=256&skip={skip}")
                for i in page:
                    images[i["sha256"]] = (tuple(sorted(t["tagName"] for t in i["tags"])),
                                           tuple(sorted((i.get("metadata") or {}).items())))
                count += len(page)
                if len(page) < 256:
                    break
                skip += 256
        settings = {k: p["settings"][k] for k in ("domainId", "classificationType", "threshold")}
        out[p["name"]] = {"settings": settings, "description": p["description"], "tags": tags, "images": images,
                          "count": count}
    return out


def migrate(srv: Server, endpoint: str, *args: str, **popen) -> subprocess.Popen:
    env = dict(srv.env, CVBOT_SOURCE_TRAINING_KEY=TRAINING_KEY)  # the key stays out of the process list
    return subprocess.Popen([CVBOT, "migrate", "--from-endpoint", endpoint, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def upload(trainer, project_id: str, images: list[bytes], tag_ids: list[str] | None, prefix: str) -> list[str]:
    ids = []
    for start in range(0, len(images), 64):
        batch = trainer.create_images_from_files(project_id, ImageFileCreateBatch(images=[
            ImageFileCreateEntry(name=f"{prefix}{start + n}.png", contents=data, tag_ids=tag_ids)
            for n, data in enumerate(images[start:start + 64])]))
        ids += [r.image.id for r in batch.images]
    return ids


@pytest.fixture(scope="module")
def source_projects(server):
    trainer = server.trainer()
    animals, food = real_images(8)
    mc = trainer.create_project("Migrate MC", description="real pictures", classification_type="Multiclass")
    animal = trainer.create_tag(mc.id, "animal", description="anything alive")
    dish = trainer.create_tag(mc.id, "food")
    neg = trainer.create_tag(mc.id, "Negative", type="Negative", description="none of these")
    a_ids = upload(trainer, mc.id, animals[:6], [animal.id], "animal")
    upload(trainer, mc.id, food[:6], [dish.id], "food")
    upload(trainer, mc.id, colour_images(5, (128, 128, 128), 31), [neg.id], "neg")
    u_ids = upload(trainer, mc.id, colour_images(3, (10, 200, 200), 32), None, "untagged")
    trainer.update_image_metadata(mc.id, a_ids[:2], {"camera": "north", "shift": "night"})
    trainer.update_image_metadata(mc.id, u_ids[:1], {"note": "unsorted"})

    ml = trainer.create_project("Migrate ML", description="several tags each", classification_type="Multilabel")
    cute, alive = trainer.create_tag(ml.id, "cute"), trainer.create_tag(ml.id, "alive")
    upload(trainer, ml.id, animals[6:8], [cute.id, alive.id], "both")
    upload(trainer, ml.id, food[6:8], [cute.id], "cute")
    upload(trainer, ml.id, colour_images(1, (250, 250, 10), 33), None, "untagged")
    return {"Migrate MC", "Migrate ML"}


def test_migrate_copies_everything_and_a_rerun_adds_nothing(server, target, source_projects):
    proc = migrate(target, server.url, "--project", "Migrate MC", "--project", "Migrate ML", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    expected = state(server, source_projects)
    assert summary["projects"] == 2 and summary["failures"] == [] and summary["skippedProjects"] == []
    assert summary["images"] == sum(p["count"] for p in expected.values()) == 25
    assert summary["tags"] == 5 and summary["bytes"] > 0
    assert state(target, source_projects) == expected

    proc = migrate(target, server.url, "--project", "Migrate MC", "--project", "Migrate ML", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    again = json.loads(out)
    assert again["images"] == 0 and again["tags"] == 0 and again["skippedDuplicates"] == 25
    assert state(target, source_projects) == expected


def test_a_migration_killed_half_way_and_rerun_loses_and_duplicates_nothing(server, target, tmp_path):
    trainer = server.trainer()
    p = trainer.create_project("Migrate killed", classification_type="Multiclass")
    red, blue = trainer.create_tag(p.id, "red"), trainer.create_tag(p.id, "blue")
    upload(trainer, p.id, colour_images(60, (220, 30, 30), 41), [red.id], "red")
    upload(trainer, p.id, colour_images(60, (30, 40, 220), 42), [blue.id], "blue")
    expected = state(server, {"Migrate killed"})

    proc = migrate(target, server.url, "--project", "Migrate killed", start_new_session=True)
    copied = 0
    deadline = time.monotonic() + 120
    while copied < 10 and proc.poll() is None and time.monotonic() < deadline:  # watch the target fill up
        ids = [x["id"] for x in _get(target, "/projects") if x["name"] == "Migrate killed"]
        copied = _get(target, f"/projects/{ids[0]}/images/count") if ids else 0
        time.sleep(0.01)
    finished = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not finished, "the migration finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    partial = state(target, {"Migrate killed"})["Migrate killed"]
    assert copied <= partial["count"] < 120  # what was reported copied is kept, and it did stop early

    proc = migrate(target, server.url, "--project", "Migrate killed", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    assert summary["images"] == 120 - partial["count"] and summary["failures"] == []
    assert state(target, {"Migrate killed"}) == expected


def test_train_compares_the_copy_with_the_sources_last_iteration(server, target, source_projects):
    trainer = server.trainer()
    [mc] = [p for p in trainer.get_projects() if p.name == "Migrate MC"]
    it = test_sdk_api.wait_trained(trainer, mc.id, trainer.train_project(mc.id))
    assert it.status == "Completed"
    source_perf = trainer.get_iteration_performance(mc.id, it.id)

    proc = migrate(target, server.url, "--project", mc.id, "--train")  # by id; already copied: only trains
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    assert "total: 1 projects, 0 tags, 0 images" in text
    line = next(x for x in text.splitlines() if x.startswith("'Migrate MC' iteration 1:"))
    assert f"(source: precision {source_perf.precision:.3f}, recall {source_perf.recall:.3f}" in line
    [copy] = [p for p in _get(target, "/projects") if p["name"] == "Migrate MC"]
    [trained] = _get(target, f"/projects/{copy['id']}/iterations")
    assert trained["status"] == "Completed"
