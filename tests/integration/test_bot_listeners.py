"""Bolt listeners called directly with mocked ack/respond and a recording Web API client, over the real
use cases (SQLite, blobs, the EfficientNet-Lite0 backbone)."""
from __future__ import annotations

import asyncio
import itertools
import threading
from unittest.mock import AsyncMock

import pytest

from bot.listeners import actions, commands, messages
from bot.runtime import Download, SlackBot
from core.model import IterationStatus
from core.ports import JobRunner
from core.usecases import ImageUpload, recover
from tests.conftest import make_deps
from tests.helpers import colour_images, png_bytes

TEAM, CH, CREATOR, OTHER, ADMIN = "T1", "C1", "UCREATOR", "UOTHER", "UADMIN"
RED, BLUE = (220, 30, 30), (30, 40, 220)


class RecordingClient:
    """The Web API methods the listeners call, recorded; users.info knows who is an admin."""

    def __init__(self, admins=(ADMIN,)):
        self.calls: list[tuple[str, dict]] = []
        self.admins = set(admins)
        self._ts = itertools.count(1)

    def _record(self, method, kw):
        self.calls.append((method, kw))

    def of(self, method):
        return [kw for m, kw in self.calls if m == method]

    async def chat_postMessage(self, **kw):
        self._record("chat.postMessage", kw)
        return {"ok": True, "ts": f"{next(self._ts)}.0001", "channel": kw["channel"]}

    async def chat_update(self, **kw):
        self._record("chat.update", kw)
        return {"ok": True}

    async def users_info(self, user):
        self._record("users.info", {"user": user})
        return {"ok": True, "user": {"id": user, "is_admin": user in self.admins}}

    async def views_open(self, **kw):
        self._record("views.open", kw)
        return {"ok": True}

    async def files_upload_v2(self, **kw):
        self._record("files.upload_v2", kw)
        return {"ok": True}


class GatedRunner(JobRunner):
    """Holds training jobs until released, so a test can watch every progress step."""

    def __init__(self):
        self.jobs = []

    def submit(self, job, fn):
        self.jobs.append(fn)

    def release(self):
        for fn in self.jobs:
            threading.Thread(target=fn, daemon=True).start()
        self.jobs = []


@pytest.fixture
def runner():
    return GatedRunner()


@pytest.fixture
def cv(tmp_path, provider, runner):
    bot = SlackBot(make_deps(tmp_path, provider, runner), "xoxb-test", progress_interval=0)
    served: dict[str, bytes] = {}

    async def fake_download(client, f, max_bytes):  # the HTTP download itself is covered end to end
        if f.get("size", 0) > max_bytes:
            return Download(f, problem="too large")
        return Download(f, served[f["id"]])

    bot.download = fake_download
    bot.served = served
    return bot


def team(cv):
    """The use cases of the test's workspace, for arranging and checking what the listeners did."""
    return cv.scoped(TEAM)


def ctx(cv):
    return {"cv": cv, "team_id": TEAM, "bot_user_id": "UBOT"}


def slash(cv, text, client, user=CREATOR, channel=CH):
    ack, respond = AsyncMock(), AsyncMock()
    command = {"text": text, "team_id": TEAM, "channel_id": channel, "user_id": user, "trigger_id": "trig"}
    asyncio.run(commands.handle_cv(ack=ack, command=command, respond=respond, client=client, context=ctx(cv)))
    return ack, respond


def said(respond):
    (call,) = respond.await_args_list
    return call.kwargs


def test_help_and_parse_errors_are_answered_in_the_ack(cv):
    ack, respond = slash(cv, "help", RecordingClient())
    assert "/cv new NAME" in ack.await_args.kwargs["text"] and respond.await_count == 0
    ack, respond = slash(cv, "new x domain=space", RecordingClient())
    ack.assert_awaited_once_with()
    assert "unknown domain `space`" in said(respond)["text"] and said(respond)["response_type"] == "ephemeral"


