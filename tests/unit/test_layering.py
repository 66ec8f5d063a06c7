import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    """core imports no adapter, framework or database; the adapters are independent; core's modules, and the
    probe's, form layers (import-linter)."""
    exe = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 4 kept, 0 broken" in out.stdout


def test_core_has_no_forbidden_imports_in_source():
    forbidden = ("sqlalchemy", "aiohttp", "slack_bolt", "slack_sdk", "storage", "alembic")
    for path in (ROOT / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                mod = s.split()[1]
                assert not mod.split(".")[0] in forbidden, f"{path}: {s}"
