"""Real photos no one here made: Debian's tuxpaint-stamps-default, through the real CLI and backbone."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TUXPAINT, env_with, missing_debian_data, tuxpaint_categories

CVBOT = str(Path(sys.executable).parent / "cvbot")
CATEGORIES = tuxpaint_categories(min_images=30)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(len(CATEGORIES) < 8, reason=missing_debian_data("tuxpaint-stamps-default")),
]


def test_tuxpaint_kfold_accuracy_on_compact(tmp_path, model_dir):
    root = tmp_path / "stamps"
    total = 0
    for name, files in CATEGORIES.items():
        (root / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / name / "-".join(f.relative_to(TUXPAINT).parts))
            total += 1
    env = env_with(tmp_path, CVBOT_MODEL_DIR=str(model_dir))

    def cvbot(*args):
        out = subprocess.run([CVBOT, *args], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    cvbot("project", "create", "stamps", "--domain", "Compact")
    imported = json.loads(cvbot("import", str(root), "--project", "stamps", "--json"))
    counts = imported["counts"]
    # a few stamps ship byte-identical in two categories: a Multiclass image takes one tag, so they are refused
    assert counts.get("OK", 0) + counts.get("OKDuplicate", 0) + counts.get("ErrorConflictingTags", 0) == total
    assert counts.get("OK", 0) >= total - 10
    result = json.loads(cvbot("train", "--project", "stamps", "--json"))
    perf = result["performance"]
    print(f"tuxpaint: {perf['imageCount']} images, {len(perf['perTagPerformance'])} tags, "
          f"k-fold top-1 accuracy {perf['accuracy']:.3f}, macro AP {perf['averagePrecision']:.3f}, "
          f"trained in {result['trainingSeconds']:.1f} s")
    assert len(perf["perTagPerformance"]) == 8
    assert perf["folds"] == 5
    assert perf["accuracy"] >= 0.85
