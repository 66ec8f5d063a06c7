"""`Migration` (cvbot migrate) over fakes: Azure-shaped sources mapped to cvbot (domains by name, "[A1]" and
"(compact)" variants, object detection skipped, Negative tags), paging, and resumability (a source that fails half
way; the rerun completes with nothing duplicated)."""
from __future__ import annotations

import pytest

from core import errors
from core.model import ClassificationType, Domain, TagType
from core.sources import SourceImage, SourceProject, SourceProjects, SourceTag
from core.usecases import map_domain
from core.usecases.migration import source_key
from tests.helpers import png_bytes


class FakeSource(SourceProjects):
    """An Azure-shaped source: projects, tags, image pages (newest first), signed links → bytes."""

    def __init__(self, endpoint: str = "https://westeurope.api.cognitive.microsoft.com/"):
        self.endpoint = endpoint
        self.project_list: list[SourceProject] = []
        self.tag_lists: dict[str, list[SourceTag]] = {}
        self.image_lists: dict[str, list[tuple[SourceImage, bool]]] = {}
        self.blobs: dict[str, bytes] = {}
        self.fail_after: int | None = None  # image downloads before the source "goes away"
        self.downloads = 0
        self.pages: list[tuple[str, bool, int, int]] = []

    def add_project(self, pid: str, name: str, domain: str, domain_type: str = "Classification",
                    ctype: str | None = "Multiclass", **kw) -> SourceProject:
        p = SourceProject(pid, name, kw.get("description", ""), domain, domain_type, ctype, kw.get("threshold"))
        self.project_list.append(p)
        self.tag_lists[pid], self.image_lists[pid] = [], []
        return p

    def add_image(self, pid: str, iid: str, data: bytes, tags: tuple[str, ...] = (), **metadata: str) -> None:
        self.blobs[f"https://blob.example/{iid}?sig=x"] = data
        self.image_lists[pid].append((SourceImage(iid, f"https://blob.example/{iid}?sig=x", tags,
                                                  tuple(metadata.items())), bool(tags)))

    def projects(self):
        return list(self.project_list)

    def tags(self, project_id):
        return list(self.tag_lists[project_id])

    def images(self, project_id, tagged, skip, take):
        self.pages.append((project_id, tagged, skip, take))
        rows = [i for i, t in self.image_lists[project_id] if t == tagged]
        return rows[skip:skip + take]

    def image_count(self, project_id):
        return len(self.image_lists[project_id])

    def image_bytes(self, image):
        if self.fail_after is not None and self.downloads >= self.fail_after:
            raise KeyboardInterrupt  # the process is stopped half way (nothing catches it)
        self.downloads += 1
        return self.blobs[image.uri]

    def last_performance(self, project_id):
        return {"precision": 0.9, "recall": 0.8, "averagePrecision": 0.85}


@pytest.mark.parametrize("name, dtype, expected", [
    ("General", "Classification", Domain.General),
    ("General [A1]", "Classification", Domain.General),
    ("General [A2]", "Classification", Domain.General),
    ("Food", "Classification", Domain.Food),
    ("Landmarks", "Classification", Domain.Landmarks),
    ("Retail", "Classification", Domain.Retail),
    ("Adult", "Classification", Domain.Adult),
    ("General (compact)", "Classification", Domain.Compact),
    ("General (compact) [S1]", "Classification", Domain.Compact),
    ("Food (compact)", "Classification", Domain.Compact),
    ("Landmarks (compact)", "Classification", Domain.Compact),
    ("Retail (compact)", "Classification", Domain.Compact),
    ("Compact", None, Domain.Compact),  # another cvbot
])
def test_domains_map_by_name(name, dtype, expected):
    assert map_domain(SourceProject("p", "p", domain_name=name, domain_type=dtype)) == (expected, None)


@pytest.mark.parametrize("name, dtype, reason", [
    ("General", "ObjectDetection", "object detection"),
    ("General (compact)", "ObjectDetection", "object detection"),
    ("Logo", "ObjectDetection", "object detection"),
    ("Products on Shelves", "ObjectDetection", "object detection"),
    ("Something new", "Classification", "no cvbot equivalent"),
    (None, None, "did not say"),
])
def test_unsupported_domains_are_skipped_with_the_reason(name, dtype, reason):
    domain, why = map_domain(SourceProject("p", "p", domain_name=name, domain_type=dtype))
    assert domain is None and reason in why


