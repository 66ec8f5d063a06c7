"""The `cvbot` command line as a user runs it: real processes, real files, real SQLite, real backbone."""
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import colour_images, env_with, free_port, png_bytes

CVBOT = str(Path(sys.executable).parent / "cvbot")


def run(tmp_path, *args, ok=True, model_dir=None):
    env = env_with(tmp_path, **({"CVBOT_MODEL_DIR": model_dir} if model_dir else {}))
    out = subprocess.run([CVBOT, *args], env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def jrun(tmp_path, *args, model_dir=None):
    return json.loads(run(tmp_path, *args, "--json", model_dir=model_dir).stdout)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for name, rgb, seed in (("red", (220, 30, 30), 1), ("green", (30, 200, 40), 2), ("blue", (30, 40, 220), 3)):
        (root / name).mkdir(parents=True)
        for i, data in enumerate(colour_images(8, rgb, seed)):
            (root / name / f"{name}{i}.png").write_bytes(data)
    (root / "red" / "notes.txt").write_text("not an image, ignored")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    shutil.copy(root / "red" / "red0.png", root / "red" / "copy-of-red0.png")
    return root


def test_import_train_predict_flow(tmp_path, folder, model_dir):
    md = str(model_dir)
    created = jrun(tmp_path, "project", "create", "Colours", "--description", "demo", model_dir=md)
    assert created["settings"]["domain"] == "Compact" and created["settings"]["classificationType"] == "Multiclass"

    out = run(tmp_path, "import", str(folder), "--project", "Colours", model_dir=md)
    assert "OK: 24" in out.stdout and "OKDuplicate: 1" in out.stdout and "ErrorImageFormat: 1" in out.stdout
    assert "broken.png" in out.stdout

    tags = {t["name"]: t["imageCount"] for t in jrun(tmp_path, "tags", "--project", "colours", model_dir=md)}
    assert tags == {"blue": 8, "green": 8, "red": 8}

    trained = jrun(tmp_path, "train", "--project", "Colours", model_dir=md)
    assert trained["status"] == "Completed" and trained["number"] == 1 and trained["isDefault"]
    perf = trained["performance"]
    assert perf["accuracy"] >= 0.9 and len(perf["perTagPerformance"]) == 3
    assert all(0 <= t["averagePrecision"] <= 1 for t in perf["perTagPerformance"])

    text = run(tmp_path, "train", "--project", "Colours", ok=False, model_dir=md)
    assert text.returncode == 2 and "nothing changed" in text.stderr

    probe = tmp_path / "probe.png"
    probe.write_bytes(colour_images(1, (30, 40, 220), 42)[0])
    preds = jrun(tmp_path, "predict", "--project", "Colours", str(probe), model_dir=md)
    assert preds[0]["predictions"][0]["tagName"] == "blue"
    assert set(preds[0]["predictions"][0]) >= {"tagName", "probability", "tagId"}
    assert 0 <= preds[0]["unknownScore"] <= 1 and preds[0]["unknownThreshold"] == 0.95
    assert preds[0]["unknown"] is (preds[0]["unknownScore"] >= 0.95)
    noise = tmp_path / "noise.png"  # like none of the colours: said so, with the closest tags
    noise.write_bytes(png_bytes(seed=5, size=(64, 64)))
    said = run(tmp_path, "predict", "--project", "Colours", str(noise), "--no-store", model_dir=md).stdout
    assert f"{noise}: not recognised (unknown score 1.00); closest: " in said, said

    strict = jrun(tmp_path, "performance", "--project", "Colours", "--threshold", "0.99", model_dir=md)
    loose = jrun(tmp_path, "performance", "--project", "Colours", "--threshold", "0.01", model_dir=md)
    assert strict["threshold"] == 0.99 and loose["recall"] >= strict["recall"]

    listing = run(tmp_path, "project", "list", model_dir=md).stdout
    assert "Colours" in listing and "Compact" in listing

    run(tmp_path, "train", "--project", "Colours", "--force", model_dir=md)
    its = jrun(tmp_path, "iterations", "--project", "Colours", model_dir=md)
    assert [i["number"] for i in its] == [1, 2] and its[0]["isDefault"]
    refused = run(tmp_path, "iteration", "delete", "1", "--project", "Colours", ok=False, model_dir=md)
    assert refused.returncode == 2 and "default" in refused.stderr
    run(tmp_path, "iteration", "default", "2", "--project", "Colours", model_dir=md)
    run(tmp_path, "iteration", "rename", "2", "best", "--project", "Colours", model_dir=md)
    run(tmp_path, "iteration", "delete", "1", "--project", "Colours", model_dir=md)
    its = jrun(tmp_path, "iterations", "--project", "Colours", model_dir=md)
    assert [(i["number"], i["name"], i["isDefault"]) for i in its] == [(2, "best", True)]


def test_import_strips_spaces_around_folder_names(tmp_path, model_dir):
    root = tmp_path / "spaced"
    for name, rgb, seed in ((" cat ", (220, 30, 30), 1), ("dog ", (30, 200, 40), 2)):
        (root / name).mkdir(parents=True)
        for i, data in enumerate(colour_images(2, rgb, seed)):
            (root / name / f"{i}.png").write_bytes(data)
    md = str(model_dir)
    run(tmp_path, "project", "create", "Spaces", model_dir=md)
    out = jrun(tmp_path, "import", str(root), "--project", "Spaces", model_dir=md)
    assert out["counts"] == {"OK": 4}
    tags = {t["name"]: t["imageCount"] for t in jrun(tmp_path, "tags", "--project", "Spaces", model_dir=md)}
    assert tags == {"cat": 2, "dog": 2}


def test_doctor_finds_damage_repairs_it_and_refuses_repair_while_a_server_runs(tmp_path, folder, model_dir):
    import os

    md = str(model_dir)
    run(tmp_path, "project", "create", "Docs", model_dir=md)
    run(tmp_path, "import", str(folder), "--project", "Docs", model_dir=md)
    assert jrun(tmp_path, "doctor", model_dir=md)["ok"]
    blobs = tmp_path / "data" / "blobs"
    image = next(p for p in blobs.rglob("*") if p.is_file())
    saved = image.read_bytes()
    image.unlink()
    out = run(tmp_path, "doctor", model_dir=md, ok=False)
    assert out.returncode == 1 and "PROBLEM  missing_image_files" in out.stdout, out.stdout + out.stderr
    assert "what to do: restore" in out.stdout and "--repair" in out.stdout
    image.write_bytes(saved)  # restored from a "backup"

    port = free_port()
    proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env_with(tmp_path, CVBOT_MODEL_DIR=md))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        # what a crash leaves: a blob no row names, a temporary file of a write that never finished
        orphan = blobs / "ab" / "cd" / ("abcd" + "0" * 60)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"nobody's")
        stale = orphan.parent / ".tmp-crashed"
        stale.write_bytes(b"half")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        refused = run(tmp_path, "doctor", "--repair", model_dir=md, ok=False)
        assert refused.returncode == 2 and "another cvbot process" in refused.stderr
        checked = json.loads(run(tmp_path, "doctor", "--json", model_dir=md, ok=False).stdout)
        assert not checked["exclusive"] and not checked["ok"]
        assert {c["name"] for c in checked["checks"] if c["problems"]} == {"orphan_blobs", "partial_files"}
        assert orphan.exists() and stale.exists()  # a check alone changes nothing
    finally:
        proc.kill()  # kill -9: no clean shutdown
        proc.wait(timeout=30)

    repaired = jrun(tmp_path, "recover", model_dir=md)  # the old name of doctor --repair
    assert repaired["ok"] and repaired["repair"]
    assert {c["name"]: c["repaired"] for c in repaired["checks"] if c["repaired"]} == {
        "orphan_blobs": 1, "partial_files": 1}
    assert not orphan.exists() and not stale.exists()
    assert jrun(tmp_path, "doctor", model_dir=md)["ok"]


