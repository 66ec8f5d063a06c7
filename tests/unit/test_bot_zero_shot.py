"""Slack side of the zero-shot start: `/cv new … tags=` parsing and the messages that say zero-shot."""
import pytest

from bot import blocks, grammar
from core.model import Domain, Prediction, Project, Tag, TagPrediction, TagType


def _new(text):
    return grammar.parse_new(grammar.parse_command(text))


def test_new_takes_tags_with_spaces_quoted_and_negative():
    spec = _new('new zoo domain=General tags="tabby cat, dog, negative" animals we see')
    assert (spec.name, spec.domain, spec.tags, spec.description) == \
        ("zoo", Domain.General, ["tabby cat", "dog", "negative"], "animals we see")
    assert _new("new zoo tags=a,b").tags == ["a", "b"] and _new("new zoo").tags == []


@pytest.mark.parametrize("text, words", [
    ("new zoo domain=Space tags=a,b", "unknown domain `Space`"),
    ("new zoo tags=,", "name the tags after `tags=`"),
    ("new zoo tags=cat,Cat", "named twice"),
    ("new zoo tags=negative", "besides 'negative'"),
    ("new zoo tags=" + "x" * 300, "longer than 256"),
    ("new zoo tags=" + ",".join(f"t{i}" for i in range(501)), "at most 500 tags"),
])
def test_bad_tags_or_domain_are_refused_before_anything_is_created(text, words):
    with pytest.raises(grammar.GrammarError, match=words):
        _new(text)


def test_created_message_offers_zero_shot_only_where_it_applies():
    tags = [Tag("p", "cat", id="1"), Tag("p", "dog", id="2"), Tag("p", "Negative", TagType.Negative, id="3")]
    general = Project(name="zoo", domain=Domain.General)
    assert "zero-shot" in blocks.project_created_message(general, "U1", tags)["text"]
    assert "*cat*, *dog*, *Negative*" in blocks.project_created_message(general, "U1", tags)["text"]
    assert "zero-shot" not in blocks.project_created_message(general, "U1", tags[:1] + tags[2:])["text"]
    compact = Project(name="zoo", domain=Domain.Compact)
    assert "zero-shot" not in blocks.project_created_message(compact, "U1", tags)["text"]
    assert "zero-shot" not in blocks.project_created_message(general, "U1")["text"]


def test_zero_shot_answer_says_so_and_has_no_buttons():
    p = Project(name="zoo", domain=Domain.Food)
    pred = Prediction("p", None, [TagPrediction("1", "pizza", 0.8), TagPrediction("2", "soup", 0.2)], 0.5,
                      zero_shot=True)
    msg = blocks.zero_shot_message(p, pred, "a.png")
    assert msg["text"].startswith(":crystal_ball: zero-shot: *pizza* (80") and "`a.png`" in msg["text"]
    assert "Food prompts" in str(msg["blocks"]) and not any(b["type"] == "actions" for b in msg["blocks"])
    low = Prediction("p", None, [TagPrediction("1", "pizza", 0.4), TagPrediction("2", "soup", 0.35)], 0.5,
                     zero_shot=True)
    assert "Best guess: *pizza*" in blocks.zero_shot_message(p, low)["text"]


def test_the_new_project_form_has_an_optional_tags_field():
    view = blocks.new_project_modal("C1")
    tags = view["blocks"][4]
    assert tags["block_id"] == "tags" and tags["optional"] and len(tags["hint"]["text"]) <= 2000
    state = {"values": {"tags": {"value": {"type": "plain_text_input", "value": "cat, dog"}}}}
    assert blocks.modal_values({"state": state}) == {"tags": "cat, dog"}
