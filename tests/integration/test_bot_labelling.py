"""The labelling help in Slack (issue #14, parts 2 and 3): `/cv settings keep-untagged=on`, `/cv suggest` with its
Confirm / Other tag… / Skip buttons, `/cv audit` with Keep / Retag, `/cv untagged`; Bolt listeners called directly
over the real use cases (SQLite, blobs, the EfficientNet-Lite0 backbone)."""
from __future__ import annotations

import asyncio
from unittest.mock import AsyncMock

from bot import blocks
from bot.listeners import actions
from core.model import IterationStatus
from core.usecases import ImageUpload
from tests.helpers import colour_images
from tests.integration.test_bot_listeners import (  # noqa: F401 - cv and runner are fixtures
    BLUE,
    CH,
    CREATOR,
    OTHER,
    RED,
    TEAM,
    RecordingClient,
    _event,
    _files,
    ctx,
    cv,
    on_message,
    runner,
    said,
    slash,
    team,
)


def _project(cv, client, wrong: int = 0):  # noqa: F811
    """A trained colours project (6 red, 6 blue, `wrong` red images tagged blue) bound to the channel."""
    slash(cv, "new colours", client)
    uc = team(cv)
    p = uc.projects.find("colours")
    red, blue = uc.tags.get_or_create(p.id, ["red", "blue"])
    ups = [ImageUpload(d, f"r{i}", [red.id]) for i, d in enumerate(colour_images(6, RED, 3))]
    ups += [ImageUpload(d, f"b{i}", [blue.id]) for i, d in enumerate(colour_images(6, BLUE, 4))]
    ups += [ImageUpload(d, f"wrong{i}", [blue.id]) for i, d in enumerate(colour_images(wrong, RED, 5))]
    assert all(r.ok for r in uc.images.add(p.id, ups))
    return p, red, blue


def _train(cv, runner, p):  # noqa: F811
    it = team(cv).training.train(p.id)
    runner.release()
    assert team(cv).training.wait(p.id, it.id, 120).status == IterationStatus.Completed


def _press(cv, client, message, element, block_id, user=OTHER, **extra):  # noqa: F811
    body = {"team": {"id": TEAM}, "user": {"id": user}, "channel": {"id": CH},
            "container": {"channel_id": CH, "message_ts": "9.0001", "is_ephemeral": False},
            "message": {"text": message["text"], "blocks": message["blocks"]}}
    ack, respond = AsyncMock(), AsyncMock()
    asyncio.run(actions.handle_labelling(ack=ack, body=body, respond=respond, client=client, context=ctx(cv),
                                         action={**element, "block_id": block_id, **extra}))
    ack.assert_awaited_once()
    return respond


def _actions(message):
    return [b for b in message["blocks"] if b.get("type") == "actions"]


def test_keep_untagged_stores_images_posted_without_a_tag(cv):  # noqa: F811
    client = RecordingClient()
    slash(cv, "new pool", client)
    p = team(cv).projects.find("pool")
    on_message(cv, client, _event(cv, "", _files(cv, colour_images(2, RED, 1), "a"), ts="100.1"))
    assert client.of("chat.postMessage") == [] and team(cv).images.count(p.id) == 0  # off: ignored, as before

    _, respond = slash(cv, "settings keep-untagged=on", client)
    answer = said(respond)
    assert answer["response_type"] == "in_channel" and "keep-untagged *on*" in answer["text"]
    assert team(cv).channels.binding(CH).keep_untagged is True
    on_message(cv, client, _event(cv, "look at these", _files(cv, colour_images(2, RED, 2), "b"), ts="100.2"))
    (reply,) = client.of("chat.postMessage")
    assert "2 added" in reply["text"] and "untagged" in reply["text"]
    assert team(cv).images.count(p.id, tagged=False) == 2 and team(cv).images.count(p.id, tagged=True) == 0

    _, respond = slash(cv, "untagged", client)
    assert "has 2 untagged images" in said(respond)["text"]
    _, respond = slash(cv, "untagged clear", client, user=OTHER)  # neither the creator nor an admin
    assert "only the project's creator" in said(respond)["text"] and team(cv).images.count(p.id) == 2
    _, respond = slash(cv, "untagged clear", client)
    assert "deleted 2 untagged images" in said(respond)["text"] and team(cv).images.count(p.id) == 0

    _, respond = slash(cv, "settings keep-untagged=off", client)
    assert "keep-untagged *off*" in said(respond)["text"] and team(cv).channels.binding(CH).keep_untagged is False
    _, respond = slash(cv, "settings keep-untagged=maybe", client)
    assert "neither on nor off" in said(respond)["text"]


