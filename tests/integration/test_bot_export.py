"""`/cv export dataset`: the zip is posted in a thread, or a clear message when Slack would refuse its size."""
from __future__ import annotations

import http.client
import io
import json
import re
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from bot import dataset_links
from bot.listeners import commands
from bot.runtime import SlackBot
from core.links import dataset_url
from core.usecases import ImageUpload
from tests.helpers import colour_images
from tests.integration import test_bot_listeners as listeners
from tests.integration.test_api_limits import LiveServer, _settings
from tests.integration.test_bot_listeners import CH, CREATOR, RecordingClient, said, slash, team

cv, runner = listeners.cv, listeners.runner  # the same fixtures: a SlackBot over real use cases


class KeepingClient(RecordingClient):
    """Reads the uploaded file while the call lasts (the listener removes its temporary file afterwards)."""

    def __init__(self):
        super().__init__()
        self.uploaded: list[bytes] = []

    async def files_upload_v2(self, **kw):
        self.uploaded.append(Path(kw["file"]).read_bytes())
        return await super().files_upload_v2(**kw)


def bound_project(cv):
    uc = team(cv)
    p = uc.projects.create("Colours")
    uc.channels.bind(CH, p.id, CREATOR)
    red = uc.tags.create(p.id, "red")
    reds = colour_images(3, (220, 30, 30), 1)
    uc.images.add(p.id, [ImageUpload(d, f"r{i}.png", [red.id]) for i, d in enumerate(reds)]
                  + [ImageUpload(colour_images(1, (9, 9, 9), 2)[0], "loose.png")])
    return p


def test_export_dataset_posts_the_zip_in_a_thread(cv):
    p = bound_project(cv)
    client = KeepingClient()
    ack, respond = slash(cv, "export dataset", client)
    ack.assert_awaited_once_with()
    (started,) = client.of("chat.postMessage")
    assert started["channel"] == CH and "Colours" in started["text"]
    (upload,) = client.of("files.upload_v2")
    assert upload["channel"] == CH and upload["thread_ts"] == "1.0001" and upload["filename"] == "Colours.zip"
    assert not Path(upload["file"]).exists()  # the temporary zip is gone
    with zipfile.ZipFile(io.BytesIO(client.uploaded[0])) as zf:
        lines = [json.loads(x) for x in zf.read("manifest.jsonl").decode().splitlines()]
        assert json.loads(zf.read("settings.json"))["project"]["name"] == "Colours"
    assert sorted(x["file"].split("/")[0] for x in lines) == ["red", "red", "red", "untagged"]
    assert respond.await_count == 0
    # restorable into the same workspace
    back = team(cv).transfer.import_dataset(io.BytesIO(client.uploaded[0]), "Colours back")
    assert back.images == 4 and back.project.id != p.id


def test_export_dataset_too_large_for_slack_says_so(cv, monkeypatch):
    bound_project(cv)
    monkeypatch.setattr(commands, "SLACK_MAX_FILE_BYTES", 1000)
    client = KeepingClient()
    slash(cv, "export dataset", client)
    assert client.of("files.upload_v2") == []
    started, answer = client.of("chat.postMessage")
    assert answer["thread_ts"] == "1.0001" and "larger than Slack allows" in json.dumps(answer)
    assert "cvbot dataset export" in json.dumps(answer)


def test_export_needs_the_word_dataset_and_a_bound_project(cv):
    client = KeepingClient()
    ack, respond = slash(cv, "export", client)
    assert "/cv export dataset" in said(respond)["text"]
    ack, respond = slash(cv, "export dataset", client, channel="C-UNBOUND")
    assert said(respond)["response_type"] == "ephemeral" and client.calls == []


@pytest.fixture
def live(tmp_path):
    server = LiveServer(replace(_settings(tmp_path), secret_key="dataset-link-test-secret"))
    yield server
    server.close()


