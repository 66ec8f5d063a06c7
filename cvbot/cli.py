"""The `cvbot` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

# Only light modules here: `cvbot --help` builds its parser without the engine, and each command imports what
# it needs (tests/e2e/test_cli_startup.py checks that `cvbot project list` loads no heavy library).
from core import errors
from core.model import DEFAULT_WORKSPACE, IterationStatus, TagType
from core.rules import new_tag_names
from core.views import image_result_json, iteration_json, prediction_json, project_json, tag_json

if TYPE_CHECKING:
    from core.usecases import UseCases

    from .config import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".jfif"}
IMPORT_BATCH = 64


def _table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


class Cli:
    def __init__(self, args: argparse.Namespace, settings: Settings):
        self.args = args
        self.settings = settings
        self._container = None

    @property
    def container(self):
        if self._container is None:
            from .bootstrap import bootstrap

            self._container = bootstrap(self.settings, recover=False)
        return self._container

    @property
    def cv(self) -> UseCases:
        """The use cases in the default workspace: the CLI's projects are the ones made here."""
        return self.usecases(DEFAULT_WORKSPACE)

    def usecases(self, workspace: str) -> UseCases:
        from core.usecases import Scope

        return self.container.usecases(Scope.of(workspace))

    def out(self, data, text: str) -> None:
        if self.args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            print(text)

    def project(self):
        return self.cv.projects.find(self.args.project)

    # ------------------------------------------------------------- commands
    def cmd_project_create(self):
        a = self.args
        from core.backbones import zero_shot as answers_zero_shot  # numpy: only here, not at every start

        names = new_tag_names(a.tags.split(",")) if a.tags is not None else []
        p = self.cv.projects.create(a.name, a.domain or self.settings.default_domain, a.type, a.description or "")
        tags = self.cv.tags.get_or_create(p.id, names) if names else []
        text = f"created project '{p.name}' ({p.domain.value}, {p.classification_type.value}) id {p.id}"
        if tags:
            text += "\ntags: " + ", ".join(t.name for t in tags)
            if answers_zero_shot(p.domain) and sum(t.type == TagType.Regular for t in tags) >= 2:
                text += "\n`cvbot predict` answers zero-shot from the tag names until the first training"
        self.out(project_json(p) | {"tags": [tag_json(t) for t in tags]}, text)

    def cmd_project_list(self):
        rows, data = [], []
        for p in self.cv.projects.list():
            s = self.cv.projects.summary(p.id)
            rows.append([p.name, p.domain.value, p.classification_type.value, s.image_count, s.iteration_count,
                         s.default_iteration.number if s.default_iteration else "-", p.threshold])
            data.append(project_json(p) | {"imageCount": s.image_count, "iterationCount": s.iteration_count})
        self.out(data, _table(rows, ["project", "domain", "type", "images", "iterations", "default", "threshold"])
                 if rows else "no projects yet: cvbot project create NAME")

    def cmd_project_update(self):
        a = self.args
        p = self.cv.projects.find(a.name)
        p = self.cv.projects.update(p.id, name=a.rename, description=a.description, domain=a.domain,
                                    classification_type=a.type, threshold=a.threshold,
                                    unknown_threshold=a.unknown_threshold)
        self.out(project_json(p), f"updated project '{p.name}': {p.domain.value}, {p.classification_type.value}, "
                                  f"threshold {p.threshold}, unknown threshold "
                                  f"{project_json(p)['settings']['cvbot']['unknownThreshold']}")

    def cmd_project_settings(self):
        """cvbot's own settings of a project (scheduled jobs): shown, or changed with --retrain / --retention."""
        a = self.args
        p = self.cv.projects.find(a.name)
        if a.retrain is not None or a.retention is not None:
            p = self.cv.projects.update(p.id, retrain=a.retrain, prediction_retention=a.retention)
        days = p.prediction_retention_days
        install = self.settings.prediction_retention_days
        kept = ("for ever" if days == 0 else f"{days} days" if days else
                f"the install's default ({f'{install} days' if install else 'for ever'})")
        self.out(project_json(p)["settings"]["cvbot"],
                 f"project '{p.name}': retraining {p.retrain or 'off'}, stored predictions kept {kept}")

    def cmd_project_delete(self):
        p = self.cv.projects.find(self.args.name)
        if not self.args.yes:
            raise errors.InvalidInput(f"deleting '{p.name}' removes its images and iterations; add --yes to confirm")
        self.cv.projects.delete(p.id)
        self.out({"deleted": p.id}, f"deleted project '{p.name}'")

    def cmd_project_copy(self):
        p = self.cv.projects.find(self.args.name)
        copy = self.cv.transfer.copy(p.id, self.args.new_name, created_by="cli")
        s = self.cv.projects.summary(copy.id)
        self.out(project_json(copy) | {"imageCount": s.image_count},
                 f"copied '{p.name}' to '{copy.name}' ({s.image_count} images) id {copy.id}")

    def cmd_dataset_export(self):
        import os
        import tempfile

        from tqdm import tqdm

        p = self.project()
        target = Path(self.args.output or f"{p.name}.zip")
        if not target.parent.is_dir():
            raise errors.InvalidInput(f"{target.parent} is not a folder")
        bar = tqdm(unit="img", desc=f"exporting {p.name}", disable=self.args.json or None, file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        # written beside the target and renamed into place: an interrupted export leaves no half archive
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent.resolve())
        try:
            with os.fdopen(fd, "wb") as f:
                summary = self.cv.transfer.export_dataset(p.id, f, progress)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        self.out({"project": p.id, "file": str(target), "images": summary.images, "bytes": target.stat().st_size},
                 f"exported {summary.images} images of '{p.name}' to {target} ({target.stat().st_size:,} bytes)")

    def cmd_dataset_import(self):
        from tqdm import tqdm

        source = Path(self.args.archive)
        if not source.is_file():
            raise errors.InvalidInput(f"{source} is not a file")
        bar = tqdm(unit="img", desc=f"importing {source.name}", disable=self.args.json or None, file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            summary = self.cv.transfer.import_dataset(str(source), self.args.project, progress, created_by="cli")
        finally:
            bar.close()
        p = summary.project
        self.out(project_json(p) | {"imageCount": summary.images},
                 f"imported {summary.images} images into new project '{p.name}' "
                 f"({p.domain.value}, {p.classification_type.value}) id {p.id}")

    def cmd_migrate(self):
        import os

        from tqdm import tqdm

        from .source import HttpSource

        key = self.args.training_key or os.environ.get("CVBOT_SOURCE_TRAINING_KEY", "")
        source = HttpSource(self.args.from_endpoint, key)
        bars: dict[str, tqdm] = {}

        def progress(p) -> None:
            bar = bars.get(p.project)
            if bar is None:
                for old in bars.values():
                    old.close()
                bar = bars[p.project] = tqdm(total=p.total, unit="img", desc=f"migrating {p.project}",
                                             disable=self.args.json or None, file=sys.stderr)
            bar.total = p.total
            bar.update(p.done - bar.n)

        try:
            summary = self.cv.migration.run(source, self.args.project or (), progress)
        finally:
            for bar in bars.values():
                bar.close()
        data = summary.as_json()
        trained = []
        if self.args.train:
            for outcome in summary.projects:
                if outcome.target_id and not outcome.skipped:
                    if not self.args.json:
                        print(f"training '{outcome.target_name}'…", file=sys.stderr)
                    try:
                        trained.append(self.cv.migration.train(source, outcome))
                    except errors.CvError as e:
                        trained.append({"project": outcome.target_name, "failure": e.message})
            data["training"] = trained
        self.out(data, _migration_text(data))
        return 1 if data["failures"] else 0

    def cmd_export(self):
        import os
        import tempfile
        import time

        from tqdm import tqdm

        from core.export import exporter
        from core.usecases import export_file

        p = self.project()
        it = self._iteration(p)
        target = Path(self.args.output)
        if not target.parent.is_dir():
            raise errors.InvalidInput(f"{target.parent} is not a folder")
        export = self.cv.exports.start(p.id, it.id, self.args.platform, self.args.flavor)
        what = f"{export.platform}{f' ({export.flavor})' if export.flavor else ''}"
        desc = f"exporting iteration {it.number} of {p.name} to {what}"
        if not self.args.json:
            print(f"{desc}…", file=sys.stderr)
        bar = tqdm(desc=desc, unit="s", bar_format="{desc}: {n} s", disable=self.args.json or None, file=sys.stderr)
        try:
            started = time.monotonic()
            while export.status == "Exporting":
                time.sleep(0.25)
                export = next(e for e in self.cv.exports.list(p.id, it.id) if e.id == export.id)
                bar.n = int(time.monotonic() - started)
                bar.refresh()
        finally:
            bar.close()
        data = {"project": p.id, "iteration": it.number, "platform": export.platform, "flavor": export.flavor,
                "status": export.status.value}
        if export.status != "Done":
            self.out(data | {"failureReason": export.failure_reason},
                     f"export of iteration {it.number} to {what} failed: {export.failure_reason}")
            return 1
        # written beside the target and renamed into place: an interrupted download leaves no half zip
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent.resolve())
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(export_file(self.container.deps, it.id, export.id))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        usage = exporter(export.platform).usage
        self.out(data | {"file": str(target), "bytes": target.stat().st_size},
                 f"exported iteration {it.number} of '{p.name}' to {what}: {target} ({target.stat().st_size:,} bytes)"
                 + (f"\n{usage}" if usage else ""))
        return 0

    def cmd_tags(self):
        p = self.project()
        tags = self.cv.tags.list(p.id)
        self.out([tag_json(t) for t in tags], _table([[t.name, t.type.value, t.image_count] for t in tags],
                                                   ["tag", "type", "images"]))

    def cmd_import(self):
        import hashlib

        from tqdm import tqdm

        from core.usecases import ImageUpload

        root = Path(self.args.dir)
        if not root.is_dir():
            raise errors.InvalidInput(f"{root} is not a folder")
        p = self.project()
        files: dict[Path, list[str]] = {}
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                rel = f.relative_to(root)
                folder = rel.parts[0].strip() if len(rel.parts) > 1 else ""  # ' cat ' is the tag 'cat'
                files[f] = [folder] if folder else []
        by_content: dict[bytes, tuple[Path, set[str]]] = {}
        copies: list[tuple[Path, Path]] = []
        for f, tags in files.items():
            digest = hashlib.sha256(f.read_bytes()).digest()
            first, names = by_content.setdefault(digest, (f, set()))
            names.update(tags)
            if first != f:
                copies.append((f, first))
        tag_ids = {t.name.lower(): t.id for t in self.cv.tags.get_or_create(
            p.id, sorted({n for _, names in by_content.values() for n in names}))}
        negative = next((t for t in self.cv.tags.list(p.id) if t.type.value == "Negative"), None)

        def ids(names: set[str]) -> list[str]:
            out = [negative.id if n.lower() == "negative" and negative else tag_ids[n.lower()] for n in sorted(names)]
            return list(dict.fromkeys(out))  # folders 'Cat' and 'cat' are one tag

        counts: Counter = Counter(OKDuplicate=len(copies)) if copies else Counter()
        results = [{"sourceUrl": str(f.relative_to(root)), "status": "OKDuplicate",
                    "message": f"same content as {first.relative_to(root)}"} for f, first in copies]
        items = list(by_content.values())
        multiclass = p.classification_type.value == "Multiclass"
        bar = tqdm(total=len(items), unit="img", desc=f"importing into {p.name}", disable=self.args.json or None,
                   file=sys.stderr)
        for i in range(0, len(items), IMPORT_BATCH):
            uploads = []
            for f, names in items[i:i + IMPORT_BATCH]:
                if multiclass and len(names) > 1:
                    counts["ErrorConflictingTags"] += 1
                    results.append({"sourceUrl": str(f.relative_to(root)), "status": "ErrorConflictingTags",
                                    "message": f"same image in folders {sorted(names)}; "
                                               "a Multiclass image takes one tag"})
                    continue
                uploads.append(ImageUpload(f.read_bytes(), str(f.relative_to(root)), ids(names)))
            for r in self.cv.images.add(p.id, uploads, source="import", uploaded_by="cli"):
                counts[r.status] += 1
                results.append(image_result_json(r))
            bar.update(len(items[i:i + IMPORT_BATCH]))
        bar.close()
        text = "\n".join([f"imported {len(files)} image files into '{p.name}':"] +
                         [f"  {status}: {n}" for status, n in sorted(counts.items())] +
                         [f"  {r['sourceUrl']}: {r['status']} {r['message']}" for r in results
                          if r["status"] not in ("OK", "OKDuplicate")])
        self.out({"counts": dict(counts), "results": results}, text)
        if counts and not (counts["OK"] + counts["OKDuplicate"]):
            return 1

    def cmd_train(self):
        from tqdm import tqdm

        p = self.project()
        it = self.cv.training.train(p.id, force=self.args.force)
        bars: dict[str, tqdm] = {}
        quiet = self.args.json

        def show(progress):
            if quiet or progress.iteration_id != it.id:
                return
            if progress.stage == "embedding":
                bar = bars.get("embed") or bars.setdefault(
                    "embed", tqdm(total=progress.total, desc="embedding", unit="img", file=sys.stderr))
                bar.n = progress.done
                bar.refresh()
            elif progress.stage not in ("done",):
                print(f"{progress.describe()}…", file=sys.stderr)

        unsubscribe = self.container.deps.progress.subscribe(show)
        try:
            it = self.cv.training.wait(p.id, it.id)
        finally:
            unsubscribe()
            for b in bars.values():
                b.close()
        if it.status == IterationStatus.Failed:
            self.out(iteration_json(it), f"iteration {it.number} failed: {it.failure_reason}")
            return 1
        perf = self.cv.iterations.performance(p.id, it.id)
        self.out(iteration_json(it, it.id if self.cv.projects.get(p.id).default_iteration_id == it.id else None)
                 | {"performance": perf},
                 f"iteration {it.number} trained in {it.training_seconds:.1f} s\n" + _performance_text(perf))

    def cmd_performance(self):
        p = self.project()
        it = self._iteration(p)
        perf = self.cv.iterations.performance(p.id, it.id, self.args.threshold)
        self.out(perf, f"iteration {it.number} of '{p.name}'\n" + _performance_text(perf))

    def cmd_predict(self):
        p = self.project()
        it_id = self._iteration(p).id if self.args.iteration else None
        out, lines, failed = [], [], 0
        for f in self.args.files:
            try:
                pred = self.cv.predictions.predict(p.id, Path(f).read_bytes(), iteration_id=it_id,
                                                   store=not self.args.no_store)
            except (errors.CvError, OSError) as e:
                failed += 1
                msg = e.message if isinstance(e, errors.CvError) else str(e)
                out.append({"file": f, "error": msg})
                print(f"{f}: error: {msg}", file=sys.stderr)
                continue
            out.append({"file": f} | prediction_json(pred))
            top = pred.above_threshold
            shown = ", ".join(f"{x.tag_name} {x.probability:.3f}" for x in (top or pred.predictions[:1]))
            if pred.unknown:
                closest = ", ".join(f"{x.tag_name} {x.probability:.3f}" for x in pred.predictions[:3])
                lines.append(f"{f}: not recognised (unknown score {pred.unknown_score:.2f}); closest: {closest}")
                continue
            lines.append(f"{f}: {shown}" + ("" if top else f" (no tag above threshold {pred.threshold}; best guess)"))
            if pred.zero_shot:
                lines[-1] += " (zero-shot: from the tag names, no iteration trained yet)"
        self.out(out, "\n".join(lines))
        return 1 if failed else 0

    def cmd_suggest(self):
        p = self.project()
        it_id = self._iteration(p).id if self.args.iteration else None
        found = self.cv.labelling.suggest(p.id, it_id)[:self.args.take]
        data = [_suggestion_json(s) for s in found]
        rows = [[s.image.id, s.image.original_name, s.best.tag_name if s.best else "",
                 f"{s.best.probability:.3f}" if s.best else "", f"{s.uncertainty:.3f}"] for s in found]
        text = (_table(rows, ["image", "name", "suggested tag", "probability", "uncertainty"]) if rows
                else f"'{p.name}' has no untagged images to suggest tags for")
        self.out(data, text)

    def cmd_audit(self):
        p = self.project()
        a = self.args
        if a.keep or a.retag:
            if a.keep:
                img = self.cv.labelling.keep(p.id, a.keep, "cli")
                msg = f"kept the tags of image {img.id}; the audit will not ask about it again until they change"
            else:
                image_id, names = a.retag[0], a.retag[1:]
                if not names:
                    raise errors.InvalidInput("name the new tags: --retag IMAGE_ID TAG [TAG ...]")
                tags = self.cv.tags.get_or_create(p.id, names)
                img = self.cv.labelling.retag(p.id, image_id, [t.id for t in tags], "cli")
                msg = f"image {img.id} is now tagged {', '.join(t.name for t in tags)}"
            self.out({"imageId": img.id, "tagIds": img.tag_ids}, msg)
            return 0
        it_id = self._iteration(p).id if a.iteration else None
        found = self.cv.labelling.audit(p.id, it_id, include_decided=a.all)[:a.take]
        data = [_audit_json(x) for x in found]
        rows = [[x.image.id, x.image.original_name, ", ".join(x.tag_names), ", ".join(x.suggested_names),
                 f"{x.score:.3f}"] for x in found]
        text = (_table(rows, ["image", "name", "tags", "suggested", "score"]) if rows
                else f"nothing to audit in '{p.name}'")
        self.out(data, text)

    def cmd_untagged(self):
        p = self.project()
        a = self.args
        if a.delete_all or a.delete:
            ids = [i.id for i in self.cv.images.list(p.id, tagged=False)] if a.delete_all else a.delete
            untagged = {i.id for i in self.cv.images.get_many(p.id, ids) if not i.tag_ids}
            if set(ids) - untagged:
                raise errors.InvalidInput(f"{sorted(set(ids) - untagged)[0]} is not an untagged image of this project")
            n = self.cv.images.delete(p.id, ids) if ids else 0
            self.out({"deleted": n}, f"deleted {n} untagged image{'s' if n != 1 else ''} of '{p.name}'")
            return 0
        images = self.cv.images.list(p.id, tagged=False)
        self.out([{"id": i.id, "originalName": i.original_name, "created": i.created_at.isoformat(),
                   "source": i.source} for i in images],
                 _table([[i.id, i.original_name, i.source, i.created_at.isoformat()] for i in images],
                        ["image", "name", "source", "added"]) if images else f"'{p.name}' has no untagged images")

    def cmd_iterations(self):
        p = self.project()
        default = self.cv.projects.get(p.id).default_iteration_id
        its = self.cv.iterations.list(p.id)
        rows = []
        for it in its:
            perf = it.performance or {}
            rows.append([it.number, it.name, it.status.value, perf.get("precision"), perf.get("recall"),
                         perf.get("averagePrecision"), "*" if it.id == default else "", it.failure_reason or ""])
        self.out([iteration_json(i, default) for i in its],
                 _table(rows, ["#", "name", "status", "precision", "recall", "AP", "default", "note"])
                 if rows else "no iterations yet")

    def cmd_iteration(self):
        p = self.project()
        it = self.cv.iterations.by_number(p.id, self.args.number)
        action = self.args.action
        if action == "default":
            self.cv.iterations.set_default(p.id, it.id)
            msg = f"iteration {it.number} is now the default of '{p.name}'"
        elif action == "rename":
            if not self.args.name:
                raise errors.InvalidInput("rename needs a new name")
            it = self.cv.iterations.rename(p.id, it.id, self.args.name)
            msg = f"iteration {it.number} renamed to '{it.name}'"
        else:
            self.cv.iterations.delete(p.id, it.id)
            msg = f"iteration {it.number} deleted"
        self.out({"result": msg}, msg)

    def cmd_keys(self):
        keys = self.usecases(self.args.workspace).channels.keys(regenerate=self.args.regenerate)
        configured = self.settings.training_key or self.settings.prediction_key
        note = ("\nnote: CVBOT_TRAINING_KEY / CVBOT_PREDICTION_KEY are set and also accepted for the default workspace"
                if configured else "")
        self.out({"workspace": keys.workspace, "trainingKey": keys.training_key, "predictionKey": keys.prediction_key},
                 f"workspace {keys.workspace}\ntraining key:   {keys.training_key}\n"
                 f"prediction key: {keys.prediction_key}{note}")

    def cmd_doctor(self):
        from core.usecases import doctor

        from .bootstrap import bootstrap

        repair = bool(getattr(self.args, "repair", False))
        self._container = bootstrap(self.settings, recover=False,
                                    lock="exclusive" if repair else "prefer-exclusive")
        report = doctor(self._container.deps, repair=repair, exclusive=self._container.lock.exclusive)
        self.out(report.as_dict(), _doctor_text(report, self.settings))
        return 0 if report.ok else 1

    def cmd_schedule_list(self):
        from core.usecases import Schedule

        runs = Schedule(self.container.deps).runs(self.args.job, self.args.limit)
        data = [{"job": r.job, "slot": r.slot, "owner": r.owner, "status": r.status.value,
                 "started": r.started_at, "finished": r.finished_at, "result": r.result} for r in runs]
        rows = [[r.job, r.slot, r.status.value, r.owner, r.started_at, json.dumps(r.result, default=str)[:60]]
                for r in runs]
        self.out(data, _table(rows, ["job", "slot", "status", "owner", "started", "result"]) if runs
                 else "no scheduled job has run yet")

    def cmd_schedule_run(self):
        """Run a scheduled job now, in this process (its own slot: it never stands in for a scheduled one)."""
        from core.model import utcnow
        from core.usecases import JOBS, run_once

        from .scheduler import owner_name

        name, deps = self.args.job, self.container.deps
        if name not in JOBS:
            raise errors.InvalidInput(f"no scheduled job named {name!r}; the jobs are {', '.join(JOBS)}")
        slot = "manual " + utcnow().isoformat()
        run = run_once(deps, name, slot, owner_name(), lambda: JOBS[name](deps, self.settings.schedule_settings()))
        if run is None:
            raise errors.CvError(f"{name} was started by another process this very second; try again")
        from core.usecases import Scope

        training = self.container.usecases(Scope.system()).training
        for started in (run.result or {}).get("started", []):  # this process ends with the command: finish them
            done = training.wait(started["project"], started["iteration"])
            started["status"] = done.status.value
        self.out({"job": name, "slot": slot, "status": run.status.value, "result": run.result},
                 f"{name}: {run.status.value} {json.dumps(run.result, default=str)}")
        return 0 if run.status.value == "Done" else 1

    def cmd_move(self):
        """Copy this install (database rows and the blobs they reference) to another database and blob store."""
        from sqlalchemy.engine import make_url
        from tqdm import tqdm

        from storage import make_engine, migrate
        from storage.move import copy_blobs, copy_rows, row_counts, verify_blobs

        from .bootstrap import bootstrap

        target_url = self.args.to_database
        shown = make_url(target_url).render_as_string(hide_password=True)
        if make_url(target_url) == make_url(self.settings.database_url):
            raise errors.InvalidInput("--to-database is this install's own database; name the new one")
        # the source to ourselves: nothing may change while it is copied (refused while a server runs)
        self._container = bootstrap(self.settings, recover=False, lock="exclusive")
        source_blobs = self._container.deps.blobs
        target_blobs = self._target_blobs(self.args.to_blobs)
        engine = make_engine(target_url)
        try:
            migrate(engine)
            filled = {t: n for t, n in row_counts(engine).items() if n}
            if filled:
                raise errors.Conflict(f"the target database {shown} is not empty ("
                                      + ", ".join(f"{n} rows in {t}" for t, n in sorted(filled.items()))
                                      + "); cvbot move fills only a new, empty database", code="BadRequest")
            source_engine = make_engine(self.settings.database_url)
            source_rows = row_counts(source_engine)
            with self._container.deps.uow() as uow:
                keys = sorted(uow.referenced_blob_keys())
            quiet = self.args.json or None
            with tqdm(total=len(keys), unit="blob", desc="copying blobs", disable=quiet, file=sys.stderr) as bar:
                def blob_done(n: int, size: int) -> None:
                    bar.update(n)

                blobs = copy_blobs(keys, source_blobs, target_blobs, workers=self.args.workers, progress=blob_done)
            if blobs.failures:
                data = {"ok": False, "failures": blobs.failures, "blobs": blobs.referenced}
                self.out(data, f"{len(blobs.failures)} of {blobs.referenced} blobs could not be copied; no row was "
                         "copied (the target database is still empty):\n"
                         + "\n".join(f"  {f}" for f in blobs.failures[:50])
                         + "\nrun `cvbot doctor` on this install, fix what it reports, then run cvbot move again")
                return 1
            with tqdm(total=sum(source_rows.values()), unit="row", desc="copying rows", disable=quiet,
                      file=sys.stderr) as bar:
                copy_rows(source_engine, engine, lambda _t, n: bar.update(n))
            target_rows = row_counts(engine)
            count, size, missing = verify_blobs(keys, target_blobs, workers=self.args.workers)
            source_engine.dispose()
        finally:
            engine.dispose()
        ok = target_rows == source_rows and count == len(keys) and size == blobs.bytes and not missing
        data = {"ok": ok, "database": shown, "blobs": str(self.args.to_blobs),
                "tables": {t: {"source": source_rows[t], "target": target_rows.get(t, 0)} for t in source_rows},
                "blobCount": {"source": len(keys), "target": count, "copied": blobs.copied,
                              "alreadyThere": blobs.present},
                "blobBytes": {"source": blobs.bytes, "target": size}, "missing": missing[:50]}
        rows = [[t, v["source"], v["target"], "ok" if v["source"] == v["target"] else "DIFFERS"]
                for t, v in data["tables"].items()]
        rows.append(["blobs", len(keys), count, "ok" if count == len(keys) and not missing else "DIFFERS"])
        rows.append(["blob bytes", f"{blobs.bytes:,}", f"{size:,}", "ok" if size == blobs.bytes else "DIFFERS"])
        text = (f"moved to {shown} + {self.args.to_blobs} ({blobs.copied} blobs copied, {blobs.present} were there "
                "already); nothing was deleted here\n" + _table(rows, ["", "source", "target", "check"]))
        if ok:
            blob_env = (f"CVBOT_BLOB_URL={self.args.to_blobs}" if str(self.args.to_blobs).startswith("s3://")
                        else f"(blobs in {self.args.to_blobs}: point CVBOT_DATA_DIR's blobs/ there)")
            text += f"\nall counts match. Start cvbot with DATABASE_URL={shown} {blob_env}"
        else:
            text += "\nCOUNTS DIFFER: do not switch over; see the rows marked DIFFERS"
        self.out(data, text)
        return 0 if ok else 1

    def _target_blobs(self, where: str):
        from dataclasses import replace

        from storage import LocalBlobStore

        from .bootstrap import make_blob_store
        from .config import _blob_url

        if where.startswith("s3://"):
            try:
                url = _blob_url(where)
            except ValueError as e:
                raise errors.InvalidInput(str(e).replace("CVBOT_BLOB_URL", "--to-blobs")) from None
            if url == self.settings.blob_url:
                raise errors.InvalidInput("--to-blobs is this install's own blob store; name the new one")
            return make_blob_store(replace(self.settings, blob_url=url))
        path = Path(where).resolve()
        if not self.settings.blob_url and path == (self.settings.data_dir / "blobs").resolve():
            raise errors.InvalidInput("--to-blobs is this install's own blob directory; name the new one")
        return LocalBlobStore(path)

    def cmd_serve(self):
        from .server import serve

        serve(self.settings, self.args.host, self.args.port, jobs=False if self.args.no_jobs else None)

    def cmd_worker(self):
        if not self.settings.uses_postgres:
            raise errors.InvalidInput(
                "cvbot worker needs PostgreSQL (DATABASE_URL=postgresql+psycopg://...): workers take jobs from a queue "
                "in the database that every process shares. With SQLite (one machine, one file), cvbot serve runs "
                "every job itself, so no worker is needed")
        from .bootstrap import bootstrap
        from .worker import run_worker

        self._container = bootstrap(self.settings, recover=False, jobs="queue")
        run_worker(self._container)

    def _iteration(self, p):
        if self.args.iteration:
            return self.cv.iterations.by_number(p.id, self.args.iteration)
        return self.cv.iterations.current(p.id)


