#!/usr/bin/env python3
"""Reduce optical long-slit frames to calibrated 1-D spectra (see ``reduce_longslit.toml``).

Run by hand: ``python scripts/reduce_longslit.py input.json`` (input layout: ``regio_kit``). The
science lives in ``scripts/longslit``; the spectrographs' profiles in
``indexer/instruments/longslit.py``.
"""

from __future__ import annotations

from longslit.pipeline import run
from regio_kit import main

if __name__ == "__main__":
    main(run)
