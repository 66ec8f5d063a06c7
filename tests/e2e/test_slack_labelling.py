"""`/cv suggest` and `/cv audit` end to end: signed Slack requests to a real `cvbot serve` (its own server for this
module, see tests/e2e/test_slack_bot.py), real images, real SQLite, the real EfficientNet-Lite0 backbone."""
from __future__ import annotations

import pytest

from tests.e2e.test_slack_bot import BLUE, OTHER, RED, bot, named, wait_training  # noqa: F401 - bot is a fixture
from tests.helpers import colour_images
from tests.slack_server import actions_in, text_of

pytestmark = pytest.mark.slow


def test_untagged_pool_suggest_and_audit_through_signed_requests(bot):  # noqa: F811
    slack, ch = bot.slack, "CLABEL"
    bot.command("new labelling", ch)
    assert "keep-untagged *on*" in bot.command("settings keep-untagged=on", ch)[0]["text"]
    bot.post_images(ch, "tag: red", named("r", colour_images(6, RED, 61)))
    bot.post_images(ch, "tag: blue", named("b", colour_images(5, BLUE, 62)) + [("oops.png", colour_images(1, RED,
                                                                                                      63)[0])])
    _, reply = bot.post_images(ch, "", named("u", colour_images(2, RED, 64) + colour_images(1, BLUE, 65)))
    assert "3 added" in reply["text"] and "untagged" in reply["text"]
    bot.command("train", ch, wait=False)
    wait_training(bot, ch, 1)

    batch = bot.command("suggest", ch)[0]
    assert batch["response_type"] == "in_channel" and "Suggested tags for 3 of 3 untagged images" in batch["text"]
    buttons = actions_in(batch["blocks"])
    confirms = [b for b in buttons if b["action_id"] == "cv_suggest_confirm"]
    assert sorted(b["text"]["text"] for b in confirms) == ["Confirm: blue", "Confirm: red", "Confirm: red"]
    url = slack.response_url()
    status, _, elapsed = bot.send.block_action(batch, confirms[0], channel=ch, user=OTHER, response_url=url)
    assert status == 200 and elapsed < 3
    redrawn = slack.wait_for(lambda: slack.responses_to(url), what="the redrawn suggestions")[0]
    assert redrawn["replace_original"] is True and "by <@UOTHER>" in text_of(redrawn)
    assert len([b for b in actions_in(redrawn["blocks"]) if b["action_id"] == "cv_suggest_confirm"]) == 2
    assert "Suggested tags for 2 of 2" in bot.command("suggest", ch)[0]["text"]

    audit = bot.command("audit", ch)[0]
    first = audit["blocks"][1]["text"]["text"]
    assert "`oops.png` tagged *blue*; the model says *red*" in first, text_of(audit)
    keep = next(b for b in actions_in(audit["blocks"]) if b["action_id"] == "cv_audit_keep")
    assert keep["value"] in keep["block_id"]
    url = slack.response_url()
    bot.send.block_action(audit, keep, channel=ch, user=OTHER, response_url=url)
    redrawn = slack.wait_for(lambda: slack.responses_to(url), what="the redrawn audit")[0]
    assert "kept *blue*" in text_of(redrawn)
    again = bot.command("audit", ch)[0]
    assert "oops.png" not in text_of(again)  # answered: not asked again while its tags stay
