"""Block Kit builders and the chart: pure functions, checked without Slack."""
import io
import json

from PIL import Image as PILImage

from bot import blocks
from bot.charts import performance_chart
from core.model import (
    ClassificationType,
    Domain,
    Iteration,
    IterationStatus,
    Prediction,
    Project,
    Tag,
    TagPrediction,
    TagType,
)


def _project(**kw):
    return Project(name="pets <&>", **kw)


def _iteration(p, number, status=IterationStatus.Completed, **perf):
    return Iteration(project_id=p.id, number=number, domain=Domain.Compact,
                     classification_type=ClassificationType.Multiclass,
                     backbone_id="b", name=f"Iteration {number}", status=status,
                     performance={"precision": 0.9, "recall": 0.8, "averagePrecision": 0.95, **perf})


PERF = {
    "threshold": 0.5, "precision": 0.95, "recall": 0.9, "averagePrecision": 0.97, "accuracy": 0.93, "imageCount": 20,
    "folds": 5, "trainingSeconds": 3.2, "warnings": ["tag 'cat' has 10 images; 30+ per tag are recommended"],
    "perTagPerformance": [
        {"name": "cat", "precision": 1.0, "recall": 0.8, "averagePrecision": 0.99, "imageCount": 10},
        {"name": "dog", "precision": 0.9, "recall": 1.0, "averagePrecision": 0.95, "imageCount": 10},
    ],
    "confusionMatrix": {"labels": ["cat", "dog"], "matrix": [[8, 2], [0, 10]]},
}


def _all_text(msg):
    return json.dumps(msg, ensure_ascii=False)


