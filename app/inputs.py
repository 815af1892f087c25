"""What a script receives about a session: its regions and the selected observations.

The regions go in ICRS (DS9 text and viewer JSON shapes); each selected exposure with data to
process also gets the regions in its file's own pixels (DS9 ``physical``), converted with the WCS
its instrument module gives (``Instrument.pixel_wcs``: for event lists the column WCS of X/Y), so
a script can select events without any astrometry of its own. The layout is documented in
``scripts/regio_kit.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import shapes
from app.sessions import SessionStore
from indexer import instruments


class InputError(ValueError):
    """The session cannot be processed as it is (nothing selected, files missing, ...)."""


def _region(regions) -> dict[str, Any] | None:
    if regions is None:
        return None
    return {"ds9": shapes.to_ds9(regions), "shapes": shapes.to_json(regions)}


def pixel_regions(row: dict[str, Any], source, background) -> dict[str, str | None]:
    """The regions in the pixels of the exposure's file (DS9 ``physical`` text)."""
    try:
        wcs = instruments.for_row(row).pixel_wcs(Path(row["path"]))
    except (KeyError, instruments.FootprintError) as exc:
        raise InputError(str(exc).strip("'\"")) from None
    return {
        "source": shapes.to_physical_ds9(source, wcs),
        "background": shapes.to_physical_ds9(background, wcs) if background is not None else None,
    }


def for_session(
    store: SessionStore, session_id: str, rows: list[dict[str, Any]] | None = None
) -> tuple[dict, list[dict[str, Any]]]:
    """``(regions, observations)`` for a run's input file: the session's selected exposures, or
    the coverage ``rows`` given (a standing request's new data). Raises ``InputError`` with a
    message."""
    source, background = store.regions(session_id)
    selected = store.selected_rows(session_id) if rows is None else rows
    if not selected:
        raise InputError("no observation is selected: select at least one covering observation")
    observations = []
    for row in selected:
        obs = dict(row)
        if obs.get("kind") in instruments.PROCESSABLE_KINDS and obs.get("path"):
            obs["regions_pixel"] = pixel_regions(obs, source, background)
        observations.append(obs)
    if not any("regions_pixel" in obs for obs in observations):
        raise InputError(
            "none of the selected observations has data to process (only exposure maps): "
            "select at least one with events"
        )
    return {"source": _region(source), "background": _region(background)}, observations
