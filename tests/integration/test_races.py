"""Concurrent get-or-create paths on SQLite and PostgreSQL: the loser of a race uses the winner's row.

Each test releases 8 threads together with a barrier and repeats the race a few rounds, so that a
check-then-insert without a conflict-safe insert fails reliably."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core import errors
from core.model import TagType
from core.usecases import ImageUpload, Scope, UseCases, workspace_for_key
from tests.helpers import png_bytes

THREADS = 8
PER_THREAD = 3
ROUNDS = 3


def race(fn, n: int = THREADS) -> list:
    """fn(i) on n threads released at once; every racer must succeed."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        failures = [f.exception() for f in futures if f.exception() is not None]
    assert not failures, f"{len(failures)} of {n} racers failed, first: {failures[0]!r}"
    return [f.result() for f in futures]


def one_winner(create):
    """Racers creating the same name: what the one winner made, and the Conflict each loser got."""

    def attempt(i: int):
        try:
            return create()
        except errors.Conflict as e:
            return e

    outcomes = race(attempt)
    made = [o for o in outcomes if not isinstance(o, errors.Conflict)]
    assert len(made) == 1, outcomes
    return made[0], [o for o in outcomes if isinstance(o, errors.Conflict)]


def _in(cv, workspace: str) -> UseCases:
    return UseCases(cv.deps, Scope.of(workspace))


@pytest.mark.parametrize("name, tag_type", [("food", TagType.Regular), ("negative", TagType.Negative)])
def test_messages_racing_with_one_new_tag_share_it_and_store_every_image(cv, name, tag_type):
    for rnd in range(ROUNDS):
        p = cv.projects.create(f"burst {rnd}")

        def message(i: int, p=p, rnd=rnd):
            tags = cv.tags.get_or_create(p.id, [name])
            uploads = [ImageUpload(png_bytes(seed=rnd * 1000 + i * PER_THREAD + k), f"m{i}-{k}.png",
                                   [t.id for t in tags])
                       for k in range(PER_THREAD)]
            return tags, cv.images.add(p.id, uploads)

        outcomes = race(message)
        tags = cv.tags.list(p.id)
        assert [(t.name.lower(), t.type) for t in tags] == [(name, tag_type)]
        assert {t.id for got, _ in outcomes for t in got} == {tags[0].id}
        assert [r.status for _, results in outcomes for r in results] == ["OK"] * THREADS * PER_THREAD
        assert cv.images.count(p.id, tag_ids=[tags[0].id]) == THREADS * PER_THREAD


def test_tags_named_in_different_orders_by_racing_messages(cv):
    p = cv.projects.create("orders")
    outcomes = race(lambda i: cv.tags.get_or_create(p.id, ["a", "b", "c"][::1 if i % 2 else -1]))
    tags = {t.name: t.id for t in cv.tags.list(p.id)}
    assert sorted(tags) == ["a", "b", "c"]
    assert all({t.name: t.id for t in got} == tags for got in outcomes)


def test_create_tag_race_loser_gets_azures_duplicate_error(cv):
    p = cv.projects.create("api")
    tag, losers = one_winner(lambda: cv.tags.create(p.id, "Same"))
    assert [e.code for e in losers] == ["BadRequestDuplicateTag"] * (THREADS - 1)
    assert [t.id for t in cv.tags.list(p.id)] == [tag.id]


def test_first_use_of_workspace_keys_gives_every_caller_the_same_keys(cv):
    for rnd in range(ROUNDS):
        ws = f"TRACE{rnd}"
        keys = race(lambda i, ws=ws: _in(cv, ws).channels.keys())
        assert len({(k.training_key, k.prediction_key) for k in keys}) == 1
        assert workspace_for_key(cv.deps, keys[0].training_key) == (ws, "training")
        assert workspace_for_key(cv.deps, keys[0].prediction_key) == (ws, "prediction")


def test_racing_channel_bindings_and_collect_mode_leave_one_binding(cv):
    tb = _in(cv, "TB")
    projects = [tb.projects.create(f"bind {i}") for i in range(THREADS)]
    for rnd in range(ROUNDS):
        channel = f"CBIND{rnd}"
        race(lambda i, channel=channel: tb.channels.bind(channel, projects[i].id, f"U{i}"))
        binding = tb.channels.binding(channel)
        assert binding.project_id in {p.id for p in projects}
        modes = race(lambda i, channel=channel: tb.channels.set_collect_mode(channel, ["fruit", f"kind{i % 2}"]))
        assert {tuple(m.collect_tags) for m in modes} == {("fruit", "kind0"), ("fruit", "kind1")}
        names = sorted(t.name for t in tb.tags.list(binding.project_id))
        assert names == ["fruit", "kind0", "kind1"]
        assert [b.project_id for q in projects for b in tb.channels.for_project(q.id) if b.channel_id == channel] \
            == [binding.project_id]


def test_racing_links_of_one_message_store_each_image_once(cv):
    p = cv.projects.create("links")
    added = cv.images.add(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png") for i in range(4)])
    ids = [r.image.id for r in added]
    tl = _in(cv, "TL")
    for rnd in range(ROUNDS):
        ts = f"{rnd}.0001"
        race(lambda i, ts=ts: tl.channels.link_message_images("CL", ts, ids[i % 2:]))
        assert sorted(tl.channels.message_image_ids("CL", ts)) == sorted(ids)


def test_racing_embedding_writes_keep_one_vector_each(cv):
    vectors = {f"{i:064x}": np.full(4, i, np.float32) for i in range(20)}

    def put(i: int):
        with cv.deps.uow() as uow:
            uow.embeddings.put_many("bb", dict(list(vectors.items())[i % 3:]))
            uow.commit()

    race(put)
    with cv.deps.uow() as uow:
        assert uow.embeddings.count("bb") == 20
        stored = uow.embeddings.get_many("bb", list(vectors))
    assert all(np.array_equal(stored[k], v) for k, v in vectors.items())


def test_racing_creations_of_one_project_name_make_one_project_and_clear_conflicts(cv):
    for rnd in range(ROUNDS):
        ws = _in(cv, f"TP{rnd}")
        project, losers = one_winner(lambda ws=ws: ws.projects.create("Same Name"))
        assert [e.message for e in losers] == ["a project named 'Same Name' already exists"] * (THREADS - 1)
        assert [p.id for p in ws.projects.list()] == [project.id]
