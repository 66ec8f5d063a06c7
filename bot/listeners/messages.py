"""Messages in channels and direct messages: tag by posting images, collect mode, retag in threads, classify."""
from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from core import errors
from core.usecases import ImageUpload, UseCases

from .. import blocks, grammar
from ..errors import Reply, answering
from ..runtime import SlackBot, is_image_file

log = logging.getLogger("bot")  # when a listener is called without Bolt's logger (tests)
HANDLED_SUBTYPES = (None, "file_share", "thread_broadcast")
MAX_CLASSIFY = 10


def register(app) -> None:
    app.event("message")(handle_message)
    app.event("app_mention")(handle_message)


async def handle_message(event, body, client, context, logger=None):
    """Both `message` and `app_mention` land here; a message that mentions the bot arrives as both, so each
    message (channel + ts) is processed once, whichever event comes first (or again, on redelivery)."""
    cv: SlackBot = context["cv"]
    if event.get("subtype") not in HANDLED_SUBTYPES or event.get("bot_id"):
        return
    bot_user = context.get("bot_user_id")
    if bot_user and event.get("user") == bot_user:
        return
    workspace = context.get("team_id") or body.get("team_id") or event.get("team") or ""
    channel, ts = event.get("channel", ""), event.get("ts", "")
    text = event.get("text") or ""
    files = [f for f in (event.get("files") or []) if is_image_file(f)]
    thread_ts = event.get("thread_ts")
    direct = event.get("channel_type") == "im" or channel.startswith("D")
    mentioned = event.get("type") == "app_mention" or bool(bot_user and f"<@{bot_user}>" in text)
    if not files and not (thread_ts and thread_ts != ts):
        return  # chatter (and non-image files) is ignored quietly
    uc = cv.scoped(workspace)
    binding = None
    if files and not grammar.tag_instruction(text) and not (grammar.wants_classification(text) or mentioned or direct):
        binding = await cv.call(uc.channels.binding, channel)
    intent = grammar.message_intent(text, bool(files), direct=direct, mentioned=mentioned,
                                    collect_tags=binding.collect_tags if binding else None,
                                    thread_parent=thread_ts if thread_ts != ts else None,
                                    keep_untagged=bool(binding and binding.keep_untagged))
    if intent is None:
        return
    if not await cv.seen.claim(f"message:{workspace}:{channel}:{ts}"):
        return
    logger = logger or log
    reply = in_thread(client, channel, thread_ts or ts, logger)
    async with answering(reply, logger, f"message {ts} in {channel}"):
        if intent.action in ("tag", "collect", "untagged"):
            await ingest(cv, uc, client, reply, channel, ts, event.get("user"), files, intent.tags,
                         collect=intent.action == "collect")
        elif intent.action == "classify":
            await classify(cv, uc, client, reply, channel, files)
        elif intent.action == "retag":
            await retag(cv, uc, client, reply, workspace, channel, thread_ts, event.get("user"), intent.thread)


def in_thread(client, channel: str, thread_ts: str, logger: logging.Logger) -> Reply:
    """Replies in the message's thread; one Slack refuses is logged and dropped (nobody else to tell)."""
    async def reply(msg: dict) -> None:
        try:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, **msg)
        except SlackApiError as e:
            logger.warning("cannot reply in %s: %s", channel, e.response.get("error"))
    return reply


async def ingest(cv: SlackBot, uc: UseCases, client, reply: Reply, channel: str, ts: str, user: str | None,
                 files: list[dict], tag_names: list[str], collect: bool = False) -> None:
    project = await cv.bound_project(uc, channel)
    tags = await cv.call(uc.tags.get_or_create, project.id, tag_names) if tag_names else []
    tag_ids = [t.id for t in tags]
    downloads = await cv.download_all(client, files, cv.training_max_bytes)
    lines: list[blocks.ImageLine] = [blocks.ImageLine(d.name, "rejected", d.problem or "") for d in downloads]
    ok = [(i, d) for i, d in enumerate(downloads) if d.data is not None]
    added_ids: list[str] = []
    if ok:
        uploads = [ImageUpload(d.data, d.name, tag_ids) for _, d in ok]
        results = await cv.call(uc.images.add, project.id, uploads, source="slack", uploaded_by=user)
        for (i, d), r in zip(ok, results, strict=True):
            if r.status == "OK":
                lines[i] = blocks.ImageLine(d.name, "added")
                added_ids.append(r.image.id)
            elif r.status == "OKDuplicate":
                lines[i] = blocks.ImageLine(d.name, "duplicate", r.message)
            else:
                lines[i] = blocks.ImageLine(d.name, "rejected", r.message or r.status)
    if added_ids:
        await cv.call(uc.channels.link_message_images, channel, ts, added_ids)
    all_tags = await cv.call(uc.tags.list, project.id)
    await reply(blocks.ingest_message(project, [t.name for t in tags], lines, all_tags, collect))


async def classify(cv: SlackBot, uc: UseCases, client, reply: Reply, channel: str, files: list[dict]) -> None:
    project = await cv.bound_project(uc, channel)
    if not project.default_iteration_id:
        raise errors.NoDefaultIteration(f"*{project.name}* has no trained iteration yet; "
                                        "add tagged images and `/cv train`")
    tags = await cv.call(uc.tags.list, project.id)
    numbers = {}
    for d in await cv.download_all(client, files[:MAX_CLASSIFY], cv.prediction_max_bytes):
        if d.data is None:
            await reply(blocks.error_message(f"`{d.name}`: {d.problem}"))
            continue
        try:
            prediction = await cv.call(uc.predictions.predict, project.id, d.data, store=True)
        except errors.ImageRejected as e:
            await reply(blocks.error_message(f"`{d.name}`: {e.message}"))
            continue
        if prediction.iteration_id not in numbers:
            it = await cv.call(uc.iterations.get, project.id, prediction.iteration_id)
            numbers[prediction.iteration_id] = it.number
        await reply(blocks.classification_message(
            project, prediction, numbers[prediction.iteration_id], tags, d.name if len(files) > 1 else ""))


async def retag(cv: SlackBot, uc: UseCases, client, reply: Reply, workspace: str, channel: str, parent_ts: str,
                user: str | None, cmd: grammar.ThreadCommand) -> None:
    image_ids = await cv.call(uc.channels.message_image_ids, channel, parent_ts)
    if not image_ids:
        return  # a thread about something else
    project = await cv.bound_project(uc, channel)
    existing = await cv.call(uc.images.get_many, project.id, image_ids)
    ids = [i.id for i in existing]
    if not ids:
        raise errors.NotFound("the images of this message are no longer in the channel's project")
    names: list[str] = []
    if cmd.action == "tag":
        tags = await cv.call(uc.tags.get_or_create, project.id, cmd.tags)
        await cv.call(uc.images.set_tags, project.id, ids, [t.id for t in tags])
        names = [t.name for t in tags]
    elif cmd.action == "untag":
        await cv.call(uc.images.remove_tags, project.id, ids)
    else:
        await cv.require_admin(client, workspace, user or "", project, "remove images")
        await cv.call(uc.images.delete, project.id, ids)
    all_tags = await cv.call(uc.tags.list, project.id)
    await reply(blocks.retag_message(cmd.action, len(ids), names, all_tags, user))
