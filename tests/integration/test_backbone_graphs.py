"""The real EfficientNet-Lite0 backbone's graphs (ONNX Runtime, model files in the test cache)."""
import numpy as np

from tests.helpers import png_bytes


def test_compact_uint8_graph_matches_the_float_graph(provider):
    from core.images import decode_rgb

    bb = provider.for_domain("Compact")
    imgs = [decode_rgb(png_bytes(seed=i, size=(300, 200)), min_side=224) for i in range(3)]
    ref = bb.forward(np.stack([bb.preprocess(im) for im in imgs]))
    fast = bb.forward_uint8(np.stack([bb.preprocessing.crop(im) for im in imgs]))
    assert np.abs(fast - ref).max() <= 1e-4 * np.abs(ref).max()
