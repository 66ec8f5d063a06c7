"""Two web processes (two SlackBots, each with its own engine, over one database and blob store): an event Slack
redelivers to the other process is processed once, on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio

import pytest

from bot.app import take_event
from bot.listeners import messages
from bot.runtime import Download, SlackBot
from core.usecases import Scope, UseCases
from tests.conftest import make_deps
from tests.helpers import colour_images
from tests.integration.test_bot_listeners import CH, CREATOR, TEAM, RecordingClient, _event, slash

RED = (220, 30, 30)


@pytest.fixture(params=["sqlite", "postgresql"])
def bots(request, tmp_path, provider):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    served: dict[str, bytes] = {}
    out = []
    for _ in range(2):
        bot = SlackBot(make_deps(tmp_path, provider, database_url=url), "xoxb-test", progress_interval=0)

        async def fake_download(client, f, max_bytes):  # Slack's file download is covered end to end
            return Download(f, served[f["id"]])

        bot.download = fake_download
        bot.served = served
        out.append(bot)
    return out


def test_a_redelivered_event_is_taken_by_one_process_only(bots):
    first, second = bots
    body = {"type": "event_callback", "event_id": "Ev0001", "team_id": TEAM, "event": {"type": "message"}}
    assert asyncio.run(take_event(first, body))
    assert not asyncio.run(take_event(second, body))  # the retry, sent to the other process
    assert not asyncio.run(take_event(first, body))
    assert asyncio.run(take_event(second, {**body, "event_id": "Ev0002"}))
    assert asyncio.run(take_event(second, {"type": "block_actions"}))  # not an event: always processed


def test_a_tagged_message_delivered_to_both_processes_adds_its_images_once(bots):
    first, second = bots
    client = RecordingClient()
    slash(first, "new pets", client)
    files = []
    for i, data in enumerate(colour_images(3, RED, 1)):
        first.served[f"F{i}"] = data
        files.append({"id": f"F{i}", "name": f"{i}.png", "mimetype": "image/png", "size": len(data)})
    ev = _event(first, "tag: cat", files, ts="200.5")
    for bot in (first, second):  # Slack's retry of the message event, answered by the other process
        asyncio.run(messages.handle_message(event=ev, body={"team_id": TEAM}, client=client,
                                            context={"cv": bot, "team_id": TEAM, "bot_user_id": "UBOT"}))
    assert len(client.of("chat.postMessage")) == 1
    uc = UseCases(second.deps, Scope.of(TEAM))
    p = uc.projects.get(uc.channels.binding(CH).project_id)
    assert uc.images.count(p.id) == 3 and p.created_by == CREATOR
