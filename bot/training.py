"""Training in a channel: queue it, keep a message updated with its progress, post the results in the thread."""
from __future__ import annotations

import asyncio
import logging

from slack_sdk.errors import SlackApiError

from core import errors
from core.model import Iteration, IterationStatus, Project
from core.usecases import UseCases

from . import blocks
from .charts import performance_chart
from .runtime import SlackBot

log = logging.getLogger("bot")
FINAL_STAGES = ("done", "failed")
NOTIFY_KEY = "slack"  # this adapter's key in Iteration.notify
REPORT_CLAIM_SECONDS = 600.0  # a process reporting an outcome holds it this long (a failed report is retried after)


async def start_training(cv: SlackBot, uc: UseCases, client, channel: str, user: str, project: Project, force: bool,
                         respond=None, logger: logging.Logger | None = None) -> Iteration:
    """Queue a training (errors raise, so the caller answers them ephemerally) and follow it in the channel, with
    the use cases `uc` of the workspace that asked. `logger` is the calling listener's; the follow-up in the
    background logs on the module's."""
    logger = logger or log
    it = await cv.call(uc.training.train, project.id, force)
    try:
        posted = await client.chat_postMessage(channel=channel,
                                               **blocks.training_progress_message(project, it, "queued", user))
    except SlackApiError as e:
        logger.warning("cannot post the training message in %s: %s", channel, e.response.get("error"))
        if respond is not None:
            await respond(**blocks.info_message(
                f"Training iteration {it.number} of *{blocks.esc(project.name)}* is queued, but I cannot post in this "
                f"channel ({e.response.get('error')}); "
                "invite me with `/invite @cvbot` to see its progress and results."),
                response_type="ephemeral")
        return it
    cv.following.add(it.id)  # followed from here: the start-up catch-up must not report it a second time
    try:  # kept with the iteration, so that a restart still reports the outcome in this message
        await cv.call(uc.notifications.set_target, project.id, it.id, NOTIFY_KEY,
                      {"channel": channel, "ts": posted["ts"], "user": user})
    except Exception:  # noqa: BLE001 - without it the in-memory follow-up below still reports the outcome
        logger.exception("could not store the Slack message of iteration %s", it.id)
    cv.spawn(follow_training(cv, uc, client, channel, posted["ts"], project, it, user))
    return it


