"""The rules of tags and of the tags an image carries, on fakes (tests/fakes.py): no database, no model."""
import pytest

from core import errors
from core.model import TagType
from core.rules import MAX_TAGS_PER_IMAGE
from core.usecases import ImageUpload, Order
from tests.helpers import png_bytes


@pytest.fixture
def p(cv):
    return cv.projects.create("rules")


def _upload(cv, p, tag_ids=(), seed=0):
    return cv.images.add(p.id, [ImageUpload(png_bytes(seed=seed, size=(8, 8)), f"{seed}.png", list(tag_ids))])[0]


def _tags_of(cv, p, image_id):
    return cv.images.get_many(p.id, [image_id])[0].tag_ids


def test_tag_names_are_unique_in_any_case(cv, p):
    cat = cv.tags.create(p.id, "Cat")
    dog = cv.tags.create(p.id, "dog")
    with pytest.raises(errors.Conflict) as e:
        cv.tags.create(p.id, " cAT ")
    assert e.value.code == "BadRequestDuplicateTag"
    with pytest.raises(errors.Conflict):
        cv.tags.update(p.id, dog.id, name="CAT")
    assert cv.tags.update(p.id, cat.id, name="CAT").name == "CAT"  # its own name in another case is no clash
    assert sorted(t.name for t in cv.tags.list(p.id)) == ["CAT", "dog"]


def test_a_project_has_at_most_one_negative_tag(cv, p):
    cv.tags.create(p.id, "Negative", TagType.Negative)
    other = cv.tags.create(p.id, "nothing")
    with pytest.raises(errors.InvalidInput) as e:
        cv.tags.create(p.id, "also nothing", TagType.Negative)
    assert e.value.code == "BadRequestTagTypeNegativeExists"
    with pytest.raises(errors.InvalidInput):
        cv.tags.update(p.id, other.id, type="negative")
    assert [t.type for t in cv.tags.list(p.id)] == [TagType.Negative, TagType.Regular]


def test_negative_with_another_tag_is_refused_on_upload_and_stores_nothing(cv, p):
    neg = cv.tags.create(p.id, "Negative", TagType.Negative)
    cat = cv.tags.create(p.id, "cat")
    (res,) = cv.images.add(p.id, [ImageUpload(png_bytes(size=(8, 8)), "x.png", [neg.id, cat.id])])
    assert res.status == "ErrorNegativeAndRegularTagOnSameImage" and res.image is None
    assert cv.images.count(p.id) == 0 and list(cv.deps.blobs.keys()) == []


def test_negative_with_another_tag_is_refused_on_retag(cv, p):
    neg = cv.tags.create(p.id, "Negative", TagType.Negative)
    cat = cv.tags.create(p.id, "cat")
    negative_image = _upload(cv, p, [neg.id], seed=1).image
    cat_image = _upload(cv, p, [cat.id], seed=2).image
    with pytest.raises(errors.NegativeAndRegularTag):
        cv.images.add_tags(p.id, [negative_image.id], [cat.id])
    with pytest.raises(errors.NegativeAndRegularTag):
        cv.images.add_tags(p.id, [cat_image.id], [neg.id])
    with pytest.raises(errors.NegativeAndRegularTag):
        cv.images.set_tags(p.id, [cat_image.id], [cat.id, neg.id])
    assert _tags_of(cv, p, negative_image.id) == [neg.id] and _tags_of(cv, p, cat_image.id) == [cat.id]
    cv.images.set_tags(p.id, [cat_image.id], [neg.id])  # replacing the tags is fine
    assert _tags_of(cv, p, cat_image.id) == [neg.id]


def test_a_tag_sharing_images_cannot_become_the_negative_tag(cv, p):
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    _upload(cv, p, [a.id, b.id])
    with pytest.raises(errors.NegativeAndRegularTag):
        cv.tags.update(p.id, a.id, type=TagType.Negative)
    assert cv.tags.get(p.id, a.id).type == TagType.Regular


