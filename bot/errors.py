"""How a listener answers what went wrong: one mapping from exception to reply, shared by commands, messages and
buttons (each passes the function that replies where it should: ephemerally, in the thread…)."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from slack_sdk.errors import SlackApiError

from core import errors

from . import blocks
from .grammar import GrammarError

Reply = Callable[[dict], Awaitable[Any]]


class NoProject(errors.CvError):
    """The channel has no bound project (the reply says how to create or bind one)."""


@asynccontextmanager
async def answering(reply: Reply, logger: logging.Logger | None, what: str) -> AsyncIterator[None]:
    """Run the block; turn what it raises into a reply. The user's mistakes (no project, grammar, the core's
    refusals) are told as they are; Slack's refusals are told and logged as a warning; anything else is logged
    with its traceback on `logger` (Bolt's, for a listener) and told as "something went wrong"."""
    logger = logger or logging.getLogger("bot")
    try:
        yield
    except NoProject:
        await reply(blocks.no_project_message())
    except GrammarError as e:
        await reply(blocks.error_message(str(e)))
    except errors.CvError as e:
        await reply(blocks.error_message(e.message))
    except SlackApiError as e:
        logger.warning("%s: Slack said %s", what, e.response.get("error"))
        await reply(blocks.error_message(f"Slack refused the request: {e.response.get('error')}"))
    except Exception as e:  # noqa: BLE001 - the user gets an answer, the log gets the trace
        logger.exception("%s failed", what)
        await reply(blocks.error_message(f"something went wrong ({type(e).__name__}); the server log has the details"))
