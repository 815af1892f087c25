"""What a script receives about a session: its regions and the selected observations.

The regions go in ICRS (DS9 text and viewer JSON shapes); each selected exposure with data to
process also gets the regions in its file's own pixels (DS9 ``physical``), converted with the WCS
of its pixel frame (for event lists the column WCS of X/Y), so a script can select events without
any astrometry of its own. The layout is documented in ``scripts/regio_kit.py``.

That WCS comes from the index, which keeps it for every file it read (``Index.pixel_wcs``): a
launch opens no data file. Only a file the index keeps none for (indexed before it kept them) is
opened, through its instrument module (``Instrument.pixel_wcs``). Whatever else a script needs
from the file it reads itself, on the worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from app import shapes
from app.sessions import SessionStore
from indexer import instruments


class InputError(ValueError):
    """The session cannot be processed as it is (nothing selected, files missing, ...)."""


class PixelWcsSource(Protocol):
    """Where the pixel WCS of files comes from (``indexer.index.Index``)."""

    def pixel_wcs(self, paths: list[str]) -> dict[str, dict[str, Any]]: ...


def _region(regions) -> dict[str, Any] | None:
    if regions is None:
        return None
    return {"ds9": shapes.to_ds9(regions), "shapes": shapes.to_json(regions)}


def pixel_regions(
    row: Mapping[str, Any], source, background, cards: Mapping[str, Any] | None = None
) -> dict[str, str | None]:
    """The regions in the pixels of the exposure's file (DS9 ``physical`` text), with the WCS
    ``cards`` the index keeps for it (``instruments.pixel_wcs_cards``), else read from the file."""
    wcs = None
    if cards:
        try:
            wcs = instruments.wcs_from_cards(dict(cards))
        except (ValueError, KeyError, TypeError):
            wcs = None  # not usable: the file says
    if wcs is None:
        try:
            wcs = instruments.for_row(dict(row)).pixel_wcs(Path(row["path"]))
        except (KeyError, instruments.FootprintError) as exc:
            raise InputError(str(exc).strip("'\"")) from None
    return {
        "source": shapes.to_physical_ds9(source, wcs),
        "background": shapes.to_physical_ds9(background, wcs) if background is not None else None,
    }


def for_session(
    store: SessionStore,
    session_id: str,
    rows: list[dict[str, Any]] | None = None,
    index: PixelWcsSource | None = None,
) -> tuple[dict, list[dict[str, Any]]]:
    """``(regions, observations)`` for a run's input file: the session's selected exposures, or
    the coverage ``rows`` given (a standing request's new data). ``index`` gives the files'
    pixel WCS (without it, or for a file it does not know, the file is read). Raises
    ``InputError`` with a message."""
    source, background = store.regions(session_id)
    selected = store.selected_rows(session_id) if rows is None else rows
    if not selected:
        raise InputError("no observation is selected: select at least one covering observation")
    processable = [
        row
        for row in selected
        if row.get("kind") in instruments.PROCESSABLE_KINDS and row.get("path")
    ]
    if not processable:
        raise InputError(
            "none of the selected observations has data to process (only exposure maps): "
            "select at least one with events"
        )
    known = index.pixel_wcs([str(row["path"]) for row in processable]) if index else {}
    # files in one pixel frame (the cameras of an observation often are) share one conversion
    converted: dict[str, dict[str, str | None]] = {}
    observations = []
    for row in selected:
        obs = dict(row)
        if obs.get("kind") in instruments.PROCESSABLE_KINDS and obs.get("path"):
            cards = known.get(str(obs["path"]))
            if cards is None:
                obs["regions_pixel"] = pixel_regions(obs, source, background)
            else:
                frame = json.dumps(cards, sort_keys=True)
                if frame not in converted:
                    converted[frame] = pixel_regions(obs, source, background, cards)
                obs["regions_pixel"] = dict(converted[frame])
        observations.append(obs)
    return {"source": _region(source), "background": _region(background)}, observations
