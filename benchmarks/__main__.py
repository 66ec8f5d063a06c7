"""`python -m benchmarks [--quick] [--only 1,2]`: run the benchmarks of issue #5, print the tables, write
benchmarks/results.json and BENCHMARKS.md (with --quick: benchmarks/out/results-quick.json and
benchmarks/out/BENCHMARKS-quick.md, so that a quick run never replaces the published figures)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from .common import OUT_DIR, ROOT, Config, MissingData, machine

BENCHMARKS = {
    1: ("embedding", "Embedding throughput"),
    2: ("training", "Training time"),
    3: ("incremental", "Incremental retraining"),
    4: ("prediction", "Prediction latency"),
    5: ("server", "Memory and start-up"),
    6: ("accuracy", "Accuracy on real data"),
    7: ("scaling", "Scaling in images"),
    8: ("startup", "CLI start-up"),
    9: ("attack", "Hostile images"),
    10: ("blobstore", "Images on S3 versus local disk"),
    11: ("labelling", "Labelling help: suggested order and mislabel audit"),
    12: ("export_platforms", "Exported models: OpenVINO and DockerFile"),
    13: ("queue", "Job queue and workers (PostgreSQL)"),
    14: ("export_tf", "Exported models: TensorFlow"),
    15: ("unknown", "Unknown images"),
}


RUNNERS = {1: ("embedding", "run"), 2: ("training", "run_training"), 3: ("incremental", "run"),
           4: ("prediction", "run"), 5: ("server", "run"), 6: ("accuracy", "run"), 7: ("training", "run_scaling"),
           8: ("startup", "run"), 9: ("attack", "run"), 10: ("blobstore", "run"), 11: ("labelling", "run"),
           12: ("export_platforms", "run"), 13: ("queue", "run"),
           14: ("export_tf", "run"), 15: ("unknown", "run")}


def _run_one(number: int, cfg: Config, tmp: Path):
    import importlib

    module, function = RUNNERS[number]
    return getattr(importlib.import_module(f"benchmarks.{module}"), function)(cfg, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: for CI (< 2 minutes)")
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers (default: all)")
    parser.add_argument("--json", type=Path, help="where to write the results (default: see above)")
    parser.add_argument("--markdown", type=Path, help="where to write the report (default: see above)")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    cfg = Config(quick=args.quick, only=only)
    json_path = args.json or (OUT_DIR / "results-quick.json" if args.quick else ROOT / "benchmarks" / "results.json")
    md_path = args.markdown or (OUT_DIR / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md")

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: dict = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    failed, skipped = [], {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cvbot-bench-") as tmpdir:
        for number, (key, title) in BENCHMARKS.items():
            if only and number not in only:
                continue
            print(f"[{number}] {title} ...", flush=True)
            tmp = Path(tmpdir) / key
            tmp.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            try:
                data = _run_one(number, cfg, tmp)
                results["benchmarks"][key] = {"number": number, "title": title,
                                              "seconds": round(time.perf_counter() - t, 1), "results": data}
            except MissingData as e:  # not a failure: this machine lacks the data; say what to install
                skipped[number] = str(e)
                results["benchmarks"][key] = {"number": number, "title": title, "skipped": str(e)}
                print(f"[{number}] skipped: {e}", flush=True)
                continue
            except Exception as e:  # noqa: BLE001 - recorded, and the run fails at the end
                traceback.print_exc()
                failed.append(number)
                results["benchmarks"][key] = {"number": number, "title": title, "error": f"{type(e).__name__}: {e}"}
            print(f"[{number}] done in {time.perf_counter() - t:.1f} s", flush=True)
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)

    from .report import evaluate_targets, render_markdown

    if only and json_path.exists() and not args.json:  # a partial run updates the benchmarks it ran
        try:
            previous = json.loads(json_path.read_text())
            if previous.get("quick") == args.quick:
                # a benchmark skipped for want of data keeps its previous figures
                previous["benchmarks"].update({k: b for k, b in results["benchmarks"].items() if "skipped" not in b})
                previous["machine_partial_update"] = results["machine"]
                results = {**previous, "total_seconds": previous.get("total_seconds")}
        except (OSError, ValueError, KeyError):
            pass
    results["targets"] = evaluate_targets(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = render_markdown(results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md)
    print()
    print(md)
    print(f"wrote {json_path} and {md_path}")
    for number, why in skipped.items():
        print(f"benchmark {number} skipped: {why}", file=sys.stderr)
    if failed:
        print(f"benchmarks that failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
