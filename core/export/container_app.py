"""cvbot's exported classifier as a small web service that answers like Azure Custom Vision's exported container.

This file is shipped as `app.py` in the DockerFile export; it imports nothing from cvbot (only onnxruntime, Pillow
and numpy) and runs next to `model.onnx` and `labels.txt`:

    python app.py                      # listens on 0.0.0.0, port $PORT (80 when unset, as in the container)

    POST /image   the image's bytes (application/octet-stream), or multipart/form-data with the field `imageData`
    POST /url     {"url": "https://..."}: the image is downloaded (http/https, at most 4 MB, 10 s)

Both also answer under Azure's longer paths (`/{project}/classify/iterations/{name}/image`, `.../url`, with or
without `/nostore`). The answer is Azure's prediction JSON: {"created", "id", "iteration", "predictions":
[{"boundingBox": null, "probability", "tagId", "tagName"}], "project"}, every tag, highest probability first,
and, as cvbot's own API answers, cvbot's fields beside them (clients that do not know them ignore them):
"unknownScore" (the model's second output `unknown_score`: how unlike the training images the image is, 0..1),
"unknownThreshold" (the model's metadata `unknownThreshold`, or $UNKNOWN_THRESHOLD when set) and "unknown" (true
when the score is at or above the threshold). A model without that output answers Azure's fields only.
Bad input gets 400 (413 for a body over the limit) and {"code", "message"} naming what is wrong.

The image is prepared exactly as cvbot's server prepares it, so both give the same probabilities on any image:
first frame, EXIF orientation applied, transparent pixels on white, large images reduced while decoding (JPEG DCT
scaling, whole-factor box reduction), the shorter side resized to the model's input size (bicubic) and the
centre cropped. The model normalises the pixels itself.
"""
from __future__ import annotations

import contextlib
import datetime
import email.parser
import email.policy
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile

HERE = Path(__file__).resolve().parent
MAX_IMAGE_BYTES = 4 * 1024 * 1024          # Custom Vision's prediction limit
MAX_FORM_OVERHEAD = 64 * 1024              # multipart headers and boundaries around the image
MAX_JSON_BYTES = 64 * 1024                 # the body of POST /url
DRAIN_BYTES = 16 * 1024 * 1024             # a body over its limit is read and dropped up to this size, else cut
URL_TIMEOUT_S = 10.0                       # the whole download of POST /url
MAX_EDGE, MAX_ASPECT = 10_240, 25.0
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP", "MPO"}
REDUCING_GAP, BAND_ROWS, ORIENTATION = 3, 256, 0x0112
TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}   # EXIF orientation -> Image.Transpose
UNKNOWN_OUTPUT = "unknown_score"           # cvbot's unknown score, the model's second output where it has one
DEFAULT_UNKNOWN_THRESHOLD = 0.95           # cvbot's default, for a model whose metadata names none
CONCURRENT_DECODES = 2                     # bounds memory: one 10,240 x 10,240 image holds ~0.4 GB while decoded

ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = MAX_EDGE * MAX_EDGE


class BadRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# ------------------------------------------------------------------------------------------- the pixels
def open_image(data: bytes) -> Image.Image:
    """The image, checked as cvbot checks a prediction image (format, size, dimensions), not yet decoded."""
    if not data:
        raise BadRequest("BadRequestImageFormat", "the request has no image")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadRequest("BadRequestImageSizeBytes", f"the image is {len(data)} bytes; the limit is 4 MB", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadRequest("BadRequestImageDimensions", f"image rejected as a decompression bomb: {e}") from e
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for garbage input
        raise BadRequest("BadRequestImageFormat", "not an image in a supported format (JPEG, PNG, BMP, GIF, "
                                                  "WebP)") from e
    if (img.format or "?") not in ALLOWED_FORMATS:
        raise BadRequest("BadRequestImageFormat", f"format {img.format} is not supported (JPEG, PNG, BMP, GIF, "
                                                  "WebP)")
    w, h = img.size
    if w < 1 or h < 1 or max(w, h) > MAX_EDGE or max(w, h) / min(w, h) > MAX_ASPECT:
        raise BadRequest("BadRequestImageDimensions", f"{w}x{h}: images take at most {MAX_EDGE} px a side and an "
                                                      "aspect ratio of at most 25:1")
    return img


def decode_rgb(data: bytes, min_side: int) -> Image.Image:
    """RGB pixels: first frame, reduced for a model of `min_side` pixels, transparency on white, EXIF applied."""
    img = open_image(data)
    if img.format == "JPEG" and min(img.size) / float(min_side) >= 2:
        scale = min(img.size) / float(min_side)   # the smallest DCT scale keeping min_side on the shorter side
        img.draft("RGB", (int(img.size[0] / scale) + 1, int(img.size[1] / scale) + 1))
    factor = max(1, min(img.size) // (min_side * REDUCING_GAP))
    try:
        img.seek(0)
        img.load()
        rgb = to_rgb(img, factor)
    except BadRequest:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or truncated data
        raise BadRequest("BadRequestImageFormat", f"corrupt or truncated {img.format} file: {e}") from e
    try:
        orientation = img.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
        orientation = 1
    method = TRANSPOSE.get(orientation)
    return rgb if method is None else rgb.transpose(Image.Transpose(method))


def to_rgb(img: Image.Image, factor: int) -> Image.Image:
    """RGB, box-reduced by `factor` one band of rows at a time (no full-size RGB copy of a large image)."""
    sixteen = img.mode.startswith("I;16") or img.mode == "I"
    if factor == 1 and not sixteen:
        return band_rgb(img)
    w, h = img.size
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    rows = factor * max(1, BAND_ROWS // factor)
    for y in range(0, h, rows):
        band = band_rgb(img.crop((0, y, w, min(h, y + rows))))
        out.paste(band.reduce(factor) if factor > 1 else band, (0, y // factor))
    return out


def band_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grey: scale 0..65535 to 0..255, rounded
        arr = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def crop(img: Image.Image, size: int) -> npt.NDArray[np.uint8]:
    """The shorter side resized to `size` (bicubic), centre-cropped: (size, size, 3) uint8."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0 if scale < 0.5 else None)
    return np.asarray(out, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- the model
class Classifier:
    def __init__(self, folder: Path = HERE, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("THREADS", "0") or 0)  # 0: every core
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave decoding the CPU
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        (inp,) = self.session.get_inputs()
        self.input = inp.name
        self.size = int(inp.shape[2])
        meta: dict[str, str] = self.session.get_modelmeta().custom_metadata_map
        self.labels = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
        tag_ids = json.loads(meta.get("tagIds", "[]"))
        self.tag_ids: list[str] = tag_ids if len(tag_ids) == len(self.labels) else [""] * len(self.labels)
        self.project, self.iteration = meta.get("projectId", ""), meta.get("iterationId", "")
        self.bgr = meta.get("Image.BitmapPixelFormat", "Rgb8") == "Bgr8"
        self.scale = 1.0 / 255.0 if meta.get("Image.NominalPixelRange") == "Normalized_0_1" else 1.0
        outputs = [o.name for o in self.session.get_outputs()]
        self.outputs = outputs[:1] + [UNKNOWN_OUTPUT] if UNKNOWN_OUTPUT in outputs[1:] else outputs[:1]
        threshold = os.environ.get("UNKNOWN_THRESHOLD") or meta.get("unknownThreshold") or DEFAULT_UNKNOWN_THRESHOLD
        self.unknown_threshold = float(threshold)
        self.decodes = threading.BoundedSemaphore(CONCURRENT_DECODES)

    def pixels(self, data: bytes) -> npt.NDArray[np.uint8]:
        """(size, size, 3) RGB, exactly the pixels cvbot's server feeds its backbone."""
        with self.decodes:
            return crop(decode_rgb(data, self.size), self.size)

    def predict(self, data: bytes) -> dict[str, Any]:
        arr = self.pixels(data).astype(np.float32)
        if self.bgr:
            arr = arr[:, :, ::-1]
        x = np.ascontiguousarray(arr.transpose(2, 0, 1)[None] * np.float32(self.scale))
        answers = self.session.run(self.outputs, {self.input: x})
        scores = answers[0][0]
        ranked = sorted(zip(scores.tolist(), self.tag_ids, self.labels, strict=True), key=lambda t: -t[0])
        predictions = [{"boundingBox": None, "probability": round(p, 8), "tagId": tid, "tagName": name}
                       for p, tid, name in ranked]
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        out: dict[str, Any] = {"created": now.isoformat(timespec="milliseconds") + "Z", "id": str(uuid.uuid4()),
                               "iteration": self.iteration, "predictions": predictions, "project": self.project}
        if len(answers) > 1:
            unknown = float(answers[1].reshape(-1)[0])
            out.update({"unknownScore": unknown, "unknownThreshold": self.unknown_threshold,
                        "unknown": unknown >= self.unknown_threshold})
        return out


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise BadRequest("BadRequestImageUrl", "the url redirects to an address that is not http or https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def fetch(url: str) -> bytes:
    """An image from an http(s) URL: at most MAX_IMAGE_BYTES, within URL_TIMEOUT_S."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("BadRequestImageUrl", "the url must be an http or https address")
    deadline = time.monotonic() + URL_TIMEOUT_S
    try:
        with OPENER.open(url, timeout=URL_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
                raise BadRequest("BadRequestImageSizeBytes", "the image at the url is larger than 4 MB")
            chunks, total = [], 0
            while chunk := response.read(65536):
                total += len(chunk)
                if total > MAX_IMAGE_BYTES:
                    raise BadRequest("BadRequestImageSizeBytes", "the image at the url is larger than 4 MB")
                if time.monotonic() > deadline:
                    raise BadRequest("BadRequestImageUrl", f"the download took longer than {URL_TIMEOUT_S:.0f} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except BadRequest:
        raise
    except urllib.error.HTTPError as e:
        raise BadRequest("BadRequestImageUrl", f"the url answered {e.code}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise BadRequest("BadRequestImageUrl", f"could not download the url: {getattr(e, 'reason', e)}") from e


# ------------------------------------------------------------------------------------------- HTTP
ROUTE = re.compile(r"^(?:/[^/]+(?:/(?:classify|detect)/iterations/[^/]+)?)?/(image|url)(?:/nostore)?/?$")


class Handler(BaseHTTPRequestHandler):
    classifier: Classifier
    server_version = "cvbot-export"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may stay silent (a client that stops sending is dropped)
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms wait for a delayed ACK

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if urllib.parse.urlsplit(self.path).path == "/":
            self.send(200, b"cvbot exported model: POST /image or /url", "text/plain; charset=utf-8")
        else:
            self.error(BadRequest("NotFound", "POST /image or /url", 404))

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        match = ROUTE.match(urllib.parse.urlsplit(self.path).path)
        try:
            if match is None:
                raise BadRequest("NotFound", "POST /image (image bytes or multipart imageData) or /url "
                                             '({"url": ...})', 404)
            data = self.image() if match.group(1) == "image" else fetch(self.url())
            body = json.dumps(self.classifier.predict(data)).encode()
        except BadRequest as e:
            self.error(e)
            return
        except Exception as e:  # noqa: BLE001 - answered, and logged, rather than a dropped connection
            self.log_error("prediction failed: %r", e)
            self.error(BadRequest("InternalServerError", f"prediction failed: {type(e).__name__}", 500))
            return
        self.send(200, body, "application/json")

    def body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise BadRequest("BadRequest", "send the body with a Content-Length", 411)
        n = int(length)
        if n > limit:
            left = n
            while 0 < left <= DRAIN_BYTES:  # read and drop it, so that a client still sending gets the answer
                chunk = self.rfile.read(min(65536, left))
                left = left - len(chunk) if chunk else 0
            if n > DRAIN_BYTES:  # the unread body must not be taken for the next request
                self.close_connection = True
            raise BadRequest("BadRequestImageSizeBytes", f"the body is {length} bytes; the limit is {limit}", 413)
        return self.rfile.read(n)

    def image(self) -> bytes:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            return self.body(MAX_IMAGE_BYTES)
        raw = self.body(MAX_IMAGE_BYTES + MAX_FORM_OVERHEAD)
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw)
        if not form.is_multipart():
            raise BadRequest("BadRequestImageStream", "a malformed multipart body")
        for part in form.iter_parts():
            if part.get_param("name", header="content-disposition") == "imageData":
                payload = part.get_payload(decode=True)
                return payload if isinstance(payload, bytes) else b""
        raise BadRequest("BadRequestImageStream", "the multipart body has no imageData field")

    def url(self) -> str:
        try:
            doc = json.loads(self.body(MAX_JSON_BYTES))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest("BadRequestInvalid", 'the body must be JSON: {"url": "https://..."}') from e
        url = next((v for k, v in doc.items() if k.lower() == "url"), None) if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url:
            raise BadRequest("BadRequestImageUrl", 'the body must be JSON: {"url": "https://..."}')
        return url

    def error(self, e: BadRequest) -> None:
        self.send(e.status, json.dumps({"code": e.code, "message": e.message}).encode(), "application/json")

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if os.environ.get("QUIET") != "1":
            super().log_message(format, *args)


def main() -> None:
    Handler.classifier = Classifier()
    host, port = os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "80"))  # noqa: S104 - a container
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"serving {HERE / 'model.onnx'} on http://{host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
