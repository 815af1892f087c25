"""Object names of the archive: find the observations whose ``OBJECT`` matches a typed name.

The index stores each exposure's ``OBJECT`` header keyword (column ``object`` of the
``exposures`` table, from the instruments' ``describe``) and its pointing (``ra_pnt``,
``dec_pnt``). :func:`resolve` reads them from the index's SQLite database (read-only; loaded
once per process and index build, like ``indexer.index.Index.load``) and matches names without
regard to case and spaces: ``"rxcj0958"`` finds ``"RXCJ0958.3-1103"``. Matches are ranked: the
whole name, then names that start with the typed text, then names that contain it (at least
:data:`MIN_CONTAINS` characters). The position of a name is the mean pointing of its exposures.
"""

from __future__ import annotations

import json
import re
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
_SPACES = re.compile(r"\s+")


def normalise(name: str) -> str:
    """A name as matched: lower case, without white space."""
    return _SPACES.sub("", name).casefold()


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
    """The archive's object names, normalised and sorted for prefix search."""

    _cache: dict[Path, tuple[tuple[int, int, int], NameTable]] = {}
    _lock = threading.Lock()

    def __init__(self, rows: list[tuple]) -> None:
        by_key: dict[str, dict[str, list]] = {}
        for mission, obsid, camera, name, ra, dec in rows:
            key = normalise(name)
            if not key or ra is None or dec is None:
                continue
            entry = by_key.setdefault(key, {"names": {}, "exposures": []})
            entry["names"][name] = entry["names"].get(name, 0) + 1
            entry["exposures"].append(
                {
                    "exposure_id": store.exposure_id(
                        {"mission": mission, "obsid": obsid, "camera": camera}
                    ),
                    "ra": float(ra),
                    "dec": float(dec),
                }
            )
        self.names: dict[str, Name] = {}
        for key, entry in by_key.items():
            spelling = max(entry["names"], key=lambda n: (entry["names"][n], n))
            ra, dec = _mean_position(entry["exposures"])
            self.names[key] = Name(spelling, ra, dec, tuple(entry["exposures"]))
        self.keys = sorted(self.names)

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
        db = store.connect(folder / manifest.get("database", DB_NAME), readonly=True)
        try:
            rows = db.conn.execute(
                "SELECT mission, obsid, camera, object, ra_pnt, dec_pnt FROM exposures "
                "WHERE object IS NOT NULL AND object != ''"
            ).fetchall()
        except sqlite3.Error as exc:
            raise FileNotFoundError(f"cannot read the index in {folder}: {exc}") from None
        finally:
            db.conn.close()
        table = cls(rows)
        with cls._lock:
            cls._cache[folder] = (stamp, table)
        return table

    def find(self, text: str) -> list[Name]:
        """The names matching ``text``, best first (see the module's ranking), at most
        :data:`MAX_MATCHES`; within a rank the shorter names and those with more exposures
        first."""
        key = normalise(text)
        if not key:
            return []
        exact = [self.names[key]] if key in self.names else []
        start = bisect_left(self.keys, key)
        prefix = []
        for candidate in self.keys[start:]:
            if not candidate.startswith(key):
                break
            if candidate != key:
                prefix.append(self.names[candidate])
        found = {id(n) for n in exact + prefix}
        contains = []
        if len(key) >= MIN_CONTAINS:
            contains = [
                self.names[k] for k in self.keys if key in k and id(self.names[k]) not in found
            ]

        def rank(name: Name) -> tuple[int, int]:
            return (len(normalise(name.object)), -len(name.exposures))

        return (exact + sorted(prefix, key=rank) + sorted(contains, key=rank))[:MAX_MATCHES]


def resolve(index_dir: Path | str, text: str) -> list[Name]:
    """The archive's names matching ``text``, best first (empty when none does)."""
    return NameTable.load(index_dir).find(text)


def _mean_position(exposures: list[dict[str, Any]]) -> tuple[float, float]:
    """The normalised mean of the pointing unit vectors (right across RA 0) [deg]."""
    ra = np.radians([e["ra"] for e in exposures])
    dec = np.radians([e["dec"] for e in exposures])
    xyz = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).mean(axis=1)
    norm = np.linalg.norm(xyz)
    if norm == 0:
        return float(np.degrees(ra[0])), float(np.degrees(dec[0]))
    x, y, z = xyz / norm
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arcsin(z)))
