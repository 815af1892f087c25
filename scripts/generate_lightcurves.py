#!/usr/bin/env python3
"""Source and background light curves (OGIP RATE + GTI) of the session's regions.

Run by hand: ``python scripts/generate_lightcurves.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_lightcurves.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from regio_kit import ScriptError, main
from xmm.lightcurves import light_curve, write_lightcurve
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


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    band = band_ev(params)
    provenance = Provenance(inp)
    observations = prepare(
        inp,
        screen_flares=bool(params.get("screen_flares", True)),
        provenance=provenance,
        after_extract=check_pileup,
    )
    min_fracexp = float(params.get("min_fracexp", 0.5))

    def write_observation(obs):
        bin_size = float(params.get("bin_size", 100.0))
        if bin_size < obs.events.frame_time:
            say(
                f"[WARNING] {obs.label}: bin size {bin_size} s is below the frame time "
                f"{obs.events.frame_time} s; using the frame time"
            )
            bin_size = obs.events.frame_time
        lc = light_curve(obs, band, bin_size, min_fracexp)
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