def test_user_text_is_escaped_and_limits_hold():
    p = _project()
    msg = blocks.project_created_message(p, "U1")
    assert "pets &lt;&amp;&gt;" in msg["blocks"][0]["text"]["text"]
    long = blocks.message("\n".join(f"line {i} " + "x" * 200 for i in range(400)))
    assert len(long["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in long["blocks"])
    assert len(long["text"]) <= 3000


def test_tags_flag_what_cannot_train_and_what_is_below_recommended():
    tags = [Tag("p", "cat", image_count=3), Tag("p", "dog", image_count=12), Tag("p", "bird", image_count=40),
            Tag("p", "Negative", TagType.Negative, image_count=6)]
    text = blocks.tags_message(_project(), tags)["text"]
    assert "*cat*: 3 images :no_entry: cannot train yet (2 more needed)" in text
    assert "*dog*: 12 images :warning: below the recommended 30" in text
    assert "*bird*: 40 images :white_check_mark:" in text
    assert text.index("bird") < text.index("dog") < text.index("cat")  # most images first


def test_ingest_reply_has_one_line_per_image_and_the_tag_counts():
    lines = [blocks.ImageLine("a.png", "added"),
             blocks.ImageLine("b.png", "duplicate", "this image is already in the project"),
             blocks.ImageLine("c.png", "rejected", "not an image")]
    msg = blocks.ingest_message(_project(), ["cat"], lines, [Tag("p", "cat", image_count=7)])
    text = msg["text"]
    assert "1 added, 1 duplicate, 1 rejected (tag: cat)" in text
    assert ":x: `c.png` rejected: not an image" in text and ":repeat: `b.png` duplicate" in text
    assert msg["blocks"][-2]["elements"][0]["text"] == "Images per tag: cat 7"
    assert "Reply `tag: NAME`" in _all_text(msg)


def test_performance_summary_has_metrics_table_warnings_and_default_button():
    p = _project()
    it = _iteration(p, 2)
    msg = blocks.performance_message(p, it, PERF, is_default=False)
    text = _all_text(msg)
    assert msg["blocks"][0]["type"] == "header"
    fields = [f["text"] for f in msg["blocks"][1]["fields"]]
    assert fields[:4] == ["*Precision*\n95.0%", "*Recall*\n90.0%", "*AP*\n97.0%", "*Accuracy*\n93.0%"]
    assert "*Training time*\n3.2 s" in fields
    table = msg["blocks"][2]["text"]["text"]
    assert "cat     100.0%   80.0%   99.0%      10" in table
    assert "30+ per tag are recommended" in text
    (button,) = msg["blocks"][-1]["elements"]
    assert button["action_id"] == blocks.ITERATION_DEFAULT and button["value"] == f"{p.id}|{it.id}"
    assert blocks.performance_message(p, it, PERF, is_default=True)["blocks"][-1]["type"] == "context"


def test_iteration_list_buttons_follow_status_and_default():
    p = _project()
    done, default, failed, running = (_iteration(p, 1), _iteration(p, 2), _iteration(p, 3, IterationStatus.Failed),
                                      _iteration(p, 4, IterationStatus.Training))
    p.default_iteration_id = default.id
    msg = blocks.iterations_message(p, [done, default, failed, running])
    by_iteration = {b["block_id"]: [e["text"]["text"] for e in b["elements"]]
                    for b in msg["blocks"] if b["type"] == "actions"}
    assert by_iteration == {"cv_iter|1": ["Make default", "Delete"], "cv_iter|3": ["Delete"]}
    delete = next(b for b in msg["blocks"] if b.get("block_id") == "cv_iter|1")["elements"][1]
    assert delete["style"] == "danger" and delete["confirm"]["confirm"]["text"] == "Delete"
    assert ":star: *default*" in _all_text(msg) and "P 90.0% · R 80.0% · AP 95.0%" in _all_text(msg)


def _prediction(p, probs, threshold=0.5, stored=True):
    preds = [TagPrediction(f"t-{n}", n, pr) for n, pr in sorted(probs.items(), key=lambda kv: -kv[1])]
    return Prediction(project_id=p.id, iteration_id="it", predictions=preds, threshold=threshold, stored=stored)


def test_classification_answer_offers_correct_and_a_tag_picker():
    p = _project()
    tags = [Tag(p.id, "dog", id="t-dog"), Tag(p.id, "cat", id="t-cat")]
    pred = _prediction(p, {"cat": 0.91, "dog": 0.09})
    msg = blocks.classification_message(p, pred, 3, tags)
    assert msg["text"].startswith(":mag: *cat* (91.0%)")
    assert "Answered by iteration 3" in _all_text(msg)
    actions = msg["blocks"][-1]
    assert actions["block_id"] == f"{blocks.PREDICTION_BLOCK}|{p.id}|{pred.id}" and len(actions["block_id"]) <= 255
    correct, picker = actions["elements"]
    assert correct["text"]["text"] == "Correct: cat" and correct["value"] == "t-cat"
    assert [o["text"]["text"] for o in picker["options"]] == ["cat", "dog"]
    assert all(len(o["value"]) <= 150 for o in picker["options"])


def test_no_tag_above_threshold_gives_the_best_guess_and_multilabel_confirms_all_above():
    p = _project()
    low = blocks.classification_message(p, _prediction(p, {"cat": 0.4, "dog": 0.3}), 1, [])
    assert "No tag above the threshold (0.5)" in low["text"] and "Best guess: *cat* (40.0%)" in low["text"]
    ml = Project(name="m", classification_type=ClassificationType.Multilabel)
    msg = blocks.classification_message(ml, _prediction(ml, {"cat": 0.9, "cute": 0.8, "dog": 0.1}), 1, [])
    assert msg["blocks"][-1]["elements"][0]["value"] == "t-cat,t-cute"
    unstored = blocks.classification_message(p, _prediction(p, {"cat": 0.9}, stored=False), 1, [])
    assert all(b["type"] != "actions" for b in unstored["blocks"])  # nothing to add to training


def test_an_unknown_image_is_answered_honestly_with_the_closest_tags():
    p = _project()
    tags = [Tag(p.id, "dog", id="t-dog"), Tag(p.id, "cat", id="t-cat"), Tag(p.id, "cow", id="t-cow"),
            Tag(p.id, "emu", id="t-emu")]
    pred = _prediction(p, {"cat": 0.91, "dog": 0.05, "cow": 0.03, "emu": 0.01})
    pred.unknown_score, pred.unknown_threshold = 0.97, 0.95
    msg = blocks.classification_message(p, pred, 3, tags, "x.png")
    assert msg["text"].startswith(":grey_question: I don't recognise this `x.png`")
    text = _all_text(msg)
    assert "Closest tags: *cat* (91.0%), *dog* (5.0%), *cow* (3.0%)\"" in text  # the 3 closest, not emu
    assert "unknown score 0.97 (flagged from 0.95)" in text
    (actions,) = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [blocks.PREDICTION_RETAG]  # no "Correct" verdict
    # below the threshold: the usual answer, the score in the footnote; an older iteration: no score at all
    pred.unknown_score = 0.5
    usual = blocks.classification_message(p, pred, 3, tags)
    assert usual["text"].startswith(":mag: *cat*") and "unknown score 0.50" in _all_text(usual)
    pred.unknown_score = pred.unknown_threshold = None
    assert "unknown score" not in _all_text(blocks.classification_message(p, pred, 3, tags))


def test_feedback_replaces_the_buttons_with_who_confirmed_what():
    p = _project()
    msg = blocks.classification_message(p, _prediction(p, {"cat": 0.9}), 1, [Tag(p.id, "cat", id="t-cat")])
    done = blocks.feedback_done_blocks(msg["blocks"], ["cat"], "U7", "OK")
    assert all(b["type"] != "actions" for b in done)
    assert "Added to the training set as *cat* by <@U7>" in done[-1]["elements"][0]["text"]


def test_modal_round_trip():
    view = blocks.new_project_modal("C1", Domain.Food)
    assert view["callback_id"] == blocks.NEW_PROJECT_VIEW and view["private_metadata"] == "C1"
    assert view["blocks"][3]["element"]["initial_option"]["value"] == "Food"
    assert all(len(view[k]["text"]) <= 24 for k in ("title", "submit", "close"))
    state = {"values": {"name": {"value": {"type": "plain_text_input", "value": "birds"}},
                        "description": {"value": {"type": "plain_text_input", "value": None}},
                        "type": {"value": {"type": "radio_buttons", "selected_option": {"value": "Multilabel"}}},
                        "domain": {"value": {"type": "static_select", "selected_option": {"value": "General"}}}}}
    assert blocks.modal_values({"state": state}) == {"name": "birds", "description": None, "type": "Multilabel",
                                                     "domain": "General"}


def test_chart_is_a_png_with_bars_and_confusion_matrix():
    png = performance_chart(PERF, "pets: iteration 2")
    img = PILImage.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > img.height  # two panels side by side
    ml = {k: v for k, v in PERF.items() if k != "confusionMatrix"}
    narrow = PILImage.open(io.BytesIO(performance_chart(ml)))
    assert narrow.width < img.width


def test_new_default_announcement_is_escaped_and_names_who():
    p = _project()
    assert blocks.new_default_text(p, _iteration(p, 3), "U1") == (
        ":star: Iteration 3 is now the default of *pets &lt;&amp;&gt;* (<@U1>); predictions come from it.")


def test_model_export_texts_name_the_iteration_and_carry_the_usage_note():
    p = _project()
    it = _iteration(p, 4)
    started = blocks.model_export_started_text(p, it, "ONNX (ONNXFloat16)", "U1")
    assert "<@U1>" in started and "iteration 4" in started and "pets &lt;&amp;&gt;" in started
    comment = blocks.model_export_comment(p, it, "ONNX", "feed it <BGR> pixels")
    assert comment.endswith("\nfeed it &lt;BGR&gt; pixels") and "labels.txt" in comment
    assert blocks.model_export_comment(p, it, "ONNX", "").endswith("`cvexport.manifest`.")
    failed = blocks.model_export_failed_message("ONNX", "no converter")
    assert "ONNX export failed: no converter" in failed["text"]
