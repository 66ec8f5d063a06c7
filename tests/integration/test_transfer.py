"""Project copies, export tokens and dataset archives over the real use cases (SQLite, local blobs)."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from core import errors
from core.model import TagType
from core.usecases import ArchiveTooLarge, ImageUpload, Scope, UseCases
from tests.conftest import make_cv
from tests.helpers import colour_images, jpeg_bytes, png_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def cv(request, tmp_path, provider):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return make_cv(tmp_path, provider, database_url=url)


def filled(cv, ctype="Multiclass"):
    p = cv.projects.create("Pets", "Food", ctype, "my pets")
    cv.projects.update(p.id, threshold=0.7)
    cat = cv.tags.create(p.id, "Cat/Kitten", description="small ones")
    dog = cv.tags.create(p.id, "dog")
    neg = cv.tags.create(p.id, "Nothing", TagType.Negative)
    imgs = colour_images(6, (200, 40, 40), 3)
    ups = [ImageUpload(imgs[0], "a.png", [cat.id]), ImageUpload(imgs[1], "dir/b.png", [cat.id]),
           ImageUpload(imgs[2], "c.png", [dog.id]), ImageUpload(jpeg_bytes(seed=4), "d.jpg", [neg.id]),
           ImageUpload(imgs[4], "e.png", [])]
    if ctype == "Multilabel":
        ups.append(ImageUpload(imgs[5], "f.png", [cat.id, dog.id]))
    assert all(r.ok for r in cv.images.add(p.id, ups, source="test"))
    ids = [i.id for i in cv.images.list(p.id)]
    cv.images.update_metadata(p.id, ids[:2], {"camera": "north", "lens": "50mm"})
    return cv.projects.get(p.id)


def state(cv, project_id):
    """Everything a copy must keep: settings, tags, and each image's content, tags and names."""
    p = cv.projects.get(project_id)
    tags = cv.tags.list(project_id)
    names = {t.id: t.name for t in tags}
    return ({"domain": p.domain, "type": p.classification_type, "description": p.description,
             "threshold": p.threshold},
            sorted((t.name, t.type, t.description, t.image_count) for t in tags),
            sorted((i.sha256, tuple(sorted(names[t] for t in i.tag_ids)), i.original_name, i.width, i.height,
                    tuple(sorted(i.metadata.items()))) for i in cv.images.list(project_id)))


def test_copy_is_complete_and_shares_the_blobs(cv):
    p = filled(cv)
    copy = cv.transfer.copy(p.id, "Pets 2")
    assert copy.id != p.id and copy.name == "Pets 2"
    assert state(cv, copy.id) == state(cv, p.id)
    with pytest.raises(errors.Conflict):
        cv.transfer.copy(p.id, "pets 2")
    assert cv.transfer.copy(p.id).name == "Pets (copy)" and cv.transfer.copy(p.id).name == "Pets (copy 2)"
    cv.projects.delete(p.id)  # the copies keep their images
    assert all(cv.deps.blobs.exists(i.sha256) for i in cv.images.list(copy.id))
    assert len(cv.images.list(copy.id)) == 5


def test_export_token_imports_once_per_call_only_in_its_workspace(tmp_path, cv):
    p = filled(cv)
    export = cv.transfer.export(p.id)
    assert (export.image_count, export.tag_count, export.iteration_count) == (5, 3, 0)
    copy = cv.transfer.import_token(export.token, "Imported")
    assert state(cv, copy.id) == state(cv, p.id)
    other = UseCases(cv.deps, Scope.of("T-OTHER"))
    before = len(cv.projects.list())
    for bad in [export.token[:-2] + ("AA" if not export.token.endswith("AA") else "BB"), "nonsense", "",
                "cvx1.e30.AAAA", export.token.replace("cvx1", "cvx2")]:
        with pytest.raises(errors.InvalidInput) as e:
            cv.transfer.import_token(bad, "x")
        assert e.value.code == "BadRequestInvalidImportToken"
    with pytest.raises(errors.InvalidInput):
        other.transfer.import_token(export.token, "stolen")
    with pytest.raises(errors.InvalidInput, match="expired"):
        cv.transfer.import_token(export.token, "late", now=export.expires_at + 1)
    with pytest.raises(errors.Forbidden):
        UseCases(cv.deps, Scope.of("default", "prediction")).transfer.export(p.id)
    cv.channels.keys(regenerate=True)  # new keys revoke the tokens handed out before
    with pytest.raises(errors.InvalidInput):
        cv.transfer.import_token(export.token, "revoked")
    assert len(cv.projects.list()) == before and other.projects.list() == []


