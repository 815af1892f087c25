"""Shared Chandra ACIS science code for Regio's processing scripts (level-2 event lists).

It builds on the instrument-neutral parts of :mod:`xmm` (streaming event reader, GTI arithmetic,
region masks, live areas, OGIP writers, light curves, images, previews, provenance) and takes the
ACIS constants (grades, status filter, PI channels, sky pixel) from
``indexer.instruments.chandra_acis``, so the index and the scripts agree.

Modules:

- :mod:`chandra.events`   ACIS level-2 event lists: headers, per-chip GTI and dead-time correction
- :mod:`chandra.pipeline` one pass over a list: standard filters, regions, chip outlines, exposure
- :mod:`chandra.spectra`  OGIP PHA files as CIAO ``dmextract`` writes them (PI 1..1024, BACKSCAL)
"""
