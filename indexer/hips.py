"""The viewer's sky background: a HiPS of the archive's X-ray counts, ``python -m indexer hips``.

Aladin Lite must work offline, so its background is a small IVOA HiPS 1.0 made from the indexed
event lists themselves and served by the app (``app.views.hips``). :func:`build_hips` writes::

    <index_dir>/hips -> .hips.build-<t>/ a symbolic link, switched atomically after each build
        properties                       HiPS metadata (hips_order, hips_tile_format png, ...)
        Moc.fits                         MOC 2.0 of the tiles at ``hips_order`` (the viewer asks
                                         for no tile outside it)
        Norder{k}/Dir{D}/Npix{N}.png     512 x 512 RGBA tiles, k = 0 .. hips_order, only where
                                         the archive has data (D = N // 10000 * 10000)
        Norder3/Allsky.png               the order-3 tiles at 64 x 64 in one mosaic (27 a row)
        regio-hips.json                  the stamp: what the HiPS was built from

Images. Every event list of the index (not the exposure maps) is read in row chunks (memory stays
bounded whatever the file size; gzip ``.FTZ`` files are decompressed as a stream) and its events
passing the standard filters of its instrument (the instrument module's ``imaging_mask``, e.g.
EPIC MOS ``(FLAG & 0x766ba000)==0 && PATTERN<=12``) with energies in ``BAND_EV`` (500-2000 eV)
are binned into ``PIXEL_ARCSEC`` (4") pixels of
a TAN image. Pointings closer than ``GROUP_LINK_ARCMIN`` share one image, so overlapping
observations add up; each image holds counts and an exposure map (the camera's footprint MOC
from the index times its live time). Both are smoothed by a Gaussian of ``SMOOTH_SIGMA_PIXELS``
and divided: the intensity is in counts s^-1 arcmin^-2 (summed over cameras, no vignetting
correction). ``reproject.hips.reproject_to_hips`` (bilinear) cuts each image into tiles at the
deepest order; tiles of several images are merged, the lower orders are 2 x 2 means of their
four children, and the tiles are written as PNG with an asinh stretch whose knee is the median
intensity of the archive (the sky background) and whose top is its ``STRETCH_TOP_PERCENTILE``,
through the ``COLORMAP`` colour map; pixels without data are transparent.

Depth. The deepest order is the first whose pixels (``TILE_WIDTH`` = 512 per tile side) are no
larger than the image pixels: order 7, 3.2" pixels, for 4" images (order k has pixels of
58.6 deg / 2^(k+9)). Deeper orders would only interpolate the same data.

Incremental. The stamp holds a key over the inputs (each event list's checksum, exposure and
pointing) and the build parameters: when it matches, nothing is rebuilt (unless ``force``).
A build writes a new hidden folder next to the output, then switches the ``hips`` link to it
with one ``rename`` (readers see the old HiPS or the new one, never a mix) and deletes the old
folder. A lock file keeps two builds of the same folder from running at once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from indexer import instruments
from indexer.build import exclusive_lock
from indexer.instruments import column_wcs

Progress = Callable[[str], None]

HIPS_FOLDER: str = "hips"
STAMP_NAME: str = "regio-hips.json"
#: Bump when the same inputs should give different images (stretch, filters, layout...).
FORMAT_VERSION: int = 1
TILE_WIDTH: int = 512
#: Pixel size of the counts images [arcsec]; XMM's PSF has a FWHM of 5-6".
PIXEL_ARCSEC: float = 4.0
#: Energy band of the image [eV] (PI), inclusive of the lower bound.
BAND_EV: tuple[float, float] = (500.0, 2000.0)
#: Half-size of the image around a pointing [arcmin] for an exposure of no known instrument
#: (each instrument module gives its own ``field_radius_arcmin``).
FIELD_RADIUS_ARCMIN: float = 16.0
#: Pointings closer than this [arcmin] share an image: their fields may overlap.
GROUP_LINK_ARCMIN: float = 2 * FIELD_RADIUS_ARCMIN
#: Images larger than this on a side [deg] are split (a mosaic of many pointings).
MAX_IMAGE_SIDE_DEG: float = 3.0
SMOOTH_SIGMA_PIXELS: float = 1.0
STRETCH_TOP_PERCENTILE: float = 99.9
COLORMAP: str = "afmhot"
#: Rows read at a time from an event list (~40 bytes a row: ~10 MB).
CHUNK_ROWS: int = 262_144
#: Live time assumed for an exposure whose row has none [s].
DEFAULT_EXPOSURE_S: float = 10_000.0
MIN_ORDER: int = 3
MAX_ORDER: int = 11
ALLSKY_ORDER: int = 3
ALLSKY_TILE_WIDTH: int = 64
#: Photon wavelength times energy [m eV], for em_min/em_max.
HC_M_EV: float = 1.239841984e-6
#: HEALPix order-0 cell size [arcsec] (square root of the mean cell area).
_ORDER0_CELL_ARCSEC: float = math.degrees(math.sqrt(4 * math.pi / 12)) * 3600.0

#: Where a child tile (sub-index 0..3) goes in its parent, in FITS row order (row 0 at the bottom).
_QUADRANT = {
    0: (slice(TILE_WIDTH // 2, None), slice(None, TILE_WIDTH // 2)),
    1: (slice(None, TILE_WIDTH // 2), slice(None, TILE_WIDTH // 2)),
    2: (slice(TILE_WIDTH // 2, None), slice(TILE_WIDTH // 2, None)),
    3: (slice(None, TILE_WIDTH // 2), slice(TILE_WIDTH // 2, None)),
}


class HipsError(Exception):
    """The HiPS cannot be built (bad arguments or output folder); one line for the user."""


def hips_dir(index_dir: Path | str) -> Path:
    """Default HiPS folder of an index: ``<index_dir>/hips``."""
    return Path(index_dir) / HIPS_FOLDER


def tile_pixel_arcsec(order: int) -> float:
    """Mean pixel size [arcsec] of the tiles of ``order`` (``TILE_WIDTH`` pixels a side)."""
    return _ORDER0_CELL_ARCSEC / (2**order * TILE_WIDTH)


def default_max_order(pixel_arcsec: float = PIXEL_ARCSEC) -> int:
    """The first order whose tile pixels are no larger than ``pixel_arcsec`` [arcsec]."""
    order = math.ceil(math.log2(_ORDER0_CELL_ARCSEC / (TILE_WIDTH * pixel_arcsec)))
    return int(min(max(order, MIN_ORDER), MAX_ORDER))


def tile_path(folder: Path, order: int, npix: int, ext: str = "png") -> Path:
    """``folder/Norder{order}/Dir{D}/Npix{npix}.{ext}`` with ``D = npix // 10000 * 10000``."""
    return folder / f"Norder{order}" / f"Dir{npix // 10000 * 10000}" / f"Npix{npix}.{ext}"


