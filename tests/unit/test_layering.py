from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_core_has_no_forbidden_imports_in_source():
    forbidden = ("sqlalchemy", "aiohttp", "slack_bolt", "slack_sdk", "storage", "alembic")
    for path in (ROOT / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                mod = s.split()[1]
                assert mod.split(".")[0] not in forbidden, f"{path}: {s}"
