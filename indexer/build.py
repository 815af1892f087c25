"""Scanning archives and building the index incrementally: ``python -m indexer build``.

Index folder layout (``INDEX_DIR``)::

    index.db              metadata (``indexer.store``): files, exposures, settings, schema version
    mocs/<MISSION>_<OBSID>_<CAMERA>.fits
                          one IVOA MOC 2.0 FITS file per exposure (mocpy, Aladin Lite)
    mocset-<generation>/  a MOC set segment (``indexer.mocset``), memory-mapped by readers
    manifest.json         written last, atomically: the current generation and its segments

A build walks the archive folders recursively and looks at every FITS-like file (by name or
content, see ``footprint.looks_like_fits``). A file whose size and modification time match the
previous build is unchanged; otherwise its sha256 is compared, and only new or changed content is
read (``footprint.read_footprint``). Files that disappeared from the scanned folders (or from
disk) leave the index. Unreadable or non-EPIC files are reported and recorded as skipped, and
reported again by later builds as long as they stay in the archive.

Per (mission, obsid, camera) one file describes the exposure: an event list before an exposure
map (whose row then has ``source = 'expmap'`` and no ``n_events``), then the longer exposure,
then the first path.

Generations. A generation is a list of MOC set segments (``manifest.json``: ``segments``, base
first). What a build publishes depends on what changed:

- nothing the exposures depend on (files unchanged, touched, or skipped): no new generation;
- only new files, whose (mission, obsid, camera) are not indexed yet (the usual ingest case):
  their exposure rows are added and their MOCs written as one more small segment
  (:func:`append_mocset`); the base and the earlier segments are not read or written again.
  Past ``MAX_DELTAS`` deltas they are merged into one; once they hold ``DELTA_FRACTION`` of the
  base, the whole set is rebuilt;
- anything else (a file changed or removed, a new file competing with an indexed exposure, a
  first build, a MOC set of an older format, ``--rebuild``): every exposure is derived again in SQL
  (``store.sync_exposures``) and the MOC set rebuilt from the database into one segment,
  streaming (:func:`rebuild_mocset`). Removals thus cost a full rebuild (tens of seconds for a
  million exposures); there are no tombstones.

Segments are never modified once written, and the manifest is replaced atomically after the new
segment is complete, so a reader sees either the old generation or the new one. Folders no
longer named by the manifest are deleted; a reader that already memory-mapped them keeps them
readable (POSIX semantics) until it reloads.
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
    rebuild: bool = False,
) -> BuildReport:
    """Bring the index in ``index_dir`` up to date with the files under ``archive_dirs``.

    ``progress(message)`` gets a line such as ``"150/2000 files"`` every ``PROGRESS_EVERY`` files
    and at the end of the scan. Files modified less than ``min_age`` seconds ago are left for a
    later build (``report.pending``): a file still being written is not read half-written.
    Builds of the same index folder wait for each other (a lock file, ``BUILD_LOCK``).
    ``rebuild``: derive every exposure and write the whole MOC set again even if nothing
    changed. Raises :class:`BuildError` for unusable folders; bad files are only reported (``problems``).
    """
    started = time.perf_counter()
    roots, index_dir = _check_dirs([Path(p) for p in archive_dirs], Path(index_dir))
    with exclusive_lock(index_dir / BUILD_LOCK):
        report = _build(roots, index_dir, progress, depth, min_age, rebuild)
    report.seconds = time.perf_counter() - started
    return report


def _build(
    roots: list[Path],
    index_dir: Path,
    progress: Progress | None,
    depth: int,
    min_age: float,
    rebuild: bool = False,
) -> BuildReport:
    db = store.connect(index_dir / DB_NAME)
    if store.get_setting(db, "depth", str(depth)) != str(depth):
        raise BuildError(f"index {index_dir} was built at another MOC depth: use a new folder")
    store.set_setting(db, "depth", depth)
    known = store.file_states(db)
    report = BuildReport()
    paths = list(scan(roots, exclude=index_dir))
    seen = set()
    added: list[str] = []  # files indexed by this build that the index did not hold before
    now = time.time()
    for done, path in enumerate(paths, start=1):
        key = str(path)
        seen.add(key)
        if min_age > 0 and _younger_than(path, min_age, now):
            # being written, perhaps: keep what the index knows of it (if anything) and let a
            # later build read it once it has settled
            report.pending += 1
            continue
        before = report.added + report.updated
        _update_file(db, path, known.get(key), depth, report)
        if report.added + report.updated > before:
            added.append(key)
        if progress and (done % PROGRESS_EVERY == 0 or done == len(paths)):
            progress(f"{done}/{len(paths)} files")
    gone = [
        path
        for path, state in known.items()
        if path not in seen and (_under(path, roots) or not Path(path).exists())
    ]
    report.removed = sum(known[path]["status"] == "indexed" for path in gone)
    store.delete_files(db, gone)
    # an indexed file that changed or left may change or remove exposures: full publish
    replaced = any((known.get(path) or {}).get("status") == "indexed" for path in added)
    manifest = read_manifest(index_dir)
    stale = manifest is None or manifest.get("mocset_format") != mocsets.FORMAT_VERSION
    if rebuild or stale or report.removed or replaced:
        report.exposures = _publish(db, index_dir, depth, report)
    elif added:
        report.exposures = _publish_new(db, index_dir, depth, added, report)
    else:  # nothing the exposures depend on changed: the published generation stays
        report.exposures = store.count_exposures(db)
    db.conn.close()
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
    meta = footprint.meta
    if footprint.pixel_wcs is not None:  # kept beside the row (store.pixel_wcs), not a column
        meta = {**meta, store.PIXEL_WCS: footprint.pixel_wcs}
    store.put_file(db, str(path), status="indexed", meta=meta, depth=depth, ranges=ranges, **record)
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
    """Sort key choosing the file that describes an exposure (smallest first); the same order
    as ``store.sync_exposures``'s SQL."""
    return (row.get("source") != "events", -(row.get("exposure") or 0.0), row["path"])


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


