"""Regio indexer: archive of EPIC event lists -> index (SQLite metadata, per-camera MOCs, MOC set).

Sub-modules (one noun each):

- ``geometry``: EPIC camera CCD layouts (focal plane -> sky for a pointing and roll).
- ``sample``: synthetic XMM-Newton EPIC archive generator (``python -m indexer sample``).
- ``shapes``: sky regions (DS9 strings) -> ``regions`` objects -> MOCs.
- the build/query modules: scanning, footprints, the MOC set and region queries.
"""

__version__ = "0.1.0"
