"""Names typed in the page's target box: the archive's object names first, CDS Sesame second.

:func:`resolve` checks the typed name, looks it up among the ``OBJECT`` names of the index
(``indexer.names``, offline) and, only when none matches and the site set ``REGIO_SESAME_URL``,
asks Sesame (``-oxp`` XML answer) with a short timeout. Sesame is off by default: a Regio without
it never touches the network.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from indexer import names

#: Longest name accepted [characters].
MAX_NAME_CHARS: int = 100
#: Seconds Sesame has to answer.
SESAME_TIMEOUT: float = 3.0
#: Largest Sesame answer read [bytes].
SESAME_MAX_BYTES: int = 256 * 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class BadName(ValueError):
    """A name that cannot be looked up (empty, too long, control characters)."""


class UnknownName(LookupError):
    """Neither the archive nor Sesame (when used) knows the name; ``str(exc)`` says so."""


def check_name(text: Any) -> str:
    """The typed name, stripped, or :class:`BadName` with a message for the user."""
    if not isinstance(text, str) or not text.strip():
        raise BadName("give an object name, e.g. ?name=RXCJ0958.3-1103")
    if len(text) > MAX_NAME_CHARS:
        raise BadName(f"the name is too long: {len(text)} characters (max {MAX_NAME_CHARS})")
    bad = _CONTROL.search(text)
    if bad:
        raise BadName(f"control character U+{ord(bad.group()):04X} in the name")
    return " ".join(text.split())


def resolve(settings: Mapping[str, Any], text: Any) -> dict[str, Any]:
    """``{"name", "ra", "dec", "source": "archive" | "sesame", "matches": [...]}`` for a typed
    name (ICRS degrees). Raises :class:`BadName` for bad input, :class:`UnknownName` when
    nothing matches, ``FileNotFoundError`` when there is no index."""
    name = check_name(text)
    found = names.resolve(Path(settings["INDEX"]), name)
    if found:
        best = found[0]
        return {
            "name": best.object,
            "ra": best.ra,
            "dec": best.dec,
            "source": "archive",
            "matches": [match.as_json() for match in found],
        }
    url = settings.get("SESAME_URL") or ""
    if not url:
        raise UnknownName(f"no archived observation has an object named like {name!r}")
    try:
        answer = sesame(url, name, SESAME_TIMEOUT)
    except OSError as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        raise UnknownName(
            f"no archived observation has an object named like {name!r}, and the name "
            f"resolver did not answer ({str(reason)[:80]})"
        ) from None
    if answer is None:
        raise UnknownName(f"neither the archive nor Sesame knows {name!r}")
    return {**answer, "source": "sesame", "matches": [answer | {"exposures": []}]}


def sesame(url: str, name: str, timeout: float) -> dict[str, Any] | None:
    """Ask CDS Sesame at ``url`` (e.g. ``.../nph-sesame/-oxp/SNV``) for ``name``: its first
    resolver's ``{"name", "ra", "dec"}`` [deg], or None when no resolver found it, within
    ``timeout`` seconds. Network errors and timeouts raise ``OSError``; an answer that is not
    Sesame XML gives None."""
    request = urllib.request.Request(
        f"{url}?{urllib.parse.quote(name)}", headers={"User-Agent": "Regio"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (site setting)
        data = response.read(SESAME_MAX_BYTES + 1)
    if len(data) > SESAME_MAX_BYTES:
        return None
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError:
        return None
    for resolver in root.iter("Resolver"):
        ra, dec = resolver.findtext("jradeg"), resolver.findtext("jdedeg")
        try:
            ra_deg, dec_deg = float(ra), float(dec)
        except (TypeError, ValueError):
            continue
        if not (0 <= ra_deg < 360.0 + 1e-9 and -90 <= dec_deg <= 90):
            continue
        oname = " ".join((resolver.findtext("oname") or name).split())
        return {"name": oname, "ra": ra_deg % 360.0, "dec": dec_deg}
    return None
