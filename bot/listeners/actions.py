"""Buttons and menus: make an iteration default, delete one, confirm or correct a prediction."""
from __future__ import annotations

import logging

from core import errors
from core.model import Project
from core.usecases import UseCases

from .. import blocks
from ..errors import Reply, answering
from ..runtime import SlackBot

log = logging.getLogger("bot")  # when a listener is called without Bolt's logger (tests)


def register(app) -> None:
    app.action(blocks.ITERATION_DEFAULT)(handle_make_default)
    app.action(blocks.ITERATION_DELETE)(handle_delete_iteration)
    app.action(blocks.PREDICTION_CORRECT)(handle_prediction_feedback)
    app.action(blocks.PREDICTION_RETAG)(handle_prediction_feedback)
    for action_id in (blocks.SUGGEST_CONFIRM, blocks.SUGGEST_OTHER, blocks.SUGGEST_SKIP, blocks.AUDIT_KEEP,
                      blocks.AUDIT_RETAG, blocks.AUDIT_RETAG_OTHER):
        app.action(action_id)(handle_labelling)


def _where(body: dict, context) -> tuple[str, str, str]:
    workspace = context.get("team_id") or (body.get("team") or {}).get("id") or ""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    user = (body.get("user") or {}).get("id") or ""
    return workspace, channel, user


async def _project_here(cv: SlackBot, uc: UseCases, channel: str, project_id: str) -> Project:
    """The action's project, which must still be the one bound to the channel the button is in."""
    project = await cv.bound_project(uc, channel)
    if project.id != project_id:
        raise errors.Forbidden("this button belongs to a project that is no longer bound to this channel")
    return project


def _to_presser(respond) -> Reply:
    """Answers only the person who pressed, leaving the message with the button as it is."""
    async def reply(msg: dict) -> None:
        await respond(**msg, response_type="ephemeral", replace_original=False)
    return reply


async def _refresh_source(cv: SlackBot, uc: UseCases, client, respond, body: dict, project: Project,
                          note: str) -> None:
    """Redraw the message the button was in: the iteration list (ephemeral) or a training summary."""
    container = body.get("container") or {}
    if container.get("is_ephemeral"):
        project = await cv.call(uc.projects.get, project.id)  # the default may have just changed
        its = await cv.call(uc.iterations.list, project.id)
        await respond(**blocks.iterations_message(project, its), replace_original=True)
    elif container.get("message_ts"):
        old = (body.get("message") or {}).get("blocks") or []
        kept = [b for b in old if b.get("type") != "actions"] + [blocks.context(note)]
        await client.chat_update(channel=container.get("channel_id"), ts=container["message_ts"],
                                 text=(body.get("message") or {}).get("text") or note, blocks=kept)


async def _iteration_action(ack, body, action, respond, client, context, logger, change) -> None:
    """A button on an iteration: `change(cv, uc, client, workspace, user, project, iteration)` does the work and returns
    the note that replaces the button and is announced in the channel."""
    await ack()
    cv: SlackBot = context["cv"]
    workspace, channel, user = _where(body, context)
    uc = cv.scoped(workspace)

    async def work():
        project_id, iteration_id = action["value"].split("|", 1)
        project = await _project_here(cv, uc, channel, project_id)
        it = await cv.call(uc.iterations.get, project.id, iteration_id)
        note = await change(cv, uc, client, workspace, user, project, it)
        await _refresh_source(cv, uc, client, respond, body, project, note)
        await respond(**blocks.info_message(note), response_type="in_channel", replace_original=False)

    async with answering(_to_presser(respond), logger or log, f"button {action.get('action_id')}"):
        await work()


async def handle_make_default(ack, body, action, respond, client, context, logger=None):
    async def make_default(cv: SlackBot, uc: UseCases, client, workspace, user, project, it) -> str:
        project = await cv.call(uc.iterations.set_default, project.id, it.id)
        return blocks.new_default_text(project, it, user)

    await _iteration_action(ack, body, action, respond, client, context, logger, make_default)


async def handle_delete_iteration(ack, body, action, respond, client, context, logger=None):
    async def delete(cv: SlackBot, uc: UseCases, client, workspace, user, project, it) -> str:
        await cv.require_admin(client, workspace, user, project, "delete iterations")
        await cv.call(uc.iterations.delete, project.id, it.id)
        return f":wastebasket: <@{user}> deleted iteration {it.number} of *{blocks.esc(project.name)}*."

    await _iteration_action(ack, body, action, respond, client, context, logger, delete)