def test_unknown_tag_ids_are_an_invalid_tag(cv, p):
    cat = cv.tags.create(p.id, "cat")
    elsewhere = cv.tags.create(cv.projects.create("other").id, "dog")
    for tag_ids in (["00000000-0000-0000-0000-000000000000"], [cat.id, elsewhere.id]):
        res = _upload(cv, p, tag_ids)
        assert res.status == "ErrorInvalidTag" and not res.ok
    assert cv.images.count(p.id) == 0
    image = _upload(cv, p, [cat.id]).image
    with pytest.raises(errors.NotFound):
        cv.images.add_tags(p.id, [image.id], [elsewhere.id])
    assert _tags_of(cv, p, image.id) == [cat.id]


def test_an_image_carries_at_most_20_tags(cv):
    p = cv.projects.create("many", classification_type="Multilabel")
    tags = [cv.tags.create(p.id, f"t{i}").id for i in range(MAX_TAGS_PER_IMAGE + 1)]
    assert MAX_TAGS_PER_IMAGE == 20
    assert _upload(cv, p, tags, seed=1).status == "ErrorTagLimitExceed"
    full = _upload(cv, p, tags[:20], seed=2)
    assert full.status == "OK" and len(full.image.tag_ids) == 20
    with pytest.raises(errors.InvalidInput):
        cv.images.add_tags(p.id, [full.image.id], [tags[20]])
    assert len(_tags_of(cv, p, full.image.id)) == 20


def test_get_or_create_returns_the_existing_tags(cv, p):
    cat = cv.tags.create(p.id, "Cat")
    neg = cv.tags.create(p.id, "Nothing here", TagType.Negative)
    got = cv.tags.get_or_create(p.id, ["cat", "dog", "CAT", " ", "negative", "Dog"])
    assert [t.name for t in got] == ["Cat", "dog", "Nothing here"]
    assert got[0].id == cat.id and got[2].id == neg.id
    again = cv.tags.get_or_create(p.id, ["DOG"])
    assert [t.id for t in again] == [got[1].id]
    assert sorted(t.name for t in cv.tags.list(p.id)) == ["Cat", "Nothing here", "dog"]


def test_get_or_create_negative_refuses_a_regular_tag_of_that_name(cv, p):
    cv.tags.create(p.id, "negative")
    with pytest.raises(errors.Conflict):
        cv.tags.get_or_create(p.id, ["Negative"])
    assert [(t.name, t.type) for t in cv.tags.list(p.id)] == [("negative", TagType.Regular)]


def test_tag_images_splits_created_and_duplicated_pairs(cv, p):
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    one = _upload(cv, p, [a.id], seed=1).image
    two = _upload(cv, p, [], seed=2).image
    pairs = [(one.id, a.id), (one.id, b.id), (one.id, b.id), (two.id, a.id)]
    result = cv.images.tag_images(p.id, pairs)
    assert result.created == [(one.id, b.id), (two.id, a.id)]
    assert result.duplicated == [(one.id, a.id), (one.id, b.id)]
    assert sorted(_tags_of(cv, p, one.id)) == sorted([a.id, b.id]) and _tags_of(cv, p, two.id) == [a.id]
    assert cv.images.tag_images(p.id, [(two.id, a.id)]).created == []


def test_oldest_is_exactly_the_reverse_of_newest_also_across_pages(cv, p):
    ids = [_upload(cv, p, seed=i).image.id for i in range(7)]
    stored = cv.deps.uow.tables["images"]  # some images share a second, as uploads of one batch do
    for n, image_id in enumerate(ids):
        stored[image_id].created_at = stored[image_id].created_at.replace(second=n // 3)
    newest = [i.id for i in cv.images.list(p.id, order=Order.Newest)]
    oldest = [i.id for i in cv.images.list(p.id, order="Oldest")]
    assert sorted(newest) == sorted(ids) and oldest == newest[::-1]
    assert [stored[i].created_at for i in oldest] == sorted(stored[i].created_at for i in ids)
    for order, full in ((Order.Newest, newest), (Order.Oldest, oldest)):
        pages = [i.id for skip in range(0, 7, 3) for i in cv.images.list(p.id, skip=skip, take=3, order=order)]
        assert pages == full
