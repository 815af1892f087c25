#!/usr/bin/env python3
"""Source and background light curves (OGIP RATE + GTI) of the session's regions.

Run by hand: ``python scripts/generate_lightcurves.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_lightcurves.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from regio_kit import ScriptError, main
from xmm.lightcurves import Barycentre, grid_anchor, light_curve, write_lightcurve
from xmm.products import describe_epochs, describe_lightcurve, preview_stage, write_stage
from xmm.provenance import Provenance
from xmm.run import check_pileup, pileup_cards, prepare, say
from xmm.spectra import event_keywords


def band_ev(params: dict[str, Any]) -> tuple[int, int]:
    """The energy band as inclusive PI limits [eV]: ``[emin, emax)`` in keV."""
    lo, hi = float(params.get("emin", 0.2)), float(params.get("emax", 10.0))
    if hi <= lo:
        raise ScriptError(f"the energy band is empty: emin {lo} keV >= emax {hi} keV")
    return round(lo * 1000), round(hi * 1000) - 1


def source_radec(obs) -> tuple[float, float]:
    """Sky position [deg] of the centre of the source region's first shape (its vertices' mean
    for a polygon), through the event list's X/Y column WCS (0-based pixels = X - 1)."""
    shape = obs.regions["source"].includes[0]
    if hasattr(shape, "xs"):
        x, y = float(np.mean(shape.xs)), float(np.mean(shape.ys))
    else:
        x, y = float(shape.x), float(shape.y)
    ra, dec = obs.events.wcs.all_pix2world([[x - 1.0, y - 1.0]], 0)[0]
    return float(ra), float(dec)


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    band = band_ev(params)
    provenance = Provenance(inp)
    observations = prepare(
        inp,
        screen_flares=bool(params.get("screen_flares", True)),
        rescreen=bool(params.get("rescreen", False)),
        provenance=provenance,
        after_extract=check_pileup,
    )
    min_fracexp = float(params.get("min_fracexp", 0.5))
    # one time grid for every curve of the run: MOS1, MOS2 and pn bins share their edges
    anchor = grid_anchor(observations)
    bary = bool(params.get("barycentre", False))

    def write_observation(obs):
        bin_size = float(params.get("bin_size", 100.0))
        if bin_size < obs.events.frame_time:
            say(
                f"[WARNING] {obs.label}: bin size {bin_size} s is below the frame time "
                f"{obs.events.frame_time} s; using the frame time"
            )
            bin_size = obs.events.frame_time
        barycentre = None
        if bary:
            ra, dec = source_radec(obs)
            barycentre = Barycentre(ra, dec, float(obs.events.keyword("MJDREF", 50814.0)))
            say(f"{obs.label}: times barycentred (TDB) to RA {ra:.6f}, Dec {dec:.6f}")
        lc = light_curve(obs, band, bin_size, min_fracexp, anchor, barycentre)
        name = f"{obs.obsid}_{obs.camera}_lc.fits"
        cards = provenance.cards(obs.obsid, obs.camera) + pileup_cards(obs)
        write_lightcurve(output_dir / name, lc, event_keywords(obs.events), cards)
        say(
            f"{obs.label}: {name}: {len(lc.time)} bins of {bin_size:g} s, {int(lc.counts.sum())} "
            f"source counts in PI {band[0]}-{band[1]} eV, {int((~lc.good).sum())} bins flagged "
            f"with FRACEXP < {lc.fexpmin}"
        )
        return obs, name, lc

    written = write_stage(output_dir, observations, provenance, write_observation)
    band_text = f"{band[0] / 1000:g}-{(band[1] + 1) / 1000:g} keV"
    preview_stage(
        output_dir,
        written,
        functools.partial(describe_lightcurve, output_dir, band_text=band_text),
        lambda: describe_epochs(output_dir, written),
    )


if __name__ == "__main__":
    main(run)
