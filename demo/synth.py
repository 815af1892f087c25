"""Synthetic catalogue for scale tests and benchmarks: ``python -m indexer synth-catalog``.

Builds an index (same layout as ``indexer.build``, without event files or per-camera FITS MOCs)
of N observations x 3 EPIC cameras from nominal camera geometry: pointing + roll + CCD layout
(``demo.epic_geometry.ccd_polygons``, dead MOS1 CCDs removed by date), clipped by the circular field
of view, plus (``chandra``) Chandra ACIS-I exposures: the four 8.4' I-array chips in a 2 x 2
square with 18" gaps, rolled by a random roll (:func:`acis_i_mocs`), so benchmarks run on a
mixed-mission index. Rows have ``source = 'nominal'``.

Pointings are clustered as in a real archive (fractions of the observations):

- the first ``len(SPECIAL_FIELDS)`` pointings sit on fields that must keep working: across
  RA = 0/360 and within a degree of both poles;
- 40 % repeat an earlier pointing within ``REPEAT_OFFSET_ARCMIN`` with a new roll and date;
- 20 % scatter around famous fields (deep fields, Magellanic Clouds, Galactic centre, M31...);
- 15 % along the Galactic plane (|b| of a few degrees);
- the rest uniformly over the sky.

The MOCs are built vectorised: the CCD polygons of a camera go to ``MOC.from_polygons`` and the
field-of-view circles to ``MOC.from_cones`` ``CHUNK`` at a time (``n_threads`` threads), then one
union and one intersection per camera.

``--mocs N`` (:func:`mixed_catalog`) writes instead a mixed archive of about N footprints for
scale tests up to millions (``MIX``): XMM-like 30' fields with three cameras, rolled 16.9'
ACIS-I squares, 23.6' Swift-XRT circles, and 3.6 deg eROSITA-like survey tiles on a fixed grid,
pointed at shared targets of which the popular ones are observed again and again. Pointings are
drawn vectorised, footprints made ``CHUNK`` shapes per mocpy call, and rows written
``MIXED_CHUNK`` at a time, so memory stays bounded.

Both store their footprints as a build stores the files it read (``files`` rows, under
``store.SYNTHETIC_PREFIX`` paths that name no file, and ``exposures`` rows, with no MOC FITS
files), then write the MOC set with the build's own full path
(``indexer.build.rebuild_mocset``): later builds and appends treat them like indexed files.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from mocpy import MOC

from demo import epic_geometry as geometry
from indexer import mocset as mocsets
from indexer import store
from indexer.build import DB_NAME, MANIFEST, rebuild_mocset
from indexer.footprint import INDEX_DEPTH

#: (object, RA, Dec, scatter) [deg]: always the first pointings of a catalogue.
SPECIAL_FIELDS: list[tuple[str, float, float, float]] = [
    ("RA0-EQUATOR", 0.03, 0.5, 0.0),
    ("RA360-SOUTH", 359.93, -30.2, 0.0),
    ("NORTH-POLE", 45.0, 89.75, 0.0),
    ("SOUTH-POLE", 200.0, -89.6, 0.0),
]
#: (object, RA, Dec, scatter) [deg] of fields observed again and again.
FAMOUS_FIELDS: list[tuple[str, float, float, float]] = [
    ("LMC", 80.89, -69.76, 3.0),
    ("SMC", 13.19, -72.83, 1.5),
    ("GALACTIC-CENTRE", 266.42, -29.01, 1.0),
    ("M31", 10.68, 41.27, 1.0),
    ("CDF-S", 53.12, -27.81, 0.3),
    ("LOCKMAN-HOLE", 161.25, 57.35, 0.5),
    ("COSMOS", 150.12, 2.21, 0.7),
    ("XMM-LSS", 35.5, -4.8, 2.0),
    ("VIRGO", 187.7, 12.39, 2.0),
    ("COMA", 194.95, 27.98, 0.7),
    ("PERSEUS", 49.95, 41.51, 0.5),
    ("ORION", 83.82, -5.39, 0.7),
    ("CYGNUS", 305.0, 40.0, 3.0),
    ("ABELL2717", 0.8, -35.9, 0.5),
    ("NEP", 270.0, 66.56, 1.0),
]
FRACTIONS = {"repeat": 0.40, "famous": 0.20, "plane": 0.15}
REPEAT_OFFSET_ARCMIN: float = 3.0
#: Polygons (and cones) per mocpy call: mocpy 0.21's ``from_polygons`` slows down more than
#: linearly with the number of polygons per call (56,000 take 12x as long as 14,000).
CHUNK: int = 500
FIRST_DATE = date(2000, 2, 1)
LAST_DATE = date(2024, 12, 31)
FILTERS = ("Thin1", "Medium", "Thick")
SUBMODES = {
    "EMOS1": ("PrimeFullWindow", "PrimePartialW2"),
    "EMOS2": ("PrimeFullWindow", "PrimePartialW2"),
    "EPN": ("PrimeFullWindow", "PrimeFullWindowExtended", "PrimeLargeWindow"),
}


class SynthError(Exception):
    """A user error (e.g. the folder already holds an index)."""


def pointings(observations: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Clustered pointings: arrays ``ra``, ``dec``, ``pa`` [deg], ``date_obs`` (ISO), ``object``."""
    rng = np.random.default_rng(seed)
    n = observations
    ra = np.empty(n)
    dec = np.empty(n)
    names = np.empty(n, dtype=object)
    kinds = rng.choice(
        ["repeat", "famous", "plane", "sky"],
        size=n,
        p=[*FRACTIONS.values(), 1.0 - sum(FRACTIONS.values())],
    )
    plane = SkyCoord(
        l=rng.uniform(0, 360, n) * u.deg,
        b=np.clip(rng.normal(0, 2.0, n), -89, 89) * u.deg,
        frame="galactic",
    ).icrs
    sky_ra = rng.uniform(0, 360, n)
    sky_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    famous = rng.integers(0, len(FAMOUS_FIELDS), n)
    scatter = rng.normal(0, 1, (n, 2))
    offset_r = REPEAT_OFFSET_ARCMIN / 60 * np.sqrt(rng.uniform(0, 1, n))
    offset_pa = rng.uniform(0, 360, n)
    for i in range(n):
        kind = kinds[i]
        if i < len(SPECIAL_FIELDS):
            names[i], ra[i], dec[i], _ = SPECIAL_FIELDS[i]
        elif kind == "repeat":
            j = int(rng.integers(0, i))
            names[i] = names[j]
            ra[i], dec[i] = _offset(ra[j], dec[j], offset_r[i], offset_pa[i])
        elif kind == "famous":
            name, ra0, dec0, spread = FAMOUS_FIELDS[famous[i]]
            names[i] = name
            ra[i], dec[i] = _offset(ra0, dec0, spread * abs(scatter[i, 0]), scatter[i, 1] * 57.3)
        elif kind == "plane":
            names[i], ra[i], dec[i] = f"GPLANE-{i}", plane.ra.deg[i], plane.dec.deg[i]
        else:
            names[i], ra[i], dec[i] = f"FIELD-{i}", sky_ra[i], sky_dec[i]
    days = rng.integers(0, (LAST_DATE - FIRST_DATE).days, n)
    dates = np.array(
        [(FIRST_DATE + timedelta(days=int(d))).isoformat() + "T00:00:00" for d in days]
    )
    return {
        "ra": ra % 360.0,
        "dec": dec,
        "pa": rng.uniform(0, 360, n),
        "date_obs": dates,
        "object": names,
        "exposure": np.round(rng.lognormal(np.log(20_000), 0.7, n), 1),
        "filter": rng.choice(FILTERS, n),
    }


