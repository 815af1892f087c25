"""The MOC set: every camera MOC of the index in one array structure, queried without a loop.

Structure (all numpy arrays, saved as ``.npy`` files in one folder and memory-mapped on load):

``ids`` (int64, n)
    The MOC id of each MOC (the ``exposures.id`` of the index database).
``offsets`` (int64, n + 1)
    MOC ``i`` owns ``ranges[offsets[i]:offsets[i + 1]]``.
``ranges`` (uint32, (R, 2))
    Sorted, disjoint, non-adjacent ``[start, end)`` HEALPix NESTED cell ranges at the set depth
    (order 13 by default: 12 * 4**13 cells < 2**32, so uint32 holds them: 8 bytes a range).
``cell_ptr`` (int64, 12 * 4**CELL_ORDER + 1), ``cell_mocs``, ``cell_first``, ``cell_count``
(int32)
    Inverted index in CSR form: the MOCs touching HEALPix cell ``c`` at order ``CELL_ORDER``
    (8: 13.7' cells, so an XMM camera touches ~10 of them) are
    ``cell_mocs[cell_ptr[c]:cell_ptr[c + 1]]``; for each, ``cell_first`` and ``cell_count``
    say which of its ranges touch the cell (``cell_count`` ranges from its ``cell_first``-th),
    so a query reads only the ranges near the region (a 3.6 deg survey tile has ~1,000 ranges
    over ~300 cells; a 1' region needs the few in one or two cells).

Query (:func:`query`): the region MOC's cells at ``CELL_ORDER`` give, through the inverted index,
the postings (MOC, cell) there; each brings the MOC's ranges touching its cell, clipped to the
cell, read together (blocks of nearby slices, one ``pread`` each; the build writes the MOCs in sky
order so that neighbours on the sky are neighbours in the file) and intersected with the region's
ranges in a vectorised pass (``searchsorted`` on the region range bounds and a cumulative sum of
region range lengths). Summed per MOC this gives the exact measure of ``region & camera`` in
depth-29 cells (a MOC range overlapping the region shares a cell with it). A candidate is a hit
when that measure is > 0 (the same answer as ``mocpy``'s ``intersection`` being non-empty), and
its covered fraction is ``measure / measure(region)`` (all HEALPix cells of one order have the
same area).

Segments (:class:`SegmentedMocSet`): an index is a list of MOC sets, a large base plus small
deltas appended by incremental builds; a query runs on each and concatenates the answers
(positions are global: segment after segment). :func:`write_streamed` builds a set from chunks
of MOCs straight into its files, so a million MOCs never sit in memory as mocpy objects or as
one Python list of arrays.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from mocpy import MOC

#: Order of the inverted index cells (13.7 arcmin).
CELL_ORDER: int = 8
_ARRAYS = ("ids", "offsets", "ranges", "cell_ptr", "cell_mocs", "cell_first", "cell_count")
_META = "mocset.json"
#: 2: ``cell_first`` and ``cell_count`` (sets of version 1 are completed when loaded).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class MocSet:
    """All camera MOCs of an index, with an inverted cell index (see the module docstring)."""

    depth: int
    ids: np.ndarray
    offsets: np.ndarray
    ranges: np.ndarray
    cell_ptr: np.ndarray
    cell_mocs: np.ndarray
    cell_first: np.ndarray
    cell_count: np.ndarray
    #: An open descriptor of the ``ranges`` file of a loaded set (:func:`load`): queries read
    #: the ranges they need with ``pread`` instead of mapping pages of a file that may weigh a
    #: gigabyte; it keeps the file readable after a newer generation removed it.
    ranges_fd: int | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Size of the arrays [bytes]."""
        return int(sum(getattr(self, name).nbytes for name in _ARRAYS))

    def moc_ranges(self, index: int) -> np.ndarray:
        """Ranges ``(n, 2)`` uint32 at ``depth`` of the MOC at position ``index``."""
        return np.asarray(self.ranges[self.offsets[index] : self.offsets[index + 1]])

    def moc(self, index: int) -> MOC:
        """The MOC at position ``index`` as a mocpy MOC."""
        return ranges_to_moc(self.moc_ranges(index), self.depth)


# --- range helpers ----------------------------------------------------------------------------


