"""Regio indexer: archive files -> index (SQLite metadata, per-exposure MOCs, MOC set).

Sub-modules (one noun each):

- ``instruments``: the instrument registry, one module per instrument (recognise a file from its
  headers, describe it, draw its footprint, its cameras).
- ``footprint``: any archive file -> metadata row + MOC, through the registry.
- ``store``: the index database (``migrations``: the SQLite migration helper it shares with the
  app's stores); ``mocset``: the MOC set; ``build``: incremental builds;
  ``index``: queries (``Index.load``).
- ``shapes``: sky regions (DS9 strings) -> ``regions`` objects -> MOCs.
- ``hips``: the archive's sky image for the viewer.

The demo archive and synthetic catalogues are made by the separate ``demo`` package (the
``sample`` and ``synth-catalog`` commands of ``python -m indexer`` load it when called).
"""

__version__ = "0.1.0"