def test_suggest_posts_a_batch_and_its_buttons_confirm_retag_and_skip(cv, runner):  # noqa: F811
    client = RecordingClient()
    p, red, blue = _project(cv, client)
    _train(cv, runner, p)
    uc = team(cv)
    pool = [ImageUpload(d, f"u-red{i}") for i, d in enumerate(colour_images(2, RED, 7))]
    pool += [ImageUpload(d, f"u-blue{i}") for i, d in enumerate(colour_images(2, BLUE, 8))]
    ids = {r.image.original_name: r.image.id for r in uc.images.add(p.id, pool)}

    _, respond = slash(cv, "suggest", client)
    message = said(respond)
    assert message["response_type"] == "in_channel" and "Suggested tags for 4 of 4 untagged images" in message["text"]
    rows = _actions(message)
    assert len(rows) == 4
    by_image = {r["block_id"].split("|")[2]: r for r in rows}
    assert set(by_image) == set(ids.values())
    for name, image_id in ids.items():  # each image's Confirm button carries the right colour
        confirm = by_image[image_id]["elements"][0]
        assert confirm["action_id"] == blocks.SUGGEST_CONFIRM
        assert confirm["value"] == (red.id if name.startswith("u-red") else blue.id), name

    row = by_image[ids["u-red0"]]
    respond = _press(cv, client, message, row["elements"][0], row["block_id"])
    assert respond.await_count == 0
    assert uc.images.get_many(p.id, [ids["u-red0"]])[0].tag_ids == [red.id]
    update = client.of("chat.update")[-1]
    assert update["ts"] == "9.0001" and "Tagged *red* by <@UOTHER>" in str(update["blocks"])
    assert len(_actions(update)) == 3  # the other images keep their buttons

    row = by_image[ids["u-blue0"]]
    other = row["elements"][1]
    assert other["action_id"] == blocks.SUGGEST_OTHER and {o["value"] for o in other["options"]} == {red.id, blue.id}
    _press(cv, client, message, other, row["block_id"], selected_option={"value": red.id})
    assert uc.images.get_many(p.id, [ids["u-blue0"]])[0].tag_ids == [red.id]  # the person's choice wins

    row = by_image[ids["u-blue1"]]
    skip = row["elements"][-1]
    assert skip["action_id"] == blocks.SUGGEST_SKIP
    _press(cv, client, message, skip, row["block_id"])
    assert uc.images.get_many(p.id, [ids["u-blue1"]])[0].tag_ids == []
    assert "Skipped by <@UOTHER>" in str(client.of("chat.update")[-1]["blocks"])
    order = [s.image.id for s in uc.labelling.suggest(p.id)]
    assert order == [ids["u-red1"], ids["u-blue1"]]  # the skipped one last

    _, respond = slash(cv, "suggest", client)  # the next batch leaves the skipped image out while others wait
    assert [r["block_id"].split("|")[2] for r in _actions(said(respond))] == [ids["u-red1"]]


def test_audit_lists_the_planted_mistake_first_and_remembers_keep_and_retag(cv, runner):  # noqa: F811
    client = RecordingClient()
    p, red, blue = _project(cv, client, wrong=1)
    _train(cv, runner, p)
    uc = team(cv)
    wrong = next(i for i in uc.images.list(p.id) if i.original_name == "wrong0")

    _, respond = slash(cv, "audit", client)
    message = said(respond)
    rows = _actions(message)
    assert message["response_type"] == "in_channel" and len(rows) == 5
    assert rows[0]["block_id"] == f"{blocks.AUDIT_BLOCK}|{p.id}|{wrong.id}"
    assert "`wrong0` tagged *blue*; the model says *red*" in message["blocks"][1]["text"]["text"]
    keep, retag = rows[0]["elements"][:2]
    assert keep["action_id"] == blocks.AUDIT_KEEP and retag["action_id"] == blocks.AUDIT_RETAG
    assert retag["value"] == red.id

    second = rows[1]
    _press(cv, client, message, second["elements"][0], second["block_id"])  # Keep
    kept_id = second["block_id"].split("|")[2]
    assert "kept" in str(client.of("chat.update")[-1]["blocks"])
    assert kept_id not in [x.image.id for x in uc.labelling.audit(p.id)]

    _press(cv, client, message, retag, rows[0]["block_id"])  # Retag: red
    assert uc.images.get_many(p.id, [wrong.id])[0].tag_ids == [red.id]
    assert "Retagged *red* by <@UOTHER>" in str(client.of("chat.update")[-1]["blocks"])
    listed = [x.image.id for x in uc.labelling.audit(p.id)]
    assert wrong.id not in listed and kept_id not in listed

    uc.images.set_tags(p.id, [kept_id], [red.id if uc.images.get_many(p.id, [kept_id])[0].tag_ids == [blue.id]
                                         else blue.id])
    assert kept_id in [x.image.id for x in uc.labelling.audit(p.id)]  # its tags changed: asked again


def test_suggest_and_audit_before_training_say_what_to_do(cv):  # noqa: F811
    client = RecordingClient()
    slash(cv, "new empty", client)
    for command in ("suggest", "audit"):
        _, respond = slash(cv, command, client)
        assert "no trained iteration yet" in said(respond)["text"]


def test_settings_show_the_channel_setting_in_one_message(cv):  # noqa: F811
    client = RecordingClient()
    slash(cv, "new shown", client)
    _, respond = slash(cv, "settings", client)
    assert "keep-untagged *off*" in said(respond)["text"]  # said() also checks there was one answer
    slash(cv, "settings keep-untagged=on", client)
    _, respond = slash(cv, "settings", client)
    assert "keep-untagged *on*" in said(respond)["text"]
