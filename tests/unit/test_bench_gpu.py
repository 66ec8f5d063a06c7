"""benchmarks/gpu.py: the clean fallback without CUDA, and its measuring code run on the CPU."""
import json

import numpy as np
import pytest

from tests.helpers import jpeg_bytes, png_bytes


def test_without_cuda_it_says_so_and_writes_the_file(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from benchmarks import gpu

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main() == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert "CUDA is not available" in result["skipped"]
    assert "CUDA is not available" in capsys.readouterr().err


def test_measuring_code_runs_end_to_end_on_cpu():
    torch = pytest.importorskip("torch")
    from benchmarks import gpu
    from core.backbones.base import Preprocessing

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten()).eval()
    p = Preprocessing(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    items = [png_bytes(seed=i, size=(40, 30)) for i in range(5)] + [jpeg_bytes(size=(90, 60), seed=i) for i in range(4)]
    with torch.inference_mode():
        raw = gpu._raw(torch, net, 32, (2, 4), 0.05, device="cpu", dtype=torch.float32)
        rate = gpu._end_to_end(torch, net, p, items, 4, 2, device="cpu", dtype=torch.float32)
    assert set(raw) == {"2", "4"} and all(v > 0 for v in raw.values())
    assert rate > 0 and np.isfinite(rate)
