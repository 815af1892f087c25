"""Pile-up diagnostics of an EPIC source: an epatplot-like pattern-fraction check, core excision.

Pile-up turns two single-pixel events of one frame into one event of a larger pattern: in the
piled core of a point source the fraction of doubles (and larger patterns) rises against the
singles. SAS ``epatplot`` compares the observed pattern fractions with the calibrated curves;
without the calibration at hand, the same signature is measured here against the source's own
wings, which are not piled: the doubles fraction ``D / (S + D)`` (PATTERN 1-4 over 0-4, PI
500-10000 eV) within ``CORE_ARCSEC`` of the brightest spot is compared with the one between
``WING_ARCSEC``. A core fraction above the wings' by more than ``SIGNIFICANCE`` standard
deviations and by more than ``MIN_EXCESS`` (relative) flags pile-up; the remedy is to excise the
core with an annulus (the spectra scripts' ``excise_core_arcsec``). The fractions per energy
band go to a plot (as epatplot's upper panel) for the source and its core.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from xmm.selection import Circle, Region

PIXEL_ARCSEC = 0.05
CORE_ARCSEC = 5.0
WING_ARCSEC = (10.0, 40.0)
BAND_EV = (500, 10000)
SIGNIFICANCE = 3.0
MIN_EXCESS = 0.10
MIN_EVENTS = 50
CLASSES = (("singles", 0, 0), ("doubles", 1, 4), ("triples", 5, 8), ("quadruples", 9, 12))


def brightest_spot(x: NDArray, y: NDArray, cell_arcsec: float = 4.0) -> tuple[float, float]:
    """Centre [sky pixels] of the densest ``cell_arcsec`` cell of the events."""
    cell = cell_arcsec / PIXEL_ARCSEC
    ix, iy = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
    keys, counts = np.unique(ix * 1_000_003 + iy, return_counts=True)
    best = keys[np.argmax(counts)]
    return float((best // 1_000_003 + 0.5) * cell), float((best % 1_000_003 + 0.5) * cell)


def doubles_fraction(pattern: NDArray, pi: NDArray) -> tuple[float, float, int]:
    """``(D/(S+D), its binomial error, S+D)`` of the events in ``BAND_EV``."""
    band = (pi >= BAND_EV[0]) & (pi <= BAND_EV[1])
    s = int(np.count_nonzero(band & (pattern == 0)))
    d = int(np.count_nonzero(band & (pattern >= 1) & (pattern <= 4)))
    n = s + d
    if n == 0:
        return math.nan, math.nan, 0
    f = d / n
    return f, math.sqrt(max(f * (1 - f), 1.0 / n) / n), n


@dataclass
class PatternCheck:
    core: tuple[float, float, int]
    wings: tuple[float, float, int]
    centre: tuple[float, float]

    @property
    def significance(self) -> float:
        (fc, ec, _), (fw, ew, _) = self.core, self.wings
        if math.isnan(fc) or math.isnan(fw):
            return math.nan
        return (fc - fw) / math.hypot(ec, ew)

    @property
    def usable(self) -> bool:
        return self.core[2] >= MIN_EVENTS and self.wings[2] >= MIN_EVENTS

    @property
    def piled(self) -> bool:
        if not self.usable:
            return False
        return self.significance > SIGNIFICANCE and self.core[0] > (1 + MIN_EXCESS) * self.wings[0]

    def describe(self) -> str:
        if not self.usable:
            return (
                f"pattern check not possible: {self.core[2]} core and {self.wings[2]} wing "
                f"events (need {MIN_EVENTS} each)"
            )
        return (
            f'doubles fraction {self.core[0]:.3f} +- {self.core[1]:.3f} within {CORE_ARCSEC:g}" '
            f"of the brightest spot, {self.wings[0]:.3f} +- {self.wings[1]:.3f} in the "
            f'{WING_ARCSEC[0]:g}-{WING_ARCSEC[1]:g}" wings ({self.significance:+.1f} sigma)'
        )


def pattern_check(x: NDArray, y: NDArray, pattern: NDArray, pi: NDArray) -> PatternCheck:
    """The core-versus-wings doubles fraction of a source's events."""
    if len(x) == 0:
        nothing = (math.nan, math.nan, 0)
        return PatternCheck(nothing, nothing, (math.nan, math.nan))
    cx, cy = brightest_spot(x, y)
    r = np.hypot(x - cx, y - cy) * PIXEL_ARCSEC
    core = r <= CORE_ARCSEC
    wings = (r > WING_ARCSEC[0]) & (r <= WING_ARCSEC[1])
    return PatternCheck(
        doubles_fraction(pattern[core], pi[core]),
        doubles_fraction(pattern[wings], pi[wings]),
        (cx, cy),
    )


def excise_core(region: Region, radius_arcsec: float) -> Region:
    """The region with a circle of ``radius_arcsec`` about the centre of its first shape
    excluded (an annulus for a circular region)."""
    first = region.includes[0]
    if hasattr(first, "xs"):
        x, y = float(np.mean(first.xs)), float(np.mean(first.ys))
    else:
        x, y = float(first.x), float(first.y)
    return Region([*region.shapes, Circle(False, x, y, radius_arcsec / PIXEL_ARCSEC)])


def pattern_plot(path: Path, title: str, x, y, pattern, pi, check: PatternCheck) -> None:
    """Pattern fractions against energy (as epatplot's upper panel): the whole source region
    (lines) and its core (points), with the classes the selection holds."""
    from xmm import previews

    edges = np.geomspace(300, 10000, 16)
    centres = np.sqrt(edges[:-1] * edges[1:]) / 1000.0
    fig = previews.figure((6.4, 4.2), top=0.8)
    ax = fig.add_subplot()
    r = np.hypot(x - check.centre[0], y - check.centre[1]) * PIXEL_ARCSEC
    core = r <= CORE_ARCSEC
    for (name, lo, hi), colour in zip(CLASSES, ("C0", "C1", "C2", "C3"), strict=True):
        for sel, style, label in ((np.ones(len(x), bool), "-", name), (core, "o", None)):
            total = np.histogram(pi[sel], edges)[0]
            part = np.histogram(pi[sel & (pattern >= lo) & (pattern <= hi)], edges)[0]
            if not part.any():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(total > 0, part / total, np.nan)
            ax.plot(centres, frac, style, color=colour, ms=4, label=label)
    ax.set_xscale("log")
    previews.plain_ticks(ax.xaxis, previews.ENERGY_TICKS[1:])
    ax.set_ylim(0, 1)
    ax.set_xlabel("Energy (keV)")
    ax.set_ylabel("pattern fraction")
    ax.set_title(
        f"{title}\n{textwrap.fill(check.describe(), 100)}\n"
        f'lines: source region, points: core <= {CORE_ARCSEC:g}"',
        fontsize=8,
        y=1.01,
    )
    ax.legend(fontsize=7)
    previews.save(fig, path)
