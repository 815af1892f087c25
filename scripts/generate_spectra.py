#!/usr/bin/env python3
"""Source and background spectra (OGIP PHA) of the session's regions, per observation and camera.

Run by hand: ``python scripts/generate_spectra.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/xmm``; see ``generate_spectra.toml`` for the documentation.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from regio_kit import main, progress, save_product, stage
from xmm import oot, pileup, responses, rspcombine
from xmm.footprint import _SKY0
from xmm.pipeline import Observation
from xmm.products import (
    SPECTRUM_KINDS,
    describe_spectra,
    spectra_summary,
    spectrum_png,
    write_spectra,
)
from xmm.provenance import Provenance
from xmm.run import check_pileup, pileup_cards, prepare, say
from xmm.spectra import (
    Spectrum,
    channel_grid,
    combine,
    combine_backgrounds,
    event_keywords,
    group_min_counts,
    write_pha,
)


def response_folder(params: dict[str, Any]) -> Path | None:
    folder = params.get("response_dir") or os.environ.get("REGIO_RESPONSES") or ""
    return Path(folder) if folder else None


def source_rawy(obs: Observation) -> float | None:
    """Mean RAWY of the source events on the CCD holding most of the source region (from the
    CCD's sky -> raw map), for the choice of a canned pn response row."""
    weights = obs.areas["source"].weights()
    if not weights:
        return None
    ccd = max(weights, key=weights.__getitem__)
    geom = obs.geometry.get(ccd)
    if geom is None or geom.to_raw is None:
        return None
    sel = obs.selected["source"]
    on = sel.ccd == ccd
    if not on.any():
        return None
    dx, dy = float(sel.x[on].mean()) - _SKY0, float(sel.y[on].mean()) - _SKY0
    (_, ay), (_, by), (_, cy) = geom.to_raw
    return ay * dx + by * dy + cy


def response_needs(obs: Observation, n_channels: int) -> responses.Needs:
    ev = obs.events
    return responses.Needs(
        camera=obs.camera,
        submode=str(ev.keyword("SUBMODE", "")),
        datamode=str(ev.keyword("DATAMODE", "IMAGING")),
        date_obs=str(ev.keyword("DATE-OBS", "")),
        n_channels=n_channels,
        rawy=source_rawy(obs) if obs.camera == "EPN" else None,
    )


def attach_responses(
    output_dir: Path,
    obs: Observation,
    spectra: dict[str, Spectrum],
    files: dict[str, str],
    params: dict[str, Any],
) -> None:
    """The response step: SAS rmfgen/arfgen, else a canned RMF, else NONE (logged)."""
    src = spectra["source"]
    choice = responses.choose(
        output_dir,
        files["source"],
        str(obs.events.path),
        response_needs(obs, src.grid.n),
        response_folder(params),
        params.get("source_extent", "point") == "extended",
        say,
    )
    src.respfile, src.ancrfile = choice.respfile, choice.ancrfile
    if choice.how == "none":
        say(f"{obs.label}: RESPFILE NONE, ANCRFILE NONE: {choice.reason}")
    else:
        say(f"{obs.label}: RESPFILE {choice.respfile}, ANCRFILE {choice.ancrfile}: {choice.reason}")


def core_excision(params: dict[str, Any]):
    """``extra_regions_for`` of prepare: the source region less a core circle (pile-up)."""
    radius = float(params.get("excise_core_arcsec", 0.0) or 0.0)
    if radius <= 0:
        return None

    def excise(meta: dict[str, Any], regions: dict) -> dict:
        say(f'{meta.get("obsid")} {meta.get("camera")}: source core of {radius:g}" excised')
        return {"source": pileup.excise_core(regions["source"], radius)}

    return excise


def pattern_plot(output_dir: Path, obs: Observation, stem: str) -> None:
    """The epatplot-like pattern fractions of the source (see xmm.pileup), when usable."""
    check = obs.meta.get("_pattern_check")
    sel = obs.selected["source"]
    if check is None or len(sel) < pileup.MIN_EVENTS:
        return
    png = f"{stem}_patterns.png"
    pileup.pattern_plot(
        output_dir / png, f"{obs.label} pattern fractions", sel.x, sel.y, sel.pattern, sel.pi,
        check,
    )  # fmt: skip
    save_product(output_dir, png, "plot", f"Pattern fractions (pile-up) {obs.label}",
                 obs.obsid, obs.camera, preview=png)  # fmt: skip


def subtract_out_of_time(obs: Observation, spectra: dict[str, Spectrum], grid) -> None:
    """Subtract the scaled spectrum of the pn out-of-time list, when the archive has it
    (:mod:`xmm.oot`), from the source and background spectra; the log says what was done."""
    oot_list, why = oot.find_oot_list(obs.events)
    if oot_list is None:
        say(f"{obs.label}: out-of-time events not subtracted: {why}")
        return
    submode = str(obs.events.keyword("SUBMODE", ""))
    fraction = oot.OOT_FRACTION.get(submode)
    if fraction is None:
        say(f"[WARNING] {obs.label}: {why} found, but no OoT fraction is known for {submode}")
        return
    twin = Observation(obs.meta, oot_list, obs.regions)
    twin.read()
    twin.good_time = {c: g for c, g in obs.good_time.items() if c in oot_list.ccds}
    twin.keep_good_time()
    for name, spec in spectra.items():
        oot_counts = grid.histogram(twin.selected[name].pi)
        spec.counts, spec.stat_err = oot.subtract(spec.counts, oot_counts, fraction)
        spec.history.append(
            f"out-of-time events subtracted: {oot_list.path.name}, {int(oot_counts.sum())} "
            f"events x {fraction} ({submode})"
        )
        spec.keywords["OOTFRAC"] = fraction
        spec.keywords["OOTFILE"] = oot_list.path.name
        say(
            f"{obs.label}: {name}: subtracted {fraction * oot_counts.sum():.1f} out-of-time "
            f"counts ({int(oot_counts.sum())} events of {oot_list.path.name} x {fraction})"
        )


def observation_spectra(obs: Observation, params: dict[str, Any]) -> dict[str, Spectrum]:
    """Source and (if a background region exists) background spectra of one observation."""
    grid = channel_grid(obs.camera, int(params.get("mos_bin", 5)))
    keywords = event_keywords(obs.events)
    out = {}
    for name, kind in SPECTRUM_KINDS:
        if name not in obs.regions:
            continue
        sel = obs.selected[name]
        spec = Spectrum(
            counts=grid.histogram(sel.pi),
            grid=grid,
            exposure=obs.exposure(name),
            backscal=obs.areas[name].total,
            kind=kind,
            keywords={
                **keywords,
                "ONTIME": sum(
                    w * obs.good_time_total(c) for c, w in obs.areas[name].weights().items()
                ),
                "LIVETIME": obs.exposure(name),
            },
            region=obs.regions[name],
            ccd_gtis=dict(obs.good_time),
        )
        out[name] = spec
    if obs.camera == "EPN" and params.get("subtract_oot", True):
        subtract_out_of_time(obs, out, grid)
    min_counts = int(params.get("min_counts", 0))
    if min_counts > 0:
        src = out["source"]
        src.grouping, src.quality = group_min_counts(src.counts, min_counts)
    return out


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    provenance = Provenance(inp)
    observations = prepare(
        inp,
        screen_flares=bool(params.get("screen_flares", True)),
        rescreen=bool(params.get("rescreen", False)),
        provenance=provenance,
        after_extract=check_pileup,
        extra_regions_for=core_excision(params),
    )
    written: list[tuple[Observation, str, dict[str, Spectrum], dict[str, str]]] = []
    with stage("write products"):
        for k, obs in enumerate(observations, 1):
            spectra = observation_spectra(obs, params)
            stem = f"{obs.obsid}_{obs.camera}"
            cards = provenance.cards(obs.obsid, obs.camera) + pileup_cards(obs)
            write = functools.partial(write_pha, camera=obs.camera, extra_cards=cards)
            files = write_spectra(output_dir, stem, spectra, write)
            attach_responses(output_dir, obs, spectra, files, params)
            say(spectra_summary(obs.label, files, spectra, ".0f"))
            written.append((obs, stem, spectra, files))
            progress(k, len(observations))
        combined = (
            combine_per_camera(output_dir, written, provenance, int(params.get("min_counts", 0)))
            if params.get("combine", True)
            else []
        )
        provenance.write_json(output_dir)
    with stage("previews"):
        for k, (obs, stem, spectra, files) in enumerate(written, 1):
            describe_spectra(output_dir, obs, stem, spectra, files)
            pattern_plot(output_dir, obs, stem)
            progress(k, len(written) + len(combined))
        for k, (camera, stem, spectra, files) in enumerate(combined, len(written) + 1):
            png = spectrum_png(
                output_dir, stem, f"{camera}, {len(written)} observations combined", spectra
            )
            extra = {
                "date_obs": None,
                "exposure": round(spectra["source"].exposure, 3),
                "preview": png,
            }
            save_product(
                output_dir, png, "plot", f"Combined spectrum preview {camera}", None, camera
            )
            for name, file in files.items():
                save_product(
                    output_dir,
                    file,
                    "spectrum",
                    f"Combined {name} spectrum {camera}",
                    None,
                    camera,
                    **extra,
                )
            progress(k, len(written) + len(combined))
        save_product(output_dir, "provenance.json", "other", "Provenance of the products (JSON)")


def combine_per_camera(
    output_dir: Path, written: list, provenance: Provenance, min_counts: int = 0
) -> list:
    """A combined spectrum per camera when more than one observation of it was processed.

    Counts, EXPOSURE, ONTIME and LIVETIME summed; the background's BACKSCAL keeps the predicted
    background; grouped like the inputs; the responses combined exposure-weighted
    (:mod:`xmm.rspcombine`, as epicspeccombine) when every input has them. Refused (not written,
    the log says why) when a correct combination is impossible: some inputs with responses and
    others without, responses on different grids, or backgrounds for only some inputs.
    """
    out = []
    cameras = sorted({obs.camera for obs, *_ in written})
    for camera in cameras:
        parts = [spectra for obs, _, spectra, _ in written if obs.camera == camera]
        if len(parts) < 2:
            continue
        sources = [p["source"] for p in parts]
        with_resp = [s.respfile != "NONE" for s in sources]
        refusal = None
        if any(with_resp) and not all(with_resp):
            refusal = "only some of the spectra have a response (RESPFILE)"
        elif any("background" in p for p in parts) and not all("background" in p for p in parts):
            refusal = "only some of the observations have a background spectrum"
        elif len({s.ancrfile == "NONE" for s in sources}) > 1:
            refusal = "only some of the spectra have an ARF (ANCRFILE)"
        elif len({s.grid for s in sources}) > 1:
            refusal = "the spectra are on different channel grids"
        rsp_name = None
        if refusal is None and all(with_resp):
            full = sources[0].ancrfile != "NONE"
            rsp_name = f"combined_{camera}." + ("rsp" if full else "rmf")
            try:
                rsp = rspcombine.combine([
                    (output_dir / s.respfile,
                     None if s.ancrfile == "NONE" else output_dir / s.ancrfile, s.exposure)
                    for s in sources
                ])  # fmt: skip
                rspcombine.write_rsp(output_dir / rsp_name, rsp, sources[0].keywords, full)
            except (rspcombine.ResponseMismatch, OSError, KeyError) as exc:
                refusal = f"the responses cannot be combined: {exc}"
        if refusal is not None:
            say(f"[WARNING] {camera}: no combined spectrum: {refusal}")
            continue
        spectra = {"source": combine(sources, "TOTAL")}
        if all("background" in p for p in parts):
            spectra["background"] = combine_backgrounds(
                sources, [p["background"] for p in parts], spectra["source"]
            )
        src = spectra["source"]
        if rsp_name is not None:
            src.respfile = rsp_name
            src.history.append(
                f"RESPFILE {rsp_name}: the inputs' responses weighted by EXPOSURE (epicspeccombine)"
            )
        if min_counts > 0:
            src.grouping, src.quality = group_min_counts(src.counts, min_counts)
        stem = f"combined_{camera}"
        write = functools.partial(
            write_pha, camera=camera, extra_cards=provenance.cards(camera=camera)
        )
        files = write_spectra(output_dir, stem, spectra, write)
        say(
            f"{camera}: combined {len(parts)} observations: {src.total_counts} counts, "
            f"EXPOSURE {src.exposure:.1f} s, ONTIME {src.keywords['ONTIME']:.1f} s, "
            + (f"response {rsp_name}" if rsp_name else "no response (none of the inputs has one)")
        )
        out.append((camera, stem, spectra, files))
    return out


if __name__ == "__main__":
    main(run)
