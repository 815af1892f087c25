"""Responses (RMF, ARF) of EPIC spectra: made by SAS when it is installed, else a canned RMF.

Order of preference, per source spectrum:

1. **SAS** (the worker has an initialised SAS: ``SAS_DIR`` set, ``rmfgen`` and ``arfgen`` on the
   ``PATH``, ``SAS_CCF`` naming the calibration index): as the SAS spectral threads do,
   ``rmfgen spectrumset=SRC rmfset=SRC.rmf`` then ``arfgen spectrumset=SRC arfset=SRC.arf
   withrmfset=yes rmfset=SRC.rmf badpixlocation=EVENTLIST detmaptype=psf`` (extended sources:
   ``extendedsource=yes detmaptype=flat``). Our spectra carry the SAS data-subspace keywords,
   GTI and REGION tables these tools read. RESPFILE and ANCRFILE name the files made.
2. **A canned RMF** from the site's response library (``REGIO_RESPONSES`` or the script's
   ``response_dir``), chosen *exactly*: instrument, pattern selection, observing mode, epoch and,
   for pn, the RAWY row of the source (see :func:`pick_canned`). The RMF is copied next to the
   spectrum and RESPFILE names the copy; ANCRFILE stays 'NONE' (an ARF depends on the source
   position and extent: only arfgen makes it).
3. Otherwise RESPFILE 'NONE', and the log says why. A wrong response is worse than none: a file
   that does not match every criterion is never named.

Library layout (a flat folder of the XMM-Newton SOC's canned response files, as distributed
on the SOC's "EPIC response files" pages, unmodified and under their own names):

- pn: ``epn_[e<E>_]<mode><thr>_<pat>Y<row>[_v<version>].rmf``, e.g. ``epn_e3_ff20_sdY9_v20.0.rmf``
  or ``epn_ff20_sdY9.rmf``: ``mode`` ff (full frame), ef (extended full frame), lw (large
  window), sw (small window); ``pat`` s (PATTERN==0), d (PATTERN 1-4), sd (PATTERN 0-4),
  t (triples); ``row`` the RAWY row 0-9 of the source (row k = RAWY 20k+1 .. 20k+20; on-axis
  sources are on row 9); ``E`` the calibration epoch (absent: valid at any date).
- MOS: ``m<1|2>_e<E>_<mode>_p<pat>_c.rmf``, e.g. ``m1_e13_im_pall_c.rmf``: ``mode`` im
  (imaging) or ti (timing); ``pat`` 0 (singles) or all (PATTERN 0-12).
- ``epochs.toml`` (needed for files with an epoch): for each camera, the first and last
  DATE-OBS day of each epoch, from the SOC's tables::

      [EMOS1]
      13 = ["2004-01-01", "2005-12-31"]

Our spectra select PATTERN 0-4 (pn, ``sd``) and 0-12 (MOS, ``all``); a doubles-only or
singles-only RMF is never taken for them. The RMF's ``DETCHANS`` must equal the spectrum's
channel count (canned MOS RMFs have 800 channels: extract MOS spectra with ``mos_bin`` 15) and
its ``INSTRUME``, when present, the camera. Among exact matches the highest ``_v`` version wins;
two equal candidates are ambiguous and none is named.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

#: The pattern selection of our spectra, in the canned files' terms.
PATTERN_TAG = {"EPN": "sd", "EMOS1": "all", "EMOS2": "all"}
PN_MODES = {
    "PrimeFullWindow": "ff",
    "PrimeFullWindowExtended": "ef",
    "PrimeLargeWindow": "lw",
    "PrimeSmallWindow": "sw",
}
PN_ROW_HEIGHT = 20  # RAWY rows per canned pn response row
_PN_NAME = re.compile(
    r"^epn_(?:e(?P<epoch>\d+)_)?(?P<mode>ff|ef|lw|sw|ti|bu)(?P<thr>\d+)_(?P<pat>sd|s|d|t)"
    r"Y(?P<row>\d)(?:_v(?P<ver>\d+(?:\.\d+)*))?\.rmf$",
    re.IGNORECASE,
)
_MOS_NAME = re.compile(
    r"^m(?P<cam>[12])_e(?P<epoch>\d+)_(?P<mode>im|ti)_p(?P<pat>all|\d+)_c"
    r"(?:_v(?P<ver>\d+(?:\.\d+)*))?\.rmf$",
    re.IGNORECASE,
)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Needs:
    """What a spectrum needs of a canned RMF."""

    camera: str  # EMOS1, EMOS2, EPN
    submode: str  # SUBMODE of the event list
    datamode: str  # DATAMODE (IMAGING, TIMING)
    date_obs: str  # DATE-OBS (ISO)
    n_channels: int
    rawy: float | None = None  # pn: mean RAWY of the source

    @property
    def mode(self) -> str | None:
        if self.camera == "EPN":
            return PN_MODES.get(self.submode)
        if self.datamode.upper().startswith("IMAG") or self.submode.startswith("Prime"):
            return "im"
        return None

    @property
    def row(self) -> int | None:
        if self.rawy is None:
            return None
        return int(min(9, max(0, (self.rawy - 1) // PN_ROW_HEIGHT)))

    def describe(self) -> str:
        text = f"{self.camera} pattern {PATTERN_TAG[self.camera]}, mode {self.mode}, "
        text += f"DATE-OBS {self.date_obs[:10]}, {self.n_channels} channels"
        if self.camera == "EPN":
            text += f", RAWY {self.rawy:.0f} (row {self.row})" if self.rawy else ", RAWY unknown"
        return text


@dataclass(frozen=True)
class Canned:
    path: Path
    camera: str
    mode: str
    pattern: str
    epoch: int | None
    row: int | None
    version: tuple[int, ...]


def parse_name(path: Path) -> Canned | None:
    """The properties of a canned RMF from its SOC file name (None: not a canned EPIC name)."""
    name = path.name
    m = _PN_NAME.match(name)
    if m:
        return Canned(
            path, "EPN", m["mode"].lower(), m["pat"].lower(),
            int(m["epoch"]) if m["epoch"] else None, int(m["row"]), _version(m["ver"]),
        )  # fmt: skip
    m = _MOS_NAME.match(name)
    if m:
        return Canned(
            path, f"EMOS{m['cam']}", m["mode"].lower(), m["pat"].lower(), int(m["epoch"]),
            None, _version(m["ver"]),
        )  # fmt: skip
    return None


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(".")) if text else ()


def load_epochs(folder: Path) -> dict[str, dict[int, tuple[dt.date, dt.date]]]:
    """``epochs.toml`` of the library: camera -> epoch -> (first day, last day)."""
    path = folder / "epochs.toml"
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[int, tuple[dt.date, dt.date]]] = {}
    for camera, epochs in data.items():
        out[camera] = {
            int(k): (dt.date.fromisoformat(str(v[0])), dt.date.fromisoformat(str(v[1])))
            for k, v in epochs.items()
        }
    return out


def _rmf_header(path: Path) -> tuple[int | None, str | None]:
    """``(DETCHANS, INSTRUME)`` of an RMF (None where absent or unreadable)."""
    try:
        with fits.open(path) as hdul:
            detchans = instrume = None
            for hdu in hdul[1:]:
                h = hdu.header
                detchans = detchans or (int(h["DETCHANS"]) if "DETCHANS" in h else None)
                instrume = instrume or (str(h["INSTRUME"]).strip() if "INSTRUME" in h else None)
            return detchans, instrume
    except (OSError, ValueError, KeyError):
        return None, None


def pick_canned(folder: Path, needs: Needs) -> tuple[Path | None, str]:
    """The one canned RMF of ``folder`` matching ``needs`` exactly, and a sentence saying why
    (or why none): a file is refused unless camera, pattern selection, mode, epoch (DATE-OBS
    within its dates in ``epochs.toml``), pn RAWY row, DETCHANS and INSTRUME all match."""
    if not folder.is_dir():
        return None, f"the response library {folder} is not a folder"
    mode = needs.mode
    if mode is None:
        return None, f"no canned responses for {needs.camera} mode {needs.submode or '?'}"
    if needs.camera == "EPN" and needs.row is None:
        return None, "the source's RAWY is unknown, so no pn row can be chosen"
    epochs = load_epochs(folder).get(needs.camera, {})
    try:
        day = dt.date.fromisoformat(needs.date_obs[:10])
    except ValueError:
        return None, f"DATE-OBS {needs.date_obs!r} is not a date, so no epoch can be chosen"
    refused: list[str] = []
    matches: list[Canned] = []
    for path in sorted(folder.glob("*.rmf")):
        canned = parse_name(path)
        if canned is None or canned.camera != needs.camera:
            continue
        why = []
        if canned.pattern != PATTERN_TAG[needs.camera]:
            why.append(f"pattern {canned.pattern} != {PATTERN_TAG[needs.camera]}")
        if canned.mode != mode:
            why.append(f"mode {canned.mode} != {mode}")
        if needs.camera == "EPN" and canned.row != needs.row:
            why.append(f"row {canned.row} != {needs.row}")
        if canned.epoch is not None:
            span = epochs.get(canned.epoch)
            if span is None:
                why.append(f"epoch {canned.epoch} not in epochs.toml")
            elif not span[0] <= day <= span[1]:
                why.append(f"epoch {canned.epoch} is {span[0]}..{span[1]}")
        if not why:
            detchans, instrume = _rmf_header(path)
            if detchans != needs.n_channels:
                why.append(f"DETCHANS {detchans} != {needs.n_channels}")
            if instrume and instrume != needs.camera:
                why.append(f"INSTRUME {instrume}")
        if why:
            refused.append(f"{path.name} ({', '.join(why)})")
        else:
            matches.append(canned)
    if not matches:
        text = f"no canned RMF in {folder} fits ({needs.describe()})"
        return None, text + (": " + "; ".join(refused) if refused else ": no such file")
    matches.sort(key=lambda c: c.version)
    best = matches[-1]
    if len(matches) > 1 and matches[-2].version == best.version:
        names = ", ".join(c.path.name for c in matches if c.version == best.version)
        return None, f"the canned RMFs {names} fit equally well: none is named (ambiguous)"
    return best.path, f"canned RMF {best.path.name} ({needs.describe()})"


# --- SAS -------------------------------------------------------------------------------------


def sas_missing() -> str | None:
    """Why SAS cannot make responses on this worker (None: it can)."""
    if not os.environ.get("SAS_DIR"):
        return "SAS is not initialised on this worker (no SAS_DIR)"
    for tool in ("rmfgen", "arfgen"):
        if shutil.which(tool) is None:
            return f"SAS's {tool} is not on the PATH"
    if not os.environ.get("SAS_CCF"):
        return "SAS_CCF is not set (cifbuild's calibration index is needed by rmfgen/arfgen)"
    return None


def sas_commands(spectrum: str, event_list: str, extended: bool) -> list[list[str]]:
    """The rmfgen and arfgen command lines of the SAS spectral thread for ``spectrum``."""
    stem = spectrum.rsplit(".", 1)[0]
    arf = [
        "arfgen", f"spectrumset={spectrum}", f"arfset={stem}.arf", "withrmfset=yes",
        f"rmfset={stem}.rmf", f"badpixlocation={event_list}",
    ]  # fmt: skip
    arf += ["extendedsource=yes", "detmaptype=flat"] if extended else ["detmaptype=psf"]
    return [["rmfgen", f"spectrumset={spectrum}", f"rmfset={stem}.rmf"], arf]


def run_sas(
    output_dir: Path, spectrum: str, event_list: str, extended: bool, log: Log
) -> tuple[str, str] | None:
    """Run rmfgen and arfgen in ``output_dir``; ``(rmf, arf)`` file names, or None on failure."""
    for cmd in sas_commands(spectrum, event_list, extended):
        log(f"{spectrum}: " + " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=output_dir, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"[WARNING] {spectrum}: {cmd[0]} could not run: {exc}")
            return None
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            log(f"[WARNING] {spectrum}: {cmd[0]} failed (exit {proc.returncode}): {tail}")
            return None
    stem = spectrum.rsplit(".", 1)[0]
    rmf, arf = f"{stem}.rmf", f"{stem}.arf"
    for name in (rmf, arf):
        if not (output_dir / name).is_file():
            log(f"[WARNING] {spectrum}: SAS ran but {name} was not written")
            return None
    return rmf, arf


# --- naming the responses in a spectrum --------------------------------------------------------


def set_response_keywords(path: Path, respfile: str, ancrfile: str) -> None:
    """Write RESPFILE/ANCRFILE into the SPECTRUM header of ``path`` (checksums renewed)."""
    with fits.open(path, mode="update") as hdul:
        h = hdul["SPECTRUM"].header
        h["RESPFILE"] = respfile
        h["ANCRFILE"] = ancrfile
        hdul["SPECTRUM"].add_checksum()


def copy_into(output_dir: Path, rmf: Path) -> str:
    """Copy a library file next to the spectra (once); returns its name there."""
    target = output_dir / rmf.name
    if not target.exists():
        shutil.copyfile(rmf, target)
    return rmf.name


@dataclass
class ResponseChoice:
    respfile: str = "NONE"
    ancrfile: str = "NONE"
    how: str = "none"  # sas, canned, none
    reason: str = ""


def choose(
    output_dir: Path,
    spectrum: str,
    event_list: str,
    needs: Needs,
    library: Path | None,
    extended: bool,
    log: Log,
) -> ResponseChoice:
    """Make or pick the responses of one written source spectrum and name them in its header."""
    missing = sas_missing()
    if missing is None:
        made = run_sas(output_dir, spectrum, event_list, extended, log)
        if made is not None:
            choice = ResponseChoice(made[0], made[1], "sas", "made by SAS rmfgen/arfgen")
            set_response_keywords(output_dir / spectrum, choice.respfile, choice.ancrfile)
            return choice
        missing = "SAS failed (see above)"
    if library is None:
        choice = ResponseChoice(
            reason=f"{missing}, and no response library is configured (REGIO_RESPONSES)"
        )
    else:
        rmf, why = pick_canned(library, needs)
        if rmf is None:
            choice = ResponseChoice(reason=f"{missing}; {why}")
        else:
            name = copy_into(output_dir, rmf)
            choice = ResponseChoice(name, "NONE", "canned", f"{why}; no ARF without SAS arfgen")
    set_response_keywords(output_dir / spectrum, choice.respfile, choice.ancrfile)
    return choice
