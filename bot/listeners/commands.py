"""`/cv …`: ack at once, parse, call the workspace's use cases, answer through the response URL."""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import errors
from core.rules import parse_retention, parse_retrain
from core.usecases import ArchiveTooLarge, UseCases

from .. import blocks, grammar
from ..errors import answering
from ..runtime import SlackBot
from ..training import start_training

log = logging.getLogger("bot")  # when a listener is called without Bolt's logger (tests)


def register(app) -> None:
    app.command("/cv")(handle_cv)


@dataclass
class Request:
    cv: SlackBot
    client: Any
    respond: Callable[..., Awaitable[Any]]
    workspace: str
    channel: str
    user: str
    trigger_id: str | None
    cmd: grammar.Command
    uc: UseCases  # scoped to the Slack workspace the command came from
    logger: logging.Logger

    async def say(self, msg: dict, public: bool = False) -> None:
        await self.respond(**msg, response_type="in_channel" if public else "ephemeral")

    async def project(self):
        return await self.cv.bound_project(self.uc, self.channel)


async def handle_cv(ack, command, respond, client, context, logger=None):
    cv: SlackBot = context["cv"]
    try:
        cmd = grammar.parse_command(command.get("text", ""))
    except grammar.GrammarError as e:
        await ack(**blocks.error_message(str(e)))
        return
    if cmd.name == "help":
        await ack(**blocks.help_message())
        return
    await ack()
    workspace = command.get("team_id") or context.get("team_id") or ""
    req = Request(cv, client, respond, workspace, command.get("channel_id", ""), command.get("user_id", ""),
                  command.get("trigger_id"), cmd, cv.scoped(workspace), logger or log)
    await run(req)


async def run(req: Request) -> None:
    async with answering(req.say, req.logger, f"/cv {req.cmd.name}"):
        await HANDLERS[req.cmd.name](req)


# ------------------------------------------------------------------ projects
async def cmd_new(req: Request) -> None:
    spec = grammar.parse_new(req.cmd)
    cv = req.cv
    if spec is None:
        if not req.trigger_id:
            raise grammar.GrammarError("give the project a name: `/cv new NAME`")
        await req.client.views_open(trigger_id=req.trigger_id,
                                    view=blocks.new_project_modal(req.channel, cv.default_domain))
        return
    p = await cv.call(req.uc.projects.create, spec.name, spec.domain or cv.default_domain, spec.classification_type,
                      spec.description, created_by=req.user)
    tags = await cv.call(req.uc.tags.get_or_create, p.id, spec.tags) if spec.tags else []
    await cv.call(req.uc.channels.bind, req.channel, p.id, req.user)
    await req.say(blocks.project_created_message(p, req.user, tags), public=True)


async def cmd_use(req: Request) -> None:
    name = req.cmd.raw.strip().translate(grammar._SMART_QUOTES).strip("\"'")
    if not name:
        raise grammar.GrammarError("name the project: `/cv use NAME` (`/cv projects` lists them)")
    cv = req.cv
    p = await cv.call(req.uc.projects.find, name)
    await cv.call(req.uc.channels.bind, req.channel, p.id, req.user)
    s = await cv.call(req.uc.projects.summary, p.id)
    await req.say(blocks.project_bound_message(p, req.user, s.image_count, s.iteration_count), public=True)


async def cmd_projects(req: Request) -> None:
    cv = req.cv
    projects = await cv.call(req.uc.projects.list)
    rows = []
    for p in projects:
        s = await cv.call(req.uc.projects.summary, p.id)
        rows.append(blocks.ProjectRow(p, s.image_count, s.iteration_count,
                                      s.default_iteration.number if s.default_iteration else None))
    binding = await cv.call(req.uc.channels.binding, req.channel)
    await req.say(blocks.projects_message(rows, binding.project_id if binding else None))


SETTINGS_USAGE = ("`/cv settings [type=multiclass|multilabel] [domain=…] [keep-untagged=on|off] "
                  "[retrain=nightly|off] [retention=DAYS|keep|default]`")


