"""Standing requests end to end: a new observation lands in the archive, the ingest process
(``python -m app ingest``) indexes it, the standing request of a session it covers queues a run
on the new data only, a real rq worker runs it, the owner's webhook hears the start and the end,
and the run's record says what triggered it. Also: the API's checks and access rules for
standing requests, and saved default parameters (the form's and the standing requests')."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from app import accounts, automation, create_app, runs
from tests.conftest import ROOT, app_settings, wait_for

SCRIPTS = ROOT / "tests" / "scripts"
DEADLINE = 120.0
PASSWORD = "correct horse battery staple"


def child_env(env: dict[str, Any]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    out.update({f"REGIO_{k}": str(v) for k, v in env.items()})
    return out


def bright_source(truth: dict) -> tuple[dict, str]:
    """A bright point source of the sample archive and one XMM observation that sees it."""
    for src in truth["sources"]:
        seen = sorted(
            obsid
            for obsid, cams in src["expected"].items()
            if any(c["counts_r30"] > 200 for c in cams.values())
        )
        if src["kind"] == "point" and seen:
            return src, seen[0]
    raise AssertionError("no bright point source in the sample archive")


class Hooks:
    """A local webhook receiver: what it got."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.url = ""


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    got = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.received.append(json.loads(body))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield got
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path, redis_url) -> dict[str, Any]:
    """Accounts mode on an archive that starts empty, watched by the ingest process."""
    archive = tmp_path / "archive"
    archive.mkdir()
    return {
        **app_settings(tmp_path, tmp_path / "index", redis_url, SCRIPTS),
        "ARCHIVE": archive,
        "AUTH": "accounts",
        "WEBHOOK_ALLOW_PRIVATE": True,
        "INGEST_SETTLE": 1,
        "INGEST_RESCAN": 5,
    }


@pytest.fixture
def ingest(env, tmp_path) -> Iterator[subprocess.Popen]:
    """``python -m app ingest`` as the service starts it; its index exists when this yields."""
    log_path = tmp_path / "ingest.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "ingest"], cwd=ROOT, env=child_env(env),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited {proc.returncode}: {log_path.read_text()}")
        return (Path(env["INDEX"]) / "manifest.json").exists()

    wait_for(ready, "the first (empty) index")
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0, log_path.read_text()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"ingest did not stop on SIGTERM:\n{log_path.read_text()}") from None


def user_with_token(env, email: str, **profile: Any) -> tuple[accounts.User, dict[str, str]]:
    db = accounts.db_path(env["SESSIONS"])
    user = accounts.create_user(db, email, email.split("@")[0].title(), PASSWORD)
    if profile:
        user = accounts.update_profile(db, user.id, **profile)
    return user, {"Authorization": f"Token {accounts.create_token(db, user.id, 'test')}"}


def land(sample_archive: Path, obsid: str, archive: Path, staging: Path) -> None:
    """A new observation lands the way archives deliver: copied aside, then moved in."""
    shutil.copytree(sample_archive / obsid, staging / obsid)
    os.rename(staging / obsid, archive / obsid)


