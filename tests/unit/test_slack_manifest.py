"""The shipped Slack app manifests agree with what the bot listens to and calls."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ISSUE_SCOPES = {"commands", "chat:write", "files:read", "files:write", "app_mentions:read", "channels:history",
                "groups:history", "im:history", "reactions:read"}
# the scope each Web API method the bot calls needs (views.open needs none beyond the command's trigger)
METHOD_SCOPES = {"chat_postMessage": "chat:write", "chat_update": "chat:write", "files_info": "files:read",
                 "files_upload_v2": "files:write", "users_info": "users:read", "views_open": "commands"}


def load(name):
    return yaml.safe_load((ROOT / "slack" / name).read_text())


@pytest.mark.parametrize("name", ["manifest.yml", "manifest-socket.yml"])
def test_manifest_has_the_command_scopes_and_events(name):
    m = load(name)
    (command,) = m["features"]["slash_commands"]
    assert command["command"] == "/cv"
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert scopes >= ISSUE_SCOPES
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) == {"app_mention", "message.channels",
                                                                       "message.groups", "message.im"}
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["features"]["bot_user"]["display_name"]
    assert 175 <= len(m["display_information"]["long_description"]) <= 4000  # Slack's bounds
    assert len(m["display_information"]["description"]) <= 140


def test_http_manifest_points_every_url_at_slack_events_and_socket_manifest_has_none():
    http = (ROOT / "slack" / "manifest.yml").read_text()
    urls = re.findall(r"(?:url|request_url): (\S+)", http)
    assert len(urls) == 3 and all(u.endswith("/slack/events") for u in urls)
    assert load("manifest.yml")["settings"]["socket_mode_enabled"] is False
    socket = load("manifest-socket.yml")
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "url" not in socket["features"]["slash_commands"][0]
    assert "request_url" not in socket["settings"]["event_subscriptions"]
    assert "request_url" not in socket["settings"]["interactivity"]


def test_every_web_api_call_of_the_bot_is_covered_by_a_scope():
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    called = set(re.findall(r"client\.([a-zA-Z_0-9]+)\(", source))
    assert called, "the bot calls no Web API method?"
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"add the scope these need to the manifests and METHOD_SCOPES: {unknown}"
    scopes = set(load("manifest.yml")["oauth_config"]["scopes"]["bot"])
    assert {METHOD_SCOPES[m] for m in called} <= scopes


def test_the_command_in_the_manifest_is_the_one_the_bot_registers():
    assert 'app.command("/cv")' in (ROOT / "bot" / "listeners" / "commands.py").read_text()
