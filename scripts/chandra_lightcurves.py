#!/usr/bin/env python3
"""Source light curves (OGIP RATE + GTI), net of the background region, per Chandra ACIS list.

Run by hand: ``python scripts/chandra_lightcurves.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/chandra`` (and the shared parts of ``scripts/xmm``); see
``chandra_lightcurves.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from chandra.events import event_keywords
from chandra.pipeline import prepare
from chandra.spectra import band_text, pi_band
from regio_kit import main
from xmm.lightcurves import grid_anchor, light_curve, write_lightcurve
from xmm.products import describe_epochs, describe_lightcurve, preview_stage, write_stage
from xmm.provenance import Provenance
from xmm.run import say


def frame_bins(bin_size: float, frame_time: float) -> float:
    """``bin_size`` [s] rounded to a whole number (at least one) of ACIS frames."""
    return max(1, round(bin_size / frame_time)) * frame_time


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    band = pi_band(float(params.get("emin", 0.5)), float(params.get("emax", 7.0)))
    provenance = Provenance(inp)
    observations = prepare(inp, provenance)
    min_fracexp = float(params.get("min_fracexp", 0.5))
    anchor = grid_anchor(observations)  # one time grid for every curve of the run

    def write_observation(obs):
        asked = float(params.get("bin_size", 100.0))
        bin_size = frame_bins(asked, obs.events.frame_time)
        if abs(bin_size - asked) > 1e-9 * asked:
            say(
                f"{obs.label}: bin size {asked:g} s rounded to {bin_size:.6g} s, "
                f"{round(bin_size / obs.events.frame_time)} frames of {obs.events.frame_time} s"
            )
        lc = light_curve(obs, band, bin_size, min_fracexp, anchor)
        name = f"{obs.obsid}_{obs.camera}_lc.fits"
        cards = provenance.cards(obs.obsid, obs.camera)
        write_lightcurve(output_dir / name, lc, event_keywords(obs.events), cards, "channel")
        say(
            f"{obs.label}: {name}: {len(lc.time)} bins of {bin_size:.6g} s, "
            f"{int(lc.counts.sum())} source counts in PI {band[0]}-{band[1]} "
            f"({band_text(band)}), {int((~lc.good).sum())} bins flagged with FRACEXP < "
            f"{lc.fexpmin}"
        )
        return obs, name, lc

    written = write_stage(output_dir, observations, provenance, write_observation)
    preview_stage(
        output_dir,
        written,
        functools.partial(describe_lightcurve, output_dir, band_text=band_text(band)),
        lambda: describe_epochs(output_dir, written),
    )


if __name__ == "__main__":
    main(run)