def _moc_file(row: dict[str, Any]) -> str | None:
    """The MOC FITS file of an exposure row (none for synthetic footprints)."""
    if (row.get("path") or "").startswith(store.SYNTHETIC_PREFIX):
        return None
    return f"{MOC_FOLDER}/{moc_file_name(row)}"


def _write_moc_files(db: Any, index_dir: Path, rows: list[dict[str, Any]], depth: int) -> None:
    """Write the MOC FITS file of each row that names one."""
    rows = [row for row in rows if row.get("moc_file")]
    if not rows:
        return
    (index_dir / MOC_FOLDER).mkdir(exist_ok=True)
    ranges = store.file_ranges(db, [row["path"] for row in rows])
    for row in rows:
        mocsets.write_range_fits(index_dir / row["moc_file"], ranges[row["path"]], depth)


def _publish(db: Any, index_dir: Path, depth: int, report: BuildReport | None = None) -> int:
    """Derive all exposures from the indexed files (``store.sync_exposures``, in SQL), write
    the MOC FITS files of new and changed ones, remove those of removed ones, and rebuild the
    whole MOC set from the database, streaming (:func:`rebuild_mocset`); return the count.

    ``report`` gets the exposure ids that appeared, changed file or content, and left."""
    delta = store.sync_exposures(db, _moc_file)
    if report is not None:
        report.new_exposures = [store.exposure_id(row) for row in delta["new"]]
        report.changed_exposures = [store.exposure_id(row) for row in delta["changed"]]
        report.removed_exposures = [store.exposure_id(row) for row in delta["removed"]]
    _write_moc_files(db, index_dir, delta["new"] + delta["changed"], depth)
    keep = {row["moc_file"] for row in delta["new"] + delta["changed"]}
    for row in delta["removed"]:
        if row.get("moc_file") and row["moc_file"] not in keep:
            (index_dir / row["moc_file"]).unlink(missing_ok=True)
    return rebuild_mocset(db, index_dir, depth)


def _publish_new(
    db: Any, index_dir: Path, depth: int, paths: list[str], report: BuildReport
) -> int:
    """Publish files that only add exposures: new exposure rows, their MOC FITS files and one
    new MOC set segment (:func:`append_mocset`); the rest of the index is not read again.
    Falls back to :func:`_publish` when one of them competes with an exposure already indexed
    (another file of the same mission, obsid and camera)."""
    files = [
        store.exposure_record(row["meta"], row["path"], row["size"], row["checksum"])
        for row in store.indexed_files_at(db, paths)
    ]
    chosen = choose_exposures(files)
    keys = [tuple(row[k] for k in store.EXPOSURE_KEY) for row in chosen]
    if store.existing_keys(db, keys):
        return _publish(db, index_dir, depth, report)
    for row in chosen:
        row["moc_file"] = _moc_file(row)
    stored = store.add_exposures(db, chosen)
    report.new_exposures = [store.exposure_id(row) for row in stored]
    _write_moc_files(db, index_dir, stored, depth)
    ranges = store.file_ranges(db, [row["path"] for row in stored])
    append_mocset(
        index_dir,
        mocsets.from_ranges(
            [row["id"] for row in stored], [ranges[r["path"]] for r in stored], depth
        ),
        db,
    )
    return store.count_exposures(db)


def publish_added(index_dir: Path, paths: list[str], depth: int = INDEX_DEPTH) -> BuildReport:
    """The last step of a build that found only new files, for files already recorded in the
    index database (``store.put_file`` or ``store.insert_files``): add their exposures and
    publish them as one more MOC set segment (or fall back to a full publish, see
    :func:`_publish_new`), holding the build lock. Benchmarks and tests use it to append
    footprints without reading FITS files."""
    index_dir = Path(index_dir)
    report = BuildReport(added=len(paths))
    started = time.perf_counter()
    with exclusive_lock(index_dir / BUILD_LOCK):
        db = store.connect(index_dir / DB_NAME)
        try:
            report.exposures = _publish_new(db, index_dir, depth, list(paths), report)
        finally:
            db.conn.close()
    report.seconds = time.perf_counter() - started
    return report


# --- MOC set generations ----------------------------------------------------------------------

