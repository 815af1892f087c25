#!/usr/bin/env python3
"""Counts images around the session's regions, per observation and camera, with a sky WCS.

Run by hand: ``python scripts/generate_images.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_images.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from regio_kit import ScriptError, main
from xmm.images import ImageGrid
from xmm.products import describe_image, field_image, preview_stage, write_image, write_stage
from xmm.provenance import Provenance
from xmm.run import check_pileup, pileup_cards, prepare, say
from xmm.spectra import event_keywords

PIXEL_ARCSEC = 0.05
FIELD = "image field"


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    binning = max(1, round(float(params.get("pixel_arcsec", 4.0)) / PIXEL_ARCSEC))
    lo, hi = (
        round(float(params.get("emin", 0.5)) * 1000),
        round(float(params.get("emax", 2.0)) * 1000) - 1,
    )
    if hi < lo:
        raise ScriptError("the energy band is empty: emin must be below emax")
    margin = float(params.get("margin_arcmin", 1.0)) * 60 / PIXEL_ARCSEC
    provenance = Provenance(inp)
    observations = prepare(
        inp, screen_flares=bool(params.get("screen_flares", True)),
        rescreen=bool(params.get("rescreen", False)), provenance=provenance,
        extra_regions_for=ImageGrid.field_hook(binning, margin, FIELD), after_extract=check_pileup,
    )  # fmt: skip

    def write_observation(obs):
        grid, image, wcs = field_image(obs, FIELD, (lo, hi))
        name = f"{obs.obsid}_{obs.camera}_image.fits"
        cards = provenance.cards(obs.obsid, obs.camera) + pileup_cards(obs)
        write_image(
            output_dir / name, grid, image, wcs, event_keywords(obs.events), (lo, hi, "eV"),
            obs.exposure("source"), binning * PIXEL_ARCSEC, cards,
        )  # fmt: skip
        say(
            f'{obs.label}: {name}: {grid.nx} x {grid.ny} pixels of {binning * PIXEL_ARCSEC:g}", {int(image.sum())} counts'
        )
        return obs, name, image, wcs

    written = write_stage(output_dir, observations, provenance, write_observation)
    band_text = f"{lo / 1000:g}-{(hi + 1) / 1000:g} keV"
    preview_stage(
        output_dir, written, functools.partial(describe_image, output_dir, band_text=band_text)
    )


if __name__ == "__main__":
    main(run)
