"""Helpers shared by the science-script tests: build a run input as the runner does, run a script.

The input is made from the event-list headers (the instrument module's ``metadata``: XMM EPIC or
Chandra ACIS), the regions in ICRS (``app.shapes``) and, per observation, in the list's X/Y
(``app.shapes.to_physical_ds9`` with the list's column WCS), with the manifest's defaults filled
in (``app.catalog``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from app import shapes
from app.catalog import load_script
from indexer.instruments import chandra_acis, column_wcs, xmm_epic

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def index_metadata(hdul: fits.HDUList) -> dict[str, Any]:
    """The metadata row the index keeps for an event list (XMM EPIC or Chandra ACIS)."""
    primary, header = hdul[0].header, hdul["EVENTS"].header
    if str(header.get("TELESCOP", primary.get("TELESCOP", ""))).strip() == "CHANDRA":
        camera = chandra_acis.camera_from_sim_z(header.get("SIM_Z"))
        camera = camera or chandra_acis.camera_from_chips(hdul["EVENTS"].data["ccd_id"])
        return chandra_acis.metadata(primary, header, camera)
    meta = xmm_epic.metadata(primary, header, "events")
    meta["instrument"] = meta["camera"]
    return meta


def observation_entry(path: Path, source: str, background: str | None) -> dict[str, Any]:
    """One ``observations`` entry for an event list, with its regions in X/Y."""
    with fits.open(path) as hdul:
        meta = index_metadata(hdul)
        wcs = column_wcs(hdul["EVENTS"].header)
        n_events = int(hdul["EVENTS"].header["NAXIS2"])
    meta.update(
        n_events=n_events,
        path=str(path),
        size=path.stat().st_size,
        checksum=hashlib.sha256(path.read_bytes()).hexdigest(),
        coverage=1.0,
        offaxis_arcmin=0.0,
        regions_pixel={
            "source": shapes.to_physical_ds9(shapes.parse(source), wcs),
            "background": shapes.to_physical_ds9(shapes.parse(background), wcs)
            if background
            else None,
        },
    )
    return meta


def build_input(
    script: str,
    paths: list[Path],
    source: str,
    background: str | None,
    output_dir: Path,
    params: dict[str, Any] | None = None,
    extra_observations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run input of ``script`` as the runner writes it (manifest defaults filled in)."""
    manifest = load_script(SCRIPTS, script)
    values = {p.name: p.default for p in manifest.parameters if not p.required}
    for name, value in (params or {}).items():
        values[name] = next(p for p in manifest.parameters if p.name == name).check(value)

    def region(text: str | None):
        if not text:
            return None
        parsed = shapes.parse(text)
        return {"ds9": shapes.to_ds9(parsed), "shapes": shapes.to_json(parsed)}

    observations = [observation_entry(Path(p), source, background) for p in paths]
    return {
        "run_id": "testrun0001",
        "session_id": "testsession",
        "script": {"name": script, "version": manifest.version},
        "regio_version": "0.1.0",
        "params": values,
        "regions": {"source": region(source), "background": region(background)},
        "observations": observations + list(extra_observations or []),
        "output_dir": str(output_dir),
    }