def test_source_key_folds_scheme_host_and_trailing_slash():
    assert source_key("HTTPS://West.Example.com/") == source_key("https://west.example.com") == \
        "https://west.example.com"


def _azure_like() -> FakeSource:
    src = FakeSource()
    src.add_project("p-mc", "Fruit", "General [A2]", description="apples and pears", threshold=0.6)
    src.tag_lists["p-mc"] = [SourceTag("t-apple", "apple", "Regular", "red ones"), SourceTag("t-pear", "pear"),
                             SourceTag("t-neg", "Negative", "Negative")]
    for n in range(5):
        src.add_image("p-mc", f"i-a{n}", png_bytes((200, 10 * n, 0), seed=n), ("t-apple",), camera=f"c{n}")
        src.add_image("p-mc", f"i-p{n}", png_bytes((0, 200, 10 * n), seed=100 + n), ("t-pear",))
    src.add_image("p-mc", "i-neg", png_bytes((0, 0, 200), seed=7), ("t-neg",))
    src.add_image("p-mc", "i-un1", png_bytes((90, 90, 90), seed=8))
    src.add_image("p-mc", "i-un2", png_bytes((30, 90, 90), seed=9), note="untagged")
    src.add_project("p-ml", "Scenes", "Retail (compact)", ctype="Multilabel")
    src.tag_lists["p-ml"] = [SourceTag("t-sky", "sky"), SourceTag("t-sea", "sea")]
    src.add_image("p-ml", "i-m1", png_bytes((0, 0, 250), seed=20), ("t-sky", "t-sea"))
    src.add_image("p-ml", "i-m2", png_bytes((0, 0, 240), seed=21), ("t-sky",))
    src.add_project("p-od", "Boxes", "General", domain_type="ObjectDetection", ctype=None)
    return src


def _state(cv) -> dict:
    """Every project with its settings, tags and images (content hash → tag names, metadata)."""
    out = {}
    for p in cv.projects.list():
        names = {t.id: (t.name, t.type, t.description) for t in cv.tags.list(p.id)}
        images = cv.images.list(p.id, take=1000)
        out[p.name] = {"settings": (p.domain, p.classification_type, p.description, p.threshold),
                       "tags": sorted(names.values()),
                       "images": sorted((i.sha256, tuple(sorted(names[t][0] for t in i.tag_ids)),
                                         tuple(sorted(i.metadata.items()))) for i in images)}
    return out


def test_an_azure_shaped_source_is_copied_whole(cv):
    src = _azure_like()
    summary = cv.migration.run(src)
    state = _state(cv)
    assert set(state) == {"Fruit", "Scenes"}
    fruit = state["Fruit"]
    assert fruit["settings"] == (Domain.General, ClassificationType.Multiclass, "apples and pears", 0.6)
    assert fruit["tags"] == [("Negative", TagType.Negative, ""), ("apple", TagType.Regular, "red ones"),
                             ("pear", TagType.Regular, "")]
    assert len(fruit["images"]) == 13
    by_tags = sorted(t for _, t, _ in fruit["images"])
    assert by_tags.count(("apple",)) == 5 and by_tags.count(("pear",)) == 5
    assert by_tags.count(("Negative",)) == 1 and by_tags.count(()) == 2
    assert (("camera", "c3"),) in [m for _, _, m in fruit["images"]]
    assert (("note", "untagged"),) in [m for _, _, m in fruit["images"]]
    assert state["Scenes"]["settings"][:2] == (Domain.Compact, ClassificationType.Multilabel)
    assert sorted(t for _, t, _ in state["Scenes"]["images"]) == [("sea", "sky"), ("sky",)]
    data = summary.as_json()
    assert data["projects"] == 2 and data["images"] == 15 and data["tags"] == 5 and data["failures"] == []
    assert data["skippedProjects"] == [{"id": "p-od", "name": "Boxes",
                                        "reason": "object detection projects are not supported by cvbot"}]
    assert data["bytes"] == sum(len(b) for b in src.blobs.values())


