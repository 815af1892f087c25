"""Session folders: the only code that knows the file names under REGIO_SESSIONS.

A session is a user's working folder::

    <sessions>/<id>/
        session.json        id, owner, title, created, updated, view (viewer centre and field)
        source.reg          source region, DS9, ICRS     (written with app.shapes.to_ds9)
        background.reg      background region, DS9, ICRS
        regions.json        both regions as viewer JSON shapes (ICRS), and the DS9 ``frame`` the
                            user works in (shown and exported in it; "icrs" when absent)
        coverage.json       the covering exposure rows found by the indexer (``exposure_id``,
                            mission, instrument, camera, kind, metadata, path)
        selection.json      {"exposures": ["MISSION:OBSID:CAMERA", ...]} (exposure ids)
        runs/<run id>/      one folder per run (layout owned by app.runs)

Every write goes to a temporary file renamed over the old one, so a reader never sees half a file
and a failed request leaves the previous state intact. Session ids are checked against a strict
pattern before any path is built from them.

Sessions written before instruments were plug-ins keep working: their selection
(``{"observations": [{"obsid", "camera"}]}``, XMM only) and coverage rows (no ``exposure_id``) are
upgraded the first time they are read (:func:`upgrade_coverage`, :func:`upgrade_selection`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regions import Regions

from app import bodies, shapes
from app.plumbing import now, write_atomic, write_json
from indexer.instruments import PROCESSABLE_KINDS
from indexer.limits import MAX_TITLE_CHARS
from indexer.store import default_kind, exposure_id

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
#: Most exposures a selection may name.
MAX_SELECTION = 10_000


class SessionNotFound(LookupError):
    """No session with that id (or the id is malformed)."""


class SelectionError(ValueError):
    """A selection names observations that do not cover the session's region."""


class TitleError(ValueError):
    """A title that is not one line of text of at most ``MAX_TITLE_CHARS`` characters."""


def new_id() -> str:
    return secrets.token_urlsafe(9)  # 12 url-safe characters, 72 random bits


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


