"""Any archive file -> metadata row and footprint MOC, through the instrument registry.

:func:`read_footprint` opens a FITS file (plain or gzip), asks the registry
(``indexer.instruments``) which instrument recognises it from its headers, and lets that
instrument's module describe it. Files no instrument recognises raise
:class:`NotRecognisedError`; unreadable, corrupt or truncated files raise
:class:`UnreadableError`. Both are :class:`FootprintError`, whose message is one line for the
build report.

Index depth: HEALPix order 13 (``INDEX_DEPTH``): cells of 25.8" (0.43'), so a 1' feature (a dead
CCD's edge, the rim of the field of view, the gap between pn quadrants) spans two or more cells,
while XMM's 6-10" chip gaps between CCDs stay below a cell (they are recorded as covered, which
is what a region query wants: a region straddling a gap still falls on the camera). Measured on
the real RXCJ0958 data set (camera MOCs from event lists and exposure maps):

=====  =========  ================  ===========================  ==========================
order  cell size  ranges per MOC    MOC set bytes (8 B a range)  area of a MOS MOC (arcmin2)
=====  =========  ================  ===========================  ==========================
12     51.5"      50-65             ~0.5 kB                      ~670 (edges blurred by 1')
13     25.8"      112-129           ~1 kB                        ~645
14     12.9"      245-311           ~2.3 kB                      ~630
=====  =========  ================  ===========================  ==========================

(pi x 14.4'^2 = 651 arcmin2; the 2006 MOS1 MOC, with CCD6 dead, is ~555 arcmin2 at order 13.)
A MOC 2.0 FITS file is 8,640 bytes at order 13 (three 2,880-byte FITS blocks; JSON ~3 kB).
Order 14 doubles the size for detail the event outlines (built from ~2,000 events per CCD) do
not have; order 12 blurs the edges by a full arcminute. For the 42,000 camera MOCs of an
archive-size synthetic catalogue, order 13 gives ~5 M ranges and a 48 MB MOC set.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

from astropy.io import fits

from indexer import instruments
from indexer.instruments import Footprint
from indexer.instruments._base import FootprintError, NotRecognisedError, UnreadableError

__all__ = [
    "FITS_SUFFIXES",
    "INDEX_DEPTH",
    "Footprint",
    "FootprintError",
    "NotRecognisedError",
    "UnreadableError",
    "looks_like_fits",
    "read_footprint",
]

#: HEALPix order of the camera MOCs (cells of 25.8 arcsec); see the module docstring.
INDEX_DEPTH: int = 13

_GZIP_MAGIC = b"\x1f\x8b"
_FITS_MAGIC = b"SIMPLE  ="
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".ftz", ".fits.gz", ".fit.gz", ".fts.gz")


def looks_like_fits(path: Path) -> bool:
    """True if ``path`` has a FITS-like name or starts like FITS / gzip (content, not name)."""
    if path.name.lower().endswith(FITS_SUFFIXES):
        return True
    try:
        with path.open("rb") as stream:
            head = stream.read(len(_FITS_MAGIC))
    except OSError:
        return False
    return head.startswith(_GZIP_MAGIC) or head == _FITS_MAGIC


def read_footprint(path: Path, depth: int = INDEX_DEPTH) -> Footprint:
    """Recognise a file by its headers and compute its metadata row and footprint MOC.

    ``depth``: HEALPix order of the MOC. The row's ``kind`` is the data kind
    (``instruments.KINDS``). Raises :class:`NotRecognisedError` or :class:`UnreadableError`.
    """
    problem = truncation(Path(path))
    if problem:
        raise UnreadableError(problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix+ignore")
                instrument = instruments.recognise(hdul)
                footprint = instrument.describe(hdul, depth)
                if footprint.pixel_wcs is None and footprint.meta.get("kind") in (
                    instruments.PROCESSABLE_KINDS
                ):
                    wcs = instrument.header_pixel_wcs(hdul)
                    if wcs is not None:
                        footprint.pixel_wcs = instruments.pixel_wcs_cards(wcs)
        except FootprintError:
            raise
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError, EOFError...
            raise UnreadableError(f"unreadable FITS file: {_one_line(exc)}") from None
    for warning in caught:
        message = _one_line(warning.message)
        if "truncated" in message.lower():
            raise UnreadableError(f"corrupt FITS file: {message}")
    return footprint


def truncation(path: Path) -> str | None:
    """Why a FITS file is incomplete, or None.

    astropy silently drops the HDUs of a gzip stream that ends early (no warning), so a gzip
    file is decompressed to its end here (streaming, 4 MB at a time); a plain FITS file must be
    a whole number of 2880-byte blocks.
    """
    try:
        with path.open("rb") as stream:
            compressed = stream.read(2) == _GZIP_MAGIC
        if not compressed:
            size = path.stat().st_size
        else:
            size = 0
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    size += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return f"truncated or corrupt gzip file: {_one_line(exc)}"
    if size % 2880:
        return f"truncated FITS file ({size} bytes, not a whole number of 2880-byte blocks)"
    return None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]