def test_a_standing_request_processes_new_data_without_a_click(
    env, ingest, worker, hooks, sample_archive, tmp_path
):
    truth = json.loads((sample_archive / "truth.json").read_text())
    src, obsid = bright_source(truth)
    client = create_app(env).test_client()
    owner, headers = user_with_token(env, "vera@example.org", webhook_url=hooks.url)
    _other, other_headers = user_with_token(env, "carl@example.org")

    # the session's region is not covered yet: nothing in the archive sees it
    region = f'icrs;circle({src["ra"]},{src["dec"]},30")'
    session = client.post("/api/sessions", json={"source": region}, headers=headers).get_json()
    assert session["coverage"] == []
    sid = session["id"]
    # the owner's saved default for the script applies to the standing request's runs
    saved = client.put("/api/defaults/stages", json={"params": {"label": "from-defaults"}},
                       headers=headers)  # fmt: skip
    assert saved.status_code == 200, saved.get_json()
    body = {
        "title": "new XMM data on my source",
        "instruments": ["XMM/EPIC"],
        "scripts": [{"script": "stages", "params": {"steps": 1}}],
        "scope": "new",
    }
    assert client.post(f"/api/sessions/{sid}/standing-requests", json=body,
                       headers=other_headers).status_code == 404  # fmt: skip
    made = client.post(f"/api/sessions/{sid}/standing-requests", json=body, headers=headers)
    assert made.status_code == 201, made.get_json()
    request_id = made.get_json()["id"]

    staging = tmp_path / "staging"
    staging.mkdir()
    land(sample_archive, obsid, env["ARCHIVE"], staging)

    def completed_run():
        page = client.get("/api/runs?trigger=standing", headers=headers).get_json()
        done = [r for r in page["runs"] if r["phase"] in runs.TERMINAL]
        return done[0] if done and done[0]["products"]["count"] else None

    try:
        run = wait_for(completed_run, "the standing request's run and its products")
    except AssertionError:
        raise AssertionError(ingest.log_path.read_text()) from None
    assert run["phase"] == "COMPLETED", run
    assert run["trigger"] == f"standing:{request_id}"
    new = sorted(f"XMM:{obsid}:{camera}" for camera in ("EMOS1", "EMOS2", "EPN"))
    detail = run["trigger_detail"]
    assert sorted(detail["new_exposures"]) == new
    assert (detail["kind"], detail["request"], detail["scope"]) == ("standing", request_id, "new")
    assert run["params"]["label"] == "from-defaults" and run["params"]["steps"] == 1
    assert run["owner"] == owner.id
    # the run's input holds the new exposures, and only them
    record = runs.get(runs.db_path(env["SESSIONS"]), run["id"])
    given = runs.read_input(record.run_dir)["observations"]
    assert sorted(o["exposure_id"] for o in given) == new
    products = client.get(f"/api/runs/{run['id']}/products", headers=headers).get_json()
    assert {p["file"] for p in products} >= {"table.txt", "sub/counts.json"}
    # the session shows the new data; the request says what it did
    coverage = client.get(f"/api/sessions/{sid}", headers=headers).get_json()["coverage"]
    assert {r["exposure_id"] for r in coverage} == set(new)
    request = client.get(f"/api/standing-requests/{request_id}", headers=headers).get_json()
    assert request["last_runs"] == [run["id"]] and request["last_error"] is None

    # the owner's webhook heard the start and the end, each saying what triggered the run
    events = wait_for(
        lambda: (
            [h for h in hooks.received if h["run"]["id"] == run["id"]]
            if len(hooks.received) >= 2
            else None
        ),
        "the start and end notices",
    )
    assert sorted(h["event"] for h in events) == ["ended", "started"]
    for hook in events:
        assert hook["trigger"]["kind"] == "standing" and hook["trigger"]["id"] == request_id
        assert sorted(hook["trigger"]["detail"]["new_exposures"]) == new
    assert [h["run"]["phase"] for h in events if h["event"] == "ended"] == ["COMPLETED"]

    # an observation elsewhere in the sky fires nothing; the same data again neither
    field = next(o["field"] for o in truth["observations"] if o["obsid"] == obsid)
    far = next(o["obsid"] for o in truth["observations"] if o["field"] != field)
    land(sample_archive, far, env["ARCHIVE"], staging)
    index_db = Path(env["INDEX"])

    def indexed(obs: str) -> bool:
        from indexer.index import Index

        return any(r["obsid"] == obs for r in Index.load(index_db).observations())

    wait_for(lambda: indexed(far), "the far observation to be indexed")
    # the ingest callback has run for that build once the known-exposures table holds it
    wait_for(lambda: _known(env, far), "the standing requests to see the far observation")
    all_runs = client.get("/api/runs", headers=headers).get_json()
    assert all_runs["total"] == 1, all_runs


def _known(env, obsid: str) -> bool:
    db = automation.db_path(env["SESSIONS"])
    with automation.connect(db) as conn:
        rows = conn.execute("SELECT exposure_id FROM known_exposures").fetchall()
    return any(f":{obsid}:" in r[0] for r in rows)


# ------------------------------------------------------------------ API checks, no worker


@pytest.fixture
def api_env(tmp_path, sample_index, redis_url) -> dict[str, Any]:
    return {**app_settings(tmp_path, sample_index, redis_url, SCRIPTS), "AUTH": "accounts"}


