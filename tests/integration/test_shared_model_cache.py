"""Two processes (two Deps, each with its own engine and model cache) over one PostgreSQL database: the process
that predicts notices at once when the other changes the default iteration, publishes, unpublishes or deletes one.

Prediction reads the project's and the iteration's rows per request (cheap, indexed) and loads the probe by its
content-addressed blob key; the cache is keyed by that key, so it never serves an iteration no row names."""
from __future__ import annotations

import pytest

from core import errors
from core.usecases import ImageUpload
from tests.conftest import make_cv
from tests.helpers import colour_images

RED, BLUE = (220, 30, 30), (30, 40, 220)


def test_a_process_predicts_with_what_another_process_chose(tmp_path, postgres_url, provider):
    writer = make_cv(tmp_path, provider, database_url=postgres_url)  # e.g. the web process an admin talks to
    reader = make_cv(tmp_path, provider, database_url=postgres_url)  # another web process answering predictions
    assert reader.deps.artifacts is not writer.deps.artifacts
    p = writer.projects.create("shared")
    red, blue = writer.tags.create(p.id, "red"), writer.tags.create(p.id, "blue")
    for tag, colour, seed in ((red, RED, 1), (blue, BLUE, 2)):
        writer.images.add(p.id, [ImageUpload(d, f"{tag.name}{i}.png", [tag.id])
                                 for i, d in enumerate(colour_images(6, colour, seed))])
    first = writer.training.wait(p.id, writer.training.train(p.id).id, 300)
    writer.images.add(p.id, [ImageUpload(d, f"more{i}.png", [red.id]) for i, d in enumerate(colour_images(3, RED, 9))])
    second = writer.training.wait(p.id, writer.training.train(p.id).id, 300)
    assert (first.status.value, second.status.value) == ("Completed", "Completed")
    assert first.probe_key != second.probe_key
    image = colour_images(1, RED, 42)[0]

    def predict(**kw):
        return reader.predictions.predict(p.id, image, store=False, **kw)

    assert predict().iteration_id == first.id  # the first completed iteration is the default
    writer.iterations.set_default(p.id, second.id)
    assert predict().iteration_id == second.id  # no restart, no stale cache
    writer.iterations.publish(p.id, first.id, "prod")
    assert predict(publish_name="prod").iteration_id == first.id
    writer.iterations.unpublish(p.id, first.id)
    with pytest.raises(errors.NotFound):
        predict(publish_name="prod")
    writer.iterations.delete(p.id, first.id)
    with pytest.raises(errors.NotFound):
        predict(iteration_id=first.id)
    writer.iterations.delete(p.id, second.id, release_default=True)
    with pytest.raises(errors.NoDefaultIteration):
        predict()
