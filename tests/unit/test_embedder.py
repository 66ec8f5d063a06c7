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


def test_uint8_path_matches_the_backbones_own_preprocessing():
    from core.embedding import normalise_batch
    from core.images import decode_rgb

    bb = FakeBackbone()
    data = [png_bytes(seed=i, size=(40 + 7 * i, 30 + 3 * i)) for i in range(5)]
    imgs = [decode_rgb(d, min_side=bb.preprocessing.size) for d in data]
    ref = np.stack([bb.preprocess(im) for im in imgs])
    fast = normalise_batch(np.stack([bb.preprocessing.crop(im) for im in imgs]), bb.preprocessing)
    assert fast.shape == ref.shape and np.abs(fast - ref).max() < 1e-5


def test_an_overridden_preprocess_is_used():
    class Custom(FakeBackbone):
        def preprocess(self, img):
            return np.full((3, 8, 8), 0.5, np.float32)

    vecs = Embedder(Custom(), batch_size=2).embed_bytes([png_bytes((200, 0, 0)), png_bytes((0, 200, 0))])
    assert np.allclose(vecs[0], vecs[1])  # the override's constant image, not the pixels


def test_pipelined_workers_keep_order_and_report_each_chunk(monkeypatch):
    import threading

    from core.embedding import normalise_batch

    class Serial(FakeBackbone):
        def __init__(self):
            super().__init__()
            self.threads = set()

        def forward_uint8_serial(self, pixels):
            self.threads.add(threading.get_ident())
            return self.forward(normalise_batch(pixels, self.preprocessing))

    colours = [(i * 12, 255 - i * 12, 7) for i in range(21)]
    data = [png_bytes(c, size=(30, 20)) for c in colours]
    bb = Serial()
    monkeypatch.setattr("core.embedding.PIPELINE_CHUNK", 8)  # chunks of min(batch size, 8) images
    seen, starts = [], []
    vecs = Embedder(bb, batch_size=4, workers=3).embed([(lambda d=d: d) for d in data],
                                                        progress=lambda d, t: seen.append((d, t)),
                                                        on_batch=lambda s, v: starts.append((s, len(v))))
    assert starts == [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 1)]
    assert seen[-1] == (21, 21) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    reds = vecs[:, 0] / vecs[:, 1]
    assert (np.diff(reds) > 0).all()
    assert np.allclose(vecs, Embedder(FakeBackbone(), batch_size=4, workers=3).embed_bytes(data), atol=1e-6)


def test_crop_resamples_only_the_square_yet_matches_resizing_the_whole_image():
    from PIL import Image

    from core.backbones.efficientnet import LITE_PREPROCESSING as p

    rng = np.random.default_rng(3)
    for size in [(640, 427), (427, 640), (300, 300), (1000, 230), (225, 900)]:
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).filter(
            __import__("PIL.ImageFilter", fromlist=["GaussianBlur"]).GaussianBlur(2))
        w, h = img.size
        scale = p.size / min(w, h)
        nw, nh = max(p.size, round(w * scale)), max(p.size, round(h * scale))
        left, top = (nw - p.size) // 2, (nh - p.size) // 2
        reference = np.asarray(img.resize((nw, nh), p.resample).crop((left, top, left + p.size, top + p.size)))
        fast = p.crop(img)
        assert fast.shape == (p.size, p.size, 3) and fast.dtype == np.uint8
        diff = np.abs(fast.astype(int) - reference)
        assert diff.max() <= 2 and diff.mean() < 0.25, (size, diff.max(), diff.mean())  # a one-pixel shift: mean ~4