@pytest.fixture
def world(api_env, sample_archive):
    """Owner, reader and writer collaborators, a stranger, staff; a session of the owner."""
    client = create_app(api_env).test_client()
    people = {}
    for who in ("owner", "reader", "writer", "other", "staff"):
        db = accounts.db_path(api_env["SESSIONS"])
        user = accounts.create_user(db, f"{who}@example.org", who, PASSWORD, staff=who == "staff")
        people[who] = {"Authorization": f"Token {accounts.create_token(db, user.id, 't')}"}
    truth = json.loads((sample_archive / "truth.json").read_text())
    src, _obsid = bright_source(truth)
    region = f'icrs;circle({src["ra"]},{src["dec"]},30")'
    sid = client.post("/api/sessions", json={"source": region},
                      headers=people["owner"]).get_json()["id"]  # fmt: skip
    for who, role in (("reader", "read"), ("writer", "write")):
        client.post(f"/api/sessions/{sid}/collaborators", headers=people["owner"],
                    json={"email": f"{who}@example.org", "role": role})  # fmt: skip
    return {"client": client, "headers": people, "sid": sid, "env": api_env}


GOOD = {"scripts": [{"script": "stages", "params": {"steps": 2}}], "instruments": ["XMM/EPIC"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'scripts' is required"),
        ({"scripts": []}, "'scripts' must be a list of 1 to"),
        ({"scripts": [{"script": "nope"}]}, "unknown script 'nope'"),
        ({"scripts": [{"script": "stages", "params": {"steps": "2"}}]}, "must be a whole number"),
        ({"scripts": [{"script": "stages", "params": {"bogus": 1}}]}, "unknown parameter 'bogus'"),
        ({"scripts": [{"script": "stages", "extra": 1}]}, "scripts[1] must be"),
        ({**GOOD, "instruments": ["XMM"]}, "MISSION/INSTRUMENT"),
        ({**GOOD, "instruments": "XMM/EPIC"}, "MISSION/INSTRUMENT"),
        ({**GOOD, "scope": "some"}, "'scope' must be 'new'"),
        ({**GOOD, "min_coverage": 2}, "between 0 and 1"),
        ({**GOOD, "min_coverage": True}, "between 0 and 1"),
        ({**GOOD, "title": "a\nb"}, "one line"),
        ({**GOOD, "enabled": "yes"}, "true or false"),
        ({**GOOD, "owner": "someone"}, "unknown field(s): owner"),
    ],
)
def test_bad_standing_requests_are_refused_and_nothing_is_stored(world, body, message):
    client, headers, sid = world["client"], world["headers"], world["sid"]
    response = client.post(f"/api/sessions/{sid}/standing-requests", json=body,
                           headers=headers["owner"])  # fmt: skip
    assert response.status_code == 400, response.get_json()
    assert message in response.get_json()["message"]
    assert client.get(f"/api/sessions/{sid}/standing-requests",
                      headers=headers["owner"]).get_json() == []  # fmt: skip


def test_standing_requests_belong_to_the_session_owner(world):
    client, headers, sid = world["client"], world["headers"], world["sid"]
    url = f"/api/sessions/{sid}/standing-requests"
    expected = {"owner": 201, "staff": 201, "writer": 403, "reader": 403, "other": 404}
    made = {}
    for who, status in expected.items():
        response = client.post(url, json=GOOD, headers=headers[who])
        assert response.status_code == status, (who, response.get_json())
        if status == 201:
            made[who] = response.get_json()
    assert client.post(url, json=GOOD).status_code == 401
    item = made["owner"]
    assert item["owner"] == made["staff"]["owner"], "staff's request runs as the owner's"
    listed = {who: client.get(url, headers=headers[who]) for who in expected}
    assert [len(listed[w].get_json()) for w in ("owner", "reader", "writer", "staff")] == [2] * 4
    assert listed["other"].status_code == 404
    assert client.get("/api/standing-requests", headers=headers["other"]).get_json() == []
    assert len(client.get("/api/standing-requests", headers=headers["reader"]).get_json()) == 2

    one = f"/api/standing-requests/{item['id']}"
    assert client.get(one, headers=headers["other"]).status_code == 404
    assert client.patch(one, json={"enabled": False}, headers=headers["writer"]).status_code == 403
    paused = client.patch(one, json={"enabled": False, "scope": "all"}, headers=headers["owner"])
    assert paused.status_code == 200
    assert (paused.get_json()["enabled"], paused.get_json()["scope"]) == (False, "all")
    assert client.patch(one, json={"scope": "x"}, headers=headers["owner"]).status_code == 400
    assert client.delete(one, headers=headers["reader"]).status_code == 403
    assert client.delete(one, headers=headers["owner"]).status_code == 204
    assert client.get(one, headers=headers["owner"]).status_code == 404


