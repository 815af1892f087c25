"""Writing, previewing and describing products: the steps every instrument's scripts share.

Instrument-neutral: the observations are :class:`xmm.pipeline.EventObservation` of any
instrument, the spectra :class:`xmm.spectra.Spectrum` on any channel grid; each instrument
passes its own file writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from regions import Regions

from regio_kit import progress, save_product, stage
from xmm import gti as gtimod
from xmm import previews
from xmm.images import ImageGrid
from xmm.lightcurves import LightCurve
from xmm.pipeline import EventObservation
from xmm.provenance import Provenance
from xmm.run import product_extra
from xmm.spectra import Spectrum, add_card, fit_comments

SPECTRUM_KINDS = (("source", "TOTAL"), ("background", "BKG"))


# --- stages -----------------------------------------------------------------------------------


def write_stage(
    output_dir: Path,
    observations: list[Any],
    provenance: Provenance,
    write_one: Callable[[Any], tuple],
) -> list[tuple]:
    """The "write products" stage: ``write_one(obs)`` for each observation, with progress, then
    ``provenance.json``. Returns what ``write_one`` returned, in order."""
    written = []
    with stage("write products"):
        for k, obs in enumerate(observations, 1):
            written.append(write_one(obs))
            progress(k, len(observations))
        provenance.write_json(output_dir)
    return written


def preview_stage(
    output_dir: Path,
    written: list[tuple],
    describe_one: Callable[..., None],
    finish: Callable[[], None] | None = None,
) -> None:
    """The "previews" stage: ``describe_one(*item)`` for each written item, with progress, then
    ``finish()``; ``provenance.json`` is described last."""
    with stage("previews"):
        for k, item in enumerate(written, 1):
            describe_one(*item)
            progress(k, len(written))
        if finish is not None:
            finish()
        save_product(output_dir, "provenance.json", "other", "Provenance of the products (JSON)")


# --- spectra ----------------------------------------------------------------------------------


def write_spectra(
    output_dir: Path,
    stem: str,
    spectra: dict[str, Spectrum],
    write: Callable[[Path, Spectrum], None],
) -> dict[str, str]:
    """Write the source (and background) PHA files with ``write(path, spectrum)``.

    The source's BACKFILE names the background file. Returns ``{name: file name}``.
    """
    files = {"source": f"{stem}_src.pha"}
    if "background" in spectra:
        files["background"] = f"{stem}_bkg.pha"
        spectra["source"].backfile = files["background"]
    for name, spec in spectra.items():
        write(output_dir / files[name], spec)
    return files


def spectra_summary(
    label: str, files: dict[str, str], spectra: dict[str, Spectrum], backscal_format: str
) -> str:
    """One log line: files, counts, EXPOSURE and BACKSCAL (``backscal_format``, e.g. ``.0f``)."""
    src = spectra["source"]
    line = (
        f"{label}: {files['source']}: {src.total_counts} counts, EXPOSURE {src.exposure:.1f} s, "
        f"BACKSCAL {src.backscal:{backscal_format}}"
    )
    if "background" in files:
        bkg = spectra["background"]
        line += (
            f"; {files['background']}: {bkg.total_counts} counts, "
            f"BACKSCAL {bkg.backscal:{backscal_format}}"
        )
    return line


def spectrum_png(output_dir: Path, stem: str, title: str, spectra: dict[str, Spectrum]) -> str:
    """The spectrum preview (source and scaled background count rates per keV)."""
    src = spectra["source"]
    bkg = spectra.get("background")
    e_lo, e_hi = src.grid.energy_kev()
    png = f"{stem}_spectrum.png"
    previews.spectrum_preview(
        output_dir / png, title, e_lo, e_hi, src.counts, src.exposure,
        bkg.counts if bkg else None, bkg.exposure if bkg else 0.0,
        src.backscal / bkg.backscal if bkg and bkg.backscal > 0 else 0.0,
    )  # fmt: skip
    return png


def describe_spectra(
    output_dir: Path,
    obs: EventObservation,
    stem: str,
    spectra: dict[str, Spectrum],
    files: dict[str, str],
) -> None:
    """Preview one observation's spectra and describe the files in ``products.json``."""
    title = f"{obs.label} {obs.events.keyword('OBJECT', '')}"
    png = spectrum_png(output_dir, stem, title, spectra)
    extra = product_extra(obs, png)
    save_product(output_dir, png, "plot", f"Spectrum preview {obs.label}", obs.obsid, obs.camera)
    for name, file in files.items():
        save_product(
            output_dir, file, "spectrum",
            f"{name.capitalize()} spectrum (OGIP PHA) {obs.label}", obs.obsid, obs.camera, **extra,
        )  # fmt: skip


# --- light curves -----------------------------------------------------------------------------


def curve_for_plot(label: str, lc: LightCurve, t0: float) -> dict[str, Any]:
    """What :func:`xmm.previews.lightcurve_preview` draws of a light curve."""
    gaps = gtimod.intersect(
        gtimod.as_gti([[lc.gti[0, 0], lc.gti[-1, 1]]]),
        gtimod.as_gti(list(zip(lc.gti[:-1, 1], lc.gti[1:, 0], strict=True))),
    )
    return {
        "label": label, "time": lc.time, "rate": lc.net_rate, "error": lc.net_error,
        "backv": lc.bkg_rate,
        "good": lc.good, "gaps": gaps, "t0": t0,
    }  # fmt: skip