def _suggestion_json(s) -> dict:
    best = s.best
    return {"imageId": s.image.id, "originalName": s.image.original_name, "iteration": s.iteration.id,
            "suggestedTagId": best.tag_id if best else None, "suggestedTagName": best.tag_name if best else None,
            "probability": best.probability if best else None, "predictionUncertainty": s.uncertainty,
            "skipped": s.skipped,
            "predictions": [{"tagId": x.tag_id, "tagName": x.tag_name, "probability": x.probability}
                            for x in s.predictions]}


def _audit_json(x) -> dict:
    return {"imageId": x.image.id, "originalName": x.image.original_name, "iteration": x.iteration.id,
            "tagIds": x.tag_ids, "tagNames": x.tag_names, "suggestedTagIds": x.suggested_ids,
            "suggestedTagNames": x.suggested_names, "score": x.score, "probabilities": x.probabilities}


def _doctor_text(report, settings) -> str:
    lines = [f"cvbot doctor: data in {settings.data_dir}" + (f", blobs in {settings.blob_url}" if settings.blob_url
                                                             else "") + ("" if report.exclusive else
             " (another cvbot process uses the store: a check only)")]
    for c in report.checks:
        if not c.problems:
            state = "ok"
        elif c.ok:
            state = "repaired"
        else:
            state = "PROBLEM"
        count = f": {c.problems} found" + (f", {c.repaired} repaired" if report.repair else "") if c.problems else ""
        lines.append(f"  {state:<8} {c.name} ({c.description}){count}")
        lines += [f"             - {d}" for d in c.details]
        if c.problems > len(c.details):
            lines.append(f"             … and {c.problems - len(c.details)} more")
        if c.advice and not c.ok:
            lines.append(f"             what to do: {c.advice}")
        if c.note:
            lines.append(f"             note: {c.note}")
    if report.ok:
        lines.append("the store is clean" + (" now" if report.repair and any(c.repaired for c in report.checks)
                                             else ""))
    else:
        left = sum(c.problems - c.repaired for c in report.checks if not c.ok)
        lines.append(f"{left} problem(s) left" + ("" if report.repair else
                     "; `cvbot doctor --repair` fixes what is safe (stop the server first)"))
    return "\n".join(lines)


