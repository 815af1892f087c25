"""The web app's access to the index built by ``indexer``: load it once per process, say clearly
when it is missing, and shape its rows for pages and the API.

Nothing here names an instrument or a camera: their order, labels and colours come from the
instrument registry (``indexer.instruments``).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby
from pathlib import Path
from typing import Any

from regions import Regions

from indexer import instruments
from indexer.index import Index


def load_index(settings: Mapping[str, Any]) -> Index:
    """The index named by the REGIO_INDEX setting (cached per process by ``Index.load``).

    Raises ``IndexNotFound`` with a message that says how to build it.
    """
    return Index.load(Path(settings["INDEX"]))


def instruments_json() -> list[dict[str, Any]]:
    """Every registered instrument with its data kinds and cameras (display order, colours)."""
    return [instrument.to_json() for instrument in instruments.all_instruments()]


def camera_rank(row: Mapping[str, Any]) -> int:
    """Display rank of an exposure row's camera (unknown cameras last)."""
    return instruments.camera_order().get((row.get("mission"), row.get("camera")), 10_000)


def coverage_rows(
    index: Index, source: Regions, background: Regions | None
) -> list[dict[str, Any]]:
    """The exposures covering the source region (``Index.query`` rows), each with the fraction
    of the background region it covers (``background_coverage``, 0..1) when there is one."""
    rows = index.query(source)
    if background is not None:
        covered = {r["exposure_id"]: r["coverage"] for r in index.query(background)}
        for row in rows:
            row["background_coverage"] = covered.get(row["exposure_id"], 0.0)
    return rows


#: Fields of an index row that describe the server, not the data: where the file and its MOC
#: lie on the server's disks. They stay in the index and the session folder (launching needs
#: them) but never go to a client.
SERVER_FIELDS = frozenset({"path", "moc_file"})


def public_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exposure rows as the API gives them: without ``SERVER_FIELDS``."""
    return [{k: v for k, v in row.items() if k not in SERVER_FIELDS} for row in rows]


def observations_by_obsid(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group exposure rows into observations (mission, obsid), newest first, cameras in the
    registry's order."""
    rows = sorted(rows, key=lambda r: (r["mission"], r["obsid"], camera_rank(r)))
    grouped = []
    for (mission, obsid), cams in groupby(rows, key=lambda r: (r["mission"], r["obsid"])):
        cams = list(cams)
        first = cams[0]
        grouped.append(
            {
                "mission": mission,
                "instrument": first.get("instrument"),
                "obsid": obsid,
                "object": first.get("object"),
                "observer": first.get("observer"),
                "date_obs": first.get("date_obs"),
                "ra_pnt": first.get("ra_pnt"),
                "dec_pnt": first.get("dec_pnt"),
                "pa_pnt": first.get("pa_pnt"),
                "cameras": cams,
            }
        )
    grouped.sort(key=lambda o: o["date_obs"] or "", reverse=True)
    return grouped