def _offset(ra: float, dec: float, distance: float, pa: float) -> tuple[float, float]:
    """The point ``distance`` [deg] from (ra, dec) [deg] at position angle ``pa`` [deg]."""
    d, p = np.radians(distance), np.radians(pa)
    dec0, ra0 = np.radians(dec), np.radians(ra)
    sin_dec = np.sin(dec0) * np.cos(d) + np.cos(dec0) * np.sin(d) * np.cos(p)
    dec1 = np.arcsin(np.clip(sin_dec, -1, 1))
    ra1 = ra0 + np.arctan2(np.sin(p) * np.sin(d) * np.cos(dec0), np.cos(d) - np.sin(dec0) * sin_dec)
    return float(np.degrees(ra1) % 360.0), float(np.degrees(dec1))


def camera_mocs(
    camera: str, plan: dict[str, np.ndarray], depth: int = INDEX_DEPTH, n_threads: int = 2
) -> list[MOC]:
    """Nominal footprints of one camera for every pointing: live CCDs clipped by the FOV."""
    polygons = []
    owner = []
    for i in range(len(plan["ra"])):
        live = geometry.live_ccds(camera, plan["date_obs"][i])
        corners = geometry.ccd_polygons(camera, plan["ra"][i], plan["dec"][i], plan["pa"][i], live)
        for poly in corners.values():
            polygons.extend([poly[:, 0], poly[:, 1]])
            owner.append(i)
    polygons = np.array(polygons)
    ccd_mocs = []
    for start in range(0, len(polygons), 2 * CHUNK):
        chunk = polygons[start : start + 2 * CHUNK]
        ccd_mocs.extend(MOC.from_polygons(chunk, max_depth=depth, n_threads=n_threads))
    fov = []
    radius = geometry.FOV_RADIUS_ARCMIN[camera] * u.arcmin
    for start in range(0, len(plan["ra"]), CHUNK):
        cut = slice(start, start + CHUNK)
        fov.extend(
            MOC.from_cones(
                plan["ra"][cut] * u.deg,
                plan["dec"][cut] * u.deg,
                radius=radius,
                max_depth=depth,
                n_threads=n_threads,
            )
        )
    bounds = np.searchsorted(owner, np.arange(len(plan["ra"]) + 1))
    out = []
    for i in range(len(plan["ra"])):
        parts = ccd_mocs[bounds[i] : bounds[i + 1]]
        out.append(parts[0].union(*parts[1:]).intersection(fov[i]))
    return out