def _migration_text(data: dict) -> str:
    lines = [f"migrated from {data['source']}:"]
    for p in data["details"]:
        if p["skipped"]:
            lines.append(f"  skipped '{p['name']}': {p['skipped']}")
        else:
            lines.append(f"  '{p['name']}' → '{p['target_name'] or '-'}' ({p['domain']}): {p['tags']} new tags, "
                         f"{p['images']} images ({p['bytes']:,} bytes), {p['already']} copied before, "
                         f"{p['duplicates']} duplicates, {len(p['failures'])} failures")
    lines.append(f"total: {data['projects']} projects, {data['tags']} tags, {data['images']} images, "
                 f"{data['bytes']:,} bytes, {data['skippedDuplicates']} skipped duplicates, "
                 f"{len(data['failures'])} failures")
    lines += [f"failed: {f}" for f in data["failures"]]
    for t in data.get("training", []):
        if t.get("target"):
            src = t.get("source") or {}
            lines.append(f"'{t['project']}' iteration {t['iteration']}: precision {t['target']['precision']:.3f}, "
                         f"recall {t['target']['recall']:.3f}, AP {t['target']['averagePrecision']:.3f}"
                         + (f" (source: precision {src.get('precision', 0):.3f}, recall {src.get('recall', 0):.3f}, "
                            f"AP {src.get('averagePrecision', 0):.3f})" if src else " (the source has no trained "
                                                                                   "iteration)"))
        else:
            lines.append(f"'{t['project']}': training failed: {t.get('failure')}")
    return "\n".join(lines)


