"""Launching a run: idempotent with a client key, and without opening any data file.

- ``client_key``: the same key and request give the same run (202 then 200), never a second one,
  also when several requests with one key arrive at once on the real service (gunicorn, Redis,
  worker); another request with the key is refused with 422 and stores nothing; keys belong to
  a session; a bad key is a 400 that stores nothing.
- The pixel WCS that puts the regions in a file's pixels comes from the index: a launch works
  with the data files' WCS unreadable and writes exactly what reading the files gives; an index
  built before it kept them still launches (the files are read).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app import catalog, inputs, jobs, launch, runs, shapes
from app.sessions import SessionStore
from indexer import instruments
from indexer.index import Index
from tests.test_api import SCRIPTS, annulus, circle, source_of


def new_session(client, truth) -> dict:
    src, _ = source_of(truth)
    response = client.post(
        "/api/sessions", json={"source": circle(src), "background": annulus(src)}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def run_folders(env, session_id: str) -> list[str]:
    folder = Path(env["SESSIONS"]) / session_id / "runs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run_ids(client, session) -> list[str]:
    """The session's run records, newest first."""
    db = runs.db_path(client.application.extensions["regio.settings"]["SESSIONS"])
    return [r.id for r in runs.list_runs(db, session["id"])]


# ------------------------------------------------------------------------- the client key


def test_the_same_key_and_request_give_the_same_run(client, truth, env):
    session = new_session(client, truth)
    body = {"script": "stages", "params": {"steps": 2}, "client_key": "k-1"}
    first = client.post(f"{session['url']}/runs", json=body)
    assert first.status_code == 202, first.get_json()
    again = client.post(f"{session['url']}/runs", json={**body, "params": {"steps": 2}})
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.get_json()["client_key"] == "k-1"
    assert run_ids(client, session) == [first.get_json()["id"]]
    assert run_folders(env, session["id"]) == [first.get_json()["id"]]

    other = client.post(f"{session['url']}/runs", json={**body, "client_key": "k-2"})
    assert other.status_code == 202 and other.get_json()["id"] != first.get_json()["id"]
    no_key = client.post(
        f"{session['url']}/runs", json={"script": "stages", "params": {"steps": 2}}
    )
    assert no_key.status_code == 202
    assert len(run_ids(client, session)) == 3


def test_the_same_key_with_another_request_is_refused_and_stores_nothing(client, truth, env):
    session = new_session(client, truth)
    body = {"script": "stages", "params": {"steps": 2}, "client_key": "k-1"}
    first = client.post(f"{session['url']}/runs", json=body).get_json()
    before = (run_ids(client, session), run_folders(env, session["id"]))
    for changed in ({**body, "params": {"steps": 3}}, {**body, "script": "fails", "params": {}}):
        response = client.post(f"{session['url']}/runs", json=changed)
        assert response.status_code == 422
        message = response.get_json()["message"]
        assert "client_key" in message and first["id"] in message
    assert (run_ids(client, session), run_folders(env, session["id"])) == before


def test_keys_belong_to_their_session(client, truth):
    one, two = new_session(client, truth), new_session(client, truth)
    body = {"script": "stages", "client_key": "shared-key"}
    a = client.post(f"{one['url']}/runs", json=body)
    b = client.post(f"{two['url']}/runs", json=body)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.get_json()["id"] != b.get_json()["id"]


@pytest.mark.parametrize("key", ["", "x" * 201, "naïve", "tab\there", 42, None, ["k"]])
def test_a_bad_key_is_refused_and_stores_nothing(client, truth, env, key):
    session = new_session(client, truth)
    response = client.post(f"{session['url']}/runs", json={"script": "stages", "client_key": key})
    assert response.status_code == 400
    assert "'client_key' must be" in response.get_json()["message"]
    assert run_ids(client, session) == [] and run_folders(env, session["id"]) == []


def test_a_refused_launch_keeps_no_key(client, truth, env):
    """A launch refused for its data or parameters records nothing: the key is still free."""
    session = new_session(client, truth)
    bad = client.post(
        f"{session['url']}/runs",
        json={"script": "stages", "params": {"steps": -5}, "client_key": "k"},
    )
    assert bad.status_code == 400 and run_folders(env, session["id"]) == []
    good = client.post(f"{session['url']}/runs", json={"script": "stages", "client_key": "k"})
    assert good.status_code == 202


