#!/usr/bin/env python3
"""Source and background light curves (OGIP RATE + GTI) of the session's regions.

Run by hand: ``python scripts/generate_lightcurves.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_lightcurves.toml`` for the documentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regio_kit import ScriptError, main, progress, save_product, stage
from xmm import gti as gtimod
from xmm import previews
from xmm.lightcurves import LightCurve, light_curve, write_lightcurve
from xmm.provenance import Provenance
from xmm.run import pileup_cards, prepare, product_extra, say
from xmm.spectra import event_keywords


def band_ev(params: dict[str, Any]) -> tuple[int, int]:
    """The energy band as inclusive PI limits [eV]: ``[emin, emax)`` in keV."""
    lo, hi = float(params.get("emin", 0.2)), float(params.get("emax", 10.0))
    if hi <= lo:
        raise ScriptError(f"the energy band is empty: emin {lo} keV >= emax {hi} keV")
    return round(lo * 1000), round(hi * 1000) - 1


def curve_for_plot(label: str, lc: LightCurve, t0: float) -> dict[str, Any]:
    gaps = gtimod.intersect(
        gtimod.as_gti([[lc.gti[0, 0], lc.gti[-1, 1]]]),
        gtimod.as_gti(list(zip(lc.gti[:-1, 1], lc.gti[1:, 0], strict=True))),
    )
    return {
        "label": label, "time": lc.time, "rate": lc.rate, "error": lc.error, "backv": lc.backv,
        "good": lc.good, "gaps": gaps, "t0": t0,
    }  # fmt: skip


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    band = band_ev(params)
    provenance = Provenance(inp)
    observations = prepare(
        inp, screen_flares=bool(params.get("screen_flares", True)), provenance=provenance
    )
    written = []
    with stage("write products"):
        for k, obs in enumerate(observations, 1):
            bin_size = float(params.get("bin_size", 100.0))
            if bin_size < obs.events.frame_time:
                say(
                    f"[WARNING] {obs.label}: bin size {bin_size} s is below the frame time "
                    f"{obs.events.frame_time} s; using the frame time"
                )
                bin_size = obs.events.frame_time
            lc = light_curve(obs, band, bin_size, float(params.get("min_fracexp", 0.5)))
            name = f"{obs.obsid}_{obs.camera}_lc.fits"
            cards = provenance.cards(obs.obsid, obs.camera) + pileup_cards(obs)
            write_lightcurve(output_dir / name, lc, event_keywords(obs.events), cards)
            say(
                f"{obs.label}: {name}: {len(lc.time)} bins of {bin_size:g} s, {int(lc.counts.sum())} "
                f"source counts in PI {band[0]}-{band[1]} eV, {int((~lc.good).sum())} bins flagged "
                f"with FRACEXP < {lc.fexpmin}"
            )
            written.append((obs, name, lc))
            progress(k, len(observations))
        provenance.write_json(output_dir)
    with stage("previews"):
        for k, (obs, name, lc) in enumerate(written, 1):
            png = name.replace(".fits", ".png")
            title = f"{obs.label} {obs.events.keyword('OBJECT', '')}, {band[0] / 1000:g}-{(band[1] + 1) / 1000:g} keV"
            previews.lightcurve_preview(
                output_dir / png, title, [curve_for_plot(obs.label, lc, lc.gti[0, 0])]
            )
            save_product(
                output_dir, png, "plot", f"Light curve preview {obs.label}", obs.obsid, obs.camera
            )
            save_product(
                output_dir, name, "lightcurve", f"Source light curve (OGIP RATE, net of background) {obs.label}",
                obs.obsid, obs.camera, **product_extra(obs, png),
            )  # fmt: skip
            progress(k, len(written))
        if len({obs.obsid for obs, _, _ in written}) > 1:
            png = "lightcurves_all_epochs.png"
            mjdref = float(observations[0].events.keyword("MJDREF", 50814.0))
            curves = [curve_for_plot(obs.label, lc, 0.0) for obs, _, lc in written]
            previews.multi_epoch_preview(
                output_dir / png, "Net light curves, all observations", curves, mjdref
            )
            save_product(
                output_dir,
                png,
                "plot",
                "Light curves of all observations on one time axis",
                preview=png,
            )
        save_product(output_dir, "provenance.json", "other", "Provenance of the products (JSON)")


if __name__ == "__main__":
    main(run)