class SessionStore:
    """Session folders under ``root``. Plain object: give it the folder, use it anywhere."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def folder(self, session_id: str) -> Path:
        if not isinstance(session_id, str) or not ID_PATTERN.match(session_id):
            raise SessionNotFound(session_id)
        return self.root / session_id

    def _existing(self, session_id: str) -> Path:
        folder = self.folder(session_id)
        if not (folder / "session.json").is_file():
            raise SessionNotFound(session_id)
        return folder

    def exists(self, session_id: str) -> bool:
        try:
            self._existing(session_id)
        except SessionNotFound:
            return False
        return True

    def create(
        self,
        source: Regions,
        background: Regions | None,
        owner: str | None = None,
        title: str | None = None,
        frame: str | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> str:
        """Make a new session folder holding validated regions; returns its id. With ``rows``,
        the folder holds its first coverage too (as :meth:`set_coverage` stores it), written
        before it appears: one rename, no file of the session replaced."""
        session_id = new_id()
        folder = self.folder(session_id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".new-"))
        try:
            stamp = now("seconds")
            record = {"id": session_id, "owner": owner, "title": title or "", "created": stamp,
                      "updated": stamp, "view": None}  # fmt: skip
            write_json(tmp / "session.json", record)
            self._write_regions(tmp, source, background, frame)
            if rows is not None:
                rows = upgrade_coverage(rows)
                write_json(tmp / "coverage.json", rows)
                write_json(tmp / "selection.json", {"exposures": _first_selection(rows)})
            (tmp / "runs").mkdir()
            os.replace(tmp, folder)  # the session appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return session_id

    def _write_regions(
        self, folder: Path, source: Regions, background: Regions | None, frame: str | None = None
    ) -> None:
        """The DS9 files are the reference; the JSON is made from them, so both say the same.
        ``frame``: the user's DS9 frame (None keeps the one stored, else "icrs")."""
        texts = {"source": shapes.to_ds9(source)}
        if background is not None:
            texts["background"] = shapes.to_ds9(background)
        previous = _read_json(folder / "regions.json", {}) or {}
        as_json = {"source": None, "background": None}
        as_json["frame"] = shapes.check_frame(frame or previous.get("frame") or "icrs")
        as_json.update({name: shapes.to_json(shapes.parse(t)) for name, t in texts.items()})
        for name, text in texts.items():
            write_atomic(folder / f"{name}.reg", text)
        if background is None:
            (folder / "background.reg").unlink(missing_ok=True)
        write_json(folder / "regions.json", as_json)

    def record(self, session_id: str) -> dict[str, Any]:
        """The session record alone (id, owner, title, times, view): cheap, for access checks."""
        return _read_json(self._existing(session_id) / "session.json")

    def get(self, session_id: str) -> dict[str, Any]:
        """The session record with its regions (JSON and DS9), coverage and selection."""
        folder = self._existing(session_id)
        record = _read_json(folder / "session.json")
        regions = _read_json(folder / "regions.json", {"source": None, "background": None})
        record["regions"] = {
            **regions,
            "frame": regions.get("frame") or "icrs",  # sessions made before frames were kept
            "source_ds9": _read_text(folder / "source.reg"),
            "background_ds9": _read_text(folder / "background.reg"),
        }
        record["coverage"] = self._coverage(folder)
        record["selection"] = {"exposures": self._selection(folder) or []}
        return record

    def regions(self, session_id: str) -> tuple[Regions, Regions | None]:
        """The stored source and background regions as ``regions`` objects."""
        folder = self._existing(session_id)
        source = shapes.parse(_read_text(folder / "source.reg"))
        background_text = _read_text(folder / "background.reg")
        return source, shapes.parse(background_text) if background_text else None

    def set_regions(
        self,
        session_id: str,
        source: Regions,
        background: Regions | None,
        frame: str | None = None,
    ) -> None:
        folder = self._existing(session_id)
        self._write_regions(folder, source, background, frame)
        self._touch(folder)

    def set_coverage(self, session_id: str, rows: list[dict[str, Any]]) -> None:
        """Store the covering exposures and keep only the selected ones that still cover.

        The first coverage of a session selects the covering exposures holding data to process
        (``indexer.instruments.PROCESSABLE_KINDS``) of the instrument covering most of the region.
        """
        folder = self._existing(session_id)
        rows = upgrade_coverage(rows)
        write_json(folder / "coverage.json", rows)
        covering = [r["exposure_id"] for r in rows]
        selection = self._selection(folder)
        if selection is None:  # first coverage
            kept = _first_selection(rows)
        else:
            kept = [e for e in selection if e in set(covering)]
        write_json(folder / "selection.json", {"exposures": kept})
        self._touch(folder)

    def set_selection(self, session_id: str, exposures: Any) -> list[str]:
        """Replace the selection with a list of covering exposure ids (duplicates dropped)."""
        folder = self._existing(session_id)
        if not isinstance(exposures, list):
            raise SelectionError("'exposures' must be a list of exposure ids")
        if len(exposures) > MAX_SELECTION:
            raise SelectionError(f"a selection names at most {MAX_SELECTION} exposures")
        covering = {r["exposure_id"] for r in self._coverage(folder)}
        chosen: list[str] = []
        for i, item in enumerate(exposures, start=1):
            if not isinstance(item, str):
                raise SelectionError(f"entry {i} must be an exposure id (a string)")
            if item not in covering:
                raise SelectionError(
                    f"entry {i}: exposure {item!s:.60} does not cover the session's source region"
                )
            if item not in chosen:
                chosen.append(item)
        write_json(folder / "selection.json", {"exposures": chosen})
        self._touch(folder)
        return chosen

    def legacy_selection(self, session_id: str, observations: Any) -> list[str]:
        """Exposure ids of a selection in the old form ``[{"obsid", "camera"}, ...]``."""
        if not isinstance(observations, list):
            raise SelectionError("'observations' must be a list of {obsid, camera} objects")
        by_pair: dict[tuple[Any, Any], list[str]] = {}
        for row in self._coverage(self._existing(session_id)):
            by_pair.setdefault((row["obsid"], row["camera"]), []).append(row["exposure_id"])
        out = []
        for i, item in enumerate(observations, start=1):
            if not isinstance(item, Mapping) or set(item) != {"obsid", "camera"}:
                raise SelectionError(f"entry {i} must be an object with 'obsid' and 'camera'")
            if not all(isinstance(item[k], str) for k in ("obsid", "camera")):
                raise SelectionError(f"entry {i}: 'obsid' and 'camera' must be strings")
            found = by_pair.get((item["obsid"], item["camera"]), [])
            if len(found) != 1:
                raise SelectionError(
                    f"entry {i}: observation {item['obsid']:.20} {item['camera']:.10} "
                    + ("does not cover the session's source region" if not found else
                       "is ambiguous (several missions): name it by exposure id")
                )  # fmt: skip
            out.append(found[0])
        return out

    def set_view(self, session_id: str, view: Mapping[str, float]) -> None:
        folder = self._existing(session_id)
        record = _read_json(folder / "session.json")
        record["view"] = dict(view)
        record["updated"] = now("seconds")
        write_json(folder / "session.json", record)

    def selected_rows(self, session_id: str) -> list[dict[str, Any]]:
        """Coverage rows (with metadata and paths) of the selected exposures, in order."""
        folder = self._existing(session_id)
        rows = {r["exposure_id"]: r for r in self._coverage(folder)}
        return [rows[e] for e in self._selection(folder) or [] if e in rows]

    def _coverage(self, folder: Path) -> list[dict[str, Any]]:
        rows = _read_json(folder / "coverage.json", [])
        if any("exposure_id" not in r for r in rows):  # a session from before plug-ins
            rows = upgrade_coverage(rows)
            write_json(folder / "coverage.json", rows)
        return rows

    def _selection(self, folder: Path) -> list[str] | None:
        """The selected exposure ids (None before the first coverage)."""
        selection = _read_json(folder / "selection.json")
        if selection is None:
            return None
        if "exposures" not in selection:  # a session from before plug-ins
            selection = {"exposures": upgrade_selection(selection)}
            write_json(folder / "selection.json", selection)
        return selection["exposures"]

    def region_files(self, session_id: str) -> dict[str, Path]:
        """The session's region files, named as a run bundle holds them."""
        folder = self._existing(session_id)
        names = ("source.reg", "background.reg", "regions.json", "selection.json")
        return {f"regions/{n}": folder / n for n in names if (folder / n).is_file()}

    def run_dir(self, session_id: str, run_id: str) -> Path:
        if not ID_PATTERN.match(run_id):
            raise SessionNotFound(run_id)
        return self._existing(session_id) / "runs" / run_id

    def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every session record (newest first), optionally only those of ``owner``."""
        records = []
        if not self.root.is_dir():
            return records
        for path in self.root.glob("*/session.json"):
            if not ID_PATTERN.match(path.parent.name):  # a session being made or deleted
                continue
            record = _read_json(path)
            if record and (owner is None or record.get("owner") == owner):
                records.append(record)
        return sorted(records, key=lambda r: r["created"], reverse=True)

    def _touch(self, folder: Path) -> None:
        record = _read_json(folder / "session.json")
        record["updated"] = now("seconds")
        write_json(folder / "session.json", record)

    def set_title(self, session_id: str, title: Any) -> dict[str, Any]:
        """Give the session a title (one line of text, at most ``MAX_TITLE_CHARS`` characters);
        raises :class:`TitleError` before anything is written. Returns the record."""
        try:
            title = bodies.one_line(title, "title", MAX_TITLE_CHARS)
        except bodies.InputError as exc:
            raise TitleError(str(exc)) from None
        folder = self._existing(session_id)
        record = _read_json(folder / "session.json")
        record["title"] = title.strip()
        record["updated"] = now("seconds")
        write_json(folder / "session.json", record)
        return record

    def delete(self, session_id: str, runs_db: Path | str) -> int:
        """Remove the session's folder (regions, coverage, every run folder) and its runs'
        records, both or neither; returns the number of run records removed.

        Refused (``runs.ActiveRuns``) while one of its runs is queued or running. The folder is
        first renamed to a hidden name under the write lock of the run database (so the session
        is gone for every reader at once and no run can be added or start meanwhile), put back
        if the records cannot be deleted, and removed from the disk once they are."""
        from app import runs

        folder = self._existing(session_id)
        tomb = self.root / f".deleted-{session_id}-{secrets.token_hex(4)}"
        moved = False

        def take_away() -> None:
            nonlocal moved
            os.rename(folder, tomb)
            moved = True

        try:
            removed = runs.delete_session_runs(runs_db, session_id, take_away)
        except BaseException:
            if moved:
                os.rename(tomb, folder)
            raise
        shutil.rmtree(tomb, ignore_errors=True)
        return removed


#: Runs of a session the sessions list names one by one (the others are counted).
LISTED_RUNS = 5


def overview(record: Mapping[str, Any], session_runs: list[Any]) -> dict[str, Any]:
    """A session record for the sessions list: its run count by phase (``run_counts``), its
    newest runs (``latest_runs``, at most ``LISTED_RUNS``) and its last activity (the latest of
    its own update and its runs' creation, start and end). ``session_runs``: ``app.runs.Run``
    records, newest first."""
    counts: dict[str, int] = {}
    last = record.get("updated") or record.get("created") or ""
    for run in session_runs:
        counts[run.phase] = counts.get(run.phase, 0) + 1
        last = max([last, *(t for t in (run.created, run.started, run.ended) if t)])
    return {
        **record,
        "run_counts": counts,
        "runs_total": len(session_runs),
        "latest_runs": session_runs[:LISTED_RUNS],
        "last_activity": last,
    }


def _first_selection(rows: list[dict[str, Any]]) -> list[str]:
    """The exposures a first coverage selects: those holding data to process, of one instrument
    (mission and instrument of the one covering most of the region; the first such in ``rows``
    on a tie). A script takes one instrument's data, so selecting every instrument of a field
    seen by two missions would leave no script to run."""
    data = [r for r in rows if r.get("kind") in PROCESSABLE_KINDS]
    if not data:
        return []
    best = max(data, key=lambda r: r.get("coverage") or 0.0)
    instrument = (best.get("mission"), best.get("instrument"))
    return [r["exposure_id"] for r in data if (r.get("mission"), r.get("instrument")) == instrument]


class SessionBusy(ValueError):
    """The session cannot be deleted now; ``str(exc)`` says why, for the user."""


def delete_session(store: SessionStore, session_id: str, sessions_dir: Path | str) -> int:
    """Delete a session (``SessionStore.delete``) unless something still works on it: a queued
    or running run, or a standing request or schedule of the session (``app.automation``; they
    are deleted by their owner first, not silently with the session). Raises
    :class:`SessionBusy` (or ``SessionNotFound``) before anything is changed; returns the number
    of run records removed."""
    from app import automation, runs

    store.record(session_id)  # SessionNotFound first
    automation_db = automation.db_path(sessions_dir)
    standing = len(automation.list_standing(automation_db, [session_id]))
    schedules = len(automation.list_schedules(automation_db, [session_id]))
    if standing or schedules:
        raise SessionBusy(
            f"the session has {standing} standing request(s) and {schedules} schedule(s): "
            "delete them first (Runs page, automation panel)"
        )
    try:
        return store.delete(session_id, runs.db_path(sessions_dir))
    except runs.ActiveRuns as exc:
        raise SessionBusy(str(exc)) from None


def upgrade_coverage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Coverage rows with ``exposure_id`` and ``kind`` (rows stored before instruments were
    plug-ins had neither; they were all XMM EPIC)."""
    out = []
    for row in rows:
        row = dict(row)
        row.setdefault("mission", "XMM")
        row.setdefault("instrument", "EPIC")
        row["kind"] = default_kind(row)
        row["exposure_id"] = exposure_id(row)
        out.append(row)
    return out


def upgrade_selection(selection: Mapping[str, Any]) -> list[str]:
    """Exposure ids of a selection stored before instruments were plug-ins (XMM only)."""
    return [
        exposure_id({"mission": "XMM", **item})
        for item in selection.get("observations", [])
        if isinstance(item, Mapping) and {"obsid", "camera"} <= set(item)
    ]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