def test_a_rerun_adds_nothing(cv):
    src = _azure_like()
    cv.migration.run(src)
    before, downloads = _state(cv), src.downloads
    again = cv.migration.run(src).as_json()
    assert _state(cv) == before
    assert src.downloads == downloads  # nothing fetched twice
    assert again["images"] == 0 and again["tags"] == 0 and again["alreadyCopied"] == 15


def test_an_interrupted_run_resumes_without_duplicates_or_losses(cv):
    src = _azure_like()
    src.fail_after = 6
    with pytest.raises(KeyboardInterrupt):
        cv.migration.run(src)
    partial = _state(cv)
    assert sum(len(p["images"]) for p in partial.values()) == 6  # each image copied is kept
    src.fail_after = None
    summary = cv.migration.run(src).as_json()
    assert summary["alreadyCopied"] == 6 and summary["images"] == 9
    assert _state(cv) == _state_of_fresh_copy(_azure_like())


def _state_of_fresh_copy(src: FakeSource) -> dict:
    from core.usecases import Scope, UseCases
    from tests.fakes import fake_deps

    other = UseCases(fake_deps(), Scope.of("default"))
    other.migration.run(src)
    return _state(other)


def test_images_are_paged(cv, monkeypatch):
    monkeypatch.setattr("core.usecases.migration.PAGE", 4)
    src = _azure_like()
    cv.migration.run(src, only=["Fruit"])
    assert len(_state(cv)["Fruit"]["images"]) == 13
    tagged = [skip for pid, tagged, skip, take in src.pages if pid == "p-mc" and tagged]
    assert tagged == [0, 4, 8]  # 11 tagged images: pages of 4, 4, 3


def test_projects_are_chosen_by_name_or_id_and_unknown_ones_change_nothing(cv):
    src = _azure_like()
    with pytest.raises(errors.NotFound):
        cv.migration.run(src, only=["Fruit", "nope"])
    assert cv.projects.list() == []
    cv.migration.run(src, only=["p-ml"])
    assert [p.name for p in cv.projects.list()] == ["Scenes"]


def test_a_name_taken_in_the_target_gets_a_new_name(cv):
    cv.projects.create("Scenes")
    cv.migration.run(_azure_like(), only=["Scenes"])
    assert sorted(p.name for p in cv.projects.list()) == ["Scenes", "Scenes (migrated)"]


def test_a_bad_image_is_a_failure_with_its_reason_and_the_rest_is_copied(cv):
    src = _azure_like()
    src.blobs["https://blob.example/i-p2?sig=x"] = b"not an image"
    summary = cv.migration.run(src, only=["Fruit"]).as_json()
    assert summary["images"] == 12
    assert len(summary["failures"]) == 1 and "i-p2" in summary["failures"][0]
    src.blobs["https://blob.example/i-p2?sig=x"] = png_bytes((1, 2, 3), seed=55)
    assert cv.migration.run(src, only=["Fruit"]).as_json()["images"] == 1  # a rerun retries the failure


def test_deleting_the_copy_forgets_it(cv):
    src = _azure_like()
    cv.migration.run(src, only=["Scenes"])
    cv.projects.delete(cv.projects.find("Scenes").id)
    assert cv.migration.run(src, only=["Scenes"]).as_json()["images"] == 2


def test_a_prediction_scope_cannot_migrate():
    from core.usecases import Scope, UseCases
    from tests.fakes import fake_deps

    cv = UseCases(fake_deps(), Scope.of("default", role="prediction"))
    with pytest.raises(errors.CvError):
        cv.migration.run(_azure_like())


def test_a_project_the_source_fails_on_is_reported_and_the_others_are_copied(cv):
    src = _azure_like()
    real_tags = src.tags

    def tags(project_id):
        if project_id == "p-mc":
            raise errors.CvError("HTTP 500 from the source", "SourceUnavailable")
        return real_tags(project_id)

    src.tags = tags
    data = cv.migration.run(src).as_json()
    assert data["projects"] == 1 and data["images"] == 2
    assert data["failures"] == ["Fruit: HTTP 500 from the source"]
    assert [p.name for p in cv.projects.list()] == ["Scenes"]