def test_clear_errors_exit_nonzero_and_change_nothing(tmp_path, model_dir):
    md = str(model_dir)
    out = run(tmp_path, "train", "--project", "nope", ok=False, model_dir=md)
    assert out.returncode == 2 and "no project named 'nope'" in out.stderr
    out = run(tmp_path, "project", "create", "x", "--domain", "Cars", ok=False, model_dir=md)
    assert out.returncode == 2 and "unknown domain" in out.stderr
    assert json.loads(run(tmp_path, "project", "list", "--json", model_dir=md).stdout) == []
    run(tmp_path, "project", "create", "few", model_dir=md)
    img = tmp_path / "one.png"
    img.write_bytes(png_bytes())
    out = run(tmp_path, "predict", "--project", "few", str(img), ok=False, model_dir=md)
    assert out.returncode == 1 and "no trained iteration" in out.stderr


def test_keys_are_generated_once_and_regenerated_on_request(tmp_path, model_dir):
    first = jrun(tmp_path, "keys", model_dir=str(model_dir))
    assert first["workspace"] == "default" and len(first["trainingKey"]) == 32
    assert first["trainingKey"] != first["predictionKey"]
    assert jrun(tmp_path, "keys", model_dir=str(model_dir)) == first
    fresh = jrun(tmp_path, "keys", "--regenerate", model_dir=str(model_dir))
    assert fresh["trainingKey"] != first["trainingKey"] and fresh["predictionKey"] != first["predictionKey"]