def test_new_creates_and_binds_then_refuses_a_duplicate(cv):
    ack, respond = slash(cv, "new pets type=multilabel furry friends", RecordingClient())
    ack.assert_awaited_once_with()
    assert said(respond)["response_type"] == "in_channel"
    binding = team(cv).channels.binding(CH)
    p = team(cv).projects.get(binding.project_id)
    assert (p.name, p.classification_type.value, p.description, p.created_by, p.workspace) == \
        ("pets", "Multilabel", "furry friends", CREATOR, TEAM)
    _, respond = slash(cv, "new pets", RecordingClient())
    assert "already exists" in said(respond)["text"]


def test_commands_in_an_unbound_channel_say_how_to_start(cv):
    _, respond = slash(cv, "tags", RecordingClient())
    assert "This channel has no project yet" in said(respond)["text"]


def test_projects_of_another_workspace_stay_invisible(cv):
    cv.scoped("T-OTHER").projects.create("secret")
    _, respond = slash(cv, "use secret", RecordingClient())
    assert "no project named 'secret'" in said(respond)["text"]
    _, respond = slash(cv, "projects", RecordingClient())
    assert "secret" not in said(respond)["text"]


def test_settings_are_for_the_creator_and_admins(cv):
    client = RecordingClient()
    slash(cv, "new pets", client)
    _, respond = slash(cv, "settings domain=Food", client, user=OTHER)
    assert "only the project's creator (<@UCREATOR>) or a workspace admin" in said(respond)["text"]
    assert team(cv).projects.find("pets").domain.value == "Compact"
    _, respond = slash(cv, "settings domain=Food type=multilabel", client, user=ADMIN)
    assert said(respond)["response_type"] == "in_channel"
    p = team(cv).projects.find("pets")
    assert (p.domain.value, p.classification_type.value) == ("Food", "Multilabel")
    _, respond = slash(cv, "settings type=multiclass", client, user=CREATOR)  # no admin check needed
    assert team(cv).projects.find("pets").classification_type.value == "Multiclass"
    assert [c["user"] for c in client.of("users.info")] == [OTHER, ADMIN]


def test_the_unknown_threshold_is_shown_and_set(cv):
    client = RecordingClient()
    slash(cv, "new pets", client)
    _, respond = slash(cv, "threshold unknown", client)
    assert "from unknown score *0.95*" in said(respond)["text"] and said(respond)["response_type"] == "ephemeral"
    _, respond = slash(cv, "threshold unknown 80%", client, user=OTHER)
    assert "now says \"I don't recognise this\" from unknown score *0.8* (set by <@UOTHER>)" in said(respond)["text"]
    p = team(cv).projects.find("pets")
    assert (p.unknown_threshold, p.threshold) == (0.8, 0.5)  # the probability threshold is another setting
    _, respond = slash(cv, "threshold unknown lots", client)
    assert "is not a threshold" in said(respond)["text"] and team(cv).projects.find("pets").unknown_threshold == 0.8


def test_keys_only_for_admins(cv):
    _, respond = slash(cv, "keys", RecordingClient())
    assert "only workspace admins" in said(respond)["text"]
    _, respond = slash(cv, "keys", RecordingClient(), user=ADMIN)
    keys = team(cv).channels.keys()
    assert keys.training_key in said(respond)["text"] and keys.prediction_key in said(respond)["text"]


def _event(cv, text, files=(), ts="100.1", user=CREATOR, thread_ts=None, **extra):
    ev = {"type": "message", "channel": CH, "user": user, "text": text, "ts": ts, "channel_type": "channel", **extra}
    if files:
        ev["subtype"], ev["files"] = "file_share", list(files)
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


def _files(cv, images, prefix="img"):
    out = []
    for i, data in enumerate(images):
        fid = f"F{prefix}{i}"
        cv.served[fid] = data
        out.append({"id": fid, "name": f"{prefix}{i}.png", "mimetype": "image/png", "size": len(data)})
    return out


def on_message(cv, client, event):
    asyncio.run(messages.handle_message(event=event, body={"team_id": TEAM}, client=client, context=ctx(cv)))


