"""The web app's access to the index built by ``indexer``: load it once per process, say clearly
when it is missing, and shape its rows for pages and the API."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby
from pathlib import Path
from typing import Any

from indexer.index import Index

CAMERA_ORDER = {"EMOS1": 0, "EMOS2": 1, "EPN": 2}


def load_index(settings: Mapping[str, Any]) -> Index:
    """The index named by the REGIO_INDEX setting (cached per process by ``Index.load``).

    Raises ``IndexNotFound`` with a message that says how to build it.
    """
    return Index.load(Path(settings["INDEX"]))


def observations_by_obsid(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group (observation, camera) rows into observations, newest first, cameras in EPIC order."""
    rows = sorted(rows, key=lambda r: (r["obsid"], CAMERA_ORDER.get(r["camera"], 9)))
    grouped = []
    for obsid, cams in groupby(rows, key=lambda r: r["obsid"]):
        cams = list(cams)
        first = cams[0]
        grouped.append(
            {
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