def describe_lightcurve(
    output_dir: Path, obs: EventObservation, name: str, lc: LightCurve, *, band_text: str
) -> None:
    """Preview one light curve and describe it in ``products.json``."""
    png = name.replace(".fits", ".png")
    title = f"{obs.label} {obs.events.keyword('OBJECT', '')}, {band_text}"
    previews.lightcurve_preview(
        output_dir / png, title, [curve_for_plot(obs.label, lc, lc.gti[0, 0])]
    )
    save_product(output_dir, png, "plot", f"Light curve preview {obs.label}", obs.obsid, obs.camera)
    save_product(
        output_dir, name, "lightcurve",
        f"Source light curve (OGIP RATE as evselect, NETRATE exposure-corrected net) {obs.label}",
        obs.obsid, obs.camera, **product_extra(obs, png),
    )  # fmt: skip


def describe_epochs(
    output_dir: Path, written: list[tuple[EventObservation, str, LightCurve]]
) -> None:
    """With light curves of several observations, a plot of all on one time axis (MJD)."""
    if len({obs.obsid for obs, _, _ in written}) < 2:
        return
    png = "lightcurves_all_epochs.png"
    mjdref = float(written[0][0].events.keyword("MJDREF", 50814.0))
    curves = [curve_for_plot(obs.label, lc, 0.0) for obs, _, lc in written]
    previews.multi_epoch_preview(
        output_dir / png, "Net light curves, all observations", curves, mjdref
    )
    save_product(
        output_dir, png, "plot", "Light curves of all observations on one time axis", preview=png
    )


# --- images -----------------------------------------------------------------------------------


def region_artists(obs: EventObservation, image_wcs) -> list[tuple]:
    """Outlines of the source (green) and background (cyan) regions in image pixels."""
    out = []
    colours = {"source": "lime", "background": "cyan"}
    for name, colour in colours.items():
        region = obs.regions.get(name)
        if region is None:
            continue
        sky = Regions.parse(region.ds9().replace("physical", "image"), format="ds9")
        artists = []
        for shape in sky:
            # image-frame text is 1-based X/Y; back to the event list's 0-based pixels, then the sky
            pix = shape.to_sky(obs.events.wcs).to_pixel(image_wcs)
            artist = pix.as_artist()
            if not shape.meta.get("include", True):
                artist.set_linestyle("--")
            artists.append(artist)
        out.append((artists, colour))
    return out


def field_image(
    obs: EventObservation, field: str, band: tuple[int, int]
) -> tuple[ImageGrid, np.ndarray, Any]:
    """``(grid, counts image, its WCS)`` of the events with PI in ``band`` (inclusive) of the
    region ``field`` that :meth:`xmm.images.ImageGrid.field_hook` added to ``obs``."""
    grid: ImageGrid = obs.meta["_grid"]
    events = obs.selected[field]
    in_band = (events.pi >= band[0]) & (events.pi <= band[1])
    return grid, grid.histogram(events.x[in_band], events.y[in_band]), grid.wcs(obs.events.wcs)


def write_image(
    path: Path,
    grid: ImageGrid,
    image: np.ndarray,
    wcs: Any,
    keywords: dict[str, Any],
    chan: tuple[int, int, str],
    exposure: float,
    pixel_arcsec: float,
    cards: list[tuple],
) -> None:
    """A counts image (primary HDU) with its WCS, the event-list ``keywords`` and the grid's
    LTM/LTV, the band ``chan`` = (lowest, highest PI, what a PI is), EXPOSURE and provenance."""
    hdu = fits.PrimaryHDU(image, header=wcs.to_header())
    h = hdu.header
    for key, value in {**keywords, **grid.physical_keywords()}.items():
        # the image WCS is ICRS (RADESYS); the event list's FK5 J2000 tag would contradict it
        if key not in h and key not in ("RADECSYS", "EQUINOX"):
            h[key] = value
    h["BUNIT"] = ("count", "counts per pixel")
    h["CONTENT"] = ("COUNTS IMAGE", "")
    h["CHANTYPE"] = ("PI", "")
    h["CHANMIN"] = (chan[0], f"lowest PI ({chan[2]}) in the band")
    h["CHANMAX"] = (chan[1], f"highest PI ({chan[2]}) in the band")
    h["EXPOSURE"] = (exposure, "[s] live time of the CCDs under the source region")
    h["PIXSCALE"] = (pixel_arcsec, "[arcsec] image pixel size")
    for card in cards:
        add_card(h, card)
    fit_comments(h)
    hdu.writeto(path, overwrite=True, checksum=True)


def describe_image(
    output_dir: Path,
    obs: EventObservation,
    name: str,
    image: np.ndarray,
    wcs: Any,
    *,
    band_text: str,
) -> None:
    """Preview one image with the regions drawn and describe it in ``products.json``."""
    png = name.replace(".fits", ".png")
    previews.image_preview(
        output_dir / png,
        f"{obs.label} {band_text}",
        np.asarray(image, float),
        wcs,
        region_artists(obs, wcs),
    )
    save_product(output_dir, png, "plot", f"Image preview {obs.label}", obs.obsid, obs.camera)
    save_product(
        output_dir, name, "image", f"Counts image {obs.label}", obs.obsid, obs.camera,
        **product_extra(obs, png),
    )  # fmt: skip
