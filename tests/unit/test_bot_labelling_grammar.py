"""The grammar and Block Kit builders of the labelling help (pure functions, no Slack)."""
import pytest

from bot import blocks, grammar
from core.model import ChannelBinding, Domain, Image, Iteration, Project, Tag, TagPrediction
from core.usecases import AuditItem, Suggestion


def test_channel_settings_are_parsed_per_key_beside_project_settings():
    cmd = grammar.parse_command("settings keep-untagged=on type=multilabel")
    assert cmd.options == {"keep-untagged": "on", "type": "multilabel"}
    assert grammar.channel_settings(cmd) == {"keep-untagged": True}
    assert grammar.channel_settings(grammar.parse_command("settings keep-untagged=OFF")) == {"keep-untagged": False}
    with pytest.raises(grammar.GrammarError, match="neither on nor off"):
        grammar.channel_settings(grammar.parse_command("settings keep-untagged=later"))
    assert grammar.parse_command("settings other-thing=1").args == ["other-thing=1"]  # unknown keys stay arguments


def test_new_commands_and_aliases():
    for text, name in (("suggest", "suggest"), ("suggestions 3", "suggest"), ("audit", "audit"),
                       ("untagged clear", "untagged")):
        assert grammar.parse_command(text).name == name
    assert "/cv suggest" in grammar.HELP and "/cv audit" in grammar.HELP and "keep-untagged" in grammar.HELP


def test_untagged_images_are_kept_only_when_the_channel_says_so():
    assert grammar.message_intent("", True) is None
    assert grammar.message_intent("", True, keep_untagged=True).action == "untagged"
    assert grammar.message_intent("tag: cat", True, keep_untagged=True).action == "tag"  # a tag line wins
    assert grammar.message_intent("", True, keep_untagged=True, collect_tags=["a"]).action == "collect"
    assert grammar.message_intent("?", True, keep_untagged=True).action == "classify"


def _fixtures():
    p = Project("birds", id="p1")
    it = Iteration("p1", 3, Domain.Compact, p.classification_type, "b", id="it1")
    robin, wren = Tag("p1", "robin", id="t1"), Tag("p1", "wren", id="t2")
    img = Image("p1", "s" * 64, 10, 10, original_name="bird<1>.png", id="i1")
    return p, it, robin, wren, img


def test_suggestion_message_has_confirm_other_and_skip_per_image():
    p, it, robin, wren, img = _fixtures()
    s = Suggestion(img, it, [TagPrediction("t2", "wren", 0.7), TagPrediction("t1", "robin", 0.3)], 0.61)
    msg = blocks.suggestions_message(p, [s], 4, [robin, wren], image_url=lambda i: f"https://x/{i}.jpg")
    assert "1 of 4 untagged images" in msg["text"] and "iteration 3" in msg["text"]
    section = msg["blocks"][1]
    assert "`bird&lt;1&gt;.png` → *wren* (70.0%)" in section["text"]["text"]
    assert section["accessory"]["image_url"] == "https://x/i1.jpg"
    (actions,) = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert actions["block_id"] == "cv_suggest|p1|i1"
    confirm, other, skip = actions["elements"]
    assert (confirm["action_id"], confirm["value"]) == (blocks.SUGGEST_CONFIRM, "t2")
    assert other["action_id"] == blocks.SUGGEST_OTHER and [o["value"] for o in other["options"]] == ["t1", "t2"]
    assert skip["action_id"] == blocks.SUGGEST_SKIP
    assert "no untagged images" in blocks.suggestions_message(p, [], 0, [robin])["text"]


def test_audit_message_and_an_answered_entry():
    p, it, robin, wren, img = _fixtures()
    item = AuditItem(img, it, ["t1"], ["robin"], ["t2"], ["wren"], 0.83, {"t1": 0.1, "t2": 0.76})
    msg = blocks.audit_message(p, [item], [robin, wren])
    assert "tagged *robin*; the model says *wren* (76.0%) · suspicion 0.83" in msg["blocks"][1]["text"]["text"]
    (actions,) = [b for b in msg["blocks"] if b["type"] == "actions"]
    keep, retag, other = actions["elements"]
    assert keep["action_id"] == blocks.AUDIT_KEEP and (retag["action_id"], retag["value"]) == (blocks.AUDIT_RETAG, "t2")
    assert other["action_id"] == blocks.AUDIT_RETAG_OTHER
    done = blocks.answered_blocks(msg["blocks"], actions["block_id"], "kept")
    assert not [b for b in done if b["type"] == "actions"] and done[2] == blocks.context("kept")
    assert "Nothing to audit" in blocks.audit_message(p, [], [robin])["text"]


def test_channel_settings_message():
    p = Project("birds", id="p1")
    on = blocks.channel_settings_message(p, ChannelBinding("T", "C", "p1", keep_untagged=True), ["keep-untagged"], "U1")
    assert "keep-untagged *on*" in on["text"] and "<@U1>" in on["text"]
    assert "ignored" in blocks.channel_settings_message(p, ChannelBinding("T", "C", "p1"))["text"]


def test_thumbnail_links_need_a_public_url_and_verify():
    import time
    from types import SimpleNamespace
    from urllib.parse import parse_qs, urlsplit

    from bot import image_links
    from core.links import verify
    from core.usecases import link_secret
    from tests.fakes import fake_deps

    deps = fake_deps()
    assert image_links(SimpleNamespace(settings=SimpleNamespace(public_url=None), deps=deps)) is None
    settings = SimpleNamespace(public_url="https://cv.example.org/", secret_key=None, link_ttl=60)
    url = image_links(SimpleNamespace(settings=settings, deps=deps))("i1")
    parts = urlsplit(url)
    assert url.startswith("https://cv.example.org/customvision/images/image/i1/thumbnail?")
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    secret = link_secret(deps, None)
    assert verify(secret, "image", "i1", "thumbnail", q["exp"], q["sig"], time.time())
    assert not verify(secret, "image", "i2", "thumbnail", q["exp"], q["sig"], time.time())
