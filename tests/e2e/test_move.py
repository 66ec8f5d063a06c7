"""`cvbot move`: a single-machine install (SQLite + ./data) moved to PostgreSQL + an S3 bucket (a real SeaweedFS
on loopback) serves the same predictions and images through the use cases, with every count checked; the source
is left as it was, a non-empty target is refused, an interrupted move continues, and a blob whose content does not
match its key stops the move before any row is written."""
from __future__ import annotations

import json
import uuid

import pytest

from core.usecases import Deps, ImageUpload, Scope, UseCases
from cvbot.cli import main
from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory
from storage.move import row_counts
from tests.fakes import FakeBackbones
from tests.helpers import missing_debian_data, png_bytes, tuxpaint_categories

pytestmark = pytest.mark.slow


def _source(tmp_path, backbones):
    """The use cases of a single-machine install in `tmp_path` (as CVBOT_DATA_DIR=tmp_path lays it out)."""
    engine = make_engine(f"sqlite:///{(tmp_path / 'cvbot.db').resolve()}")
    migrate(engine)
    return UseCases(Deps(unit_of_work_factory(engine), LocalBlobStore(tmp_path / "blobs"), backbones),
                    Scope.of("default"))


def _move(monkeypatch, capsys, data_dir, database, blobs, env=None) -> tuple[int, dict]:
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CVBOT_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CVBOT_BLOB_URL", raising=False)
    capsys.readouterr()
    code = main(["move", "--to-database", database, "--to-blobs", blobs, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _s3_env(endpoint) -> dict:
    env = endpoint.env()
    env.pop("CVBOT_BLOB_URL")
    return env


def test_a_moved_install_serves_the_same_predictions_and_images(tmp_path, provider, postgres_url, s3_endpoint,
                                                               monkeypatch, capsys):
    cats = tuxpaint_categories(min_images=12)
    if len(cats) < 2:
        pytest.skip(missing_debian_data("tuxpaint-stamps-default"))
    src = _source(tmp_path, provider)
    p = src.projects.create("birds")
    names = list(cats)[:2]
    tags = [src.tags.create(p.id, n) for n in names]
    uploads = [ImageUpload(f.read_bytes(), f.name, [t.id], metadata={"from": n})
               for t, n in zip(tags, names, strict=True) for f in cats[n][:8]]
    src.images.add(p.id, uploads)
    it = src.training.train(p.id)
    it = src.training.wait(p.id, it.id, timeout=300)
    probe_images = [cats[n][10].read_bytes() for n in names]
    stored = [src.predictions.predict(p.id, data) for data in probe_images]
    before = row_counts(make_engine(f"sqlite:///{(tmp_path / 'cvbot.db').resolve()}"))
    source_blobs = sorted(LocalBlobStore(tmp_path / "blobs").keys())

    prefix = f"moved-{uuid.uuid4().hex[:8]}"
    code, report = _move(monkeypatch, capsys, tmp_path, postgres_url, f"s3://{s3_endpoint.bucket}/{prefix}",
                         _s3_env(s3_endpoint))
    assert code == 0 and report["ok"], report
    assert report["tables"]["images"] == {"source": 16, "target": 16}
    assert report["tables"]["predictions"] == {"source": 2, "target": 2}
    assert report["blobCount"]["source"] == report["blobCount"]["target"] == report["blobCount"]["copied"] > 16
    assert report["blobBytes"]["source"] == report["blobBytes"]["target"] > 0

    # the source is as it was
    assert row_counts(make_engine(f"sqlite:///{(tmp_path / 'cvbot.db').resolve()}")) == before
    assert sorted(LocalBlobStore(tmp_path / "blobs").keys()) == source_blobs

    # the moved install, through the composition root as `cvbot serve` would build it
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path / "new"), "DATABASE_URL": postgres_url,
                                  **s3_endpoint.env(prefix=prefix)})
    container = bootstrap(settings, recover=True)
    try:
        container.deps.backbones = provider
        moved = container.usecases(Scope.of("default"))
        q = moved.projects.get(p.id)
        assert q.default_iteration_id == it.id
        assert moved.iterations.performance(p.id, it.id) == src.iterations.performance(p.id, it.id)
        for img in src.images.list(p.id):
            assert moved.images.data(p.id, img.id) == src.images.data(p.id, img.id)
        assert {i.id: i.metadata for i in moved.images.list(p.id)} == {i.id: i.metadata for i in src.images.list(p.id)}
        for data, old in zip(probe_images, stored, strict=True):
            new = moved.predictions.predict(p.id, data, store=False)
            assert [(t.tag_id, round(t.probability, 5)) for t in new.predictions] == \
                   [(t.tag_id, round(t.probability, 5)) for t in old.predictions]
            assert moved.predictions.image_data(p.id, old.id) == data
        assert moved.training.train(p.id, force=True)  # the moved store trains (embeddings came along)
    finally:
        container.close()

    # the target is now in use: a second move into it is refused and changes nothing
    code, again = _move(monkeypatch, capsys, tmp_path, postgres_url, f"s3://{s3_endpoint.bucket}/{prefix}",
                        _s3_env(s3_endpoint))
    assert code == 2 and "not empty" in again["message"]


