"""The BlobStore contract, run against both real stores: the local directory and an S3 bucket on a real
S3-compatible server (SeaweedFS on loopback, tests/s3_server.py). Then the use cases that walk the store (start-up
recovery, `cvbot doctor`) on each, over a real SQLite database, and the composition root choosing S3."""
from __future__ import annotations

import hashlib
import io
import tracemalloc

import pytest

from core.model import Iteration, IterationStatus
from core.usecases import Deps, ImageUpload, Scope, UseCases, doctor, recover
from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory
from tests.fakes import FakeBackbones
from tests.helpers import png_bytes

MB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3 = request.getfixturevalue("s3_store")
    s3.multipart_threshold = s3.part_size = 5 * MB  # S3's smallest part: large blobs stay quick to test
    return s3


class Pattern(io.RawIOBase):
    """`size` bytes of a repeating 1 MiB pattern, produced as they are read (never held whole)."""

    block = hashlib.sha256(b"seed").digest() * (MB // 32)

    def __init__(self, size: int, tail: bytes = b""):
        self.size, self.pos, self.tail = size, 0, tail

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            out, self.tail = self.tail, b""
            return out
        offset = self.pos % MB
        n = min(MB if n is None or n < 0 else n, self.size - self.pos, MB - offset)
        self.pos += n
        return self.block[offset:offset + n]


def pattern_key(size: int) -> str:
    digest, stream = hashlib.sha256(), Pattern(size)
    while chunk := stream.read(MB):
        digest.update(chunk)
    return digest.hexdigest()


def make_partial(store) -> str:
    """What a crash mid-write leaves behind in `store`; its name as `partial_files` reports it."""
    if isinstance(store, LocalBlobStore):
        path = store.root / "ab" / "cd" / ".tmp-crashed"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half")
        return "ab/cd/.tmp-crashed"
    name = store._object("ab" * 32)
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=name)["UploadId"]
    store.client.upload_part(Bucket=store.bucket, Key=name, UploadId=upload, PartNumber=1, Body=b"half")
    return f"{name}?uploadId={upload}"


# ------------------------------------------------------------------ the port's contract
def test_put_get_exists_delete_keys(store):
    a, b = b"first blob", png_bytes(seed=3)
    ka = store.put(a)
    assert ka == hashlib.sha256(a).hexdigest()
    assert store.put(a) == ka  # idempotent: the same key, one blob
    kb = store.put(b)
    assert store.get(ka) == a and store.get(kb) == b
    assert store.exists(ka) and not store.exists("0" * 64)
    assert sorted(store.keys()) == sorted([ka, kb])
    with store.open(kb) as stream:
        assert stream.read() == b
    store.delete(ka)
    store.delete(ka)  # deleting what is gone is no error
    assert not store.exists(ka) and list(store.keys()) == [kb]
    with pytest.raises(KeyError):
        store.get(ka)
    with pytest.raises(KeyError):
        store.open(ka)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    assert store.age_seconds(kb) is not None and 0 <= store.age_seconds(kb) < 120
    assert store.age_seconds(ka) is None
    assert store.size(kb) == len(b)
    with pytest.raises(KeyError):
        store.size(ka)


def test_keys_page_through_many_blobs(store):
    if not isinstance(store, LocalBlobStore):
        store._page_size = 7  # several listing pages for a few blobs
    keys = {store.put(f"blob {i}".encode()) for i in range(23)}
    listed = list(store.keys())
    assert sorted(listed) == sorted(keys) and len(listed) == 23


def test_a_large_blob_streams_in_and_out_in_bounded_memory(store):
    size = 41 * MB + 12345  # 9 parts of S3's smallest size
    key = pattern_key(size)
    tracemalloc.start()
    try:
        assert store.put_stream(Pattern(size), key) == size
        digest, read = hashlib.sha256(), 0
        with store.open(key) as stream:
            while chunk := stream.read(MB):
                digest.update(chunk)
                read += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == key and read == size
    # a few parts at most (the S3 client signs a part's bytes, the part is joined from reads), never the blob
    assert peak < 25 * MB, f"streaming {size:,} bytes held {peak:,} bytes"
    assert list(store.keys()) == [key] and store.partial_files() == []
    assert store.put_stream(Pattern(size), key) == size  # stored already: checked, not written again


@pytest.mark.parametrize("size", [1000, 11 * MB])
def test_content_that_does_not_match_its_key_is_not_stored(store, size):
    key = pattern_key(size)
    with pytest.raises(ValueError, match="does not match"):
        store.put_stream(Pattern(size, tail=b"!"), key)
    assert not store.exists(key) and list(store.keys()) == [] and store.partial_files() == []


def test_partial_writes_are_listed_by_age_and_removed(store):
    name = make_partial(store)
    found = store.partial_files()
    assert [p.name for p in found] == [name] and found[0].size == 4
    assert store.partial_files(older_than=3600) == []
    store.delete_partial(name)
    assert store.partial_files() == [] and list(store.keys()) == []
    with pytest.raises(ValueError):
        store.delete_partial("not/a/partial")


def test_storing_known_content_again_makes_it_young(store):
    """What keeps a shared store's orphan collection from deleting a blob a writer just stored again."""
    import time

    key = store.put(b"seen before")
    time.sleep(2.1)
    before = store.age_seconds(key)
    store.put(b"seen before")
    if store.shared:
        assert store.age_seconds(key) < before - 1
    assert store.get(key) == b"seen before"