def _performance_text(perf: dict) -> str:
    lines = [f"threshold {perf['threshold']:.2f}: "
             f"precision {perf['precision']:.3f} (±{perf['precisionStdDeviation']:.3f}), "
             f"recall {perf['recall']:.3f} (±{perf['recallStdDeviation']:.3f}), AP {perf['averagePrecision']:.3f}"
             + (f", top-1 accuracy {perf['accuracy']:.3f}" if "accuracy" in perf else "")
             + f" ({perf['folds']}-fold, {perf['imageCount']} images)"]
    rows = [[t["name"], t["precision"], t["recall"], t["averagePrecision"], t["imageCount"]]
            for t in perf["perTagPerformance"]]
    lines.append(_table(rows, ["tag", "precision", "recall", "AP", "images"]))
    lines += [f"warning: {w}" for w in perf.get("warnings", [])]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = argparse.ArgumentParser(prog="cvbot",
                                     description="Custom Vision in Slack: projects, training, prediction.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    def cmd(name, fn, help, parent=sub):
        p = parent.add_parser(name, help=help, parents=[common])
        p.set_defaults(fn=fn)
        return p

    p = cmd("serve", Cli.cmd_serve, "run the service (HTTP API, Slack, health check)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-jobs", action="store_true",
                   help="PostgreSQL: only queue jobs, for `cvbot worker` processes to run (also CVBOT_JOBS=off)")
    cmd("worker", Cli.cmd_worker, "run queued jobs (training, export, embedding); needs PostgreSQL")

    proj = sub.add_parser("project", help="create, list, update, delete projects").add_subparsers(
        dest="sub", required=True)
    p = cmd("create", Cli.cmd_project_create, "create a project", proj)
    p.add_argument("name")
    p.add_argument("--domain",
                   help="General, Food, Landmarks, Retail, Adult or Compact (default: CVBOT_DEFAULT_DOMAIN)")
    p.add_argument("--type", default="Multiclass", help="Multiclass or Multilabel")
    p.add_argument("--description", default="")
    p.add_argument("--tags", help="comma-separated tag names to create with it ('negative': the Negative tag); a "
                                  "General, Food, Landmarks, Retail or Adult project answers zero-shot from them "
                                  "until its first training")
    cmd("list", Cli.cmd_project_list, "list projects", proj)
    p = cmd("update", Cli.cmd_project_update, "change a project (applies from the next training)", proj)
    p.add_argument("name")
    p.add_argument("--rename")
    p.add_argument("--description")
    p.add_argument("--domain")
    p.add_argument("--type")
    p.add_argument("--threshold", type=float)
    p.add_argument("--unknown-threshold", type=float,
                   help="unknown score from which predictions are flagged (default 0.95; docs/unknown.md)")
    p = cmd("settings", Cli.cmd_project_settings, "show or change a project's scheduled retraining and prediction "
            "retention", proj)
    p.add_argument("name")
    p.add_argument("--retrain", help="nightly (retrain each night when new images arrived) or off")
    p.add_argument("--retention", help="days stored predictions are kept; keep (for ever) or default "
                   "(CVBOT_PREDICTION_RETENTION_DAYS)")
    p = cmd("delete", Cli.cmd_project_delete, "delete a project and its images", proj)
    p.add_argument("name")
    p.add_argument("--yes", action="store_true")

    p = cmd("copy", Cli.cmd_project_copy, "copy a project: settings, tags, images with their tags", proj)
    p.add_argument("name")
    p.add_argument("new_name", metavar="new-name")

    sched = sub.add_parser("schedule", help="the scheduled jobs' run log, or run one now").add_subparsers(
        dest="sub", required=True)
    p = cmd("list", Cli.cmd_schedule_list, "recent runs of the scheduled jobs (every process's)", sched)
    p.add_argument("--job", help="retrain, prediction-retention or store-cleanup")
    p.add_argument("--limit", type=int, default=20)
    p = cmd("run", Cli.cmd_schedule_run, "run a scheduled job now", sched)
    p.add_argument("job", help="retrain, prediction-retention or store-cleanup")

    data = sub.add_parser("dataset", help="export a project as a zip, or import one").add_subparsers(
        dest="sub", required=True)
    p = cmd("export", Cli.cmd_dataset_export, "write a project's images, tags and settings to a zip", data)
    p.add_argument("--project", required=True)
    p.add_argument("-o", "--output", help="the zip to write (default: PROJECT.zip)")
    p = cmd("import", Cli.cmd_dataset_import, "create a project from a zip made by `dataset export`", data)
    p.add_argument("archive")
    p.add_argument("--project", help="the new project's name (default: the archive's)")

    p = cmd("migrate", Cli.cmd_migrate, "copy projects from a Custom Vision Training endpoint (Azure or cvbot)")
    p.add_argument("--from-endpoint", required=True, help="e.g. https://<resource>.cognitiveservices.azure.com")
    p.add_argument("--training-key", help="the source's training key (default: CVBOT_SOURCE_TRAINING_KEY)")
    p.add_argument("--project", action="append", help="a project name or id to copy (repeatable; default: all)")
    p.add_argument("--train", action="store_true", help="train each migrated project and compare with the source")

    p = cmd("export", Cli.cmd_export, "export an iteration's model to one of Azure's platforms (a zip)")
    p.add_argument("--project", required=True)
    p.add_argument("--platform", required=True,
                   help="Azure's platform name, any case (e.g. ONNX); an unknown one is answered with the list")
    p.add_argument("--flavor", help="e.g. ONNXFloat16 (default: the platform's plain flavor)")
    p.add_argument("--iteration", type=int, help="the iteration number (default: the default iteration)")
    p.add_argument("-o", "--output", required=True, help="the zip to write")

    p = cmd("tags", Cli.cmd_tags, "list a project's tags with image counts")
    p.add_argument("--project", required=True)
    p = cmd("import", Cli.cmd_import, "import a folder: each subfolder is a tag ('negative' = Negative)")
    p.add_argument("dir")
    p.add_argument("--project", required=True)
    p = cmd("train", Cli.cmd_train, "train a new iteration and print its performance")
    p.add_argument("--project", required=True)
    p.add_argument("--force", action="store_true", help="train even if nothing changed")
    p = cmd("performance", Cli.cmd_performance, "an iteration's performance at any threshold")
    p.add_argument("--project", required=True)
    p.add_argument("--iteration", type=int)
    p.add_argument("--threshold", type=float)
    p = cmd("predict", Cli.cmd_predict, "classify image files")
    p.add_argument("--project", required=True)
    p.add_argument("files", nargs="+")
    p.add_argument("--iteration", type=int)
    p.add_argument("--no-store", action="store_true", help="do not keep the image and prediction")
    p = cmd("suggest", Cli.cmd_suggest, "suggested tags for untagged images, in the order that saves labels")
    p.add_argument("--project", required=True)
    p.add_argument("--iteration", type=int, help="the iteration number (default: the newest Completed one)")
    p.add_argument("--take", type=int, default=20, help="how many to list (default 20)")
    p = cmd("audit", Cli.cmd_audit, "training images whose tags look wrong, most suspicious first")
    p.add_argument("--project", required=True)
    p.add_argument("--iteration", type=int, help="the iteration number (default: the newest Completed one)")
    p.add_argument("--take", type=int, default=20, help="how many to list (default 20)")
    p.add_argument("--all", action="store_true", help="also images whose tags someone already kept")
    p.add_argument("--keep", metavar="IMAGE_ID", help="record that the image's tags are right")
    p.add_argument("--retag", nargs="+", metavar=("IMAGE_ID", "TAG"), help="replace the image's tags")
    p = cmd("untagged", Cli.cmd_untagged, "list or delete a project's untagged images")
    p.add_argument("--project", required=True)
    p.add_argument("--delete", nargs="+", metavar="IMAGE_ID", help="delete these untagged images")
    p.add_argument("--delete-all", action="store_true", help="delete every untagged image of the project")
    p = cmd("iterations", Cli.cmd_iterations, "list iterations")
    p.add_argument("--project", required=True)
    p = cmd("iteration", Cli.cmd_iteration, "make default, rename or delete an iteration")
    p.add_argument("action", choices=["default", "rename", "delete"])
    p.add_argument("number", type=int)
    p.add_argument("name", nargs="?")
    p.add_argument("--project", required=True)
    p = cmd("keys", Cli.cmd_keys, "show the API keys of a workspace (generated on first use)")
    p.add_argument("--workspace", default="default", help="Slack team id, or 'default' for projects made here")
    p.add_argument("--regenerate", action="store_true", help="replace both keys; the old ones stop working")
    p = cmd("doctor", Cli.cmd_doctor, "check the store (database, files, caches); exit 1 if something is wrong")
    p.add_argument("--repair", action="store_true",
                   help="fix what is safe and say what was done (refused while a server or command uses the store)")
    p = cmd("move", Cli.cmd_move, "copy this install (every row and referenced blob) to another database and blob "
            "store, e.g. PostgreSQL + S3; checks the counts at the end, deletes nothing here")
    p.add_argument("--to-database", required=True, metavar="URL",
                   help="an empty database, e.g. postgresql+psycopg://user:pw@host/cvbot (migrated first)")
    p.add_argument("--to-blobs", required=True, metavar="s3://BUCKET/PREFIX",
                   help="the new blob store: s3://bucket/prefix (AWS_* variables for the endpoint and keys), or a "
                        "directory")
    p.add_argument("--workers", type=int, default=8, help="blobs copied at once (default 8)")
    p = cmd("recover", Cli.cmd_doctor, "the same as doctor --repair (after a crash; stop the server first)")
    p.set_defaults(repair=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    from .config import Settings

    settings = Settings.from_env()
    long_running = args.command in ("serve", "worker")
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO) if long_running
                        else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli = Cli(args, settings)
    try:
        return int(args.fn(cli) or 0)
    except errors.CvError as e:
        if args.json:
            print(json.dumps({"code": e.code, "message": e.message}), file=sys.stdout)
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    finally:
        if cli._container is not None:
            cli._container.close()


if __name__ == "__main__":
    sys.exit(main())