def _shift(depth: int) -> int:
    return 2 * (29 - depth)


def moc_to_ranges(moc: MOC, depth: int) -> np.ndarray:
    """A MOC as ``(n, 2)`` uint32 cell ranges at ``depth`` (cells partly covered are included)."""
    r29 = np.asarray(moc.to_depth29_ranges, dtype=np.uint64)
    if len(r29) == 0:
        return np.zeros((0, 2), dtype=np.uint32)
    shift = np.uint64(_shift(depth))
    mask = (np.uint64(1) << shift) - np.uint64(1)
    if not (r29 & mask).any():  # a MOC no deeper than ``depth``: its ranges stay disjoint
        return (r29 >> shift).astype(np.uint32)
    start = r29[:, 0] >> shift
    end = (r29[:, 1] + mask) >> shift
    return merge_ranges(np.column_stack([start, end])).astype(np.uint32)


def ranges_to_moc(ranges: np.ndarray, depth: int) -> MOC:
    """``(n, 2)`` cell ranges at ``depth`` -> mocpy MOC of max order ``depth``."""
    r29 = np.asarray(ranges, dtype=np.uint64).reshape(-1, 2) << np.uint64(_shift(depth))
    return MOC.from_depth29_ranges(depth, r29)


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
    """Union of ``(n, 2)`` half-open integer ranges (any order, may overlap/touch), sorted."""
    ranges = np.asarray(ranges)
    if len(ranges) == 0:
        return ranges.reshape(0, 2)
    ranges = ranges[np.argsort(ranges[:, 0], kind="stable")]
    start, end = ranges[:, 0], np.maximum.accumulate(ranges[:, 1])
    new = np.ones(len(ranges), dtype=bool)
    new[1:] = start[1:] > end[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(ranges)) - 1
    return np.column_stack([start[first], end[last]])


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For inclusive integer intervals ``[lo, hi]``: (interval index, value) of every member."""
    counts = (hi - lo + 1).astype(np.int64)
    owner = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    values = lo.astype(np.int64)[owner] + (np.arange(counts.sum()) - starts[owner])
    return owner, values


def _segments(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for every (s, n): the gather index of CSR segments."""
    owner = np.repeat(np.arange(len(starts)), lengths)
    first = np.cumsum(lengths) - lengths
    return starts[owner] + (np.arange(int(lengths.sum())) - first[owner])


# --- building ---------------------------------------------------------------------------------


def from_ranges(
    ids: Sequence[int] | np.ndarray, ranges: Sequence[np.ndarray], depth: int
) -> MocSet:
    """Build a MOC set from each MOC's ``(n, 2)`` ranges at ``depth`` (sorted and disjoint)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(ranges):
        raise ValueError("one range array per id is needed")
    lengths = np.array([len(r) for r in ranges], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = (
        np.concatenate([np.asarray(r, dtype=np.uint32).reshape(-1, 2) for r in ranges])
        if len(ranges)
        else np.zeros((0, 2), dtype=np.uint32)
    )
    return from_arrays(ids, offsets, flat, depth)


def _cell_pairs(
    offsets: np.ndarray, ranges: np.ndarray, depth: int, first: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The postings of MOCs ``first``, ``first + 1``... (``offsets`` into ``ranges``): arrays
    (cell at ``CELL_ORDER``, MOC position, index of its first range touching the cell within the
    MOC, number of its ranges touching the cell), one per MOC and cell, by MOC then cell."""
    n = len(offsets) - 1
    offsets = np.asarray(offsets, dtype=np.int64)
    shift = 2 * (depth - CELL_ORDER)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    lo = ranges[:, 0].astype(np.int64) >> shift
    hi = (ranges[:, 1].astype(np.int64) - 1) >> shift
    # Within a MOC the ranges are sorted, so the cells are non-decreasing: a range that lies in
    # the cell where the previous range of the same MOC ended adds nothing (most of them).
    redundant = np.zeros(len(lo), dtype=bool)
    redundant[1:] = (owner[1:] == owner[:-1]) & (lo[1:] == hi[:-1]) & (hi[1:] == lo[1:])
    kept = np.flatnonzero(~redundant)
    which, cells = _expand(lo[kept], hi[kept])
    owners = owner[kept][which]
    range_at = kept[which]  # the range that put the MOC in the cell
    repeated = np.zeros(len(cells), dtype=bool)
    repeated[1:] = (owners[1:] == owners[:-1]) & (cells[1:] == cells[:-1])
    cells, owners, range_at = cells[~repeated], owners[~repeated], range_at[~repeated]
    # the ranges touching a cell run from the first one there to the one before the first of
    # the MOC's next cell, or to that one too if it starts in this cell or before
    last = offsets[owners + 1] - 1
    same = np.zeros(len(cells), dtype=bool)
    same[:-1] = owners[1:] == owners[:-1]
    nxt = np.flatnonzero(same)
    following = range_at[nxt + 1]
    last[nxt] = following - 1 + (lo[following] <= cells[nxt])
    count = last - range_at + 1
    local = range_at - offsets[owners]
    return cells, owners + first, local, count


