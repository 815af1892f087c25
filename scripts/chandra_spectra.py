#!/usr/bin/env python3
"""Source and background spectra (OGIP PHA) of the session's regions, per Chandra ACIS list.

Run by hand: ``python scripts/chandra_spectra.py input.json`` (input layout: ``regio_kit``).
The science lives in ``scripts/chandra`` (and the shared parts of ``scripts/xmm``); see
``chandra_spectra.toml`` for the documentation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from chandra import responses
from chandra.pipeline import prepare
from chandra.spectra import region_spectrum, write_pha
from regio_kit import main
from xmm.products import (
    SPECTRUM_KINDS,
    describe_spectra,
    preview_stage,
    spectra_summary,
    write_spectra,
    write_stage,
)
from xmm.provenance import Provenance
from xmm.run import say
from xmm.spectra import group_min_counts


def run(inp: dict[str, Any]) -> None:
    params = inp["params"]
    output_dir = Path(inp["output_dir"])
    provenance = Provenance(inp)
    observations = prepare(inp, provenance)
    min_counts = int(params.get("min_counts", 0))

    def write_observation(obs):
        spectra = {
            name: region_spectrum(obs, name, kind)
            for name, kind in SPECTRUM_KINDS
            if name in obs.regions
        }
        if min_counts > 0:
            src = spectra["source"]
            src.grouping, src.quality = group_min_counts(src.counts, min_counts)
        stem = f"{obs.obsid}_{obs.camera}"
        cards = provenance.cards(obs.obsid, obs.camera)
        writer = functools.partial(write_pha, wcs=obs.events.wcs, extra_cards=cards)
        files = write_spectra(output_dir, stem, spectra, writer)
        choice = responses.choose(
            output_dir,
            files["source"],
            str(obs.events.path),
            obs.regions["source"],
            params.get("source_extent", "point") == "extended",
            say,
        )
        src = spectra["source"]
        src.respfile, src.ancrfile = choice.respfile, choice.ancrfile
        say(f"{obs.label}: RESPFILE {choice.respfile}, ANCRFILE {choice.ancrfile}: {choice.reason}")
        say(spectra_summary(obs.label, files, spectra, ".6g"))
        return obs, stem, spectra, files

    written = write_stage(output_dir, observations, provenance, write_observation)
    preview_stage(
        output_dir,
        written,
        functools.partial(describe_spectra, output_dir),
    )


if __name__ == "__main__":
    main(run)
