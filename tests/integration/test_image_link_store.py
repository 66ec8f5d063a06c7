"""What image links serve, on SQLite and PostgreSQL: the signing key kept in the database for every process,
resized copies made once and kept while their image is, and nothing once the image is gone."""
import io

import pytest
from PIL import Image

from core import errors
from core.usecases import ImageUpload, link_secret, linked_image, recover
from tests.conftest import make_deps
from tests.helpers import png_bytes


def test_the_generated_key_is_stored_once_and_shared(cv, tmp_path, provider):
    first = link_secret(cv.deps)
    assert len(first) == 64 and link_secret(cv.deps) == first
    with cv.deps.uow() as uow:
        assert uow.secrets.get_or_add("image-link-signing-key", "ignored") == first.decode()
    assert link_secret(cv.deps, "configured key") == b"configured key"
    assert link_secret(cv.deps) == first  # a configured key never replaces the stored one


def test_a_second_process_on_the_same_database_gets_the_same_key(tmp_path, provider):
    one = make_deps(tmp_path, provider)
    two = make_deps(tmp_path, provider)  # another engine and pool on the same SQLite file
    assert link_secret(one) == link_secret(two)


def _image(cv, data):
    project = cv.projects.create("links")
    [result] = cv.images.add(project.id, [ImageUpload(data, "a.png")])
    return project, result.image


def test_copies_are_made_once_and_kept_while_their_image_is(cv):
    data = png_bytes(size=(2000, 500), seed=3)
    project, image = _image(cv, data)
    original = linked_image(cv.deps, "image", image.id, "original")
    assert (original.data, original.content_type, original.etag) == (data, "image/png", image.sha256)

    resized = linked_image(cv.deps, "image", image.id, "resized")
    thumb = linked_image(cv.deps, "image", image.id, "thumbnail")
    assert Image.open(io.BytesIO(resized.data)).size == (1600, 400)
    assert Image.open(io.BytesIO(thumb.data)).size == (200, 50)
    assert resized.content_type == thumb.content_type == "image/jpeg"
    blobs = set(cv.deps.blobs.keys())
    assert {resized.etag, thumb.etag} <= blobs
    assert linked_image(cv.deps, "image", image.id, "resized") == resized  # from the cache
    assert set(cv.deps.blobs.keys()) == blobs
    with cv.deps.uow() as uow:
        assert uow.variants.get(image.sha256, "resized") == resized.etag
        assert {resized.etag, thumb.etag} <= uow.referenced_blob_keys()
        assert uow.referenced_blob_keys([resized.etag]) == {resized.etag}

    # a copy collected meanwhile is made again
    cv.deps.blobs.delete(resized.etag)
    assert linked_image(cv.deps, "image", image.id, "resized").data == resized.data

    cv.images.delete(project.id, [image.id])
    with cv.deps.uow() as uow:
        assert not {resized.etag, thumb.etag} & uow.referenced_blob_keys()
    recover(cv.deps)
    assert not {image.sha256, resized.etag, thumb.etag} & set(cv.deps.blobs.keys())
    for variant in ("original", "resized", "thumbnail"):
        with pytest.raises(errors.NotFound):
            linked_image(cv.deps, "image", image.id, variant)


def test_unknown_items_and_kinds_are_not_found(cv):
    _, image = _image(cv, png_bytes(seed=4))
    for kind, item, variant in (("prediction", image.id, "original"), ("image", "no-such-id", "original"),
                                ("iteration", image.id, "original"), ("image", image.id, "huge")):
        with pytest.raises(errors.NotFound):
            linked_image(cv.deps, kind, item, variant)