#: HEALPix order of the cells whose NESTED index orders the MOCs of a built set (3.4').
SKY_ORDER: int = 10


def sky_order(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Indices sorting pointings ``ra``, ``dec`` [deg] along the NESTED HEALPix curve at
    ``SKY_ORDER`` (a Z-order: neighbours on the sky are mostly neighbours in the order); NaN
    pointings last, ties in the given order. A set written in this order answers a region
    from a few blocks of its ranges file: on the million-MOC bench the median region needed 82
    reads with the MOCs by id, 33 in this order (same ``_READ_GAP`` of 256), and the median
    query of the set went from ~0.6 to ~0.35 ms."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    known = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    key = np.full(len(ra), 12 * 4**SKY_ORDER, dtype=np.int64)
    if known.any():
        cells = HEALPix(nside=2**SKY_ORDER, order="nested").lonlat_to_healpix(
            ra[known] * u.deg, dec[known] * u.deg
        )
        key[known] = cells
    return np.argsort(key, kind="stable")


def _check_depth(depth: int) -> None:
    if depth < CELL_ORDER or depth > 15:
        raise ValueError(f"MOC set depth must be in [{CELL_ORDER}, 15] (uint32 cells)")


def from_arrays(ids: np.ndarray, offsets: np.ndarray, ranges: np.ndarray, depth: int) -> MocSet:
    """Build a MOC set (computing the inverted cell index) from concatenated ranges."""
    _check_depth(depth)
    ranges = np.ascontiguousarray(ranges, dtype=np.uint32).reshape(-1, 2)
    cells, owners, first, count = _cell_pairs(np.asarray(offsets, dtype=np.int64), ranges, depth)
    order = np.argsort(cells, kind="stable")  # by cell, then by MOC (owners ascending)
    n_cells = 12 * 4**CELL_ORDER
    cell_ptr = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=n_cells))])
    return MocSet(
        depth=depth,
        ids=np.asarray(ids, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.int64),
        ranges=ranges,
        cell_ptr=cell_ptr.astype(np.int64),
        cell_mocs=owners[order].astype(np.int32),
        cell_first=first[order].astype(np.int32),
        cell_count=count[order].astype(np.int32),
    )


def from_mocs(ids: Sequence[int], mocs: Sequence[MOC], depth: int) -> MocSet:
    """Build a MOC set from mocpy MOCs (degraded to ``depth`` where finer)."""
    return from_ranges(ids, [moc_to_ranges(moc, depth) for moc in mocs], depth)


def _header_value(header: bytes, key: bytes) -> bytes | None:
    """Raw value of a FITS header card (``KEY     = value / comment``), or None."""
    at = header.find(key.ljust(8) + b"=")
    while at >= 0 and at % 80:
        at = header.find(key.ljust(8) + b"=", at + 1)
    if at < 0:
        return None
    return header[at + 10 : at + 80].split(b"/")[0].strip().strip(b"'").strip()


