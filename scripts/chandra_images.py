#!/usr/bin/env python3
"""Counts images around the session's regions, per Chandra ACIS list, with a sky WCS.

Run by hand: ``python scripts/chandra_images.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/chandra`` (and the shared parts of ``scripts/xmm``); see
``chandra_images.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from chandra.events import event_keywords
from chandra.pipeline import prepare
from chandra.spectra import band_text, pi_band
from indexer.instruments.chandra_acis import SKY_PIXEL_ARCSEC
from regio_kit import main
from xmm.images import ImageGrid
from xmm.products import describe_image, field_image, preview_stage, write_image, write_stage
from xmm.provenance import Provenance
from xmm.run import say

FIELD = "image field"


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    binning = int(params.get("binning", 1))
    band = pi_band(float(params.get("emin", 0.5)), float(params.get("emax", 7.0)))
    margin = float(params.get("margin_arcsec", 10.0)) / SKY_PIXEL_ARCSEC
    pixel_arcsec = binning * SKY_PIXEL_ARCSEC
    provenance = Provenance(inp)
    observations = prepare(inp, provenance, ImageGrid.field_hook(binning, margin, FIELD))

    def write_observation(obs):
        grid, image, wcs = field_image(obs, FIELD, band)
        name = f"{obs.obsid}_{obs.camera}_image.fits"
        write_image(
            output_dir / name, grid, image, wcs, event_keywords(obs.events),
            (band[0], band[1], "channel"), obs.exposure("source"), pixel_arcsec,
            provenance.cards(obs.obsid, obs.camera),
        )  # fmt: skip
        say(
            f'{obs.label}: {name}: {grid.nx} x {grid.ny} pixels of {pixel_arcsec:.4g}" '
            f"({binning} sky pixels), {int(image.sum())} counts in PI {band[0]}-{band[1]} "
            f"({band_text(band)})"
        )
        return obs, name, image, wcs

    written = write_stage(output_dir, observations, provenance, write_observation)
    preview_stage(
        output_dir,
        written,
        functools.partial(describe_image, output_dir, band_text=band_text(band)),
    )


if __name__ == "__main__":
    main(run)
