"""Exposure-weighted combination of spectral responses, as SAS ``epicspeccombine`` does.

For spectra i with exposure ``t_i``, RMF ``R_i`` and ARF ``A_i`` on the same energy grid and
channels, the response of their sum is ``R = sum_i (t_i / T) A_i(E) R_i(E, c)`` with
``T = sum_i t_i``: a full response (effective area included, ``HDUCLAS3 = 'FULL'``), written
as an OGIP ``SPECRESP MATRIX`` with one channel group per energy row and the ``EBOUNDS`` of the
first RMF. Named in the combined spectrum's RESPFILE, with ANCRFILE 'NONE'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray


class ResponseMismatch(ValueError):
    """The responses cannot be combined; the message says why."""


@dataclass
class Response:
    e_lo: NDArray
    e_hi: NDArray
    matrix: NDArray  # (n_energy, n_channel), effective area included when an ARF was given
    first_channel: int
    ebounds: fits.BinTableHDU


def _matrix_hdu(hdul: fits.HDUList) -> fits.BinTableHDU:
    for name in ("MATRIX", "SPECRESP MATRIX"):
        if name in hdul:
            return hdul[name]
    raise ResponseMismatch("no MATRIX or SPECRESP MATRIX table in the RMF")


def read_response(rmf_path: Path, arf_path: Path | None) -> Response:
    """The dense response (RMF rows times the ARF's effective area when an ARF is given)."""
    with fits.open(rmf_path) as rmf:
        mhdu = _matrix_hdu(rmf)
        ebounds = fits.BinTableHDU(rmf["EBOUNDS"].data.copy(), rmf["EBOUNDS"].header.copy())
        n_chan = int(ebounds.header["DETCHANS"])
        col = mhdu.columns.names.index("F_CHAN") + 1
        first = int(mhdu.header.get(f"TLMIN{col}", ebounds.data["CHANNEL"][0]))
        d = mhdu.data
        matrix = np.zeros((len(d), n_chan), dtype=np.float64)
        for i, row in enumerate(d):
            values = np.asarray(row["MATRIX"], dtype=np.float64).ravel()
            k = 0
            for f, n in zip(
                np.atleast_1d(row["F_CHAN"]), np.atleast_1d(row["N_CHAN"]), strict=True
            ):
                f, n = int(f) - first, int(n)
                matrix[i, f : f + n] = values[k : k + n]
                k += n
        e_lo = np.asarray(d["ENERG_LO"], np.float64)
        e_hi = np.asarray(d["ENERG_HI"], np.float64)
    if arf_path is not None:
        with fits.open(arf_path) as arf:
            a = arf["SPECRESP"].data
            if len(a) != len(e_lo) or not np.allclose(a["ENERG_LO"], e_lo, rtol=1e-5):
                raise ResponseMismatch(f"{arf_path.name}: its energy grid is not its RMF's")
            matrix *= np.asarray(a["SPECRESP"], np.float64)[:, None]
    return Response(e_lo, e_hi, matrix, first, ebounds)


def combine(parts: list[tuple[Path, Path | None, float]]) -> Response:
    """``sum_i (t_i/T) A_i R_i`` of ``(rmf, arf, exposure)`` parts on one grid."""
    total = sum(t for *_, t in parts)
    if total <= 0:
        raise ResponseMismatch("the spectra have no exposure")
    out: Response | None = None
    for rmf, arf, t in parts:
        r = read_response(rmf, arf)
        if out is None:
            out = Response(r.e_lo, r.e_hi, r.matrix * (t / total), r.first_channel, r.ebounds)
            continue
        if r.matrix.shape != out.matrix.shape or not np.allclose(r.e_lo, out.e_lo, rtol=1e-5):
            raise ResponseMismatch(
                f"{rmf.name} is on another energy or channel grid than {parts[0][0].name}"
            )
        out.matrix += r.matrix * (t / total)
    assert out is not None
    return out


def write_rsp(path: Path, rsp: Response, keywords: dict, full: bool = True) -> None:
    """Write the response: SPECRESP MATRIX (``full``: the area included, HDUCLAS3 'FULL'; else
    an RMF, 'DETECTOR') and EBOUNDS."""
    f_chan, n_chan, rows = [], [], []
    for row in rsp.matrix:
        nz = np.flatnonzero(row)
        if len(nz) == 0:
            f_chan.append(rsp.first_channel)
            n_chan.append(0)
            rows.append(np.zeros(0, np.float32))
            continue
        lo, hi = int(nz[0]), int(nz[-1])
        f_chan.append(lo + rsp.first_channel)
        n_chan.append(hi - lo + 1)
        rows.append(row[lo : hi + 1].astype(np.float32))
    n_chans = int(rsp.ebounds.header["DETCHANS"])
    matrix = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ENERG_LO", format="E", unit="keV", array=rsp.e_lo),
            fits.Column(name="ENERG_HI", format="E", unit="keV", array=rsp.e_hi),
            fits.Column(name="N_GRP", format="I", array=np.ones(len(rows), np.int16)),
            fits.Column(name="F_CHAN", format="J", array=np.asarray(f_chan, np.int32)),
            fits.Column(name="N_CHAN", format="J", array=np.asarray(n_chan, np.int32)),
            fits.Column(name="MATRIX", format="PE()", unit="cm**2" if full else "", array=rows),
        ],
        name="SPECRESP MATRIX",
    )
    h = matrix.header
    h["TLMIN4"] = (rsp.first_channel, "first channel")
    h["TLMAX4"] = (rsp.first_channel + n_chans - 1, "last channel")
    for key in ("TELESCOP", "INSTRUME", "FILTER"):
        if key in keywords:
            h[key] = keywords[key]
    h["CHANTYPE"] = "PI"
    h["DETCHANS"] = n_chans
    h["HDUCLASS"] = "OGIP"
    h["HDUCLAS1"] = "RESPONSE"
    h["HDUCLAS2"] = "RSP_MATRIX"
    h["HDUCLAS3"] = (
        ("FULL", "effective area included (RMF x ARF)") if full else ("DETECTOR", "no area")
    )
    h["HDUVERS"] = "1.3.0"
    h["LO_THRES"] = 0.0
    ebounds = fits.BinTableHDU(rsp.ebounds.data, rsp.ebounds.header, name="EBOUNDS")
    fits.HDUList([fits.PrimaryHDU(), matrix, ebounds]).writeto(path, overwrite=True, checksum=True)
