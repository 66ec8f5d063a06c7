"""Two processes (two Deps, each with its own engine and in-process train lock) asked to train one project at the
same moment: one iteration is queued, the other caller is told a training is in progress; on SQLite and
PostgreSQL."""
from __future__ import annotations

import threading

import pytest

from core import errors
from core.model import IterationStatus
from core.usecases import ImageUpload, Scope, UseCases
from tests.conftest import make_deps
from tests.fakes import ManualRunner
from tests.helpers import colour_images


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'shared.db'}"


def test_two_processes_training_one_project_at_once_queue_one_iteration(tmp_path, provider, database_url):
    processes = [UseCases(make_deps(tmp_path, provider, ManualRunner(), database_url), Scope.of("default"))
                 for _ in range(2)]
    cv = processes[0]
    p = cv.projects.create("race")
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        tag = cv.tags.create(p.id, name)
        cv.images.add(p.id, [ImageUpload(d, f"{name}{i}.png", [tag.id])
                             for i, d in enumerate(colour_images(5, colour, len(name)))])
    for attempt in range(3):  # a few rounds: the race must be lost every time, not by luck once
        start = threading.Barrier(2)
        outcomes: list[object] = [None, None]

        def train(i: int, start=start, outcomes=outcomes) -> None:
            start.wait()
            try:
                outcomes[i] = processes[i].training.train(p.id, force=True)
            except errors.CvError as e:
                outcomes[i] = e

        threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        refused = [o for o in outcomes if isinstance(o, errors.TrainingInProgress)]
        assert len(refused) == 1, outcomes
        queued = [i for i in cv.iterations.list(p.id) if i.status == IterationStatus.Queued]
        assert len(queued) == 1 and queued[0].number == attempt + 1
        with cv.deps.uow() as uow:  # let the next round train again: the queued one is given up
            it = uow.iterations.get(queued[0].id)
            it.status = IterationStatus.Failed
            uow.iterations.update(it)
            uow.commit()