def _read_bytes(path: Path | str) -> bytes:
    """A whole (small) file's content; plain ``os`` calls, ~4x faster than ``Path.read_bytes``
    when reading tens of thousands of MOC files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = 1 << 16
        data = os.read(fd, size)
        if len(data) < size:  # the common case: one read for a whole MOC file
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: Headers of MOC FITS files already checked, with their NAXIS2 card cut out -> MOC order.
_CHECKED_HEADERS: dict[bytes, int] = {}
_NAXIS2 = b"NAXIS2  ="


def _read_range_fits(path: Path, depth: int) -> np.ndarray | None:
    """Depth-``depth`` ranges of a MOC 2.0 FITS file in RANGE ordering (as mocpy and the MOC
    Rust library write them: primary header block, one BINTABLE header block, ``1K`` column of
    depth-29 range bounds) when its order is <= ``depth``; None for any other layout.

    Files written by one program differ only in their NAXIS2 card, so a header is checked card
    by card once and remembered without that card: the others cost one dictionary look-up
    (``bench/index_query``'s 46,666 files: 0.7 s -> see its build_vs_mocset line).
    """
    raw = _read_bytes(path)
    block = 2880
    header = raw[block : 2 * block]
    at = header.find(_NAXIS2)
    if at < 0 or at % 80:
        return None
    rest = header[:at] + header[at + 80 :]
    order = _CHECKED_HEADERS.get(rest)
    if order is None:
        order = _check_header(header)
        if order is None:
            return None
        if len(_CHECKED_HEADERS) < 64:
            _CHECKED_HEADERS[rest] = order
    rows = header[at + 10 : at + 80].split(b"/")[0].strip()
    if order > depth or not rows.isdigit():
        return None
    bounds = np.frombuffer(raw, dtype=">i8", count=int(rows), offset=2 * block)
    return (bounds.reshape(-1, 2) >> _shift(depth)).astype(np.uint32)


def _check_header(header: bytes) -> int | None:
    """The MOC order of a RANGE-ordered MOC 2.0 BINTABLE header block, or None."""
    if not header.startswith(b"XTENSION= 'BINTABLE'") or b"END" + b" " * 77 not in header:
        return None
    if (
        _header_value(header, b"ORDERING") != b"RANGE"
        or _header_value(header, b"TFORM1") != b"1K"
        or _header_value(header, b"TFIELDS") != b"1"
    ):
        return None
    order = _header_value(header, b"MOCORD_S")
    return int(order) if order is not None and order.isdigit() else None


#: FITS headers (primary + BINTABLE blocks) of MOC files as mocpy writes them, by MOC order.
_WRITE_TEMPLATES: dict[int, bytes] = {}


def _fits_template(depth: int) -> bytes:
    """The two header blocks mocpy writes for a RANGE MOC of order ``depth`` (made once by
    mocpy itself, so the files stay what mocpy would write)."""
    if depth not in _WRITE_TEMPLATES:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "template.fits"
            ranges_to_moc(np.array([[0, 1]], dtype=np.uint32), depth).save(
                str(path), format="fits", overwrite=True
            )
            header = _read_bytes(path)[: 2 * 2880]
        if _check_header(header[2880:]) != depth or header[2880:].find(_NAXIS2) % 80:
            raise RuntimeError("unexpected MOC FITS layout from mocpy")
        _WRITE_TEMPLATES[depth] = header
    return _WRITE_TEMPLATES[depth]


def write_range_fits(path: Path | str, ranges: np.ndarray, depth: int) -> None:
    """Write ``(n, 2)`` ranges at ``depth`` as the MOC 2.0 FITS file mocpy's
    ``ranges_to_moc(ranges, depth).save(path, format="fits")`` writes, byte for byte, without
    going through astropy (~50x faster: new exposures' MOC files in a build)."""
    template = _fits_template(depth)
    bounds = (np.asarray(ranges, dtype=np.uint64).reshape(-1) << np.uint64(_shift(depth))).astype(
        ">i8"
    )
    at = 2880 + template[2880:].find(_NAXIS2)
    card = f"NAXIS2  = {len(bounds):>20}".ljust(80).encode("ascii")
    data = bounds.tobytes()
    padding = b"\0" * (-len(data) % 2880)
    with open(path, "wb") as stream:
        stream.write(template[:at] + card + template[at + 80 :] + data + padding)


def from_fits_files(ids: Sequence[int], paths: Sequence[Path], depth: int) -> MocSet:
    """Build a MOC set from MOC FITS files (fast path for RANGE-ordered MOC 2.0 files of order
    <= ``depth``; anything else is read with ``mocpy.MOC.from_fits``)."""
    ranges = []
    for path in paths:
        fast = _read_range_fits(path, depth)
        ranges.append(fast if fast is not None else moc_to_ranges(MOC.from_fits(path), depth))
    return from_ranges(ids, ranges, depth)


# --- persistence ------------------------------------------------------------------------------


def save(mocset: MocSet, folder: Path) -> None:
    """Write the arrays as ``.npy`` files plus ``mocset.json`` into a new ``folder``."""
    folder.mkdir(parents=True, exist_ok=False)
    for name in _ARRAYS:
        np.save(folder / f"{name}.npy", getattr(mocset, name), allow_pickle=False)
    _write_meta(folder, mocset.depth, len(mocset))


def load(folder: Path, *, mmap: bool = True) -> MocSet:
    """Load a saved MOC set; with ``mmap`` the arrays are memory-mapped (read-only)."""
    meta = json.loads((folder / _META).read_text())
    if meta.get("format") not in (1, FORMAT_VERSION) or meta.get("cell_order") != CELL_ORDER:
        raise ValueError(f"unsupported MOC set format in {folder}: rebuild the index")
    mode = "r" if mmap else None
    if meta["format"] == 1:  # no range slices: the cell index is made again, in memory
        ids, offsets, ranges = (
            np.load(folder / f"{name}.npy", mmap_mode=mode) for name in _ARRAYS[:3]
        )
        return from_arrays(np.asarray(ids), np.asarray(offsets), ranges, int(meta["depth"]))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in _ARRAYS}
    if not mmap:
        return MocSet(depth=int(meta["depth"]), **arrays)
    # plain ndarray views of the mappings: indexing a ``np.memmap`` costs a Python call more
    # (~25 us of a 1 ms query); ``ranges`` stays one, for the file name and offset of ``pread``
    for name in _ARRAYS:
        if name != "ranges":
            arrays[name] = np.asarray(arrays[name])
    fd = os.open(folder / "ranges.npy", os.O_RDONLY)
    mocset = MocSet(depth=int(meta["depth"]), ranges_fd=fd, **arrays)
    weakref.finalize(mocset, os.close, fd)
    return mocset


def format_of(folder: Path) -> int | None:
    """The format version of a saved MOC set (None if unreadable)."""
    try:
        return int(json.loads((folder / _META).read_text())["format"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: Bytes reserved for the header of a ``.npy`` file written by :class:`_NpyWriter`.
_NPY_HEADER_BYTES = 128


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``_NPY_HEADER_BYTES`` bytes."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    ).encode("latin1")
    room = _NPY_HEADER_BYTES - 10
    if len(text) >= room:
        raise ValueError("shape too long for the reserved .npy header")
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", room)
        + text
        + b" " * (room - 1 - len(text))
        + b"\n"
    )


class _NpyWriter:
    """Appends rows to a ``.npy`` file whose length is known only at the end: the header is
    written again with the final shape by :meth:`close`."""

    def __init__(self, path: Path, dtype: type | np.dtype, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), row_shape
        self.rows = 0
        self.stream = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.stream.write(_npy_header(self.dtype, (0, *row_shape)))

    def write(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype).reshape(-1, *self.row_shape)
        self.stream.write(array.tobytes())
        self.rows += len(array)

    def close(self) -> None:
        self.stream.seek(0)
        self.stream.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.stream.close()


#: Most ranges :func:`write_streamed` handles at a time (its temporary arrays take ~60 bytes
#: a range: a chunk of 20,000 survey tiles of ~1,000 ranges each would take over a gigabyte).
PIECE_RANGES: int = 1_000_000


def _pieces(
    chunks: Iterable[tuple[np.ndarray, Sequence[np.ndarray]]],
) -> Iterable[tuple[np.ndarray, Sequence[np.ndarray]]]:
    """The chunks cut where needed so that a piece holds at most ``PIECE_RANGES`` ranges (or
    one MOC)."""
    for ids, ranges in chunks:
        if len(ids) != len(ranges):
            raise ValueError("one range array per id is needed")
        start, total = 0, 0
        for i, r in enumerate(ranges):
            if total + len(r) > PIECE_RANGES and i > start:
                yield ids[start:i], ranges[start:i]
                start, total = i, 0
            total += len(r)
        if start < len(ids):
            yield ids[start:], ranges[start:]


def write_streamed(
    folder: Path, chunks: Iterable[tuple[np.ndarray, Sequence[np.ndarray]]], depth: int
) -> dict[str, int]:
    """Write a MOC set into a new ``folder`` from chunks ``(ids, [ranges of each MOC])``
    (ranges as :func:`from_ranges` takes them), never holding more than one chunk's MOCs.

    The ranges go to disk chunk by chunk; only the (cell, MOC) pairs of the inverted index (a
    few per MOC) are kept until the end, packed as one ``uint64`` each and sorted in place.
    :func:`load` reads the result like a set written by :func:`save`. Returns sizes.
    """
    _check_depth(depth)
    folder.mkdir(parents=True, exist_ok=False)
    ids_out = _NpyWriter(folder / "ids.npy", np.int64)
    offsets_out = _NpyWriter(folder / "offsets.npy", np.int64)
    ranges_out = _NpyWriter(folder / "ranges.npy", np.uint32, (2,))
    offsets_out.write(np.zeros(1, dtype=np.int64))
    postings: list[tuple[np.ndarray, ...]] = []
    n_mocs = n_ranges = 0
    try:
        for ids, ranges in _pieces(chunks):
            lengths = np.fromiter((len(r) for r in ranges), dtype=np.int64, count=len(ranges))
            flat = (
                np.concatenate([np.asarray(r, dtype=np.uint32).reshape(-1, 2) for r in ranges])
                if len(ranges)
                else np.zeros((0, 2), dtype=np.uint32)
            )
            local = np.concatenate([[0], np.cumsum(lengths)])
            pairs = _cell_pairs(local, flat, depth, first=n_mocs)
            postings.append(tuple(a.astype(np.int32) for a in pairs))
            ids_out.write(np.asarray(ids, dtype=np.int64))
            offsets_out.write(local[1:] + n_ranges)
            ranges_out.write(flat)
            n_mocs += len(ids)
            n_ranges += len(flat)
    finally:
        for writer in (ids_out, offsets_out, ranges_out):
            writer.close()
    # postings by cell, then MOC (they come by MOC): a stable sort on the cell, one array at
    # a time so that only one column besides the order is copied at once
    cells = _concatenate_column(postings, 0)
    order = np.argsort(cells, kind="stable")
    n_cells = 12 * 4**CELL_ORDER
    cell_ptr = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=n_cells))])
    n_postings = len(cells)
    del cells
    np.save(folder / "cell_ptr.npy", cell_ptr.astype(np.int64), allow_pickle=False)
    for column, name in enumerate(("cell_mocs", "cell_first", "cell_count"), start=1):
        values = _concatenate_column(postings, column)
        np.save(folder / f"{name}.npy", values[order], allow_pickle=False)
        del values
    _write_meta(folder, depth, n_mocs)
    return {"mocs": n_mocs, "ranges": n_ranges, "cell_entries": n_postings}


