"""Benchmark of the long-slit reduction (``scripts/reduce_longslit.py``) on the real Kast night.

``kast_seconds``: wall-clock seconds of one whole run by hand (``python
scripts/reduce_longslit.py input.json``) on the science frame b27 with everything it needs
(master bias of 3, normalised flat of 3, the arc, the standard b24 reduced for the flux
calibration, products and QA plots). Lower is better; goal < 60 on a 2-core machine.

``kast_vs_python``: that time divided by the time of a reference measured in the same run: a
Python that imports numpy, astropy and scipy, reads every frame of the night with astropy and
sums it (start-up and I/O, which no reduction avoids). Lower is better; it says how much of
the run is reduction rather than machine.

The frames are ``../shared/data/longslit/kast_blue_2015-05-20`` (read-only: the script only
reads them). Run: ``.venv/bin/python bench/longslit.py``; the last line is ``RESULT ...``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIGHT = ROOT.parent / "shared" / "data" / "longslit" / "kast_blue_2015-05-20"

REFERENCE = """
import sys
import numpy as np, scipy, astropy
from astropy.io import fits
total = 0.0
for name in sys.argv[1:]:
    total += float(np.sum(fits.getdata(name).astype(float)))
print(total)
"""


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    if not NIGHT.is_dir():
        print(f"the Kast night is not at {NIGHT}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        inp = {
            "run_id": "bench",
            "script": {"name": "reduce_longslit", "version": "1.0"},
            "params": {},
            "observations": [{"obsid": "b27", "path": str(NIGHT / "b27.fits.gz")}],
            "output_dir": str(run_dir / "output"),
        }
        (run_dir / "input.json").write_text(json.dumps(inp))
        frames = [str(p) for p in sorted(NIGHT.glob("b*.fits.gz"))]
        reference = timed([sys.executable, "-c", REFERENCE, *frames], run_dir)
        seconds = timed(
            [sys.executable, str(ROOT / "scripts" / "reduce_longslit.py"), "input.json"], run_dir
        )
    print(f"reference (start-up and reading the night): {reference:.1f} s")
    print(f"whole Kast reduction of b27: {seconds:.1f} s (goal < 60 s)")
    print(f"RESULT kast_seconds={seconds:.1f} kast_vs_python={seconds / reference:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