# --- reading event lists ----------------------------------------------------------------------


_BLOCK = 2880


class EventReader:
    """The ``EVENTS`` rows of an event list (plain or gzip FITS), read in chunks of rows.

    The file is read as one forward stream (gzip ``.FTZ`` files are decompressed on the fly):
    the headers up to ``EVENTS``, then ``chunk_rows`` rows at a time, so memory stays bounded
    whatever the file size. Use as a context manager; ``header`` is the EVENTS header.
    Raises ``ValueError`` when the file has no usable EVENTS table (``X``, ``Y``, ``PI`` and a
    sky WCS on X/Y).
    """

    def __init__(self, path: Path, columns: tuple[str, ...] = ("PI",)) -> None:
        self.columns = ("X", "Y", *(c.upper() for c in columns))
        with open(path, "rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        self._stream = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
        try:
            self.header = self._find_events()
            self._layout()
        except BaseException:
            self._stream.close()
            raise

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def _find_events(self) -> fits.Header:
        """Walk the HDU headers; leave the stream at the start of the EVENTS rows."""
        for number in range(1000):
            cards = []
            while True:
                block = self._stream.read(_BLOCK)
                if len(block) < _BLOCK:
                    raise ValueError("no EVENTS table")
                cards.append(block)
                text = block.decode("ascii", "replace")
                if any(text[i : i + 8] == "END     " for i in range(0, _BLOCK, 80)):
                    break
            header = fits.Header.fromstring(b"".join(cards).decode("ascii", "replace"))
            if number > 0 and str(header.get("EXTNAME", "")).strip() == "EVENTS":
                return header
            naxis = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header["NAXIS"]) + 1)]
            size = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1))
            size *= int(header.get("PCOUNT", 0)) + (math.prod(naxis) if naxis else 0)
            skip = -(-size // _BLOCK) * _BLOCK
            while skip > 0:  # gzip streams seek forward by reading; keep buffers small
                step = self._stream.read(min(skip, 1 << 20))
                if not step:
                    raise ValueError("no EVENTS table")
                skip -= len(step)
        raise ValueError("no EVENTS table")

    def _layout(self) -> None:
        header = self.header
        if header.get("XTENSION", "").strip() != "BINTABLE":
            raise ValueError("EVENTS is not a binary table")
        count = int(header.get("TFIELDS", 0))
        columns = [
            fits.Column(name=str(header[f"TTYPE{i}"]).strip(), format=header[f"TFORM{i}"])
            for i in range(1, count + 1)
        ]
        self.row_bytes, self.rows = int(header["NAXIS1"]), int(header["NAXIS2"])
        native = fits.ColDefs(columns).dtype
        self._numbers = {name.upper(): i for i, name in enumerate(native.names, start=1)}
        by_upper = {name.upper(): name for name in native.names}
        missing = [name for name in ("X", "Y") if name not in by_upper]
        if missing or column_wcs(header) is None:
            raise ValueError(f"EVENTS table without {', '.join(missing) or 'a sky WCS on X/Y'}")
        if native.itemsize != self.row_bytes:
            raise ValueError(f"unexpected row layout ({native.itemsize} != {self.row_bytes})")
        fields = [by_upper[name] for name in self.columns if name in by_upper]
        self.dtype = np.dtype(
            {
                "names": [name.upper() for name in fields],
                "formats": [native.fields[name][0].newbyteorder(">") for name in fields],
                "offsets": [native.fields[name][1] for name in fields],
                "itemsize": self.row_bytes,
            }
        )

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[dict[str, np.ndarray]]:
        """The columns ``columns`` (those present, upper case) of the rows, ``chunk_rows`` at a time.

        Values are scaled by ``TSCALn``/``TZEROn``; integers equal to ``TNULLn`` become NaN.
        Raises ``ValueError`` when the file ends inside the table.
        """
        left = self.rows
        while left > 0:
            n = min(chunk_rows, left)
            buffer = self._stream.read(n * self.row_bytes)
            if len(buffer) != n * self.row_bytes:
                raise ValueError("file ends inside the EVENTS table")
            records = np.frombuffer(buffer, dtype=self.dtype)
            left -= n
            yield {
                name: _scaled(records[name], self.header, self._numbers[name])
                for name in self.dtype.names
            }


def _scaled(raw: np.ndarray, header: fits.Header, number: int) -> np.ndarray:
    scale = header.get(f"TSCAL{number}", 1)
    zero = header.get(f"TZERO{number}", 0)
    null = header.get(f"TNULL{number}")
    if scale == 1 and float(zero).is_integer() and null is None:
        return raw.astype(np.int64) + int(zero) if raw.dtype.kind in "iu" else raw.astype(float)
    values = raw.astype(float) * float(scale) + float(zero)
    if null is not None and raw.dtype.kind in "iu":
        values[raw == null] = np.nan
    return values


def standard_filter(row: dict[str, Any], chunk: dict[str, np.ndarray]) -> np.ndarray:
    """Events of a chunk passing the standard filters of the row's instrument (the instrument
    module's ``imaging_mask``) with energies in ``BAND_EV``."""
    instrument = instruments.for_row(row)
    energy = instrument.energy_ev(chunk)
    keep = (energy >= BAND_EV[0]) & (energy <= BAND_EV[1])
    return keep & instrument.imaging_mask(row["camera"], chunk)


# --- counts images ----------------------------------------------------------------------------


@dataclass
class Group:
    """Exposures whose fields may overlap, imaged together on one TAN grid."""

    rows: list[dict[str, Any]]
    wcs: WCS
    shape: tuple[int, int]  # (ny, nx)
    center: tuple[float, float]  # (ra, dec) [deg]


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _center(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Mean direction of the pointings (fine across RA = 0 and at the poles) [deg]."""
    x, y, z = _unit_vectors(ra, dec).mean(axis=0)
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(
        np.degrees(np.arctan2(z, np.hypot(x, y)))
    )


def _tan_wcs(center: tuple[float, float]) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(center)
    wcs.wcs.cdelt = [-PIXEL_ARCSEC / 3600.0, PIXEL_ARCSEC / 3600.0]
    wcs.wcs.crpix = [0.0, 0.0]
    return wcs


def field_radius_arcmin(row: dict[str, Any]) -> float:
    """Radius [arcmin] around the pointing that holds the exposure's whole field of view."""
    try:
        return instruments.for_row(row).field_radius_arcmin
    except KeyError:
        return FIELD_RADIUS_ARCMIN


def group_exposures(rows: list[dict[str, Any]]) -> list[Group]:
    """Friends-of-friends groups of the pointings (link ``GROUP_LINK_ARCMIN``), each with the
    TAN grid (``PIXEL_ARCSEC`` pixels) that holds all its fields; oversized groups are split."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if not rows:
        return []
    ra = np.array([row["ra_pnt"] for row in rows], dtype=float)
    dec = np.array([row["dec_pnt"] for row in rows], dtype=float)
    chord = 2 * math.sin(math.radians(GROUP_LINK_ARCMIN / 60.0) / 2)
    pairs = cKDTree(_unit_vectors(ra, dec)).query_pairs(chord, output_type="ndarray")
    graph = coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else ([], ([], [])),
        shape=(len(rows), len(rows)),
    )
    _, labels = connected_components(graph, directed=False)
    groups: list[Group] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        groups.extend(_grid(rows, members, ra, dec))
    return groups


def _grid(rows, members: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> list[Group]:
    center = _center(ra[members], dec[members])
    wcs = _tan_wcs(center)
    off_x, off_y = wcs.wcs_world2pix(ra[members], dec[members], 1)  # offsets [pixels]
    radius = max(field_radius_arcmin(rows[i]) for i in members) * 60.0 / PIXEL_ARCSEC
    span = max(np.ptp(off_x), np.ptp(off_y)) * PIXEL_ARCSEC / 3600.0
    if span > MAX_IMAGE_SIDE_DEG and len(members) > 1:
        along = off_x if np.ptp(off_x) >= np.ptp(off_y) else off_y
        order = np.argsort(along, kind="stable")
        half = len(members) // 2
        return _grid(rows, members[order[:half]], ra, dec) + _grid(
            rows, members[order[half:]], ra, dec
        )
    low_x, low_y = math.floor(off_x.min() - radius), math.floor(off_y.min() - radius)
    nx = math.ceil(off_x.max() + radius) - low_x + 1
    ny = math.ceil(off_y.max() + radius) - low_y + 1
    wcs.wcs.crpix = [1.0 - low_x, 1.0 - low_y]
    return [Group([rows[i] for i in members], wcs, (ny, nx), center)]


def bin_events(row: dict[str, Any], group: Group, counts: np.ndarray) -> int:
    """Add the filtered events of one event list (an index row) to ``counts`` (the group's
    grid); returns how many were added. Raises ``ValueError``/``OSError`` for unreadable files."""
    added = 0
    columns = instruments.for_row(row).imaging_columns
    with EventReader(Path(row["path"]), columns) as reader:
        events_wcs = column_wcs(reader.header)
        for chunk in reader.chunks():
            keep = standard_filter(row, chunk)
            keep &= np.isfinite(chunk["X"]) & np.isfinite(chunk["Y"])
            if keep.any():
                ra, dec = events_wcs.wcs_pix2world(chunk["X"][keep], chunk["Y"][keep], 1)
                added += _add_counts(counts, *group.wcs.wcs_world2pix(ra, dec, 0))
    return added


def _add_counts(counts: np.ndarray, px: np.ndarray, py: np.ndarray) -> int:
    """Add events at 0-based pixel positions ``px``, ``py`` to ``counts``; returns how many."""
    ny, nx = counts.shape
    good = np.isfinite(px) & np.isfinite(py)
    ix = np.floor(px[good] + 0.5).astype(np.int64)
    iy = np.floor(py[good] + 0.5).astype(np.int64)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    counts += np.bincount(iy[inside] * nx + ix[inside], minlength=nx * ny).reshape(ny, nx)
    return int(inside.sum())


def exposure_map(index: Any, group: Group) -> np.ndarray:
    """Exposure [s] of each pixel of the group's grid: the sum of the live times of the cameras
    whose footprint MOC (from the index) holds the pixel centre."""
    ny, nx = group.shape
    exposure = np.zeros((ny, nx), dtype=np.float64)
    yy, xx = np.mgrid[0:ny, 0:nx]
    lon, lat = group.wcs.wcs_pix2world(xx, yy, 0)  # pixel centres [deg]
    for row in group.rows:
        radius = int(math.ceil((field_radius_arcmin(row) + 1) * 60.0 / PIXEL_ARCSEC))
        cx, cy = (int(v[0]) for v in group.wcs.wcs_world2pix([row["ra_pnt"]], [row["dec_pnt"]], 0))
        box = (
            slice(max(cy - radius, 0), cy + radius + 1),
            slice(max(cx - radius, 0), cx + radius + 1),
        )
        if lon[box].size == 0:
            continue
        moc = index.exposure_moc(row["exposure_id"])
        inside = moc.contains_lonlat(lon[box].ravel() * u.deg, lat[box].ravel() * u.deg)
        exposure[box] += inside.reshape(lon[box].shape) * float(
            row["exposure"] or DEFAULT_EXPOSURE_S
        )
    return exposure


def intensity_image(counts: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """Smoothed counts over smoothed exposure [counts s^-1 arcmin^-2]; NaN where no exposure."""
    from scipy.ndimage import gaussian_filter

    smooth_counts = gaussian_filter(counts.astype(np.float64), SMOOTH_SIGMA_PIXELS, mode="constant")
    smooth_exposure = gaussian_filter(exposure, SMOOTH_SIGMA_PIXELS, mode="constant")
    covered = (exposure > 0) & (smooth_exposure > 0)
    pixel_arcmin2 = (PIXEL_ARCSEC / 60.0) ** 2
    image = np.full(counts.shape, np.nan, dtype=np.float32)
    image[covered] = smooth_counts[covered] / smooth_exposure[covered] / pixel_arcmin2
    return image


# --- tiles --------------------------------------------------------------------------------------


class TileStore:
    """Float tiles (FITS row order) of the HiPS being built, kept as ``.npy`` files on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tiles: dict[int, set[int]] = {}

    def path(self, order: int, npix: int) -> Path:
        return self.folder / f"{order}-{npix}.npy"

    def get(self, order: int, npix: int) -> np.ndarray | None:
        return np.load(self.path(order, npix)) if npix in self.tiles.get(order, ()) else None

    def put(self, order: int, npix: int, data: np.ndarray) -> None:
        """Store a tile; where one exists, keep the larger value of each pixel (NaN = no data)."""
        old = self.get(order, npix)
        if old is not None:
            data = np.fmax(old, data)
        np.save(self.path(order, npix), data.astype(np.float32))
        self.tiles.setdefault(order, set()).add(npix)


def reproject_group(
    image: np.ndarray, group: Group, order: int, scratch: Path, store: TileStore, threads: int = 1
) -> None:
    """Cut one image into tiles of ``order`` (``reproject_to_hips``, bilinear) into ``store``."""
    from reproject import reproject_interp
    from reproject.hips import reproject_to_hips

    out = scratch / "reproject"
    with warnings.catch_warnings():
        # "No tiles were generated at the deepest level": an image off every tile; handled below
        warnings.simplefilter("ignore", UserWarning)
        reproject_to_hips(
            (image, group.wcs),
            coord_system_out="equatorial",
            reproject_function=reproject_interp,
            output_directory=str(out),
            level=order,
            tile_size=TILE_WIDTH,
            threads=threads,
            order="bilinear",
            roundtrip_coords=False,  # the images are small TAN fields: no round-trip check needed
        )
    for path in (out / f"Norder{order}").glob("Dir*/Npix*.fits"):
        data = fits.getdata(path)
        if np.isfinite(data).any():
            store.put(order, int(path.stem[4:]), data)
    shutil.rmtree(out)


def block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks, ignoring NaN (NaN where a block has no data)."""
    ny, nx = data.shape
    blocks = data.reshape(ny // factor, factor, nx // factor, factor)
    valid = np.isfinite(blocks)
    n = valid.sum(axis=(1, 3))
    total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    out = np.full(n.shape, np.nan, dtype=np.float32)
    np.divide(total, n, out=out, where=n > 0)
    return out


def lower_orders(store: TileStore, max_order: int) -> None:
    """Fill orders ``max_order - 1`` .. 0: each tile is the 2 x 2 mean of its four children."""
    for order in range(max_order - 1, -1, -1):
        children = store.tiles.get(order + 1, set())
        for parent in sorted({npix // 4 for npix in children}):
            data = np.full((TILE_WIDTH, TILE_WIDTH), np.nan, dtype=np.float32)
            for sub in range(4):
                child = store.get(order + 1, 4 * parent + sub)
                if child is not None:
                    data[_QUADRANT[sub]] = block_mean(child, 2)
            store.put(order, parent, data)


@dataclass(frozen=True)
class Stretch:
    """``v = asinh(I / knee) / asinh(top / knee)`` clipped to 0..1, through a colour map."""

    knee: float  # [counts s^-1 arcmin^-2]
    top: float  # [counts s^-1 arcmin^-2]

    @classmethod
    def from_sample(cls, values: np.ndarray) -> Stretch:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls(1.0, 10.0)
        positive = values[values > 0]
        knee = float(np.median(positive)) if positive.size else 1.0
        top = float(np.percentile(values, STRETCH_TOP_PERCENTILE))
        return cls(knee, max(top, 10 * knee))

    def rgba(self, data: np.ndarray) -> np.ndarray:
        """RGBA uint8 image of a float tile, in PNG row order (row 0 at the top)."""
        lut = _colormap_lut()
        finite = np.isfinite(data)
        scaled = np.arcsinh(np.where(finite, data, 0.0) / self.knee) / np.arcsinh(
            self.top / self.knee
        )
        level = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
        rgba = lut[level]
        rgba[..., 3] = np.where(finite, 255, 0)
        return rgba[::-1]


_LUT: list[np.ndarray] = []


def _colormap_lut() -> np.ndarray:
    if not _LUT:
        from matplotlib import colormaps

        _LUT.append(
            (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256)) * 255).round().astype(np.uint8)
        )
    return _LUT[0].copy()


def write_png(path: Path, rgba: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")


def write_allsky(folder: Path, store: TileStore, stretch: Stretch) -> Path:
    """``Norder3/Allsky.png``: every order-3 tile reduced to 64 x 64, 27 tiles a row."""
    npix_total = 12 * 4**ALLSKY_ORDER
    per_row = int(math.sqrt(npix_total))
    rows = math.ceil(npix_total / per_row)
    width = ALLSKY_TILE_WIDTH
    mosaic = np.zeros((rows * width, per_row * width, 4), dtype=np.uint8)
    for npix in sorted(store.tiles.get(ALLSKY_ORDER, ())):
        small = block_mean(store.get(ALLSKY_ORDER, npix), TILE_WIDTH // width)
        y, x = (npix // per_row) * width, (npix % per_row) * width
        mosaic[y : y + width, x : x + width] = stretch.rgba(small)
    path = folder / f"Norder{ALLSKY_ORDER}" / "Allsky.png"
    write_png(path, mosaic)
    return path


def write_moc(folder: Path, tiles: set[int], order: int) -> Any:
    """``Moc.fits``: the tiles of the deepest order (MOC 2.0, mocpy)."""
    from mocpy import MOC

    if tiles:
        ipix = np.array(sorted(tiles), dtype=np.uint64)
        moc = MOC.from_healpix_cells(ipix, np.full(ipix.shape, order, dtype=np.uint8), order)
    else:
        moc = MOC.new_empty(order)
    moc.save(str(folder / "Moc.fits"), format="fits", overwrite=True)
    return moc


def write_properties(folder: Path, values: dict[str, Any]) -> None:
    lines = ["# HiPS properties (IVOA HiPS 1.0), written by Regio's indexer.hips"]
    lines += [f"{key:<22}= {value}" for key, value in values.items()]
    (folder / "properties").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the build ----------------------------------------------------------------------------------


def _event_rows(index: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    rows, problems = [], []
    for row in index.observations():
        if row.get("kind") != "events":
            continue
        if row.get("ra_pnt") is None or row.get("dec_pnt") is None:
            problems.append((row["path"], "no pointing in the index"))
            continue
        rows.append(row)
    return rows, problems


def inputs_key(rows: list[dict[str, Any]], max_order: int) -> str:
    """Hash of what the HiPS depends on: parameters and each event list's content and metadata."""
    inputs = sorted(
        (
            r["mission"],
            r["obsid"],
            r["camera"],
            r["checksum"],
            r["exposure"],
            r["ra_pnt"],
            r["dec_pnt"],
        )
        for r in rows
    )
    params = {
        "version": FORMAT_VERSION,
        "max_order": max_order,
        "tile_width": TILE_WIDTH,
        "pixel_arcsec": PIXEL_ARCSEC,
        "band_ev": BAND_EV,
        "smooth": SMOOTH_SIGMA_PIXELS,
        "stretch": [STRETCH_TOP_PERCENTILE, COLORMAP],
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(params, default=str).encode()).hexdigest()


def read_stamp(folder: Path) -> dict[str, Any] | None:
    """The stamp of the HiPS in ``folder``, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _locked(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    return exclusive_lock(out_dir.parent / f".{out_dir.name}.lock")


def _ours(path: Path, out_dir: Path) -> bool:
    """Whether ``path`` is a build folder of ``out_dir`` (``.<name>.build-*`` next to it)."""
    return path.parent == out_dir.parent and path.name.startswith(f".{out_dir.name}.build-")


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an output that is not ours to replace: a file, or a folder that is neither empty
    nor a HiPS written by this module (it would be deleted by the switch)."""
    if not out_dir.parent.is_dir():
        raise HipsError(f"the folder of {out_dir} does not exist")
    if out_dir.is_symlink() or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise HipsError(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()) and not (out_dir / STAMP_NAME).is_file():
        raise HipsError(f"{out_dir} is a folder that does not hold a Regio HiPS: not replacing it")


def _publish(staging: Path, out_dir: Path) -> None:
    """Point ``out_dir`` (a symbolic link) at ``staging`` in one rename; drop older builds."""
    previous = out_dir.resolve() if out_dir.is_symlink() else None
    if out_dir.is_dir() and not out_dir.is_symlink():  # a plain HiPS folder (checked): once
        previous = out_dir.parent / f".{out_dir.name}.build-old-{secrets.token_hex(4)}"
        out_dir.rename(previous)
    link = out_dir.parent / f".{out_dir.name}.link-{secrets.token_hex(4)}"
    os.symlink(staging.name, link)
    os.replace(link, out_dir)
    for stale in out_dir.parent.glob(f".{out_dir.name}.build-*"):  # older and crashed builds
        if stale != staging and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    if previous and previous != staging and _ours(previous, out_dir) and previous.is_dir():
        shutil.rmtree(previous, ignore_errors=True)


def build_hips(
    index_dir: Path | str,
    out_dir: Path | str | None = None,
    max_order: int | None = None,
    progress: Progress | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Build (or keep, when up to date) the HiPS of the archive indexed in ``index_dir``.

    ``out_dir`` defaults to ``<index_dir>/hips``; ``max_order`` to :func:`default_max_order`
    (7 for 4" images). ``progress(message)`` gets a line per step. Returns a report:
    ``rebuilt`` (False when the stamp matched), ``folder``, ``max_order``, ``tiles`` (count per
    order), ``exposures``, ``images``, ``events`` (binned), ``problems`` [(path, reason)],
    ``seconds``. Raises :class:`indexer.index.IndexNotFound` without an index and
    :class:`HipsError` for a bad ``max_order`` or output folder.
    """
    from indexer.index import Index

    started = time.perf_counter()
    say = progress or (lambda _message: None)
    max_order = default_max_order() if max_order is None else int(max_order)
    if not MIN_ORDER <= max_order <= MAX_ORDER:
        raise HipsError(f"max order must be between {MIN_ORDER} and {MAX_ORDER}, not {max_order}")
    index = Index.load(index_dir)
    out_dir = Path(out_dir) if out_dir is not None else hips_dir(index_dir)
    _check_out_dir(out_dir)
    rows, problems = _event_rows(index)
    key = inputs_key(rows, max_order)
    report: dict[str, Any] = {
        "rebuilt": False,
        "folder": str(out_dir),
        "max_order": max_order,
        "exposures": len(rows),
        "problems": problems,
    }
    with _locked(out_dir):
        stamp = read_stamp(out_dir)
        if not force and stamp and stamp.get("key") == key:
            report.update(tiles=stamp.get("tiles", {}), images=stamp.get("images", 0))
            report.update(events=stamp.get("events", 0))
            report["seconds"] = round(time.perf_counter() - started, 3)
            say("HiPS up to date")
            return report
        token = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        staging = out_dir.parent / f".{out_dir.name}.build-{token}"
        staging.mkdir()
        try:
            built = _build_into(staging, index, rows, max_order, say, problems)
            stamp = {
                "format": "regio-hips",
                "version": FORMAT_VERSION,
                "key": key,
                "generation": index.manifest.get("generation"),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **built,
            }
            (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
            _publish(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    report.update(built, rebuilt=True, seconds=round(time.perf_counter() - started, 3))
    return report


def _build_into(
    folder: Path,
    index: Any,
    rows: list[dict[str, Any]],
    max_order: int,
    say: Progress,
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    groups = group_exposures(rows)
    say(f"{len(rows)} event lists in {len(groups)} images, tiles to order {max_order}")
    samples: list[np.ndarray] = []
    events = 0
    threads = max(1, min(4, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=folder) as scratch_name:
        scratch = Path(scratch_name)
        store = TileStore(scratch)
        for number, group in enumerate(groups, start=1):
            counts = np.zeros(group.shape, dtype=np.int64)
            for row in group.rows:
                try:
                    events += bin_events(row, group, counts)
                except (OSError, ValueError, KeyError) as exc:
                    problems.append((row["path"], " ".join(str(exc).split())[:200]))
            image = intensity_image(counts, exposure_map(index, group))
            finite = image[np.isfinite(image)]
            samples.append(finite[:: max(1, finite.size // 20_000)])
            reproject_group(image, group, max_order, scratch, store, threads=threads)
            say(
                f"image {number}/{len(groups)}: {len(group.rows)} event lists, {counts.sum()} counts"
            )
        lower_orders(store, max_order)
        stretch = Stretch.from_sample(np.concatenate(samples) if samples else np.empty(0))
        for order in range(max_order + 1):
            for npix in sorted(store.tiles.get(order, ())):
                write_png(tile_path(folder, order, npix), stretch.rgba(store.get(order, npix)))
        write_allsky(folder, store, stretch)
        tiles = {order: len(store.tiles.get(order, ())) for order in range(max_order + 1)}
        moc = write_moc(folder, store.tiles.get(max_order, set()), max_order)
    main = max(groups, key=lambda g: len(g.rows)) if groups else None
    band = f"{BAND_EV[0]:.0f}-{BAND_EV[1]:.0f} eV"
    size_kb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024
    write_properties(
        folder,
        {
            "creator_did": "ivo://regio.local/P/regio/xray/counts",
            "obs_title": "Regio archive (X-ray counts)",
            "obs_description": (
                f"X-ray counts ({band}, standard event filters of each instrument) of the {len(rows)} "
                f'indexed event lists, per unit exposure, {PIXEL_ARCSEC:g}" pixels smoothed by '
                f'a Gaussian of {SMOOTH_SIGMA_PIXELS * PIXEL_ARCSEC:g}", asinh stretch'
            ),
            "obs_regime": "X-ray",
            "dataproduct_type": "image",
            "hips_version": "1.4",
            "hips_builder": "Regio indexer.hips (astropy/reproject)",
            "hips_release_date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
            "hips_status": "private master unclonable",
            "hips_frame": "equatorial",
            "hips_order": max_order,
            "hips_order_min": 0,
            "hips_tile_width": TILE_WIDTH,
            "hips_tile_format": "png",
            "hips_pixel_scale": f"{tile_pixel_arcsec(max_order) / 3600.0:.6g}",
            "hips_initial_ra": f"{main.center[0]:.6f}" if main else "0",
            "hips_initial_dec": f"{main.center[1]:.6f}" if main else "0",
            "hips_initial_fov": f"{2.5 * FIELD_RADIUS_ARCMIN / 60.0:.3f}" if main else "180",
            "moc_sky_fraction": f"{moc.sky_fraction:.3g}",
            "hips_estsize": size_kb,
            "em_min": f"{HC_M_EV / BAND_EV[1]:.4g}",
            "em_max": f"{HC_M_EV / BAND_EV[0]:.4g}",
            "regio_stretch": f"asinh knee={stretch.knee:.4g} top={stretch.top:.4g} "
            f"counts/s/arcmin2 colormap={COLORMAP}",
        },
    )
    return {"max_order": max_order, "tiles": tiles, "images": len(groups), "events": events}


# --- CLI ----------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hips",
        help="build the viewer's sky background (a HiPS of the archive's counts; incremental)",
        description="Bin the indexed event lists (standard filters, 0.5-2 keV) into images and "
        "write them as a HiPS (PNG tiles, properties, Moc.fits, Allsky) for Aladin Lite. Nothing "
        "is rebuilt when the indexed files have not changed since the last build.",
    )
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="HiPS folder (default: INDEX_DIR/hips)"
    )
    parser.add_argument(
        "--max-order",
        type=int,
        metavar="N",
        help=f"deepest HiPS order, {MIN_ORDER}-{MAX_ORDER} (default {default_max_order()}: "
        f'{tile_pixel_arcsec(default_max_order()):.1f}" pixels)',
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.set_defaults(func=run)


def _print_progress(message: str) -> None:
    print(f"[hips] {message}", file=sys.stderr, flush=True)


def run(args: Any) -> int:
    from indexer.cli import CLIError
    from indexer.index import IndexNotFound

    try:
        report = build_hips(
            args.index, args.out, args.max_order, progress=_print_progress, force=args.force
        )
    except (IndexNotFound, HipsError) as exc:
        raise CLIError(str(exc)) from None
    for path, reason in report["problems"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(summary(report))
    return 0


def summary(report: dict[str, Any]) -> str:
    """One line about a build report."""
    tiles = report.get("tiles", {})
    state = "built" if report["rebuilt"] else "up to date"
    return (
        f"HiPS {state}: {report['folder']} orders 0-{report['max_order']} "
        f"tiles={sum(int(n) for n in tiles.values())} exposures={report['exposures']} "
        f"seconds={report['seconds']}"
    )