def _concatenate_column(postings: list[tuple[np.ndarray, ...]], column: int) -> np.ndarray:
    """One column of the postings' pieces in one array; the pieces' copies are released."""
    out = (
        np.concatenate([piece[column] for piece in postings]) if postings else np.zeros(0, np.int32)
    )
    for k, piece in enumerate(postings):
        postings[k] = tuple(a if i != column else None for i, a in enumerate(piece))
    return out


def _write_meta(folder: Path, depth: int, n_mocs: int) -> None:
    meta = {"format": FORMAT_VERSION, "depth": depth, "cell_order": CELL_ORDER, "n_mocs": n_mocs}
    (folder / _META).write_text(json.dumps(meta))
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- segments ---------------------------------------------------------------------------------


class SegmentedMocSet:
    """Several MOC sets read as one: MOC positions run through the segments in order.

    Has the reading interface of :class:`MocSet` (``depth``, ``len``, ``ids``, ``moc``,
    ``moc_ranges``, ``nbytes``) plus ``n_ranges``; :func:`query` and :func:`union_ranges`
    accept it. ``ids`` is concatenated on first use (8 bytes a MOC)."""

    def __init__(self, segments: Sequence[MocSet]):
        if not segments:
            raise ValueError("a segmented MOC set needs at least one segment")
        depths = {segment.depth for segment in segments}
        if len(depths) != 1:
            raise ValueError(f"segments of different depths: {sorted(depths)}")
        self.segments = list(segments)
        self.depth = segments[0].depth
        self.starts = np.concatenate([[0], np.cumsum([len(s) for s in segments])]).astype(np.int64)
        self._ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            if len(self.segments) == 1:
                self._ids = self.segments[0].ids
            else:
                self._ids = np.concatenate([np.asarray(s.ids) for s in self.segments])
        return self._ids

    @property
    def nbytes(self) -> int:
        return sum(segment.nbytes for segment in self.segments)

    @property
    def n_ranges(self) -> int:
        return sum(len(segment.ranges) for segment in self.segments)

    def _locate(self, index: int) -> tuple[MocSet, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.segments[k], index - int(self.starts[k])

    def moc_ranges(self, index: int) -> np.ndarray:
        segment, local = self._locate(index)
        return segment.moc_ranges(local)

    def moc(self, index: int) -> MOC:
        segment, local = self._locate(index)
        return segment.moc(local)


def concatenate(segments: Sequence[MocSet]) -> MocSet:
    """One MOC set holding the MOCs of ``segments`` in order (merging small segments)."""
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for segment in segments:
        offsets.append(np.asarray(segment.offsets[1:], dtype=np.int64) + total)
        total += len(segment.ranges)
    return from_arrays(
        np.concatenate([np.asarray(s.ids) for s in segments]),
        np.concatenate(offsets),
        np.concatenate([np.asarray(s.ranges) for s in segments]),
        segments[0].depth,
    )


# --- queries ----------------------------------------------------------------------------------


def region_ranges(moc: MOC) -> np.ndarray:
    """A region MOC as sorted ``(n, 2)`` int64 ranges of depth-29 cells."""
    return np.asarray(moc.to_depth29_ranges, dtype=np.int64).reshape(-1, 2)


def region_cells(region29: np.ndarray) -> np.ndarray:
    """The order-``CELL_ORDER`` cells (sorted, unique) touched by depth-29 region ranges."""
    shift = _shift(CELL_ORDER)
    _, cells = _expand(region29[:, 0] >> shift, (region29[:, 1] - 1) >> shift)
    return _unique(cells)


#: Ranges between two wanted runs read anyway rather than with one more ``pread`` call: a call
#: costs ~3 us here, copying 1,024 ranges (8 KiB) from the page cache about as much. On the
#: million-MOC bench (MOCs in sky order) the median region needs 11 reads (134 joining nothing,
#: 4 with a gap of 4,096); query times were equal within the noise from 256 to 65,536.
_READ_GAP: int = 1024


def _read_slices(mocset: MocSet, first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``mocset.ranges[first[k]:first[k] + counts[k]]`` for every k, concatenated in that order.

    A set loaded from files (:func:`load`) is read with ``pread`` (the pages stay in the page
    cache, shared, instead of adding up in the memory of every process that queries), one call
    per block of slices less than ``_READ_GAP`` ranges apart; in memory it is indexed."""
    ranges = mocset.ranges
    if mocset.ranges_fd is None or not isinstance(ranges, np.memmap) or len(first) == 0:
        return np.asarray(ranges)[_segments(first, counts)]
    order = np.argsort(first, kind="stable")
    start = first[order]
    reach = np.maximum.accumulate(start + counts[order])
    breaks = np.flatnonzero(start[1:] > reach[:-1] + _READ_GAP) + 1
    block_start = start[np.concatenate([[0], breaks])]
    sizes = reach[np.concatenate([breaks - 1, [len(start) - 1]])] - block_start
    block = np.empty((int(sizes.sum()), 2), dtype=ranges.dtype)
    buffer = memoryview(block).cast("B")
    row = 2 * ranges.dtype.itemsize
    at = 0
    for offset, count in zip(block_start.tolist(), sizes.tolist(), strict=True):
        size = count * row
        if (
            os.preadv(mocset.ranges_fd, [buffer[at : at + size]], ranges.offset + offset * row)
            != size
        ):
            raise OSError(f"short read in {ranges.filename}")
        at += size
    which = np.searchsorted(block_start, first, side="right") - 1
    return block[_segments(first - block_start[which] + (np.cumsum(sizes) - sizes)[which], counts)]


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted unique values (``np.unique`` without its overhead for small arrays)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _covered_below(x: np.ndarray, starts: np.ndarray, ends: np.ndarray, cum: np.ndarray):
    """Measure of ``region & [0, x)`` for each x (region: sorted disjoint [starts, ends))."""
    i = np.searchsorted(starts, x, side="right") - 1
    safe = np.maximum(i, 0)
    partial = np.clip(x - starts[safe], 0, ends[safe] - starts[safe])
    return np.where(i >= 0, cum[safe] + partial, 0)


def query(mocset: MocSet | SegmentedMocSet, region29: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MOCs intersecting a region: (positions in the set, covered fraction of the region).

    ``region29``: the region as sorted disjoint ``[start, end)`` depth-29 ranges (int64, see
    :func:`region_ranges`). Fractions are ``area(region & MOC) / area(region)`` in [0, 1].
    ``mocset`` may be a :class:`SegmentedMocSet`: positions are then global. Positions come
    sorted within each segment.
    """
    segments = mocset.segments if isinstance(mocset, SegmentedMocSet) else [mocset]
    starts = mocset.starts.tolist() if isinstance(mocset, SegmentedMocSet) else [0]
    if len(region29) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    cells = region_cells(region29)
    r_start, r_end = region29[:, 0], region29[:, 1]
    below = np.concatenate([[0], np.cumsum(r_end - r_start)])
    total = float(below[-1])
    positions, fractions = [], []
    for segment, start in zip(segments, starts, strict=False):
        found, measure = _query_cells(segment, cells, r_start, r_end, below[:-1])
        if len(found):
            positions.append(found + start)
            fractions.append(measure / total)
    if len(positions) == 1:
        return positions[0], fractions[0]
    if not positions:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(positions), np.concatenate(fractions)


def _query_cells(
    mocset: MocSet, cells: np.ndarray, r_start: np.ndarray, r_end: np.ndarray, cum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, measure of ``region & MOC`` in depth-29 cells) of the MOCs of one set that
    intersect a region (its ``cells`` and sorted ranges, ``cum``: measure before each range).

    Each posting (a MOC in one of the cells) brings the MOC's ranges touching that cell, clipped
    to it, so a range across two cells counts once in each half and the sums need no
    de-duplication."""
    first_posting = mocset.cell_ptr[cells]
    lengths = mocset.cell_ptr[cells + 1] - first_posting
    postings = _segments(first_posting, lengths)
    if len(postings) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    owners = mocset.cell_mocs[postings].astype(np.int64)
    counts = mocset.cell_count[postings].astype(np.int64)
    first = mocset.offsets[owners] + mocset.cell_first[postings]
    gathered = _read_slices(mocset, first, counts).astype(np.int64)
    cell = np.repeat(np.repeat(cells, lengths), counts)
    shift, cell_shift = _shift(mocset.depth), _shift(CELL_ORDER)
    n = len(gathered)
    bounds = np.empty(2 * n, dtype=np.int64)  # [lo..., hi...]: one pass for both ends
    bounds[:n] = np.maximum(gathered[:, 0] << shift, cell << cell_shift)
    bounds[n:] = np.minimum(gathered[:, 1] << shift, (cell + 1) << cell_shift)
    below = _covered_below(bounds, r_start, r_end, cum)
    overlap = below[n:] - below[:n]
    # per MOC: postings sorted by owner, each posting's ranges summed, then each owner's
    order = np.argsort(owners, kind="stable")
    per_posting = np.add.reduceat(overlap, np.cumsum(counts) - counts)[order]
    owners = owners[order]
    new = np.empty(len(owners), dtype=bool)
    new[0] = True
    np.not_equal(owners[1:], owners[:-1], out=new[1:])
    group = np.flatnonzero(new)
    measure = np.add.reduceat(per_posting, group)
    hit = measure > 0
    return owners[group][hit], measure[hit]


def union_ranges(mocset: MocSet | SegmentedMocSet) -> np.ndarray:
    """Union of all MOCs as ``(n, 2)`` ranges at the set depth (segment by segment)."""
    if isinstance(mocset, SegmentedMocSet):
        parts = [union_ranges(segment) for segment in mocset.segments]
        return merge_ranges(np.concatenate(parts)).astype(np.uint32)
    return merge_ranges(np.asarray(mocset.ranges)).astype(np.uint32)
