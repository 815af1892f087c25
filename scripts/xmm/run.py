"""Stages every script shares: read events, screen flares, extract; with clear skips and failures.

An observation that cannot give a product (exposure map only, unreadable file, source region off
every CCD, no events in it, no good time) is skipped with a log line naming the reason; when
none is left the run fails with an ``[ERROR]`` that lists the reasons.

Pile-up: the source count rate per frame is compared with the XMM Users Handbook limits for a
point source in full-frame mode (MOS 0.70 counts/s x 2.6 s = 1.82 counts/frame, pn 6 counts/s x
73.4 ms = 0.44 counts/frame); above it a warning goes to the log and into the products' headers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from regio_kit import ScriptError, progress, stage
from xmm import pileup
from xmm.pipeline import (
    EventObservation,
    ExtraRegions,
    Observation,
    SkipObservation,
    open_observation,
)
from xmm.provenance import Provenance

PILEUP_RADIUS_ARCSEC = 20.0
PILEUP_ENCIRCLED = 0.8
PILEUP_COUNTS_PER_FRAME = {"EMOS1": 0.70 * 2.6, "EMOS2": 0.70 * 2.6, "EPN": 6.0 * 0.0734}


Opener = Callable[[dict[str, Any], dict[str, Any], ExtraRegions | None], EventObservation]


def say(text: str) -> None:
    print(text, flush=True)


def _label(obs: dict[str, Any]) -> str:
    return f"{obs.get('obsid', '?')} {obs.get('camera') or obs.get('instrument') or '?'}"


def prepare(
    inp: dict[str, Any],
    *,
    screen_flares: bool | None,
    rescreen: bool = False,
    extra_regions_for: ExtraRegions | None = None,
    provenance: Provenance,
    opener: Opener = open_observation,
    after_extract: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run the shared stages; returns the usable observations (fails if there are none).

    ``opener`` opens one observation of the input (EPIC by default; another instrument passes
    ``open_observation`` with its own classes); ``screen_flares`` None skips the flare
    screening stage (an instrument without one); ``after_extract(obs)`` is an extra check after
    the extraction (EPIC scripts pass :func:`check_pileup`) that may raise SkipObservation.
    """
    problems: list[str] = []
    observations: list[Observation] = []
    selected = inp.get("observations") or []
    if not selected:
        raise ScriptError("no observation was selected")

    def skip(label: str, reason: str) -> None:
        say(f"[WARNING] skipping {label}: {reason}")
        problems.append(f"{label}: {reason}")

    with stage("read events"):
        for k, meta in enumerate(selected, 1):
            try:
                obs = opener(meta, inp, extra_regions_for)
                say(f"{obs.label}: reading {obs.events.n_rows} events from {obs.events.path.name}")
                obs.read()
                say(
                    f"{obs.label}: {obs.n_standard} events pass the standard filter "
                    f"({obs.filters_text()}); "
                    + ", ".join(f"{len(v)} in the {n} region" for n, v in obs.selected.items())
                )
                observations.append(obs)
            except SkipObservation as exc:
                skip(_label(meta), str(exc))
            progress(k, len(selected))
    if screen_flares is not None:
        with stage("screen flares"):
            kept = []
            for k, obs in enumerate(observations, 1):
                try:
                    say(obs.screen(screen_flares, rescreen=rescreen))
                    kept.append(obs)
                except SkipObservation as exc:
                    skip(obs.label, str(exc))
                progress(k, len(observations))
            observations = kept
    with stage("extract"):
        kept = []
        for k, obs in enumerate(observations, 1):
            try:
                _extract(obs)
                if after_extract is not None:
                    after_extract(obs)
                provenance.add_input(
                    obs.meta,
                    obs.camera,
                    {n: r.ds9() for n, r in obs.regions.items()},
                    obs.filters_text(),
                )
                kept.append(obs)
            except SkipObservation as exc:
                skip(obs.label, str(exc))
            progress(k, len(observations))
        observations = kept
    if not observations:
        raise ScriptError("nothing to process: " + "; ".join(problems))
    return observations


def _extract(obs: EventObservation) -> None:
    obs.extract()
    source = obs.areas["source"]
    if source.total <= 0:
        raise SkipObservation(
            "the source region lies outside every CCD (off the field of view, on chip gaps or "
            "on a dead or switched-off CCD)"
        )
    n_src = len(obs.selected["source"])
    if n_src == 0:
        raise SkipObservation("no events in the source region after the filters and good time")
    for name, area in obs.areas.items():
        if name == "source":
            continue
        if area.total <= 0:
            raise SkipObservation(f"the {name} region lies outside every CCD")
    exposure = obs.exposure("source")
    ccds = ", ".join(f"CCD {c} ({100 * w:.0f} %)" for c, w in obs.areas["source"].weights().items())
    say(
        f"{obs.label}: source {n_src} events, live area {source.total:.0f} sky px^2 "
        f"({source.total / max(source.geometric, 1e-9) * 100:.1f} % of the region) on {ccds}, "
        f"exposure {exposure:.1f} s"
    )


