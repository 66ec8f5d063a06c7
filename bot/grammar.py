"""The `/cv` command grammar and the message instructions (`tag: cat`, `classify`, `untag`, ...): pure parsing."""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import InvalidInput
from core.model import ClassificationType, Domain
from core.rules import new_tag_names

HELP = """*cvbot*: image classification in Slack (a self-hosted Custom Vision).

*Projects*
• `/cv new NAME [domain=General|Food|Landmarks|Retail|Adult|Compact] [type=multiclass|multilabel] [tags=a,b,c] \
[description…]` create a project and bind it to this channel (`/cv new` alone opens a form); with `tags=` a \
General, Food, Landmarks, Retail or Adult project classifies zero-shot from the tag names before its first training
• `/cv use NAME` bind an existing project to this channel
• `/cv projects` list the projects of this workspace
• `/cv settings [type=multiclass|multilabel] [domain=…]` show or change the project's settings \
(takes effect at the next training); `/cv settings keep-untagged=on|off` keep images posted here without a tag \
in the project's untagged pool
• `/cv settings retrain=nightly|off retention=DAYS|keep|default` retrain each night when new images arrived; \
how many days stored predictions are kept
• `/cv threshold 0.7` set the probability threshold for performance and predictions
• `/cv threshold unknown 0.9` set the unknown score from which I answer "I don't recognise this" (default 0.95)

*Images and tags*
• Post images with the text `tag: cat` or `tags: cat, cute` to add them with those tags \
(`negative` means the Negative tag)
• Reply `tag: dog`, `untag` or `remove` in the thread of such a message to retag, untag or delete its images
• `/cv collect TAG[, TAG…]` tag every image posted here from now on; `/cv collect stop` to end
• `/cv tags` list the tags with their image counts
• `/cv suggest` untagged images with the tag the model suggests: Confirm, pick another tag or Skip \
(`/cv untagged` counts them; `/cv untagged clear` deletes them)
• `/cv audit` tagged images whose tags the model contradicts most: Keep or Retag

*Training*
• `/cv train [force]` train a new iteration; progress and results appear in the channel
• `/cv iterations` list iterations (make one the default, delete one)
• `/cv default N` make iteration N the default (used for predictions)
• `/cv performance [N] [threshold=0.7]` an iteration's precision, recall and AP at any threshold

*Data*
• `/cv export dataset` post the project's images, tags and settings as a zip in a thread, or a download link \
when it is larger than Slack allows (`cvbot dataset import` restores it)
• `/cv export PLATFORM [FLAVOR] [N]` post iteration N's model (default: the default iteration) as a zip in a \
thread, for Azure's platform and flavor, e.g. `/cv export ONNX` or `/cv export ONNX ONNXFloat16 2`

*Classify*
• Post an image with `classify` or `?`, mention me with an image, or send me an image in a direct message; \
the buttons under my answer add the image to the training set with the right tag

• `/cv keys` the workspace's API keys (admins) · `/cv help` this text"""

