"""Good time intervals (GTIs): ``(n, 2)`` float arrays of ``[start, stop]`` in seconds (MET).

All functions return sorted, non-overlapping intervals with ``stop > start``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

GTI = NDArray[np.float64]


def as_gti(intervals: ArrayLike) -> GTI:
    """Normalise to a sorted, merged ``(n, 2)`` array (touching intervals are merged)."""
    arr = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    arr = arr[arr[:, 1] > arr[:, 0]]
    if len(arr) == 0:
        return np.zeros((0, 2))
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    # merge: an interval starts a new block when it begins after every earlier stop
    run_max = np.maximum.accumulate(arr[:, 1])
    new_block = np.r_[True, arr[1:, 0] > run_max[:-1]]
    starts = arr[new_block, 0]
    block_id = np.cumsum(new_block) - 1
    stops = np.zeros(len(starts))
    np.maximum.at(stops, block_id, arr[:, 1])
    return np.column_stack([starts, stops])


def total(gti: GTI) -> float:
    """Total good time [s]."""
    return float(np.sum(gti[:, 1] - gti[:, 0])) if len(gti) else 0.0


def intersect(a: GTI, b: GTI) -> GTI:
    """Time that is good in both ``a`` and ``b``."""
    a, b = as_gti(a), as_gti(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2))
    # every pair that overlaps: for each interval of a, the range of b intervals it may touch
    lo = np.searchsorted(b[:, 1], a[:, 0], side="right")
    hi = np.searchsorted(b[:, 0], a[:, 1], side="left")
    counts = np.maximum(hi - lo, 0)
    ia = np.repeat(np.arange(len(a)), counts)
    first = np.cumsum(counts) - counts  # position of each a-interval's first pair
    ib = np.arange(int(counts.sum())) - np.repeat(first - lo, counts)
    out = np.column_stack([np.maximum(a[ia, 0], b[ib, 0]), np.minimum(a[ia, 1], b[ib, 1])])
    return as_gti(out)


def union(*gtis: GTI) -> GTI:
    """Time that is good in any of the GTIs."""
    parts = [np.asarray(g, dtype=float).reshape(-1, 2) for g in gtis]
    return as_gti(np.concatenate(parts) if parts else np.zeros((0, 2)))


def contains(gti: GTI, times: ArrayLike, closed: bool = False) -> NDArray[np.bool_]:
    """Whether each time lies in a good interval (``start <= t < stop``; ``t <= stop`` when
    ``closed``, as CIAO's range filters ``time=start:stop`` include both ends)."""
    t = np.asarray(times, dtype=np.float64)
    if len(gti) == 0:
        return np.zeros(t.shape, dtype=bool)
    k = np.searchsorted(gti[:, 0], t, side="right") - 1
    ok = k >= 0
    ok[ok] = t[ok] <= gti[k[ok], 1] if closed else t[ok] < gti[k[ok], 1]
    return ok


def overlap_with_bins(gti: GTI, edges: ArrayLike) -> NDArray[np.float64]:
    """Good time [s] inside each bin ``[edges[i], edges[i+1])``: exact, via the cumulative good time."""
    e = np.asarray(edges, dtype=np.float64)
    if len(gti) == 0:
        return np.zeros(len(e) - 1)
    cum = np.r_[0.0, np.cumsum(gti[:, 1] - gti[:, 0])]

    def good_before(t: NDArray[np.float64]) -> NDArray[np.float64]:
        k = np.searchsorted(gti[:, 0], t, side="right") - 1
        out = np.zeros_like(t)
        inside = k >= 0
        kk = k[inside]
        out[inside] = cum[kk] + np.minimum(t[inside], gti[kk, 1]) - gti[kk, 0]
        return out

    return np.diff(good_before(e))
