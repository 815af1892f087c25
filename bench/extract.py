"""Benchmark of the science extraction (``scripts/xmm``), against references measured in the same run.

``extract_vs_numpy``: events per second of the streaming extraction (``xmm.pipeline``: chunked
read of the gzip event list, standard filters, flare curve, circle selection, CCD geometry, live
area and exposure, spectrum histogram) divided by those of a plain-numpy pipeline (astropy reads
every column of the list, standard filters, the same circle, ``np.histogram`` of PI). Higher is
better; goal >= 0.8.

``polygon_vs_path``: speed of ``xmm.selection`` on a 12-vertex polygon over every event of the
list, divided by that of ``matplotlib.path.Path.contains_points`` on the same points. Higher is
better; goal >= 5.

``bytes_per_event``: peak memory traced (``tracemalloc``) during the streaming extraction,
divided by the number of events in the list. Lower is better; goal <= 100.

The event list is the pn list of ``demo.xmm_epic.generate_archive(observations=1,
events_scale=20)`` in ``bench/out/extract-archive`` (made if absent). Each timing is the best of
``REPEATS``. Run: ``.venv/bin/python bench/extract.py``; the last line is ``RESULT ...``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from astropy.io import fits  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from xmm.events import EventList  # noqa: E402
from xmm.pipeline import Observation  # noqa: E402
from xmm.selection import Circle, Polygon, Region  # noqa: E402
from xmm.spectra import channel_grid  # noqa: E402

OUT = ROOT / "bench" / "out" / "extract-archive"
REPEATS = 3
RADIUS = 1200.0  # sky pixels (1 arcmin)


def event_list() -> Path:
    files = sorted(OUT.glob("*/P*PNS003PIEVLI0000.FTZ"))
    if not files:
        from demo.xmm_epic import generate_archive

        print(f"making the benchmark event list in {OUT} (one observation, events_scale=20) ...")
        generate_archive(OUT, observations=1, seed=7, events_scale=20)
        files = sorted(OUT.glob("*/P*PNS003PIEVLI0000.FTZ"))
    return files[0]


def centre(path: Path) -> tuple[float, float]:
    """A bright spot: the median position of the events (near the aim point)."""
    ev = EventList(path)
    for rec in ev.record_chunks(200_000):
        return float(np.median(ev.column(rec, "X"))), float(np.median(ev.column(rec, "Y")))
    raise SystemExit("empty event list")


def reference(path: Path, x0: float, y0: float) -> int:
    """Plain numpy: read all columns, standard pn filters, circle, histogram of PI."""
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        cols = {name: np.asarray(d[name]) for name in d.columns.names}
    ok = (cols["FLAG"] == 0) & (cols["PATTERN"] <= 4)
    ok &= (cols["X"] - x0) ** 2 + (cols["Y"] - y0) ** 2 <= RADIUS**2
    counts, _ = np.histogram(cols["PI"][ok], bins=np.arange(0, 20481, 5))
    return int(counts.sum())


def ours(path: Path, x0: float, y0: float) -> int:
    obs = Observation({}, EventList(path), {"source": Region([Circle(True, x0, y0, RADIUS)])})
    obs.read()
    obs.screen(False)
    obs.extract()
    counts = channel_grid("EPN").histogram(obs.selected["source"].pi)
    assert obs.exposure("source") > 0
    return int(counts.sum())


def best_time(fn, *args) -> tuple[float, object]:
    best, result = np.inf, None
    for _ in range(REPEATS):
        t = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    path = event_list()
    n_events = int(fits.getheader(path, "EVENTS")["NAXIS2"])
    x0, y0 = centre(path)
    print(f"event list {path.name}: {n_events:,} events")

    t_ref, n_ref = best_time(reference, path, x0, y0)
    t_ours, n_ours = best_time(ours, path, x0, y0)
    print(
        f"counts in the circle: reference {n_ref}, ours {n_ours} (events outside good time dropped)"
    )
    extract_ratio = t_ref / t_ours
    print(
        f"extraction: ours {n_events / t_ours / 1e6:.2f} M events/s, plain numpy "
        f"{n_events / t_ref / 1e6:.2f} M events/s -> {extract_ratio:.2f}x (higher is better, goal >= 0.8)"
    )

    with fits.open(path) as hdul:
        x = np.asarray(hdul["EVENTS"].data["X"], dtype=np.float64)
        y = np.asarray(hdul["EVENTS"].data["Y"], dtype=np.float64)
    angles = np.linspace(0, 2 * np.pi, 13)[:-1]
    radius = np.where(np.arange(12) % 2 == 0, 3000.0, 1500.0)
    vx, vy = x0 + radius * np.cos(angles), y0 + radius * np.sin(angles)
    polygon = Polygon(True, tuple(vx), tuple(vy))
    path_mpl = MplPath(np.column_stack([vx, vy]))
    xy = np.column_stack([x, y])
    t_mpl, in_mpl = best_time(path_mpl.contains_points, xy)
    t_poly, in_poly = best_time(polygon.mask, x, y)
    print(f"polygon: ours {int(in_poly.sum())} events inside, matplotlib {int(in_mpl.sum())}")
    polygon_ratio = t_mpl / t_poly
    print(
        f"polygon selection on {len(x):,} events: ours {t_poly * 1e3:.1f} ms, Path.contains_points "
        f"{t_mpl * 1e3:.1f} ms -> {polygon_ratio:.1f}x (higher is better, goal >= 5)"
    )
    del x, y, xy

    tracemalloc.start()
    ours(path, x0, y0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_event = peak / n_events
    print(
        f"peak traced memory of the extraction: {peak / 1e6:.1f} MB for {n_events:,} events -> "
        f"{per_event:.1f} bytes/event (lower is better, goal <= 100)"
    )
    print(
        f"RESULT extract_vs_numpy={extract_ratio:.2f} polygon_vs_path={polygon_ratio:.1f} "
        f"bytes_per_event={per_event:.1f}"
    )


if __name__ == "__main__":
    main()
