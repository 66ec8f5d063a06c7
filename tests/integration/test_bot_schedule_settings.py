"""`/cv settings retrain=… retention=…` through the Bolt listener (the pattern of test_bot_listeners.py): shown,
changed by the project's creator or an admin, refused to others and for bad values, which change nothing."""
from __future__ import annotations

from tests.integration.test_bot_listeners import (  # noqa: F401 - fixtures
    ADMIN,
    CREATOR,
    OTHER,
    RecordingClient,
    cv,
    runner,
    said,
    slash,
    team,
)


def test_schedule_settings_are_shown_and_changed_by_the_creator_or_an_admin(cv):  # noqa: F811
    client = RecordingClient()
    slash(cv, "new pets", client)
    _, respond = slash(cv, "settings", client)
    text = said(respond)["text"]
    assert "retraining: *off*" in text and "stored predictions kept: *the server's default*" in text

    _, respond = slash(cv, "settings retrain=nightly retention=30", client, user=OTHER)
    assert "only the project's creator" in said(respond)["text"]
    p = team(cv).projects.find("pets")
    assert (p.retrain, p.prediction_retention_days) == (None, None)

    _, respond = slash(cv, "settings retrain=nightly retention=30", client, user=CREATOR)
    msg = said(respond)
    assert msg["response_type"] == "in_channel" and "Updated retraining, retention of *pets*." in msg["text"]
    assert "nightly" in msg["text"] and "*30 days*" in msg["text"]
    p = team(cv).projects.find("pets")
    assert (p.retrain, p.prediction_retention_days) == ("nightly", 30)

    _, respond = slash(cv, "settings retention=keep retrain=off", client, user=ADMIN)
    p = team(cv).projects.find("pets")
    assert (p.retrain, p.prediction_retention_days) == (None, 0) and "for ever" in said(respond)["text"]


def test_bad_schedule_values_are_refused_and_change_nothing(cv):  # noqa: F811
    client = RecordingClient()
    slash(cv, "new pets", client)
    for text, expected in (("settings retrain=hourly", "retrain must be nightly or off"),
                           ("settings retrain=nightly retention=-4", "retention must be a number of days"),
                           ("settings retrain=nightly colour=red", "`colour=red` is not a setting")):
        _, respond = slash(cv, text, client)
        msg = said(respond)
        assert expected in msg["text"] and msg["response_type"] == "ephemeral", msg
    p = team(cv).projects.find("pets")
    assert (p.retrain, p.prediction_retention_days) == (None, None)
    assert client.of("users.info") == []  # refused before asking Slack who the user is


def test_a_nightly_training_is_announced_and_reported_in_the_bound_channel(cv, runner):  # noqa: F811
    import asyncio

    from bot.training import announce_scheduled
    from core.usecases import ImageUpload, Schedule
    from tests.helpers import colour_images
    from tests.integration.test_bot_listeners import CH

    client = RecordingClient()
    slash(cv, "new pets", client)
    slash(cv, "settings retrain=nightly", client)
    uc = team(cv)
    p = uc.projects.find("pets")
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        tag = uc.tags.create(p.id, name)
        uc.images.add(p.id, [ImageUpload(d, f"{name}{i}.png", [tag.id])
                             for i, d in enumerate(colour_images(5, colour, len(name)))])
    result = Schedule(cv.deps).retrain()  # what the scheduler's run in this process returns
    [started] = result["started"]
    before = len(client.of("chat.postMessage"))

    async def go():
        assert await announce_scheduled(cv, client, result) == 1
        runner.release()
        await asyncio.wait_for(asyncio.gather(*cv.tasks), 120)

    asyncio.run(go())
    posts = client.of("chat.postMessage")[before:]
    assert posts[0]["channel"] == CH and "nightly retraining" in posts[0]["text"]
    assert any("precision" in m["text"] for m in posts[1:])  # the outcome, in the thread
    it = uc.iterations.get(p.id, started["iteration"])
    assert it.status.value == "Completed" and it.notify["slack"]["channel"] == CH and it.reported_at is not None