#: ACIS-I chip side [arcmin] (1024 pixels of 0.492") and the gap between chips [arcmin].
ACIS_CHIP_ARCMIN: float = 1024 * 0.492 / 60.0
ACIS_GAP_ARCMIN: float = 18.0 / 60.0


def acis_i_polygons(ra: float, dec: float, roll: float) -> list[np.ndarray]:
    """Sky corners (``(4, 2)`` RA, Dec [deg]) of the four ACIS-I chips of a pointing."""
    out = []
    for cx in (-1, 1):
        for cy in (-1, 1):
            x0 = cx * (ACIS_GAP_ARCMIN / 2 + ACIS_CHIP_ARCMIN / 2)
            y0 = cy * (ACIS_GAP_ARCMIN / 2 + ACIS_CHIP_ARCMIN / 2)
            corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * ACIS_CHIP_ARCMIN / 2
            x, y = (corners + (x0, y0)).T / 60.0
            c, s_ = np.cos(np.radians(roll)), np.sin(np.radians(roll))
            xi, eta = x * c + y * s_, -x * s_ + y * c
            out.append(np.column_stack(geometry.tan_deproject(xi, eta, ra, dec)))
    return out


def acis_i_mocs(plan: dict[str, np.ndarray], depth: int = INDEX_DEPTH, n_threads: int = 2) -> list:
    """Nominal ACIS-I footprints (union of the four chips) for every pointing of ``plan``."""
    polygons = []
    for i in range(len(plan["ra"])):
        for poly in acis_i_polygons(plan["ra"][i], plan["dec"][i], plan["pa"][i]):
            polygons.extend([poly[:, 0], poly[:, 1]])
    polygons = np.array(polygons)
    chips = []
    for start in range(0, len(polygons), 2 * CHUNK):
        chunk = polygons[start : start + 2 * CHUNK]
        chips.extend(MOC.from_polygons(chunk, max_depth=depth, n_threads=n_threads))
    return [chips[4 * i].union(*chips[4 * i + 1 : 4 * i + 4]) for i in range(len(plan["ra"]))]


def _synthetic_path(row: dict[str, Any]) -> str:
    return f"{store.SYNTHETIC_PREFIX}{row['mission']}/{row['obsid']}/{row['camera']}"