async def follow_training(cv: SlackBot, uc: UseCases, client, channel: str, ts: str, project: Project, it: Iteration,
                          user: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def listener(p) -> None:  # called on the training thread
        if p.iteration_id == it.id:
            loop.call_soon_threadsafe(queue.put_nowait, (p.stage, p.describe()))

    progress = uc.deps.progress
    unsubscribe = progress.subscribe(listener)
    try:
        current = progress.get(it.id)
        stage = current.stage if current else "queued"
        last_text, last_at = "queued", loop.time()
        while stage not in FINAL_STAGES:
            try:
                stage, text = await asyncio.wait_for(queue.get(), timeout=3.0)
            except TimeoutError:
                row = await cv.call(uc.iterations.get, project.id, it.id)
                if not row.status.running:
                    break
                current = progress.get(it.id)
                stage, text = (current.stage, current.describe()) if current else (stage, last_text)
            while not queue.empty():
                stage, text = queue.get_nowait()
            if stage in FINAL_STAGES:
                break
            if text != last_text and loop.time() - last_at >= cv.progress_interval:
                last_text, last_at = text, loop.time()
                await _update(client, channel, ts, blocks.training_progress_message(project, it, text, user))
    finally:
        unsubscribe()
    await post_results(cv, uc, client, channel, ts, project.id, it.id)


async def post_results(cv: SlackBot, uc: UseCases, client, channel: str, ts: str, project_id: str,
                       iteration_id: str) -> None:
    """Update the training message with the outcome and post the details in its thread; then mark the iteration
    reported. An error answer from Slack (message deleted, bot removed from the channel…) marks it too, since
    asking again would get the same answer; a Slack that cannot be reached at all (after the client's retries)
    leaves it unreported, so the next start-up tries again."""
    final = await cv.call(uc.training.wait, project_id, iteration_id, 60)
    if final.status.running:
        log.warning("iteration %s is still %s; its result is not posted yet", final.id, final.status.value)
        return
    # several web processes may follow one training (the one that queued it, and another's start-up catch-up):
    # the first to claim the report posts it; the claim expires, so a report Slack never received is retried
    if not await cv.seen.claim(f"report:{final.id}", REPORT_CLAIM_SECONDS):
        log.info("the result of iteration %s is reported by another process", final.id)
        return
    try:
        await _post_outcome(cv, uc, client, channel, ts, final)
    except SlackApiError as e:
        log.warning("could not post the result of iteration %s in %s: %s", final.id, channel, e.response.get("error"))
    await cv.call(uc.notifications.mark_reported, project_id, final.id)


async def _post_outcome(cv: SlackBot, uc: UseCases, client, channel: str, ts: str, final: Iteration) -> None:
    project = await cv.call(uc.projects.get, final.project_id)
    perf = None
    if final.status == IterationStatus.Completed:
        try:
            perf = await cv.call(uc.iterations.performance, project.id, final.id)
        except errors.CvError as e:
            log.warning("no performance for iteration %s: %s", final.id, e.message)
    await _update(client, channel, ts, blocks.training_finished_message(project, final, perf))
    if perf is None:
        if final.status == IterationStatus.Failed:
            await client.chat_postMessage(channel=channel, thread_ts=ts, **blocks.error_message(
                f"Iteration {final.number} failed: {final.failure_reason or 'unknown reason'}"))
        return
    await client.chat_postMessage(channel=channel, thread_ts=ts, **blocks.performance_message(
        project, final, perf, is_default=project.default_iteration_id == final.id))
    try:
        png = await cv.call(performance_chart, perf, f"{project.name}: iteration {final.number}")
        await client.files_upload_v2(channel=channel, thread_ts=ts, file=png, filename=f"iteration-{final.number}.png",
                                     title=f"{project.name}: iteration {final.number} performance")
    except SlackApiError as e:
        log.warning("could not upload the performance chart: %s", e.response.get("error"))


async def _update(client, channel: str, ts: str, msg: dict) -> None:
    try:
        await client.chat_update(channel=channel, ts=ts, **msg)
    except SlackApiError as e:  # progress is best effort; the results still follow
        log.warning("chat.update failed: %s", e.response.get("error"))


async def report_unreported(cv: SlackBot, client) -> int:
    """At start-up: announce the outcome of trainings whose result never reached their Slack message (the server
    stopped meanwhile; start-up recovery marked them Failed). One still running is followed again. Returns how
    many iterations were taken up. The pending trainings span workspaces, so this runs in the system scope."""
    uc = cv.system()
    pending = await cv.call(uc.notifications.unreported, NOTIFY_KEY, True)
    taken = 0
    for it in pending:
        target = (it.notify or {}).get(NOTIFY_KEY) or {}
        channel, ts = target.get("channel"), target.get("ts")
        if it.id in cv.following or not channel or not ts:
            continue
        cv.following.add(it.id)
        taken += 1
        try:
            if it.status.running:
                project = await cv.call(uc.projects.get, it.project_id)
                # followed alongside, so that one still running does not hold up reporting the others
                cv.spawn(follow_training(cv, uc, client, channel, ts, project, it, target.get("user")))
            else:
                await post_results(cv, uc, client, channel, ts, it.project_id, it.id)
        except errors.NotFound:  # deleted meanwhile
            continue
        except Exception:  # noqa: BLE001 - Slack unreachable or the like: left unreported for the next start-up
            log.exception("could not report iteration %s in Slack", it.id)
    log.info("Slack: took up %d training result(s) left unreported before this start", taken)
    return taken


SCHEDULED_STAGE = "queued by the nightly retraining (new images since the last iteration)"


async def announce_scheduled(cv: SlackBot, client, result: dict) -> int:
    """The nightly retraining (a scheduled job this process ran) queued iterations: post each one's training message
    in the channel most recently bound to its project, keep it with the iteration and follow it there, as for
    `/cv train`. Returns how many were announced; a project bound to no channel is left quiet."""
    announced = 0
    for started in result.get("started", []):
        try:
            project = await cv.call(cv.system().projects.get, started["project"])
            uc = cv.scoped(project.workspace)
            it = await cv.call(uc.iterations.get, project.id, started["iteration"])
            bindings = await cv.call(uc.channels.for_project, project.id)
        except errors.NotFound:  # deleted meanwhile
            continue
        if not bindings:
            continue
        channel = max(bindings, key=lambda b: b.updated_at).channel_id
        try:
            posted = await client.chat_postMessage(channel=channel,
                                                   **blocks.training_progress_message(project, it, SCHEDULED_STAGE))
        except SlackApiError as e:
            log.warning("cannot announce the nightly training of %s in %s: %s", project.name, channel,
                        e.response.get("error"))
            continue
        cv.following.add(it.id)
        try:
            await cv.call(uc.notifications.set_target, project.id, it.id, NOTIFY_KEY,
                          {"channel": channel, "ts": posted["ts"]})
        except Exception:  # noqa: BLE001 - the follow-up below still reports the outcome
            log.exception("could not store the Slack message of iteration %s", it.id)
        cv.spawn(follow_training(cv, uc, client, channel, posted["ts"], project, it))
        announced += 1
    return announced
