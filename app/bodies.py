"""What a request sends, parsed within the limits of ``indexer.limits`` before any work is done.

- ``parse_json(data)``: a JSON body. Its nesting and its number of values are counted on the raw
  bytes (numpy, linear) before ``json`` builds anything, so 5,000 nested brackets cost
  microseconds, not a RecursionError, and no body makes the parser build more than
  ``MAX_JSON_ITEMS`` objects; control characters (escaped or raw) are refused on the raw bytes too; number
  literals go through parser hooks that refuse long ones, ``NaN``/``Infinity``, integers over
  ``MAX_NUMBER_MAGNITUDE`` and floats that overflow to infinity as the parser meets them.
- ``one_line(value, name)``: a one-line text field (a title): text, short, no control character.
- ``byte_offset(raw, name)``: a ``?offset=`` style argument: ASCII digits only.

Every refusal is an :class:`InputError` whose message is for the user; the views answer 400.
``JSONProvider`` puts ``parse_json`` behind Flask's ``request.get_json`` for any other caller.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
from flask.json.provider import DefaultJSONProvider

from indexer.limits import (
    MAX_JSON_DEPTH,
    MAX_JSON_ITEMS,
    MAX_NUMBER_CHARS,
    MAX_NUMBER_MAGNITUDE,
    MAX_OFFSET_DIGITS,
    MAX_TITLE_CHARS,
)


class InputError(ValueError):
    """A request part that cannot be used; ``str(exc)`` says why, in one line, for the user."""


# A JSON escape is real when an even number of backslashes precede its own backslash.
_ESCAPE = rb"(?<!\\)(?:\\\\)*\\"
#: Control characters (Unicode category Cc) but tab and line ends, escaped or raw (C0 controls
#: cannot be raw inside JSON strings: ``json`` refuses them itself).
_JSON_CONTROL = re.compile(
    _ESCAPE + rb"(?:[bf]|u00(?:0[0-8bcef]|1[0-9a-f]|7f|[89][0-9a-f]))|\x7f|\xc2[\x80-\x9f]",
    re.IGNORECASE,
)
_STEP = np.zeros(256, dtype=np.int8)  # +1 opens an array or object, -1 closes one
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")


def json_shape(data: bytes) -> tuple[int, int]:
    """``(depth, items)`` of JSON text (UTF-8 bytes), counted on the bytes: the deepest nesting
    of arrays and objects, and an upper bound of the number of values (array elements and object
    members: commas and opening brackets, plus one), brackets and commas inside strings not
    counted. Linear and vectorised (a few ms for ``MAX_BODY_BYTES``); exact for valid JSON, and
    for invalid JSON never below what the parser meets before it stops."""
    raw = np.frombuffer(data, dtype=np.uint8)
    step = _STEP[raw]
    comma = raw == _COMMA
    quotes = np.flatnonzero(raw == _QUOTE).astype(np.int32)
    if len(quotes):
        # a quote is escaped when an odd number of backslashes run up to it
        positions = np.arange(len(raw), dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(raw == _BACKSLASH, np.int32(-1), positions))
        before = np.maximum(quotes - 1, 0)
        run = np.where(quotes > 0, before - last_other[before], 0)
        real = quotes[run % 2 == 0]
        # inside a string: an odd number of real quotes before the position
        toggles = np.zeros(len(raw), dtype=np.int8)
        toggles[real[real + 1 < len(raw)] + 1] = 1
        inside = np.bitwise_xor.accumulate(toggles).astype(bool)
        step = np.where(inside, np.int8(0), step)
        comma &= ~inside
    depth = int(np.cumsum(step, dtype=np.int32).max(initial=0))
    items = int(np.count_nonzero(step > 0)) + int(np.count_nonzero(comma)) + 1
    return depth, items


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise InputError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = int(text)
    if abs(value) > MAX_NUMBER_MAGNITUDE:
        raise InputError(f"the number {text} is larger than {MAX_NUMBER_MAGNITUDE:.3g}")
    return value


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise InputError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"the number {text} is too large: it is infinite as a float")
    return value


def _parse_constant(name: str) -> Any:
    raise InputError(f"{name} is not JSON: numbers must be finite")


def parse_json(data: bytes | str, refuse_controls: bool = True) -> Any:
    """The value of a JSON text (UTF-8), or :class:`InputError` saying what is wrong with it.

    ``refuse_controls=False`` keeps the bounds but lets control characters through (for JSON
    the app made itself, such as the signed session cookie: its flashed messages may quote one).
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, which json.loads refuses
        data = data[3:]
    depth, items = json_shape(data)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"the JSON is nested {depth} deep (max {MAX_JSON_DEPTH})")
    if items > MAX_JSON_ITEMS:
        raise InputError(f"the JSON holds about {items} values (max {MAX_JSON_ITEMS})")
    control = _JSON_CONTROL.search(data) if refuse_controls else None
    if control:
        raise InputError(
            f"control character in the JSON at byte {control.start() + 1}: "
            "text fields must not hold control characters (but tab and line ends)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the body is not UTF-8 text (byte {exc.start + 1})") from None
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except InputError:
        raise
    except ValueError as exc:  # json.JSONDecodeError, int() of a bad literal
        raise InputError(f"the body is not valid JSON: {exc}") from None


_LINE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(value: Any, name: str, max_chars: int = MAX_TITLE_CHARS) -> str:
    """A one-line text field: a string of at most ``max_chars`` characters without control
    characters, line or paragraph separators, or lone surrogates."""
    if not isinstance(value, str) or len(value) > max_chars:
        raise InputError(f"'{name}' must be text of at most {max_chars} characters")
    bad = _LINE_FORBIDDEN.search(value)
    if bad:
        raise InputError(
            f"'{name}' must be one line of text: it holds U+{ord(bad.group()):04X} "
            f"at character {bad.start() + 1}"
        )
    return value


_DIGITS = re.compile(f"[0-9]{{1,{MAX_OFFSET_DIGITS}}}")


def byte_offset(raw: str, name: str) -> int:
    """A byte offset given as text: ASCII digits only (``str.isdigit`` also takes '²' and '٣',
    which ``int`` then refuses or reads), at most ``MAX_OFFSET_DIGITS`` of them."""
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw):
        raise InputError(f"{name} must be a whole number of bytes >= 0 (digits 0-9)")
    return int(raw)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON with bounded parsing: ``request.get_json`` refuses deep nesting, too many
    values and huge numbers the way :func:`parse_json` does. Control characters are left to
    ``json_body`` (Flask reads the session cookie through this provider too)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s, refuse_controls=False)
