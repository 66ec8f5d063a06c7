"""The scheduler adapter's slots (cvbot/scheduler.py): every process names a firing's slot alike, also when it fires
late, so that the run log's (job, slot) row lets exactly one of them run it."""
from datetime import UTC, datetime, timedelta

import pytest

from cvbot.config import Settings
from cvbot.scheduler import Daily, Every, parse_time_of_day, timings_from


def test_a_daily_firing_names_the_scheduled_time_it_is_for():
    at = Daily(2, 30)
    fired = datetime(2026, 3, 4, 2, 30, 0, 120000, tzinfo=UTC)
    assert at.slot(fired) == at.slot(fired + timedelta(minutes=50)) == "2026-03-04T02:30Z"  # late: the same slot
    assert at.slot(datetime(2026, 3, 4, 1, 0, tzinfo=UTC)) == "2026-03-03T02:30Z"  # before today's time: yesterday's


def test_an_interval_firing_names_its_grid_instant_even_when_late():
    every = Every(2)
    base = datetime(2026, 3, 4, 2, 30, 0, tzinfo=UTC)
    assert {every.slot(base + timedelta(seconds=d)) for d in (0, 0.01, 1.2, 1.99)} == {every.slot(base)}
    assert every.slot(base + timedelta(seconds=2)) != every.slot(base)


def test_times_of_day_and_the_test_interval_come_from_the_environment():
    s = Settings.from_env({"CVBOT_RETRAIN_AT": "01:15", "CVBOT_PREDICTION_RETENTION_DAYS": "30"})
    assert (s.retrain_at, s.cleanup_at, s.prediction_retention_days, s.scheduled_jobs) == ("01:15", "03:30", 30, True)
    assert Settings.from_env({}).prediction_retention_days is None  # keep everything unless told
    assert Settings.from_env({"CVBOT_SCHEDULED_JOBS": "off"}).scheduled_jobs is False
    timings = timings_from(parse_time_of_day("01:15", "x"), parse_time_of_day("03:30", "y"), None)
    assert timings["retrain"] == Daily(1, 15) and timings["store-cleanup"] == Daily(3, 30)
    assert set(timings_from(Daily(1, 0), Daily(2, 0), 5.0).values()) == {Every(5.0)}
    for env in ({"CVBOT_RETRAIN_AT": "25:00"}, {"CVBOT_CLEANUP_AT": "3pm"}, {"CVBOT_SCHEDULE_INTERVAL": "0"},
                {"CVBOT_PREDICTION_RETENTION_DAYS": "-3"}, {"CVBOT_SCHEDULED_JOBS": "maybe"}):
        with pytest.raises(ValueError):
            Settings.from_env(env)


def test_two_schedulers_firing_one_slot_run_it_once_and_a_closed_one_never_starts():
    from core.usecases import ScheduleSettings
    from cvbot.scheduler import Scheduler
    from tests.fakes import fake_deps

    deps = fake_deps()
    now = datetime(2026, 3, 4, 3, 30, 5, tzinfo=UTC)
    heard = []
    first, second = (Scheduler(deps, ScheduleSettings(), {"store-cleanup": Daily(3, 30)}, owner=name,
                               on_run=heard.append, clock=lambda: now) for name in ("a:1", "b:2"))
    run = first.fire("store-cleanup")
    assert run is not None and run.slot == "2026-03-04T03:30Z" and run.owner == "a:1"
    assert second.fire("store-cleanup") is None and heard == [run]
    with pytest.raises(ValueError):
        Scheduler(deps, ScheduleSettings(), {"backup": Daily(1, 0)})
    second.shutdown()
    second.start_in_background().join(5)
    assert second.scheduler is None  # shut down before its start ran: it stays down
