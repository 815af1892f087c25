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
from xmm import responses
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
            },
            region=obs.regions[name],
            ccd_gtis=dict(obs.good_time),
        )
        out[name] = spec
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
        provenance=provenance,
        after_extract=check_pileup,
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
            combine_per_camera(output_dir, written, provenance)
            if params.get("combine", True)
            else []
        )
        provenance.write_json(output_dir)
    with stage("previews"):
        for k, (obs, stem, spectra, files) in enumerate(written, 1):
            describe_spectra(output_dir, obs, stem, spectra, files)
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


def combine_per_camera(output_dir: Path, written: list, provenance: Provenance) -> list:
    """A combined spectrum per camera when more than one observation of it was processed."""
    out = []
    cameras = sorted({obs.camera for obs, *_ in written})
    for camera in cameras:
        parts = [spectra for obs, _, spectra, _ in written if obs.camera == camera]
        if len(parts) < 2:
            continue
        spectra = {"source": combine([p["source"] for p in parts], "TOTAL")}
        if all("background" in p for p in parts):
            spectra["background"] = combine([p["background"] for p in parts], "BKG")
        stem = f"combined_{camera}"
        write = functools.partial(write_pha, camera=camera, extra_cards=provenance.cards())
        files = write_spectra(output_dir, stem, spectra, write)
        say(
            f"{camera}: combined {len(parts)} observations: {spectra['source'].total_counts} counts, "
            f"EXPOSURE {spectra['source'].exposure:.1f} s"
        )
        out.append((camera, stem, spectra, files))
    return out


if __name__ == "__main__":
    main(run)