# ------------------------------------------------------------------ the use cases that walk the store
@pytest.fixture
def cv(store, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'cvbot.db'}")
    migrate(engine)
    return UseCases(Deps(unit_of_work_factory(engine), store, FakeBackbones()), Scope.of("default"))  # type: ignore[arg-type]


def _project(cv):
    p = cv.projects.create("walk")
    tag = cv.tags.create(p.id, "t")
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png", [tag.id]) for i in range(3)])
    return p


def test_start_up_recovery_collects_orphans_as_the_store_allows(cv):
    p = _project(cv)
    orphan = cv.deps.blobs.put(b"nobody's")
    report = recover(cv.deps, clean_blobs=True)
    if cv.deps.blobs.shared:  # another machine may be about to commit a row naming it: kept until an hour old
        assert report["orphan_blobs_deleted"] == 0 and cv.deps.blobs.exists(orphan)
    else:
        assert report["orphan_blobs_deleted"] == 1 and not cv.deps.blobs.exists(orphan)
    assert all(cv.deps.blobs.exists(i.sha256) for i in cv.images.list(p.id))
    cv.deps.blobs.delete(cv.images.list(p.id)[0].sha256)
    assert recover(cv.deps, clean_blobs=False)["missing_files"] == 1


def test_doctor_checks_and_repairs_the_store(cv):
    p = _project(cv)
    deps = cv.deps
    it = Iteration(project_id=p.id, number=1, name="Iteration 1", domain=p.domain, backbone_id="b",
                   classification_type=p.classification_type, status=IterationStatus.Completed,
                   probe_key=deps.blobs.put(b"probe"), evaluation_key=deps.blobs.put(b"evaluation"))
    with deps.uow() as uow:
        uow.iterations.add(it)
        uow.commit()
    assert doctor(deps, exclusive=True, partial_age=0).ok

    orphan = deps.blobs.put(b"orphan")
    deps.blobs.delete(it.probe_key)
    partial = make_partial(deps.blobs)
    report = doctor(deps, exclusive=True, partial_age=0)
    assert {c.name: c.problems for c in report.checks if c.problems} == {
        "broken_iterations": 1, "orphan_blobs": 1, "partial_files": 1}
    assert orphan in report.check("orphan_blobs").details[0] and partial in report.check("partial_files").details[0]

    if deps.blobs.shared:  # at the default age an orphan written just now is someone's write in progress
        young = doctor(deps, exclusive=True)
        assert young.check("orphan_blobs").problems == 0 and "left alone" in young.check("orphan_blobs").note
    repaired = doctor(deps, repair=True, exclusive=True, partial_age=0)
    assert repaired.ok and repaired.check("orphan_blobs").repaired == 1
    assert not deps.blobs.exists(orphan) and deps.blobs.partial_files() == []
    assert all(deps.blobs.exists(i.sha256) for i in cv.images.list(p.id))
    assert doctor(deps, exclusive=True, partial_age=0).ok


# ------------------------------------------------------------------ the composition root
def test_bootstrap_keeps_blobs_in_the_bucket_cvbot_blob_url_names(tmp_path, s3_endpoint):
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from storage.s3blobs import S3BlobStore

    env = {"CVBOT_DATA_DIR": str(tmp_path / "data"), **s3_endpoint.env(prefix="boot")}
    settings = Settings.from_env(env)
    assert s3_endpoint.secret_key not in repr(settings) and s3_endpoint.access_key not in repr(settings)
    container = bootstrap(settings, recover=True)
    try:
        assert isinstance(container.deps.blobs, S3BlobStore)
        cv = container.usecases(Scope.of("default"))
        p = cv.projects.create("on s3")
        tag = cv.tags.create(p.id, "t")
        cv.images.add(p.id, [ImageUpload(png_bytes(seed=5), "5.png", [tag.id])])
        sha = cv.images.list(p.id)[0].sha256
    finally:
        container.close()
    listed = s3_endpoint.client().list_objects_v2(Bucket=s3_endpoint.bucket, Prefix="boot/")
    assert [o["Key"] for o in listed["Contents"]] == [f"boot/{sha[:2]}/{sha[2:4]}/{sha}"]
    assert not (tmp_path / "data" / "blobs").exists()


@pytest.mark.parametrize("change, message", [
    ({"CVBOT_BLOB_URL": "s3://no-such-bucket-here/x"}, "does not exist"),
    ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "refused the credentials"),
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach"),
])
def test_an_unusable_bucket_stops_the_start_with_what_to_change(tmp_path, s3_endpoint, change, message):
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from storage.s3blobs import BlobStoreUnavailable

    env = {"CVBOT_DATA_DIR": str(tmp_path / "data"), **s3_endpoint.env(), **change}
    with pytest.raises(BlobStoreUnavailable, match=message) as e:
        bootstrap(Settings.from_env(env), recover=True)
    assert s3_endpoint.secret_key not in e.value.message


@pytest.mark.parametrize("url", ["s3:/bucket", "http://bucket/x", "s3://", "s3://Bad_Bucket", "s3://bucket//x", "s3://ab"])
def test_a_malformed_blob_url_is_refused(url):
    from cvbot.config import Settings

    with pytest.raises(ValueError, match="CVBOT_BLOB_URL"):
        Settings.from_env({"CVBOT_BLOB_URL": url})
