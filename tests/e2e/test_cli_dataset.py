"""`cvbot dataset export/import` and `cvbot project copy` as a user runs them: real processes, real files (Tux Paint
stamps where installed), real SQLite. Export → import must give back the same bytes, tags and settings."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from tests.e2e.test_cli import jrun, run
from tests.helpers import TUXPAINT, colour_images, env_with


def pictures(n: int) -> dict[str, list[bytes]]:
    cats = {}
    for name in ("animals", "food", "hobbies"):
        files = sorted((TUXPAINT / name).rglob("*.png"))[:n]
        cats[name] = [f.read_bytes() for f in files]
    if all(len(v) == n for v in cats.values()):
        return cats
    return {name: colour_images(n, rgb, seed) for name, rgb, seed in
            (("animals", (200, 30, 30), 1), ("food", (30, 200, 30), 2), ("hobbies", (30, 30, 200), 3))}


def contents(archive) -> tuple[dict, dict]:
    """(settings less the name, {sha256: (tags, original name, bytes' own sha256, folder, metadata)}) of a
    dataset zip."""
    with zipfile.ZipFile(archive) as zf:
        settings = json.loads(zf.read("settings.json"))
        settings["project"].pop("name")
        images = {}
        for line in zf.read("manifest.jsonl").decode().splitlines():
            e = json.loads(line)
            images[e["sha256"]] = (tuple(sorted(e["tags"])), e["originalName"],
                                   hashlib.sha256(zf.read(e["file"])).hexdigest(), e["file"].split("/")[0],
                                   tuple(sorted(e["metadata"].items())))
    return settings, images


def set_metadata(tmp_path, project: str, pairs: dict[str, str], count: int) -> None:
    """Metadata on `count` of the project's images, as update_image_metadata sets it (the CLI has no command)."""
    from core.model import DEFAULT_WORKSPACE
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    container = bootstrap(Settings.from_env(env_with(tmp_path)), recover=False)
    try:
        cv = container.usecases(Scope.of(DEFAULT_WORKSPACE))
        p = cv.projects.find(project)
        ids = [i.id for i in cv.images.list(p.id)][:count]
        assert all(r.status == "OK" for r in cv.images.update_metadata(p.id, ids, pairs))
    finally:
        container.close()


@pytest.mark.slow
@pytest.mark.parametrize("ctype", ["Multiclass", "Multilabel"])
def test_dataset_export_import_round_trip(tmp_path, ctype):
    pics = pictures(4)
    root = tmp_path / "photos"
    for folder, (cat, data) in {"Animals & Pets": ("animals", pics["animals"][:3]), "food": ("food", pics["food"][:3]),
                                "negative": ("hobbies", pics["hobbies"][:2])}.items():
        (root / folder).mkdir(parents=True)
        for i, d in enumerate(data):
            (root / folder / f"{cat}{i}.png").write_bytes(d)
    (root / "loose.png").write_bytes(pics["hobbies"][3])
    if ctype == "Multilabel":  # one picture in two folders: two tags
        (root / "food" / "both.png").write_bytes(pics["animals"][3])
        (root / "Animals & Pets" / "both.png").write_bytes(pics["animals"][3])
    run(tmp_path, "project", "create", "Stamps", "--type", ctype, "--description", "Tux Paint", "--domain", "Food")
    run(tmp_path, "project", "update", "Stamps", "--threshold", "0.65")
    run(tmp_path, "import", str(root), "--project", "Stamps")
    sources = {hashlib.sha256(f.read_bytes()).hexdigest() for f in root.rglob("*.png")}
    set_metadata(tmp_path, "Stamps", {"camera": "north", "note": "Tux Paint stamp"}, 3)

    out = tmp_path / "stamps.zip"
    done = run(tmp_path, "dataset", "export", "--project", "Stamps", "-o", str(out))
    assert f"to {out}" in done.stdout
    settings, images = contents(out)
    assert set(images) == sources and all(sha == own for sha, (_, _, own, _, _) in images.items())
    assert [v[4] for v in images.values() if v[4]] == [(("camera", "north"), ("note", "Tux Paint stamp"))] * 3
    assert settings["project"] == {"description": "Tux Paint", "domain": "Food", "classificationType": ctype,
                                   "threshold": 0.65}
    assert {(t["name"], t["type"]) for t in settings["tags"]} == {("Animals & Pets", "Regular"), ("food", "Regular"),
                                                                  ("Negative", "Negative")}
    folders = {v[3] for v in images.values()}
    if ctype == "Multiclass":
        assert folders == {"Animals _ Pets", "food", "negative", "untagged"}
    else:
        assert folders == {"images"}
        assert ("Animals & Pets", "food") in {v[0] for v in images.values()}

    back = jrun(tmp_path, "dataset", "import", str(out), "--project", "Stamps back")
    assert back["name"] == "Stamps back" and back["imageCount"] == len(sources)
    again = tmp_path / "again.zip"
    run(tmp_path, "dataset", "export", "--project", "Stamps back", "-o", str(again))
    assert contents(again) == (settings, images)
    tags = {t["name"]: (t["type"], t["imageCount"]) for t in jrun(tmp_path, "tags", "--project", "Stamps back")}
    assert tags == {t["name"]: (t["type"], t["imageCount"]) for t in jrun(tmp_path, "tags", "--project", "Stamps")}

    # the archive's own name is taken now: refused, nothing changes
    before = jrun(tmp_path, "project", "list")
    refused = run(tmp_path, "dataset", "import", str(out), ok=False)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert jrun(tmp_path, "project", "list") == before

    copied = run(tmp_path, "project", "copy", "Stamps", "Stamps copy")
    assert "copied 'Stamps' to 'Stamps copy'" in copied.stdout
    third = tmp_path / "copy.zip"
    run(tmp_path, "dataset", "export", "--project", "Stamps copy", "-o", str(third))
    assert contents(third) == (settings, images)


def test_dataset_import_refuses_an_archive_reaching_outside(tmp_path):
    run(tmp_path, "project", "create", "Small")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(colour_images(1, (10, 10, 10), 1)[0])
    run(tmp_path, "import", str(tmp_path / "one"), "--project", "Small")
    good = tmp_path / "small.zip"
    run(tmp_path, "dataset", "export", "--project", "Small", "-o", str(good))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr("../../outside.png", b"x")
    before = jrun(tmp_path, "project", "list")
    out = run(tmp_path, "dataset", "import", str(evil), "--project", "Evil", ok=False)
    assert out.returncode == 2 and "outside its root" in out.stderr
    assert jrun(tmp_path, "project", "list") == before
    missing = run(tmp_path, "dataset", "export", "--project", "Nope", "-o", str(tmp_path / "n.zip"), ok=False)
    assert missing.returncode == 2 and not (tmp_path / "n.zip").exists()
    assert not list(tmp_path.glob(".n.zip*"))