def _new_index(index_dir: Path) -> Path:
    index_dir = Path(index_dir)
    if (index_dir / MANIFEST).exists() or (index_dir / DB_NAME).exists():
        raise SynthError(f"{index_dir} already holds an index: use a new folder")
    if index_dir.exists() and not index_dir.is_dir():
        raise SynthError(f"index path is not a folder: {index_dir}")
    return index_dir


def write_catalog(
    index_dir: Path,
    chunks: Iterable[list[tuple[dict[str, Any], np.ndarray]]],
    depth: int,
    description: str,
) -> dict[str, int]:
    """Store chunks of ``(exposure row with id, ranges at depth)`` as a build would store the
    files it read (``files`` rows under synthetic paths, then ``exposures`` rows), then build
    the MOC set the way every full build does (``indexer.build.rebuild_mocset``, streaming).
    Returns sizes."""
    index_dir.mkdir(parents=True, exist_ok=True)
    db = store.connect(index_dir / DB_NAME)
    try:
        store.set_setting(db, "depth", depth)
        store.set_setting(db, "synthetic", description)
        exposures = 0
        for chunk in chunks:
            rows = []
            for row, _ in chunk:
                row["path"] = _synthetic_path(row)
                row["size"], row["checksum"], row["moc_file"] = 0, "synthetic", None
                rows.append(row)
            store.insert_files(
                db,
                (
                    {
                        "path": row["path"],
                        "size": 0,
                        "mtime_ns": 0,
                        "checksum": "synthetic",
                        "meta": {k: v for k, v in row.items() if k not in _NOT_META},
                        "depth": depth,
                        "ranges": ranges,
                    }
                    for row, ranges in chunk
                ),
            )
            store.insert_exposures(db, rows)
            exposures += len(rows)
        mocs = rebuild_mocset(db, index_dir, depth)
        ranges = sum(len(mocsets.load(index_dir / n).ranges) for n in _segments(index_dir))
    finally:
        db.conn.close()
    return {"exposures": exposures, "mocs": mocs, "ranges": ranges}


#: Exposure columns that a file's metadata does not carry (they describe the file or index).
_NOT_META = {"id", "path", "size", "checksum", "moc_file"}


def _segments(index_dir: Path) -> list[str]:
    from indexer.build import read_manifest, segment_names

    return segment_names(read_manifest(index_dir) or {"mocset": None})


