"""The read side of the index, for the web app and the CLI (``query``, ``coverage``).

``Index.load(index_dir)`` returns one ``Index`` per index folder and process: the segments of
the MOC set are memory-mapped; the next ``load`` returns the same object until ``manifest.json``
changes (a build finished), then loads the new generation. Exposure rows are not held in memory
(a million of them would take gigabytes as dicts): a query reads the rows of its hits from the
database by id (one read-only connection per thread), so loading costs no more for a million
exposures than for ten. An exposure removed since the generation was loaded is left out of the
answers; one added since is not in the loaded MOC set, so not found until the next ``load``.

Regions are turned into MOCs at a depth adapted to their size (:func:`region_depth`): deeper
than the index for small regions, so that the covered fraction of an arcminute circle is not
rounded to whole index cells.
"""

from __future__ import annotations

import copy
import json
import math
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from mocpy import MOC
from regions import Regions

from indexer import mocset as mocsets
from indexer import shapes, store
from indexer.build import DB_NAME, MANIFEST, segment_names

#: Default byte budget of the all-sky coverage MOC JSON sent to the viewer.
COVERAGE_MAX_BYTES: int = 1_500_000
#: Region MOCs are at most this many orders deeper than the index (13 + 5 = 18: 0.8" cells, for
#: arcsecond regions and their exclusions; the size-adapted depth keeps ~8 cells across anyway).
REGION_EXTRA_DEPTH: int = 5
#: A region spans at least this many cells of its MOC depth (when the depth range allows).
REGION_CELLS_ACROSS: int = 8
#: Mean HEALPix cell size at order 0 [deg] (sqrt of 4 pi / 12 steradian).
_ORDER0_CELL_DEG: float = math.degrees(math.sqrt(4 * math.pi / 12))


class IndexNotFound(Exception):
    """The folder holds no built index; ``str(exc)`` is a one-line message for the user."""


def region_depth(extent_deg: float, index_depth: int) -> int:
    """MOC depth for a region of half-size ``extent_deg`` [deg]: cells about ``extent / 8``, kept
    between the index depth and ``index depth + REGION_EXTRA_DEPTH``."""
    wanted = math.ceil(math.log2(_ORDER0_CELL_DEG * REGION_CELLS_ACROSS / max(extent_deg, 1e-9)))
    return int(min(max(wanted, index_depth), index_depth + REGION_EXTRA_DEPTH))


def _angular_distance_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance [deg] (haversine), vectorised; inputs in degrees."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    a = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


