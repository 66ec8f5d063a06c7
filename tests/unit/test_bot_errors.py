"""The one mapping from what a listener raised to what the user is told (and what the log gets)."""
import asyncio
import logging

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import blocks
from bot.errors import NoProject, answering
from bot.grammar import GrammarError
from core import errors

BOLT = "slack_bolt.AsyncApp.test"  # stands in for the logger Bolt passes a listener


def slack_refusal(error: str) -> SlackApiError:
    return SlackApiError(error, AsyncSlackResponse(
        client=None, http_verb="POST", api_url="x", req_args={}, data={"ok": False, "error": error},
        headers={}, status_code=200))


def logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name != "asyncio"]  # asyncio says which selector it uses


def answer(exc: BaseException | None) -> list[dict]:
    replies: list[dict] = []

    async def reply(msg: dict) -> None:
        replies.append(msg)

    async def scenario():
        async with answering(reply, logging.getLogger(BOLT), "/cv test"):
            if exc is not None:
                raise exc

    asyncio.run(scenario())
    return replies


@pytest.mark.parametrize("exc, expected", [
    (NoProject("this channel has no project"), blocks.no_project_message()),
    (GrammarError("give the project a name"), blocks.error_message("give the project a name")),
    (errors.Forbidden("only workspace admins can see the API keys"),
     blocks.error_message("only workspace admins can see the API keys")),
    (errors.CvError("the image could not be added"), blocks.error_message("the image could not be added")),
    (slack_refusal("not_in_channel"), blocks.error_message("Slack refused the request: not_in_channel")),
    (KeyError("boom"), blocks.error_message("something went wrong (KeyError); the server log has the details")),
])
def test_each_kind_of_failure_gets_its_reply(exc, expected):
    assert answer(exc) == [expected]


def test_success_replies_nothing():
    assert answer(None) == []


def test_the_users_mistakes_are_not_logged(caplog):
    with caplog.at_level(logging.DEBUG):
        answer(NoProject("none"))
        answer(GrammarError("typo"))
        answer(errors.NotFound("gone"))
    assert logged(caplog) == []


def test_a_slack_refusal_is_a_warning_on_the_logger_passed_in(caplog):
    with caplog.at_level(logging.DEBUG):
        answer(slack_refusal("channel_not_found"))
    (record,) = logged(caplog)
    assert (record.name, record.levelno, record.exc_info) == (BOLT, logging.WARNING, None)
    assert record.getMessage() == "/cv test: Slack said channel_not_found"


def test_an_unexpected_failure_is_logged_with_its_traceback_on_the_logger_passed_in(caplog):
    with caplog.at_level(logging.DEBUG):
        answer(ZeroDivisionError("division by zero"))
    (record,) = logged(caplog)
    assert (record.name, record.levelno, record.getMessage()) == (BOLT, logging.ERROR, "/cv test failed")
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "ZeroDivisionError: division by zero" in caplog.text and "Traceback" in caplog.text


def test_cancellation_is_not_swallowed():
    with pytest.raises(asyncio.CancelledError):
        answer(asyncio.CancelledError())
