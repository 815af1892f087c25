"""Scanning archives and building the index incrementally: ``python -m indexer build``.

Index folder layout (``INDEX_DIR``)::

    index.db              metadata (``indexer.store``): files, exposures, settings, schema version
    mocs/<MISSION>_<OBSID>_<CAMERA>.fits
                          one IVOA MOC 2.0 FITS file per exposure (mocpy, Aladin Lite)
    mocset-<generation>/  the MOC set of the exposures (``indexer.mocset``), memory-mapped
    manifest.json         written last, atomically: the current generation and MOC set folder

A build walks the archive folders recursively and looks at every FITS-like file (by name or
content, see ``footprint.looks_like_fits``). A file whose size and modification time match the
previous build is unchanged; otherwise its sha256 is compared, and only new or changed content is
read (``footprint.read_footprint``). Files that disappeared from the scanned folders (or from
disk) leave the index. Unreadable or non-EPIC files are reported and recorded as skipped, and
reported again by later builds as long as they stay in the archive.

Per (mission, obsid, camera) one file describes the exposure: an event list before an exposure
map (whose row then has ``source = 'expmap'`` and no ``n_events``), then the longer exposure,
then the first path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer import mocset as mocsets
from indexer import store
from indexer.footprint import INDEX_DEPTH, FootprintError, looks_like_fits, read_footprint

DB_NAME = "index.db"
#: Lock file of the builders of an index folder (``exclusive_lock``).
BUILD_LOCK = ".build.lock"
MANIFEST = "manifest.json"
MOC_FOLDER = "mocs"
#: Progress is reported every this many files.
PROGRESS_EVERY = 50

Progress = Callable[[str], None]


class BuildError(Exception):
    """A user error (missing archive folder, unusable index folder): one line for the user."""


@dataclass
class BuildReport:
    """Counts of one build (files), with the skipped files and why."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    #: files left for a later build because they changed less than ``min_age`` seconds ago
    pending: int = 0
    exposures: int = 0
    seconds: float = 0.0
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: exposure ids (``store.exposure_id``) that appeared, changed (new file) or left the index
    new_exposures: list[str] = field(default_factory=list)
    changed_exposures: list[str] = field(default_factory=list)
    removed_exposures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"added={self.added} updated={self.updated} removed={self.removed} "
            f"skipped={self.skipped} unchanged={self.unchanged} exposures={self.exposures} "
            + (f"pending={self.pending} " if self.pending else "")
            + f"seconds={self.seconds:.1f}"
        )


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block: builders
    of the same index (or HiPS) wait for each other instead of interleaving their writes."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan(archive_dirs: list[Path], exclude: Path | None = None) -> Iterator[Path]:
    """FITS-like files under the folders (recursive, sorted, symlinked folders not followed).

    ``exclude``: a folder left out (the index folder, if it lies inside an archive folder).
    """
    for root in archive_dirs:
        for folder, subfolders, names in os.walk(root):
            if exclude is not None and Path(folder).is_relative_to(exclude):
                subfolders.clear()
                continue
            subfolders.sort()
            for name in sorted(names):
                path = Path(folder, name)
                if path.is_file() and looks_like_fits(path):
                    yield path


def _check_dirs(archive_dirs: list[Path], index_dir: Path) -> tuple[list[Path], Path]:
    if not archive_dirs:
        raise BuildError("give at least one archive folder")
    roots = []
    for folder in archive_dirs:
        if not folder.exists():
            raise BuildError(f"archive folder not found: {folder}")
        if not folder.is_dir():
            raise BuildError(f"archive path is not a folder: {folder}")
        roots.append(folder.resolve())
    if index_dir.exists() and not index_dir.is_dir():
        raise BuildError(f"index path is not a folder: {index_dir}")
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        probe = index_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BuildError(
            f"index folder not writable: {index_dir} ({exc.strerror or exc})"
        ) from None
    return roots, index_dir.resolve()


