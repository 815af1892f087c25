"""Every limit on what Regio accepts from outside, in one place, each with its reason.

The indexer CLI and the web service share the region limits; the service adds those of HTTP
requests. They are checked before any costly object exists: DS9 text is scanned before the
``regions`` parser runs (``indexer.shapes``), viewer JSON shapes are counted before a sky
coordinate is built (``app.shapes``), and a JSON body's nesting, numbers and control characters
are checked before or while ``json`` builds it (``app.bodies``). Whatever passes them is cheap
to refuse later: a refused request costs well under 0.1 s of CPU (``bench/hostile.py``).

Limits owned by the modules they belong to: ``app.sessions.MAX_SELECTION`` (exposures in a
selection), ``app.catalog.MAX_STRING_PARAM`` (a script's text parameter), the e-mail, name and
password lengths of ``app.accounts``.

Nothing here imports anything: any module may import it.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------ regions

#: Most shapes in one region (DS9 or viewer JSON). Each shape costs a MOC and a sky coordinate
#: transformation in every query; a hundred covers any hand-made region with its exclusions.
MAX_SHAPES: int = 100

#: Most vertices in one polygon. Far beyond a hand-drawn polygon; a contour with more points
#: should be simplified first.
MAX_POLYGON_VERTICES: int = 1_000

#: Most polygon vertices in one region, all polygons together. The DS9 parser of ``regions``
#: costs ~40 us per vertex and a vertex takes ~25 characters of DS9 text, so every region that
#: passes stays quick to parse (< 0.05 s) and its DS9 text (written with ``to_ds9`` and parsed
#: again when stored) stays far under ``MAX_TEXT_CHARS``.
MAX_REGION_VERTICES: int = 1_000

#: Longest outline of a region, all shapes together, in cells of the MOC it is turned into (the
#: index depth for large shapes, 25.8" at order 13). mocpy costs ~1 us per outline cell, so a
#: region over it would cost more than ~30 ms before its coverage is known (and before a region
#: whose exclusions remove all of it can be told so). One circle of up to ~30 deg radius fits.
MAX_MOC_OUTLINE_CELLS: int = 25_000

#: Longest DS9 region text [characters]: ``MAX_SHAPES`` shapes and ``MAX_REGION_VERTICES``
#: vertices, with comments, fit in half of it.
MAX_TEXT_CHARS: int = 100_000

#: Most lines and ``;``-separated statements in DS9 text. A region file has a header line or
#: two, then a frame, a shape and maybe a ``global`` line per shape: ``MAX_SHAPES`` shapes fit
#: three times over. The ``regions`` parser loops over them in Python (~2 us each).
MAX_DS9_STATEMENTS: int = 1_000

#: Largest DS9 region file in a multipart upload [bytes]: ``MAX_TEXT_CHARS`` characters with
#: room for some multi-byte UTF-8 characters in comments; a larger file is refused unread (413).
MAX_REGION_FILE_BYTES: int = 128 * 1024

# ------------------------------------------------------------------------------------ numbers

#: Longest number literal (JSON or DS9) [characters]. A float64 is written exactly in 24
#: (17 significant digits, sign, point, exponent); longer integer literals cost time quadratic
#: in their length to convert, and overflow a float (``10**400`` as a coordinate).
MAX_NUMBER_CHARS: int = 40

#: Largest absolute value of an integer in a JSON body, and of any number given as a sky
#: position or size: 2**53, beyond which integers are no longer exact as float64 or in the
#: page's JavaScript (and ``10**400`` overflows a float). Other floats need only be finite (a
#: script parameter may be a column density of 1e22 cm^-2): a float literal beyond ~1.8e308
#: reads as infinity and is refused when the body is parsed.
MAX_NUMBER_MAGNITUDE: int = 2**53

# ------------------------------------------------------------------------------ HTTP requests

#: Largest request body [bytes]; Werkzeug answers 413 before reading more. The largest useful
#: bodies are two DS9 texts of ``MAX_TEXT_CHARS`` as JSON strings (~0.2 MB with their escapes)
#: or two region files of ``MAX_REGION_FILE_BYTES`` in a multipart form. Every byte is scanned
#: a few times (nesting, control characters, UTF-8) before parsing.
MAX_BODY_BYTES: int = 512 * 1024

#: Deepest nesting of arrays and objects in a JSON body. The deepest useful body is 5 levels
#: (``{"source": [{"vertices": [[ra, dec], ...]}]}``); Python's parser recurses once per level
#: and fails with a RecursionError (a 500) near a thousand.
MAX_JSON_DEPTH: int = 16

#: Most values (array elements and object members) in a JSON body. The largest useful body, a
#: source and a background region of viewer shapes at the limits above, has ~8,000. Parsing
#: costs ~0.2 us per value, but every container the parser builds also feeds Python's cyclic
#: garbage collector: 130,000 small arrays cost ~70 ms of CPU where 20,000 cost ~3 ms.
MAX_JSON_ITEMS: int = 20_000

#: Most parts of a multipart form: the largest form, a region upload, has three (source and
#: background files, title); Werkzeug answers 413 beyond.
MAX_FORM_PARTS: int = 20

#: Longest one-line text a user names things with (a session title) [characters].
MAX_TITLE_CHARS: int = 200

#: Most decimal digits of a byte offset in a query (``?offset=``): 10**15 bytes is a petabyte,
#: far beyond any run log.
MAX_OFFSET_DIGITS: int = 15
