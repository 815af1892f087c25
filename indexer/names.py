"""Object names of the archive: find the observations whose ``OBJECT`` matches a typed name.

The index stores each exposure's ``OBJECT`` header keyword (column ``object`` of the
``exposures`` table, from the instruments' ``describe``) and its pointing (``ra_pnt``,
``dec_pnt``). :func:`resolve` reads them from the index's SQLite database (read-only; loaded
once per process and index build, like ``indexer.index.Index.load``) and matches names without
regard to case and spaces: ``"rxcj0958"`` finds ``"RXCJ0958.3-1103"``. Matches are ranked: the
whole name, then names that start with the typed text; only when there are none, names that
contain it (at least :data:`MIN_CONTAINS` characters). The position of a name is the mean
pointing (unit vectors, right across RA 0) of its exposures.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer import store
from indexer.build import DB_NAME, MANIFEST

#: Most names a resolution lists (``matches``).
MAX_MATCHES: int = 50
#: Shortest text matched inside names (shorter texts match whole names or their starts only).
MIN_CONTAINS: int = 3


def normalise(name: str) -> str:
    """A name as matched: lower case, without white space."""
    return "".join(name.split()).casefold()


@dataclass(frozen=True)
class Name:
    """One object name of the archive, with its exposures and their mean pointing."""

    object: str
    ra: float
    dec: float
    exposures: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "ra": self.ra,
            "dec": self.dec,
            "exposures": list(self.exposures),
        }


class NameTable:
    """The archive's object names, normalised and sorted for prefix search.

    Loading asks SQLite for the distinct ``OBJECT`` spellings with the ids of their exposures
    (one ``GROUP BY``); the exposures of a name, and so its position, are read when a look-up
    returns it (by primary key, from the same database)."""

    _cache: dict[Path, tuple[tuple[int, int, int], NameTable]] = {}
    _lock = threading.Lock()

    def __init__(self, database: Path, groups: list[tuple[str, str]]) -> None:
        """``groups``: ``(spelling, "id,id,...")`` pairs, as :meth:`load` reads them."""
        self.database = database
        self._by_key: dict[str, list[tuple[str, str]]] = {}
        for spelling, ids in groups:
            key = normalise(spelling)
            if key:
                self._by_key.setdefault(key, []).append((spelling, ids))
        self.keys = sorted(self._by_key)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, index_dir: Path | str) -> NameTable:
        """The names of the index in ``index_dir``, cached per process until a build changes
        its manifest. Raises ``FileNotFoundError`` when the folder holds no built index."""
        folder = Path(index_dir).resolve()
        manifest_path = folder / MANIFEST
        stat = manifest_path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with cls._lock:
            cached = cls._cache.get(folder)
            if cached and cached[0] == stamp:
                return cached[1]
        manifest = json.loads(manifest_path.read_text())
        database = folder / manifest.get("database", DB_NAME)
        conn = _connect(database)
        try:
            groups = conn.execute(
                "SELECT object, group_concat(id) FROM exposures WHERE object IS NOT NULL "
                "AND object != '' AND ra_pnt IS NOT NULL AND dec_pnt IS NOT NULL GROUP BY object"
            ).fetchall()
        except sqlite3.Error as exc:
            raise FileNotFoundError(f"cannot read the index in {folder}: {exc}") from None
        finally:
            conn.close()
        table = cls(database, groups)
        with cls._lock:
            cls._cache[folder] = (stamp, table)
        return table

    def _count(self, key: str) -> int:
        return sum(ids.count(",") + 1 for _, ids in self._by_key[key])

    def _name(self, conn: sqlite3.Connection, key: str) -> Name:
        spellings = self._by_key[key]
        spelling = max(spellings, key=lambda s: (s[1].count(","), s[0]))[0]  # the most used
        ids = [int(i) for _, text in spellings for i in text.split(",")]
        rows = conn.execute(
            "SELECT mission, obsid, camera, ra_pnt, dec_pnt FROM exposures "
            "WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ids),),
        ).fetchall()
        exposures = tuple(
            {
                "exposure_id": store.exposure_id({"mission": m, "obsid": o, "camera": c}),
                "ra": float(ra),
                "dec": float(dec),
            }
            for m, o, c, ra, dec in rows
        )
        ra, dec = _mean_position(exposures)
        return Name(spelling, ra, dec, exposures)

    def find(self, text: str) -> list[Name]:
        """The names matching ``text``, best first, at most :data:`MAX_MATCHES`: the whole name,
        then the names that start with it; only when neither exists, the names that contain it
        (``text`` of :data:`MIN_CONTAINS` characters or more). Within a rank, shorter names and
        names with more exposures first."""
        key = normalise(text)
        if not key:
            return []
        starting = []
        for i in range(bisect_left(self.keys, key), len(self.keys)):
            if not self.keys[i].startswith(key):
                break
            starting.append(self.keys[i])
        exact = [key] if starting[:1] == [key] else []
        prefix = starting[len(exact) :]
        inside = []
        if not starting and len(key) >= MIN_CONTAINS:
            inside = [k for k in self.keys if key in k]

        def rank(candidate: str) -> tuple[int, int, str]:
            return (len(candidate), -self._count(candidate), candidate)

        chosen = (exact + sorted(prefix, key=rank) + sorted(inside, key=rank))[:MAX_MATCHES]
        if not chosen:
            return []
        conn = _connect(self.database)
        try:
            return [self._name(conn, k) for k in chosen]
        finally:
            conn.close()


def resolve(index_dir: Path | str, text: str) -> list[Name]:
    """The archive's names matching ``text``, best first (empty when none does)."""
    return NameTable.load(index_dir).find(text)


def _connect(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)


def _mean_position(exposures: tuple[dict[str, Any], ...]) -> tuple[float, float]:
    """The normalised mean of the pointing unit vectors (right across RA 0) [deg]."""
    ra = np.radians([e["ra"] for e in exposures])
    dec = np.radians([e["dec"] for e in exposures])
    xyz = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).mean(axis=1)
    norm = np.linalg.norm(xyz)
    if norm == 0:  # pointings that cancel out: the first one
        return float(np.degrees(ra[0])) % 360.0, float(np.degrees(dec[0]))
    x, y, z = xyz / norm
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arcsin(z)))
