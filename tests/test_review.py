"""The runs dashboard's API and the review of products: runs of every trigger across the
sessions a user may see, filters and pages, bad filters refused; marks (valid / rejected) and
comments that persist, are in the API and in the bundle, and follow ownership and sharing (a
read-only collaborator sees but does not mark)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from app import accounts, create_app, review, runs
from app.catalog import load_script
from app.plumbing import iso, now, parse_time
from tests.conftest import ROOT, app_settings

SCRIPTS = ROOT / "tests" / "scripts"
PASSWORD = "correct horse battery staple"
WHO = ("owner", "reader", "writer", "other", "staff")


@pytest.fixture
def env(tmp_path, sample_index, redis_url) -> dict[str, Any]:
    return {**app_settings(tmp_path, sample_index, redis_url, SCRIPTS), "AUTH": "accounts"}


def ended_run(
    settings: dict[str, Any],
    sid: str,
    *,
    script: str = "stages",
    trigger: str = "manual",
    phase: str = runs.COMPLETED,
    created: str | None = None,
    files: tuple[str, ...] = ("table.txt", "plot.png"),
    owner: str = "",
) -> runs.Run:
    """A run record with products in its folder, ended ``phase`` (no worker needed)."""
    db = runs.db_path(settings["SESSIONS"])
    run_id = runs.new_run_id()
    detail = {"kind": trigger.partition(":")[0]} if trigger != "manual" else None
    run = runs.create(
        db, settings["SESSIONS"] / sid / "runs" / run_id, run_id=run_id, session_id=sid,
        script=load_script(SCRIPTS, script), params={}, trigger=trigger, trigger_detail=detail,
        owner=owner,
    )  # fmt: skip
    entries = []
    for name in files:
        (run.path / runs.OUTPUT / name).write_text(f"{name}\n")
        entries.append({"file": name, "kind": "table", "description": name})
    (run.path / runs.OUTPUT / runs.PRODUCTS_MANIFEST).write_text(json.dumps(entries))
    with runs.connect(db) as conn:  # a chosen creation time, for the date filters
        if created:
            conn.execute("UPDATE runs SET created = ? WHERE id = ?", [created, run.id])
    if phase in runs.TERMINAL:
        runs.update(db, run.id, phase=runs.EXECUTING, started=created or run.created)
        ended = iso(parse_time(created or run.created).replace(microsecond=0)) if created else None
        run = runs.finish(db, run.id, phase, ended=ended or now())
    return runs.get(db, run.id)


@pytest.fixture
def world(env, sample_archive):
    """Users with tokens; the owner's session shared with a reader and a writer, and a read-only
    link; a second session of another user; ended runs of every trigger."""
    app = create_app(env)
    client = app.test_client()
    settings = app.extensions["regio.settings"]
    db = accounts.db_path(settings["SESSIONS"])
    people, ids = {}, {}
    for who in WHO:
        user = accounts.create_user(db, f"{who}@example.org", who.title(), PASSWORD,
                                    staff=who == "staff")  # fmt: skip
        ids[who] = user.id
        people[who] = {"Authorization": f"Token {accounts.create_token(db, user.id, 't')}"}
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    body = {"source": f'icrs;circle({src["ra"]},{src["dec"]},30")', "title": "Abell field"}
    sid = client.post("/api/sessions", json=body, headers=people["owner"]).get_json()["id"]
    other_sid = client.post("/api/sessions", json={**body, "title": "not yours"},
                            headers=people["other"]).get_json()["id"]  # fmt: skip
    for who, role in (("reader", "read"), ("writer", "write")):
        client.post(f"/api/sessions/{sid}/collaborators", headers=people["owner"],
                    json={"email": f"{who}@example.org", "role": role})  # fmt: skip
    link = client.post(f"/api/sessions/{sid}/share-links", headers=people["owner"]).get_json()
    people["link"] = {"X-Regio-Share": link["secret"]}
    people["anonymous"] = {}
    made = {
        "manual": ended_run(settings, sid, created="2025-03-01T10:00:00.000Z", owner=ids["owner"]),
        "standing": ended_run(settings, sid, trigger="standing:req000000001",
                              created="2025-03-02T10:00:00.000Z", owner=ids["owner"]),
        "schedule": ended_run(settings, sid, trigger="schedule:sch000000001", script="fails",
                              phase=runs.ERROR, created="2025-03-03T10:00:00.000Z",
                              owner=ids["owner"]),
        "running": ended_run(settings, sid, phase=runs.QUEUED, owner=ids["owner"]),
        "foreign": ended_run(settings, other_sid, created="2025-03-04T10:00:00.000Z",
                             owner=ids["other"]),
    }  # fmt: skip
    return {"client": client, "headers": people, "sid": sid, "other_sid": other_sid,
            "runs": made, "settings": settings}  # fmt: skip


def listed(world, who: str, query: str = "") -> dict[str, Any]:
    response = world["client"].get(f"/api/runs{query}", headers=world["headers"][who])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ------------------------------------------------------------------------------ the dashboard


def test_the_dashboard_lists_runs_of_every_trigger_newest_first(world):
    made = world["runs"]
    page = listed(world, "owner")
    ids = [r["id"] for r in page["runs"]]
    assert ids == [made[k].id for k in ("running", "schedule", "standing", "manual")]
    assert page["total"] == 4
    by_id = {r["id"]: r for r in page["runs"]}
    manual = by_id[made["manual"].id]
    assert manual["trigger"] == "manual" and manual["session_title"] == "Abell field"
    assert manual["products"] == {"count": 2, "valid": 0, "rejected": 0, "comments": 0}
    assert manual["duration"] == 0.0  # started and ended in the same second (set by the test)
    assert manual["links"]["page"] == f"/sessions/{world['sid']}?run={made['manual'].id}"
    assert manual["links"]["review"] == f"/api/runs/{made['manual'].id}/review"
    assert by_id[made["standing"].id]["trigger"] == "standing:req000000001"
    assert by_id[made["running"].id]["duration"] is None
    assert {"stages", "fails"} <= set(page["scripts"])
    assert {s["id"] for s in page["sessions"]} == {world["sid"]}

    # who sees what: collaborators and staff see the shared session's runs; others their own
    assert listed(world, "reader")["total"] == 4 and listed(world, "writer")["total"] == 4
    assert [r["id"] for r in listed(world, "other")["runs"]] == [made["foreign"].id]
    assert listed(world, "staff")["total"] == 5
    assert world["client"].get("/api/runs").status_code == 401
    assert world["client"].get(f"/api/runs?session={world['sid']}",
                               headers=world["headers"]["other"]).status_code == 404  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?trigger=manual", ["running", "manual"]),
        ("?trigger=standing", ["standing"]),
        ("?trigger=schedule", ["schedule"]),
        ("?trigger=standing:req000000001", ["standing"]),
        ("?trigger=standing:nothing", []),
        ("?phase=ERROR", ["schedule"]),
        ("?phase=QUEUED", ["running"]),
        ("?script=fails", ["schedule"]),
        ("?since=2025-03-02&until=2025-03-02", ["standing"]),
        ("?since=2025-03-02T12:00:00Z", ["running", "schedule"]),
        ("?until=2025-03-02", ["standing", "manual"]),
        ("?session={sid}&phase=COMPLETED", ["standing", "manual"]),
        ("?limit=2", ["running", "schedule"]),
        ("?limit=2&offset=2", ["standing", "manual"]),
    ],
)
def test_the_dashboard_filters(world, query, expected):
    page = listed(world, "owner", query.format(sid=world["sid"]))
    assert [r["id"] for r in page["runs"]] == [world["runs"][k].id for k in expected]
    if "limit" in query:
        assert page["total"] == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?phase=DONE", "'phase' must be one of"),
        ("?trigger=cron", "'trigger' must be"),
        ("?trigger=manual:x", "'trigger' must be"),
        ("?since=yesterday", "'since' must be a date"),
        ("?until=2025-13-01", "'until' must be a date"),
        ("?limit=-1", "'limit' must be a whole number"),
        ("?limit=0", "at least 1"),
        ("?offset=²", "'offset' must be a whole number"),
        ("?colour=red", "unknown filter(s): colour"),
        ("?script=" + "x" * 100, "too long"),
    ],
)
def test_bad_filters_get_a_clear_400(world, query, message):
    response = world["client"].get(f"/api/runs{query}", headers=world["headers"]["owner"])
    assert response.status_code == 400
    assert message in response.get_json()["message"]


# ---------------------------------------------------------------------- marks and comments


def mark(world, who, run, product="table.txt", value="valid"):
    return world["client"].put(
        f"/api/runs/{run.id}/review/marks", json={"product": product, "mark": value},
        headers=world["headers"][who],
    )  # fmt: skip


def comment(world, who, run, text="looks clean", product="table.txt"):
    return world["client"].post(
        f"/api/runs/{run.id}/review/comments", json={"product": product, "text": text},
        headers=world["headers"][who],
    )  # fmt: skip


def bundle_review(world, run) -> dict[str, Any]:
    with world["client"].get(f"/api/runs/{run.id}/bundle.zip",
                             headers=world["headers"]["owner"]) as response:  # fmt: skip
        assert response.status_code == 200
        data = response.data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/review.json"))
        assert name == f"{run.id}/review.json"
        return json.loads(zf.read(name))


def test_marks_and_comments_follow_ownership_and_sharing(world):
    run = world["runs"]["manual"]
    expected = {"owner": 200, "writer": 200, "staff": 200, "reader": 403, "other": 404,
                "link": 401, "anonymous": 401}  # fmt: skip
    for who, status in expected.items():
        assert mark(world, who, run).status_code == status, who
        assert comment(world, who, run).status_code == (201 if status == 200 else status), who
    # reading: the owner, collaborators (read or write), a share link and staff
    for who in ("owner", "reader", "writer", "link", "staff"):
        response = world["client"].get(f"/api/runs/{run.id}/review", headers=world["headers"][who])
        assert response.status_code == 200, who
        assert response.get_json()["can_review"] is (who in ("owner", "writer", "staff")), who
    assert world["client"].get(f"/api/runs/{run.id}/review",
                               headers=world["headers"]["other"]).status_code == 404  # fmt: skip

    data = world["client"].get(f"/api/runs/{run.id}/review",
                               headers=world["headers"]["reader"]).get_json()  # fmt: skip
    table = next(p for p in data["products"] if p["file"] == "table.txt")
    assert table["mark"]["mark"] == "valid" and table["mark"]["by_name"] == "Staff"
    assert [c["author_name"] for c in table["comments"]] == ["Owner", "Writer", "Staff"]
    assert all(c["text"] == "looks clean" and c["at"] for c in table["comments"])

    # only its author or the session's owner removes a comment
    writer_comment = table["comments"][1]["id"]
    url = f"/api/runs/{run.id}/review/comments/{writer_comment}"
    owner_comment = f"/api/runs/{run.id}/review/comments/{table['comments'][0]['id']}"
    assert (
        world["client"].delete(owner_comment, headers=world["headers"]["writer"]).status_code == 403
    )
    assert world["client"].delete(url, headers=world["headers"]["reader"]).status_code == 403
    assert world["client"].delete(url, headers=world["headers"]["writer"]).status_code == 204
    assert world["client"].delete(url, headers=world["headers"]["writer"]).status_code == 404


def test_marks_and_comments_persist_and_travel_in_the_bundle(world):
    run = world["runs"]["standing"]
    assert mark(world, "owner", run, "table.txt", "valid").status_code == 200
    assert mark(world, "writer", run, "plot.png", "rejected").status_code == 200
    assert comment(world, "writer", run, "a hot pixel at the centre", "plot.png").status_code == 201
    overall = world["client"].post(f"/api/runs/{run.id}/review/comments",
                                   json={"product": None, "text": "good night overall"},
                                   headers=world["headers"]["owner"])  # fmt: skip
    assert overall.status_code == 201 and overall.get_json()["product"] is None

    # a new app (another web process, a restart) reads the same
    again = create_app({k: v for k, v in world["settings"].items() if v is not None}).test_client()
    data = again.get(f"/api/runs/{run.id}/review", headers=world["headers"]["owner"]).get_json()
    marks = {p["file"]: p["mark"]["mark"] for p in data["products"] if p["mark"]}
    assert marks == {"table.txt": "valid", "plot.png": "rejected"}
    assert [c["text"] for c in data["comments"]] == ["good night overall"]
    page = listed(world, "owner", "?trigger=standing")
    assert page["runs"][0]["products"] == {"count": 2, "valid": 1, "rejected": 1, "comments": 2}

    saved = bundle_review(world, run)
    assert saved["run_id"] == run.id and saved["trigger"] == "standing:req000000001"
    assert saved["products"]["table.txt"]["mark"]["mark"] == "valid"
    assert saved["products"]["plot.png"]["mark"]["by_name"] == "Writer"
    assert [c["text"] for c in saved["products"]["plot.png"]["comments"]] == [
        "a hot pixel at the centre"
    ]
    assert [c["author_name"] for c in saved["comments"]] == ["Owner"]
    # clearing a mark reaches the bundle too; the products are still in it
    assert mark(world, "owner", run, "table.txt", None).get_json() == {
        "product": "table.txt", "mark": None,
    }  # fmt: skip
    assert "table.txt" not in bundle_review(world, run)["products"]
    with world["client"].get(f"/api/runs/{run.id}/bundle.zip",
                             headers=world["headers"]["owner"]) as response:  # fmt: skip
        data = response.data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert f"{run.id}/output/table.txt" in zf.namelist()
        assert f"{run.id}/regions/source.reg" in zf.namelist()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"product": "table.txt", "mark": "great"}, 400, "'mark' must be"),
        ({"product": "nope.fits", "mark": "valid"}, 404, "has no product"),
        ({"product": "../secret", "mark": "valid"}, 404, "has no product"),
        ({"product": 3, "mark": "valid"}, 400, "'product' must be"),
        ({"product": "table.txt"}, 400, "the body must be"),
        ({"product": "table.txt", "mark": "valid", "by": "x"}, 400, "the body must be"),
    ],
)
def test_bad_marks_are_refused_and_nothing_changes(world, body, status, message):
    run = world["runs"]["manual"]
    response = world["client"].put(f"/api/runs/{run.id}/review/marks", json=body,
                                   headers=world["headers"]["owner"])  # fmt: skip
    assert response.status_code == status
    assert message in response.get_json()["message"]
    data = world["client"].get(f"/api/runs/{run.id}/review",
                               headers=world["headers"]["owner"]).get_json()  # fmt: skip
    assert all(p["mark"] is None for p in data["products"]) and data["version"] == 0


def test_bad_comments_and_unfinished_runs_are_refused(world):
    run = world["runs"]["manual"]
    for text, fragment in (("", "1 to 4000"), ("x" * 4001, "1 to 4000"), (5, "1 to 4000"),
                           ("nul\x00", "control character")):  # fmt: skip
        response = comment(world, "owner", run, text)
        assert response.status_code == 400 and fragment in response.get_json()["message"]
    running = world["runs"]["running"]
    assert mark(world, "owner", running).status_code == 409
    assert comment(world, "owner", running).status_code == 409
    assert (
        world["client"]
        .get(f"/api/runs/{running.id}/review", headers=world["headers"]["owner"])
        .get_json()["can_review"]
        is False
    )
    assert review.version(review.db_path(world["settings"]["SESSIONS"]), run.id) == 0