def check_pileup(obs: Observation) -> None:
    """EPIC pile-up: counts per frame at the source's brightest spot against the UHB limit, and
    the epatplot-like pattern check (:mod:`xmm.pileup`: doubles fraction of the core against the
    wings); either flags the risk in the log and the products' headers."""
    counts_per_frame = peak_counts_per_frame(obs, obs.exposure("source"))
    obs.meta["_counts_per_frame"] = counts_per_frame
    limit = PILEUP_COUNTS_PER_FRAME[obs.camera]
    sel = obs.selected["source"]
    check = pileup.pattern_check(sel.x, sel.y, sel.pattern, sel.pi)
    obs.meta["_pattern_check"] = check
    rate_high = counts_per_frame > limit
    obs.meta["_pileup"] = bool(rate_high or check.piled)
    say(f"{obs.label}: pile-up pattern check: {check.describe()}")
    if rate_high:
        say(
            f"[WARNING] {obs.label}: pile-up risk: {counts_per_frame:.2f} counts per "
            f"{obs.events.frame_time:.4g} s frame from the brightest spot of the source region "
            f"(limit {limit:.2f}); check the pattern plot, or excise the core with an annulus"
        )
    if check.piled:
        say(
            f"[WARNING] {obs.label}: pile-up seen in the pattern fractions ({check.describe()}); "
            "excise the core with an annulus (excise_core_arcsec)"
        )


def peak_counts_per_frame(obs: Observation, exposure: float) -> float:
    """Counts per frame of a point source at the brightest spot of the source region.

    The events within ``PILEUP_RADIUS_ARCSEC`` (20", ~80 % of a point source's counts) of the
    densest 4" cell, divided by that encircled fraction, times the frame time over the exposure.
    """
    sel = obs.selected["source"]
    if exposure <= 0 or len(sel) == 0:
        return 0.0
    pixel = 0.05  # arcsec per sky pixel
    cell = 4.0 / pixel
    ix, iy = np.floor(sel.x / cell).astype(np.int64), np.floor(sel.y / cell).astype(np.int64)
    keys, counts = np.unique(ix * 1_000_003 + iy, return_counts=True)
    best = keys[np.argmax(counts)]
    cx, cy = (best // 1_000_003 + 0.5) * cell, (best % 1_000_003 + 0.5) * cell
    r = PILEUP_RADIUS_ARCSEC / pixel
    n = np.count_nonzero((sel.x - cx) ** 2 + (sel.y - cy) ** 2 <= r * r)
    return n / PILEUP_ENCIRCLED / exposure * obs.events.frame_time


def pileup_cards(obs: Observation) -> list[tuple]:
    """The checks' cards: flare screening (what it did) and pile-up risk."""
    cards = obs.screening_cards() if hasattr(obs, "screening_cards") else []
    cards += [
        ("FRMTIME", obs.events.frame_time * 1000.0, "[ms] frame integration time"),
        (
            "CTSFRAME",
            round(float(obs.meta.get("_counts_per_frame", 0.0)), 6),
            "source counts per frame",
        ),
        (
            "PILEUP",
            bool(obs.meta.get("_pileup", False)),
            "pile-up risk (rate per frame or pattern check)",
        ),
    ]
    check = obs.meta.get("_pattern_check")
    if check is not None and check.usable:
        cards += [
            ("PATDCORE", round(check.core[0], 5), "doubles fraction D/(S+D), core"),
            ("PATDWING", round(check.wings[0], 5), "doubles fraction D/(S+D), wings"),
            ("PATDSIG", round(check.significance, 3), "[sigma] core excess over the wings"),
        ]
    if obs.meta.get("_pileup"):
        cards.append(("COMMENT", "WARNING: pile-up risk in the source region (see CTSFRAME)"))
    return cards


def product_extra(obs: EventObservation, preview: str | None) -> dict[str, Any]:
    """The extra keys of a product entry (date, exposure, preview file)."""
    return {
        "date_obs": obs.events.keyword("DATE-OBS"),
        "exposure": round(obs.exposure("source"), 3),
        "preview": preview,
    }
