"""Session titles (PATCH /api/sessions/ID), deletion (DELETE /api/sessions/ID) and the sessions
list's run counts: bad input changes nothing stored, a session something still works on is
refused with 409, deletion removes exactly the session's folder and run records, and the access
matrix in accounts mode (write access for titles, owner or staff for deletion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import accounts, automation, create_app, runs
from app.catalog import load_script
from tests.conftest import ROOT, app_settings

SCRIPTS = ROOT / "tests" / "scripts"
PASSWORD = "correct horse battery staple"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (regio.db included) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def runs_rows(db: Path) -> list[tuple]:
    with runs.connect(db) as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM runs ORDER BY id").fetchall()]


@pytest.fixture
def app(tmp_path, sample_index, redis_url):
    return create_app(app_settings(tmp_path, sample_index, redis_url, SCRIPTS))


@pytest.fixture
def source(sample_archive) -> str:
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    return f'icrs;circle({src["ra"]},{src["dec"]},30")'


def new_session(client, source, headers=None, title="first") -> str:
    response = client.post(
        "/api/sessions", json={"source": source, "title": title}, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def add_run(settings, sid: str, phase: str | None = None) -> runs.Run:
    """A run record and folder of the session (as app.launch makes them), moved to ``phase``."""
    run_id = runs.new_run_id()
    run = runs.create(
        runs.db_path(settings["SESSIONS"]),
        Path(settings["SESSIONS"]) / sid / "runs" / run_id,
        run_id=run_id,
        session_id=sid,
        script=load_script(SCRIPTS, "stages"),
        params={},
    )
    db = runs.db_path(settings["SESSIONS"])
    if phase in (runs.EXECUTING, runs.COMPLETED):
        runs.update(db, run.id, phase=runs.EXECUTING)
    if phase == runs.COMPLETED:
        runs.update(db, run.id, phase=runs.COMPLETED)
    (run.path / "output" / "product.txt").write_text("a product\n")
    return run


# ------------------------------------------------------------------------------------- titles


def test_title_is_changed_and_kept(app, source):
    client = app.test_client()
    sid = new_session(client, source)
    response = client.patch(f"/api/sessions/{sid}", json={"title": "  RXCJ0958 halo, pn only "})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["title"] == "RXCJ0958 halo, pn only"
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "RXCJ0958 halo, pn only"
    listed = {s["id"]: s["title"] for s in client.get("/api/sessions").get_json()}
    assert listed[sid] == "RXCJ0958 halo, pn only"
    assert client.patch(f"/api/sessions/{sid}", json={"title": "x" * 200}).status_code == 200
    assert client.patch(f"/api/sessions/{sid}", json={"title": ""}).get_json()["title"] == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "x" * 201}, "at most 200 characters"),
        ({"title": 42}, "must be text"),
        ({"title": None}, "must be text"),
        ({"title": ["a"]}, "must be text"),
        ({"title": "two\nlines"}, "U+000A"),
        ({"title": "bell\x07"}, "control character"),
        ({"title": "del\x7f"}, "control character"),
        ({"title": "sep\u2028"}, "U+2028"),
        ({}, '{"title": "..."}'),
        ({"title": "ok", "owner": "me"}, '{"title": "..."}'),
        ({"name": "ok"}, '{"title": "..."}'),
    ],
)
def test_bad_title_is_refused_and_nothing_changes(app, source, body, message):
    client = app.test_client()
    sid = new_session(client, source)
    sessions_dir = app.extensions["regio.settings"]["SESSIONS"]
    before = snapshot(sessions_dir)
    response = client.patch(f"/api/sessions/{sid}", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["message"]
    assert snapshot(sessions_dir) == before


def test_title_body_must_be_json(app, source):
    client = app.test_client()
    sid = new_session(client, source)
    sessions_dir = app.extensions["regio.settings"]["SESSIONS"]
    before = snapshot(sessions_dir)
    response = client.patch(f"/api/sessions/{sid}", data="title=x")
    assert response.status_code == 415
    assert "error" in response.get_json()
    response = client.patch(
        f"/api/sessions/{sid}", data="[1]", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert client.patch("/api/sessions/nosuchsession", json={"title": "x"}).status_code == 404
    assert snapshot(sessions_dir) == before


# ----------------------------------------------------------------------------------- deletion


def test_delete_removes_the_session_folder_and_its_run_records_only(app, source):
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sessions_dir = Path(settings["SESSIONS"])
    doomed, kept = new_session(client, source), new_session(client, source, title="kept")
    done = [add_run(settings, doomed, runs.COMPLETED) for _ in range(2)]
    other = add_run(settings, kept, runs.COMPLETED)
    kept_files = snapshot(sessions_dir / kept)
    db = runs.db_path(sessions_dir)

    response = client.delete(f"/api/sessions/{doomed}")
    assert response.status_code == 204
    assert not (sessions_dir / doomed).exists()
    assert not [p for p in sessions_dir.iterdir() if p.name.startswith(".")]  # no leftovers
    assert [r[0] for r in runs_rows(db)] == [other.id]
    for run in done:
        assert client.get(f"/api/runs/{run.id}").status_code == 404
    assert client.get(f"/api/sessions/{doomed}").status_code == 404
    assert client.get(f"/sessions/{doomed}").status_code == 404
    assert [s["id"] for s in client.get("/api/sessions").get_json()] == [kept]
    assert snapshot(sessions_dir / kept) == kept_files
    assert client.get(f"/api/runs/{other.id}/products").status_code == 200
    assert client.delete(f"/api/sessions/{doomed}").status_code == 404


@pytest.mark.parametrize("phase", [runs.QUEUED, runs.EXECUTING])
def test_a_session_with_a_queued_or_running_run_is_not_deleted(app, source, phase):
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sessions_dir = Path(settings["SESSIONS"])
    sid = new_session(client, source)
    add_run(settings, sid, runs.COMPLETED)
    active = add_run(settings, sid, phase)
    before = snapshot(sessions_dir)
    response = client.delete(f"/api/sessions/{sid}")
    assert response.status_code == 409
    assert "queued or running" in response.get_json()["message"]
    assert snapshot(sessions_dir) == before
    # once the run has ended, the session can go
    runs.update(runs.db_path(sessions_dir), active.id, phase=runs.ABORTED)
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert runs_rows(runs.db_path(sessions_dir)) == []


def test_a_session_with_a_standing_request_is_not_deleted(app, source):
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sessions_dir = Path(settings["SESSIONS"])
    sid = new_session(client, source)
    db = automation.db_path(sessions_dir)
    automation.create_standing(db, sid, "", "", {"scripts": [{"script": "stages"}]})
    before = snapshot(sessions_dir)
    response = client.delete(f"/api/sessions/{sid}")
    assert response.status_code == 409
    assert "standing request" in response.get_json()["message"]
    assert snapshot(sessions_dir) == before


def test_records_are_kept_when_the_folder_cannot_be_taken_away(app, source, monkeypatch):
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sessions_dir = Path(settings["SESSIONS"])
    sid = new_session(client, source)
    add_run(settings, sid, runs.COMPLETED)
    before = snapshot(sessions_dir)

    def refuse(src, dst):
        raise PermissionError(13, "read-only file system", str(src))

    monkeypatch.setattr("app.sessions.os.rename", refuse)
    with pytest.raises(PermissionError):
        from app.sessions import SessionStore, delete_session

        delete_session(SessionStore(sessions_dir), sid, sessions_dir)
    assert snapshot(sessions_dir) == before


def test_folder_is_put_back_when_the_records_cannot_be_deleted(app, source, monkeypatch):
    from app import sessions

    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sessions_dir = Path(settings["SESSIONS"])
    sid = new_session(client, source)
    add_run(settings, sid, runs.COMPLETED)
    before = snapshot(sessions_dir)
    real = runs.delete_session_runs

    def failing(db, session_id, remove_files):
        real(db, session_id, remove_files)  # folder moved and rows deleted, then:
        raise OSError("disk full at commit")

    monkeypatch.setattr(runs, "delete_session_runs", failing)
    with pytest.raises(OSError, match="disk full"):
        sessions.delete_session(sessions.SessionStore(sessions_dir), sid, sessions_dir)
    assert (sessions_dir / sid / "session.json").is_file()
    files = {k: v for k, v in snapshot(sessions_dir).items() if k != "regio.db"}
    assert files == {k: v for k, v in before.items() if k != "regio.db"}


def test_sessions_page_shows_titles_counts_and_links(app, source):
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    sid = new_session(client, source, title="Halo <b>study</b>")
    done = add_run(settings, sid, runs.COMPLETED)
    add_run(settings, sid, runs.COMPLETED)
    add_run(settings, sid, runs.QUEUED)
    page = client.get("/sessions").get_data(as_text=True)
    assert "Halo &lt;b&gt;study&lt;/b&gt;" in page
    assert f'href="/sessions/{sid}#run={done.id}"' in page
    assert "2 completed" in page and "1 queued" in page
    assert f'href="/runs?session={sid}"' in page


# ------------------------------------------------------------------------------ access matrix


@pytest.fixture
def accounts_app(tmp_path, sample_index, redis_url):
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS)
    return create_app({**settings, "AUTH": "accounts", "SIGNUP": True})


@pytest.fixture
def people(accounts_app):
    db = accounts.db_path(accounts_app.extensions["regio.settings"]["SESSIONS"])
    out = {"anonymous": {}}
    for who in ("owner", "reader", "writer", "other", "staff"):
        user = accounts.create_user(
            db, f"{who}@example.org", who.title(), PASSWORD, staff=who == "staff"
        )
        out[who] = {"Authorization": f"Token {accounts.create_token(db, user.id, 'test')}"}
    return out


def shared_session(client, source, people) -> str:
    sid = new_session(client, source, headers=people["owner"])
    for who, role in (("reader", "read"), ("writer", "write")):
        response = client.post(
            f"/api/sessions/{sid}/collaborators",
            json={"email": f"{who}@example.org", "role": role},
            headers=people["owner"],
        )
        assert response.status_code == 201
    return sid


@pytest.mark.parametrize(
    ("who", "title_status", "delete_status"),
    [
        ("owner", 200, 204),
        ("writer", 200, 403),
        ("reader", 403, 403),
        ("other", 404, 404),
        ("anonymous", 401, 401),
        ("staff", 200, 204),
    ],
)
def test_access_matrix(accounts_app, source, people, who, title_status, delete_status):
    client = accounts_app.test_client()
    sessions_dir = Path(accounts_app.extensions["regio.settings"]["SESSIONS"])
    sid = shared_session(client, source, people)
    before = snapshot(sessions_dir / sid)
    response = client.patch(f"/api/sessions/{sid}", json={"title": "new"}, headers=people[who])
    assert response.status_code == title_status, response.get_json()
    if title_status != 200:
        assert snapshot(sessions_dir / sid) == before
        assert "message" in response.get_json()
    before = snapshot(sessions_dir)
    response = client.delete(f"/api/sessions/{sid}", headers=people[who])
    assert response.status_code == delete_status
    if delete_status == 204:
        assert not (sessions_dir / sid).exists()
    else:
        assert snapshot(sessions_dir) == before
        assert "message" in response.get_json()


# ------------------------------------------------------------------------------- creation speed


@pytest.mark.parametrize(
    "ds9",
    [
        'icrs;circle(149.59,-11.06,60")',
        'icrs;annulus(0.001,89.99,120",240")',
        "icrs;ellipse(359.99,-45,0.5,0.2,30)",
        "icrs;box(10,20,1.5,0.3,75)",
        "galactic;circle(280.1,33.2,2)",
        "fk4;box(200,-80,3,4,0)",
    ],
)
def test_lone_shape_span_is_the_general_span(ds9):
    """The size check of one shape (computed from its sizes, without astropy's coordinates)
    says what indexer.shapes.span says."""
    from app import shapes
    from indexer.shapes import span

    regions = shapes.parse(ds9)
    assert shapes._lone_shape_span(regions) == pytest.approx(span(regions).deg, abs=1e-9)


def test_span_of_several_shapes_or_a_polygon_is_the_general_one():
    from app import shapes

    for ds9 in (
        "icrs;circle(10,20,0.1);circle(12,20,0.1)",
        "icrs;polygon(10,20,11,20,11,21)",
        "icrs;circle(10,20,0.5);-circle(10,20,0.1)",
    ):
        assert shapes._lone_shape_span(shapes.parse(ds9)) is None
    with pytest.raises(shapes.RegionError, match="across"):
        shapes.parse("icrs;circle(10,20,0.1);circle(30,20,0.1)", max_deg=5)
    with pytest.raises(shapes.RegionError, match="across"):
        shapes.parse("icrs;annulus(10,20,1,2.6)", max_deg=5)
    shapes.parse("icrs;annulus(10,20,1,2.4)", max_deg=5)