def synth_catalog(
    index_dir: Path,
    observations: int = 14_000,
    seed: int = 0,
    depth: int = INDEX_DEPTH,
    n_threads: int = 2,
    chandra: int | None = None,
) -> dict[str, Any]:
    """Write a synthetic index of ``observations`` x 3 EPIC cameras and ``chandra`` ACIS-I
    exposures (default: a third of ``observations``) into a new ``index_dir``.

    Returns timings [s] and sizes. Raises :class:`SynthError` if ``index_dir`` holds an index.
    """
    index_dir = _new_index(index_dir)
    if observations < 1:
        raise SynthError("--observations must be at least 1")
    chandra = observations // 3 if chandra is None else chandra
    if chandra < 0:
        raise SynthError("--chandra must be at least 0")
    started = time.perf_counter()
    plan = pointings(observations, seed)
    rows: list[dict[str, Any]] = []
    mocs: list[MOC] = []
    for camera in geometry.CAMERAS:
        mocs.extend(camera_mocs(camera, plan, depth, n_threads))
        rng = np.random.default_rng([seed, geometry.CAMERAS.index(camera)])
        submodes = rng.choice(SUBMODES[camera], observations)
        for i in range(observations):
            rows.append(
                {
                    "id": len(rows) + 1,
                    "mission": "XMM",
                    "obsid": f"{i + 1:010d}",
                    "camera": camera,
                    "instrument": "EPIC",
                    "object": plan["object"][i],
                    "observer": "SYNTHETIC",
                    "date_obs": plan["date_obs"][i],
                    "date_end": plan["date_obs"][i],
                    "exposure": float(plan["exposure"][i]),
                    "ra_pnt": float(plan["ra"][i]),
                    "dec_pnt": float(plan["dec"][i]),
                    "pa_pnt": float(plan["pa"][i]),
                    "filter": str(plan["filter"][i]),
                    "submode": str(submodes[i]),
                    "n_events": None,
                    "source": "nominal",
                    "kind": "events",
                }
            )
    if chandra:
        acis = pointings(chandra, seed + 1)
        mocs.extend(acis_i_mocs(acis, depth, n_threads))
        for i in range(chandra):
            rows.append(
                {
                    "id": len(rows) + 1,
                    "mission": "CHANDRA",
                    "obsid": str(i + 1),
                    "camera": "ACIS-I",
                    "instrument": "ACIS",
                    "object": acis["object"][i],
                    "observer": "SYNTHETIC",
                    "date_obs": acis["date_obs"][i],
                    "date_end": acis["date_obs"][i],
                    "exposure": float(acis["exposure"][i]),
                    "ra_pnt": float(acis["ra"][i]),
                    "dec_pnt": float(acis["dec"][i]),
                    "pa_pnt": float(acis["pa"][i]),
                    "filter": None,
                    "submode": "TIMED VFAINT",
                    "n_events": None,
                    "source": "nominal",
                    "kind": "events",
                }
            )
    moc_seconds = time.perf_counter() - started
    pairs = [(row, mocsets.moc_to_ranges(moc, depth)) for row, moc in zip(rows, mocs, strict=True)]
    sizes = write_catalog(
        index_dir, [pairs], depth, f"observations={observations} chandra={chandra} seed={seed}"
    )
    return {
        "exposures": sizes["exposures"],
        "ranges": sizes["ranges"],
        "moc_seconds": round(moc_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- a mixed archive of any size (a million footprints) -----------------------------------------

#: Missions of :func:`mixed_catalog`: share of the MOCs, cameras per pointing, footprint.
#: XMM-like: 30' fields, three cameras (two MOS circles, a rolled pn square); ACIS-like: a
#: rolled 16.9' square (ACIS-I); Swift-XRT-like: 23.6' circles; eROSITA-like: 3.6 deg x 3.6 deg
#: survey tiles on a fixed grid (3 deg apart, so they overlap), one row per telescope module
#: (TM1-TM7, the same footprint) and survey pass.
MIX: dict[str, float] = {"XMM": 0.27, "CHANDRA": 0.11, "SWIFT": 0.58, "EROSITA": 0.04}
XMM_MOS_RADIUS_ARCMIN: float = 15.0
XMM_PN_SIDE_ARCMIN: float = 26.0
ACIS_SIDE_ARCMIN: float = 16.9
XRT_RADIUS_ARCMIN: float = 11.8
TILE_SIDE_DEG: float = 3.6
TILE_STEP_DEG: float = 3.0
TILE_MODULES = tuple(f"TM{k}" for k in range(1, 8))
#: Rows generated, stored and forgotten at a time.
MIXED_CHUNK: int = 20_000


def _offsets(ra, dec, distance, pa) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`_offset`: points ``distance`` [deg] at ``pa`` [deg] from (ra, dec)."""
    d, p = np.radians(distance), np.radians(pa)
    dec0, ra0 = np.radians(dec), np.radians(ra)
    sin_dec = np.sin(dec0) * np.cos(d) + np.cos(dec0) * np.sin(d) * np.cos(p)
    dec1 = np.arcsin(np.clip(sin_dec, -1, 1))
    ra1 = ra0 + np.arctan2(np.sin(p) * np.sin(d) * np.cos(dec0), np.cos(d) - np.sin(dec0) * sin_dec)
    return np.degrees(ra1) % 360.0, np.degrees(dec1)


def targets(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` observing targets shared by the missions (vectorised): the special fields first,
    then famous fields (30 %, scattered around them), the Galactic plane (20 %), the rest
    uniform over the sky. Arrays ``ra``, ``dec`` [deg] and ``object``."""
    kind = rng.choice(3, size=n, p=[0.3, 0.2, 0.5])
    famous = rng.integers(0, len(FAMOUS_FIELDS), n)
    f_ra = np.array([f[1] for f in FAMOUS_FIELDS])[famous]
    f_dec = np.array([f[2] for f in FAMOUS_FIELDS])[famous]
    f_spread = np.array([f[3] for f in FAMOUS_FIELDS])[famous]
    ra_f, dec_f = _offsets(
        f_ra, f_dec, f_spread * np.abs(rng.normal(0, 1, n)), rng.uniform(0, 360, n)
    )
    plane = SkyCoord(
        l=rng.uniform(0, 360, n) * u.deg,
        b=np.clip(rng.normal(0, 2.0, n), -89, 89) * u.deg,
        frame="galactic",
    ).icrs
    ra = np.select([kind == 0, kind == 1], [ra_f, plane.ra.deg], rng.uniform(0, 360, n))
    dec = np.select(
        [kind == 0, kind == 1],
        [dec_f, plane.dec.deg],
        np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
    )
    names = np.array([f[0] for f in FAMOUS_FIELDS], dtype=object)[famous]
    names = np.where(kind == 0, names, np.char.add("TARGET-", np.arange(n).astype(str)))
    k = min(n, len(SPECIAL_FIELDS))
    for i in range(k):
        names[i], ra[i], dec[i], _ = SPECIAL_FIELDS[i]
    return {"ra": ra % 360.0, "dec": dec, "object": names}


def _mission_pointings(
    n: int, pool: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n`` pointings on the shared targets, popular ones observed again and again (a target
    index drawn as ``len * u**2``: the top 1 % of the targets get 10 % of the pointings, the
    most popular ~0.3 %), a few arcminutes off, with a random roll and date; the first ones
    on the special fields exactly (which are left out of the popular draw)."""
    k = min(n, len(SPECIAL_FIELDS))
    first = min(len(SPECIAL_FIELDS), len(pool["ra"]) - 1)
    which = first + ((len(pool["ra"]) - first) * rng.uniform(0, 1, n) ** 2).astype(np.int64)
    which[:k] = np.arange(k)
    distance = REPEAT_OFFSET_ARCMIN / 60 * np.sqrt(rng.uniform(0, 1, n))
    distance[:k] = 0.0
    ra, dec = _offsets(pool["ra"][which], pool["dec"][which], distance, rng.uniform(0, 360, n))
    days = rng.integers(0, (LAST_DATE - FIRST_DATE).days, n)
    dates = (np.datetime64(FIRST_DATE.isoformat()) + days).astype(str)
    return {
        "ra": ra,
        "dec": dec,
        "pa": rng.uniform(0, 360, n),
        "date_obs": np.char.add(dates, "T00:00:00"),
        "object": pool["object"][which],
        "exposure": np.round(rng.lognormal(np.log(20_000), 0.7, n), 1),
    }


def _squares(ra, dec, pa, side_deg: float) -> list[np.ndarray]:
    """Vertices of rolled squares (``side_deg``) about each pointing, as ``MOC.from_polygons``
    takes them (RA array, Dec array, RA array...)."""
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float) * side_deg / 2
    theta = np.radians(np.asarray(pa))[:, None]
    xi = corners[:, 0] * np.cos(theta) + corners[:, 1] * np.sin(theta)
    eta = -corners[:, 0] * np.sin(theta) + corners[:, 1] * np.cos(theta)
    v_ra, v_dec = geometry.tan_deproject(xi, eta, np.asarray(ra)[:, None], np.asarray(dec)[:, None])
    out = []
    for a, b in zip(v_ra, v_dec, strict=True):
        out.extend([a, b])
    return out


def _footprints(kind: str, plan: dict[str, np.ndarray], depth: int, n_threads: int) -> list:
    """Ranges at ``depth`` of one footprint per pointing: ``cone:<arcmin>`` or
    ``square:<deg>``; mocpy ``CHUNK`` shapes per call."""
    shape, size = kind.split(":")
    out = []
    for start in range(0, len(plan["ra"]), CHUNK):
        cut = slice(start, start + CHUNK)
        if shape == "cone":
            mocs = MOC.from_cones(
                plan["ra"][cut] * u.deg,
                plan["dec"][cut] * u.deg,
                radius=float(size) * u.arcmin,
                max_depth=depth,
                n_threads=n_threads,
            )
        else:
            polygons = _squares(plan["ra"][cut], plan["dec"][cut], plan["pa"][cut], float(size))
            mocs = MOC.from_polygons(polygons, max_depth=depth, n_threads=n_threads)
        out.extend(mocsets.moc_to_ranges(moc, depth) for moc in mocs)
    return out


def tile_grid() -> tuple[np.ndarray, np.ndarray]:
    """Centres (RA, Dec) [deg] of the survey tiles: rings ``TILE_STEP_DEG`` apart in Dec, tiles
    ``TILE_STEP_DEG`` apart along each ring (one tile on each pole)."""
    ras, decs = [np.array([0.0, 0.0])], [np.array([-90.0, 90.0])]
    for dec in np.arange(-90 + TILE_STEP_DEG, 90 - TILE_STEP_DEG / 2, TILE_STEP_DEG):
        count = max(1, int(np.ceil(360 * np.cos(np.radians(dec)) / TILE_STEP_DEG)))
        ras.append(np.arange(count) * 360.0 / count)
        decs.append(np.full(count, dec))
    return np.concatenate(ras), np.concatenate(decs)


def _row(ident: int, mission: str, obsid: str, camera: str, instrument: str, plan, i, **extra):
    return {
        "id": ident,
        "mission": mission,
        "obsid": obsid,
        "camera": camera,
        "instrument": instrument,
        "object": str(plan["object"][i]),
        "observer": "SYNTHETIC",
        "date_obs": str(plan["date_obs"][i]),
        "date_end": str(plan["date_obs"][i]),
        "exposure": float(plan["exposure"][i]),
        "ra_pnt": float(plan["ra"][i]),
        "dec_pnt": float(plan["dec"][i]),
        "pa_pnt": float(plan["pa"][i]),
        "filter": None,
        "submode": None,
        "n_events": None,
        "source": "nominal",
        "kind": "events",
        **extra,
    }


def _slice(plan: dict[str, np.ndarray], cut: slice) -> dict[str, np.ndarray]:
    return {key: value[cut] for key, value in plan.items()}


def mixed_rows(
    mocs: int, seed: int = 0, depth: int = INDEX_DEPTH, n_threads: int = 2
) -> Iterator[list[tuple[dict[str, Any], np.ndarray]]]:
    """Chunks of ``(row, ranges)`` of a mixed archive of about ``mocs`` footprints (``MIX``):
    ids from 1, mission after mission; at most ``MIXED_CHUNK`` rows and their ranges exist at
    a time."""
    rng = np.random.default_rng(seed)
    pool = targets(max(mocs // 8, len(SPECIAL_FIELDS)), rng)
    ident = 0
    n_xmm = round(mocs * MIX["XMM"] / 3)
    n_acis = round(mocs * MIX["CHANDRA"])
    n_tiles = round(mocs * MIX["EROSITA"])
    n_xrt = max(mocs - 3 * n_xmm - n_acis - n_tiles, 0)
    step = MIXED_CHUNK // 3
    xmm = _mission_pointings(n_xmm, pool, rng)
    xmm["filter"] = rng.choice(FILTERS, n_xmm)
    for start in range(0, n_xmm, step):
        plan = _slice(xmm, slice(start, start + step))
        mos = _footprints(f"cone:{XMM_MOS_RADIUS_ARCMIN}", plan, depth, n_threads)
        pn = _footprints(f"square:{XMM_PN_SIDE_ARCMIN / 60}", plan, depth, n_threads)
        chunk = []
        for camera, ranges in (("EMOS1", mos), ("EMOS2", mos), ("EPN", pn)):
            for i in range(len(ranges)):
                ident += 1
                row = _row(ident, "XMM", f"{start + i + 1:010d}", camera, "EPIC", plan, i)
                row["filter"] = str(plan["filter"][i])
                chunk.append((row, ranges[i]))
        yield chunk
    acis = _mission_pointings(n_acis, pool, rng)
    for start in range(0, n_acis, MIXED_CHUNK):
        plan = _slice(acis, slice(start, start + MIXED_CHUNK))
        ranges = _footprints(f"square:{ACIS_SIDE_ARCMIN / 60}", plan, depth, n_threads)
        chunk = []
        for i, r in enumerate(ranges):
            ident += 1
            row = _row(ident, "CHANDRA", str(start + i + 1), "ACIS-I", "ACIS", plan, i)
            row["submode"] = "TIMED VFAINT"
            chunk.append((row, r))
        yield chunk
    xrt = _mission_pointings(n_xrt, pool, rng)
    for start in range(0, n_xrt, MIXED_CHUNK):
        plan = _slice(xrt, slice(start, start + MIXED_CHUNK))
        ranges = _footprints(f"cone:{XRT_RADIUS_ARCMIN}", plan, depth, n_threads)
        chunk = []
        for i, r in enumerate(ranges):
            ident += 1
            row = _row(ident, "SWIFT", f"{start + i + 1:011d}", "XRT", "XRT", plan, i)
            row["submode"] = "PC"
            chunk.append((row, r))
        yield chunk
    if n_tiles:
        ra, dec = tile_grid()
        spread = np.concatenate([[0, 1], 2 + rng.permutation(len(ra) - 2)])  # poles first
        ra, dec = ra[spread], dec[spread]
        grid = {
            "ra": ra,
            "dec": dec,
            "pa": np.zeros(len(ra)),
            "date_obs": np.full(len(ra), "2020-01-01T00:00:00"),
            "object": np.char.add("TILE-", np.arange(len(ra)).astype(str)).astype(object),
            "exposure": np.full(len(ra), 200.0),
        }
        used = min(len(ra), -(-n_tiles // len(TILE_MODULES)))  # tiles with at least one row
        footprints = _footprints(
            f"square:{TILE_SIDE_DEG}", _slice(grid, slice(0, used)), depth, n_threads
        )
        chunk = []
        for k in range(n_tiles):  # tile after tile, TM1..TM7, then the next survey pass
            tile, module = divmod(k, len(TILE_MODULES))
            survey, tile = divmod(tile, len(ra))
            ident += 1
            obsid = f"{survey + 1}{tile:06d}"
            row = _row(ident, "EROSITA", obsid, TILE_MODULES[module], "TM", grid, tile)
            row["submode"] = f"eRASS{survey + 1}"
            chunk.append((row, footprints[tile]))
            if len(chunk) == MIXED_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def mixed_catalog(
    index_dir: Path, mocs: int, seed: int = 0, depth: int = INDEX_DEPTH, n_threads: int = 2
) -> dict[str, Any]:
    """Write a synthetic index of about ``mocs`` footprints of several missions (``MIX``) into
    a new ``index_dir``, chunk by chunk (memory stays bounded); returns timings and sizes."""
    index_dir = _new_index(index_dir)
    if mocs < 1:
        raise SynthError("--mocs must be at least 1")
    started = time.perf_counter()
    sizes = write_catalog(
        index_dir, mixed_rows(mocs, seed, depth, n_threads), depth, f"mocs={mocs} seed={seed}"
    )
    return {**sizes, "seconds": round(time.perf_counter() - started, 2)}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth-catalog",
        help="build a synthetic index from nominal camera geometry (benchmarks, scale tests)",
    )
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument("--observations", type=int, default=14_000)
    parser.add_argument(
        "--chandra",
        type=int,
        default=None,
        help="Chandra ACIS-I exposures to add (default: a third of --observations)",
    )
    parser.add_argument(
        "--mocs",
        type=int,
        default=None,
        help="instead: a mixed archive of about this many footprints (XMM, Chandra, Swift-XRT, "
        "eROSITA-like tiles), generated in chunks (a million takes a few minutes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: Any) -> int:
    from indexer.cli import CLIError

    try:
        if args.mocs is not None:
            report = mixed_catalog(args.index, args.mocs, seed=args.seed)
        else:
            report = synth_catalog(
                args.index, observations=args.observations, seed=args.seed, chandra=args.chandra
            )
    except SynthError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write the index in {args.index}: {exc.strerror or exc}") from None
    print(" ".join(f"{key}={value}" for key, value in report.items()))
    print(f"[synth] done in {report['seconds']} s", file=sys.stderr)
    return 0