def test_the_loser_of_a_race_keeps_nothing_and_answers_the_winner(env, client, truth, monkeypatch):
    """Two launches with one key that both looked before either recorded its run: the unique
    index lets one record; the other removes its folder, queues nothing and gives that run."""
    session = new_session(client, truth)
    conn = client.application.extensions["regio.redis"]
    store, db = SessionStore(env["SESSIONS"]), runs.db_path(env["SESSIONS"])
    scripts = {"stages": catalog.load_script(SCRIPTS, "stages")}
    args = (store, db, conn, scripts, session["id"], "stages")
    winner, created = launch.launch_once(*args, {"steps": 2}, client_key="race")
    assert created
    queued = jobs.queue_length(conn)
    real_find, calls = runs.find_by_client_key, []

    def blind_first(*a):  # launch_once's own look finds nothing, as if the winner were not done
        calls.append(a)
        return None if len(calls) % 2 == 1 else real_find(*a)

    monkeypatch.setattr(runs, "find_by_client_key", blind_first)
    loser, created = launch.launch_once(*args, {"steps": 2}, client_key="race")
    assert not created and loser.id == winner.id and len(calls) == 2
    assert run_folders(env, session["id"]) == [winner.id]
    assert jobs.queue_length(conn) == queued
    with pytest.raises(launch.ClientKeyReused):  # the loser also checks what the winner asked
        launch.launch_once(*args, {"steps": 3}, client_key="race")
    assert run_folders(env, session["id"]) == [winner.id]


def test_the_unique_index_is_in_the_run_database(env, client, truth):
    session = new_session(client, truth)
    client.post(f"{session['url']}/runs", json={"script": "stages", "client_key": "k"})
    with sqlite3.connect(runs.db_path(env["SESSIONS"])) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM runs").fetchone()
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO runs (id, session_id, script, phase, created, run_dir, client_key) "
                "VALUES ('other', ?, 'stages', 'QUEUED', 'now', '/x', 'k')",
                [row["session_id"]],
            )
        # runs without a key never conflict
        for ident in ("a", "b"):
            db.execute(
                "INSERT INTO runs (id, session_id, script, phase, created, run_dir) "
                "VALUES (?, ?, 'stages', 'QUEUED', 'now', '/x')",
                [ident, row["session_id"]],
            )


# ------------------------------------------------------- concurrent requests, real service


@pytest.fixture(scope="module")
def live(sample_archive, tmp_path_factory):
    import signal

    from tests.service import service_env, start_service

    tmp = tmp_path_factory.mktemp("idempotent-live")
    service = start_service(tmp, service_env(tmp, ARCHIVE=sample_archive, SCRIPTS=SCRIPTS))
    yield service
    service.stop(signal.SIGINT)


def _post_together(url: str, body: bytes, count: int) -> list[tuple[int, str]]:
    """``count`` threads POST ``body`` at once (a barrier); ``(status, run id or error)``."""
    barrier = threading.Barrier(count)
    answers: list[tuple[int, str]] = []

    def post() -> None:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}
        )
        barrier.wait(30)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.status, json.loads(response.read())["id"]))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, exc.read().decode()))

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return answers


def test_concurrent_requests_with_one_key_make_one_run(live, truth):
    src, _ = source_of(truth)
    status, session = live.post(
        "/api/sessions", {"source": circle(src), "background": annulus(src)}
    )
    assert status == 201, session
    url = f"{live.url.rstrip('/')}/api/sessions/{session['id']}/runs"
    for attempt in range(3):
        body = {"script": "stages", "params": {"steps": 1}, "client_key": f"c{attempt}"}
        answers = _post_together(url, json.dumps(body).encode(), 8)
        statuses = sorted(code for code, _ in answers)
        assert len(answers) == 8 and statuses == [200] * 7 + [202], answers
        assert len({ident for _, ident in answers}) == 1
    listed = json.loads(live.get(f"/api/sessions/{session['id']}/runs")[1])
    assert len(listed) == 3 and sorted(r["client_key"] for r in listed) == ["c0", "c1", "c2"]


# ------------------------------------------------------------- no data file opened at launch


def _expected_pixel_regions(index: Index, rows, source, background):
    """What reading the files themselves gives (the way launches did before)."""
    return {
        row["path"]: {
            "source": shapes.to_physical_ds9(
                source, instruments.for_row(row).pixel_wcs(Path(row["path"]))
            ),
            "background": shapes.to_physical_ds9(
                background, instruments.for_row(row).pixel_wcs(Path(row["path"]))
            ),
        }
        for row in rows
        if row.get("kind") in instruments.PROCESSABLE_KINDS
    }


