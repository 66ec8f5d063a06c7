"""Benchmark 8: how long a `cvbot` command takes to start, next to `python -c "import sqlalchemy"`.

Each command runs in a fresh process on a temporary data directory (migrated by one untimed run first, so the
figure is a command on an up-to-date database); the contenders take turns, so that each sees the same load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .common import Config, interleaved, load_average
from .serve import CVBOT, server_env

IMPORT_SQLALCHEMY = 'python -c "import sqlalchemy"'
# what any command that opens the database imports first (the service needs numpy, the unit of work the ORM)
IMPORT_FLOOR = 'python -c "import numpy, sqlalchemy.orm"'
COMMANDS = {"cvbot --help": ["--help"], "cvbot project list --json": ["project", "list", "--json"]}
TARGET_S = 0.6


def run(cfg: Config, tmp: Path) -> dict:
    env = server_env(tmp / "data")
    cvbot = [CVBOT] if Path(CVBOT).is_file() else [sys.executable, "-m", "cvbot"]

    def runner(argv: list[str]):
        return lambda: subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    contenders = {name: runner(cvbot + args) for name, args in COMMANDS.items()}
    contenders[IMPORT_SQLALCHEMY] = runner([sys.executable, "-c", "import sqlalchemy"])
    contenders[IMPORT_FLOOR] = runner([sys.executable, "-c", "import numpy, sqlalchemy.orm"])
    for fn in contenders.values():  # untimed: creates and migrates the database, writes bytecode caches
        fn()
    timings = interleaved(contenders, cfg.pick(9, 3))
    reference = timings[IMPORT_SQLALCHEMY]["median_s"]
    return {
        "runs": cfg.pick(9, 3), "load_average": load_average(), "target_s": TARGET_S,
        "commands": {name: {"median_s": round(t["median_s"], 3), "best_s": round(t["best_s"], 3),
                            "times_s": t["times_s"]} for name, t in timings.items()},
        "ratio_to_import_sqlalchemy": {name: round(timings[name]["median_s"] / reference, 2) for name in COMMANDS},
    }
