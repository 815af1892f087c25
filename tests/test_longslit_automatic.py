"""A long-slit science frame reduces itself (issue #14 item 5, with the ingest of #13): the
calibrations of the night are in the archive, a standing request covers the target, and the
science frame landing in the archive is indexed, matched, reduced on a real worker and its 1-D
spectrum listed, without a click."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

from app import create_app, runs
from indexer.footprint import read_footprint
from tests.conftest import ROOT, app_settings, wait_for
from tests.test_automation import child_env

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path, redis_url):
    archive = tmp_path / "archive"
    archive.mkdir()
    return {
        **app_settings(tmp_path, tmp_path / "index", redis_url, ROOT / "scripts"),
        "ARCHIVE": archive,
        "INGEST_SETTLE": 1,
        "INGEST_RESCAN": 5,
    }


def test_a_kast_science_frame_is_reduced_when_it_lands(env, worker, longslit_data, tmp_path):
    night = longslit_data / "kast_blue_2015-05-20"
    science = night / "b27.fits.gz"
    folder = Path(env["ARCHIVE"]) / "kast" / "2015-05-20"
    shutil.copytree(night, folder, ignore=shutil.ignore_patterns("b27.fits.gz"))
    log_path = tmp_path / "ingest.log"
    with open(log_path, "wb") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "app", "ingest"], cwd=ROOT, env=child_env(env),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: (Path(env["INDEX"]) / "manifest.json").exists(), "the first index")
        client = create_app(env).test_client()
        meta = read_footprint(science).meta  # where the slit will be, from the frame's header
        region = f'icrs;circle({meta["ra_pnt"]},{meta["dec_pnt"]},3")'
        session = client.post("/api/sessions", json={"source": region}).get_json()
        assert session["coverage"] == []  # the standard b24 points elsewhere
        made = client.post(
            f"/api/sessions/{session['id']}/standing-requests",
            json={
                "title": "reduce my target when it is observed",
                "instruments": ["SHANE/KAST"],
                "scripts": [{"script": "reduce_longslit", "params": {}}],
                "scope": "new",
            },
        )
        assert made.status_code == 201, made.get_json()
        landed = time.monotonic()
        shutil.copy(science, folder / "incoming.tmp")
        os.rename(folder / "incoming.tmp", folder / science.name)

        def ended():
            page = client.get("/api/runs?trigger=standing").get_json()
            done = [r for r in page["runs"] if r["phase"] in runs.TERMINAL]
            return done[0] if done else None

        run = wait_for(ended, "the reduction started by the standing request", timeout=300)
        latency = time.monotonic() - landed
        log = client.get(f"/api/runs/{run['id']}/log").get_data(as_text=True)
        assert run["phase"] == "COMPLETED", log[-3000:]
        assert run["trigger_detail"]["new_exposures"] == [f"SHANE:{meta['obsid']}:BLUE"]
        products = client.get(f"/api/runs/{run['id']}/products").get_json()
        spec = next(p for p in products if p["file"].endswith("_spec1d.fits"))
        with client.get(spec["url"]) as download:
            (tmp_path / "spec1d.fits").write_bytes(download.data)
        with fits.open(tmp_path / "spec1d.fits") as hdul:
            assert hdul["SPEC1D"].header.get("NLINES", hdul[0].header.get("NLINES", 0)) >= 12
        print(f"file landed -> reduced spectrum listed: {latency:.1f} s")
    finally:
        ingest.send_signal(signal.SIGTERM)
        try:
            ingest.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(ingest.pid, signal.SIGKILL)
            ingest.wait()
