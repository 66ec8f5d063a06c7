"""`/cv export dataset`: the zip is posted in a thread, or a clear message when Slack would refuse its size."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from bot.listeners import commands
from core.usecases import ImageUpload
from tests.helpers import colour_images
from tests.integration import test_bot_listeners as listeners
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