class Index:
    """A loaded index: the memory-mapped MOC set segments, rows read from the database."""

    _cache: dict[Path, tuple[tuple[int, int, int], Index]] = {}
    _lock = threading.Lock()

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        mocset: mocsets.SegmentedMocSet,
        database: Path,
    ):
        self.folder = folder
        self.manifest = manifest
        self.mocset = mocset
        self.database = database
        self._local = threading.local()
        self._by_id: np.ndarray | None = None  # positions sorted by MOC id
        self._coverage_cache: dict[int, dict[str, list[int]]] = {}
        self._stats: dict[str, Any] | None = None

    # --- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, index_dir: Path | str) -> Index:
        """The index in ``index_dir``, cached per process; reloaded when a build changed it.

        Raises :class:`IndexNotFound` if the folder holds no built index.
        """
        folder = Path(index_dir).resolve()
        manifest_path = folder / MANIFEST
        try:
            stat = manifest_path.stat()
        except OSError:
            raise IndexNotFound(
                f"no index in {index_dir} (no {MANIFEST}): build one with "
                f"'python -m indexer build ARCHIVE_DIR --index {index_dir}'"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with cls._lock:
            cached = cls._cache.get(folder)
            if cached and cached[0] == stamp:
                return cached[1]
            index = cls._read(folder, manifest_path)
            cls._cache[folder] = (stamp, index)
            return index

    @classmethod
    def _read(cls, folder: Path, manifest_path: Path) -> Index:
        try:
            manifest = json.loads(manifest_path.read_text())
            mocset = mocsets.SegmentedMocSet(
                [mocsets.load(folder / name) for name in segment_names(manifest)]
            )
            database = folder / manifest.get("database", DB_NAME)
            index = cls(folder, manifest, mocset, database)
            index._connection()  # a missing or unreadable database fails here, not in a query
        except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
            raise IndexNotFound(f"cannot read the index in {folder}: {exc}") from None
        return index

    def _connection(self) -> sqlite3.Connection:
        """This thread's read-only connection to the index database."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("select count(*) from exposures").fetchone()
            self._local.conn = conn
        return conn

    @staticmethod
    def _as_row(record: sqlite3.Row) -> dict[str, Any]:
        row = dict(record)
        row["exposure_id"] = store.exposure_id(row)
        row["kind"] = store.default_kind(row)
        return row

    def _position_of(self, exposure_id: str) -> tuple[int, dict[str, Any]]:
        """(position in the MOC set, row) of an exposure; KeyError if not in this generation."""
        mission, _, rest = exposure_id.partition(":")
        obsid, _, camera = rest.rpartition(":")
        record = (
            self._connection()
            .execute(
                "select * from exposures where mission = ? and obsid = ? and camera = ?",
                [mission, obsid, camera],
            )
            .fetchone()
        )
        if record is None:
            raise KeyError(exposure_id)
        ids = np.asarray(self.mocset.ids)
        if self._by_id is None:
            self._by_id = np.argsort(ids, kind="stable")
        at = int(np.searchsorted(ids[self._by_id], record["id"]))
        if at == len(ids) or ids[self._by_id[at]] != record["id"]:
            raise KeyError(exposure_id)
        return int(self._by_id[at]), self._as_row(record)

    # --- reading ------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """HEALPix order of the camera MOCs."""
        return self.mocset.depth

    def observations(self) -> list[dict[str, Any]]:
        """All exposure rows (one per observation and camera), as dicts, by id."""
        cursor = self._connection().execute("select * from exposures order by id")
        return [self._as_row(record) for record in cursor]

    def exposures_page(
        self, after: str | None = None, limit: int = 1000, mission: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of exposure rows (shaped like :meth:`observations` rows) in (mission, obsid,
        camera) order: at most ``limit`` after the exposure id ``after`` (``MISSION:OBSID:
        CAMERA``, which need not be in the index), of ``mission`` only if given; and the cursor
        of the next page (the last row's exposure id), None when no row follows.

        Read by keyset on the unique index (``store.exposures_page``): a page deep in a million
        exposures costs what the first one does. ValueError for a malformed ``after`` or a
        ``limit`` below 1.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        key = None if after is None else store.parse_exposure_id(after)
        records = store.exposures_page(self._connection(), key, limit + 1, mission)
        rows = [self._as_row(record) for record in records[:limit]]
        return rows, (rows[-1]["exposure_id"] if len(records) > limit else None)

    def count_exposures(self, mission: str | None = None) -> int:
        """The number of exposures in the index (of ``mission`` only if given)."""
        return store.count_exposures_of(self._connection(), mission)

    def observations_page(
        self, after: str | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The exposure rows (shaped like :meth:`observations` rows, in (mission, obsid, camera)
        order) of at most ``limit`` observations (distinct mission and obsid) after the
        observation ``after`` (``MISSION:OBSID``, which need not be in the index); and the
        cursor of the next page (the last observation's ``MISSION:OBSID``), None when none
        follows. ValueError for a malformed ``after`` or a ``limit`` below 1.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        key = None if after is None else store.parse_observation_id(after)
        records, more = store.observations_page(self._connection(), key, limit)
        rows = [self._as_row(record) for record in records]
        return rows, (f"{rows[-1]['mission']}:{rows[-1]['obsid']}" if more else None)

    def exposure_ids_of(self, obsid: str, camera: str) -> list[str]:
        """The exposure ids of an observation's camera (one per mission that has that obsid)."""
        return store.exposure_ids_of(self._connection(), obsid, camera)

    def exposure_checksums(self) -> dict[str, str]:
        """``{exposure id: file checksum}`` of every exposure (what changed since a last look)."""
        return store.exposure_checksums(self._connection())

    def exposure_row(self, exposure_id: str) -> dict[str, Any]:
        """The row of one exposure (``MISSION:OBSID:CAMERA``); KeyError if not indexed."""
        return self._position_of(exposure_id)[1]

    def pixel_wcs(self, paths: list[str]) -> dict[str, dict[str, Any]]:
        """``{path: WCS cards}`` of the pixel frames of these files as the build kept them
        (``store.pixel_wcs``; ``instruments.wcs_from_cards`` makes the WCS). Files the index
        keeps no pixel WCS for are left out; so is everything when the database is unreadable."""
        if not paths:
            return {}
        try:
            db = store.connect(self.folder / self.manifest.get("database", DB_NAME), readonly=True)
        except sqlite3.Error:
            return {}
        try:
            return store.pixel_wcs(db, paths)
        except sqlite3.Error:
            return {}
        finally:
            db.conn.close()

    def region_moc(self, region: str | Regions) -> MOC:
        """The MOC a query uses for ``region`` (a DS9 string or ``regions`` shapes).

        Raises :class:`indexer.shapes.RegionError` for invalid regions.
        """
        regions = shapes.parse_ds9(region) if isinstance(region, str) else shapes.validate(region)
        depth = region_depth(shapes.extent(regions).deg, self.depth)
        return shapes.to_moc(regions, max_depth=depth)

    def query(self, region: str | Regions) -> list[dict[str, Any]]:
        """Exposures whose camera footprint intersects ``region`` (DS9 string or shapes).

        Each result is the exposure row plus ``coverage`` (fraction of the region's area on the
        camera, 0..1) and ``offaxis_arcmin`` (distance of the region centre from the pointing
        [arcmin]); sorted by decreasing coverage, then obsid and camera. Raises
        :class:`indexer.shapes.RegionError` for invalid regions.
        """
        regions = shapes.parse_ds9(region) if isinstance(region, str) else shapes.validate(region)
        return self.query_moc(self.region_moc(regions), shapes.centre(regions))

    def query_moc(
        self, moc: MOC, centre: SkyCoord | tuple[float, float] | None = None
    ) -> list[dict[str, Any]]:
        """Like :meth:`query` for a region given as a MOC.

        ``centre``: the region centre for ``offaxis_arcmin``, as a SkyCoord or (RA, Dec) [deg];
        by default the MOC's barycentre.
        """
        positions, fractions = mocsets.query(self.mocset, mocsets.region_ranges(moc))
        if len(positions) == 0:
            return []
        if centre is None:
            centre = moc.barycenter()
        if isinstance(centre, SkyCoord):
            centre = (float(centre.icrs.ra.deg), float(centre.icrs.dec.deg))
        ids = np.asarray(self.mocset.ids)[positions]
        coverage = dict(
            zip(ids.tolist(), [round(min(f, 1.0), 6) for f in fractions.tolist()], strict=True)
        )
        # tuples until the end: a dict per row is made once, with every field (the answer of a
        # median region at a million MOCs takes ~1 ms, a third of it in the rows)
        names, records = store.exposure_records(self._connection(), ids)
        at = {name: k for k, name in enumerate(names)}
        ident, ra, dec = at["id"], at["ra_pnt"], at["dec_pnt"]
        mission, obsid, camera = at["mission"], at["obsid"], at["camera"]
        pointing = np.array([(r[ra], r[dec]) for r in records], dtype=float).reshape(-1, 2)
        offaxis = (60.0 * _angular_distance_deg(*centre, *pointing.T)).tolist()
        keys = (*names, "exposure_id", "coverage", "offaxis_arcmin")
        results = []
        for record, distance in zip(records, offaxis, strict=True):
            row = dict(
                zip(
                    keys,
                    (
                        *record,
                        f"{record[mission]}:{record[obsid]}:{record[camera]}",
                        coverage[record[ident]],
                        round(distance, 3) if math.isfinite(distance) else None,
                    ),
                    strict=True,
                )
            )
            if not row["kind"]:
                row["kind"] = store.default_kind(row)
            results.append(row)
        results.sort(key=lambda r: (-r["coverage"], r["mission"], r["obsid"], r["camera"]))
        return results

    def query_ids(self, moc: MOC) -> np.ndarray:
        """MOC ids (exposure ids) of the camera MOCs intersecting ``moc``, sorted."""
        positions, _ = mocsets.query(self.mocset, mocsets.region_ranges(moc))
        return np.sort(np.asarray(self.mocset.ids)[positions])

    def coverage_moc(self) -> MOC:
        """Union of all camera MOCs (at the index depth)."""
        return mocsets.ranges_to_moc(mocsets.union_ranges(self.mocset), self.depth)

    def coverage_moc_json(self, max_bytes: int = COVERAGE_MAX_BYTES) -> dict[str, list[int]]:
        """Union of all coverage as MOC JSON (``{"order": [ipix, ...]}``, Aladin's
        ``A.MOCFromJSON``), at the deepest order whose compact JSON fits in ``max_bytes``."""
        if max_bytes < 64:
            raise ValueError("max_bytes must be at least 64")
        if max_bytes not in self._coverage_cache:
            moc = self.coverage_moc()
            result: dict[str, list[int]] = {}
            for order in range(self.depth, -1, -1):
                if moc.empty():
                    break
                degraded = moc.degrade_to_order(order) if order < moc.max_order else moc
                candidate = json.loads(degraded.to_string(format="json"))
                if len(dumps_compact(candidate).encode()) <= max_bytes:
                    result = candidate
                    break
            self._coverage_cache[max_bytes] = result
        return self._coverage_cache[max_bytes]

    def exposure_moc(self, exposure_id: str) -> MOC:
        """The footprint MOC of one exposure (``MISSION:OBSID:CAMERA``; KeyError if absent)."""
        return self.mocset.moc(self._position_of(exposure_id)[0])

    def exposure_moc_json(self, exposure_id: str) -> dict[str, list[int]]:
        """The footprint of one exposure as MOC JSON (KeyError if not indexed)."""
        return json.loads(self.exposure_moc(exposure_id).to_string(format="json"))

    def stats(self) -> dict[str, Any]:
        """Sizes of the index: exposures per camera, MOCs, ranges, memory [bytes], depth.

        Counted once per loaded generation (a new build is a new :class:`Index`): at a million
        exposures the counts take ~0.5 s, which every archive page would pay."""
        if self._stats is None:
            self._stats = self._count()
        return copy.deepcopy(self._stats)

    def _count(self) -> dict[str, Any]:
        conn = self._connection()
        per_camera = {
            f"{mission} {camera}": count
            for mission, camera, count in conn.execute(
                "select mission, camera, count(*) from exposures group by mission, camera "
                "order by min(id)"
            )
        }
        return {
            "folder": str(self.folder),
            "generation": self.manifest.get("generation"),
            "built_at": self.manifest.get("built_at"),
            "depth": self.depth,
            "cell_order": mocsets.CELL_ORDER,
            "exposures": sum(per_camera.values()),
            "observations": conn.execute(
                "select count(*) from (select distinct mission, obsid from exposures)"
            ).fetchone()[0],
            "per_camera": per_camera,
            "mocs": len(self.mocset),
            "segments": len(self.mocset.segments),
            "ranges": self.mocset.n_ranges,
            "mocset_bytes": self.mocset.nbytes,
        }


def dumps_compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- CLI ----------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    query = subparsers.add_parser(
        "query",
        help="list the observations/cameras covering a sky region (JSON)",
        description="Print a JSON array: one object per (observation, camera) whose footprint "
        "intersects the region, with its metadata, coverage (0..1) and offaxis_arcmin.",
    )
    query.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    query.add_argument(
        "--region",
        required=True,
        help="DS9 region in sky coordinates, e.g. 'icrs;circle(149.59,-11.06,60\")'",
    )
    query.set_defaults(func=run_query)
    coverage = subparsers.add_parser(
        "coverage",
        help="print the index coverage (or one camera footprint) as MOC JSON",
        description="Print the union of all camera footprints as MOC JSON, degraded to stay "
        "under --max-bytes; with --exposure (or --obsid and --camera), print that exposure's "
        "footprint.",
    )
    coverage.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    coverage.add_argument("--max-bytes", type=int, default=COVERAGE_MAX_BYTES)
    coverage.add_argument("--exposure", metavar="MISSION:OBSID:CAMERA")
    coverage.add_argument("--obsid")
    coverage.add_argument("--camera", help="a camera of the observation --obsid (e.g. EMOS1)")
    coverage.set_defaults(func=run_coverage)


def _load(index_dir: Path) -> Index:
    from indexer.cli import CLIError

    try:
        return Index.load(index_dir)
    except IndexNotFound as exc:
        raise CLIError(str(exc)) from None


def run_query(args: Any) -> int:
    from indexer.cli import CLIError

    index = _load(args.index)
    try:
        results = index.query(args.region)
    except shapes.RegionError as exc:
        raise CLIError(f"bad region: {exc}") from None
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def run_coverage(args: Any) -> int:
    from indexer.cli import CLIError

    index = _load(args.index)
    if (args.obsid is None) != (args.camera is None):
        raise CLIError("--obsid and --camera go together")
    exposure = args.exposure
    if args.obsid is not None:
        if exposure is not None:
            raise CLIError("give --exposure or --obsid with --camera, not both")
        found = index.exposure_ids_of(args.obsid, args.camera)
        if not found:
            raise CLIError(f"no {args.camera} footprint for observation {args.obsid}")
        exposure = found[0]
    if exposure is not None:
        try:
            result = index.exposure_moc_json(exposure)
        except KeyError:
            raise CLIError(f"no exposure {exposure} in the index") from None
    else:
        if args.max_bytes < 64:
            raise CLIError("--max-bytes must be at least 64")
        result = index.coverage_moc_json(args.max_bytes)
    sys.stdout.write(dumps_compact(result) + "\n")
    return 0