def build_index(
    archive_dirs: list[Path],
    index_dir: Path,
    progress: Progress | None = None,
    *,
    depth: int = INDEX_DEPTH,
    min_age: float = 0.0,
) -> BuildReport:
    """Bring the index in ``index_dir`` up to date with the files under ``archive_dirs``.

    ``progress(message)`` gets a line such as ``"150/2000 files"`` every ``PROGRESS_EVERY`` files
    and at the end of the scan. Files modified less than ``min_age`` seconds ago are left for a
    later build (``report.pending``): a file still being written is not read half-written.
    Builds of the same index folder wait for each other (a lock file, ``BUILD_LOCK``).
    Raises :class:`BuildError` for unusable folders; bad files are only reported (``problems``).
    """
    started = time.perf_counter()
    roots, index_dir = _check_dirs([Path(p) for p in archive_dirs], Path(index_dir))
    with exclusive_lock(index_dir / BUILD_LOCK):
        report = _build(roots, index_dir, progress, depth, min_age)
    report.seconds = time.perf_counter() - started
    return report


def _build(
    roots: list[Path], index_dir: Path, progress: Progress | None, depth: int, min_age: float
) -> BuildReport:
    db = store.connect(index_dir / DB_NAME)
    if store.get_setting(db, "depth", str(depth)) != str(depth):
        raise BuildError(f"index {index_dir} was built at another MOC depth: use a new folder")
    store.set_setting(db, "depth", depth)
    known = store.file_states(db)
    report = BuildReport()
    paths = list(scan(roots, exclude=index_dir))
    seen = set()
    now = time.time()
    for done, path in enumerate(paths, start=1):
        key = str(path)
        seen.add(key)
        if min_age > 0 and _younger_than(path, min_age, now):
            # being written, perhaps: keep what the index knows of it (if anything) and let a
            # later build read it once it has settled
            report.pending += 1
            continue
        _update_file(db, path, known.get(key), depth, report)
        if progress and (done % PROGRESS_EVERY == 0 or done == len(paths)):
            progress(f"{done}/{len(paths)} files")
    gone = [
        path
        for path, state in known.items()
        if path not in seen and (_under(path, roots) or not Path(path).exists())
    ]
    report.removed = sum(known[path]["status"] == "indexed" for path in gone)
    store.delete_files(db, gone)
    report.exposures = _publish(db, index_dir, depth, report)
    return report


def _younger_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime < seconds
    except OSError:
        return False


def _under(path: str, roots: list[Path]) -> bool:
    return any(Path(path).is_relative_to(root) for root in roots)


def _update_file(
    db: Any, path: Path, known: dict[str, Any] | None, depth: int, report: BuildReport
) -> None:
    stat = path.stat()
    if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
        _count_unchanged(known, path, report)
        return
    checksum = sha256(path)
    if known and known["checksum"] == checksum:
        store.touch_file(db, str(path), mtime_ns=stat.st_mtime_ns)
        _count_unchanged(known, path, report)
        return
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "checksum": checksum}
    try:
        footprint = read_footprint(path, depth)
    except FootprintError as exc:
        store.put_file(db, str(path), status="skipped", reason=str(exc), **record)
        report.skipped += 1
        report.problems.append((str(path), str(exc)))
        return
    ranges = mocsets.moc_to_ranges(footprint.moc, depth)
    store.put_file(
        db, str(path), status="indexed", meta=footprint.meta, depth=depth, ranges=ranges, **record
    )
    if known is None:
        report.added += 1
    else:
        report.updated += 1


def _count_unchanged(known: dict[str, Any], path: Path, report: BuildReport) -> None:
    if known["status"] == "indexed":
        report.unchanged += 1
    else:
        report.skipped += 1
        report.problems.append((str(path), known["reason"] or "skipped"))


def _rank(row: dict[str, Any]) -> tuple:
    """Sort key choosing the file that describes an exposure (smallest first)."""
    return (row["source"] != "events", -(row.get("exposure") or 0.0), row["path"])


