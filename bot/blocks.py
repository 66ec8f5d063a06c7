"""Block Kit messages, built by pure functions from core objects (tested without Slack).

Every builder returns the keyword arguments of a message: {"text": fallback, "blocks": [...]}, ready for
`chat.postMessage`, `chat.update` or `respond`.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.backbones import zero_shot as answers_zero_shot
from core.model import (
    DEFAULT_UNKNOWN_THRESHOLD,
    ChannelBinding,
    ClassificationType,
    Domain,
    Iteration,
    IterationStatus,
    Prediction,
    Project,
    Tag,
    TagType,
)
from core.training import MIN_IMAGES_PER_TAG, RECOMMENDED_IMAGES_PER_TAG

from .grammar import HELP

# action and callback ids (the listeners match on these)
ITERATION_DEFAULT = "cv_iteration_default"
ITERATION_DELETE = "cv_iteration_delete"
PREDICTION_CORRECT = "cv_prediction_correct"
PREDICTION_RETAG = "cv_prediction_retag"
PREDICTION_BLOCK = "cv_prediction"
NEW_PROJECT_VIEW = "cv_new_project"
SUGGEST_CONFIRM = "cv_suggest_confirm"
SUGGEST_OTHER = "cv_suggest_other"
SUGGEST_SKIP = "cv_suggest_skip"
SUGGEST_BLOCK = "cv_suggest"
AUDIT_KEEP = "cv_audit_keep"
AUDIT_RETAG = "cv_audit_retag"
AUDIT_RETAG_OTHER = "cv_audit_retag_other"
AUDIT_BLOCK = "cv_audit"

SECTION_LIMIT = 2900  # Slack allows 3000 characters in a section's text
MAX_BLOCKS = 50
MAX_OPTIONS = 100


def esc(text: object) -> str:
    """Escape user text for mrkdwn (Slack's three control characters)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def button(text: str, action_id: str, value: str, style: str | None = None, confirm: dict | None = None) -> dict:
    b = {"type": "button", "text": {"type": "plain_text", "text": text[:75], "emoji": True},
         "action_id": action_id, "value": value[:2000]}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def _plain(text: str, limit: int = 75) -> dict:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def sections(lines: list[str], limit: int = SECTION_LIMIT) -> list[dict]:
    """Lines packed into as few section blocks as Slack's size limit allows."""
    out, buf = [], ""
    for line in lines:
        line = line[:limit]
        if buf and len(buf) + 1 + len(line) > limit:
            out.append(section(buf))
            buf = line
        else:
            buf = f"{buf}\n{line}" if buf else line
    if buf:
        out.append(section(buf))
    return out


def message(text: str, blocks: list[dict] | None = None) -> dict:
    blocks = blocks if blocks is not None else sections(text.split("\n"))
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[:MAX_BLOCKS - 1] + [context(f"… {len(blocks) - MAX_BLOCKS + 1} more blocks left out")]
    return {"text": text[:3000], "blocks": blocks}


# ------------------------------------------------------------------ simple replies
def help_message() -> dict:
    return message(HELP)


def error_message(text: str) -> dict:
    return message(f":warning: {text}", [section(f":warning: {text}")])


def no_project_message() -> dict:
    return message("This channel has no project yet. `/cv new NAME` creates one here, `/cv use NAME` binds an "
                   "existing one (`/cv projects` lists them).")


def info_message(text: str) -> dict:
    return message(text)


def new_default_text(p: Project, it: Iteration, user: str | None) -> str:
    """Announced in the channel when someone makes an iteration the default (`/cv default N` or the button)."""
    return f":star: Iteration {it.number} is now the default of *{esc(p.name)}* (<@{user}>); predictions come from it."


# ------------------------------------------------------------------ projects
def project_line(p: Project) -> str:
    return f"*{esc(p.name)}* ({p.domain.value}, {p.classification_type.value}, threshold {p.threshold:g})"


def project_created_message(p: Project, user: str | None, tags: list[Tag] | None = None) -> dict:
    by = f" by <@{user}>" if user else ""
    text = f":sparkles: Created project {project_line(p)}{by} and bound it to this channel.\n"
    if tags:
        text += "Tags: " + ", ".join(f"*{esc(t.name)}*" for t in tags) + ".\n"
    regular = [t for t in tags or [] if t.type == TagType.Regular]
    if len(regular) >= 2 and answers_zero_shot(p.domain):
        text += ("Post an image with `classify` now: until the first training it answers *zero-shot*, from the "
                 "tag names alone. ")
    text += "Post images with `tag: NAME` to add training images (at least 5 per tag), then `/cv train`."
    if p.description:
        text += f"\n>{esc(p.description)}"
    return message(text)


def project_bound_message(p: Project, user: str | None, image_count: int, iteration_count: int) -> dict:
    by = f" by <@{user}>" if user else ""
    return message(f":link: This channel now works on {project_line(p)}{by}: "
                   f"{image_count} image{'s' if image_count != 1 else ''}, "
                   f"{iteration_count} iteration{'s' if iteration_count != 1 else ''}.")


@dataclass
class ProjectRow:
    project: Project
    image_count: int
    iteration_count: int
    default_number: int | None


def projects_message(rows: list[ProjectRow], bound_project_id: str | None) -> dict:
    if not rows:
        return message("No projects in this workspace yet: `/cv new NAME` creates one and binds it to this channel.")
    lines = [f"*Projects* ({len(rows)})"]
    for r in rows:
        here = " ← this channel" if r.project.id == bound_project_id else ""
        default = f"default iteration {r.default_number}" if r.default_number else "no default iteration"
        lines.append(f"• {project_line(r.project)}: {r.image_count} images, {r.iteration_count} iterations, "
                     f"{default}{here}")
    lines.append("_`/cv use NAME` binds one to this channel._")
    return message("\n".join(lines))


def settings_message(p: Project, changed: list[str] | None = None, binding: ChannelBinding | None = None) -> dict:
    later = "; it takes effect at the next training (`/cv train`)" if {"domain", "type"} & set(changed or ()) else ""
    head = (f":gear: Updated {', '.join(changed)} of *{esc(p.name)}*{later}."
            if changed else f":gear: Settings of *{esc(p.name)}*")
    days = p.prediction_retention_days
    kept = "for ever" if days == 0 else f"{days} days" if days else "the server's default"
    lines = [head, f"• domain: *{p.domain.value}*", f"• type: *{p.classification_type.value}*",
             f"• threshold: *{p.threshold:g}*",
             f"• retraining: *{'nightly, when new images arrived' if p.retrain else 'off'}*",
             f"• stored predictions kept: *{kept}*"]
    if p.description:
        lines.append(f"• description: {esc(p.description)}")
    if binding is not None:
        lines.append(f"• this channel: keep-untagged *{'on' if binding.keep_untagged else 'off'}*")
    if not changed:
        lines.append("_Change with `/cv settings type=multilabel domain=General retrain=nightly retention=30` "
                     "and `/cv threshold 0.7`._")
    return message("\n".join(lines))


def threshold_message(p: Project, user: str | None) -> dict:
    by = f" (set by <@{user}>)" if user else ""
    return message(f":dart: *{esc(p.name)}* now uses threshold *{p.threshold:g}* for performance and predictions{by}.")


def unknown_threshold_message(p: Project, user: str | None, changed: bool) -> dict:
    value = DEFAULT_UNKNOWN_THRESHOLD if p.unknown_threshold is None else p.unknown_threshold
    if not changed:
        return message(f":grey_question: *{esc(p.name)}* says \"I don't recognise this\" from unknown score "
                       f"*{value:g}*; `/cv threshold unknown 0.9` changes it (lower flags more images).")
    by = f" (set by <@{user}>)" if user else ""
    return message(f":grey_question: *{esc(p.name)}* now says \"I don't recognise this\" from unknown score "
                   f"*{value:g}*{by}.")


def keys_message(workspace: str, training_key: str, prediction_key: str) -> dict:
    return message(f":key: API keys of this workspace (`{esc(workspace)}`); send them as the `Training-Key` and "
                   f"`Prediction-Key` headers.\n• Training-Key: `{training_key}`\n"
                   f"• Prediction-Key: `{prediction_key}`\n"
                   "_`/cv keys regenerate` replaces both._")


# ------------------------------------------------------------------ tags and images
def tag_flag(count: int) -> str:
    if count < MIN_IMAGES_PER_TAG:
        return f":no_entry: cannot train yet ({MIN_IMAGES_PER_TAG - count} more needed)"
    if count < RECOMMENDED_IMAGES_PER_TAG:
        return f":warning: below the recommended {RECOMMENDED_IMAGES_PER_TAG}"
    return ":white_check_mark:"


def tag_name(t: Tag) -> str:
    return f"{esc(t.name)} (Negative)" if t.type == TagType.Negative and t.name.lower() != "negative" else esc(t.name)


def tags_message(p: Project, tags: list[Tag]) -> dict:
    if not tags:
        return message(f"*{esc(p.name)}* has no tags yet. Post images with `tag: NAME` to create one.")
    lines = [f"*Tags of {esc(p.name)}* ({len(tags)})"]
    for t in sorted(tags, key=lambda t: (-t.image_count, t.name.lower())):
        lines.append(f"• *{tag_name(t)}*: {t.image_count} image{'s' if t.image_count != 1 else ''} "
                     f"{tag_flag(t.image_count)}")
    return message("\n".join(lines))


def tag_counts_line(tags: list[Tag], only: list[str] | None = None) -> str:
    chosen = [t for t in tags if only is None or t.name.lower() in {n.lower() for n in only}]
    return " · ".join(f"{esc(t.name)} {t.image_count}" for t in sorted(chosen, key=lambda t: t.name.lower()))


@dataclass
class ImageLine:
    name: str
    outcome: str  # added | duplicate | rejected
    detail: str = ""


_OUTCOME_ICON = {"added": ":white_check_mark:", "duplicate": ":repeat:", "rejected": ":x:"}


def ingest_message(p: Project, tag_names: list[str], lines: list[ImageLine], tags: list[Tag],
                   collect: bool = False) -> dict:
    added = sum(1 for ln in lines if ln.outcome == "added")
    dup = sum(1 for ln in lines if ln.outcome == "duplicate")
    rej = sum(1 for ln in lines if ln.outcome == "rejected")
    how = "collect mode" if collect else "tag"
    what = (f"{how}: {', '.join(esc(t) for t in tag_names)}" if tag_names
            else "untagged: `/cv suggest` proposes their tags")
    head = f"*{esc(p.name)}*: {added} added, {dup} duplicate, {rej} rejected ({what})"
    body = []
    for ln in lines[:200]:
        detail = f": {esc(ln.detail)}" if ln.detail else ""
        body.append(f"{_OUTCOME_ICON.get(ln.outcome, '•')} `{esc(ln.name)}` {ln.outcome}{detail}")
    if len(lines) > 200:
        body.append(f"… and {len(lines) - 200} more")
    counts = tag_counts_line(tags)
    blocks = sections([head] + body)
    if counts:
        blocks.append(context(f"Images per tag: {counts}"))
    if added:
        blocks.append(context("Reply `tag: NAME`, `untag` or `remove` in this thread to change these images."))
    return message("\n".join([head] + body + ([f"Images per tag: {counts}"] if counts else [])), blocks)


def retag_message(action: str, count: int, tag_names: list[str], tags: list[Tag], user: str | None) -> dict:
    n = f"{count} image{'s' if count != 1 else ''}"
    by = f" (<@{user}>)" if user else ""
    if action == "tag":
        text = f":label: Retagged {n} as {', '.join(f'*{esc(t)}*' for t in tag_names)}{by}."
    elif action == "untag":
        text = f":label: Removed the tags of {n}{by}; untagged images are not used for training."
    else:
        text = f":wastebasket: Deleted {n} from the project{by}."
    counts = tag_counts_line(tags)
    blocks = [section(text)] + ([context(f"Images per tag: {counts}")] if counts else [])
    return message(text, blocks)


# ------------------------------------------------------------------ training
def training_progress_message(p: Project, it: Iteration, stage: str, user: str | None = None) -> dict:
    by = f" (started by <@{user}>)" if user else ""
    text = f":hourglass_flowing_sand: Training *{esc(p.name)}* iteration {it.number}: {esc(stage)}{by}"
    return message(text, [section(text),
                          context(f"{len(it.snapshot)} images · {len(it.tag_ids)} tags · {it.domain.value} · "
                                  f"{it.classification_type.value}")])


def training_finished_message(p: Project, it: Iteration, perf: dict | None) -> dict:
    if it.status == IterationStatus.Completed and perf is not None:
        text = (f":white_check_mark: *{esc(p.name)}* iteration {it.number} trained in {_seconds(it.training_seconds)}: "
                f"precision {pct(perf.get('precision'))}, recall {pct(perf.get('recall'))}, "
                f"AP {pct(perf.get('averagePrecision'))}. Details in the thread.")
    else:
        text = (f":x: Training *{esc(p.name)}* iteration {it.number} failed: "
                f"{esc(it.failure_reason or 'unknown reason')}")
    return message(text, [section(text)])


def _seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def per_tag_table(perf: dict) -> str:
    rows = perf.get("perTagPerformance") or []
    width = max([len("tag")] + [min(len(r["name"]), 24) for r in rows])
    lines = [f"{'tag'.ljust(width)}  precision  recall      AP  images"]
    for r in rows:
        name = r["name"] if len(r["name"]) <= 24 else r["name"][:23] + "…"
        lines.append(f"{name.ljust(width)}  {pct(r['precision']).rjust(9)}  {pct(r['recall']).rjust(6)}  "
                     f"{pct(r['averagePrecision']).rjust(6)}  {str(r['imageCount']).rjust(6)}")
    return "\n".join(lines)


def performance_message(p: Project, it: Iteration, perf: dict, is_default: bool,
                        show_default_button: bool = True) -> dict:
    threshold = perf.get("threshold", p.threshold)
    head_text = f"Iteration {it.number} of {p.name}: performance at threshold {threshold:g}"
    fields = [f"*Precision*\n{pct(perf['precision'])}", f"*Recall*\n{pct(perf['recall'])}",
              f"*AP*\n{pct(perf['averagePrecision'])}"]
    if "accuracy" in perf:
        fields.append(f"*Accuracy*\n{pct(perf['accuracy'])}")
    fields.append(f"*Images*\n{perf.get('imageCount', len(it.snapshot))} ({perf.get('folds', '?')}-fold)")
    fields.append(f"*Training time*\n{_seconds(perf.get('trainingSeconds', it.training_seconds))}")
    blocks = [header(head_text),
              {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
              section(f"*Per tag*\n```{per_tag_table(perf)[:2800]}```")]
    warnings = perf.get("warnings") or []
    if warnings:
        blocks.append(context(":warning: " + "\n:warning: ".join(esc(w) for w in warnings[:20])))
    status = ":star: default iteration (answers predictions)" if is_default else "not the default iteration"
    blocks.append(context(f"{it.domain.value} · {it.classification_type.value} · {status} · "
                          "out-of-fold estimates; `/cv performance N threshold=0.7` for another threshold"))
    if not is_default and show_default_button and it.status == IterationStatus.Completed:
        blocks.append({"type": "actions", "block_id": f"cv_iter|{it.number}",
                       "elements": [button("Make default", ITERATION_DEFAULT, f"{p.id}|{it.id}", "primary")]})
    text = (f"{head_text}: precision {pct(perf['precision'])}, recall {pct(perf['recall'])}, "
            f"AP {pct(perf['averagePrecision'])}")
    return message(text, blocks)


def iterations_message(p: Project, iterations: list[Iteration]) -> dict:
    if not iterations:
        return message(f"*{esc(p.name)}* has no iterations yet; `/cv train` trains the first one.")
    blocks = [section(f"*Iterations of {esc(p.name)}* ({len(iterations)})")]
    shown = sorted(iterations, key=lambda i: -i.number)[:15]
    for it in shown:
        perf = it.performance or {}
        default = it.id == p.default_iteration_id
        metrics = (f"P {pct(perf.get('precision'))} · R {pct(perf.get('recall'))} · "
                   f"AP {pct(perf.get('averagePrecision'))}"
                   if it.status == IterationStatus.Completed else (esc(it.failure_reason or "") or it.status.value))
        star = " :star: *default*" if default else ""
        blocks.append(section(f"*{it.number}. {esc(it.name)}* · {it.status.value} · {metrics}{star}"))
        elements = []
        if it.status == IterationStatus.Completed and not default:
            elements.append(button("Make default", ITERATION_DEFAULT, f"{p.id}|{it.id}", "primary"))
        if not default and it.status not in (IterationStatus.Queued, IterationStatus.Training):
            elements.append(button("Delete", ITERATION_DELETE, f"{p.id}|{it.id}", "danger", confirm={
                "title": _plain("Delete iteration?"),
                "text": {"type": "mrkdwn",
                         "text": (f"Delete iteration {it.number} of *{esc(p.name)}*? "
                                  "This cannot be undone.")[:300]},
                "confirm": _plain("Delete"), "deny": _plain("Cancel"), "style": "danger"}))
        if elements:
            blocks.append({"type": "actions", "block_id": f"cv_iter|{it.number}", "elements": elements})
    if len(iterations) > len(shown):
        blocks.append(context(f"{len(iterations) - len(shown)} older iterations not shown"))
    text = f"Iterations of {p.name}: " + ", ".join(f"{i.number} {i.status.value}" for i in shown)
    return message(text, blocks)


# ------------------------------------------------------------------ prediction
def zero_shot_message(p: Project, prediction: Prediction, file_name: str = "") -> dict:
    """A zero-shot answer (no iteration trained yet): the tag names' shares, said to be zero-shot, no buttons (the
    prediction is not stored; posting the image with `tag: NAME` labels it)."""
    name = f" `{esc(file_name)}`" if file_name else ""
    best = prediction.predictions[0] if prediction.predictions else None
    above = prediction.above_threshold
    if above:
        text = ":crystal_ball: zero-shot: " + ", ".join(f"*{esc(t.tag_name)}* ({pct(t.probability)})" for t in above)
    elif best is not None:
        text = (f":crystal_ball: zero-shot: no tag above the threshold ({prediction.threshold:g}). "
                f"Best guess: *{esc(best.tag_name)}* ({pct(best.probability)})")
    else:
        text = ":crystal_ball: zero-shot: the project has no tags to answer with."
    text += name
    probs = "\n".join(f"`{pct(t.probability).rjust(6)}` {esc(t.tag_name)}" for t in prediction.predictions[:10])
    blocks = [section(text)] + ([section(probs)] if probs else [])
    blocks.append(context(f"Zero-shot from the tag names of *{esc(p.name)}* ({p.domain.value} prompts): no "
                          "iteration is trained yet, so no image taught this answer. Post images with `tag: NAME` "
                          "and `/cv train`; the first iteration replaces it."))
    return message(text, blocks)


def classification_message(p: Project, prediction: Prediction, iteration_number: int, tags: list[Tag],
                           file_name: str = "") -> dict:
    above = prediction.above_threshold
    best = prediction.predictions[0] if prediction.predictions else None
    name = f" `{esc(file_name)}`" if file_name else ""
    if prediction.unknown:
        return unknown_message(p, prediction, iteration_number, tags, file_name)
    if above:
        verdict = ", ".join(f"*{esc(t.tag_name)}* ({pct(t.probability)})" for t in above)
        text = f":mag: {verdict}{name}"
        confirm_tags = above if p.classification_type == ClassificationType.Multilabel else above[:1]
    elif best is not None:
        text = (f":mag: No tag above the threshold ({prediction.threshold:g}){name}. "
                f"Best guess: *{esc(best.tag_name)}* ({pct(best.probability)})")
        confirm_tags = [best]
    else:
        text = f":mag: The iteration has no tags{name}."
        confirm_tags = []
    probs = "\n".join(f"`{pct(t.probability).rjust(6)}` {esc(t.tag_name)}" for t in prediction.predictions[:10])
    blocks = [section(text)]
    if probs:
        blocks.append(section(probs))
    blocks.append(context(f"Answered by iteration {iteration_number} of *{esc(p.name)}* · "
                          f"threshold {prediction.threshold:g}" + _unknown_note(prediction)))
    elements = []
    if confirm_tags:
        label = ", ".join(t.tag_name for t in confirm_tags)
        elements.append(button(f"Correct: {label}", PREDICTION_CORRECT, ",".join(t.tag_id for t in confirm_tags),
                               "primary"))
    options = [{"text": _plain(t.name), "value": t.id}
               for t in sorted(tags, key=lambda t: t.name.lower())][:MAX_OPTIONS]
    if options:
        elements.append({"type": "static_select", "action_id": PREDICTION_RETAG,
                          "placeholder": _plain("Wrong tag…"), "options": options})
    if elements and prediction.stored:
        blocks.append({"type": "actions", "block_id": f"{PREDICTION_BLOCK}|{p.id}|{prediction.id}",
                       "elements": elements})
    return message(text, blocks)


CLOSEST_TAGS = 3


def _unknown_note(prediction: Prediction) -> str:
    if prediction.unknown_score is None:
        return ""
    return f" · unknown score {prediction.unknown_score:.2f} (flagged from {prediction.unknown_threshold:g})"


def unknown_message(p: Project, prediction: Prediction, iteration_number: int, tags: list[Tag],
                    file_name: str = "") -> dict:
    """The honest answer for an image unlike anything the project was trained on: no verdict, the closest tags
    for orientation, and a menu to tag it (which adds it to the training set)."""
    name = f" `{esc(file_name)}`" if file_name else ""
    closest = prediction.predictions[:CLOSEST_TAGS]
    text = f":grey_question: I don't recognise this{name}: it looks like nothing *{esc(p.name)}* was trained on."
    blocks = [section(text)]
    if closest:
        blocks.append(section("Closest tags: " + ", ".join(
            f"*{esc(t.tag_name)}* ({pct(t.probability)})" for t in closest)))
    blocks.append(context(f"Answered by iteration {iteration_number} of *{esc(p.name)}*" + _unknown_note(prediction)))
    options = [{"text": _plain(t.name), "value": t.id}
               for t in sorted(tags, key=lambda t: t.name.lower())][:MAX_OPTIONS]
    if options and prediction.stored:
        blocks.append({"type": "actions", "block_id": f"{PREDICTION_BLOCK}|{p.id}|{prediction.id}",
                       "elements": [{"type": "static_select", "action_id": PREDICTION_RETAG,
                                     "placeholder": _plain("Tag it…"), "options": options}]})
    return message(text, blocks)


def feedback_done_blocks(original_blocks: list[dict], tag_names: list[str], user: str | None,
                         status: str) -> list[dict]:
    """The classification message with its buttons replaced by who confirmed which tag."""
    kept = [b for b in original_blocks if b.get("type") != "actions"]
    by = f" by <@{user}>" if user else ""
    what = ", ".join(f"*{esc(t)}*" for t in tag_names)
    if status == "OKDuplicate":
        note = (f":white_check_mark: Confirmed as {what}{by}; "
                "the image was already in the training set and now carries this tag.")
    else:
        note = f":white_check_mark: Added to the training set as {what}{by}. `/cv train` to retrain."
    return kept + [context(note)]


# ------------------------------------------------------------------ labelling help (suggestions, audit)
def channel_settings_message(p: Project, binding: ChannelBinding, changed: list[str] | None = None,
                             user: str | None = None) -> dict:
    keep = "on" if binding.keep_untagged else "off"
    text = (f":gear: Channel settings for *{esc(p.name)}*: keep-untagged *{keep}* "
            + ("(images posted without a tag join the untagged pool; `/cv suggest` proposes their tags)"
               if binding.keep_untagged else "(images posted without a tag are ignored)"))
    if changed and user:
        text += f" · changed by <@{user}>"
    return message(text, [section(text)])


def _tag_options(tags: list[Tag], exclude: set[str] | None = None) -> list[dict]:
    return [{"text": _plain(t.name), "value": t.id} for t in sorted(tags, key=lambda t: t.name.lower())
            if t.id not in (exclude or set())][:MAX_OPTIONS]


def _image_label(name: str, image_id: str) -> str:
    return f"`{esc(name)}`" if name else f"image `{image_id[:8]}`"


def suggestions_message(p: Project, suggestions: list, total: int, tags: list[Tag],
                        image_url=None) -> dict:
    """A batch of untagged images (core.usecases.Suggestion) with the suggested tag and buttons Confirm / Other
    tag… / Skip; `image_url(image_id)` gives a thumbnail Slack can fetch, when there is one."""
    if not suggestions:
        text = (f"*{esc(p.name)}* has no untagged images to suggest tags for. Turn on `/cv settings keep-untagged=on` "
                "to keep images posted without a tag.")
        return message(text)
    it = suggestions[0].iteration
    head = (f":bulb: Suggested tags for {len(suggestions)} of {total} untagged image{'s' if total != 1 else ''} of "
            f"*{esc(p.name)}* (iteration {it.number}), most useful to label first")
    blocks = [section(head)]
    for n, s in enumerate(suggestions, 1):
        best = s.best
        guess = f"*{esc(best.tag_name)}* ({pct(best.probability)})" if best else "no tag"
        others = ", ".join(f"{esc(x.tag_name)} {pct(x.probability)}" for x in s.predictions[1:3])
        text = f"*{n}.* {_image_label(s.image.original_name, s.image.id)} → {guess}"
        if others:
            text += f"\n_then_ {others}"
        if s.skipped:
            text += "\n_skipped before_"
        sec = section(text)
        url = image_url(s.image.id) if image_url else None
        if url:
            sec["accessory"] = {"type": "image", "image_url": url, "alt_text": (s.image.original_name or "image")[:200]}
        blocks.append(sec)
        elements = []
        if best:
            elements.append(button(f"Confirm: {best.tag_name}", SUGGEST_CONFIRM, best.tag_id, "primary"))
        options = _tag_options(tags)
        if options:
            elements.append({"type": "static_select", "action_id": SUGGEST_OTHER, "placeholder": _plain("Other tag…"),
                             "options": options})
        elements.append(button("Skip", SUGGEST_SKIP, s.image.id))
        blocks.append({"type": "actions", "block_id": f"{SUGGEST_BLOCK}|{p.id}|{s.image.id}", "elements": elements})
    blocks.append(context("Confirm tags the image; Skip leaves it for later. `/cv suggest` shows the next batch, "
                          "`/cv train` retrains with the new labels (and better suggestions)."))
    lines = [head] + [f"{n}. {s.image.original_name or s.image.id}: {s.best.tag_name if s.best else '-'}"
                      for n, s in enumerate(suggestions, 1)]
    return message("\n".join(lines), blocks)


def audit_message(p: Project, items: list, tags: list[Tag], image_url=None) -> dict:
    """Training images whose tags their out-of-fold prediction contradicts (core.usecases.AuditItem), with
    Keep / Retag buttons."""
    if not items:
        text = (f":white_check_mark: Nothing to audit in *{esc(p.name)}*: every image of the newest iteration was "
                "answered or agrees with its tags.")
        return message(text)
    it = items[0].iteration
    head = (f":mag_right: {len(items)} image{'s' if len(items) != 1 else ''} of *{esc(p.name)}* whose tags "
            f"iteration {it.number}'s out-of-fold predictions contradict most, most suspicious first")
    blocks = [section(head)]
    for n, x in enumerate(items, 1):
        stored = ", ".join(f"*{esc(t)}*" for t in x.tag_names) or "no tags"
        suggested = ", ".join(f"*{esc(t)}*" for t in x.suggested_names) or "none"
        prob = ", ".join(pct(x.probabilities.get(t)) for t in x.suggested_ids)
        text = (f"*{n}.* {_image_label(x.image.original_name, x.image.id)} tagged {stored}; the model says "
                f"{suggested}" + (f" ({prob})" if prob else "") + f" · suspicion {x.score:.2f}")
        sec = section(text)
        url = image_url(x.image.id) if image_url else None
        if url:
            sec["accessory"] = {"type": "image", "image_url": url, "alt_text": (x.image.original_name or "image")[:200]}
        blocks.append(sec)
        elements = [button("Keep", AUDIT_KEEP, x.image.id)]
        if x.suggested_ids and set(x.suggested_ids) != set(x.tag_ids):
            elements.append(button(f"Retag: {', '.join(x.suggested_names)}", AUDIT_RETAG, ",".join(x.suggested_ids),
                                   "primary"))
        options = _tag_options(tags)
        if options:
            elements.append({"type": "static_select", "action_id": AUDIT_RETAG_OTHER,
                             "placeholder": _plain("Retag as…"), "options": options})
        blocks.append({"type": "actions", "block_id": f"{AUDIT_BLOCK}|{p.id}|{x.image.id}", "elements": elements})
    blocks.append(context("Keep records that the tags are right (not asked again until they change); Retag replaces "
                          "them. `/cv train` afterwards."))
    lines = [head] + [f"{n}. {x.image.original_name or x.image.id}: {', '.join(x.tag_names)} -> "
                      f"{', '.join(x.suggested_names)}" for n, x in enumerate(items, 1)]
    return message("\n".join(lines), blocks)


def answered_blocks(original_blocks: list[dict], block_id: str, note: str) -> list[dict]:
    """The message with one image's buttons (the actions block `block_id`) replaced by what was done."""
    out = []
    for b in original_blocks:
        if b.get("type") == "actions" and b.get("block_id") == block_id:
            out.append(context(note))
        else:
            out.append(b)
    return out


# ------------------------------------------------------------------ modal
def new_project_modal(channel_id: str, default_domain: Domain = Domain.Compact) -> dict:
    def opt(text: str, value: str) -> dict:
        return {"text": _plain(text), "value": value}

    domains = [opt(d.value, d.value) for d in Domain]
    types = [opt("Multiclass (one tag per image)", "Multiclass"),
             opt("Multilabel (any number of tags per image)", "Multilabel")]
    return {
        "type": "modal", "callback_id": NEW_PROJECT_VIEW, "private_metadata": channel_id,
        "title": _plain("Create new project", 24), "submit": _plain("Create project", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {"type": "input", "block_id": "name", "label": _plain("Name"),
             "element": {"type": "plain_text_input", "action_id": "value", "max_length": 256}},
            {"type": "input", "block_id": "description", "label": _plain("Description"), "optional": True,
             "element": {"type": "plain_text_input", "action_id": "value", "multiline": True}},
            {"type": "input", "block_id": "type", "label": _plain("Classification type"),
             "element": {"type": "radio_buttons", "action_id": "value", "options": types, "initial_option": types[0]}},
            {"type": "input", "block_id": "domain", "label": _plain("Domain"),
             "element": {"type": "static_select", "action_id": "value", "options": domains,
                         "initial_option": opt(default_domain.value, default_domain.value)}},
            {"type": "input", "block_id": "tags", "label": _plain("Tags"), "optional": True,
             "hint": _plain("Comma-separated, e.g. cat, dog. General, Food, Landmarks, Retail and Adult projects "
                            "classify zero-shot from these names until their first training."),
             "element": {"type": "plain_text_input", "action_id": "value"}},
        ],
    }


def modal_values(view: dict) -> dict[str, str | None]:
    """The submitted values of the new-project modal: {name, description, type, domain, tags}."""
    out: dict[str, str | None] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        v = actions.get("value") or {}
        if "selected_option" in v:
            out[block_id] = (v.get("selected_option") or {}).get("value")
        else:
            out[block_id] = v.get("value")
    return out


def model_export_started_text(p: Project, it: Iteration, what: str, user: str | None) -> str:
    """Posted in the channel when `/cv export PLATFORM …` starts; the zip follows in its thread."""
    return f":package: <@{user}> asked for iteration {it.number} of *{esc(p.name)}* as {esc(what)}…"


def model_export_comment(p: Project, it: Iteration, what: str, usage: str) -> str:
    """The comment under the posted model zip: what it is, and how to run it (the platform's usage note)."""
    note = f"\n{esc(usage)}" if usage else ""
    return f"Iteration {it.number} of *{esc(p.name)}* as {esc(what)}: model, `labels.txt`, `cvexport.manifest`.{note}"


def model_export_failed_message(what: str, reason: str | None) -> dict:
    return error_message(f"The {what} export failed: {reason or 'no reason given'}")
