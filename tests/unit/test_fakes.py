"""The fakes behave like the database where the rules' tests depend on it: transactions and copies."""
import inspect

import pytest

from core import ports
from core.model import Project
from tests import fakes


def test_changes_are_seen_by_other_units_of_work_only_after_commit():
    db = fakes.FakeDatabase()
    with db() as writer:
        writer.projects.add(Project("p"))
        with db() as reader:
            assert reader.projects.list() == []
        writer.commit()
    with db() as reader:
        assert [p.name for p in reader.projects.list()] == ["p"]


def test_leaving_without_commit_rolls_back():
    db = fakes.FakeDatabase()
    with db() as uow:
        uow.projects.add(Project("kept"))
        uow.commit()
    with pytest.raises(RuntimeError), db() as uow:
        uow.projects.add(Project("lost"))
        raise RuntimeError
    with db() as uow:
        assert [p.name for p in uow.projects.list()] == ["kept"]


def test_objects_are_copied_so_a_missing_update_changes_nothing():
    db = fakes.FakeDatabase()
    project = Project("p")
    with db() as uow:
        uow.projects.add(project)
        project.name = "changed after add"
        uow.projects.get(project.id).name = "changed after get"
        uow.commit()
    with db() as uow:
        assert uow.projects.get(project.id).name == "p"


@pytest.mark.parametrize("port, fake", [
    (ports.ProjectRepository, fakes.FakeProjects), (ports.TagRepository, fakes.FakeTags),
    (ports.ImageRepository, fakes.FakeImages), (ports.IterationRepository, fakes.FakeIterations),
    (ports.EmbeddingRepository, fakes.FakeEmbeddings), (ports.PredictionRepository, fakes.FakePredictions),
    (ports.ChannelRepository, fakes.FakeChannels), (ports.MessageRepository, fakes.FakeMessages),
    (ports.KeyRepository, fakes.FakeKeys), (ports.ExportRepository, fakes.FakeExports),
    (ports.SecretRepository, fakes.FakeSecrets), (ports.VariantRepository, fakes.FakeVariants),
    (ports.UnitOfWork, fakes.FakeUnitOfWork), (ports.BlobStore, fakes.FakeBlobStore),
])
def test_every_port_is_implemented(port, fake):
    assert issubclass(fake, port) and not inspect.isabstract(fake)
