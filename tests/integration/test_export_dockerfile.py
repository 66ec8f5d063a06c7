"""DockerFile export: the unpacked `app.py` runs as a real process (`python app.py`, PORT set) and answers
POST /image and POST /url like Azure's exported container, with the server's probabilities on any image."""
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from core.export import container_app
from core.export.dockerfile import DockerFileExporter
from core.images import decode_rgb
from tests.conftest import make_cv
from tests.export_support import labels, train_compact
from tests.helpers import png_bytes, tuxpaint_categories


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tricky_images() -> dict[str, bytes]:
    """Images whose decoding takes every path of cvbot's preprocessing: transparency, palette, 16-bit, EXIF
    rotation, JPEG draft scaling, whole-factor reduction, animation, landscape and portrait crops."""
    cats = tuxpaint_categories(1)
    stamp = next(iter(cats.values()))[0]
    rgba = Image.open(stamp).convert("RGBA")
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((2400, 1800),
                                                                                    Image.Resampling.BICUBIC)

    def save(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [rgba.convert("P"), rgba.rotate(90).convert("P")]
    return {
        "stamp-rgba.png": stamp.read_bytes(),
        "palette-transparent.gif": save(rgba.convert("P", palette=Image.Palette.ADAPTIVE), "GIF", transparency=0),
        "grey16.png": save(Image.fromarray((rng.random((300, 500)) * 65535).astype(np.uint16)), "PNG"),
        "large-photo.jpg": save(photo, "JPEG", quality=90),
        "rotated.jpg": save(photo.resize((640, 480)), "JPEG", exif=exif),
        "reduced.png": save(photo.resize((1400, 2100)), "PNG"),  # reduced 2x while decoding
        "animated.gif": save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "grey-la.webp": save(rgba.convert("LA").resize((500, 300)).convert("RGBA"), "WEBP", lossless=True),
    }


def test_app_prepares_every_image_as_the_server_does(provider):
    """Pixel for pixel: app.py's decode + crop equals cvbot's decode_rgb + Preprocessing.crop."""
    pre = provider.for_domain(_compact()).preprocessing
    for name, data in _tricky_images().items():
        server = pre.crop(decode_rgb(data, min_side=pre.size))
        app = container_app.crop(container_app.decode_rgb(data, pre.size), pre.size)
        assert app.shape == (pre.size, pre.size, 3), name
        np.testing.assert_array_equal(app, server, err_msg=name)


def _compact():
    from core.model import Domain

    return Domain.Compact


@pytest.fixture(scope="module")
def trained(tmp_path_factory, provider):
    return train_compact(make_cv(tmp_path_factory.mktemp("dockerfile"), provider))


@pytest.fixture(scope="module")
def app(trained, tmp_path_factory):
    """`python app.py` from the unpacked Linux export, on a free loopback port."""
    package = trained.export("DockerFile")
    folder = tmp_path_factory.mktemp("unpacked")
    package.extractall(folder)
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder / "app", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not start: {proc.stdout.read().decode(errors='replace')}")
            time.sleep(0.2)
    yield base, package
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def threshold(app) -> float:
    """The threshold app.py flags unknown images from: the manifest's."""
    return json.loads(app[1].read("cvexport.manifest"))["UnknownOutput"]["threshold"]


@pytest.fixture(scope="module")
def image_host():
    """A loopback web server the /url route downloads from: GET /NAME serves `images[NAME]`."""
    images: dict[str, bytes] = {}

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/to-file":  # a redirect the app must not follow
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = images.get(self.path.lstrip("/"))
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", images
    server.shutdown()


def _post(url: str, body: bytes, ctype: str = "application/octet-stream") -> tuple[int, dict]:
    req = urllib.request.Request(url, body, {"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"imageData\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _served(trained, data: bytes) -> tuple[dict[str, float], float]:
    """The server's probabilities (tag name -> probability) and unknown score for one image."""
    result = trained.cv.predictions.predict(trained.project_id, data, iteration_id=trained.iteration_id, store=False)
    return {p.tag_name: p.probability for p in result.predictions}, result.unknown_score


def _check(answer: dict, served: tuple[dict[str, float], float], trained, names: list[str], threshold: float) -> float:
    """Azure's fields as Azure's container answers them, the server's probabilities within 1e-4, and cvbot's unknown
    fields beside them: the server's score within 1e-3 (the graph computes it in float32; the kernel CDF moves by
    ~1e-5 under float32 rounding of the cosine), flagged from the manifest's threshold. Returns the score's
    difference from the server's."""
    served, served_unknown = served
    assert set(answer) == {"created", "id", "iteration", "predictions", "project", "unknownScore",
                           "unknownThreshold", "unknown"}
    assert answer["unknownThreshold"] == threshold
    assert abs(answer["unknownScore"] - served_unknown) <= 1e-3, (answer["unknownScore"], served_unknown)
    assert answer["unknown"] is (answer["unknownScore"] >= threshold)
    assert (answer["project"], answer["iteration"]) == (trained.project_id, trained.iteration_id)
    preds = answer["predictions"]
    assert all(set(p) == {"boundingBox", "probability", "tagId", "tagName"} and p["boundingBox"] is None
               for p in preds)
    assert sorted(p["tagName"] for p in preds) == sorted(names)
    assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
    assert preds[0]["tagName"] == max(served, key=served.get)
    got = {p["tagName"]: p["probability"] for p in preds}
    np.testing.assert_allclose([got[n] for n in names], [served[n] for n in names], atol=1e-4)
    return abs(answer["unknownScore"] - served_unknown)


def test_image_and_url_answer_like_the_server(trained, app, image_host, threshold):
    base, package = app
    names = labels(package)
    host, images = image_host
    tricky = _tricky_images()
    cases = [(f"test-{i}.png", d) for i, d in enumerate(trained.test_images)] + list(tricky.items())
    tag_ids, worst = {}, 0.0
    for i, (name, data) in enumerate(cases):
        served = _served(trained, data)
        status, answer = _post(base + "/image", data)
        assert status == 200, answer
        worst = max(worst, _check(answer, served, trained, names, threshold))
        tag_ids.update({p["tagName"]: p["tagId"] for p in answer["predictions"]})
        images[name] = data
        status, by_url = _post(base + "/url", json.dumps({"url": f"{host}/{name}"}).encode(), "application/json")
        assert status == 200, by_url
        _check(by_url, served, trained, names, threshold)
        if i % 5 == 0:  # multipart imageData, and Azure's long path
            body, ctype = _multipart(data)
            status, form = _post(f"{base}/{trained.project_id}/classify/iterations/x/image/nostore", body, ctype)
            assert status == 200, form
            _check(form, served, trained, names, threshold)
    print(f"DockerFile app.py: max |unknownScore - server's| = {worst:.2e} over {len(cases)} images")
    with trained.cv.deps.uow() as uow:
        it = uow.iterations.get(trained.iteration_id)
    assert tag_ids == dict(zip(it.tag_names, it.tag_ids, strict=True))


def test_images_like_nothing_trained_score_above_known_ones(trained, app, threshold):
    """Uniform noise and a flat grey image: the server's score, above most held-out stamps, `unknown` exactly when
    it reaches the threshold; most held-out stamps of the trained categories are not flagged."""
    base, package = app
    names = labels(package)
    known = [_post(base + "/image", data)[1] for data in trained.test_images]
    assert [k["unknown"] for k in known].count(False) > len(known) // 2, known
    typical = float(np.median([k["unknownScore"] for k in known]))
    for data in (png_bytes(size=(300, 200), seed=3), png_bytes((128, 128, 128), size=(224, 224))):
        status, answer = _post(base + "/image", data)
        assert status == 200, answer
        _check(answer, _served(trained, data), trained, names, threshold)
        # above most known images; flagged exactly when at the threshold (in this 30-image project the server
        # scores these 0.93-0.97, so whether they pass 0.95 is a coin toss; test_unknown_score measures flagging)
        assert answer["unknownScore"] > typical, (answer, typical)
        assert answer["unknown"] is (answer["unknownScore"] >= answer["unknownThreshold"]), answer


def test_threshold_can_be_set_and_older_models_answer_azures_fields_only(app, tmp_path, monkeypatch, threshold):
    """UNKNOWN_THRESHOLD overrides the export's threshold; a model.onnx without the second output (an export made
    before it) answers exactly Azure's fields."""
    import onnx

    _, package = app
    package.extractall(tmp_path)
    folder = tmp_path / "app"
    image = png_bytes((128, 128, 128), size=(224, 224))
    monkeypatch.setenv("UNKNOWN_THRESHOLD", "1.0")
    answer = container_app.Classifier(folder, threads=1).predict(image)
    assert answer["unknownThreshold"] == 1.0 != threshold and answer["unknown"] is (answer["unknownScore"] >= 1.0)
    monkeypatch.delenv("UNKNOWN_THRESHOLD")
    model = onnx.load(str(folder / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["model_output", "unknown_score"]
    del model.graph.output[1]
    onnx.save(model, str(folder / "model.onnx"))
    older = container_app.Classifier(folder, threads=1).predict(image)
    assert set(older) == {"created", "id", "iteration", "predictions", "project"}
    assert [p["probability"] for p in older["predictions"]] == [p["probability"] for p in answer["predictions"]]


def test_bad_input_gets_a_clear_error(app, image_host):
    base, _ = app
    host, images = image_host
    images["text.txt"] = b"not an image"
    cases = [
        ("/image", b"", "application/octet-stream", 400, "BadRequestImageFormat"),
        ("/image", b"GIF89a broken", "application/octet-stream", 400, "BadRequestImageFormat"),
        ("/image", b"\0" * (4 * 1024 * 1024 + 1), "application/octet-stream", 413, "BadRequestImageSizeBytes"),
        ("/image", _multipart(b"x")[0].replace(b"imageData", b"other"), _multipart(b"x")[1], 400,
         "BadRequestImageStream"),
        ("/url", b"{not json", "application/json", 400, "BadRequestInvalid"),
        ("/url", b'{"uri": "x"}', "application/json", 400, "BadRequestImageUrl"),
        ("/url", b'{"url": "file:///etc/passwd"}', "application/json", 400, "BadRequestImageUrl"),
        ("/url", json.dumps({"url": f"{host}/missing.png"}).encode(), "application/json", 400, "BadRequestImageUrl"),
        ("/url", json.dumps({"url": f"{host}/text.txt"}).encode(), "application/json", 400, "BadRequestImageFormat"),
        ("/url", json.dumps({"url": f"{host}/to-file"}).encode(), "application/json", 400, "BadRequestImageUrl"),
        ("/nothing", b"", "application/octet-stream", 404, "NotFound"),
    ]
    for path, body, ctype, status, code in cases:
        got, answer = _post(base + path, body, ctype)
        assert (got, answer["code"]) == (status, code), (path, answer)
        assert answer["message"]
    # the server is still well after all that
    status, _ = _post(base + "/image", _tricky_images()["rotated.jpg"])
    assert status == 200


def test_flavors_name_their_base_images(trained):
    arm = trained.export("DockerFile", "arm")
    linux = trained.export("DockerFile")
    assert "FROM arm64v8/python:3.11-slim" in arm.read("app/Dockerfile").decode()
    assert "FROM python:3.11-slim" in linux.read("app/Dockerfile").decode()
    for z in (arm, linux):
        assert {"app/app.py", "app/model.onnx", "app/labels.txt", "app/requirements.txt"} <= set(z.namelist())
        assert b"cvbot" not in b"".join(line for line in z.read("app/app.py").splitlines()
                                        if line.startswith((b"import", b"from")))
        assert "pillow==" in z.read("app/requirements.txt").decode()
    assert json.loads(arm.read("cvexport.manifest"))["Flavor"] == "ARM"
    from core.export import ExportUnsupported

    with pytest.raises(ExportUnsupported) as e:
        DockerFileExporter().canonical_flavor("Windows")
    assert e.value.code == "BadRequestExportValidationFailed"
