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
