import numpy as np

from core.embedding import Embedder
from tests.helpers import FakeBackbone, png_bytes


def test_order_is_kept_across_batches_and_prefetch():
    colours = [(i * 20, 255 - i * 20, 7) for i in range(11)]
    data = [png_bytes(c, size=(30, 20)) for c in colours]
    bb = FakeBackbone()
    seen = []
    vecs = Embedder(bb, batch_size=4, workers=3, prefetch=2).embed([(lambda d=d: d) for d in data],
                                                                     progress=lambda d, t: seen.append((d, t)))
    assert bb.batch_sizes == [4, 4, 3]
    assert seen == [(4, 11), (8, 11), (11, 11)]
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    reds = vecs[:, 0] / vecs[:, 1]  # mean red / mean green rises with i
    assert (np.diff(reds) > 0).all()


def test_empty_input():
    assert Embedder(FakeBackbone()).embed([]).shape == (0, 4)
