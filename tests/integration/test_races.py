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
from core.service import ImageUpload
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


@pytest.mark.parametrize("name, tag_type", [("food", TagType.Regular), ("negative", TagType.Negative)])
def test_messages_racing_with_one_new_tag_share_it_and_store_every_image(service, name, tag_type):
    for rnd in range(ROUNDS):
        p = service.create_project(f"burst {rnd}")

        def message(i: int):
            tags = service.get_or_create_tags(p.id, [name])
            uploads = [ImageUpload(png_bytes(seed=rnd * 1000 + i * PER_THREAD + k), f"m{i}-{k}.png", [t.id for t in tags])
                       for k in range(PER_THREAD)]
            return tags, service.add_images(p.id, uploads)

        outcomes = race(message)
        tags = service.list_tags(p.id)
        assert [(t.name.lower(), t.type) for t in tags] == [(name, tag_type)]
        assert {t.id for got, _ in outcomes for t in got} == {tags[0].id}
        assert [r.status for _, results in outcomes for r in results] == ["OK"] * THREADS * PER_THREAD
        assert service.count_images(p.id, tag_ids=[tags[0].id]) == THREADS * PER_THREAD


def test_tags_named_in_different_orders_by_racing_messages(service):
    p = service.create_project("orders")
    outcomes = race(lambda i: service.get_or_create_tags(p.id, ["a", "b", "c"][::1 if i % 2 else -1]))
    tags = {t.name: t.id for t in service.list_tags(p.id)}
    assert sorted(tags) == ["a", "b", "c"]
    assert all({t.name: t.id for t in got} == tags for got in outcomes)


def test_create_tag_race_loser_gets_azures_duplicate_error(service):
    p = service.create_project("api")
    tag, losers = one_winner(lambda: service.create_tag(p.id, "Same"))
    assert [e.code for e in losers] == ["BadRequestDuplicateTag"] * (THREADS - 1)
    assert [t.id for t in service.list_tags(p.id)] == [tag.id]


def test_first_use_of_workspace_keys_gives_every_caller_the_same_keys(service):
    for rnd in range(ROUNDS):
        ws = f"TRACE{rnd}"
        keys = race(lambda i: service.workspace_keys(ws))
        assert len({(k.training_key, k.prediction_key) for k in keys}) == 1
        assert service.workspace_for_key(keys[0].training_key) == (ws, "training")
        assert service.workspace_for_key(keys[0].prediction_key) == (ws, "prediction")


def test_racing_channel_bindings_and_collect_mode_leave_one_binding(service):
    projects = [service.create_project(f"bind {i}", workspace="TB") for i in range(THREADS)]
    for rnd in range(ROUNDS):
        channel = f"CBIND{rnd}"
        race(lambda i: service.bind_channel("TB", channel, projects[i].id, f"U{i}"))
        binding = service.channel_binding("TB", channel)
        assert binding.project_id in {p.id for p in projects}
        modes = race(lambda i: service.set_collect_mode("TB", channel, ["fruit", f"kind{i % 2}"]))
        assert {tuple(m.collect_tags) for m in modes} == {("fruit", "kind0"), ("fruit", "kind1")}
        names = sorted(t.name for t in service.list_tags(binding.project_id))
        assert names == ["fruit", "kind0", "kind1"]
        assert [b.project_id for q in projects for b in service.channel_bindings(q.id) if b.channel_id == channel] \
            == [binding.project_id]


def test_racing_links_of_one_message_store_each_image_once(service):
    p = service.create_project("links")
    added = service.add_images(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png") for i in range(4)])
    ids = [r.image.id for r in added]
    for rnd in range(ROUNDS):
        ts = f"{rnd}.0001"
        race(lambda i: service.link_message_images("TL", "CL", ts, ids[i % 2:]))
        assert sorted(service.message_image_ids("TL", "CL", ts)) == sorted(ids)


def test_racing_embedding_writes_keep_one_vector_each(service):
    vectors = {f"{i:064x}": np.full(4, i, np.float32) for i in range(20)}

    def put(i: int):
        with service.uow() as uow:
            uow.embeddings.put_many("bb", dict(list(vectors.items())[i % 3:]))
            uow.commit()

    race(put)
    with service.uow() as uow:
        assert uow.embeddings.count("bb") == 20
        stored = uow.embeddings.get_many("bb", list(vectors))
    assert all(np.array_equal(stored[k], v) for k, v in vectors.items())


def test_racing_creations_of_one_project_name_make_one_project_and_clear_conflicts(service):
    for rnd in range(ROUNDS):
        project, losers = one_winner(lambda: service.create_project("Same Name", workspace=f"TP{rnd}"))
        assert [e.message for e in losers] == ["a project named 'Same Name' already exists"] * (THREADS - 1)
        assert [p.id for p in service.list_projects(f"TP{rnd}")] == [project.id]
