"""Suggested tags through the official Azure SDK (suggest_tags_and_regions, query_suggested_images,
query_suggested_image_count) against a real `cvbot serve`, and `cvbot suggest` / `cvbot audit` on the same store."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_sdk_api import (  # noqa: F401 - image_host and server are fixtures
    BLUE,
    CVBOT,
    RED,
    cv_error,
    image_host,
    server,
    wait_trained,
)
from tests.helpers import colour_images

sdk = pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    SuggestedTagAndRegionQueryToken,
)


@pytest.fixture(scope="module")
def trained(server):  # noqa: F811
    t = server.trainer()
    p = t.create_project("suggestions")
    red, blue = t.create_tag(p.id, "red"), t.create_tag(p.id, "blue")
    entries = [ImageFileCreateEntry(name=f"r{i}.png", contents=d, tag_ids=[red.id])
               for i, d in enumerate(colour_images(6, RED, 81))]
    entries += [ImageFileCreateEntry(name=f"b{i}.png", contents=d, tag_ids=[blue.id])
                for i, d in enumerate(colour_images(5, BLUE, 82))]
    entries += [ImageFileCreateEntry(name="oops.png", contents=colour_images(1, RED, 83)[0], tag_ids=[blue.id])]
    entries += [ImageFileCreateEntry(name=f"u-red{i}.png", contents=d) for i, d in enumerate(colour_images(2, RED, 84))]
    entries += [ImageFileCreateEntry(name="u-blue.png", contents=colour_images(1, BLUE, 85)[0])]
    created = t.create_images_from_files(p.id, ImageFileCreateBatch(images=entries))
    assert created.is_batch_successful
    it = wait_trained(t, p.id, t.train_project(p.id))
    assert it.status == "Completed"
    untagged = {i.id for i in t.get_untagged_images(p.id)}
    return t, p, red, blue, it, untagged


def test_suggest_tags_for_untagged_images(trained):
    t, p, red, blue, it, untagged = trained
    assert len(untagged) == 3
    found = t.suggest_tags_and_regions(p.id, it.id, list(untagged))
    assert {s.id for s in found} == untagged
    best = sorted(s.predictions[0].tag_name for s in found)
    assert best == ["blue", "red", "red"]
    for s in found:
        assert s.iteration == it.id and s.project == p.id and s.prediction_uncertainty >= 0
        assert abs(sum(x.probability for x in s.predictions) - 1) < 1e-4
        assert s.predictions[0].probability >= s.predictions[1].probability


def test_query_suggested_images_pages_and_filters(trained):
    t, p, red, blue, it, untagged = trained
    first = t.query_suggested_images(p.id, it.id, SuggestedTagAndRegionQueryToken(
        tag_ids=[red.id], threshold=0.5, max_count=1))
    assert len(first.results) == 1 and first.token.continuation == "1"
    hit = first.results[0]
    assert hit.predictions[0].tag_id == red.id and hit.thumbnail_uri and hit.width > 0 and hit.domain
    second = t.query_suggested_images(p.id, it.id, SuggestedTagAndRegionQueryToken(
        tag_ids=[red.id], threshold=0.5, max_count=1, continuation=first.token.continuation))
    assert len(second.results) == 1 and second.token.continuation is None
    assert {first.results[0].id, second.results[0].id} < untagged
    everything = t.query_suggested_images(p.id, it.id, SuggestedTagAndRegionQueryToken(
        sort_by="UncertaintyDescending"))
    unc = [r.prediction_uncertainty for r in everything.results]
    assert {r.id for r in everything.results} == untagged and unc == sorted(unc, reverse=True)


def test_query_suggested_image_count_and_errors(trained, server):  # noqa: F811
    t, p, red, blue, it, untagged = trained
    counts = t.query_suggested_image_count(p.id, it.id, tag_ids=[red.id, blue.id], threshold=0.5)
    assert counts == {red.id: 2, blue.id: 1}
    assert sum(t.query_suggested_image_count(p.id, it.id, threshold=0.0).values()) == 6  # every tag, every image
    status, code, _ = cv_error(t.suggest_tags_and_regions, p.id, "00000000-0000-0000-0000-000000000000",
                               list(untagged))
    assert status == 404
    status, code, _ = cv_error(server.trainer(key="wrong").query_suggested_image_count, p.id, it.id)
    assert status == 401


def test_cli_suggest_and_audit_on_the_same_store(trained, server):  # noqa: F811
    t, p, red, blue, it, untagged = trained
    run = subprocess.run([CVBOT, "suggest", "--project", "suggestions", "--json"], env=server.env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert {r["imageId"] for r in rows} == untagged
    assert sorted(r["suggestedTagName"] for r in rows) == ["blue", "red", "red"]
    run = subprocess.run([CVBOT, "audit", "--project", "suggestions", "--json"], env=server.env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    audit = json.loads(run.stdout)
    assert audit[0]["originalName"] == "oops.png" and audit[0]["tagNames"] == ["blue"]
    assert audit[0]["suggestedTagNames"] == ["red"] and audit[0]["score"] > 0.5
    run = subprocess.run([CVBOT, "audit", "--project", "suggestions", "--keep", audit[0]["imageId"]], env=server.env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([CVBOT, "audit", "--project", "suggestions", "--json"], env=server.env,
                         capture_output=True, text=True, timeout=120)
    assert audit[0]["imageId"] not in {r["imageId"] for r in json.loads(run.stdout)}
    run = subprocess.run([CVBOT, "untagged", "--project", "suggestions", "--json"], env=server.env,
                         capture_output=True, text=True, timeout=120)
    assert {r["id"] for r in json.loads(run.stdout)} == untagged