def run_script(script: str, inp: dict[str, Any], run_dir: Path, env: dict | None = None):
    """Run ``scripts/<script>.py input.json`` by hand in ``run_dir``; returns the completed process."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "input.json"
    path.write_text(json.dumps(inp), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), str(path)],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def products(output_dir: Path) -> list[dict[str, Any]]:
    return json.loads((Path(output_dir) / "products.json").read_text())


def plain_count(path: Path, region_mask, camera: str, pi_max: int) -> int:
    """Independent count: read every column with astropy, standard filters, PI on the grid."""
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        flag = np.asarray(d["FLAG"], dtype=np.int64)
        pattern = np.asarray(d["PATTERN"])
        pi = np.asarray(d["PI"])
        x = np.asarray(d["X"], dtype=float)
        y = np.asarray(d["Y"], dtype=float)
    if camera == "EPN":
        ok = (flag == 0) & (pattern <= 4)
    else:
        ok = ((flag & 0x766BA000) == 0) & (pattern <= 12)
    ok &= (pi >= 0) & (pi <= pi_max)
    return int(np.count_nonzero(ok & region_mask(x, y)))


# --- Chandra ACIS: an independent selection (astropy, filters by hand) ---------------------

GOOD_GRADES = (0, 2, 3, 4, 6)  # ASCA grades CIAO keeps, written here by hand on purpose


def sky_wcs(header: fits.Header) -> WCS:
    """astropy's own WCS of the x/y columns (pixel-list keywords), 1-based column values."""
    names = [str(header[f"TTYPE{i}"]).lower() for i in range(1, header["TFIELDS"] + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, keysel=["pixel"], colsel=[names.index("x") + 1, names.index("y") + 1])


def standard_events(path: Path) -> Table:
    """The events of ``path`` passing grade 0,2,3,4,6 and status == 0 (when present), inside
    their chip's GTI (both ends included) and on PI 1..1024, with their sky position from
    astropy's column WCS: a table with time, pi, ccd_id, x, y, ra, dec."""
    with fits.open(path) as hdul:
        events = hdul["EVENTS"]
        d = events.data
        gtis = {
            int(h.header["CCD_ID"]): np.column_stack([h.data["START"], h.data["STOP"]])
            for h in hdul[1:]
            if h.name == "GTI"
        }
        ccd = np.asarray(d["ccd_id"])
        time = np.asarray(d["time"])
        keep = np.isin(d["grade"], GOOD_GRADES) & (d["pi"] >= 1) & (d["pi"] <= 1024)
        if "status" in d.columns.names:
            keep &= ~np.asarray(d["status"]).reshape(len(d), -1).any(axis=1)
        in_gti = np.zeros(len(d), dtype=bool)
        for chip, intervals in gtis.items():
            for start, stop in intervals:
                in_gti |= (ccd == chip) & (time >= start) & (time <= stop)
        keep &= in_gti
        out = Table({c: np.asarray(d[c])[keep] for c in ("time", "pi", "ccd_id", "x", "y")})
        out["ra"], out["dec"] = sky_wcs(events.header).all_pix2world(out["x"], out["y"], 1)
        return out


def independent_events(path: Path, ra: float, dec: float, r_in: float, r_out: float) -> Table:
    """:func:`standard_events` between ``r_in`` (excluded, when > 0) and ``r_out`` [deg] of
    (ra, dec) on the sky."""
    events = standard_events(path)
    sep = SkyCoord(events["ra"], events["dec"], unit="deg").separation(
        SkyCoord(ra, dec, unit="deg")
    )
    keep = (sep.deg > r_in) & (sep.deg <= r_out) if r_in > 0 else sep.deg <= r_out
    return events[keep]


# --- responses -----------------------------------------------------------------------------


def write_rmf(
    path: Path,
    n_channels: int,
    channel_ev: float,
    instrume: str,
    sigma: float = 0.05,
    energies: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """A small OGIP RMF (MATRIX + EBOUNDS) with a Gaussian redistribution (``sigma`` keV) on
    energies 0.1-12 keV (or the ``energies`` (lo, hi) grid of an ARF): test data for response
    libraries and fits, never a real response."""
    if energies is None:
        e_edges = np.linspace(0.1, 12.0, 600)
        e_lo, e_hi = e_edges[:-1], e_edges[1:]
    else:
        e_lo, e_hi = (np.asarray(e, dtype=float) for e in energies)
    ch_lo = np.arange(n_channels) * channel_ev / 1000.0
    ch_hi = ch_lo + channel_ev / 1000.0
    rows = []
    for lo, hi in zip(e_lo, e_hi, strict=True):
        centre = 0.5 * (lo + hi)
        weights = np.exp(-0.5 * ((0.5 * (ch_lo + ch_hi) - centre) / sigma) ** 2)
        on = np.flatnonzero(weights > 1e-4 * weights.max())
        w = weights[on] / weights.sum() * 0.9  # a detector efficiency of 90 %
        rows.append((int(on[0]), len(on), w.astype(np.float32)))
    matrix = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ENERG_LO", format="E", unit="keV", array=e_lo),
            fits.Column(name="ENERG_HI", format="E", unit="keV", array=e_hi),
            fits.Column(name="N_GRP", format="I", array=np.ones(len(rows), np.int16)),
            fits.Column(name="F_CHAN", format="1J", array=[r[0] for r in rows]),
            fits.Column(name="N_CHAN", format="1J", array=[r[1] for r in rows]),
            fits.Column(name="MATRIX", format="PE()", array=[r[2] for r in rows]),
        ],
        name="MATRIX",
    )
    ebounds = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="CHANNEL", format="J", array=np.arange(n_channels)),
            fits.Column(name="E_MIN", format="E", unit="keV", array=ch_lo),
            fits.Column(name="E_MAX", format="E", unit="keV", array=ch_hi),
        ],
        name="EBOUNDS",
    )
    for hdu, clas2 in ((matrix, "RSP_MATRIX"), (ebounds, "EBOUNDS")):
        h = hdu.header
        h.update(TELESCOP="XMM", INSTRUME=instrume, FILTER="NONE", CHANTYPE="PI")
        h.update(DETCHANS=n_channels, HDUCLASS="OGIP", HDUCLAS1="RESPONSE", HDUCLAS2=clas2)
        h.update(HDUVERS="1.3.0", TLMIN4=0)
    matrix.header["HDUCLAS3"] = "DETECTOR"
    matrix.header["LO_THRES"] = 1e-6
    fits.HDUList([fits.PrimaryHDU(), matrix, ebounds]).writeto(path, overwrite=True)
    return path


# --- flare screening, the SAS rule written independently -------------------------------------


