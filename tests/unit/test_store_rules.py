"""Project and tag descriptions are bounded (issue #13: a 20 MB description was accepted and returned on every
GET); on fakes."""
import pytest

from core import errors
from core.rules import MAX_DESCRIPTION


def test_a_project_description_over_the_limit_is_refused_and_nothing_stored(cv):
    with pytest.raises(errors.InvalidInput) as e:
        cv.projects.create("big", description="x" * (MAX_DESCRIPTION + 1))
    assert e.value.code == "BadRequestProjectDescription"
    assert cv.projects.list() == []
    p = cv.projects.create("fits", description="x" * MAX_DESCRIPTION)
    with pytest.raises(errors.InvalidInput) as e:
        cv.projects.update(p.id, description="y" * 20_000_000)
    assert e.value.code == "BadRequestProjectDescription"
    assert cv.projects.get(p.id).description == "x" * MAX_DESCRIPTION


def test_a_tag_description_over_the_limit_is_refused(cv):
    p = cv.projects.create("tags")
    with pytest.raises(errors.InvalidInput) as e:
        cv.tags.create(p.id, "a", description="x" * (MAX_DESCRIPTION + 1))
    assert e.value.code == "BadRequestTagDescription"
    tag = cv.tags.create(p.id, "b")
    with pytest.raises(errors.InvalidInput):
        cv.tags.update(p.id, tag.id, description="x" * (MAX_DESCRIPTION + 1))
    assert [t.name for t in cv.tags.list(p.id)] == ["b"]
