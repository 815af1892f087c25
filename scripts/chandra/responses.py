"""ACIS responses: CIAO ``specextract`` makes the RMF and ARF when CIAO is installed.

When the worker has CIAO (``ASCDS_INSTALL`` set, ``specextract`` on the ``PATH``), each source
spectrum gets its responses as the CIAO spectral thread makes them, from the same event list and
source region (written as a DS9 ``physical`` region file next to the spectrum)::

    specextract infile="EVT[sky=region(STEM_src.reg)]" outroot=STEM_ciao weight=no
                correctpsf=yes bkgresp=no grouptype=NONE binspec=NONE clobber=yes

(extended sources: ``weight=yes correctpsf=no``). RESPFILE names ``STEM_ciao.rmf``, ANCRFILE
``STEM_ciao.corr.arf`` (point source, aperture-corrected) or ``STEM_ciao.arf``. Without CIAO
both stay 'NONE' and the log says why: ACIS responses depend on the observation, the chip and
the date, so there is no canned library to fall back on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from xmm.responses import ResponseChoice, set_response_keywords
from xmm.selection import Region


def ciao_missing() -> str | None:
    """Why CIAO cannot make responses on this worker (None: it can)."""
    if not os.environ.get("ASCDS_INSTALL"):
        return "CIAO is not initialised on this worker (no ASCDS_INSTALL)"
    if shutil.which("specextract") is None:
        return "CIAO's specextract is not on the PATH"
    return None


def specextract_command(event_list: str, region_file: str, outroot: str, extended: bool) -> list:
    return [
        "specextract", f"infile={event_list}[sky=region({region_file})]", f"outroot={outroot}",
        "weight=yes" if extended else "weight=no",
        "correctpsf=no" if extended else "correctpsf=yes",
        "bkgresp=no", "grouptype=NONE", "binspec=NONE", "clobber=yes",
    ]  # fmt: skip


def choose(
    output_dir: Path,
    spectrum: str,
    event_list: str,
    region: Region,
    extended: bool,
    log: Callable[[str], None],
) -> ResponseChoice:
    """Make the responses of one written ACIS source spectrum with specextract, or say why not."""
    missing = ciao_missing()
    stem = spectrum.rsplit(".", 1)[0]
    choice = ResponseChoice(reason=f"{missing}; no canned ACIS responses exist")
    if missing is None:
        region_file = f"{stem}.reg"
        (output_dir / region_file).write_text(region.ds9(), encoding="utf-8")
        outroot = f"{stem}_ciao"
        cmd = specextract_command(event_list, region_file, outroot, extended)
        log(f"{spectrum}: " + " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=output_dir, capture_output=True, text=True, timeout=3600)
            ok = proc.returncode == 0
            detail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, detail = False, str(exc)
        rmf = f"{outroot}.rmf"
        arfs = [a for a in (f"{outroot}.corr.arf", f"{outroot}.arf") if (output_dir / a).is_file()]
        if ok and (output_dir / rmf).is_file() and arfs:
            choice = ResponseChoice(rmf, arfs[0], "ciao", "made by CIAO specextract")
        else:
            choice = ResponseChoice(reason=f"specextract failed: {detail or 'no RMF/ARF written'}")
    set_response_keywords(output_dir / spectrum, choice.respfile, choice.ancrfile)
    return choice
