import json
import os

from core.backbones.clip import _file_digest


def test_checkpoint_digest_is_remembered_and_follows_content(tmp_path):
    ckpt, cache = tmp_path / "model.pt", tmp_path / "cache"
    ckpt.write_bytes(b"weights v1")
    first = _file_digest(str(ckpt), cache)
    assert list(json.loads((cache / "checkpoint-digests.json").read_text()).values()) == [first]
    assert _file_digest(str(ckpt), cache) == first
    ckpt.write_bytes(b"weights v2, longer")
    os.utime(ckpt, ns=(1, 1))
    assert _file_digest(str(ckpt), cache) != first