@pytest.mark.parametrize("ctype", ["Multiclass", "Multilabel"])
def test_dataset_archive_round_trip(cv, ctype):
    p = filled(cv, ctype)
    buf = io.BytesIO()
    summary = cv.transfer.export_dataset(p.id, buf)
    assert summary.images == len(cv.images.list(p.id))
    names = zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist()
    folders = {n.split("/")[0] for n in names if "/" in n}
    if ctype == "Multiclass":
        assert folders == {"Cat_Kitten", "dog", "negative", "untagged"}
    else:
        assert folders == {"images"}
    assert {"settings.json", "manifest.jsonl"} <= set(names)
    back = cv.transfer.import_dataset(io.BytesIO(buf.getvalue()), "Pets again").project
    assert state(cv, back.id) == state(cv, p.id)


def _rewrite(data: bytes, change) -> bytes:
    """The archive with its members passed through `change(name, bytes) -> [(name, bytes)]`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            for name, body in change(info.filename, src.read(info)):
                dst.writestr(name, body)
    return out.getvalue()


def test_a_bad_archive_changes_nothing(cv):
    p = filled(cv)
    buf = io.BytesIO()
    cv.transfer.export_dataset(p.id, buf)
    good = buf.getvalue()
    blobs_before = set(cv.deps.blobs.keys())
    projects_before = len(cv.projects.list())
    fresh = png_bytes(seed=99)

    def manifest(edit):
        def change(name, body):
            if name != "manifest.jsonl":
                return [(name, body)]
            lines = [json.loads(x) for x in body.decode().splitlines()]
            return [(name, "".join(json.dumps(x) + "\n" for x in edit(lines)).encode())]
        return change

    def first(edit):
        return manifest(lambda lines: [edit(lines[0]), *lines[1:]])

    def added(*lines: dict):  # new.png and new2.png in the archive, `lines` last in the manifest
        extra = "".join(json.dumps(x) + "\n" for x in lines).encode()
        return lambda n, b: [(n, b + extra)] if n == "manifest.jsonl" else \
            [(n, b), *([("new.png", fresh), ("new2.png", png_bytes(seed=98))] if n == "settings.json" else [])]

    cases = {
        "outside its root": _rewrite(good, lambda n, b: [(n, b), *([("../evil.png", fresh)] if n == "settings.json"
                                                                  else [])]),
        "../x.png": _rewrite(good, first(lambda x: x | {"file": "../x.png"})),
        # every other image is stored (its blob written) before this one fails: they must go again
        "sha256 is not the manifest's": _rewrite(good, added(
            {"file": "new.png", "sha256": hashlib.sha256(fresh).hexdigest(), "tags": ["dog"]},
            {"file": "new2.png", "sha256": "0" * 64, "tags": []})),
        "not in settings": _rewrite(good, first(lambda x: x | {"tags": ["wolf"]})),
        "Negative": _rewrite(good, first(lambda x: x | {"tags": ["Nothing", "dog"]})),
        "not in the archive": _rewrite(good, first(lambda x: x | {"file": "cat/missing.png"})),
        "same image twice": _rewrite(good, manifest(lambda lines: [*lines, lines[0]])),
        "metadata pairs": _rewrite(good, first(lambda x: x | {"metadata": {f"k{n}": "v" for n in range(11)}})),
        "no settings.json": _rewrite(good, lambda n, b: [] if n == "settings.json" else [(n, b)]),
        "not a zip": b"PK\x03\x04 nothing",
    }
    for what, data in cases.items():
        with pytest.raises(errors.InvalidInput) as e:
            cv.transfer.import_dataset(io.BytesIO(data), "Broken")
        assert what in e.value.message, (what, e.value.message)
        assert len(cv.projects.list()) == projects_before and set(cv.deps.blobs.keys()) == blobs_before, what
    with pytest.raises(errors.Conflict):
        cv.transfer.import_dataset(io.BytesIO(good), "pets")
    assert len(cv.projects.list()) == projects_before and set(cv.deps.blobs.keys()) == blobs_before


def test_export_stops_past_the_size_limit(cv):
    p = filled(cv)
    with pytest.raises(ArchiveTooLarge):
        cv.transfer.export_dataset(p.id, io.BytesIO(), max_bytes=100)