def test_serve_answers_healthz(tmp_path, model_dir):
    port = free_port()
    env = env_with(tmp_path, CVBOT_MODEL_DIR=str(model_dir))
    proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
                    break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        assert body is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert body["status"] == "ok"
        assert any(b.startswith("efficientnet-lite0@") for b in body["backbones"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_export_writes_the_zip_and_says_what_went_wrong(tmp_path, folder, model_dir):
    """`cvbot export`: the zip of the iteration asked for, whose model gives `cvbot predict`'s answer when fed as
    Azure's ONNX sample feeds it; refusals exit 2 with Azure's reason and write nothing."""
    import zipfile

    import numpy as np
    import onnxruntime as ort

    from tests.export_support import sample_pixels

    md = str(model_dir)
    run(tmp_path, "project", "create", "Colours", model_dir=md)
    run(tmp_path, "import", str(folder), "--project", "Colours", model_dir=md)
    run(tmp_path, "train", "--project", "Colours", model_dir=md)
    out = tmp_path / "out" / "colours.zip"
    out.parent.mkdir()
    done = run(tmp_path, "export", "--project", "colours", "--platform", "onnx", "-o", str(out), model_dir=md)
    assert f"to ONNX: {out}" in done.stdout and "Bgr8" in done.stdout  # the usage note
    assert "exporting iteration 1 of Colours to ONNX" in done.stderr  # progress while it runs
    with zipfile.ZipFile(out) as z:
        assert set(z.namelist()) == {"model.onnx", "labels.txt", "cvexport.manifest"}
        labels = z.read("labels.txt").decode().split()
        session = ort.InferenceSession(z.read("model.onnx"), providers=["CPUExecutionProvider"])
    img = tmp_path / "probe.png"
    img.write_bytes(colour_images(1, (30, 200, 40), 77)[0])
    served = jrun(tmp_path, "predict", "--project", "Colours", "--no-store", str(img), model_dir=md)[0]
    by_tag = {p["tagName"]: p["probability"] for p in served["predictions"]}
    local = session.run(None, {"data": sample_pixels(img.read_bytes(), 224, "BGR", 255.0)})[0][0]
    assert labels[int(np.argmax(local))] == served["predictions"][0]["tagName"] == "green"
    assert max(abs(float(local[i]) - by_tag[n]) for i, n in enumerate(labels)) < 1e-4

    half = jrun(tmp_path, "export", "--project", "Colours", "--platform", "ONNX", "--flavor", "onnxfloat16",
                "--iteration", "1", "-o", str(tmp_path / "half.zip"), model_dir=md)
    assert (half["platform"], half["flavor"], half["status"]) == ("ONNX", "ONNXFloat16", "Done")
    assert half["bytes"] == (tmp_path / "half.zip").stat().st_size < out.stat().st_size

    for args, says in ((["--platform", "VAIDK"], "the platforms are ONNX"),
                       (["--platform", "ONNX", "--flavor", "TensorFlowLite"], "ONNX has no flavor 'TensorFlowLite'"),
                       (["--platform", "ONNX", "--iteration", "7"], "7")):
        bad = run(tmp_path, "export", "--project", "Colours", *args, "-o", str(tmp_path / "bad.zip"), ok=False,
                  model_dir=md)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    assert not (tmp_path / "bad.zip").exists() and sorted(p.name for p in out.parent.iterdir()) == ["colours.zip"]
    code = run(tmp_path, "export", "--project", "Colours", "--platform", "vaidk", "-o", str(tmp_path / "b.zip"),
               "--json", ok=False, model_dir=md)
    assert json.loads(code.stdout)["code"] == "BadRequestProjectUnsupportedExportPlatform"