DOMAIN_NAMES = ", ".join(d.value for d in Domain)
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
_TAG_LINE = re.compile(r"^\s*[*_~]*tags?[*_~]*\s*:[*_~]*\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_OPTION = re.compile(r"^([A-Za-z_-]+)=(.*)$", re.DOTALL)

SUBCOMMANDS = ("help", "new", "use", "projects", "tags", "collect", "train", "iterations", "default",
               "performance", "threshold", "settings", "keys", "export", "suggest", "audit", "untagged")
ALIASES = {"create": "new", "bind": "use", "project": "projects", "list": "projects", "iteration": "iterations",
           "perf": "performance", "setting": "settings", "key": "keys", "?": "help", "suggestions": "suggest",
           "label": "suggest", "mislabels": "audit"}
# `key=value` options of /cv commands: the project's own, then the channel settings of `/cv settings` (each key
# parsed on its own by `CHANNEL_SETTINGS`, so keys added later do not touch these)
OPTION_KEYS = {"domain", "type", "threshold", "t", "description", "desc", "retrain", "retention", "tags"}
CHANNEL_SETTINGS: dict[str, Callable[[str], object]] = {}


class GrammarError(ValueError):
    """The user typed something the grammar does not allow; the message says what to type instead."""


@dataclass
class Command:
    name: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""  # the text after the subcommand, untouched


def _tokens(text: str) -> list[str]:
    text = text.translate(_SMART_QUOTES)
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words
        return text.split()


def parse_command(text: str) -> Command:
    """`/cv` text → Command(name, positional args, key=value options). Empty text means help."""
    text = (text or "").strip()
    if not text:
        return Command("help")
    head, _, rest = text.partition(" ")
    name = ALIASES.get(head.lower(), head.lower())
    if name not in SUBCOMMANDS:
        raise GrammarError(f"unknown command `{head}`; type `/cv help` for the list")
    args, options = [], {}
    for tok in _tokens(rest):
        m = _OPTION.match(tok)
        if m and (m.group(1).lower() in OPTION_KEYS or m.group(1).lower() in CHANNEL_SETTINGS):
            key = {"t": "threshold", "desc": "description"}.get(m.group(1).lower(), m.group(1).lower())
            options[key] = m.group(2).strip()
        else:
            args.append(tok)
    return Command(name, args, options, rest.strip())


def parse_domain(value: str) -> Domain:
    try:
        return Domain.parse(value)
    except ValueError:
        raise GrammarError(f"unknown domain `{value}`; choose one of {DOMAIN_NAMES}") from None


def parse_type(value: str) -> ClassificationType:
    try:
        return ClassificationType.parse(value)
    except ValueError:
        raise GrammarError(f"unknown type `{value}`; choose multiclass or multilabel") from None


def parse_threshold(value: str) -> float:
    v = value.strip()
    try:
        t = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    except ValueError:
        raise GrammarError(f"`{value}` is not a threshold; write a number between 0 and 1, like 0.7 or 70%") from None
    if t > 1 and not v.endswith("%") and t <= 100:
        t = t / 100  # "threshold 70" means 70%
    if not 0.0 <= t <= 1.0:
        raise GrammarError(f"the threshold must be between 0 and 1 (got {value})")
    return t


def parse_switch(value: str) -> bool:
    """on/off, yes/no, true/false, 1/0."""
    v = value.strip().lower()
    if v in ("on", "yes", "true", "1", "enable", "enabled"):
        return True
    if v in ("off", "no", "false", "0", "disable", "disabled"):
        return False
    raise GrammarError(f"`{value}` is neither on nor off")


CHANNEL_SETTINGS["keep-untagged"] = parse_switch


def channel_settings(cmd: Command) -> dict[str, object]:
    """The channel settings a `/cv settings key=value …` sets, each parsed by its own rule."""
    return {k: CHANNEL_SETTINGS[k](v) for k, v in cmd.options.items() if k in CHANNEL_SETTINGS}


def parse_iteration_number(value: str) -> int:
    v = value.strip().lstrip("#")
    if v.lower().startswith("iteration"):
        v = v[len("iteration"):].strip()
    if not v.isdigit():
        raise GrammarError(f"`{value}` is not an iteration number; see `/cv iterations`")
    return int(v)


@dataclass
class NewProject:
    name: str
    domain: Domain | None
    classification_type: ClassificationType
    description: str
    tags: list[str] = field(default_factory=list)


def parse_new_tags(value: str) -> list[str]:
    """`tags=a,b,c` of `/cv new`, checked by the rule the CLI shares before the project exists."""
    names = split_tags(value)
    if not names:
        raise GrammarError("name the tags after `tags=`, separated by commas: `tags=cat,dog` "
                           "(quote names with spaces: `tags=\"tabby cat, dog\"`)")
    try:
        return new_tag_names(names)
    except InvalidInput as e:
        raise GrammarError(f"`tags=`: {e.message}") from None


def parse_new(cmd: Command) -> NewProject | None:
    """`/cv new NAME [domain=…] [type=…] [tags=a,b,c] [description…]`; None when no name was given (open the
    form)."""
    if not cmd.args and not cmd.options:
        return None
    if not cmd.args:
        raise GrammarError("give the project a name: `/cv new NAME [domain=…] [type=…] [description…]`")
    domain = parse_domain(cmd.options["domain"]) if "domain" in cmd.options else None
    ctype = parse_type(cmd.options["type"]) if "type" in cmd.options else ClassificationType.Multiclass
    description = " ".join(cmd.args[1:])
    if "description" in cmd.options:
        description = (cmd.options["description"] + " " + description).strip()
    if "threshold" in cmd.options:
        raise GrammarError("set the threshold after creating the project: `/cv threshold 0.7`")
    tags = parse_new_tags(cmd.options["tags"]) if "tags" in cmd.options else []
    return NewProject(cmd.args[0], domain, ctype, description, tags)


def split_tags(text: str) -> list[str]:
    """'cat, cute' → ['cat', 'cute'] (commas separate; a single tag may contain spaces)."""
    tags = (t.strip().strip("*_`'\"").strip() for t in text.split(","))
    return [t for t in tags if t]


def parse_collect(cmd: Command) -> list[str] | None:
    """Tags to collect with, or None for `stop`."""
    rest = cmd.raw.strip()
    if rest.lower() in ("stop", "off", "end", "none"):
        return None
    tags = split_tags(rest)
    if not tags:
        raise GrammarError("name the tags to collect: `/cv collect cat` or `/cv collect cat, cute`; "
                           "`/cv collect stop` to end")
    return tags


@dataclass
class PerformanceQuery:
    number: int | None
    threshold: float | None


@dataclass
class ExportQuery:
    dataset: bool
    platform: str | None = None
    flavor: str | None = None
    number: int | None = None


EXPORT_USAGE = ("`/cv export PLATFORM [FLAVOR] [N]` posts a model (e.g. `/cv export ONNX`, "
                "`/cv export ONNX ONNXFloat16 2`); `/cv export dataset` posts the images, tags and settings")


def parse_export(cmd: Command) -> ExportQuery:
    """`/cv export dataset`, or `/cv export PLATFORM [FLAVOR] [N]` (the platform and flavor are checked by the
    exporter registry, which knows them)."""
    if not cmd.args:
        raise GrammarError(EXPORT_USAGE)
    first, rest = cmd.args[0], cmd.args[1:]
    if first.lower() == "dataset":
        if rest:
            raise GrammarError(EXPORT_USAGE)
        return ExportQuery(dataset=True)
    flavor = number = None
    for a in rest:
        if re.fullmatch(r"#?\d+", a) and number is None:
            number = parse_iteration_number(a)
        elif flavor is None and not re.fullmatch(r"#?\d+", a):
            flavor = a
        else:
            raise GrammarError(f"`{a}`: say one flavor and one iteration number at most. {EXPORT_USAGE}")
    return ExportQuery(dataset=False, platform=first, flavor=flavor, number=number)


def parse_performance(cmd: Command) -> PerformanceQuery:
    number = threshold = None
    for a in cmd.args:
        if re.fullmatch(r"#?\d+", a):
            number = parse_iteration_number(a)
        elif re.fullmatch(r"\d*\.\d+|\d+(\.\d+)?%", a):
            threshold = parse_threshold(a)
        else:
            raise GrammarError(f"`{a}` is neither an iteration number nor a threshold: "
                               "`/cv performance [N] [threshold=0.7]`")
    if "threshold" in cmd.options:
        threshold = parse_threshold(cmd.options["threshold"])
    return PerformanceQuery(number, threshold)


# ------------------------------------------------------------------ messages
def strip_mentions(text: str) -> str:
    return _MENTION.sub(" ", text or "").strip()


def tag_instruction(text: str) -> list[str] | None:
    """Tags named by a `tag: cat` / `tags: cat, cute` line of a message, or None when there is none."""
    m = _TAG_LINE.search(strip_mentions(text))
    if not m:
        return None
    tags = split_tags(m.group(1))
    return tags or None


def wants_classification(text: str) -> bool:
    """`classify` or `?` as the message's text (mentions aside)."""
    t = strip_mentions(text).strip().lower().rstrip("!.")
    return t in ("?", "classify", "classify?", "predict", "what is this?", "what is this") or t.startswith("classify ")


@dataclass
class ThreadCommand:
    action: str  # "tag" | "untag" | "remove"
    tags: list[str] = field(default_factory=list)


def thread_command(text: str) -> ThreadCommand | None:
    """A thread reply that retags the images of its parent message: `tag: dog`, `untag` or `remove`."""
    tags = tag_instruction(text)
    if tags:
        return ThreadCommand("tag", tags)
    t = strip_mentions(text).strip().lower().rstrip("!.")
    if t in ("untag", "untag all", "clear tags"):
        return ThreadCommand("untag")
    if t in ("remove", "delete", "remove images", "delete images"):
        return ThreadCommand("remove")
    return None


@dataclass
class MessageIntent:
    action: str  # "tag" | "classify" | "collect" | "retag" | "untagged"
    tags: list[str] = field(default_factory=list)
    thread: ThreadCommand | None = None


def message_intent(text: str, has_images: bool, *, direct: bool = False, mentioned: bool = False,
                   collect_tags: list[str] | None = None, thread_parent: str | None = None,
                   keep_untagged: bool = False) -> MessageIntent | None:
    """What a posted message asks for. Precedence: an explicit tag line, then a classify request (the text,
    a mention, a direct message), then collect mode, then the untagged pool (when the channel keeps untagged
    images); a text-only thread reply may retag its parent's images."""
    if has_images:
        tags = tag_instruction(text)
        if tags:
            return MessageIntent("tag", tags)
        if wants_classification(text) or mentioned or direct:
            return MessageIntent("classify")
        if collect_tags:
            return MessageIntent("collect", list(collect_tags))
        if keep_untagged and not thread_parent:
            return MessageIntent("untagged")
        return None
    if thread_parent:
        cmd = thread_command(text)
        if cmd:
            return MessageIntent("retag", cmd.tags, cmd)
    return None
