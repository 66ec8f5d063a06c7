"""The "Create new project" modal (`/cv new` without arguments)."""
from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from core import errors

from .. import blocks, grammar
from ..runtime import SlackBot

log = logging.getLogger("bot")  # when a listener is called without Bolt's logger (tests)


def register(app) -> None:
    app.view(blocks.NEW_PROJECT_VIEW)(handle_new_project)


async def handle_new_project(ack, body, view, client, context, logger=None):
    cv: SlackBot = context["cv"]
    values = blocks.modal_values(view)
    channel = view.get("private_metadata") or ""
    workspace = context.get("team_id") or (body.get("team") or {}).get("id") or ""
    user = (body.get("user") or {}).get("id") or ""
    uc = cv.scoped(workspace)
    name = (values.get("name") or "").strip()
    if not name:
        await ack(response_action="errors", errors={"name": "Give the project a name"})
        return
    try:
        names = grammar.parse_new_tags(values["tags"]) if (values.get("tags") or "").strip() else []
    except grammar.GrammarError as e:
        await ack(response_action="errors", errors={"tags": str(e)})
        return
    try:
        domain = grammar.parse_domain(values.get("domain") or cv.default_domain.value)
        ctype = grammar.parse_type(values.get("type") or "Multiclass")
        project = await cv.call(uc.projects.create, name, domain, ctype, values.get("description") or "",
                                created_by=user)
    except (errors.CvError, grammar.GrammarError) as e:
        await ack(response_action="errors", errors={"name": getattr(e, "message", str(e))})
        return
    tags = await cv.call(uc.tags.get_or_create, project.id, names) if names else []
    await ack()
    msg = blocks.project_created_message(project, user, tags)
    if channel:
        await cv.call(uc.channels.bind, channel, project.id, user)
        try:
            await client.chat_postMessage(channel=channel, **msg)
            return
        except SlackApiError as e:
            (logger or log).info("cannot post in %s (%s); telling the user directly", channel, e.response.get("error"))
    await client.chat_postMessage(channel=user, **msg)
