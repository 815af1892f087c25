"""EPIC event lists: headers, per-CCD good time and live time, bad pixels, and rows in chunks.

:class:`EventTable` is the instrument-neutral streaming reader (headers, rows in chunks, the
tables after the rows); :class:`EventList` is the EPIC one (``chandra.events`` has the ACIS one).

Files are recognised by their headers (``TELESCOP = 'XMM'``, ``INSTRUME`` EMOS1/EMOS2/EPN, an
``EVENTS`` table), plain FITS or gzip (PPS ``.FTZ``). Columns are found by name.

Rows are streamed: the ``EVENTS`` data are read ``chunk_rows`` rows at a time straight from the
(decompressed) byte stream into a big-endian record array, so memory stays bounded by the chunk
size whatever the length of the list. Only the requested columns are converted to native numbers.

Per-CCD information (CCD numbers ``nn`` from ``CCDNR``):

- good time: ``STDGTInn`` intersected with the time selection already applied to the file, when
  its ``EVENTS`` header carries SAS data-subspace keywords (``DSTYPi = 'TIME'`` with a ``DSREFi``
  per CCD block, e.g. ``:GTI00006``, as in filtered SAS lists);
- live-time fraction: ``LIVETInn / ONTIMEnn`` of the ``EVENTS`` header (``LIVETIMEnn`` also
  accepted), else ``LIVETIME / ONTIME`` of ``STDGTInn``;
- bad pixels: ``BADPIXnn`` rows ``(RAWX, RAWY, YEXTENT)``: column segments of raw pixels;
- frame time: ``FRMTIME`` [ms] of any extension, else the full-frame default of the camera.
"""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import NDArray

# The camera names and standard event filters are the instrument module's (one copy); scripts
# import the ``indexer`` package installed with the service, as the Chandra scripts do.
from indexer.instruments.xmm_epic import CAMERAS
from xmm import gti as gtimod

#: Full-frame integration times [s] (XMM Users Handbook), used when no FRMTIME is present.
DEFAULT_FRAME_TIME = {"EMOS1": 2.6, "EMOS2": 2.6, "EPN": 0.0734}
#: Legal PI range [eV] of the SAS spectral channel grids.
PI_MAX = {"EMOS1": 11999, "EMOS2": 11999, "EPN": 20479}
DEFAULT_CHUNK_ROWS = 500_000


class EventListError(ValueError):
    """The file is not a usable EPIC event list; the message says why, for the user."""


@dataclass
class CcdInfo:
    """What the event list says about one CCD."""

    ccd: int
    gti: NDArray[np.float64]  # good time [s] (STDGTInn and the file's own time selection)
    live_fraction: float  # live time / on time
    bad_pixels: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 3), np.int64))

    @property
    def ontime(self) -> float:
        return gtimod.total(self.gti)

    @property
    def livetime(self) -> float:
        return self.ontime * self.live_fraction


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def column_wcs(header: fits.Header) -> WCS:
    """Celestial WCS of the X/Y columns (``TCTYPn``/``TCRVLn``/``TCRPXn``/``TCDLTn``).

    Pixel coordinates of this WCS are 0-based: the column value X is pixel ``X - 1``.
    """
    cols = _column_numbers(header)
    if "X" not in cols or "Y" not in cols:
        raise EventListError("the EVENTS table has no X/Y columns")
    ix, iy = cols["X"], cols["Y"]
    wcs = WCS(naxis=2)
    try:
        wcs.wcs.ctype = [header[f"TCTYP{ix}"], header[f"TCTYP{iy}"]]
        wcs.wcs.crval = [header[f"TCRVL{ix}"], header[f"TCRVL{iy}"]]
        wcs.wcs.crpix = [header[f"TCRPX{ix}"], header[f"TCRPX{iy}"]]
        wcs.wcs.cdelt = [header[f"TCDLT{ix}"], header[f"TCDLT{iy}"]]
    except KeyError as exc:
        raise EventListError(f"the X/Y columns carry no sky WCS ({exc.args[0]} missing)") from None
    return wcs


def _column_numbers(header: fits.Header) -> dict[str, int]:
    return {
        str(header.get(f"TTYPE{i}", "")).strip().upper(): i
        for i in range(1, int(header.get("TFIELDS", 0)) + 1)
    }


