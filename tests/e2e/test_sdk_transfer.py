"""export_project → import_project through the official Azure SDK 3.1.1 against a real `cvbot serve` (the server
fixture of test_sdk_api.py): the copy has the same settings, tags, image contents and tags per image."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e import test_sdk_api
from tests.e2e.test_sdk_api import BLUE, PREDICTION_KEY, RED, TRAINING_KEY, cv_error
from tests.helpers import TUXPAINT, colour_images

pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
)

server, image_host = test_sdk_api.server, test_sdk_api.image_host  # the same fixtures: a real `cvbot serve`


def real_images(n: int) -> tuple[list[bytes], list[bytes]]:
    """Two kinds of real pictures: Tux Paint stamps where installed, else generated colour images."""
    animals, food = sorted((TUXPAINT / "animals").rglob("*.png")), sorted((TUXPAINT / "food").rglob("*.png"))
    if len(animals) >= n and len(food) >= n:
        return [f.read_bytes() for f in animals[:n]], [f.read_bytes() for f in food[:n]]
    return colour_images(n, RED, 5), colour_images(n, BLUE, 6)


def snapshot(server, project_id: str) -> tuple:
    """(settings, tags, {sha256: (tag names, original name, metadata)}) read over the raw API (the SDK drops
    sha256)."""
    headers = {"Training-Key": TRAINING_KEY}
    status, body = server.raw("GET", f"/customvision/v3.3/training/projects/{project_id}", headers)
    assert status == 200, body
    project = json.loads(body)
    settings = {k: project["settings"][k] for k in ("domainId", "classificationType", "threshold")}
    status, body = server.raw("GET", f"/customvision/v3.3/training/projects/{project_id}/tags", headers)
    tags = sorted((t["name"], t["type"], t["description"], t["imageCount"]) for t in json.loads(body))
    images = {}
    skip = 0
    while True:
        status, body = server.raw("GET", f"/customvision/v3.3/training/projects/{project_id}/images"
                                         f"?take=256&skip={skip}", headers)
        assert status == 200, body
        page = json.loads(body)
        for i in page:
            images[i["sha256"]] = (tuple(sorted(t["tagName"] for t in i["tags"])), i["originalName"],
                                   i.get("metadata") or {})
        if len(page) < 256:
            break
        skip += 256
    return settings | {"description": project["description"]}, tags, images


@pytest.mark.parametrize("ctype", ["Multiclass", "Multilabel"])
def test_export_then_import_gives_an_identical_project(server, ctype):
    trainer = server.trainer()
    project = trainer.create_project(f"Stamps {ctype}", description="real pictures", classification_type=ctype)
    animal = trainer.create_tag(project.id, "animal", description="anything alive")
    food = trainer.create_tag(project.id, "food")
    nothing = trainer.create_tag(project.id, "Nothing", type="Negative")
    animals, foods = real_images(6)
    entries = [ImageFileCreateEntry(name=f"animal{i}.png", contents=d, tag_ids=[animal.id])
               for i, d in enumerate(animals[:4])]
    entries += [ImageFileCreateEntry(name=f"food{i}.png", contents=d, tag_ids=[food.id])
                for i, d in enumerate(foods[:4])]
    entries += [ImageFileCreateEntry(name="neg.png", contents=foods[4], tag_ids=[nothing.id]),
                ImageFileCreateEntry(name="loose.png", contents=animals[4])]
    if ctype == "Multilabel":
        entries.append(ImageFileCreateEntry(name="both.png", contents=animals[5], tag_ids=[animal.id, food.id]))
    created = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries))
    assert created.is_batch_successful
    ids = [r.image.id for r in created.images]
    trainer.update_image_metadata(project.id, ids[:2], {"camera": "north", "shift": "night"})
    trainer.update_image_metadata(project.id, ids[-1:], {"camera": "south"})

    export = trainer.export_project(project.id)
    assert (export.image_count, export.tag_count, export.iteration_count) == (len(entries), 3, 0)
    assert export.token and export.region_count == 0

    copy = trainer.import_project(export.token, name=f"Copy of {ctype}")
    assert copy.id != project.id and copy.name == f"Copy of {ctype}"
    assert copy.settings.classification_type == ctype
    original = snapshot(server, project.id)
    assert len(original[2]) == len(entries)
    assert sorted(tuple(sorted(m.items())) for *_, m in original[2].values() if m) == \
        [(("camera", "north"), ("shift", "night"))] * 2 + [(("camera", "south"),)]
    assert snapshot(server, copy.id) == original

    # a second import of the same token makes a second copy; without a name it is named after the original
    again = trainer.import_project(export.token)
    assert again.name == f"Stamps {ctype} (copy)" and snapshot(server, again.id) == original
    # the copies own their images: deleting the original leaves them whole
    trainer.delete_project(project.id)
    assert snapshot(server, copy.id)[2] == original[2]
    for p in (copy, again):
        trainer.delete_project(p.id)


def test_bad_tokens_and_foreign_workspaces_import_nothing(server):
    trainer = server.trainer()
    project = trainer.create_project("Exported")
    trainer.create_images_from_data(project.id, colour_images(1, RED, 9)[0])
    token = trainer.export_project(project.id).token
    before = {p.id for p in trainer.get_projects()}
    for bad in (token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), "not-a-token", "cvx1.e30.xyz"):
        status, code, _ = cv_error(trainer.import_project, bad, name="Stolen")
        assert (status, code) == (400, "BadRequestInvalidImportToken")
    status, code, _ = cv_error(trainer.import_project, token, name="Exported")
    assert (status, code) == (400, "BadRequestProjectNameNotUnique")
    assert cv_error(server.trainer(PREDICTION_KEY).export_project, project.id)[0] == 401

    # another workspace's key (generated by the CLI on the server's store, as an admin would)
    keys = subprocess.run([test_sdk_api.CVBOT, "keys", "--workspace", "T0OTHER", "--json"], env=server.env,
                          capture_output=True, text=True, timeout=120, check=True)
    other = server.trainer(json.loads(keys.stdout)["trainingKey"])
    assert cv_error(other.import_project, token, name="Stolen")[:2] == (400, "BadRequestInvalidImportToken")
    assert cv_error(other.export_project, project.id)[:2] == (404, "NotFound")
    assert other.get_projects() == [] and {p.id for p in trainer.get_projects()} == before
    trainer.delete_project(project.id)
