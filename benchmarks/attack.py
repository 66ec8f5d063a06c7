"""Benchmark 9: hostile images against `cvbot serve` (issue #13). Eight clients send valid but huge images to the
Prediction API (a 1-bit 10,240 x 10,240 PNG of a few kB, then a 10,240 x 10,240 RGB PNG under 4 MB) while one
client sends normal predictions: the server's peak RSS above idle (from /proc) and the normal predictions' p95,
against the same predictions without the attack, measured in the same run. Loopback only, bounded request counts."""
from __future__ import annotations

import http.client
import io
import json
import threading
import time
from pathlib import Path

from .common import Config, load_average, megapixel_jpeg, percentile, tuxpaint_dataset
from .serve import PREDICTION_KEY, classify_path, prepare_project, server_env, start_server

SIDE = 10_240
CLIENTS = 8


def one_bit_png() -> bytes:
    """A 1-bit SIDE x SIDE PNG, a black disc on white: about 50 kB (the issue's was 12.8 kB)."""
    from PIL import Image, ImageDraw

    img = Image.new("1", (SIDE, SIDE), 1)
    ImageDraw.Draw(img).ellipse((SIDE // 8, SIDE // 8, SIDE * 7 // 8, SIDE * 7 // 8), fill=0)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def large_rgb_png(stamp: bytes) -> bytes:
    """A real picture (a Tux Paint stamp on white) enlarged to SIDE x SIDE RGB without noise, so that the PNG stays
    under 4 MB while it decodes to 10,240^2 pixels (~315 MB as 3 bytes a pixel, 420 MB as Pillow holds RGB)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    src = Image.open(io.BytesIO(stamp)).convert("RGBA")
    white = Image.new("RGBA", src.size, (255, 255, 255, 255))
    small = Image.alpha_composite(white, src).convert("RGB").resize((320, 320))
    buf = io.BytesIO()
    small.resize((SIDE, SIDE), Image.Resampling.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def _post(conn: http.client.HTTPConnection, path: str, data: bytes) -> tuple[int, dict]:
    conn.request("POST", path, body=data, headers={"Prediction-Key": PREDICTION_KEY,
                                                     "Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, json.loads(body) if body else {}


def _top(body: dict) -> str | None:
    preds = body.get("predictions") or []
    return max(preds, key=lambda p: p["probability"])["tagName"] if preds else None


class Peak:
    """The server's peak RSS from /proc while a phase runs: VmHWM after resetting it (clear_refs), or sampled
    VmRSS where the reset is not allowed."""

    def __init__(self, pid: int):
        self.pid = pid
        self.sampled = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _status(self) -> dict[str, float]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        fields = {ln.split(":")[0]: ln.split(":")[1].split() for ln in text.splitlines() if ":" in ln}
        return {k: int(fields[k][0]) / 1024 for k in ("VmRSS", "VmHWM") if k in fields}

    def rss(self) -> float:
        return self._status()["VmRSS"]

    def __enter__(self) -> Peak:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.reset = True
        except OSError:
            self.reset = False
        self.sampled = self.rss()

        def sample():
            while not self._stop.wait(0.005):
                self.sampled = max(self.sampled, self.rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def peak(self) -> float:
        s = self._status()
        return max(self.sampled, s["VmHWM"]) if self.reset else self.sampled


def _normal(port: int, path: str, jpeg: bytes, count: int | None, stop: threading.Event | None) -> list[float]:
    """Latencies of normal predictions, `count` of them or until `stop` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    lat: list[float] = []
    try:
        while (count is None or len(lat) < count) and not (stop is not None and stop.is_set()):
            t = time.perf_counter()
            status, body = _post(conn, path, jpeg)
            if status != 200:
                raise RuntimeError(f"a normal prediction failed: HTTP {status} {body}")
            lat.append(time.perf_counter() - t)
    finally:
        conn.close()
    return lat


def _attack(server, path: str, data: bytes, per_client: int, normal_path: str, jpeg: bytes, idle_mb: float) -> dict:
    """CLIENTS clients send `data` per_client times each while one client sends normal predictions."""
    statuses: list[int] = []
    tops: list[str | None] = []
    errors: list[str] = []
    lock = threading.Lock()

    def attacker():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        try:
            for _ in range(per_client):
                status, body = _post(conn, path, data)
                with lock:
                    statuses.append(status)
                    if status == 200:
                        tops.append(_top(body))
        except Exception as e:  # noqa: BLE001 - reported in the results
            errors.append(repr(e))
        finally:
            conn.close()

    stop = threading.Event()
    normal: list[float] = []
    normal_thread = threading.Thread(target=lambda: normal.extend(_normal(server.port, normal_path, jpeg, None, stop)))
    threads = [threading.Thread(target=attacker) for _ in range(CLIENTS)]
    with Peak(server.proc.pid) as peak:
        before = peak.sampled
        t0 = time.perf_counter()
        normal_thread.start()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        stop.set()
        normal_thread.join()
    ms = [x * 1000 for x in normal]
    return {"clients": CLIENTS, "requests": len(statuses), "wall_s": round(wall, 2),
            "answered_200": statuses.count(200), "answered_503": statuses.count(503),
            "other_statuses": sorted({s for s in statuses if s not in (200, 503)}), "client_errors": errors[:3],
            "top_tags": sorted(set(tops), key=str), "peak_rss_mb": round(peak.peak(), 1),
            "peak_above_idle_mb": round(peak.peak() - idle_mb, 1), "rss_before_mb": round(before, 1),
            "rss_after_mb": round(peak.rss(), 1),
            "normal_requests": len(ms), "normal_p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "normal_p95_ms": round(percentile(ms, 95), 1) if ms else None}


def run(cfg: Config, tmp: Path) -> dict:
    stamps, labels, names = tuxpaint_dataset()
    env = server_env(tmp / "attack-data")
    project_id = prepare_project(env, "Compact", per_tag=cfg.pick(10, 5), name="attack")
    jpeg = megapixel_jpeg()
    bomb = one_bit_png()
    stamp = stamps[-1]  # a stamp the project was not trained on (prepare_project takes the first of each tag)
    rgb = large_rgb_png(stamp)
    result: dict = {"load_average": load_average(), "one_bit_png_bytes": len(bomb), "rgb_png_bytes": len(rgb),
                    "side_px": SIDE}
    server = start_server(env)
    try:
        path = normal_path = classify_path(project_id, False)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        try:
            status, small_body = _post(conn, path, stamp)
            assert status == 200, small_body
            # warm up with concurrent normal traffic too (its steady memory, e.g. a second forward pass in flight,
            # belongs to idle, not to the attack)
            warm = [threading.Thread(target=_normal, args=(server.port, normal_path, jpeg, 10, None))
                    for _ in range(CLIENTS)]
            for th in warm:
                th.start()
            for th in warm:
                th.join()
            idle = Peak(server.proc.pid).rss()
            baseline = [x * 1000 for x in _normal(server.port, normal_path, jpeg, cfg.pick(100, 30), None)]
            result["idle_rss_mb"] = round(idle, 1)
            result["normal_without_attack"] = {"requests": len(baseline),
                                               "p50_ms": round(percentile(baseline, 50), 1),
                                               "p95_ms": round(percentile(baseline, 95), 1)}
            # one large RGB decode alone: the reference for the RGB attack
            with Peak(server.proc.pid) as peak:
                status, big_body = _post(conn, path, rgb)
            assert status == 200, big_body
            result["rgb_alone"] = {"peak_above_idle_mb": round(peak.peak() - idle, 1),
                                   "top_tag": _top(big_body), "top_tag_of_the_original": _top(small_body)}
        finally:
            conn.close()
        result["one_bit_attack"] = _attack(server, path, bomb, cfg.pick(6, 2), normal_path, jpeg, idle)
        result["rgb_attack"] = _attack(server, path, rgb, cfg.pick(4, 2), normal_path, jpeg, idle)
    finally:
        server.stop()
    result["note"] = ("attackers ignore Retry-After and send again at once; the normal client sends a 1.1-megapixel "
                      "JPEG (nostore) until the attack ends")
    return result