class EventTable:
    """A FITS event list opened for streaming (headers read at once, rows on demand).

    Instrument-neutral: a subclass names the columns it needs (``required``), checks the headers
    (:meth:`_check`) and picks what it needs from the extensions that follow the rows
    (:meth:`_extension_key`, :meth:`_use_extensions`), setting the per-CCD information
    (``_ccds``) and the frame time (``_frame_time``). Column names match in any case.
    """

    #: Columns the ``EVENTS`` table must have (matched in any case; named so in messages).
    required: tuple[str, ...] = ("TIME", "X", "Y")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise EventListError(f"event list {self.path} does not exist")
        self._ccds: dict[int, CcdInfo] | None = None
        self._frame_time: float | None = None
        try:
            self._read_headers()
        except EventListError:
            raise
        except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
            raise EventListError(
                f"cannot read {self.path.name} as a FITS event list: {exc}"
            ) from None

    # --- headers -----------------------------------------------------------------------------

    def _open(self):
        return gzip.open(self.path, "rb") if is_gzip(self.path) else open(self.path, "rb")

    def _read_headers(self) -> None:
        """Primary and EVENTS headers, read forward only (gzip streams never seek back)."""
        with self._open() as stream:
            self.primary_header, _ = _read_header(stream)
            _skip(stream, _data_bytes(self.primary_header))
            while True:
                header, _ = _read_header(stream)
                if header is None:
                    raise EventListError(
                        f"{self.path.name} has no EVENTS table (not an event list)"
                    )
                if str(header.get("EXTNAME", "")).strip().upper() == "EVENTS":
                    break
                _skip(stream, _data_bytes(header))
            self.data_offset = stream.tell()
        self.header = header
        self._check()
        self.n_rows = int(header["NAXIS2"])
        self.row_bytes = int(header["NAXIS1"])
        self.record_dtype, self._scaling = _table_layout(header)
        self.columns = {name.upper(): name for name in self.record_dtype.names}
        for need in self.required:
            if need.upper() not in self.columns:
                raise EventListError(f"{self.path.name}: the EVENTS table has no {need} column")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            self.wcs = column_wcs(header)

    def _check(self) -> None:
        """Raise :class:`EventListError` unless the headers are this instrument's."""

    def _extension_key(self, name: str, header: fits.Header) -> str | None:
        """The key to keep a binary table after the rows under (None: skip it)."""
        return None

    def _use_extensions(
        self, tables: dict[str, tuple[fits.Header, NDArray]], headers: list[fits.Header]
    ) -> None:
        """Set ``_ccds`` and ``_frame_time`` from the kept tables and every extension header."""
        self._ccds, self._frame_time = {}, 0.0

    def _read_extensions(self, stream) -> None:
        """Parse the HDUs after the EVENTS data (``stream`` is positioned right after it)."""
        tables: dict[str, tuple[fits.Header, NDArray]] = {}
        headers: list[fits.Header] = []
        while True:
            header, _ = _read_header(stream)
            if header is None:
                break
            headers.append(header)
            size = _data_bytes(header)
            name = str(header.get("EXTNAME", "")).strip().upper()
            key = (
                self._extension_key(name, header) if header.get("XTENSION") == "BINTABLE" else None
            )
            if key is not None:
                raw = stream.read(size)
                dtype, _ = _table_layout(header)
                tables[key] = (header, np.frombuffer(raw, dtype=dtype, count=int(header["NAXIS2"])))
            else:
                _skip(stream, size)
        self._use_extensions(tables, headers)

    def _load_extensions(self) -> None:
        with self._open() as stream:
            _skip(stream, self.data_offset + _padded(self.n_rows * self.row_bytes))
            self._read_extensions(stream)

    @property
    def ccds(self) -> dict[int, CcdInfo]:
        """Per-CCD good time, live fraction and bad pixels (read with the rows, or on demand)."""
        if self._ccds is None:
            self._load_extensions()
        assert self._ccds is not None
        return self._ccds

    @property
    def frame_time(self) -> float:
        """Frame integration time [s]."""
        if self._frame_time is None:
            self._load_extensions()
        assert self._frame_time is not None
        return self._frame_time

    # --- metadata ----------------------------------------------------------------------------

    def keyword(self, key: str, default: Any = None) -> Any:
        """A keyword of the EVENTS header, else of the primary header."""
        value = self.header.get(key, self.primary_header.get(key, default))
        return value.strip() if isinstance(value, str) else value

    @property
    def obsid(self) -> str:
        return str(self.keyword("OBS_ID", ""))

    def column_limits(self, name: str) -> tuple[float | None, float | None]:
        i = _column_numbers(self.header)[name.upper()]
        return self.header.get(f"TLMIN{i}"), self.header.get(f"TLMAX{i}")

    # --- rows --------------------------------------------------------------------------------

    def record_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[NDArray]:
        """Yield the raw (big-endian) records of successive blocks of at most ``chunk_rows`` rows.

        Read straight from the (decompressed) byte stream: memory is one block whatever the
        length of the list. Convert the columns you need with :meth:`column`.
        """
        opener = gzip.open if is_gzip(self.path) else open
        with opener(self.path, "rb") as stream:
            stream.seek(self.data_offset)
            done = 0
            while done < self.n_rows:
                n = min(chunk_rows, self.n_rows - done)
                buf = stream.read(n * self.row_bytes)
                if len(buf) < n * self.row_bytes:
                    raise EventListError(f"{self.path.name} is truncated after {done} events")
                yield np.frombuffer(buf, dtype=self.record_dtype, count=n)
                done += n
            if self._ccds is None:  # the extensions follow the rows: read them on the way
                _skip(stream, _padded(self.n_rows * self.row_bytes) - self.n_rows * self.row_bytes)
                self._read_extensions(stream)

    def column(self, records: NDArray, name: str, rows: NDArray | None = None) -> NDArray:
        """Column ``name`` (any case) of a block as native numbers (only ``rows`` when given)."""
        raw = records[self.columns[name.upper()]]
        if rows is not None:
            raw = raw[rows]
        arr = raw.astype(raw.dtype.newbyteorder("="))
        scale = self._scaling.get(name.upper())
        if scale:
            bscale, bzero = scale
            arr = arr * (bscale or 1) + (bzero or 0)
        return arr

    def chunks(
        self, columns: list[str], chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[dict[str, NDArray]]:
        """Yield ``{column: native array}`` for successive blocks of at most ``chunk_rows`` rows."""
        for rec in self.record_chunks(chunk_rows):
            yield {c.upper(): self.column(rec, c) for c in columns}


class EventList(EventTable):
    """An EPIC event list opened for streaming (headers read at once, rows on demand)."""

    required = ("TIME", "X", "Y", "PI", "FLAG", "PATTERN", "CCDNR")

    def _check(self) -> None:
        self.camera = str(self.keyword("INSTRUME", "")).strip()
        if self.camera not in CAMERAS:
            raise EventListError(
                f"{self.path.name}: INSTRUME {self.camera!r} is not an EPIC imaging camera"
            )

    def _extension_key(self, name: str, header: fits.Header) -> str | None:
        return name if re.fullmatch(r"(STDGTI|BADPIX)\d\d|GTI\d+", name) else None

    def _use_extensions(
        self, tables: dict[str, tuple[fits.Header, NDArray]], headers: list[fits.Header]
    ) -> None:
        """Frame time: ``FRMTIME`` [ms] of the last extension with one, else the default."""
        frame_time = None
        for header in headers:
            if "FRMTIME" in header:
                frame_time = float(header["FRMTIME"]) / 1000.0
        self._frame_time = frame_time or DEFAULT_FRAME_TIME[self.camera]
        self._ccds = self._ccd_info(tables)

    def _ccd_info(self, ext: dict[str, Any]) -> dict[int, CcdInfo]:
        h = self.header
        selection = _dss_time_gtis(h)
        out: dict[int, CcdInfo] = {}
        numbers = sorted(
            {int(n[-2:]) for n in ext if n.startswith("STDGTI")}
            | {int(k[-2:]) for k in h if re.fullmatch(r"ONTIME\d\d", k)}
        )
        for ccd in numbers:
            std = ext.get(f"STDGTI{ccd:02d}")
            if std is not None:
                good = gtimod.as_gti(np.column_stack([std[1]["START"], std[1]["STOP"]]))
            else:
                good = gtimod.as_gti([[h.get("TSTART", 0.0), h.get("TSTOP", 0.0)]])
            ref = selection.get(ccd, selection.get(0))
            if ref is not None:
                sel = ext.get(ref.upper())
                if sel is None:
                    raise EventListError(
                        f"{self.path.name}: the time selection refers to {ref}, which is missing"
                    )
                good = gtimod.intersect(good, np.column_stack([sel[1]["START"], sel[1]["STOP"]]))
            on = h.get(f"ONTIME{ccd:02d}")
            live = h.get(f"LIVETI{ccd:02d}", h.get(f"LIVETIME{ccd:02d}"))
            if on and live:
                fraction = float(live) / float(on)
            elif std is not None and std[0].get("ONTIME") and std[0].get("LIVETIME"):
                fraction = float(std[0]["LIVETIME"]) / float(std[0]["ONTIME"])
            else:
                fraction = 1.0
            bad = ext.get(f"BADPIX{ccd:02d}")
            rows = np.zeros((0, 3), np.int64)
            if bad is not None and len(bad[1]):
                d = bad[1]
                yext = d["YEXTENT"] if "YEXTENT" in d.dtype.names else np.ones(len(d))
                rows = np.column_stack([d["RAWX"], d["RAWY"], yext]).astype(np.int64)
            out[ccd] = CcdInfo(ccd, good, min(fraction, 1.0), rows)
        return out


def _dss_time_gtis(header: fits.Header) -> dict[int, str]:
    """``{ccd: GTI extension name}`` of the time selection recorded in SAS DSS keywords.

    Block 1 keywords have no prefix, block k > 1 the prefix ``k`` (``2DSVAL1``). A block without
    a CCDNR descriptor applies to every CCD (key 0).
    """
    types = {
        int(m.group(1)): str(v).strip().upper()
        for k, v in header.items()
        if (m := re.fullmatch(r"DSTYP(\d+)", k))
    }
    time_i = next((i for i, t in types.items() if t == "TIME"), None)
    if time_i is None:
        return {}
    ccd_i = next((i for i, t in types.items() if t == "CCDNR"), None)
    blocks = {1} | {
        int(m.group(1)) for k in header if (m := re.fullmatch(r"(\d+)DS(?:VAL|REF)\d+", k))
    }
    out: dict[int, str] = {}
    for b in sorted(blocks):
        prefix = "" if b == 1 else str(b)
        ref = header.get(f"{prefix}DSREF{time_i}", header.get(f"DSREF{time_i}"))
        if not ref:
            continue
        ref = str(ref).strip().lstrip(":")
        if ccd_i is None:
            out[0] = ref
            continue
        value = str(header.get(f"{prefix}DSVAL{ccd_i}", header.get(f"DSVAL{ccd_i}", ""))).strip()
        first = value.split(":")[0]
        if first.isdigit():
            out[int(first)] = ref
    return out


BLOCK = 2880
_TFORM_RE = re.compile(r"^\s*(\d*)([LXBIJKAEDCM])")
_NUMPY_CODE = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8",
               "C": ">c8", "M": ">c16"}  # fmt: skip


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _read_header(stream) -> tuple[fits.Header | None, int]:
    """The next header of a FITS stream (None at the end) and its size in bytes."""
    blocks = []
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            if blocks:
                raise EventListError("the file ends inside a FITS header")
            return None, 0
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, BLOCK, 80)):
            break
    text = b"".join(blocks).decode("ascii", errors="replace")
    return fits.Header.fromstring(text), len(blocks) * BLOCK


