"""Counts images in sky pixels with a celestial WCS (and DS9 ``physical`` = event X/Y keywords).

An image of ``nx x ny`` pixels of ``b`` sky pixels (``b * 0.05"`` for EPIC, ``b * 0.492"`` for
ACIS) starts at X = ``x0``, Y = ``y0``: image pixel ``i`` (1-based) holds the X values in
``[x0 - 1/2 + (i-1) b, x0 - 1/2 + i b)`` (sky pixel k spans ``k +- 1/2``), i.e. the integer X values
``x0 + (i-1) b .. x0 + i b - 1`` of EPIC lists, so its centre is ``X = x0 + (i-1) b + (b-1)/2``. The WCS is the event list's column WCS
rescaled (``CDELT = TCDLT b``, ``CRPIX`` from the centre formula), and ``LTM1_1 = 1/b``,
``LTV1`` map X/Y to image pixels as SAS and DS9 do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray

from xmm.selection import Box, Region


@dataclass(frozen=True)
class ImageGrid:
    x0: int  # first X value of the image [sky pixels]
    y0: int
    nx: int
    ny: int
    binning: int  # sky pixels per image pixel

    @classmethod
    def around(cls, regions: list[Region], binning: int, margin: float) -> ImageGrid:
        """A grid covering the regions' bounding box plus ``margin`` [sky pixels] on each side."""
        boxes = np.array([r.bbox() for r in regions])
        xlo, xhi = boxes[:, 0].min() - margin, boxes[:, 1].max() + margin
        ylo, yhi = boxes[:, 2].min() - margin, boxes[:, 3].max() + margin
        x0, y0 = math.floor(xlo), math.floor(ylo)
        nx = max(1, math.ceil((xhi - x0 + 1) / binning))
        ny = max(1, math.ceil((yhi - y0 + 1) / binning))
        return cls(x0, y0, nx, ny, binning)

    def selector(self) -> Region:
        """The grid's area as a region (to collect its events in the same pass)."""
        w, h = self.nx * self.binning, self.ny * self.binning
        return Region([Box(True, self.x0 - 0.5 + w / 2, self.y0 - 0.5 + h / 2, w, h, 0.0)])

    def histogram(self, x: NDArray, y: NDArray) -> NDArray[np.int32]:
        """Counts image (ny, nx) of events at X/Y (integer or not)."""
        ix = np.floor((x - self.x0 + 0.5) / self.binning).astype(np.int64)
        iy = np.floor((y - self.y0 + 0.5) / self.binning).astype(np.int64)
        ok = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        flat = np.bincount(iy[ok] * self.nx + ix[ok], minlength=self.nx * self.ny)
        return flat.reshape(self.ny, self.nx).astype(np.int32)

    def wcs(self, column_wcs: WCS) -> WCS:
        """Celestial WCS of the image (FITS 1-based pixels in the header)."""
        b = self.binning
        w = WCS(naxis=2)
        w.wcs.ctype = list(column_wcs.wcs.ctype)
        w.wcs.crval = list(column_wcs.wcs.crval)
        w.wcs.cdelt = [column_wcs.wcs.cdelt[0] * b, column_wcs.wcs.cdelt[1] * b]
        w.wcs.crpix = [
            (column_wcs.wcs.crpix[0] - self.x0 - (b - 1) / 2) / b + 1,
            (column_wcs.wcs.crpix[1] - self.y0 - (b - 1) / 2) / b + 1,
        ]
        w.wcs.radesys = "ICRS"
        return w

    @staticmethod
    def field_hook(binning: int, margin: float, name: str):
        """An ``extra_regions_for`` hook for :func:`xmm.run.prepare`: the grid around an
        observation's regions (kept in its metadata as ``_grid``) as region ``name``, so its
        events are collected in the same pass."""

        def hook(meta: dict, regions: dict[str, Region]) -> dict[str, Region]:
            meta["_grid"] = ImageGrid.around(list(regions.values()), binning, margin)
            return {name: meta["_grid"].selector()}

        return hook

    def physical_keywords(self) -> dict[str, float]:
        """DS9/SAS ``image = LTM * physical + LTV``."""
        b = self.binning
        return {
            "LTM1_1": 1.0 / b,
            "LTM2_2": 1.0 / b,
            "LTV1": 1.0 - (self.x0 + (b - 1) / 2) / b,
            "LTV2": 1.0 - (self.y0 + (b - 1) / 2) / b,
        }
