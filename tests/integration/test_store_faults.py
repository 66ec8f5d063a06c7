"""Hard faults of the store (issue #13): a full disk, partial blob files left by a crash, iteration numbers after a
deletion; on the real blob store and on SQLite and PostgreSQL."""
import asyncio
import errno
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from core import errors
from core.model import Iteration, IterationStatus
from core.usecases import Scope, UseCases, recover
from storage import LocalBlobStore
from tests.conftest import make_deps
from tests.fakes import FakeBackbones
from tests.helpers import png_bytes


def _cv(tmp_path, database_url=None):
    return UseCases(make_deps(tmp_path, FakeBackbones(), database_url=database_url), Scope.of("default"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return None


# ------------------------------------------------------------------ item 6: partial blob files
def _partial(store: LocalBlobStore, age_s: float, name: str = ".tmp-abc123") -> Path:
    folder = store.root / "ab" / "cd"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half a blob")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_partial_files_are_listed_and_only_stale_ones_removed_at_recovery(tmp_path):
    cv = _cv(tmp_path)
    store = cv.deps.blobs
    stale = _partial(store, age_s=2 * 3600, name=".tmp-stale")
    fresh = _partial(store, age_s=5, name=".tmp-fresh")  # a writer may be busy with this one
    assert sorted(Path(p.name).name for p in store.partial_files()) == [".tmp-fresh", ".tmp-stale"]
    assert [Path(p.name).name for p in store.partial_files(older_than=3600)] == [".tmp-stale"]
    report = recover(cv.deps)
    assert report["stale_partial_files_deleted"] == 1
    assert not stale.exists() and fresh.exists()


# ------------------------------------------------------------------ item 7: a full disk
def _raise_enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_raises_storage_full_logged_once_and_leaves_no_temp_file(tmp_path, monkeypatch, caplog):
    store = LocalBlobStore(tmp_path / "blobs")
    monkeypatch.setattr("storage.blobs.os.fsync", _raise_enospc)
    with caplog.at_level(logging.ERROR), pytest.raises(errors.StorageFull) as e:
        store.put(b"x" * 1000)
    assert e.value.http_status == 507 and e.value.code == "ErrorStorageFull"
    assert "no space left" in e.value.message.lower()
    assert [r.levelname for r in caplog.records if "space" in r.getMessage().lower()] == ["ERROR"]
    assert list(store.partial_files()) == [] and list(store.keys()) == []


def test_a_quota_exceeded_is_storage_full_too(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path / "blobs")

    def edquot(*_a, **_k):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr("storage.blobs.os.fsync", edquot)
    with pytest.raises(errors.StorageFull):
        store.put(b"y" * 10)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_filesystem_is_storage_full(tiny_tmpfs):
    store = LocalBlobStore(tiny_tmpfs / "blobs")
    small = store.put(b"fits")
    with pytest.raises(errors.StorageFull):
        store.put(os.urandom(1024 * 1024))
    assert list(store.keys()) == [small] and list(store.partial_files()) == []


def test_a_full_sqlite_database_is_storage_full(tmp_path):
    from sqlalchemy import event

    from storage import make_engine, unit_of_work_factory

    cv = _cv(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'cvbot.db'}")

    @event.listens_for(engine, "connect")
    def _no_growth(dbapi_conn, _):  # the file may not grow: SQLite answers SQLITE_FULL, as on a full disk
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA max_page_count = {cur.execute('PRAGMA page_count').fetchone()[0]}")
        cur.close()

    cv.deps.uow = unit_of_work_factory(engine)
    created = 0
    with pytest.raises(errors.StorageFull) as e:
        for n in range(1000):
            cv.projects.create(f"grow {n}", description="d" * 3000)
            created += 1
    assert e.value.http_status == 507 and "no space left" in e.value.message
    assert len(_cv(tmp_path).projects.list()) == created  # the refused one left nothing behind


def test_the_api_answers_507_with_its_code_when_the_disk_is_full(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from cvbot.server import build_app

    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp_path / "data"), "CVBOT_TRAINING_KEY": "k" * 32})
    container = bootstrap(settings)
    container.deps.backbones = FakeBackbones()
    cv = container.usecases(Scope.of("default"))
    p = cv.projects.create("api")
    monkeypatch.setattr("storage.blobs.os.fsync", _raise_enospc)

    async def go():
        async with TestClient(TestServer(build_app(container))) as client:
            r = await client.post(f"/customvision/v3.4-preview/training/projects/{p.id}/images",
                                  data=png_bytes(), headers={"Training-Key": "k" * 32,
                                                             "Content-Type": "application/octet-stream"})
            return r.status, await r.json()

    status, body = asyncio.run(go())
    assert status == 507, body
    assert body["code"] == "ErrorStorageFull" and "space" in body["message"].lower()
    assert cv.images.count(p.id) == 0


# ------------------------------------------------------------------ item 9: iteration numbers
def test_iteration_numbers_are_never_reused_after_a_deletion(tmp_path, database_url):
    cv = _cv(tmp_path, database_url)
    p = cv.projects.create("numbers")
    made = []
    for _ in range(3):
        with cv.deps.uow() as uow:
            n = uow.iterations.next_number(p.id)
            it = Iteration(project_id=p.id, number=n, name=f"Iteration {n}", domain=p.domain,
                           classification_type=p.classification_type, backbone_id="b", status=IterationStatus.Completed)
            uow.iterations.add(it)
            uow.commit()
        made.append(it)
    cv.iterations.delete(p.id, made[-1].id)
    with cv.deps.uow() as uow:
        assert uow.iterations.next_number(p.id) == 4


# ------------------------------------------------------------------ cvbot doctor on the real store
def test_doctor_finds_and_repairs_damage_on_each_database(tmp_path, database_url):
    import numpy as np

    from core.model import Export, ExportStatus
    from core.usecases import ImageUpload, doctor

    cv = _cv(tmp_path, database_url)
    deps = cv.deps
    p = cv.projects.create("doctor")
    tag = cv.tags.create(p.id, "t")
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png", [tag.id]) for i in range(2)])
    it = Iteration(project_id=p.id, number=1, name="Iteration 1", domain=p.domain, backbone_id="b",
                   classification_type=p.classification_type, status=IterationStatus.Completed,
                   probe_key=deps.blobs.put(b"probe"), evaluation_key=deps.blobs.put(b"evaluation"))
    with deps.uow() as uow:
        uow.iterations.add(it)
        uow.exports.add(Export(iteration_id=it.id, platform="ONNX", status=ExportStatus.Done,
                               blob_key=deps.blobs.put(b"zip")))
        uow.commit()
    assert doctor(deps).ok

    with deps.uow() as uow:
        uow.embeddings.put_many("b", {"e" * 64: np.ones(3, np.float32)})
        uow.commit()

    deps.blobs.delete(it.probe_key)
    orphan = deps.blobs.put(b"orphan")
    stale = _partial(deps.blobs, age_s=2 * 3600)
    report = doctor(deps)
    assert {c.name: c.problems for c in report.checks if c.problems} == {
        "broken_iterations": 1, "orphan_blobs": 1, "partial_files": 1, "orphan_embeddings": 1}
    assert doctor(deps, repair=True, exclusive=True).ok
    assert doctor(deps, exclusive=True).ok
    assert not deps.blobs.exists(orphan) and not stale.exists()
    assert cv.iterations.get(p.id, it.id).status == IterationStatus.Failed
