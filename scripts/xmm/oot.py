"""pn out-of-time (OoT) events: found next to the event list, their scaled spectrum subtracted.

Events arriving while a pn CCD is read out are put at a wrong RAWY: a fraction of every
source's counts is smeared along the readout direction. SAS ``epchain withoutoftime=yes`` makes
a simulated OoT event list of the same exposure; the SAS thread extracts its spectrum with the
same region and filters and subtracts it scaled by the OoT fraction of the mode (XMM-Newton
Users Handbook): full frame 6.3 %, extended full frame 2.32 %, large window 0.16 %, small window
1.1 %.

Finding it: a file in the event list's folder with ``OoT``/``OOEVLI`` in its name (epchain's
``...OoTEvts...``, the PPS ``...OOEVLI...``) whose headers say it is the same exposure: INSTRUME
EPN, the same OBS_ID, EXP_ID (when both give one) and SUBMODE. The subtracted spectrum is no
longer Poisson: COUNTS become real numbers with a STAT_ERR column (POISSERR F),
``sqrt(N + f^2 N_oot)``.
"""

from __future__ import annotations

import re

import numpy as np

from xmm.events import EventList, EventListError

OOT_FRACTION = {
    "PrimeFullWindow": 0.063,
    "PrimeFullWindowExtended": 0.0232,
    "PrimeLargeWindow": 0.0016,
    "PrimeSmallWindow": 0.011,
}
_NAME = re.compile(r"oot|ooevli", re.IGNORECASE)


def find_oot_list(events: EventList) -> tuple[EventList | None, str]:
    """The OoT list of a pn event list (None if the archive has none), and a sentence."""
    if events.camera != "EPN":
        return None, "not a pn list"
    folder = events.path.parent
    for path in sorted(folder.iterdir()):
        if path == events.path or not path.is_file() or not _NAME.search(path.name):
            continue
        try:
            oot = EventList(path)
        except EventListError:
            continue
        same = oot.camera == "EPN" and oot.obsid == events.obsid
        exp_a, exp_b = oot.keyword("EXP_ID"), events.keyword("EXP_ID")
        same &= not (exp_a and exp_b) or str(exp_a) == str(exp_b)
        same &= str(oot.keyword("SUBMODE", "")) == str(events.keyword("SUBMODE", ""))
        if same:
            return oot, f"out-of-time list {path.name}"
    return None, "no out-of-time list of this exposure next to the event list"


def subtract(counts: np.ndarray, oot_counts: np.ndarray, fraction: float):
    """``(counts - f N_oot, sqrt(counts + f^2 N_oot))``."""
    net = counts.astype(np.float64) - fraction * oot_counts
    return net, np.sqrt(counts + fraction**2 * oot_counts).astype(np.float32)