def ccd_good_time(hdul: fits.HDUList, ccd: int) -> np.ndarray:
    """A CCD's good time: STDGTInn intersected with the GTI table its data-subspace block names
    (``kDSVAL1`` = the CCD, ``kDSREFi`` for ``DSTYPi = 'TIME'``), as (n, 2) intervals."""
    h = hdul["EVENTS"].header
    std = hdul[f"STDGTI{ccd:02d}"].data
    good = [(float(a), float(b)) for a, b in zip(std["START"], std["STOP"], strict=True)]
    types = {int(k[5:]): str(v).strip() for k, v in h.items() if k.startswith("DSTYP")}
    t = next((i for i, v in types.items() if v == "TIME"), None)
    if t is None:
        return np.array(good).reshape(-1, 2)
    for block in range(1, 100):
        prefix = "" if block == 1 else str(block)
        if f"{prefix}DSVAL1" not in h:
            break
        if int(str(h[f"{prefix}DSVAL1"]).split(":")[0]) == ccd:
            sel = hdul[str(h.get(f"{prefix}DSREF{t}", h[f"DSREF{t}"])).lstrip(":")].data
            out = []
            for a, b in good:
                for c, d in zip(sel["START"], sel["STOP"], strict=True):
                    lo, hi = max(a, c), min(b, d)
                    if hi > lo:
                        out.append((lo, hi))
            return np.array(out).reshape(-1, 2)
    return np.array(good).reshape(-1, 2)


def merge(intervals: np.ndarray) -> np.ndarray:
    out: list[list[float]] = []
    for a, b in sorted(map(tuple, np.asarray(intervals).reshape(-1, 2))):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        elif b > a:
            out.append([a, b])
    return np.array(out).reshape(-1, 2)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Seconds good in both interval lists."""
    total = 0.0
    for s1, e1 in merge(a):
        for s2, e2 in merge(b):
            total += max(0.0, min(e1, e2) - max(s1, s2))
    return total


def sas_flare_gti(path: Path, bin_size: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """The SAS thread's flare good time of an EPIC list, done by hand: evselect's rate curve of
    '#XMMEA_EM && (PI>10000) && (PATTERN==0)' (MOS; pn '#XMMEA_EP && (PI in [10000:12000]) &&
    (PATTERN==0)') with the XMMEA mask the list's header defines, 100 s bins from the start of
    the camera's first good time, RATE = COUNTS/100; tabgtigen 'RATE<=0.35' (pn 0.4).
    Returns (flare good intervals, camera good intervals)."""
    with fits.open(path) as hdul:
        h = hdul["EVENTS"].header
        camera = str(h["INSTRUME"]).strip()
        key = "XMMEA_EP" if camera == "EPN" else "XMMEA_EM"
        mask = int(str(h[key]).split("&")[1].split(")")[0].strip(), 16)
        d = hdul["EVENTS"].data
        ccds = sorted(int(x.name[6:]) for x in hdul if x.name.startswith("STDGTI"))
        camera_gti = merge(np.concatenate([ccd_good_time(hdul, c) for c in ccds]))
        pi, pattern, flag = d["PI"], d["PATTERN"], d["FLAG"].astype(np.int64)
        sel = (pi >= 10000) & (pi <= 12000) if camera == "EPN" else pi > 10000
        sel &= (pattern == 0) & ((flag & mask) == 0)
        times = np.asarray(d["TIME"][sel], dtype=float)
    start, stop = camera_gti[0, 0], camera_gti[-1, 1]
    n = int(np.ceil((stop - start) / bin_size))
    edges = start + bin_size * np.arange(n + 1)
    counts, _ = np.histogram(times, edges)
    limit = 0.4 if camera == "EPN" else 0.35
    ok = counts / bin_size <= limit
    return merge(np.column_stack([edges[:-1][ok], edges[1:][ok]])), camera_gti


def read_response(rmf_path: Path, arf_path: Path | None = None):
    """(energy lo, energy hi, dense matrix [n_energy, n_channel] x ARF) read with astropy alone."""
    with fits.open(rmf_path) as rmf:
        name = "SPECRESP MATRIX" if "SPECRESP MATRIX" in rmf else "MATRIX"
        m = rmf[name].data
        n_chan = int(rmf["EBOUNDS"].header["DETCHANS"])
        first = int(rmf["EBOUNDS"].data["CHANNEL"][0])
        matrix = np.zeros((len(m), n_chan))
        for i, row in enumerate(m):
            fch, nch = np.atleast_1d(row["F_CHAN"]), np.atleast_1d(row["N_CHAN"])
            values, k = np.asarray(row["MATRIX"], float), 0
            for f, n in zip(fch, nch, strict=True):
                matrix[i, f - first : f - first + n] = values[k : k + n]
                k += n
        lo, hi = np.asarray(m["ENERG_LO"], float), np.asarray(m["ENERG_HI"], float)
    if arf_path is not None:
        with fits.open(arf_path) as arf:
            matrix = matrix * np.asarray(arf["SPECRESP"].data["SPECRESP"], float)[:, None]
    return lo, hi, matrix
