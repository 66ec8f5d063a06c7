"""Slack adapter (Bolt for Python): a thin layer over the use cases (`core.usecases`), scoped to each workspace.

`cvbot serve` calls `setup(app, container)`: with SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET the bot answers
Slack at POST /slack/events (bodies up to 1 MB; Slack's signature is checked before Bolt parses or logs
anything); with SLACK_APP_TOKEN it also (or only) connects over Socket Mode. Without tokens it logs one line
saying Slack is off and why, and the rest of the server runs as usual. At start-up the bot reports, in their
original messages, trainings whose outcome it never posted (the server stopped while they ran).
"""
from __future__ import annotations

import logging

log = logging.getLogger("bot")
# the app key under which adapters list callables to hear of each scheduled run their process made (cvbot/server.py)
SCHEDULED_RUN_LISTENERS = "scheduled_run_listeners"


def dataset_links(container):
    """project id → a signed link to its dataset zip, served by this server's API (api/links.py) at
    CVBOT_PUBLIC_URL, else at the address it listens on; valid for CVBOT_LINK_TTL seconds."""
    import time

    from core.links import dataset_url, expiry
    from core.usecases import link_secret

    secret: list[bytes] = []  # resolved on first use (it may be generated and stored in the database then)

    def link(project_id: str) -> str:
        settings = container.settings
        if not secret:
            secret.append(link_secret(container.deps, settings.secret_key))
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        base = settings.public_url or f"http://{host}:{settings.port}"
        return dataset_url(base, secret[0], project_id, expiry(time.time(), settings.link_ttl))

    return link


def image_links(container):
    """image id → a signed thumbnail link at CVBOT_PUBLIC_URL (valid for CVBOT_LINK_TTL seconds), or None when no
    public address is configured (Slack must fetch the picture itself)."""
    import time

    from core.links import expiry, sign
    from core.usecases import link_secret

    settings = container.settings
    public_url = getattr(settings, "public_url", None)
    if not public_url:
        return None
    secret: list[bytes] = []

    def link(image_id: str) -> str:
        if not secret:
            secret.append(link_secret(container.deps, settings.secret_key))
        exp = expiry(time.time(), settings.link_ttl)
        return (f"{public_url.rstrip('/')}/customvision/images/image/{image_id}/thumbnail"
                f"?exp={exp}&sig={sign(secret[0], 'image', image_id, 'thumbnail', exp)}")

    return link


def setup(app, container) -> None:
    from aiohttp import web

    from .app import SocketModeRunner, build_bolt_app, events_handler, slack_mode

    settings = container.settings
    mode = slack_mode(settings)
    if not mode.on:
        log.log(logging.WARNING if mode.problem else logging.INFO, "Slack is off: %s", mode.reason)

        async def slack_off(request: web.Request) -> web.Response:
            return web.json_response({"error": f"Slack is off: {mode.reason}"}, status=503)

        app.router.add_post("/slack/events", slack_off)
        return

    from .runtime import SlackBot

    cv = SlackBot(container.deps, settings.slack_bot_token, settings.default_domain)
    cv.dataset_url = dataset_links(container)
    cv.image_url = image_links(container)
    bolt = build_bolt_app(cv, settings.slack_bot_token, settings.slack_signing_secret, settings.slack_api_url)
    if mode.http:
        app.router.add_post("/slack/events", events_handler(bolt, settings.slack_signing_secret))
    if mode.socket:
        runner = SocketModeRunner(bolt, settings.slack_app_token)

        async def start_socket(_app) -> None:
            await runner.start()

        async def stop_socket(_app) -> None:
            await runner.stop()

        app.on_startup.append(start_socket)
        app.on_cleanup.append(stop_socket)

    async def report_missed(_app) -> None:  # in the background: the server answers /healthz meanwhile
        from .training import report_unreported

        cv.spawn(report_unreported(cv, bolt.client))

    app.on_startup.append(report_missed)

    loop: list = []  # the server's event loop, for runs reported on the scheduler's thread

    async def remember_loop(_app) -> None:
        import asyncio

        loop.append(asyncio.get_running_loop())

    def scheduled_run(run) -> None:  # called on the scheduler's thread for each scheduled run this process made
        if run.job == "retrain" and run.result and run.result.get("started") and loop:
            import asyncio

            from .training import announce_scheduled

            asyncio.run_coroutine_threadsafe(announce_scheduled(cv, bolt.client, run.result), loop[0])

    app.on_startup.append(remember_loop)
    app.setdefault(SCHEDULED_RUN_LISTENERS, []).append(scheduled_run)

    async def close_bot(_app) -> None:
        await cv.close()

    app.on_cleanup.append(close_bot)
    api = f" (Web API at {settings.slack_api_url})" if settings.slack_api_url else ""
    log.info("Slack is on: %s%s", mode.describe(), api)