def _data_bytes(header: fits.Header) -> int:
    """Size of the data unit following ``header``, padded to whole FITS blocks."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header[f"NAXIS{i}"])
    bytes_per_value = abs(int(header["BITPIX"])) // 8
    size = bytes_per_value * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)
    return _padded(size)


def _skip(stream, n: int) -> None:
    """Move ``n`` bytes forward (plain files seek; gzip streams decompress forward)."""
    if n > 0:
        stream.seek(n, 1)


def _table_layout(header: fits.Header) -> tuple[np.dtype, dict[str, tuple[float, float]]]:
    """Big-endian record dtype of a binary table and the (TSCAL, TZERO) of scaled columns."""
    fields: list[tuple] = []
    scaling = {}
    for i in range(1, int(header["TFIELDS"]) + 1):
        name = str(header[f"TTYPE{i}"]).strip()
        m = _TFORM_RE.match(str(header[f"TFORM{i}"]))
        if not m:
            raise EventListError(f"unsupported column format {header[f'TFORM{i}']!r} ({name})")
        repeat, code = int(m.group(1) or 1), m.group(2)
        if code == "A":
            fields.append((name, f"S{repeat}"))
        elif code == "X":
            fields.append((name, "u1", ((repeat + 7) // 8,)))
        elif repeat == 1:
            fields.append((name, _NUMPY_CODE[code]))
        else:
            fields.append((name, _NUMPY_CODE[code], (repeat,)))
        tscal, tzero = header.get(f"TSCAL{i}", 1), header.get(f"TZERO{i}", 0)
        if tscal != 1 or tzero != 0:
            scaling[name.upper()] = (float(tscal), float(tzero))
    dtype = np.dtype(fields)
    if dtype.itemsize != int(header["NAXIS1"]):
        raise EventListError("the table's column formats do not add up to its row length")
    return dtype, scaling
