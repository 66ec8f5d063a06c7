import pytest

from core.errors import TrainingValidationFailed
from core.model import ClassificationType, Domain, SnapshotEntry, Tag, TagType
from core.training import fingerprint, label_matrix, plan_training

MC, ML = ClassificationType.Multiclass, ClassificationType.Multilabel


def tags(*names, negative=False):
    out = [Tag("p", n) for n in names]
    if negative:
        out.append(Tag("p", "Negative", TagType.Negative))
    return out


def entries(spec: dict[str, int], tag_list) -> list[SnapshotEntry]:
    by_name = {t.name: t.id for t in tag_list}
    out, n = [], 0
    for name, count in spec.items():
        for _ in range(count):
            out.append(SnapshotEntry(f"img{n}", f"{n:064x}", [by_name[x] for x in name.split("+")]))
            n += 1
    return out


def test_too_few_images_lists_each_tag_and_count():
    ts = tags("cat", "dog")
    with pytest.raises(TrainingValidationFailed) as e:
        plan_training(ts, entries({"cat": 7, "dog": 3}, ts), Domain.Compact, MC)
    msg = e.value.message
    assert "'dog' has 3 images (needs 2 more)" in msg
    assert "cat: 7" in msg and "dog: 3" in msg


def test_multiclass_needs_two_tags():
    ts = tags("cat")
    with pytest.raises(TrainingValidationFailed, match="at least 2 regular tags"):
        plan_training(ts, entries({"cat": 10}, ts), Domain.Compact, MC)


def test_multiclass_refuses_images_with_two_tags():
    ts = tags("cat", "dog")
    with pytest.raises(TrainingValidationFailed, match="more than one tag"):
        plan_training(ts, entries({"cat": 6, "dog": 6, "cat+dog": 1}, ts), Domain.Compact, MC)


def test_multilabel_one_tag_needs_images_without_it():
    ts = tags("cat", negative=True)
    with pytest.raises(TrainingValidationFailed, match="without it"):
        plan_training(ts, entries({"cat": 8}, ts), Domain.Compact, ML)
    plan = plan_training(ts, entries({"cat": 8, "Negative": 6}, ts), Domain.Compact, ML)
    assert [t.name for t in plan.tags] == ["cat", "Negative"]


def test_unused_tags_are_ignored_and_warnings_name_small_tags():
    ts = tags("cat", "dog", "empty")
    plan = plan_training(ts, entries({"cat": 40, "dog": 6}, ts), Domain.Compact, MC)
    assert [t.name for t in plan.tags] == ["cat", "dog"]
    assert plan.warnings == ["tag 'dog' has 6 images; 30+ per tag are recommended"]


def test_fingerprint_changes_with_tags_domain_and_type():
    ts = tags("cat", "dog")
    e = entries({"cat": 5, "dog": 5}, ts)
    base = fingerprint(Domain.Compact, MC, e)
    assert fingerprint(Domain.Compact, MC, list(reversed(e))) == base
    assert fingerprint(Domain.General, MC, e) != base
    assert fingerprint(Domain.Compact, ML, e) != base
    e2 = [SnapshotEntry(x.image_id, x.sha256, list(x.tag_ids)) for x in e]
    e2[0].tag_ids = [ts[1].id]
    assert fingerprint(Domain.Compact, MC, e2) != base


def test_label_matrix():
    ts = tags("a", "b")
    e = entries({"a": 1, "b": 1, "a+b": 1}, ts)
    Y = label_matrix(e, [t.id for t in ts])
    assert Y.tolist() == [[1, 0], [0, 1], [1, 1]]


def test_the_plan_orders_images_by_content_whatever_order_they_come_in():
    """The database lists images in no fixed order; the folds follow the plan's order, so the plan fixes it: the
    same images and tags always train the same iteration."""
    import random

    ts = tags("cat", "dog")
    es = entries({"cat": 12, "dog": 12}, ts)
    shuffled = es[:]
    random.Random(4).shuffle(shuffled)
    a = plan_training(ts, es, Domain.Compact, MC)
    b = plan_training(ts, shuffled, Domain.Compact, MC)
    assert [e.image_id for e in a.entries] == [e.image_id for e in b.entries]
    assert [e.sha256 for e in a.entries] == sorted(e.sha256 for e in es)