def test_export_dataset_too_large_for_slack_posts_a_signed_link(live, monkeypatch):
    """The bot built as `cvbot serve` builds it (bot.dataset_links) posts a link; the server's keyless route
    answers the same zip; a tampered, expired or other project's link gets 403 and a deleted project 404."""
    settings = replace(live.container.settings, public_url=f"http://127.0.0.1:{live.port}")
    bot = SlackBot(live.container.deps, "xoxb-test", progress_interval=0)
    bot.dataset_url = dataset_links(SimpleNamespace(settings=settings, deps=live.container.deps))
    p = bound_project(bot)
    other = team(bot).projects.create("Other")
    direct = io.BytesIO()
    team(bot).transfer.export_dataset(p.id, direct)
    monkeypatch.setattr(commands, "SLACK_MAX_FILE_BYTES", 1000)
    client = KeepingClient()
    slash(bot, "export dataset", client)
    assert client.of("files.upload_v2") == []
    started, answer = client.of("chat.postMessage")
    assert answer["thread_ts"] == "1.0001" and "larger than Slack allows" in answer["text"]
    (url,) = re.findall(r"<(http[^|>]+)\|Download the zip>", answer["text"])
    parts = urlsplit(url)
    assert parts.path == f"/customvision/datasets/{p.id}" and set(parse_qs(parts.query)) == {"exp", "sig"}

    def get(path_and_query: str) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
        try:
            conn.request("GET", path_and_query)  # no key: the signature is the permission
            r = conn.getresponse()
            return r.status, dict(r.headers), r.read()
        finally:
            conn.close()

    status, headers, body = get(f"{parts.path}?{parts.query}")
    assert status == 200 and headers["Content-Type"] == "application/zip", body[:200]
    assert 'filename="Colours.zip"' in headers["Content-Disposition"]
    assert body == direct.getvalue()  # the same zip, byte for byte
    back = team(bot).transfer.import_dataset(io.BytesIO(body), "Colours back")
    assert back.images == 4

    q = parse_qs(parts.query)
    exp, sig = q["exp"][0], q["sig"][0]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    for bad in (f"{parts.path}?exp={exp}&sig={flipped}", f"{parts.path}?exp={int(exp) + 1}&sig={sig}",
                f"{parts.path}?exp={exp}", f"/customvision/datasets/{other.id}?exp={exp}&sig={sig}",
                f"{parts.path}?exp=0{exp}&sig={sig}"):
        status, _, body = get(bad)
        assert status == 403 and json.loads(body)["code"] == "Forbidden", bad
        assert b"Colours" not in body
    expired = dataset_url("", b"dataset-link-test-secret", p.id, int(time.time()) - 1)
    assert get(expired)[0] == 403
    team(bot).projects.delete(p.id)
    assert get(f"{parts.path}?{parts.query}")[0] == 404


# ------------------------------------------------------------------ models: /cv export PLATFORM [FLAVOR] [N]
@pytest.fixture
def trained_bot(tmp_path, provider):
    """A bot whose jobs run at once (exports are jobs), with a trained Compact project bound to the channel."""
    from tests.conftest import make_deps

    bot = SlackBot(make_deps(tmp_path, provider), "xoxb-test", progress_interval=0)
    uc = team(bot)
    p = uc.projects.create("Colours")
    uc.channels.bind(CH, p.id, CREATOR)
    for name, rgb, seed in (("red", (220, 30, 30), 1), ("blue", (30, 40, 220), 2)):
        tag = uc.tags.create(p.id, name)
        uc.images.add(p.id, [ImageUpload(d, f"{name}{i}.png", [tag.id]) for i, d in enumerate(colour_images(6, rgb,
                                                                                                          seed))])
    it = uc.training.wait(p.id, uc.training.train(p.id).id, timeout=300)
    assert it.status.value == "Completed", it.failure_reason
    return bot


def test_export_model_posts_the_zip_with_a_usage_note_in_a_thread(trained_bot):
    import onnxruntime as ort

    client = KeepingClient()
    ack, respond = slash(trained_bot, "export onnx", client)
    ack.assert_awaited_once_with()
    assert respond.await_count == 0
    (started,) = client.of("chat.postMessage")
    assert started["channel"] == CH and "iteration 1 of *Colours* as ONNX" in started["text"]
    (upload,) = client.of("files.upload_v2")
    assert upload["thread_ts"] == "1.0001" and upload["filename"] == "Colours-1-ONNX.zip"
    assert "Bgr8" in upload["initial_comment"] and "labels.txt" in upload["initial_comment"]
    assert not Path(upload["file"]).exists()
    with zipfile.ZipFile(io.BytesIO(client.uploaded[0])) as zf:
        assert set(zf.namelist()) == {"model.onnx", "labels.txt", "cvexport.manifest"}
        session = ort.InferenceSession(zf.read("model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "model_output"

    client = KeepingClient()
    slash(trained_bot, "export ONNX onnxfloat16 #1", client)
    (upload,) = client.of("files.upload_v2")
    assert upload["filename"] == "Colours-1-ONNX-ONNXFloat16.zip" and "(ONNXFloat16)" in upload["initial_comment"]
    with zipfile.ZipFile(io.BytesIO(client.uploaded[0])) as zf:
        assert json.loads(zf.read("cvexport.manifest"))["Flavor"] == "ONNXFloat16"


def test_export_model_refusals_answer_only_the_caller(trained_bot, monkeypatch):
    from core.export import platforms
    from core.export.onnx import OnnxExporter

    class Missing(OnnxExporter):
        platform = "Elsewhere"

        def unavailable(self):
            return "run `make export-env` (no converter here)"

    monkeypatch.setitem(platforms.PLATFORMS, "Elsewhere", Missing)
    for text, says in (("export elsewhere", "Elsewhere export is not available on this server: run `make export-env`"),
                       ("export vaidk", "the platforms are ONNX"),
                       ("export onnx tensorflowlite", "ONNX has no flavor 'tensorflowlite'"),
                       ("export onnx 7", "7"),
                       ("export onnx 1 2", "one flavor and one iteration number at most"),
                       ("export dataset now", "/cv export PLATFORM [FLAVOR] [N]")):
        client = KeepingClient()
        ack, respond = slash(trained_bot, text, client)
        answer = said(respond)
        assert answer["response_type"] == "ephemeral" and says in answer["text"], (text, answer)
        assert client.calls == []
    p = team(trained_bot).channels.binding(CH).project_id
    it = team(trained_bot).iterations.current(p)
    assert team(trained_bot).exports.list(p, it.id) == []
