"""Zero-shot start of a CLIP project: plumbing only. ViT-B-32 with random weights (no download here), so these
tests check where the answer goes and what it is marked, never whether it is right.

One General project with tags and no iteration answers the Training API's quick test with `zeroShot: true` and
probabilities over its Regular tags; the Prediction API (a published iteration by name) keeps Azure's error; the
first training replaces the zero-shot answer. Slack: `/cv new … domain=General tags=…` creates the tags, and an
image posted with `classify` gets a reply that says zero-shot."""
import asyncio
import json
from unittest.mock import AsyncMock

import numpy as np
import pytest

from bot.listeners import commands, messages, views
from bot.runtime import Download, SlackBot
from core import errors
from core.backbones import BackboneSettings, ClipBackbone
from core.model import IterationStatus
from core.usecases import ImageUpload, InlineRunner, Scope
from tests.helpers import colour_images, png_bytes

KEY, PKEY = "k" * 32, "p" * 32
TRAIN, PREDICT = "/customvision/v3.3/training", "/customvision/v3.1/prediction"
RED, BLUE = (200, 20, 20), (20, 20, 200)
TEAM, CH, USER = "T1", "C1", "U1"


@pytest.fixture(scope="module")
def container(tmp_path_factory, model_dir):
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    tmp = tmp_path_factory.mktemp("zero-shot")
    settings = Settings.from_env({"CVBOT_DATA_DIR": str(tmp / "data"), "CVBOT_TRAINING_KEY": KEY,
                                  "CVBOT_PREDICTION_KEY": PKEY, "CVBOT_MODEL_DIR": str(model_dir)})
    c = bootstrap(settings)
    c.deps.runner = InlineRunner()
    clip = ClipBackbone("General", random_init_for_tests=True,
                        settings=BackboneSettings(cache_dir=str(tmp / "m"), runtime="torch"))
    for domain in ("General", "Food"):  # as if their weights were configured (Food: General's prompts here)
        c.deps.backbones._cache[domain] = clip
    yield c
    c.close()


def _call(container, method, path, data=None, key=KEY):
    from aiohttp.test_utils import TestClient, TestServer

    from cvbot.server import build_app

    async def go():
        async with TestClient(TestServer(build_app(container))) as client:
            headers = {"Training-Key": key, "Prediction-Key": key, "Content-Type": "application/octet-stream"}
            r = await client.request(method, path, data=data, headers=headers)
            return r.status, await r.json()

    return asyncio.run(go())


def test_quick_test_answers_zero_shot_until_the_first_training(container):
    uc = container.usecases(Scope.of("default"))
    p = uc.projects.create("zoo", domain="General")
    cat, dog, neg = uc.tags.get_or_create(p.id, ["tabby cat", "dog", "negative"])
    status, out = _call(container, "POST", f"{TRAIN}/projects/{p.id}/quicktest/image", png_bytes(RED))
    assert status == 200, out
    assert out["zeroShot"] is True and out["iteration"] is None
    assert sorted(x["tagName"] for x in out["predictions"]) == ["dog", "tabby cat"]  # no Negative
    assert sum(x["probability"] for x in out["predictions"]) == pytest.approx(1.0, abs=1e-6)
    assert out["predictions"][0]["probability"] >= out["predictions"][1]["probability"]
    assert uc.predictions.list(p.id) == []  # zero-shot answers are not stored

    # the Prediction API names a published iteration: Azure's error stays
    status, out = _call(container, "POST", f"{PREDICT}/{p.id}/classify/iterations/prod/image", png_bytes(RED), PKEY)
    assert status == 404 and "zeroShot" not in out

    ups = [ImageUpload(d, "", [cat.id]) for d in colour_images(5, RED, 1)]
    ups += [ImageUpload(d, "", [dog.id]) for d in colour_images(5, BLUE, 2)]
    assert all(r.ok for r in uc.images.add(p.id, ups))
    it = uc.training.wait(p.id, uc.training.train(p.id).id, timeout=300)
    assert it.status == IterationStatus.Completed, it.failure_reason
    status, out = _call(container, "POST", f"{TRAIN}/projects/{p.id}/quicktest/image", png_bytes(RED))
    assert status == 200 and out["zeroShot"] is False and out["iteration"] == it.id
    assert len(uc.predictions.list(p.id)) == 1


def test_clip_answers_with_its_own_logit_scale_and_unit_text_vectors(container):
    clip = container.deps.backbones.for_domain("General")
    assert clip.zero_shot and clip.logit_scale() == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial value
    text = clip.text_features(["tabby cat", "dog"])
    assert text.shape == (2, clip.dim) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)


def test_compact_and_tagless_projects_still_say_train_it_first(container):
    uc = container.usecases(Scope.of("default"))
    compact = uc.projects.create("compact untrained", domain="Compact")
    uc.tags.get_or_create(compact.id, ["a", "b"])
    general = uc.projects.create("general one tag", domain="General")
    uc.tags.get_or_create(general.id, ["a"])
    for pid, words in ((compact.id, "train it first"), (general.id, "at least 2 tags")):
        status, out = _call(container, "POST", f"{TRAIN}/projects/{pid}/quicktest/image", png_bytes(RED))
        assert status == 400 and out["code"] == "NotFoundProjectDefaultIteration" and words in out["message"], out


