"""Dataset archive rules: safe folder and file names, the manifest's checks, the settings file."""
from __future__ import annotations

import json

import pytest

from core import archive, errors
from core.model import ClassificationType, Tag, TagType


def tag(name, type=TagType.Regular, id=None):
    return Tag(project_id="p", name=name, type=type, id=id or f"id-{name}")


@pytest.mark.parametrize("name, folder", [
    ("cat", "cat"), ("Big Cats", "Big Cats"), ("a/b\\c", "a_b_c"), ("../../etc", "_.._etc"), ("  .hidden. ", "hidden"),
    ("CON", "tag_CON"), ("nul.txt", "tag_nul.txt"), ("", "tag"), ("...", "tag"), ("chat é", "chat é"),
    ("x" * 200, "x" * 64), ("a:b*c?d", "a_b_c_d"),
])
def test_safe_folder_names(name, folder):
    assert archive.safe_name(name, "tag", archive.MAX_FOLDER) == folder


def test_tag_folders_are_unique_ignoring_case_and_never_reserved():
    tags = [tag("Cat"), tag("cat?"), tag("cat!"), tag("untagged"), tag("images"), tag("Nothing", TagType.Negative),
            tag("negative")]
    folders = archive.tag_folders(tags)
    assert folders["id-Nothing"] == "negative"
    assert folders["id-negative"] == "negative_2"
    assert folders["id-untagged"] == "untagged_2" and folders["id-images"] == "images_2"
    assert (folders["id-Cat"], folders["id-cat!"], folders["id-cat?"]) == ("Cat", "cat_", "cat__2")
    assert len({f.lower() for f in folders.values()}) == len(tags)


def test_image_folder_and_file():
    folders = {"t1": "cat", "t2": "dog"}
    assert archive.image_folder(ClassificationType.Multiclass, ["t2", "t1"], folders) == "dog"
    assert archive.image_folder(ClassificationType.Multiclass, [], folders) == "untagged"
    assert archive.image_folder(ClassificationType.Multilabel, ["t1"], folders) == "images"
    sha = "ab" * 32
    assert archive.image_file("cat", "photos\\My Cat.PNG", sha, "PNG") == f"cat/My Cat-{sha[:12]}.png"
    assert archive.image_file("cat", "", sha, "JPEG") == f"cat/image-{sha[:12]}.jpg"
    assert archive.image_file("cat", "../../x.gif", sha, "") == f"cat/x-{sha[:12]}.img"


@pytest.mark.parametrize("path", ["../x.png", "/etc/passwd", "a/../../b", "a\\b.png", "C:/x.png", "", "a//b",
                                  "./a", None, 3, "a/\x00b"])
def test_paths_outside_the_root_are_refused(path):
    with pytest.raises(errors.InvalidInput):
        archive.check_member(path)


def test_manifest_line_round_trip_and_checks():
    entry = archive.ManifestEntry("cat/a.png", "0" * 64, ["cat"], {"k": "v"}, "slack", "a.png")
    assert archive.parse_manifest_line(entry.line(), 1) == entry
    good = json.loads(entry.line())
    for change, message in [({"sha256": "0" * 63}, "sha256"), ({"sha256": "A" * 64}, "sha256"),
                            ({"tags": "cat"}, "tags"), ({"tags": [1]}, "tags"), ({"metadata": {"k": 1}}, "metadata"),
                            ({"file": "../a.png"}, "outside"), ({"source": 5}, "source")]:
        with pytest.raises(errors.InvalidInput, match=message):
            archive.parse_manifest_line(json.dumps(good | change), 3)
    with pytest.raises(errors.InvalidInput, match="line 7 is not JSON"):
        archive.parse_manifest_line("{", 7)
    with pytest.raises(errors.InvalidInput, match="not an object"):
        archive.parse_manifest_line("[]", 7)


def test_settings_round_trip_and_checks():
    tags = [archive.ArchiveTag("cat", TagType.Regular, "x"), archive.ArchiveTag("no", TagType.Negative)]
    s = archive.ArchiveSettings("P", "d", "Food", "Multilabel", 0.7, tags)
    data = json.dumps(s.as_json({"cat": "cat"})).encode()
    assert archive.parse_settings(data) == s
    raw = json.loads(data)
    for bad in [raw | {"format": "other"}, raw | {"version": 2}, raw | {"tags": [{"name": "x", "type": "Odd"}]},
                raw | {"project": raw["project"] | {"threshold": True}}, raw | {"project": None}]:
        with pytest.raises(errors.InvalidInput):
            archive.parse_settings(json.dumps(bad).encode())
    with pytest.raises(errors.InvalidInput):
        archive.parse_settings(b"\xff")


def test_sniff_format():
    from tests.helpers import jpeg_bytes, png_bytes

    assert archive.sniff_format(png_bytes()) == "PNG" and archive.sniff_format(jpeg_bytes()) == "JPEG"
    assert archive.sniff_format(b"GIF89a....") == "GIF" and archive.sniff_format(b"RIFF1234WEBP") == "WEBP"
    assert archive.sniff_format(b"nothing") == ""
