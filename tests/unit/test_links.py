"""Signing and checking image links (core.links), and the copies served through them (core.images.fit_jpeg)."""
import io

import pytest
from PIL import Image

from core import links
from core.images import content_type, fit_jpeg
from tests.helpers import png_bytes

SECRET = b"k" * 32
ID = "0b7c2f9e-5d3a-4c1b-9e8f-2a6d4c8b1e3f"


def _ok(**over):
    args = dict(secret=SECRET, kind="image", item_id=ID, variant="original", expires="2000", now=1000.0)
    args.update(over)
    sig = links.sign(SECRET, "image", ID, "original", 2000)
    args.setdefault("signature", sig)
    return links.verify(args["secret"], args["kind"], args["item_id"], args["variant"], args["expires"],
                        args["signature"], args["now"])


def test_a_link_verifies_until_it_expires():
    assert _ok()
    assert _ok(now=2000.0)
    assert not _ok(now=2000.5)


@pytest.mark.parametrize("over", [
    {"secret": b"another key"}, {"kind": "prediction"}, {"item_id": ID.replace("0b", "0c")},
    {"variant": "thumbnail"}, {"expires": "2001"}, {"expires": "02000"}, {"expires": "2000.0"}, {"expires": "-2000"},
    {"expires": ""}, {"expires": "9" * 40}, {"signature": ""}, {"signature": "0" * 64},
    {"signature": links.sign(SECRET, "image", ID, "original", 2000).upper()},
    {"signature": links.sign(SECRET, "image", ID, "original", 2000)[:-1] + "ü"},
    {"kind": "iteration"}, {"variant": "../original"}, {"item_id": ""}, {"item_id": "x" * 65}, {"secret": b""},
])
def test_every_changed_part_is_refused(over):
    assert not _ok(**over)


def test_signatures_differ_per_kind_id_variant_expiry_and_secret():
    base = ("image", ID, "original", 2000)
    sigs = {links.sign(SECRET, *base), links.sign(b"other", *base),
            links.sign(SECRET, "prediction", ID, "original", 2000),
            links.sign(SECRET, "image", "other", "original", 2000),
            links.sign(SECRET, "image", ID, "resized", 2000), links.sign(SECRET, "image", ID, "original", 2001)}
    assert len(sigs) == 6 and all(len(s) == 64 for s in sigs)


def test_signing_refuses_what_has_no_route():
    with pytest.raises(ValueError):
        links.sign(SECRET, "iteration", ID, "original", 1)
    with pytest.raises(ValueError):
        links.sign(b"", "image", ID, "original", 1)


def test_a_dataset_link_names_one_project_and_expires():
    sig = links.sign_dataset(SECRET, ID, 2000)
    assert links.verify_dataset(SECRET, ID, "2000", sig, 2000.0)
    assert links.dataset_url("https://cv.example.org/", SECRET, ID, 2000) == \
        f"https://cv.example.org/customvision/datasets/{ID}?exp=2000&sig={sig}"
    for secret, pid, exp, signature, now in (
            (SECRET, ID, "2000", sig, 2000.5), (b"other", ID, "2000", sig, 1000.0),
            (SECRET, ID.replace("0b", "0c"), "2000", sig, 1000.0), (SECRET, ID, "2001", sig, 1000.0),
            (SECRET, ID, "02000", sig, 1000.0), (SECRET, ID, "", sig, 1000.0), (SECRET, ID, "2000", sig[:-1], 1000.0),
            (SECRET, ID, "2000", "0" * 64, 1000.0), (SECRET, "", "2000", sig, 1000.0), (b"", ID, "2000", sig, 1000.0),
            (SECRET, ID, "2000", links.sign(SECRET, "image", ID, "original", 2000), 1000.0)):
        assert not links.verify_dataset(secret, pid, exp, signature, now), (pid, exp, signature, now)
    # nor is a dataset signature ever an image link's
    assert not links.verify(SECRET, "image", ID, "original", "2000", sig, 1000.0)


def test_expiry_is_the_lifetime_rounded_up_to_a_tenth_of_it_at_most_a_minute():
    assert links.expiry(1000.3, 3600) == 4620  # 4600 rounded up to the minute
    assert links.expiry(1020.0, 3600) == 4620  # the same link a few seconds later: cacheable
    assert links.expiry(1000.0, 2) == 1002
    assert 1000 + 30 <= links.expiry(1000.0, 30) <= 1000 + 33


def _size(data: bytes) -> tuple[str, tuple[int, int]]:
    img = Image.open(io.BytesIO(data))
    return img.format, img.size


@pytest.mark.parametrize("size, edge, want", [
    ((3000, 1000), 1600, (1600, 533)), ((1000, 3000), 200, (67, 200)), ((120, 80), 200, (120, 80)),
    ((1601, 1601), 1600, (1600, 1600)), ((50, 1250), 200, (8, 200)),
])
def test_fit_jpeg_fits_the_longest_edge_and_never_enlarges(size, edge, want):
    out = fit_jpeg(png_bytes(size=size, seed=1), edge)
    assert _size(out) == ("JPEG", want)


def test_fit_jpeg_applies_exif_orientation_and_flattens_transparency():
    img = Image.new("RGBA", (400, 100), (0, 0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated a quarter turn on display
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", exif=exif.tobytes())
    assert _size(fit_jpeg(buf.getvalue(), 200)) == ("JPEG", (50, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = Image.open(io.BytesIO(fit_jpeg(buf.getvalue(), 200)))
    assert out.size == (200, 50) and out.getpixel((10, 10)) >= (250, 250, 250)


def test_content_type_comes_from_the_header():
    assert content_type(png_bytes()) == "image/png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    assert content_type(buf.getvalue()) == "image/gif"
    assert content_type(b"not an image") == "application/octet-stream"
