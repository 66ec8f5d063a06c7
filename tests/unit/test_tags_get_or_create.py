"""`Tags.get_or_create`, which `cvbot import` uses for its folder names (issue #13): names are stripped, and every
name and the tag limit are checked before the first tag is created, so a refused import creates none; on fakes."""
import pytest

from core import errors
from core.model import TagType


def test_get_or_create_strips_names(cv):
    p = cv.projects.create("spaces")
    tags = cv.tags.get_or_create(p.id, [" cat ", "dog ", "cat"])
    assert sorted(t.name for t in tags) == ["cat", "dog"]


def test_get_or_create_over_the_tag_limit_creates_none(cv, monkeypatch):
    monkeypatch.setattr("core.usecases.tags.MAX_TAGS_PER_PROJECT", 3)
    p = cv.projects.create("limit")
    cv.tags.create(p.id, "one")
    with pytest.raises(errors.InvalidInput) as e:
        cv.tags.get_or_create(p.id, ["two", "three", "four"])
    assert e.value.code == "BadRequestTagLimitExceed"
    assert [t.name for t in cv.tags.list(p.id)] == ["one"]


def test_get_or_create_with_a_bad_name_creates_none(cv):
    p = cv.projects.create("names")
    with pytest.raises(errors.InvalidInput):
        cv.tags.get_or_create(p.id, ["fine", "n" * 300])
    assert cv.tags.list(p.id) == []


def test_get_or_create_negative_over_a_regular_tag_of_that_name_creates_none(cv):
    p = cv.projects.create("neg")
    cv.tags.create(p.id, "negative", TagType.Regular)
    with pytest.raises(errors.Conflict):
        cv.tags.get_or_create(p.id, ["apple", "Negative"])
    assert [t.name for t in cv.tags.list(p.id)] == ["negative"]