#: Most delta segments after the base before they are merged into one delta.
MAX_DELTAS: int = 8
#: The deltas are merged into a new base (a full rebuild) once they hold this fraction of the
#: base's MOCs and at least ``DELTA_MIN_MOCS`` MOCs (below that, merging deltas is cheap).
DELTA_FRACTION: float = 0.25
DELTA_MIN_MOCS: int = 10_000


def read_manifest(index_dir: Path) -> dict[str, Any] | None:
    """The current manifest of an index folder, or None (none yet, or unreadable)."""
    try:
        manifest = json.loads((Path(index_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def segment_names(manifest: dict[str, Any]) -> list[str]:
    """The MOC set folders of a generation, base first (manifests of one folder only have
    ``mocset``)."""
    return list(manifest.get("segments") or [manifest["mocset"]])


def _next_folder(index_dir: Path, db: Any) -> tuple[int, Path]:
    generation = int(store.get_setting(db, "generation", "0")) + 1
    store.set_setting(db, "generation", generation)
    folder = index_dir / f"mocset-{generation}"
    if folder.exists():
        shutil.rmtree(folder)
    return generation, folder


def _switch(
    index_dir: Path, generation: int, segments: list[str], depth: int, counts: list[int]
) -> None:
    """Write ``manifest.json`` (atomically: a reader sees the old or the new one, never a
    mixture) for a generation made of ``segments`` (folders already complete), then drop the
    MOC set folders it no longer uses."""
    manifest = {
        "generation": generation,
        "mocset": segments[0],
        "segments": segments,
        "segment_mocs": counts,
        "mocset_format": mocsets.FORMAT_VERSION,
        "database": DB_NAME,
        "depth": depth,
        "n_mocs": sum(counts),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = index_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, index_dir / MANIFEST)
    # a reader that loaded an older generation keeps its memory maps of removed files
    for old in index_dir.glob("mocset-*"):
        if old.name not in segments and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def write_mocset(index_dir: Path, mocset: mocsets.MocSet, db: Any) -> None:
    """Save ``mocset`` as a new generation, switch ``manifest.json`` to it, drop old ones."""
    generation, folder = _next_folder(index_dir, db)
    mocsets.save(mocset, folder)
    _switch(index_dir, generation, [folder.name], mocset.depth, [len(mocset)])


def rebuild_mocset(db: Any, index_dir: Path, depth: int) -> int:
    """Write the MOC set of every exposure in the database as a new one-segment generation,
    streaming from the database (``store.iter_exposure_ranges``: memory stays bounded whatever
    the number of exposures) in sky order (:func:`indexer.mocset.sky_order`: a query reads its
    MOCs' ranges in a few blocks); return the number of MOCs."""
    generation, folder = _next_folder(index_dir, db)
    ids, ra, dec = store.exposure_pointings(db)
    in_sky_order = ids[mocsets.sky_order(ra, dec)]
    sizes = mocsets.write_streamed(folder, store.iter_exposure_ranges(db, in_sky_order), depth)
    _switch(index_dir, generation, [folder.name], depth, [sizes["mocs"]])
    return sizes["mocs"]


def append_mocset(index_dir: Path, delta: mocsets.MocSet, db: Any) -> None:
    """Publish a generation made of the current one plus ``delta`` (MOCs of new exposures) as
    one more segment; the segments already written are not touched.

    Keeps the segment count small: past ``MAX_DELTAS`` deltas they are merged into one (their
    size, not the base's, is read), and once the deltas hold ``DELTA_FRACTION`` of the base's
    MOCs (and at least ``DELTA_MIN_MOCS``) the whole set is rebuilt from the database (:func:`rebuild_mocset`)."""
    manifest = read_manifest(index_dir)
    if manifest is None:
        rebuild_mocset(db, index_dir, delta.depth)
        return
    names = segment_names(manifest)
    counts = list(manifest.get("segment_mocs") or [])
    if len(counts) != len(names):
        counts = [len(mocsets.load(index_dir / name).ids) for name in names]
    in_deltas = sum(counts[1:]) + len(delta)
    if in_deltas > max(DELTA_FRACTION * counts[0], DELTA_MIN_MOCS):
        rebuild_mocset(db, index_dir, delta.depth)
        return
    if len(names) - 1 >= MAX_DELTAS:
        merged = mocsets.concatenate([*(mocsets.load(index_dir / n) for n in names[1:]), delta])
        names, counts, delta = names[:1], counts[:1], merged
    generation, folder = _next_folder(index_dir, db)
    mocsets.save(delta, folder)
    _switch(index_dir, generation, [*names, folder.name], delta.depth, [*counts, len(delta)])


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
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="derive every exposure and write the whole MOC set again, even if nothing changed",
    )
    parser.set_defaults(func=run)


def _print_progress(message: str) -> None:
    print(f"[build] {message}", file=sys.stderr, flush=True)


def run(args: Any) -> int:
    from indexer.cli import CLIError

    try:
        report = build_index(
            args.archive_dirs, args.index, progress=_print_progress, rebuild=args.rebuild
        )
    except BuildError as exc:
        raise CLIError(str(exc)) from None
    for path, reason in report.problems:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0