async def handle_prediction_feedback(ack, body, action, respond, client, context, logger=None):
    """"Correct" (the button carries the predicted tag ids) or "Wrong tag…" (the picked tag): the image joins
    the training set with the confirmed tags (Custom Vision's test-and-retrain loop)."""
    await ack()
    cv: SlackBot = context["cv"]
    workspace, channel, user = _where(body, context)
    uc = cv.scoped(workspace)

    async def work():
        _, project_id, prediction_id = action["block_id"].split("|", 2)
        if action.get("type") == "static_select":
            tag_ids = [(action.get("selected_option") or {}).get("value", "")]
        else:
            tag_ids = [t for t in action.get("value", "").split(",") if t]
        project = await _project_here(cv, uc, channel, project_id)
        tags = {t.id: t for t in await cv.call(uc.tags.list, project.id)}
        if not tag_ids or any(t not in tags for t in tag_ids):
            raise errors.NotFound("that tag no longer exists in the project")
        result = await cv.call(uc.predictions.add_to_training, project.id, prediction_id, tag_ids, user)
        if not result.ok:
            raise errors.CvError(f"the image could not be added: {result.message or result.status}")
        message = body.get("message") or {}
        names = [tags[t].name for t in tag_ids]
        new_blocks = blocks.feedback_done_blocks(message.get("blocks") or [], names, user, result.status)
        container = body.get("container") or {}
        await client.chat_update(channel=container.get("channel_id") or channel, ts=container.get("message_ts"),
                                 text=message.get("text") or "classified", blocks=new_blocks)

    async with answering(_to_presser(respond), logger or log, f"button {action.get('action_id')}"):
        await work()


def _picked_tags(action: dict) -> list[str]:
    if action.get("type") == "static_select":
        return [(action.get("selected_option") or {}).get("value", "")]
    return [t for t in action.get("value", "").split(",") if t]


async def handle_labelling(ack, body, action, respond, client, context, logger=None):
    """The buttons of `/cv suggest` (Confirm / Other tag… / Skip) and `/cv audit` (Keep / Retag / Retag as…): the
    answer is recorded, and that image's buttons in the message give way to what was done."""
    await ack()
    cv: SlackBot = context["cv"]
    workspace, channel, user = _where(body, context)
    uc = cv.scoped(workspace)
    action_id = action.get("action_id")

    async def work():
        block_id = action.get("block_id") or ""
        kind, project_id, image_id = block_id.split("|", 2)
        project = await _project_here(cv, uc, channel, project_id)
        if action_id == blocks.SUGGEST_SKIP:
            await cv.call(uc.labelling.skip, project.id, image_id, user)
            note = f":fast_forward: Skipped by <@{user}>; it comes after the others next time."
        elif action_id == blocks.AUDIT_KEEP:
            img = await cv.call(uc.labelling.keep, project.id, image_id, user)
            names = await _names(cv, uc, project, img.tag_ids)
            note = f":white_check_mark: <@{user}> kept {names}; not asked again until its tags change."
        else:
            tag_ids = _picked_tags(action)
            tags = {t.id: t for t in await cv.call(uc.tags.list, project.id)}
            if not tag_ids or any(t not in tags for t in tag_ids):
                raise errors.NotFound("that tag no longer exists in the project")
            names = ", ".join(f"*{blocks.esc(tags[t].name)}*" for t in tag_ids)
            if kind == blocks.SUGGEST_BLOCK:
                await cv.call(uc.labelling.confirm, project.id, image_id, tag_ids, user)
                note = f":label: Tagged {names} by <@{user}>. `/cv train` to retrain."
            else:
                await cv.call(uc.labelling.retag, project.id, image_id, tag_ids, user)
                note = f":label: Retagged {names} by <@{user}>. `/cv train` to retrain."
        message = body.get("message") or {}
        new_blocks = blocks.answered_blocks(message.get("blocks") or [], block_id, note)
        container = body.get("container") or {}
        if container.get("is_ephemeral") or not container.get("message_ts"):
            await respond(blocks=new_blocks, text=message.get("text") or note, replace_original=True)
        else:
            await client.chat_update(channel=container.get("channel_id") or channel, ts=container["message_ts"],
                                     text=message.get("text") or note, blocks=new_blocks)

    async with answering(_to_presser(respond), logger or log, f"button {action_id}"):
        await work()


async def _names(cv: SlackBot, uc: UseCases, project: Project, tag_ids: list[str]) -> str:
    tags = {t.id: t.name for t in await cv.call(uc.tags.list, project.id)}
    return ", ".join(f"*{blocks.esc(tags.get(t, t))}*" for t in tag_ids) or "no tags"
