"""Loading open_clip weights for the CLIP backbone's export child (a small model: ViT-S-32, random weights)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from core.backbones.clip_export import WEIGHTS_ERROR, WeightsError, load_net, main  # noqa: E402

MODEL = "ViT-S-32"


@pytest.fixture(scope="module")
def reference():
    return open_clip.create_model(MODEL, pretrained=None).eval()


def _same_weights(a, b, atol=0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sb[k].dtype == v.dtype and torch.allclose(v, sb[k], atol=atol) for k, v in sa.items())


def test_a_plain_checkpoint_is_loaded_memory_mapped(reference, tmp_path):
    """The model's tensors are the mapped file's (one copy of the weights), not copies of them."""
    path = tmp_path / "plain.pt"
    torch.save(reference.state_dict(), path)
    net = load_net(MODEL, None, str(path), str(tmp_path))
    assert _same_weights(reference, net) and not net.training
    with open("/proc/self/maps") as maps:
        assert str(path) in maps.read()
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(net.encode_image(x), reference.encode_image(x), atol=1e-6)


def test_wrapped_half_precision_legacy_checkpoints_load_as_float32(reference, tmp_path):
    """{"state_dict": {"module.…": fp16}} in torch's pre-zip format: not mappable, still loaded; and the
    assigned half tensors end up float32 as the model was built."""
    path = tmp_path / "wrapped.pt"
    state = {"module." + k: v.half() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path, _use_new_zipfile_serialization=False)
    net = load_net(MODEL, None, str(path), str(tmp_path))
    assert _same_weights(reference, net, atol=2e-3)


def test_weights_that_cannot_be_had_raise_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="no-such-tag.*known: .*laion2b_s34b_b79k"):
        load_net("ViT-B-32", "no-such-tag", None, str(tmp_path))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(WeightsError):
        load_net(MODEL, None, str(junk), str(tmp_path))
    out = tmp_path / "out" / "visual.onnx"
    assert main([str(out), "--id", "x", "--model", MODEL, "--checkpoint", str(junk), "--cache-dir", str(tmp_path)]) \
        == WEIGHTS_ERROR
    assert not out.parent.exists()


def test_the_export_child_writes_the_graph_and_its_sidecar(reference, tmp_path):
    import json

    import onnxruntime as ort

    path = tmp_path / "plain.pt"
    torch.save(reference.state_dict(), path)
    out = tmp_path / "cache" / "visual.onnx"
    assert main([str(out), "--id", "clip-x", "--model", MODEL, "--checkpoint", str(path),
                 "--cache-dir", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "cache" / "visual.onnx.json").read_text())
    assert meta["id"] == "clip-x" and meta["size"] == 224 and meta["dim"] == reference.visual.output_dim
    assert sorted(p.name for p in out.parent.iterdir()) == ["visual.onnx", "visual.onnx.data", "visual.onnx.json"]
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.inference_mode():
        assert np.abs(got - reference.encode_image(torch.from_numpy(x)).numpy()).max() < 1e-4
