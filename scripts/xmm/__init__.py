"""Shared XMM-Newton EPIC science code for Regio's processing scripts.

Modules (no imports from the web app or the indexer, so a script runs anywhere the repository is):

- :mod:`xmm.events`      event lists: headers, per-CCD good time / live time / bad pixels, chunked rows
- :mod:`xmm.gti`         good-time-interval arithmetic
- :mod:`xmm.selection`   DS9 ``physical`` regions and fast vectorised masks in sky pixels
- :mod:`xmm.flares`      soft-proton flare screening from the high-energy rate
- :mod:`xmm.footprint`   per-CCD footprints from the events; live area of a region (BACKSCAL)
- :mod:`xmm.pipeline`    one pass over an event list: filters, regions, flares, exposure
- :mod:`xmm.spectra`     OGIP PHA files with SAS data-subspace keywords, grouping, combining
- :mod:`xmm.lightcurves` OGIP light curves (RATE + GTI)
- :mod:`xmm.images`      counts images with a sky WCS
- :mod:`xmm.provenance`  provenance keywords and ``provenance.json``
- :mod:`xmm.previews`    PNG previews (matplotlib Agg)
- :mod:`xmm.products`    the write / preview stages and product descriptions every script shares

Much of it is instrument-neutral and serves the Chandra ACIS scripts too (``scripts/chandra``):
the streaming reader (:class:`xmm.events.EventTable`), GTI arithmetic, region masks, live areas
(:func:`xmm.footprint.live_area`, :class:`xmm.footprint.CcdGeometry`), the observation base
(:class:`xmm.pipeline.EventObservation`) and stages (:func:`xmm.run.prepare`), the OGIP writers
(:func:`xmm.spectra.spectrum_hdu`, :func:`xmm.lightcurves.write_lightcurve`), images, previews,
provenance and :mod:`xmm.products`.
"""
