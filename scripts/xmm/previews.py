"""PNG previews of the products (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

DPI = 100


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def display_groups(counts: NDArray, min_counts: int = 20) -> list[slice]:
    """Adjacent channel groups of at least ``min_counts`` counts (display only)."""
    groups, start, running = [], 0, 0
    for k, c in enumerate(counts):
        running += int(c)
        if running >= min_counts:
            groups.append(slice(start, k + 1))
            start, running = k + 1, 0
    if start < len(counts) and groups:
        last = groups.pop()
        groups.append(slice(last.start, len(counts)))
    elif not groups:
        groups.append(slice(0, len(counts)))
    return groups


def spectrum_preview(
    path: Path,
    title: str,
    e_lo: NDArray,
    e_hi: NDArray,
    src_counts: NDArray,
    src_exposure: float,
    bkg_counts: NDArray | None = None,
    bkg_exposure: float = 0.0,
    bkg_scale: float = 0.0,
) -> None:
    """Count rate per keV against energy: source (gross) and scaled background, with errors.

    ``bkg_scale`` = BACKSCAL_src / BACKSCAL_bkg; the background rate is its counts over its own
    exposure times ``bkg_scale``.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = display_groups(src_counts)
    band = (e_hi > 0.15) & (e_lo < 12.0)
    groups = [g for g in groups if band[g].any()]

    def rates(counts, exposure, scale=1.0):
        c = np.array([counts[g].sum() for g in groups], dtype=float)
        width = np.array([e_hi[g].max() - e_lo[g].min() for g in groups])
        return scale * c / exposure / width, scale * np.sqrt(np.maximum(c, 1)) / exposure / width

    centres = np.array([(e_lo[g].min() + e_hi[g].max()) / 2 for g in groups])
    half = np.array([(e_hi[g].max() - e_lo[g].min()) / 2 for g in groups])
    if src_exposure > 0 and groups:
        r, e = rates(src_counts, src_exposure)
        ax.errorbar(centres, r, xerr=half, yerr=e, fmt=".", ms=3, lw=0.8, label="source (gross)")
    if bkg_counts is not None and bkg_exposure > 0 and groups:
        r, e = rates(bkg_counts, bkg_exposure, bkg_scale)
        ax.errorbar(
            centres, r, xerr=half, yerr=e, fmt=".", ms=3, lw=0.8, color="tab:red",
            label="background (scaled to the source area)",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.15, 12.0)
    ax.set_xlabel("Energy (keV)")
    ax.set_ylabel("counts s$^{-1}$ keV$^{-1}$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def lightcurve_preview(path: Path, title: str, curves: list[dict]) -> None:
    """Net rate with errors against time, background rate, GTI gaps shaded; one panel per curve.

    Each curve: ``label``, ``time`` (bin centres, s), ``rate``, ``error``, ``backv``, ``good``
    (bins above the exposure threshold), ``gaps`` ((n, 2) intervals outside the good time), and
    ``t0`` (s, subtracted for display).
    """
    fig, axes = plt.subplots(len(curves), 1, figsize=(7.0, 2.4 + 1.6 * len(curves)), squeeze=False)
    for ax, c in zip(axes[:, 0], curves, strict=True):
        t = (c["time"] - c["t0"]) / 1000.0
        good = c["good"]
        ax.errorbar(
            t[good],
            c["rate"][good],
            yerr=c["error"][good],
            fmt=".",
            ms=3,
            lw=0.7,
            label="net source",
        )
        if (~good).any():
            ax.plot(
                t[~good], c["rate"][~good], "x", color="0.5", ms=4, label="low exposure (flagged)"
            )
        ax.step(t, c["backv"], where="mid", color="tab:red", lw=0.8, label="background (scaled)")
        for a, b in c["gaps"]:
            ax.axvspan((a - c["t0"]) / 1000.0, (b - c["t0"]) / 1000.0, color="0.85", lw=0)
        ax.set_ylabel("counts s$^{-1}$")
        ax.set_title(c["label"], fontsize=9)
    axes[-1, 0].set_xlabel("Time since start (ks)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def multi_epoch_preview(path: Path, title: str, curves: list[dict], mjdref: float) -> None:
    """All observations on one time axis (MJD): net rate per bin, good bins only."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for c in curves:
        good = c["good"]
        mjd = mjdref + c["time"][good] / 86400.0
        ax.errorbar(
            mjd, c["rate"][good], yerr=c["error"][good], fmt=".", ms=3, lw=0.7, label=c["label"]
        )
    ax.set_xlabel("MJD (TT)")
    ax.set_ylabel("net counts s$^{-1}$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    _save(fig, path)


def image_preview(path: Path, title: str, image: NDArray, wcs, overlays: list[tuple]) -> None:
    """Counts image (asinh stretch) with region outlines; ``overlays``: (artist list, colour)."""
    fig = plt.figure(figsize=(5.6, 5.2))
    ax = fig.add_subplot(projection=wcs)
    shown = np.arcsinh(
        image / max(np.percentile(image[image > 0], 50), 1.0) if image.any() else image
    )
    ax.imshow(shown, origin="lower", cmap="magma", interpolation="nearest")
    for artists, colour in overlays:
        for artist in artists:
            artist.set_edgecolor(colour)
            artist.set_facecolor("none")
            ax.add_artist(artist)
    ax.set_xlabel("RA")
    ax.set_ylabel("Dec")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
