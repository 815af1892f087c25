"""Synthetic catalogue for scale tests and benchmarks: ``python -m indexer synth-catalog``.

Builds an index (same layout as ``indexer.build``, without event files or per-camera FITS MOCs)
of N observations x 3 EPIC cameras from nominal camera geometry: pointing + roll + CCD layout
(``demo.epic_geometry.ccd_polygons``, dead MOS1 CCDs removed by date), clipped by the circular field
of view, plus (``chandra``) Chandra ACIS-I exposures: the four 8.4' I-array chips in a 2 x 2
square with 18" gaps, rolled by a random roll (:func:`acis_i_mocs`), so benchmarks run on a
mixed-mission index. Rows have ``source = 'nominal'`` and ``path`` null.

Pointings are clustered as in a real archive (fractions of the observations):

- the first ``len(SPECIAL_FIELDS)`` pointings sit on fields that must keep working: across
  RA = 0/360 and within a degree of both poles;
- 40 % repeat an earlier pointing within ``REPEAT_OFFSET_ARCMIN`` with a new roll and date;
- 20 % scatter around famous fields (deep fields, Magellanic Clouds, Galactic centre, M31...);
- 15 % along the Galactic plane (|b| of a few degrees);
- the rest uniformly over the sky.

The MOCs are built vectorised: the CCD polygons of a camera go to ``MOC.from_polygons`` and the
field-of-view circles to ``MOC.from_cones`` ``CHUNK`` at a time (``n_threads`` threads), then one
union and one intersection per camera, and the MOC set is written in one pass.
"""

from __future__ import annotations

import sys
import time
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
from indexer.build import DB_NAME, MANIFEST, write_mocset
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
    index_dir = Path(index_dir)
    if (index_dir / MANIFEST).exists() or (index_dir / DB_NAME).exists():
        raise SynthError(f"{index_dir} already holds an index: use a new folder")
    if index_dir.exists() and not index_dir.is_dir():
        raise SynthError(f"index path is not a folder: {index_dir}")
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
    index_dir.mkdir(parents=True, exist_ok=True)
    db = store.connect(index_dir / DB_NAME)
    store.set_setting(db, "depth", depth)
    store.set_setting(db, "synthetic", f"observations={observations} seed={seed}")
    store.insert_exposures(db, rows)
    mocset = mocsets.from_mocs([row["id"] for row in rows], mocs, depth)
    write_mocset(index_dir, mocset, db)
    db.conn.close()
    return {
        "exposures": len(rows),
        "ranges": int(len(mocset.ranges)),
        "mocset_bytes": mocset.nbytes,
        "moc_seconds": round(moc_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }


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
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: Any) -> int:
    from indexer.cli import CLIError

    try:
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
