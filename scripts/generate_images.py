#!/usr/bin/env python3
"""Counts images around the session's regions, per observation and camera, with a sky WCS.

Run by hand: ``python scripts/generate_images.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_images.toml`` for the documentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from regions import Regions

from regio_kit import ScriptError, main, progress, save_product, stage
from xmm import previews
from xmm.images import ImageGrid
from xmm.pipeline import Observation
from xmm.provenance import Provenance
from xmm.run import pileup_cards, prepare, product_extra, say
from xmm.selection import Region
from xmm.spectra import event_keywords, fit_comments

PIXEL_ARCSEC = 0.05
FIELD = "image field"


def region_artists(obs: Observation, grid: ImageGrid, image_wcs) -> list[tuple]:
    """Outlines of the source (green) and background (cyan) regions in image pixels."""
    out = []
    colours = {"source": "lime", "background": "cyan"}
    for name, colour in colours.items():
        region = obs.regions.get(name)
        if region is None:
            continue
        sky = Regions.parse(region.ds9().replace("physical", "image"), format="ds9")
        artists = []
        for shape in sky:
            # image-frame text is 1-based X/Y; back to the event list's 0-based pixels, then the sky
            pix = shape.to_sky(obs.events.wcs).to_pixel(image_wcs)
            artist = pix.as_artist()
            if not shape.meta.get("include", True):
                artist.set_linestyle("--")
            artists.append(artist)
        out.append((artists, colour))
    return out


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

    def image_field(meta: dict[str, Any], regions: dict[str, Region]) -> dict[str, Region]:
        meta["_grid"] = ImageGrid.around(list(regions.values()), binning, margin)
        return {FIELD: meta["_grid"].selector()}

    observations = prepare(
        inp, screen_flares=bool(params.get("screen_flares", True)), provenance=provenance,
        extra_regions_for=image_field,
    )  # fmt: skip
    written = []
    with stage("write products"):
        for k, obs in enumerate(observations, 1):
            grid: ImageGrid = obs.meta["_grid"]
            events = obs.selected[FIELD]
            band = (events.pi >= lo) & (events.pi <= hi)
            image = grid.histogram(events.x[band], events.y[band])
            wcs = grid.wcs(obs.events.wcs)
            hdu = fits.PrimaryHDU(image, header=wcs.to_header())
            h = hdu.header
            for key, value in {**event_keywords(obs.events), **grid.physical_keywords()}.items():
                # the image WCS is ICRS (RADESYS); the event list's FK5 J2000 tag would contradict it
                if key not in h and key not in ("RADECSYS", "EQUINOX"):
                    h[key] = value
            h["BUNIT"] = ("count", "counts per pixel")
            h["CONTENT"] = ("COUNTS IMAGE", "")
            h["CHANTYPE"] = ("PI", "")
            h["CHANMIN"] = (lo, "lowest PI (eV) in the band")
            h["CHANMAX"] = (hi, "highest PI (eV) in the band")
            h["EXPOSURE"] = (
                obs.exposure("source"),
                "[s] live time of the CCDs under the source region",
            )
            h["PIXSCALE"] = (binning * PIXEL_ARCSEC, "[arcsec] image pixel size")
            for card in provenance.cards(obs.obsid, obs.camera) + pileup_cards(obs):
                if card[0] == "HISTORY":
                    h.add_history(card[1])
                elif card[0] == "COMMENT":
                    h.add_comment(card[1])
                else:
                    h[card[0]] = card[1:]
            fit_comments(h)
            name = f"{obs.obsid}_{obs.camera}_image.fits"
            hdu.writeto(output_dir / name, overwrite=True, checksum=True)
            say(
                f'{obs.label}: {name}: {grid.nx} x {grid.ny} pixels of {binning * PIXEL_ARCSEC:g}", {int(image.sum())} counts'
            )
            written.append((obs, name, image, wcs, grid))
            progress(k, len(observations))
        provenance.write_json(output_dir)
    with stage("previews"):
        for k, (obs, name, image, wcs, grid) in enumerate(written, 1):
            png = name.replace(".fits", ".png")
            title = f"{obs.label} {lo / 1000:g}-{(hi + 1) / 1000:g} keV"
            previews.image_preview(
                output_dir / png,
                title,
                np.asarray(image, float),
                wcs,
                region_artists(obs, grid, wcs),
            )
            save_product(
                output_dir, png, "plot", f"Image preview {obs.label}", obs.obsid, obs.camera
            )
            save_product(
                output_dir, name, "image", f"Counts image {obs.label}", obs.obsid, obs.camera,
                **product_extra(obs, png),
            )  # fmt: skip
            progress(k, len(written))
        save_product(output_dir, "provenance.json", "other", "Provenance of the products (JSON)")


if __name__ == "__main__":
    main(run)