def test_tagging_by_posting_links_the_images_and_ignores_a_repeat(cv):
    client = RecordingClient()
    slash(cv, "new pets", client)
    files = _files(cv, colour_images(5, RED, 1)) + [{"id": "Fdoc", "name": "a.pdf", "mimetype": "application/pdf",
                                                     "size": 10}]
    ev = _event(cv, "tags: Cat, cute", files)
    on_message(cv, client, ev)
    (reply,) = client.of("chat.postMessage")
    assert reply["thread_ts"] == "100.1" and "5 added, 0 duplicate, 0 rejected" in reply["text"]
    assert "a.pdf" not in reply["text"]
    p = team(cv).projects.find("pets")
    assert {t.name: t.image_count for t in team(cv).tags.list(p.id)} == {"Cat": 5, "cute": 5}
    assert len(team(cv).channels.message_image_ids(CH, "100.1")) == 5
    on_message(cv, client, ev)  # the same message again (a redelivery): nothing new
    assert len(client.of("chat.postMessage")) == 1 and team(cv).images.count(p.id) == 5


def test_bot_messages_and_edits_are_ignored(cv):
    client = RecordingClient()
    slash(cv, "new pets", client)
    files = _files(cv, colour_images(1, RED, 2))
    on_message(cv, client, _event(cv, "tag: x", files, bot_id="B1"))
    on_message(cv, client, {**_event(cv, "tag: x", files, ts="100.2"), "subtype": "message_changed"})
    on_message(cv, client, _event(cv, "tag: x", files, ts="100.3", user="UBOT"))
    assert client.of("chat.postMessage") == []


def _train_ready_project(cv, client):
    slash(cv, "new colours", client)
    p = team(cv).projects.find("colours")
    red, blue = team(cv).tags.get_or_create(p.id, ["red", "blue"])
    ups = [ImageUpload(d, f"r{i}", [red.id]) for i, d in enumerate(colour_images(6, RED, 3))]
    ups += [ImageUpload(d, f"b{i}", [blue.id]) for i, d in enumerate(colour_images(6, BLUE, 4))]
    assert all(r.ok for r in team(cv).images.add(p.id, ups))
    return p


def test_train_follows_progress_and_posts_summary_and_chart(cv, runner):
    client = RecordingClient()
    p = _train_ready_project(cv, client)

    async def scenario():
        ack, respond = AsyncMock(), AsyncMock()
        await commands.handle_cv(ack=ack, respond=respond, client=client, context=ctx(cv),
                                 command={"text": "train", "team_id": TEAM, "channel_id": CH, "user_id": CREATOR})
        await asyncio.sleep(0.2)  # the follower subscribes before the job runs
        runner.release()
        await asyncio.wait_for(asyncio.gather(*cv.tasks), 120)
        return respond

    respond = asyncio.run(scenario())
    assert respond.await_count == 0  # success is told in the channel, not ephemerally
    progress = client.of("chat.postMessage")[0]
    assert progress["channel"] == CH and "iteration 1: queued" in progress["text"]
    updates = [u["text"] for u in client.of("chat.update")]
    assert any("embedding" in u for u in updates[:-1]), updates
    assert "iteration 1 trained in" in updates[-1]
    summary = client.of("chat.postMessage")[1]
    assert summary["thread_ts"] == "1.0001"
    assert "Iteration 1 of colours: performance at threshold 0.5" in summary["text"]
    (chart,) = client.of("files.upload_v2")
    assert chart["thread_ts"] == "1.0001" and chart["file"].startswith(b"\x89PNG")
    assert team(cv).projects.get(p.id).default_iteration_id is not None

    _, respond = slash(cv, "train", client)  # nothing changed since iteration 1
    assert "nothing changed since iteration 1" in said(respond)["text"]


def test_too_few_images_is_an_ephemeral_error(cv):
    client = RecordingClient()
    slash(cv, "new few", client)
    _, respond = slash(cv, "train", client)
    assert said(respond)["text"].startswith(":warning: Cannot train") and said(respond)["response_type"] == "ephemeral"
    assert client.of("chat.postMessage") == []


def _trained(cv, runner, client):
    p = _train_ready_project(cv, client)
    it = team(cv).training.train(p.id)
    runner.release()
    assert team(cv).training.wait(p.id, it.id, 120).status == IterationStatus.Completed
    return p, it


