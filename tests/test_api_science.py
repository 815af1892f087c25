"""The science scripts through the whole service path: API -> input file with pixel regions ->
real rq worker -> script -> products, on the real XMM data set."""

from __future__ import annotations

import time

import pytest
from astropy.io import fits

from app import create_app
from tests.conftest import ROOT, app_settings

SOURCE = 'icrs;circle(149.59,-11.06,60")'
BACKGROUND = 'icrs;annulus(149.59,-11.06,180",300")'


@pytest.fixture(scope="module")
def real_index(real_data, tmp_path_factory):
    from indexer.build import build_index

    index = tmp_path_factory.mktemp("real-index")
    build_index([real_data], index)
    return index


@pytest.fixture
def env(tmp_path, real_index, redis_url):
    return app_settings(tmp_path, real_index, redis_url, ROOT / "scripts")


def wait_run(client, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").get_json()
        if run["phase"] in ("COMPLETED", "ERROR", "ABORTED"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run still {run['phase']}")


def test_spectra_of_the_cluster_through_the_service(env, worker):
    client = create_app(env).test_client()
    session = client.post("/api/sessions", json={"source": SOURCE, "background": BACKGROUND})
    assert session.status_code == 201
    session = session.get_json()
    cameras = {(r["obsid"], r["camera"]) for r in session["coverage"]}
    assert len(cameras) == 9  # 3 epochs x MOS1, MOS2, pn (pn from its exposure map)
    maps = [r["exposure_id"] for r in session["coverage"] if r["kind"] == "exposure-map"]
    assert len(maps) == 3 and not set(maps) & set(session["selection"]["exposures"])
    # an exposure map has no events: the spectra script refuses it by name, nothing is queued
    everything = [r["exposure_id"] for r in session["coverage"]]
    client.put(f"{session['url']}/selection", json={"exposures": everything})
    refused = client.post(f"{session['url']}/runs", json={"script": "generate_spectra"})
    assert refused.status_code == 400
    assert "does not accept" in refused.get_json()["message"]
    assert "exposure-map" in refused.get_json()["message"]
    assert client.get(f"{session['url']}/runs").get_json() == []
    offered = [s["name"] for s in client.get(f"/api/scripts?session={session['id']}").get_json()]
    assert "generate_spectra" not in offered
    events = [e for e in everything if e not in maps]
    client.put(f"{session['url']}/selection", json={"exposures": events})
    offered = [s["name"] for s in client.get(f"/api/scripts?session={session['id']}").get_json()]
    assert "generate_spectra" in offered
    response = client.post(
        f"{session['url']}/runs", json={"script": "generate_spectra", "params": {}}
    )
    assert response.status_code == 202, response.get_json()
    run = wait_run(client, response.get_json()["id"])
    log = client.get(f"/api/runs/{run['id']}/log").get_data(as_text=True)
    assert run["phase"] == "COMPLETED", log[-3000:]
    assert "[STAGE]" in log

    products = client.get(f"/api/runs/{run['id']}/products").get_json()
    spectra = [p for p in products if p["kind"] == "spectrum"]
    observed = {(p["obsid"], p["camera"]) for p in spectra if p.get("obsid")}
    mos = {(o, c) for o, c in cameras if c != "EPN"}
    assert mos <= observed, "a spectrum for every selected MOS event list"
    first = next(p for p in spectra if p.get("obsid"))
    with client.get(first["url"]) as download:
        assert download.status_code == 200
        path = env["SESSIONS"] / "download.pha"
        path.write_bytes(download.data)
    plot = client.get(f"/runs/{run['id']}/plot/{first['file']}").get_json()
    assert plot["kind"] == "spectrum" and len(plot["x"]) == len(plot["series"]["source"]) > 10
    assert "background" in plot["series"], "the BACKFILE is found and scaled"
    assert client.get(f"/runs/{run['id']}/plot/provenance.json").status_code == 400
    assert client.get(f"/runs/{run['id']}/plot/no-such.pha").status_code == 404
    with fits.open(path) as hdul:
        header = hdul["SPECTRUM"].header
        assert header["HDUCLASS"] == "OGIP" and header["EXPOSURE"] > 0
        assert header["BACKSCAL"] > 0
        assert int(hdul["SPECTRUM"].data["COUNTS"].sum()) > 0


# --- Chandra ACIS through the service, on the demo archive ---------------------------------------


@pytest.fixture
def demo_env(tmp_path, sample_index, redis_url):
    return app_settings(tmp_path, sample_index, redis_url, ROOT / "scripts")


def test_chandra_spectrum_of_a_demo_source_through_the_service(
    demo_env, sample_archive, tmp_path, redis_url
):
    """Region on an ACIS source -> only the Chandra scripts fit an ACIS selection -> the
    spectrum's counts equal an independent numpy count through the file's column WCS."""
    import json
    import subprocess

    import numpy as np

    from app import jobs
    from tests.science_helpers import independent_events

    truth = json.loads((sample_archive / "truth.json").read_text())
    obs = next(o for o in truth["chandra"]["observations"] if o["field"] == "CL0958")
    src = max((s for s in obs["sources"] if s["kind"] == "point"), key=lambda s: s["counts"])
    client = create_app(demo_env).test_client()
    region = f'icrs;circle({src["ra"]},{src["dec"]},5")'
    session = client.post("/api/sessions", json={"source": region}).get_json()
    acis = [r["exposure_id"] for r in session["coverage"] if r["mission"] == "CHANDRA"]
    assert acis == [f"CHANDRA:{obs['obsid']}:{obs['camera']}"]
    client.put(f"{session['url']}/selection", json={"exposures": acis})
    offered = {s["name"] for s in client.get(f"/api/scripts?session={session['id']}").get_json()}
    assert {"chandra_spectra", "chandra_lightcurves", "chandra_images"} <= offered
    assert not offered & {"generate_spectra", "generate_lightcurves", "generate_images"}
    refused = client.post(f"{session['url']}/runs", json={"script": "generate_spectra"})
    assert refused.status_code == 400 and "CHANDRA" in refused.get_json()["message"]

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("REGIO_")}
    env.update({f"REGIO_{k}": str(v) for k, v in demo_env.items()})
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            jobs.worker_command(redis_url, name=f"acis-{tmp_path.name}"),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        response = client.post(f"{session['url']}/runs", json={"script": "chandra_spectra"})
        assert response.status_code == 202, response.get_json()
        run = wait_run(client, response.get_json()["id"])
    finally:
        worker.terminate()
        worker.wait(30)
    log_text = client.get(f"/api/runs/{run['id']}/log").get_data(as_text=True)
    assert run["phase"] == "COMPLETED", log_text[-3000:]
    products = client.get(f"/api/runs/{run['id']}/products").get_json()
    spectrum = next(p for p in products if p["kind"] == "spectrum" and "src" in p["file"])
    assert (spectrum["obsid"], spectrum["camera"]) == (obs["obsid"], obs["camera"])
    with client.get(spectrum["url"]) as download:
        (tmp_path / "src.pha").write_bytes(download.data)
    with fits.open(tmp_path / "src.pha") as hdul:
        counts = np.asarray(hdul["SPECTRUM"].data["COUNTS"])
        assert hdul["SPECTRUM"].header["TELESCOP"] == "CHANDRA"
    selected = independent_events(sample_archive / "chandra" / obs["path"], src["ra"], src["dec"],
                                  0.0, 5 / 3600)  # fmt: skip
    assert len(selected) > 20
    assert np.array_equal(counts, np.bincount(selected["pi"], minlength=1025)[1:])