def test_the_index_keeps_each_files_pixel_wcs(sample_index):
    index = Index.load(sample_index)
    rows = [r for r in index.observations() if r["kind"] in instruments.PROCESSABLE_KINDS]
    kept = index.pixel_wcs([r["path"] for r in rows])
    assert rows and set(kept) == {r["path"] for r in rows}
    for row in rows:
        from_file = instruments.for_row(row).pixel_wcs(Path(row["path"]))
        from_index = instruments.wcs_from_cards(kept[row["path"]])
        pixels = [[10.0, 20.0], [25000.5, 26000.25]]
        assert from_index.all_pix2world(pixels, 1) == pytest.approx(
            from_file.all_pix2world(pixels, 1), abs=1e-9
        )
    expmaps = [r["path"] for r in index.observations() if r["kind"] == "exposure-map"]
    assert not index.pixel_wcs(expmaps)  # nothing to process: nothing kept


def test_a_launch_opens_no_data_file(client, truth, env, monkeypatch):
    session = new_session(client, truth)
    every = [r["exposure_id"] for r in session["coverage"] if r["kind"] == "events"]
    selected = client.put(f"{session['url']}/selection", json={"exposures": every})
    assert selected.status_code == 200, selected.get_json()  # both missions' files
    store = SessionStore(env["SESSIONS"])
    rows = store.selected_rows(session["id"])
    source, background = store.regions(session["id"])
    index = Index.load(env["INDEX"])
    expected = _expected_pixel_regions(index, rows, source, background)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a launch opened a data file")

    monkeypatch.setattr(instruments.Instrument, "pixel_wcs", refuse)
    monkeypatch.setattr(instruments.fits, "open", refuse)
    monkeypatch.setattr(instruments.fits, "getheader", refuse)
    response = client.post(f"{session['url']}/runs", json={"script": "stages"})
    assert response.status_code == 202, response.get_json()
    run_dir = Path(env["SESSIONS"]) / session["id"] / "runs" / response.get_json()["id"]
    data = json.loads((run_dir / "input.json").read_text())
    got = {o["path"]: o["regions_pixel"] for o in data["observations"] if "regions_pixel" in o}
    assert got == expected and len(got) >= 2


def test_an_index_without_pixel_wcs_still_launches(client, truth, env, tmp_path):
    """An index built before it kept the pixel WCS: the files are read, with the same result."""
    old = tmp_path / "old-index"
    shutil.copytree(env["INDEX"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    database = old / manifest.get("database", "index.db")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE files SET meta = json_remove(meta, '$.pixel_wcs')")
    index = Index.load(old)
    assert index.pixel_wcs([r["path"] for r in index.observations()]) == {}

    session = new_session(client, truth)
    store = SessionStore(env["SESSIONS"])
    rows = store.selected_rows(session["id"])
    source, background = store.regions(session["id"])
    regions, observations = inputs.for_session(store, session["id"], index=index)
    got = {o["path"]: o["regions_pixel"] for o in observations if "regions_pixel" in o}
    assert got == _expected_pixel_regions(index, rows, source, background)
    assert regions["source"]["ds9"].splitlines()[1] == "icrs"


def test_the_next_build_reads_again_the_files_indexed_without_pixel_wcs(sample_archive, tmp_path):
    """An index from before (schema 2, no pixel WCS kept): the next build reads its event lists
    again and keeps it; the exposures stay the same."""
    from indexer import store
    from indexer.build import build_index

    index_dir = tmp_path / "index"
    build_index([sample_archive], index_dir)
    db = store.connect(index_dir / "index.db")
    before = {r["path"]: r["id"] for r in store.exposures(db)}
    with db.conn:
        db.execute("update files set meta = json_remove(meta, '$.pixel_wcs')")
        db.execute("update schema_version set version = 2")
    db.conn.close()
    assert Index.load(index_dir).pixel_wcs(list(before)) == {}

    report = build_index([sample_archive], index_dir)
    events = [p for p, k in _kinds(index_dir).items() if k in instruments.PROCESSABLE_KINDS]
    assert report.updated == len(events) and events
    assert set(Index.load(index_dir).pixel_wcs(list(_kinds(index_dir)))) == set(events)
    db = store.connect(index_dir / "index.db")
    assert {r["path"]: r["id"] for r in store.exposures(db)} == before
    db.conn.close()
    assert build_index([sample_archive], index_dir).updated == 0  # once only


def _kinds(index_dir: Path) -> dict[str, str]:
    """``{path: data kind}`` of the indexed files."""
    with sqlite3.connect(index_dir / "index.db") as db:
        rows = db.execute("select path, meta from files where status = 'indexed'").fetchall()
    return {path: json.loads(meta)["kind"] for path, meta in rows}