def _cli(container, capsys, *argv):
    """`cvbot ARGV --json` in this process, over the container whose General domain has random CLIP weights."""
    from cvbot.cli import Cli, build_parser

    args = build_parser().parse_args([*argv, "--json"])
    cli = Cli(args, container.settings)
    cli._container = container
    code = args.fn(cli) or 0
    return code, json.loads(capsys.readouterr().out)


def test_cli_creates_tags_and_predicts_zero_shot_per_image(container, capsys, tmp_path):
    code, p = _cli(container, capsys, "project", "create", "Meals", "--domain", "Food", "--tags", "pizza, soup,salad")
    assert code == 0 and sorted(t["name"] for t in p["tags"]) == ["pizza", "salad", "soup"]
    files = []
    for i, colour in enumerate((RED, BLUE)):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(png_bytes(colour))
    code, out = _cli(container, capsys, "predict", "--project", "Meals", *map(str, files))
    assert code == 0 and [o["file"] for o in out] == list(map(str, files))
    assert all(o["zeroShot"] is True and o["stored"] is False and len(o["predictions"]) == 3 for o in out)
    with pytest.raises(errors.InvalidInput, match="named twice"):
        _cli(container, capsys, "project", "create", "Twice", "--domain", "Food", "--tags", "a,A")
    uc = container.usecases(Scope.of("default"))
    with pytest.raises(errors.NotFound):
        uc.projects.find("Twice")  # a refused tag list creates no project


class _Client:
    def __init__(self):
        self.posted = []

    async def chat_postMessage(self, **kw):
        self.posted.append(kw)
        return {"ok": True, "ts": f"{len(self.posted)}.0001", "channel": kw["channel"]}


def test_slack_new_with_tags_then_classify_says_zero_shot(container):
    bot = SlackBot(container.deps, "xoxb-test", progress_interval=0)
    image = png_bytes(BLUE)

    async def download(client, f, max_bytes):
        return Download(f, image)

    bot.download = download
    context = {"cv": bot, "team_id": TEAM, "bot_user_id": "UBOT"}
    client = _Client()
    ack, respond = AsyncMock(), AsyncMock()
    command = {"text": "new pets domain=General tags=\"tabby cat, dog, negative\"", "team_id": TEAM,
               "channel_id": CH, "user_id": USER}
    asyncio.run(commands.handle_cv(ack=ack, command=command, respond=respond, client=client, context=context))
    created = respond.await_args.kwargs
    assert created["response_type"] == "in_channel" and "zero-shot" in created["text"], created
    uc = bot.scoped(TEAM)
    p = uc.projects.find("pets")
    assert p.domain.value == "General"
    assert sorted((t.name, t.type.value) for t in uc.tags.list(p.id)) == \
        [("Negative", "Negative"), ("dog", "Regular"), ("tabby cat", "Regular")]

    event = {"type": "message", "channel": CH, "user": USER, "text": "classify", "ts": "300.1",
             "channel_type": "channel", "subtype": "file_share",
             "files": [{"id": "F1", "name": "x.png", "mimetype": "image/png", "size": len(image)}]}
    asyncio.run(messages.handle_message(event=event, body={"team_id": TEAM}, client=client, context=context))
    (reply,) = client.posted
    assert reply["thread_ts"] == "300.1" and "zero-shot" in reply["text"]
    assert not any(b["type"] == "actions" for b in reply["blocks"])  # not stored: nothing to confirm

    ack, respond = AsyncMock(), AsyncMock()
    command = {**command, "text": "new birds domain=Space tags=a,b"}
    asyncio.run(commands.handle_cv(ack=ack, command=command, respond=respond, client=client, context=context))
    assert "unknown domain `Space`" in respond.await_args.kwargs["text"]
    with pytest.raises(errors.NotFound):
        uc.projects.find("birds")


def test_slack_form_takes_tags_and_refuses_bad_ones_on_the_tags_field(container):
    bot = SlackBot(container.deps, "xoxb-test", progress_interval=0)
    context = {"cv": bot, "team_id": TEAM}

    def submit(name, tags):
        state = {"values": {"name": {"value": {"value": name}}, "description": {"value": {"value": None}},
                            "type": {"value": {"selected_option": {"value": "Multiclass"}}},
                            "domain": {"value": {"selected_option": {"value": "General"}}},
                            "tags": {"value": {"value": tags}}}}
        ack, client = AsyncMock(), _Client()
        asyncio.run(views.handle_new_project(ack=ack, body={"user": {"id": USER}}, client=client, context=context,
                                             view={"state": state, "private_metadata": "C9"}))
        return ack, client

    ack, client = submit("form zoo", "cat, dog")
    ack.assert_awaited_once_with()
    assert "zero-shot" in client.posted[0]["text"]
    uc = bot.scoped(TEAM)
    assert sorted(t.name for t in uc.tags.list(uc.projects.find("form zoo").id)) == ["cat", "dog"]
    ack, client = submit("form twice", "cat, CAT")
    refused = ack.await_args.kwargs
    assert refused["response_action"] == "errors" and "named twice" in refused["errors"]["tags"]
    with pytest.raises(errors.NotFound):
        uc.projects.find("form twice")