def test_classify_then_correct_adds_the_image_to_training(cv, runner):
    client = RecordingClient()
    p, _ = _trained(cv, runner, client)
    on_message(cv, client, _event(cv, "<@UBOT>", _files(cv, colour_images(1, BLUE, 9), "q"), ts="200.1"))
    answer = client.of("chat.postMessage")[-1]
    assert answer["thread_ts"] == "200.1" and "*blue*" in answer["text"]
    actions_block = answer["blocks"][-1]
    correct = actions_block["elements"][0]
    before = team(cv).images.count(p.id)
    body = {"team": {"id": TEAM}, "user": {"id": OTHER}, "channel": {"id": CH},
            "container": {"channel_id": CH, "message_ts": "5.0001", "is_ephemeral": False},
            "message": {"text": answer["text"], "blocks": answer["blocks"]}}
    ack, respond = AsyncMock(), AsyncMock()
    asyncio.run(actions.handle_prediction_feedback(ack=ack, body=body, respond=respond, client=client, context=ctx(cv),
                                                   action={**correct, "block_id": actions_block["block_id"]}))
    ack.assert_awaited_once()
    assert respond.await_count == 0
    assert team(cv).images.count(p.id) == before + 1
    update = client.of("chat.update")[-1]
    assert update["ts"] == "5.0001" and "Added to the training set as *blue* by <@UOTHER>" in str(update["blocks"])


def test_delete_iteration_is_refused_to_others_and_allowed_to_the_creator(cv, runner):
    client = RecordingClient()
    p, it1 = _trained(cv, runner, client)
    it2 = team(cv).training.train(p.id, force=True)
    runner.release()
    team(cv).training.wait(p.id, it2.id, 120)
    body = {"team": {"id": TEAM}, "channel": {"id": CH}, "container": {"is_ephemeral": True}, "message": {}}

    def press(user):
        ack, respond = AsyncMock(), AsyncMock()
        asyncio.run(actions.handle_delete_iteration(
            ack=ack, body={**body, "user": {"id": user}}, respond=respond, client=client, context=ctx(cv),
            action={"action_id": "cv_iteration_delete", "value": f"{p.id}|{it2.id}"}))
        return respond

    refused = press(OTHER)
    assert "only the project's creator" in said(refused)["text"] and said(refused)["replace_original"] is False
    assert len(team(cv).iterations.list(p.id)) == 2
    done = press(CREATOR)
    assert [i.number for i in team(cv).iterations.list(p.id)] == [1]
    redrawn, announced = [c.kwargs for c in done.await_args_list]
    assert redrawn["replace_original"] is True and "Iterations of colours" in redrawn["text"]
    assert "deleted iteration 2" in announced["text"] and announced["response_type"] == "in_channel"


def test_buttons_of_a_project_no_longer_bound_here_are_refused(cv, runner):
    client = RecordingClient()
    p, it = _trained(cv, runner, client)
    slash(cv, "new other", client)  # rebinding the channel
    ack, respond = AsyncMock(), AsyncMock()
    asyncio.run(actions.handle_make_default(
        ack=ack, body={"team": {"id": TEAM}, "channel": {"id": CH}, "user": {"id": CREATOR}, "container": {}},
        respond=respond, client=client, context=ctx(cv), action={"value": f"{p.id}|{it.id}"}))
    assert "no longer bound to this channel" in said(respond)["text"]


def test_oversized_and_corrupt_images_are_reported_per_file(cv):
    client = RecordingClient()
    slash(cv, "new mixed", client)
    files = _files(cv, [png_bytes(), b"\x89PNG\r\n\x1a\nnope"])
    files.append({"id": "Fbig", "name": "big.png", "mimetype": "image/png", "size": 20 * 1024 * 1024})
    on_message(cv, client, _event(cv, "tag: a", files))
    text = client.of("chat.postMessage")[0]["text"]
    assert "1 added, 0 duplicate, 2 rejected" in text and "`big.png` rejected: too large" in text