async def cmd_settings(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    channel_opts = grammar.channel_settings(req.cmd)
    opts = {k: v for k, v in req.cmd.options.items() if k not in channel_opts}
    unknown = [a for a in req.cmd.args] + [f"{k}={v}" for k, v in opts.items()
                                           if k not in ("domain", "type", "retrain", "retention", "threshold")]
    if unknown:
        raise grammar.GrammarError(f"`{unknown[0]}` is not a setting: {SETTINGS_USAGE}")
    if channel_opts:
        binding = await apply_channel_settings(req, channel_opts)
        await req.say(blocks.channel_settings_message(p, binding, list(channel_opts), req.user), public=True)
        if not opts:
            return
    if not opts:
        binding = await cv.call(req.uc.channels.binding, req.channel)
        await req.say(blocks.settings_message(p, binding=binding))
        return
    if "threshold" in opts:
        raise grammar.GrammarError("set the threshold with `/cv threshold 0.7`")
    domain = grammar.parse_domain(opts["domain"]) if "domain" in opts else None
    ctype = grammar.parse_type(opts["type"]) if "type" in opts else None
    retrain = parse_retrain(opts["retrain"]) if "retrain" in opts else None  # checked before asking Slack anything
    if "retention" in opts:
        parse_retention(opts["retention"])
    await cv.require_admin(req.client, req.workspace, req.user, p,
                           "change the domain, classification type, retraining or retention")
    changed = [w for w, v in (("domain", domain), ("type", ctype)) if v is not None]
    changed += [w for w, key in (("retraining", "retrain"), ("retention", "retention")) if key in opts]
    p = await cv.call(req.uc.projects.update, p.id, domain=domain, classification_type=ctype,
                      retrain=None if "retrain" not in opts else (retrain or "off"),
                      prediction_retention=opts.get("retention"))
    await req.say(blocks.settings_message(p, changed), public=True)


async def apply_channel_settings(req: Request, values: dict[str, object]):
    """Each channel setting of `/cv settings` by its own use case (keys are independent of one another)."""
    binding = None
    for key, value in values.items():
        binding = await req.cv.call(CHANNEL_SETTERS[key](req.uc), req.channel, value)
    return binding


CHANNEL_SETTERS: dict[str, Callable[[UseCases], Callable]] = {
    "keep-untagged": lambda uc: uc.channels.set_keep_untagged,
}


async def cmd_threshold(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    if req.cmd.args and req.cmd.args[0].lower() == "unknown":  # `/cv threshold unknown 0.9`
        await _unknown_threshold(req, p, req.cmd.args[1] if len(req.cmd.args) > 1 else None)
        return
    value = req.cmd.options.get("threshold") or (req.cmd.args[0] if req.cmd.args else None)
    if value is None:
        await req.say(blocks.info_message(f"*{blocks.esc(p.name)}* uses threshold *{p.threshold:g}*; "
                                          "`/cv threshold 0.7` changes it."))
        return
    p = await cv.call(req.uc.projects.update, p.id, threshold=grammar.parse_threshold(value))
    await req.say(blocks.threshold_message(p, req.user), public=True)


async def _unknown_threshold(req: Request, p, value: str | None) -> None:
    if value is None:
        await req.say(blocks.unknown_threshold_message(p, None, changed=False))
        return
    p = await req.cv.call(req.uc.projects.update, p.id, unknown_threshold=grammar.parse_threshold(value))
    await req.say(blocks.unknown_threshold_message(p, req.user, changed=True), public=True)


async def cmd_keys(req: Request) -> None:
    cv = req.cv
    if not await cv.is_admin(req.client, req.workspace, req.user):
        raise errors.Forbidden("only workspace admins can see the API keys")
    regenerate = bool(req.cmd.args and req.cmd.args[0].lower() in ("regenerate", "new", "rotate"))
    keys = await cv.call(req.uc.channels.keys, regenerate)
    await req.say(blocks.keys_message(req.workspace, keys.training_key, keys.prediction_key))


# ------------------------------------------------------------------ tags
async def cmd_tags(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    tags = await cv.call(req.uc.tags.list, p.id)
    await req.say(blocks.tags_message(p, tags))


async def cmd_collect(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    tags = grammar.parse_collect(req.cmd)
    binding = await cv.call(req.uc.channels.set_collect_mode, req.channel, tags)
    if binding.collect_tags:
        names = ", ".join(f"*{blocks.esc(t)}*" for t in binding.collect_tags)
        text = (f":inbox_tray: Collect mode is on for *{blocks.esc(p.name)}*: every image posted here gets {names} "
                f"(started by <@{req.user}>). `/cv collect stop` ends it.")
    else:
        text = f":inbox_tray: Collect mode is off (<@{req.user}>); images need a `tag:` line again."
    await req.say(blocks.info_message(text), public=True)


# ------------------------------------------------------------------ labelling help
SUGGEST_BATCH = 5
AUDIT_BATCH = 5


def _count_arg(req: Request, default: int) -> int:
    for a in req.cmd.args:
        if a.isdigit():
            return max(1, min(10, int(a)))
    return default


async def cmd_suggest(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    found = await cv.call(req.uc.labelling.suggest, p.id)
    unskipped = [s for s in found if not s.skipped] or found
    tags = await cv.call(req.uc.tags.list, p.id)
    await req.say(blocks.suggestions_message(p, unskipped[:_count_arg(req, SUGGEST_BATCH)], len(found), tags,
                                             cv.image_url), public=True)


async def cmd_audit(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    items = await cv.call(req.uc.labelling.audit, p.id)
    tags = await cv.call(req.uc.tags.list, p.id)
    await req.say(blocks.audit_message(p, items[:_count_arg(req, AUDIT_BATCH)], tags, cv.image_url), public=True)


async def cmd_untagged(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    if [a.lower() for a in req.cmd.args] in (["clear"], ["delete"], ["remove"]):
        await cv.require_admin(req.client, req.workspace, req.user, p, "delete the untagged images")
        images = await cv.call(req.uc.images.list, p.id, tagged=False)
        n = await cv.call(req.uc.images.delete, p.id, [i.id for i in images]) if images else 0
        await req.say(blocks.info_message(f":wastebasket: <@{req.user}> deleted {n} untagged "
                                          f"image{'s' if n != 1 else ''} of *{blocks.esc(p.name)}*."), public=True)
        return
    n = await cv.call(req.uc.images.count, p.id, tagged=False)
    await req.say(blocks.info_message(
        f"*{blocks.esc(p.name)}* has {n} untagged image{'s' if n != 1 else ''}. `/cv suggest` proposes their tags; "
        "`/cv untagged clear` deletes them all (the project's creator or an admin)."))


# ------------------------------------------------------------------ training and iterations
async def cmd_train(req: Request) -> None:
    p = await req.project()
    force = any(a.lower() in ("force", "--force", "-f") for a in req.cmd.args)
    await start_training(req.cv, req.uc, req.client, req.channel, req.user, p, force, req.respond, req.logger)


async def cmd_iterations(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    its = await cv.call(req.uc.iterations.list, p.id)
    await req.say(blocks.iterations_message(p, its))


async def cmd_default(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    if not req.cmd.args:
        raise grammar.GrammarError("which iteration? `/cv default N` (`/cv iterations` lists them)")
    it = await cv.call(req.uc.iterations.by_number, p.id, grammar.parse_iteration_number(req.cmd.args[0]))
    p = await cv.call(req.uc.iterations.set_default, p.id, it.id)
    await req.say(blocks.info_message(blocks.new_default_text(p, it, req.user)), public=True)


async def cmd_performance(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    q = grammar.parse_performance(req.cmd)
    if q.number is not None:
        it = await cv.call(req.uc.iterations.by_number, p.id, q.number)
    else:
        it = await cv.call(req.uc.iterations.current, p.id)
    perf = await cv.call(req.uc.iterations.performance, p.id, it.id, q.threshold)
    await req.say(blocks.performance_message(p, it, perf, is_default=p.default_iteration_id == it.id))


# ------------------------------------------------------------------ data out
SLACK_MAX_FILE_BYTES = 1024 * 1024 * 1024  # Slack's limit for one uploaded file


EXPORT_POLL_SECONDS = 0.5


async def cmd_export(req: Request) -> None:
    query = grammar.parse_export(req.cmd)
    if query.dataset:
        await _export_dataset(req)
    else:
        await _export_model(req, query)


async def _export_model(req: Request, query: grammar.ExportQuery) -> None:
    """`/cv export PLATFORM [FLAVOR] [N]`: refusals (unknown platform or flavor, converter missing, iteration not
    trained) answer only the caller; the started export is announced in the channel, its zip posted in the thread."""
    from core.export import exporter
    from core.usecases import export_file

    cv = req.cv
    p = await req.project()
    if query.number is not None:
        it = await cv.call(req.uc.iterations.by_number, p.id, query.number)
    else:
        it = await cv.call(req.uc.iterations.current, p.id)
    export = await cv.call(req.uc.exports.start, p.id, it.id, query.platform, query.flavor)
    what = export.platform + (f" ({export.flavor})" if export.flavor else "")
    started = await req.client.chat_postMessage(channel=req.channel,
                                                text=blocks.model_export_started_text(p, it, what, req.user))
    ts = started["ts"]
    while export.status == "Exporting":
        await asyncio.sleep(EXPORT_POLL_SECONDS)
        exports = await cv.call(req.uc.exports.list, p.id, it.id)
        export = next(e for e in exports if e.id == export.id)
    if export.status != "Done":
        await req.client.chat_postMessage(channel=req.channel, thread_ts=ts,
                                          **blocks.model_export_failed_message(what, export.failure_reason))
        return
    data = await cv.call(export_file, cv.deps, it.id, export.id)
    if len(data) > SLACK_MAX_FILE_BYTES:
        await req.client.chat_postMessage(channel=req.channel, thread_ts=ts, **blocks.error_message(
            f"The {what} model is larger than Slack allows ({_size(SLACK_MAX_FILE_BYTES)} per file). Export it on "
            f"the server with `cvbot export --project NAME --platform {export.platform} -o FILE.zip`."))
        return
    fd, path = tempfile.mkstemp(prefix="cvbot-model-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        name = f"{_file_name(p.name)}-{it.number}-{_file_name(what.replace(' (', '-').rstrip(')'))}.zip"
        await req.client.files_upload_v2(
            channel=req.channel, thread_ts=ts, file=path, filename=name, title=f"{p.name}: iteration {it.number}, "
            f"{what}", initial_comment=blocks.model_export_comment(p, it, what, exporter(export.platform).usage))
    finally:
        Path(path).unlink(missing_ok=True)


async def _export_dataset(req: Request) -> None:
    cv = req.cv
    p = await req.project()
    started = await req.client.chat_postMessage(
        channel=req.channel, text=f":package: <@{req.user}> asked for the dataset of *{blocks.esc(p.name)}*…")
    ts = started["ts"]
    fd, path = tempfile.mkstemp(prefix="cvbot-dataset-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as f:
            summary = await cv.call(req.uc.transfer.export_dataset, p.id, f, None, SLACK_MAX_FILE_BYTES)
        if os.path.getsize(path) > SLACK_MAX_FILE_BYTES:
            raise ArchiveTooLarge("the zip is larger than Slack allows")
        await req.client.files_upload_v2(
            channel=req.channel, thread_ts=ts, file=path, filename=f"{_file_name(p.name)}.zip",
            title=f"{p.name}: dataset", initial_comment=f"{summary.images} images of *{blocks.esc(p.name)}* "
                                                        "(restore with `cvbot dataset import FILE.zip`)")
    except ArchiveTooLarge:
        too_large = f"The dataset of {p.name} is larger than Slack allows ({_size(SLACK_MAX_FILE_BYTES)} per file)."
        if cv.dataset_url is None:
            await req.client.chat_postMessage(channel=req.channel, thread_ts=ts, **blocks.error_message(
                f"{too_large} Export it on the server with `cvbot dataset export --project NAME -o FILE.zip`."))
        else:
            url = await cv.call(cv.dataset_url, p.id)  # the first link reads the secret from the store
            await req.client.chat_postMessage(
                channel=req.channel, thread_ts=ts, unfurl_links=False,
                text=f":package: {too_large} <{url}|Download the zip> (the link expires; ask again for a new one), "
                     "then restore it with `cvbot dataset import FILE.zip`.")
    finally:
        Path(path).unlink(missing_ok=True)


def _size(n: int) -> str:
    return f"{n // 1024 ** 3} GB" if n >= 1024 ** 3 else f"{max(1, n // 1024 ** 2)} MB" if n >= 1024 ** 2 \
        else f"{n} bytes"


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "dataset"


HANDLERS: dict[str, Callable[[Request], Awaitable[None]]] = {
    "new": cmd_new, "use": cmd_use, "projects": cmd_projects, "settings": cmd_settings, "threshold": cmd_threshold,
    "keys": cmd_keys, "tags": cmd_tags, "collect": cmd_collect, "train": cmd_train, "iterations": cmd_iterations,
    "default": cmd_default, "performance": cmd_performance, "export": cmd_export,
    "suggest": cmd_suggest, "audit": cmd_audit, "untagged": cmd_untagged,
}