def _small_source(tmp_path):
    src = _source(tmp_path, FakeBackbones())
    p = src.projects.create("small")
    tag = src.tags.create(p.id, "t")
    src.images.add(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png", [tag.id]) for i in range(6)])
    return src, p


def test_an_interrupted_move_continues_and_a_corrupt_blob_stops_it(tmp_path, s3_endpoint, monkeypatch, capsys):
    from storage.s3blobs import S3BlobStore

    src, p = _small_source(tmp_path)
    images = src.images.list(p.id)
    local = LocalBlobStore(tmp_path / "blobs")
    prefix = f"resume-{uuid.uuid4().hex[:8]}"
    target = S3BlobStore(f"s3://{s3_endpoint.bucket}/{prefix}", client=s3_endpoint.client())

    # a corrupt file in the source: nothing is written to the target database, and the move says why
    good = local.get(images[0].sha256)
    local._path(images[0].sha256).write_bytes(b"bit rot")
    code, report = _move(monkeypatch, capsys, tmp_path, f"sqlite:///{tmp_path / 'target.db'}",
                         f"s3://{s3_endpoint.bucket}/{prefix}", _s3_env(s3_endpoint))
    assert code == 1 and not report["ok"]
    assert [f.split(":")[0] for f in report["failures"]] == [images[0].sha256]
    assert sum(row_counts(make_engine(f"sqlite:///{tmp_path / 'target.db'}")).values()) == 0
    assert not target.exists(images[0].sha256) and len(list(target.keys())) == 5  # the sound ones, checked

    # repaired, the same command continues: the blobs already there are not copied again
    local._path(images[0].sha256).write_bytes(good)
    code, report = _move(monkeypatch, capsys, tmp_path, f"sqlite:///{tmp_path / 'target.db'}",
                         f"s3://{s3_endpoint.bucket}/{prefix}", _s3_env(s3_endpoint))
    assert code == 0 and report["ok"], report
    assert report["blobCount"] == {"source": 6, "target": 6, "copied": 1, "alreadyThere": 5}
    assert report["tables"]["images"] == {"source": 6, "target": 6}


def test_move_refuses_its_own_store_and_a_busy_source(tmp_path, monkeypatch, capsys):
    _small_source(tmp_path)
    code, report = _move(monkeypatch, capsys, tmp_path, f"sqlite:///{(tmp_path / 'cvbot.db').resolve()}",
                         str(tmp_path / "elsewhere"))
    assert code == 2 and "own database" in report["message"]
    from storage import StoreLock

    server = StoreLock(tmp_path)  # what a running `cvbot serve` holds
    server.share()
    try:
        code, report = _move(monkeypatch, capsys, tmp_path, f"sqlite:///{tmp_path / 'new.db'}",
                             str(tmp_path / "elsewhere"))
    finally:
        server.release()
    assert code == 2 and report["code"] == "StoreBusy"
    code, report = _move(monkeypatch, capsys, tmp_path, f"sqlite:///{tmp_path / 'new.db'}", str(tmp_path / "moved"))
    assert code == 0 and report["blobCount"]["target"] == 6
    assert sorted(LocalBlobStore(tmp_path / "moved").keys()) == sorted(LocalBlobStore(tmp_path / "blobs").keys())
