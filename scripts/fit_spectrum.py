#!/usr/bin/env python3
"""Quick-look fits of the session's XMM EPIC spectra with sherpa.

Extracts the spectra exactly as ``generate_spectra`` does (same stages, same products, with their
responses), grouped to ``min_counts``, then fits every source spectrum that has a response: an
absorbed power law (point source) or an absorbed APEC (extended source). Products: the spectra,
a fit plot with residuals per spectrum and ``fit_results.ecsv`` (parameters with 90 % errors,
statistic, fluxes). Spectra without a response are listed with the reason and not fitted; when
none has one the script says so and ends without fitting (exit 0). The science is in
``scripts/xmm/fitting.py``.

Run by hand: ``python scripts/fit_spectrum.py input.json`` (input layout: ``regio_kit``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from astropy.table import Table

import generate_spectra
from regio_kit import ScriptError, main, progress, save_product, stage
from xmm.fitting import FitResult, fit_spectrum, plot_fit
from xmm.run import say

TABLE = "fit_results.ecsv"


def source_spectra(output_dir: Path) -> list[dict[str, Any]]:
    entries = json.loads((output_dir / "products.json").read_text(encoding="utf-8"))
    return [e for e in entries if e["kind"] == "spectrum" and str(e["file"]).endswith("_src.pha")]


def describe(result: FitResult) -> str:
    if not result.fitted:
        return f"{result.spectrum}: {result.status}"
    pars = ", ".join(
        f"{name} {v:.4g} ({lo:+.2g}/{hi:+.2g})" if not math.isnan(hi) else f"{name} {v:.4g}"
        for name, (v, lo, hi) in result.params.items()
    )
    fluxes = ", ".join(f"{k} {v:.3e}" for k, v in result.fluxes.items())
    return (
        f"{result.spectrum}: {result.model}: {pars}; {result.statistic} "
        f"{result.stat:.1f} for {result.dof} dof; {fluxes} erg/cm2/s"
        + ("".join(f"; {n}" for n in result.notes))
    )


def results_table(results: list[tuple[dict[str, Any], FitResult]]) -> Table:
    names = sorted({p for _, r in results for p in r.params})
    fluxes = sorted({f for _, r in results for f in r.fluxes})
    rows = []
    for entry, r in results:
        row = {
            "spectrum": r.spectrum, "obsid": entry.get("obsid") or "", "camera": entry.get("camera") or "",
            "status": r.status, "model": r.model, "statistic": r.statistic, "stat": r.stat,
            "dof": r.dof, "counts": r.counts, "emin_keV": r.band[0], "emax_keV": r.band[1],
        }  # fmt: skip
        for p in names:
            v, lo, hi = r.params.get(p, (math.nan, math.nan, math.nan))
            row[p], row[f"{p}_errlo90"], row[f"{p}_errhi90"] = v, lo, hi
        for f in fluxes:
            row[f] = r.fluxes.get(f, math.nan)
        rows.append(row)
    table = Table(rows=rows)
    table.meta["comments"] = [
        "Regio fit_spectrum: sherpa quick-look fits; errors are 90 % confidence (conf, sigma "
        "1.645); fluxes in erg/cm2/s (observed and unabsorbed)",
    ]
    return table


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    try:
        import sherpa  # noqa: F401
    except ImportError:
        raise ScriptError("sherpa is not installed on this worker (pip install sherpa)") from None
    # quick-look fits are per observation and camera: no combined spectra
    generate_spectra.run({**inp, "params": {**params, "combine": False}})
    extended = params.get("source_extent", "point") == "extended"
    band = (float(params.get("fit_emin", 0.3)), float(params.get("fit_emax", 10.0)))
    if band[1] <= band[0]:
        raise ScriptError(f"the fit band is empty: {band[0]} keV >= {band[1]} keV")
    results: list[tuple[dict[str, Any], FitResult]] = []
    with stage("fit"):
        entries = source_spectra(output_dir)
        for k, entry in enumerate(entries, 1):
            path = output_dir / entry["file"]
            try:
                result, plot = fit_spectrum(path, extended=extended, band=band)
            except Exception as exc:  # a fit that fails is reported, the others go on
                result, plot = FitResult(path.name, f"not fitted: the fit failed ({exc})"), None
            say(describe(result))
            if plot is not None:
                png = path.name.replace(".pha", "_fit.png")
                plot_fit(output_dir / png, plot, result)
                save_product(
                    output_dir, png, "plot", f"Fit of {path.name}: {result.model}",
                    entry.get("obsid"), entry.get("camera"), preview=png,
                )  # fmt: skip
            results.append((entry, result))
            progress(k, len(entries))
        results_table(results).write(output_dir / TABLE, format="ascii.ecsv", overwrite=True)
        save_product(output_dir, TABLE, "table", "Fit results: parameters, errors, fluxes")
    fitted = sum(r.fitted for _, r in results)
    if fitted == 0:
        say(
            "[WARNING] no spectrum has a usable response (RMF and ARF), so nothing was fitted: "
            "run on a worker with SAS, or configure a response library and make the ARFs"
        )
    else:
        say(f"fitted {fitted} of {len(results)} spectra")


if __name__ == "__main__":
    main(run)
