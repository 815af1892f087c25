"""Schedules: a script run periodically on a session by the cron process (``python -m app cron``,
rq's ``CronScheduler``), with a real rq worker. Ticks stay on their grid, a tick is fired once,
a killed cron process picks up where it was when it comes back (one catch-up for the ticks it
missed, then on time), and the runs say which schedule and tick started them. Also the timing
rules (cron in a time zone, intervals, catch-up), the API's checks and who may schedule."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app import automation, create_app, runs
from app.automation_cron import RegioCron
from app.plumbing import iso, parse_time
from tests.conftest import ROOT, app_settings, wait_for

SCRIPTS = ROOT / "tests" / "scripts"
DEADLINE = 90.0
INTERVAL = 4  # seconds between two ticks of the test schedule


def utc(text: str) -> dt.datetime:
    return parse_time(text)


def a_schedule(**changes: Any) -> automation.Schedule:
    values = dict(
        id="sch000000001", session_id="sessionAAAA1", owner="", created_by="", title="",
        script="stages", params={}, cron=None, interval=None, timezone="UTC", enabled=True,
        created="2026-03-01T10:00:00.000Z", updated="2026-03-01T10:00:00.000Z",
    )  # fmt: skip
    values.update(changes)
    return automation.Schedule(**values)


# ---------------------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("changes", "when", "expected"),
    [
        # an interval schedule ticks every interval after its creation, then after its last tick
        ({"interval": 3600}, "2026-03-01T10:30:00Z", "2026-03-01T11:00:00Z"),
        ({"interval": 3600, "last_fired": "2026-03-01T11:00:00.000Z"}, "2026-03-01T11:00:01Z",
         "2026-03-01T12:00:00Z"),
        # ticks missed while the cron process was down: one catch-up, the latest of them
        ({"interval": 3600, "last_fired": "2026-03-01T11:00:00.000Z"}, "2026-03-01T15:20:00Z",
         "2026-03-01T15:00:00Z"),
        # nightly at 02:00 UTC
        ({"cron": "0 2 * * *"}, "2026-03-01T10:30:00Z", "2026-03-02T02:00:00Z"),
        ({"cron": "@daily"}, "2026-03-01T10:30:00Z", "2026-03-02T00:00:00Z"),
        # nightly at 02:00 in Santiago (UTC-3 in March 2026)
        ({"cron": "0 2 * * *", "timezone": "America/Santiago"}, "2026-03-01T10:30:00Z",
         "2026-03-02T05:00:00Z"),
        # nightly at 02:00 in Paris, over the switch to summer time (29 March 2026)
        ({"cron": "0 2 * * *", "timezone": "Europe/Paris",
          "last_fired": "2026-03-30T00:00:00.000Z"}, "2026-03-30T10:00:00Z",
         "2026-03-31T00:00:00Z"),
        # the tick missed while down (02:00 today) is fired once, at once
        ({"cron": "0 2 * * *", "last_fired": "2026-03-05T02:00:00.000Z"},
         "2026-03-08T09:00:00Z", "2026-03-08T02:00:00Z"),
    ],
)  # fmt: skip
def test_pending_tick(changes, when, expected):
    assert automation.pending_tick(a_schedule(**changes), utc(when)) == utc(expected)


def test_a_tick_is_claimed_once(tmp_path):
    db = automation.db_path(tmp_path)
    schedule = automation.create_schedule(
        db, "sessionAAAA1", "", "", {"script": "stages", "params": {}, "interval": 60}
    )
    tick = utc("2030-01-01T00:00:00Z")
    assert automation.claim_tick(db, schedule.id, tick)
    assert not automation.claim_tick(db, schedule.id, tick), "a second cron process"
    assert not automation.claim_tick(db, schedule.id, tick - dt.timedelta(seconds=60))
    automation.update_schedule(db, schedule.id, enabled=False)
    assert not automation.claim_tick(db, schedule.id, tick + dt.timedelta(seconds=60))
    # enabled again: it starts afresh from now, without firing what it missed meanwhile
    again = automation.update_schedule(db, schedule.id, enabled=True)
    assert utc(again.last_fired) > utc(schedule.created)


def test_the_cron_scheduler_takes_its_jobs_from_the_database(tmp_path, redis_url):
    values = {"SESSIONS": tmp_path, "SCRIPTS": SCRIPTS}
    db = automation.db_path(tmp_path)
    first = automation.create_schedule(
        db, "sessionAAAA1", "", "", {"script": "stages", "params": {}, "cron": "0 2 * * *"}
    )
    with redis.Redis.from_url(redis_url) as conn:
        cron = RegioCron(conn, values)
        cron.sync()
        [job] = cron.get_jobs()
        assert job.name == f"regio-schedule-{first.id}" and job.cron == "0 2 * * *"
        assert job.next_enqueue_time == automation.pending_tick(first, dt.datetime.now(dt.UTC))
        assert not job.should_run()
        second = automation.create_schedule(
            db, "sessionAAAA1", "", "", {"script": "stages", "params": {}, "interval": 3600}
        )
        cron.sync()
        assert [j.schedule.id for j in cron.get_jobs()] == [first.id, second.id]
        assert cron.get_jobs()[0] is job, "an unchanged schedule keeps its job"
        automation.update_schedule(db, first.id, enabled=False)
        cron.sync()
        assert [j.schedule.id for j in cron.get_jobs()] == [second.id]
        assert cron.calculate_sleep_interval() <= 1.0


# ------------------------------------------------------------------------------- the API


@pytest.fixture
def env(tmp_path, sample_index, redis_url) -> dict[str, Any]:
    return {**app_settings(tmp_path, sample_index, redis_url, SCRIPTS), "SCHEDULE_MIN_INTERVAL": 1}


@pytest.fixture
def session_id(client, sample_archive) -> str:
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    body = {"source": f'icrs;circle({src["ra"]},{src["dec"]},30")'}
    return client.post("/api/sessions", json=body).get_json()["id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"script": "stages"}, "give either 'cron'"),
        ({"script": "stages", "cron": "0 2 * * *", "interval": 60}, "give either 'cron'"),
        ({"script": "stages", "cron": "0 2 * *"}, "5 fields"),
        ({"script": "stages", "cron": "* * * * * */5"}, "5 fields"),
        ({"script": "stages", "cron": "61 2 * * *"}, "5 fields"),
        ({"script": "stages", "cron": "@sometimes"}, "unknown alias"),
        ({"script": "stages", "interval": 0}, "'interval' must be between 1"),
        ({"script": "stages", "interval": 10**9}, "'interval' must be between"),
        ({"script": "stages", "interval": 1.5}, "whole number of seconds"),
        ({"script": "stages", "interval": 60, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"script": "nope", "interval": 60}, "unknown script 'nope'"),
        ({"script": "stages", "interval": 60, "params": {"steps": -1}}, "at least 1"),
        ({"interval": 60}, "'script' is required"),
        ({"script": "stages", "interval": 60, "when": "now"}, "unknown field(s): when"),
    ],
)
def test_bad_schedules_are_refused_and_nothing_is_stored(client, session_id, body, message):
    response = client.post(f"/api/sessions/{session_id}/schedules", json=body)
    assert response.status_code == 400, response.get_json()
    assert message in response.get_json()["message"]
    assert client.get(f"/api/sessions/{session_id}/schedules").get_json() == []


def test_a_schedule_through_the_api(client, session_id):
    body = {"script": "stages", "params": {"steps": 2}, "cron": "0  2 * * *",
            "timezone": "Europe/Paris", "title": "nightly"}  # fmt: skip
    made = client.post(f"/api/sessions/{session_id}/schedules", json=body)
    assert made.status_code == 201, made.get_json()
    schedule = made.get_json()
    assert (schedule["cron"], schedule["interval"], schedule["params"]) == (
        "0 2 * * *", None, {"steps": 2},
    )  # fmt: skip
    next_fire = utc(schedule["next_fire"]).astimezone(automation.ZoneInfo("Europe/Paris"))
    assert (next_fire.hour, next_fire.minute) == (2, 0)
    url = f"/api/schedules/{schedule['id']}"
    changed = client.patch(url, json={"interval": 3600, "cron": "@daily"})
    assert changed.status_code == 400  # one of the two, not both
    changed = client.patch(url, json={"interval": 3600})
    assert changed.status_code == 200 and changed.get_json()["cron"] is None
    assert changed.get_json()["params"] == {"steps": 2}, "the parameters stay"
    other = client.patch(url, json={"script": "fails"}).get_json()
    assert (other["script"], other["params"]) == ("fails", {}), "another script's parameters"
    assert [s["id"] for s in client.get("/api/schedules").get_json()] == [schedule["id"]]
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_who_may_schedule(tmp_path, sample_index, redis_url, sample_archive):
    from app import accounts

    env = {**app_settings(tmp_path, sample_index, redis_url, SCRIPTS), "AUTH": "accounts"}
    client = create_app(env).test_client()
    db = accounts.db_path(env["SESSIONS"])
    headers = {}
    for who in ("owner", "writer", "reader", "other", "staff"):
        user = accounts.create_user(db, f"{who}@example.org", who, "correct horse battery",
                                    staff=who == "staff")  # fmt: skip
        headers[who] = {"Authorization": f"Token {accounts.create_token(db, user.id)}"}
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    sid = client.post("/api/sessions", headers=headers["owner"],
                      json={"source": f'icrs;circle({src["ra"]},{src["dec"]},30")'}).get_json()["id"]  # fmt: skip
    for who, role in (("reader", "read"), ("writer", "write")):
        client.post(f"/api/sessions/{sid}/collaborators", headers=headers["owner"],
                    json={"email": f"{who}@example.org", "role": role})  # fmt: skip
    body = {"script": "stages", "cron": "@daily"}
    expected = {"owner": 201, "staff": 201, "writer": 403, "reader": 403, "other": 404}
    for who, status in expected.items():
        response = client.post(f"/api/sessions/{sid}/schedules", json=body, headers=headers[who])
        assert response.status_code == status, who
    made = client.get(f"/api/sessions/{sid}/schedules", headers=headers["reader"]).get_json()
    assert len(made) == 2
    one = f"/api/schedules/{made[0]['id']}"
    assert client.get(one, headers=headers["other"]).status_code == 404
    assert client.patch(one, json={"enabled": False}, headers=headers["writer"]).status_code == 403
    assert client.delete(one, headers=headers["staff"]).status_code == 204


# ------------------------------------------------------------- the cron process, for real


def child_env(env: dict[str, Any]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    out.update({f"REGIO_{k}": str(v) for k, v in env.items()})
    return out


class Cron:
    """``python -m app cron`` as the service starts it; start, kill, start again."""

    def __init__(self, env: dict[str, Any], log_path) -> None:
        self.env, self.log_path, self.proc = env, log_path, None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "cron"], cwd=ROOT, env=child_env(self.env),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def cron(env, tmp_path) -> Iterator[Cron]:
    process = Cron(env, tmp_path / "cron.log")
    yield process
    process.kill(signal.SIGTERM)


def test_a_schedule_fires_on_time_and_again_after_a_restart(client, session_id, env, worker, cron):
    made = client.post(f"/api/sessions/{session_id}/schedules",
                       json={"script": "stages", "params": {"steps": 1}, "interval": INTERVAL,
                             "title": "every few seconds"})  # fmt: skip
    assert made.status_code == 201, made.get_json()
    schedule = made.get_json()
    trigger = f"schedule:{schedule['id']}"
    db = runs.db_path(env["SESSIONS"])

    def fired() -> list[runs.Run]:
        page = client.get(f"/api/runs?trigger={trigger}&limit=200").get_json()
        return sorted((runs.get(db, r["id"]) for r in page["runs"]),
                      key=lambda r: r.trigger_detail["tick"])  # fmt: skip

    cron.start()
    try:
        wait_for(lambda: len(fired()) >= 2, "two ticks")
    except AssertionError:
        raise AssertionError(cron.log()) from None
    cron.kill(signal.SIGKILL)  # a crash: nothing is said to Redis or the database
    killed = dt.datetime.now(dt.UTC)
    before = fired()
    time.sleep(2.5 * INTERVAL)  # ticks go by while the cron process is down
    cron.start()
    try:
        wait_for(lambda: len(fired()) >= len(before) + 2, "a catch-up and a tick after restart")
    except AssertionError:
        raise AssertionError(cron.log()) from None
    cron.kill(signal.SIGTERM)
    assert cron.proc.returncode == 0, cron.log()

    every = fired()
    ticks = [utc(r.trigger_detail["tick"]) for r in every]
    created = utc(schedule["created"])
    # every tick on the schedule's grid, each fired once, never early
    for tick in ticks:
        assert (tick - created).total_seconds() % INTERVAL == 0, ticks
    assert len(set(ticks)) == len(ticks)
    for run, tick in zip(every, ticks, strict=True):
        assert utc(run.created) >= tick
        assert run.trigger == trigger and run.trigger_detail["interval"] == INTERVAL
        assert run.trigger_detail["title"] == "every few seconds"
    # the ticks missed while down (at least two) gave one catch-up run, the latest of them,
    # fired at restart; the ticks after it came on time
    last_before, after = ticks[len(before) - 1], ticks[len(before) :]
    assert after[0] - last_before >= dt.timedelta(seconds=2 * INTERVAL), (ticks, killed)
    assert killed < after[0] <= utc(every[len(before)].created)
    assert after[1] - after[0] == dt.timedelta(seconds=INTERVAL), ticks
    lag = (utc(every[len(before) + 1].created) - after[1]).total_seconds()
    assert 0 <= lag < INTERVAL, f"the tick after the restart fired {lag} s late"
    # rq's own cron bookkeeping knows the runs it started
    with redis.Redis.from_url(env["REDIS_URL"]) as conn:
        history = {
            j.decode()
            for j in conn.zrange(f"rq:cron_job:regio-schedule-{schedule['id']}:jobs", 0, -1)
        }
    assert {r.job_id for r in every[len(before) :]} <= history
    # and the runs were executed by the worker
    wait_for(lambda: all(runs.get(db, r.id).terminal for r in every), "the runs to end")
    assert {runs.get(db, r.id).phase for r in every} == {"COMPLETED"}
    final = client.get(f"/api/schedules/{schedule['id']}").get_json()
    assert final["last_fired"] == iso(ticks[-1]) and final["last_run_id"] == every[-1].id