def test_train_in_a_channel_the_bot_is_not_in_says_how_to_fix_it(cv, runner):
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

    class NotInChannel(RecordingClient):
        async def chat_postMessage(self, **kw):
            self._record("chat.postMessage", kw)
            raise SlackApiError("not_in_channel", AsyncSlackResponse(
                client=None, http_verb="POST", api_url="x", req_args={}, data={"ok": False, "error": "not_in_channel"},
                headers={}, status_code=200))

    client = NotInChannel()
    p = _train_ready_project(cv, client)
    _, respond = slash(cv, "train", client)
    text = said(respond)["text"]
    assert "Training iteration 1 of *colours* is queued" in text and "`/invite @cvbot`" in text
    runner.release()  # the training itself still runs
    (it,) = team(cv).iterations.list(p.id)
    assert team(cv).training.wait(p.id, it.id, 120).status == IterationStatus.Completed


def test_start_up_reports_a_training_cut_off_by_a_restart_once(cv, runner):
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

    from bot.training import report_unreported

    client = RecordingClient()
    p = _train_ready_project(cv, client)
    slash(cv, "train", client)  # the progress message is posted; its follower dies with the event loop
    (it,) = team(cv).iterations.list(p.id)
    assert it.notify == {"slack": {"channel": CH, "ts": "1.0001", "user": CREATOR}}
    assert recover(cv.deps)["failed_iterations"] == 1  # the job never ran: "restart"

    following = SlackBot(cv.deps, "xoxb-test")
    following.following.add(it.id)  # an iteration this process already reports is left to its follower
    assert asyncio.run(report_unreported(following, RecordingClient())) == 0

    class ThreadGone(RecordingClient):  # Slack answers the thread reply with an error: reported anyway
        async def chat_postMessage(self, **kw):
            self._record("chat.postMessage", kw)
            raise SlackApiError("thread_not_found", AsyncSlackResponse(
                client=None, http_verb="POST", api_url="x", req_args={},
                data={"ok": False, "error": "thread_not_found"}, headers={}, status_code=200))

    after = ThreadGone()
    assert asyncio.run(report_unreported(SlackBot(cv.deps, "xoxb-test"), after)) == 1
    (update,) = after.of("chat.update")
    assert update["channel"] == CH and update["ts"] == "1.0001"
    assert update["text"].startswith(":x: Training *colours* iteration 1 failed: interrupted")
    (reply,) = after.of("chat.postMessage")
    assert reply["thread_ts"] == "1.0001" and reply["text"].startswith(":warning: Iteration 1 failed: interrupted")
    assert team(cv).iterations.get(p.id, it.id).reported_at is not None

    again = RecordingClient()
    assert asyncio.run(report_unreported(SlackBot(cv.deps, "xoxb-test"), again)) == 0 and again.calls == []


def test_an_image_like_nothing_trained_gets_i_dont_recognise_this(cv, runner):
    client = RecordingClient()
    p, _ = _trained(cv, runner, client)
    green = colour_images(1, (30, 200, 40), 5)
    on_message(cv, client, _event(cv, "classify", _files(cv, green, "g"), ts="300.1"))
    answer = client.of("chat.postMessage")[-1]
    assert answer["thread_ts"] == "300.1"
    assert answer["text"].startswith(":grey_question: I don't recognise this") and "*colours*" in answer["text"]
    shown = str(answer["blocks"])
    assert "Closest tags: *blue*" in shown or "Closest tags: *red*" in shown
    assert "unknown score 1.00 (flagged from 0.95)" in shown
    # no verdict to confirm, only a menu to tag it (which adds it to the training set)
    (actions_block,) = [b for b in answer["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions_block["elements"]] == ["cv_prediction_retag"]
    # an image like the training set is answered as before, with its score in the footnote
    on_message(cv, client, _event(cv, "classify", _files(cv, colour_images(1, BLUE, 9), "b"), ts="301.1"))
    known = client.of("chat.postMessage")[-1]
    assert "*blue*" in known["text"] and "recognise" not in known["text"]
    assert "unknown score 0." in str(known["blocks"])
