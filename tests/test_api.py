"""The JSON API end to end: sessions, coverage, selection, runs on a real rq worker, logs, SSE,
products, bundle; and every kind of bad input gets a clear 4xx and changes nothing stored."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from app.openapi import document
from tests.conftest import ROOT

SCRIPTS = ROOT / "tests" / "scripts"


def source_of(truth, kind="point", min_counts=200):
    """A bright injected source of the sample archive, and the observations that see it."""
    for src in truth["sources"]:
        seen = {
            obsid
            for obsid, cams in src["expected"].items()
            if any(c["counts_r30"] > min_counts for c in cams.values())
        }
        if src["kind"] == kind and seen:
            return src, seen
    raise AssertionError("no bright source in the sample archive")


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "regio.db"
    }


def circle(src, radius_arcsec=30):
    return f'icrs;circle({src["ra"]},{src["dec"]},{radius_arcsec}")'


def annulus(src):
    return f'icrs;annulus({src["ra"]},{src["dec"]},60",120")'


def new_session(client, truth, **extra):
    src, seen = source_of(truth)
    body = {"source": circle(src), "background": annulus(src), **extra}
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json(), src, seen


def wait_run(client, run_id, phases=("COMPLETED", "ERROR", "ABORTED"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").get_json()
        if run["phase"] in phases:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['phase']} after {timeout} s: {run}")


# ------------------------------------------------------------------------------ sessions


def test_instruments_describe_missions_and_cameras(client):
    instruments = client.get("/api/instruments").get_json()
    by_key = {i["key"]: i for i in instruments}
    assert by_key["xmm-epic"]["mission"] == "XMM"
    assert [c["name"] for c in by_key["xmm-epic"]["cameras"]] == ["EMOS1", "EMOS2", "EPN"]
    assert {c["name"] for c in by_key["chandra-acis"]["cameras"]} == {"ACIS-I", "ACIS-S"}
    assert "exposure-map" in by_key["xmm-epic"]["kinds"]


def test_a_region_on_a_shared_field_finds_both_missions(client, truth):
    """An ACIS observation of the demo archive sits on an XMM field: one region finds both."""
    acis = next(o for o in truth["chandra"]["observations"] if o["field"] == "CL0958")
    body = {"source": f'icrs;circle({acis["ra_pnt"]},{acis["dec_pnt"]},60")'}
    session = client.post("/api/sessions", json=body).get_json()
    missions = {r["mission"] for r in session["coverage"]}
    assert missions == {"XMM", "CHANDRA"}
    row = next(r for r in session["coverage"] if r["mission"] == "CHANDRA")
    assert (row["instrument"], row["camera"], row["obsid"]) == (
        "ACIS",
        acis["camera"],
        acis["obsid"],
    )
    moc = client.get(f"/api/exposures/{row['exposure_id']}/moc")
    assert moc.status_code == 200 and moc.get_json()
    assert client.get("/api/exposures/CHANDRA:99999:ACIS-I/moc").status_code == 404


def test_scripts_are_offered_and_launched_only_on_data_they_accept(client, truth, env):
    acis = next(o for o in truth["chandra"]["observations"] if o["field"] == "CL0958")
    body = {"source": f'icrs;circle({acis["ra_pnt"]},{acis["dec_pnt"]},60")'}
    session = client.post("/api/sessions", json=body).get_json()
    url, sid = session["url"], session["id"]
    chandra = [r["exposure_id"] for r in session["coverage"] if r["mission"] == "CHANDRA"]
    xmm = [r["exposure_id"] for r in session["coverage"] if r["mission"] == "XMM"]

    def offered() -> set[str]:
        return {s["name"] for s in client.get(f"/api/scripts?session={sid}").get_json()}

    everything = {s["name"] for s in client.get("/api/scripts").get_json()}
    assert "xmm_only" in everything and offered() == everything - {"xmm_only"}  # mixed
    client.put(f"{url}/selection", json={"exposures": xmm})
    assert "xmm_only" in offered()
    client.put(f"{url}/selection", json={"exposures": chandra})
    assert "xmm_only" not in offered() and "stages" in offered()
    before = snapshot(Path(env["SESSIONS"]))
    refused = client.post(f"{url}/runs", json={"script": "xmm_only"})
    assert refused.status_code == 400
    message = refused.get_json()["message"]
    assert "does not accept CHANDRA" in message and "XMM/EPIC" in message
    assert snapshot(Path(env["SESSIONS"])) == before  # nothing stored, nothing queued
    assert client.get(f"{url}/runs").get_json() == []
    assert client.get("/api/scripts?session=nosuchsession1").status_code == 404


def test_the_api_never_tells_where_files_lie_on_the_server(client, truth, env):
    """Exposure rows keep the file's path in the index and the session folder (launching needs
    it) but the API answers (observations, a session's coverage) carry no server path."""
    session, _, _ = new_session(client, truth)
    answers = {
        "observations": client.get("/api/observations").get_json(),
        "created": session["coverage"],
        "session": client.get(f"/api/sessions/{session['id']}").get_json()["coverage"],
    }
    for name, rows in answers.items():
        assert rows, name
        for row in rows:
            assert not {"path", "moc_file"} & set(row), (name, row)
            assert "exposure_id" in row and "mission" in row
    text = client.get(f"/api/sessions/{session['id']}").get_data(as_text=True)
    assert str(env["INDEX"]) not in text and str(env["SESSIONS"]) not in text
    stored = json.loads((Path(env["SESSIONS"]) / session["id"] / "coverage.json").read_text())
    assert stored and all("path" in row for row in stored)


def test_create_session_finds_the_covering_observations(client, truth):
    session, src, seen = new_session(client, truth)
    covering = {(r["obsid"], r["camera"]) for r in session["coverage"]}
    for obsid in seen:
        cams = truth["sources"][truth["sources"].index(src)]["expected"][obsid]
        for camera, expected in cams.items():
            if expected["counts_r30"] > 200:
                assert (obsid, camera) in covering
    row = session["coverage"][0]
    for key in ("exposure_id", "mission", "instrument", "kind", "obsid", "camera", "object",
                "date_obs", "exposure", "filter", "submode", "coverage", "offaxis_arcmin",
                "background_coverage"):  # fmt: skip
        assert key in row, key
    assert row["exposure_id"] == f"{row['mission']}:{row['obsid']}:{row['camera']}"
    # first selection: the data of the instrument covering the region best (one script fits)
    best = max(session["coverage"], key=lambda r: r["coverage"])
    assert session["selection"]["exposures"] == [
        r["exposure_id"]
        for r in session["coverage"]
        if (r["mission"], r["instrument"]) == (best["mission"], best["instrument"])
        and r["kind"] == "events"
    ]
    assert {r["mission"] for r in session["coverage"]} == {"XMM", "CHANDRA"}
    again = client.get(session["url"]).get_json()
    assert again["regions"]["source"][0]["type"] == "circle"
    assert again["regions"]["background"][0]["type"] == "annulus"
    assert "circle(" in again["regions"]["source_ds9"]


def test_viewer_json_shapes_are_accepted(client, truth):
    src, _ = source_of(truth)
    body = {
        "source": [{"type": "circle", "ra": src["ra"], "dec": src["dec"], "radius": 30 / 3600}],
        "background": [
            {"type": "annulus", "ra": src["ra"], "dec": src["dec"], "inner": 0.02, "outer": 0.04}
        ],
    }
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201
    assert response.get_json()["coverage"]


def test_ds9_region_files_can_be_uploaded(client, truth, env):
    src, _ = source_of(truth)
    files = {
        "source": (
            io.BytesIO(f"# Region file format: DS9\nfk5\n{circle(src)[5:]}\n".encode()),
            "src.reg",
        ),
        "background": (io.BytesIO(annulus(src).encode()), "bkg.reg"),
        "title": "uploaded",
    }
    response = client.post("/api/sessions", data=files, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    session = response.get_json()
    assert session["title"] == "uploaded" and session["coverage"]
    before = snapshot(Path(env["SESSIONS"]))
    bad = {"source": (io.BytesIO(b"fk5\ncircle(1,2"), "bad.reg")}
    response = client.put(f"{session['url']}/regions", data=bad, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "source region" in response.get_json()["message"]
    binary = {"source": (io.BytesIO(b"\xff\xfe\x00"), "x.reg")}
    response = client.put(
        f"{session['url']}/regions", data=binary, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    big = {"source": (io.BytesIO(b"#" * 300_000), "big.reg")}
    response = client.put(f"{session['url']}/regions", data=big, content_type="multipart/form-data")
    assert response.status_code == 413
    assert snapshot(Path(env["SESSIONS"])) == before


def test_selection_and_regions_update(client, truth):
    session, src, _ = new_session(client, truth)
    first = session["coverage"][0]
    url = session["url"]
    response = client.put(f"{url}/selection", json={"exposures": [first["exposure_id"]] * 2})
    assert response.status_code == 200
    assert response.get_json()["selection"]["exposures"] == [first["exposure_id"]]
    # the older form, (obsid, camera) pairs, still works when each pair is unambiguous
    pick = [{"obsid": first["obsid"], "camera": first["camera"]}]
    response = client.put(f"{url}/selection", json={"observations": pick})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["selection"]["exposures"] == [first["exposure_id"]]
    far = 'icrs;circle(10.0,-70.0,30")'
    response = client.put(f"{url}/regions", json={"source": far})
    assert response.status_code == 200
    body = response.get_json()
    assert body["coverage"] == [] and body["selection"]["exposures"] == []
    assert body["regions"]["background"] is None
    response = client.put(f"{url}/view", json={"ra": 10.0, "dec": -70.0, "fov": 0.5})
    assert response.get_json()["view"] == {"ra": 10.0, "dec": -70.0, "fov": 0.5}
    assert [s["id"] for s in client.get("/api/sessions").get_json()] == [session["id"]]


BAD_SESSION_BODIES = [
    ({"source": ""}, 400, "'source' is required"),
    ({"background": 'icrs;circle(1,2,3")'}, 400, "'source' is required"),
    ({"source": "icrs;circle(1,2"}, 400, "source region: cannot parse DS9 region"),
    ({"source": 'icrs;circle(1,2,0")'}, 400, "source region"),
    ({"source": "circle(100,100,20)"}, 400, "no coordinate system"),
    ({"source": [{"type": "polygon", "vertices": [[1, 2], [2, 3]]}]}, 400, "at least 3 vertices"),
    ({"source": 'icrs;circle(1,2,3")', "background": "nonsense"}, 400, "background region"),
    ({"source": 'icrs;circle(1,2,3")', "colour": "red"}, 400, "unknown field(s): colour"),
    ({"source": 'icrs;circle(1,2,3")', "title": 7}, 400, "'title' must be text"),
    ([1, 2, 3], 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_SESSION_BODIES)
def test_bad_session_bodies_are_refused_and_nothing_is_stored(client, env, body, status, message):
    response = client.post("/api/sessions", json=body)
    assert response.status_code == status
    assert message in response.get_json()["message"]
    assert snapshot(Path(env["SESSIONS"])) == {}


def test_bad_bodies_on_an_existing_session_change_nothing(client, env, truth):
    session, _, _ = new_session(client, truth)
    url = session["url"]
    before = snapshot(Path(env["SESSIONS"]))
    cases = [
        ("put", f"{url}/regions", {"source": "icrs;box(1,2"}, 400),
        ("put", f"{url}/regions", {"source": []}, 400),
        ("put", f"{url}/selection", {"observations": [{"obsid": "x", "camera": "EPN"}]}, 400),
        ("put", f"{url}/selection", {"observations": [{"obsid": ["x"], "camera": "EPN"}]}, 400),
        ("put", f"{url}/selection", {"observations": "all"}, 400),
        ("put", f"{url}/selection", {"exposures": ["XMM:0000000000:EPN"]}, 400),
        ("put", f"{url}/selection", {"exposures": [["XMM"]]}, 400),
        ("put", f"{url}/selection", {"exposures": "all"}, 400),
        ("put", f"{url}/selection", {"exposures": [], "observations": []}, 400),
        ("put", f"{url}/selection", {"obs": []}, 400),
        ("put", f"{url}/view", {"ra": 400, "dec": 0, "fov": 1}, 400),
        ("post", f"{url}/runs", {"script": "no-such-script"}, 400),
        ("post", f"{url}/runs", {"script": "stages", "params": {"steps": "three"}}, 400),
        ("post", f"{url}/runs", {"script": "stages", "params": {"steps": 0}}, 400),
        ("post", f"{url}/runs", {"script": "stages", "params": {"nope": 1}}, 400),
        ("post", f"{url}/runs", {"script": "stages", "extra": 1}, 400),
    ]
    for method, path, body, status in cases:
        response = getattr(client, method)(path, json=body)
        assert response.status_code == status, (path, body, response.get_json())
        assert response.get_json()["message"], (path, body)
    response = client.put(f"{url}/regions", data="source=x", content_type="text/plain")
    assert response.status_code == 415
    response = client.put(f"{url}/regions", data="{not json", content_type="application/json")
    assert response.status_code == 400
    huge = json.dumps({"source": "icrs;" + 'circle(1,2,3");' * 200_000})
    response = client.put(f"{url}/regions", data=huge, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["status"] == 413
    assert snapshot(Path(env["SESSIONS"])) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/sessions/nosuchsession1",
        "/api/sessions/..%2F..%2Fetc",
        "/api/runs/nosuchrun123",
        "/api/runs/nosuchrun123/log",
        "/api/runs/nosuchrun123/products",
        "/api/runs/nosuchrun123/bundle.zip",
        "/api/sessions/nosuchsession1/runs",
    ],
)
def test_unknown_ids_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["status"] == 404


def test_a_run_without_selection_is_refused(client, truth, env):
    session, _, _ = new_session(client, truth)
    client.put(f"{session['url']}/selection", json={"exposures": []})
    response = client.post(f"{session['url']}/runs", json={"script": "stages"})
    assert response.status_code == 400
    assert "no observation is selected" in response.get_json()["message"]


# ----------------------------------------------------------------------------------- runs


def test_scripts_are_listed_with_their_parameters(client):
    scripts = {s["name"]: s for s in client.get("/api/scripts").get_json()}
    assert "stages" in scripts and "broken" not in scripts
    params = {p["name"]: p for p in scripts["stages"]["parameters"]}
    assert params["steps"]["type"] == "int" and params["steps"]["default"] == 3


def test_run_lifecycle_log_products_and_bundle(client, truth, worker):
    session, _, _ = new_session(client, truth)
    response = client.post(
        f"{session['url']}/runs", json={"script": "stages", "params": {"steps": 2, "plot": True}}
    )
    assert response.status_code == 202, response.get_json()
    run = response.get_json()
    assert run["phase"] == "QUEUED" and response.headers["Location"].endswith(run["id"])
    run = wait_run(client, run["id"])
    assert run["phase"] == "COMPLETED", run
    assert [s["name"] for s in run["stages"]][:3] == ["prepare", "work", "finish"] or run["stages"]

    log = client.get(f"/api/runs/{run['id']}/log")
    assert "[STAGE]" in log.get_data(as_text=True)
    offset = int(log.headers["X-Next-Offset"])
    tail = client.get(f"/api/runs/{run['id']}/log?offset={offset}")
    assert tail.get_data(as_text=True) == ""
    assert client.get(f"/api/runs/{run['id']}/log?offset=-3").status_code == 400

    products = client.get(f"/api/runs/{run['id']}/products").get_json()
    assert products
    first = products[0]
    with client.get(first["url"]) as download:
        assert download.status_code == 200 and len(download.data) == first["size"]
    with client.get(f"/api/runs/{run['id']}/products/no-such-file.fits") as missing:
        assert missing.status_code == 404 and "no product" in missing.get_json()["message"]
    for bad in ("../input.json", "..%2Finput.json", "%2Fetc%2Fpasswd", "output/../../input.json"):
        with client.get(f"/api/runs/{run['id']}/products/{bad}") as response:
            # refused, not found, or redirected to a normalised path that is then not found
            assert response.status_code in (308, 400, 404), bad
            assert b"run_id" not in response.data and b"root:" not in response.data
    with client.get(f"/api/runs/{run['id']}/bundle.zip") as bundle:
        names = zipfile.ZipFile(io.BytesIO(bundle.data)).namelist()
    assert any(n.endswith("log.txt") for n in names)
    assert any(n.endswith("regions/source.reg") for n in names)
    assert any(n.endswith("provenance.json") for n in names)
    assert any(n.endswith(first["file"]) for n in names)

    data = json.loads(
        Path(env_sessions(client), session["id"], "runs", run["id"], "input.json").read_text()
    )
    obs = data["observations"][0]
    assert obs["regions_pixel"]["source"].splitlines()[1] == "physical"
    assert data["regions"]["source"]["shapes"][0]["type"] == "circle"

    listed = client.get(f"{session['url']}/runs").get_json()
    assert [r["id"] for r in listed] == [run["id"]]
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 409


def env_sessions(client) -> Path:
    return Path(client.application.extensions["regio.settings"]["SESSIONS"])


def read_events(response, until: str, limit: int = 10_000):
    """(event, id, data) tuples from an SSE response, up to the first ``until`` event."""
    events, current = [], {}
    for chunk in response.response:
        for line in chunk.decode().split("\n"):
            if line.startswith(("event:", "id:", "data:")):
                key, _, value = line.partition(":")
                current.setdefault(key, []).append(value.strip())
            elif line == "" and current:
                event = (
                    current["event"][0],
                    (current.get("id") or [None])[0],
                    "\n".join(current.get("data", [])),
                )
                events.append(event)
                current = {}
                if event[0] == until or len(events) >= limit:
                    return events
    return events


def test_event_stream_delivers_lines_live_and_resumes(client, truth, worker):
    session, _, _ = new_session(client, truth)
    run = client.post(
        f"{session['url']}/runs", json={"script": "stages", "params": {"steps": 3, "sleep": 0.3}}
    ).get_json()
    stream = client.get(f"/api/runs/{run['id']}/events", buffered=False)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    first = read_events(stream, until="log", limit=50)
    phase_then = client.get(f"/api/runs/{run['id']}").get_json()["phase"]
    stream.close()
    log_events = [e for e in first if e[0] == "log"]
    assert log_events, first
    assert phase_then in ("QUEUED", "EXECUTING"), (
        "the first line arrived while the run was going on"
    )

    resume_id = log_events[-1][1]
    again = client.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": resume_id})
    rest = read_events(again, until="end")
    again.close()
    assert rest[-1][0] == "end"
    assert json.loads(rest[-1][2])["phase"] == "COMPLETED"
    lines = [e[2] for e in log_events] + [e[2] for e in rest if e[0] == "log"]
    full = client.get(f"/api/runs/{run['id']}/log").get_data(as_text=True)
    assert lines == full.splitlines(), "resuming neither loses nor repeats a line"
    states = [json.loads(e[2]) for e in rest if e[0] == "state"]
    assert states and states[0]["phase"] in ("EXECUTING", "COMPLETED")


def test_cancel_a_running_run_over_http(client, truth, worker):
    session, _, _ = new_session(client, truth)
    run = client.post(
        f"{session['url']}/runs", json={"script": "stages", "params": {"steps": 100, "sleep": 0.5}}
    ).get_json()
    wait_run(client, run["id"], phases=("EXECUTING",))
    response = client.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code in (200, 202)
    assert wait_run(client, run["id"])["phase"] == "ABORTED"


# -------------------------------------------------------------------------------- openapi


def test_every_api_route_is_in_the_openapi_document(client):
    app = client.application
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((path, method.lower()))
    paths = document("x")["paths"].items()
    documented = {(p, m) for p, ops in paths for m in ops if m != "parameters"}
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented routes the app does not have"
    served = client.get("/api/openapi.json").get_json()
    assert served["openapi"].startswith("3.")


def test_the_openapi_document_is_valid():
    from openapi_spec_validator import validate

    validate(document("0.0.0"))


def test_wsgi_module_imports(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(f"REGIO_{key}", str(value))
    done = subprocess.run(
        [sys.executable, "-c", "import wsgi; print(wsgi.app.name)"],
        cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
