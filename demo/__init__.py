"""Demo data: synthetic archives and catalogues, kept apart from the index code.

- ``archive``: the demo archive of every demo instrument (``python -m indexer sample``).
- ``xmm_epic`` (+ ``epic_geometry``): XMM-Newton EPIC event lists with ground truth.
- ``chandra_acis``: Chandra ACIS level-2 event lists with ground truth.
- ``synth``: synthetic index catalogues for scale tests (``python -m indexer synth-catalog``).

The service calls ``demo.archive`` only when no archive is configured; the index never imports
this package.
"""