def test_check_standing_serves_only_data_arriving_after_the_request(world, redis_url):
    """In-process: the first look only takes note; data already indexed never fires."""
    env = world["env"]
    client, headers, sid = world["client"], world["headers"], world["sid"]
    response = client.post(f"/api/sessions/{sid}/standing-requests", json=GOOD,
                           headers=headers["owner"])  # fmt: skip
    assert response.status_code == 201
    values = client.application.extensions["regio.settings"]
    with redis.Redis.from_url(redis_url) as conn:
        assert automation.check_standing(values, conn) == []
        # pretend the index has not seen one covering exposure: it is "new" at the next look
        session = client.get(f"/api/sessions/{sid}", headers=headers["owner"]).get_json()
        exposure = next(r["exposure_id"] for r in session["coverage"] if r["mission"] == "XMM")
        with automation.connect(automation.db_path(env["SESSIONS"])) as db:
            db.execute("DELETE FROM known_exposures WHERE exposure_id = ?", [exposure])
        queued = automation.check_standing(values, conn)
        assert [r.trigger for r in queued] == [f"standing:{response.get_json()['id']}"]
        assert queued[0].trigger_detail["new_exposures"] == [exposure]
        assert automation.check_standing(values, conn) == [], "each arrival fires once"


# -------------------------------------------------------------------------- saved defaults


def test_saved_defaults_fill_the_form_and_the_runs(world, redis_url):
    client, headers, sid = world["client"], world["headers"], world["sid"]
    assert client.put("/api/defaults/stages", json={"params": {"steps": 7}, "scope": "site"},
                      headers=headers["owner"]).status_code == 403  # fmt: skip
    site = client.put("/api/defaults/stages", headers=headers["staff"],
                      json={"params": {"steps": 7, "label": "site"}, "scope": "site"})  # fmt: skip
    assert site.status_code == 200, site.get_json()
    mine = client.put("/api/defaults/stages", json={"params": {"label": "mine"}},
                      headers=headers["owner"])  # fmt: skip
    assert mine.get_json() == {"script": "stages", "scope": "user", "params": {"label": "mine"}}
    for bad, message in (
        ({"params": {"steps": 0}}, "at least 1"),
        ({"params": {"nope": 1}}, "unknown parameter"),
        ({"params": []}, "must be an object"),
        ({"params": {}, "scope": "everyone"}, "'scope' must be"),
        ({"parms": {}}, "the body must be"),
    ):
        response = client.put("/api/defaults/stages", json=bad, headers=headers["owner"])
        assert response.status_code == 400 and message in response.get_json()["message"], bad
    assert client.put("/api/defaults/nope", json={"params": {}},
                      headers=headers["owner"]).status_code == 404  # fmt: skip
    listed = client.get("/api/defaults", headers=headers["owner"]).get_json()
    assert listed["site"]["stages"]["params"] == {"steps": 7, "label": "site"}
    assert listed["user"]["stages"]["params"] == {"label": "mine"}
    assert listed["can_edit_site"] is False

    # the form: the session owner's defaults over the site's over the manifest's
    def form_defaults(who):
        scripts = client.get(f"/api/scripts?session={sid}", headers=headers[who]).get_json()
        stages = next(s for s in scripts if s["name"] == "stages")
        return {p["name"]: p["default"] for p in stages["parameters"]}

    assert form_defaults("owner") | {} == {"sleep": 0.0, "steps": 7, "label": "mine",
                                           "plot": False, "mode": "fast"}  # fmt: skip
    assert form_defaults("writer")["label"] == "mine", "a session's form shows its owner's"
    # a launch without those parameters takes them; given ones win
    run = client.post(f"/api/sessions/{sid}/runs", json={"script": "stages"},
                      headers=headers["writer"]).get_json()  # fmt: skip
    assert (run["params"]["steps"], run["params"]["label"]) == (7, "mine")
    run = client.post(f"/api/sessions/{sid}/runs", headers=headers["owner"],
                      json={"script": "stages", "params": {"label": "given"}}).get_json()  # fmt: skip
    assert (run["params"]["steps"], run["params"]["label"]) == (7, "given")
    assert run["trigger"] == "manual" and run["trigger_detail"] is None
    assert (
        client.delete("/api/defaults/stages?scope=user", headers=headers["owner"]).status_code
        == 204
    )
    assert form_defaults("owner")["label"] == "site"