def choose_exposures(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One file per (mission, obsid, camera): event list first, then longest, then first path."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in files:
        key = tuple(row[k] for k in store.EXPOSURE_KEY)
        if key not in best or _rank(row) < _rank(best[key]):
            best[key] = row
    return [best[key] for key in sorted(best)]


def moc_file_name(row: dict[str, Any]) -> str:
    return f"{row['mission']}_{row['obsid']}_{row['camera']}.fits"


def _publish(db: Any, index_dir: Path, depth: int, report: BuildReport | None = None) -> int:
    """Derive the exposures from the files; write MOC FITS files and the MOC set; return count.

    ``report`` gets the exposure ids that appeared, changed file or content, and left."""
    chosen = choose_exposures(store.indexed_files(db))
    for row in chosen:
        row["moc_file"] = f"{MOC_FOLDER}/{moc_file_name(row)}"
    before = {(r["mission"], r["obsid"], r["camera"]): r for r in store.exposures(db)}
    stored = store.replace_exposures(db, chosen)
    if report is not None:
        after = {(r["mission"], r["obsid"], r["camera"]): r for r in stored}
        report.new_exposures = [store.exposure_id(after[k]) for k in after if k not in before]
        report.removed_exposures = [store.exposure_id(before[k]) for k in before if k not in after]
        report.changed_exposures = [
            store.exposure_id(row)
            for key, row in after.items()
            if key in before
            and (before[key]["path"], before[key]["checksum"]) != (row["path"], row["checksum"])
        ]
    ranges = store.file_ranges(db, [row["path"] for row in stored])
    moc_dir = index_dir / MOC_FOLDER
    moc_dir.mkdir(exist_ok=True)
    wanted = set()
    for row in stored:
        target = index_dir / row["moc_file"]
        wanted.add(target.name)
        old = before.get((row["mission"], row["obsid"], row["camera"]))
        fresh = old and old["path"] == row["path"] and old["checksum"] == row["checksum"]
        if not (fresh and target.exists()):
            moc = mocsets.ranges_to_moc(ranges[row["path"]], depth)
            moc.save(str(target), format="fits", overwrite=True)
    for stale in moc_dir.glob("*.fits"):
        if stale.name not in wanted:
            stale.unlink()
    mocset = mocsets.from_ranges(
        [row["id"] for row in stored], [ranges[row["path"]] for row in stored], depth
    )
    write_mocset(index_dir, mocset, db)
    return len(stored)


def write_mocset(index_dir: Path, mocset: mocsets.MocSet, db: Any) -> None:
    """Save ``mocset`` as a new generation, switch ``manifest.json`` to it, drop old ones."""
    generation = int(store.get_setting(db, "generation", "0")) + 1
    folder = index_dir / f"mocset-{generation}"
    if folder.exists():
        shutil.rmtree(folder)
    mocsets.save(mocset, folder)
    store.set_setting(db, "generation", generation)
    manifest = {
        "generation": generation,
        "mocset": folder.name,
        "database": DB_NAME,
        "depth": mocset.depth,
        "n_mocs": len(mocset),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = index_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, index_dir / MANIFEST)
    for old in index_dir.glob("mocset-*"):
        if old.name != folder.name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


# --- CLI ----------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build",
        help="index EPIC event lists and exposure maps (incremental)",
        description="Scan archive folders recursively and bring the index up to date: new or "
        "changed files are read, removed files leave the index, bad files are reported.",
    )
    parser.add_argument("archive_dirs", nargs="+", type=Path, metavar="ARCHIVE_DIR")
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.set_defaults(func=run)


def _print_progress(message: str) -> None:
    print(f"[build] {message}", file=sys.stderr, flush=True)


def run(args: Any) -> int:
    from indexer.cli import CLIError

    try:
        report = build_index(args.archive_dirs, args.index, progress=_print_progress)
    except BuildError as exc:
        raise CLIError(str(exc)) from None
    for path, reason in report.problems:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0
