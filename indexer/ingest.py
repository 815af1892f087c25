"""Ingest while running: watch the archive folders and keep the index (and its HiPS) current.

:func:`watch` builds the index once, then waits for file-system events under the archive folders
(``watchfiles``: inotify on Linux) and rebuilds incrementally (``indexer.build.build_index``)
after each burst of changes. Safety nets:

- a **periodic rescan** every ``rescan`` seconds, for file systems that send no events (NFS,
  object-store mounts) and for events lost while a build ran;
- **settling**: a file modified less than ``settle`` seconds ago is left for a later build
  (``min_age``), and the watcher wakes up again once it has settled, so a file still being
  copied is not read half-written (a truncated gzip or FITS file is also refused by
  ``read_footprint`` and retried when it changes);
- **one builder at a time**: ``build_index`` holds the index folder's lock, so a manual
  ``python -m indexer build`` and the watcher wait for each other.

Readers need no signal: ``Index.load`` notices the new ``manifest.json`` (written last, atomically)
and loads the new MOC set generation. When only new files arrived (the usual case), the build
appends their exposures as one more small MOC set segment instead of rebuilding the set (0.16 s
for 1,000 exposures on a million-footprint index); a changed or removed file still rebuilds it
(``indexer.build``). After a build that changed exposures, the HiPS of the
archive is rebuilt (``indexer.hips.build_hips``, incremental by its input key) so the viewer's
background shows the new fields, then ``on_change(report)`` is called, e.g. to start the runs of
standing requests (``app.ingest``).

``python -m indexer watch ARCHIVE_DIR [...] --index DIR`` runs it in the foreground.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.build import BuildError, BuildReport, build_index

log = logging.getLogger("regio.ingest")

#: Seconds a file must stay unmodified before it is read.
SETTLE_SECONDS: float = 2.0
#: Seconds between two full rescans when no event arrives.
RESCAN_SECONDS: float = 60.0
#: Milliseconds watchfiles waits for more events after the first of a burst.
DEBOUNCE_MS: int = 500
#: Milliseconds between two wake-ups of the watcher without events (settling, rescans, stop).
TICK_MS: int = 500

OnChange = Callable[[BuildReport], None]


def changed(report: BuildReport) -> bool:
    """Whether a build changed the set of exposures or their content."""
    return bool(report.new_exposures or report.removed_exposures or report.changed_exposures)


def ingest_once(
    archive_dirs: list[Path],
    index_dir: Path,
    *,
    settle: float = SETTLE_SECONDS,
    hips: bool = True,
    on_change: OnChange | None = None,
) -> BuildReport:
    """One incremental build (files younger than ``settle`` seconds wait), then, if exposures
    changed, the HiPS and ``on_change(report)``. Errors of the HiPS or the callback are logged,
    never raised: the index is already up to date."""
    report = build_index(archive_dirs, index_dir, min_age=settle)
    if changed(report):
        log.info(
            "index updated: %d new, %d changed, %d removed exposures (%s)",
            len(report.new_exposures),
            len(report.changed_exposures),
            len(report.removed_exposures),
            report.summary(),
        )
        if hips:
            try:
                from indexer.hips import build_hips

                build_hips(index_dir)
            except Exception:  # the sky image is a convenience: never stop ingest for it
                log.exception("HiPS rebuild failed")
        if on_change is not None:
            try:
                on_change(report)
            except Exception:
                log.exception("ingest callback failed")
    for path, reason in report.problems:
        log.debug("skipped %s: %s", path, reason)
    return report


def watch(
    archive_dirs: list[Path],
    index_dir: Path,
    *,
    on_change: OnChange | None = None,
    settle: float = SETTLE_SECONDS,
    rescan: float = RESCAN_SECONDS,
    hips: bool = True,
    stop: threading.Event | None = None,
) -> None:
    """Keep ``index_dir`` current with ``archive_dirs`` until ``stop`` is set (see module doc)."""
    import watchfiles

    stop = stop or threading.Event()
    dirs = [Path(d) for d in archive_dirs]
    report = ingest_once(dirs, index_dir, settle=settle, hips=hips, on_change=on_change)
    last = time.monotonic()
    # one watcher for the whole loop: events that arrive during a build are kept for the next
    # turn; it also wakes up every TICK_MS so settled files and rescans are not missed
    for events in watchfiles.watch(
        *dirs,
        stop_event=stop,
        debounce=DEBOUNCE_MS,
        rust_timeout=TICK_MS,
        yield_on_timeout=True,
        watch_filter=_outside(index_dir),
        raise_interrupt=False,
    ):
        now = time.monotonic()
        due = events or now - last >= rescan or (report.pending and now - last >= settle)
        if stop.is_set():
            break
        if not due:
            continue
        try:
            report = ingest_once(dirs, index_dir, settle=settle, hips=hips, on_change=on_change)
        except BuildError as exc:  # e.g. an archive folder unmounted: say so, try again later
            log.error("index build failed: %s", exc)
        last = time.monotonic()


def _outside(index_dir: Path) -> Callable[[Any, str], bool]:
    """A watchfiles filter ignoring the index folder (it may lie inside an archive folder)."""
    index = str(Path(index_dir).resolve())

    def keep(change: Any, path: str) -> bool:
        return not (path == index or path.startswith(index + "/"))

    return keep


# --- CLI ----------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="keep the index current while files arrive (watch the archive folders)",
        description="Build the index, then rebuild it incrementally whenever files under the "
        "archive folders change (and every --rescan seconds); Ctrl-C stops.",
    )
    parser.add_argument("archive_dirs", nargs="+", type=Path, metavar="ARCHIVE_DIR")
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="[s]")
    parser.add_argument("--rescan", type=float, default=RESCAN_SECONDS, help="[s]")
    parser.add_argument("--no-hips", action="store_true", help="do not rebuild the sky image")
    parser.set_defaults(func=run)


def run(args: Any) -> int:
    from indexer.cli import CLIError

    if args.settle < 0 or args.rescan <= 0:
        raise CLIError("--settle must be >= 0 and --rescan > 0 seconds")
    logging.basicConfig(level=logging.INFO, format="[ingest] %(message)s", stream=sys.stderr)
    try:
        watch(
            args.archive_dirs,
            args.index,
            settle=args.settle,
            rescan=args.rescan,
            hips=not args.no_hips,
        )
    except BuildError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return 0
