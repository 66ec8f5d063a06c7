"""The /cv grammar and the message instructions, as pure parsing."""
import pytest

from bot import grammar
from bot.grammar import GrammarError, message_intent, parse_command
from core.model import ClassificationType, Domain


def test_empty_text_is_help_and_unknown_commands_are_refused():
    assert parse_command("").name == "help"
    assert parse_command("  HELP ").name == "help"
    with pytest.raises(GrammarError, match="unknown command `frob`"):
        parse_command("frob x")


def test_new_with_options_quotes_and_free_description():
    cmd = parse_command('new "Fruit sorter" domain=food type=MultiLabel sorts apples from pears')
    spec = grammar.parse_new(cmd)
    assert spec.name == "Fruit sorter"
    assert spec.domain == Domain.Food and spec.classification_type == ClassificationType.Multilabel
    assert spec.description == "sorts apples from pears"
    smart = grammar.parse_new(parse_command("new \u201cMy project\u201d"))  # macOS turns quotes curly
    assert smart.name == "My project" and smart.domain is None
    assert smart.classification_type == ClassificationType.Multiclass


def test_new_without_arguments_means_the_modal_and_bad_options_are_explained():
    assert grammar.parse_new(parse_command("new")) is None
    with pytest.raises(GrammarError, match="unknown domain `space`; choose one of General, Food"):
        grammar.parse_new(parse_command("new x domain=space"))
    with pytest.raises(GrammarError, match="multiclass or multilabel"):
        grammar.parse_new(parse_command("new x type=detection"))
    with pytest.raises(GrammarError, match="give the project a name"):
        grammar.parse_new(parse_command("new domain=Food"))


@pytest.mark.parametrize("text,value", [("0.7", 0.7), ("70%", 0.7), ("70", 0.7), ("1", 1.0), ("0", 0.0)])
def test_thresholds(text, value):
    assert grammar.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-0.1", "170%", "101"])
def test_bad_thresholds(text):
    with pytest.raises(GrammarError):
        grammar.parse_threshold(text)


def test_performance_query_takes_number_and_threshold_in_any_form():
    q = grammar.parse_performance(parse_command("performance 3 threshold=0.9"))
    assert (q.number, q.threshold) == (3, 0.9)
    q = grammar.parse_performance(parse_command("perf 0.25"))
    assert (q.number, q.threshold) == (None, 0.25)
    with pytest.raises(GrammarError):
        grammar.parse_performance(parse_command("performance latest"))


def test_collect_tags_and_stop():
    assert grammar.parse_collect(parse_command("collect cat, cute kitten")) == ["cat", "cute kitten"]
    assert grammar.parse_collect(parse_command("collect STOP")) is None
    with pytest.raises(GrammarError):
        grammar.parse_collect(parse_command("collect"))


@pytest.mark.parametrize("text,tags", [
    ("tag: cat", ["cat"]),
    ("TAGS: Cat, cute", ["Cat", "cute"]),
    ("<@UBOT> tag:dog", ["dog"]),
    ("look at these\ntags: a, b ,", ["a", "b"]),
    ("*tag:* negative", ["negative"]),
    ("no tag here", None),
    ("tag:", None),
])
def test_tag_instruction(text, tags):
    assert grammar.tag_instruction(text) == tags


def test_message_intent_precedence():
    # a tag line beats a classify request and collect mode
    assert message_intent("<@UBOT> tag: cat", True, mentioned=True, collect_tags=["x"]).action == "tag"
    assert message_intent("classify", True, collect_tags=["x"]).action == "classify"
    assert message_intent("?", True).action == "classify"
    assert message_intent("", True, direct=True).action == "classify"
    assert message_intent("hello <@UBOT>", True, mentioned=True).action == "classify"
    collect = message_intent("", True, collect_tags=["apple"])
    assert (collect.action, collect.tags) == ("collect", ["apple"])
    assert message_intent("just sharing", True) is None  # untagged images are ignored
    assert message_intent("tag: cat", False) is None  # a tag line without images outside a thread


def test_thread_replies_retag_untag_or_remove():
    r = message_intent("tag: dog", False, thread_parent="1.2")
    assert (r.action, r.thread.action, r.thread.tags) == ("retag", "tag", ["dog"])
    assert message_intent("Untag", False, thread_parent="1.2").thread.action == "untag"
    assert message_intent("remove", False, thread_parent="1.2").thread.action == "remove"
    assert message_intent("remove the blurry one please", False, thread_parent="1.2") is None


def test_export_takes_dataset_or_a_platform_with_optional_flavor_and_number():
    q = grammar.parse_export(parse_command("export dataset"))
    assert q.dataset and q.platform is None
    q = grammar.parse_export(parse_command("export ONNX"))
    assert (q.dataset, q.platform, q.flavor, q.number) == (False, "ONNX", None, None)
    q = grammar.parse_export(parse_command("export onnx 3 ONNXFloat16"))
    assert (q.platform, q.flavor, q.number) == ("onnx", "ONNXFloat16", 3)
    assert grammar.parse_export(parse_command("export TensorFlow TensorFlowLite #2")).number == 2
    for bad in ("export", "export dataset x", "export onnx a b", "export onnx 1 2"):
        with pytest.raises(GrammarError, match="/cv export"):
            grammar.parse_export(parse_command(bad))
