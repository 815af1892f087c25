"""What a script receives about a session: its regions and the selected observations.

The regions go in ICRS (DS9 text and viewer JSON shapes); each selected event list also gets the
regions in its own X/Y sky pixels (DS9 ``physical``), converted with the event list's column WCS,
so a script can select events without any astrometry of its own. The layout is documented in
``scripts/regio_kit.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astropy.io import fits

from app import shapes
from app.sessions import SessionStore
from indexer.footprint import column_wcs


class InputError(ValueError):
    """The session cannot be processed as it is (nothing selected, files missing, ...)."""


def _region(regions) -> dict[str, Any] | None:
    if regions is None:
        return None
    return {"ds9": shapes.to_ds9(regions), "shapes": shapes.to_json(regions)}


def pixel_regions(path: Path, source, background) -> dict[str, str | None]:
    """The regions in the X/Y pixels of the event list at ``path`` (DS9 ``physical`` text)."""
    try:
        header = fits.getheader(path, "EVENTS")
    except (OSError, KeyError) as exc:
        raise InputError(f"cannot read the event list {path.name}: {exc}") from None
    wcs = column_wcs(header)
    if wcs is None:
        raise InputError(f"the event list {path.name} has no X/Y sky coordinates (column WCS)")
    return {
        "source": shapes.to_physical_ds9(source, wcs),
        "background": shapes.to_physical_ds9(background, wcs) if background is not None else None,
    }


def for_session(store: SessionStore, session_id: str) -> tuple[dict, list[dict[str, Any]]]:
    """``(regions, observations)`` for a run's input file. Raises ``InputError`` with a message."""
    source, background = store.regions(session_id)
    selected = store.selected_rows(session_id)
    if not selected:
        raise InputError("no observation is selected: select at least one covering observation")
    observations = []
    for row in selected:
        obs = dict(row)
        if obs.get("source") == "events" and obs.get("path"):
            obs["regions_pixel"] = pixel_regions(Path(obs["path"]), source, background)
        observations.append(obs)
    if not any("regions_pixel" in obs for obs in observations):
        raise InputError(
            "none of the selected observations has an event list (only exposure maps): "
            "select at least one with events"
        )
    return {"source": _region(source), "background": _region(background)}, observations
