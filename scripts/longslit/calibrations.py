"""Calibration association as PAWS does it: the frames of the science frame's own night folder.

The archive keeps a night's frames together, and the index only holds sky frames (science and
standards), so a reduction scans the **science frame's own folder** (read-only) and classifies
every frame there from its headers (``indexer.instruments.longslit.classify``). For each role:

- ``bias``: every bias of the same spectrograph arm and night with the same detector geometry
  (the profile's ``bias_keys``: biases may come from anywhere in the night, any setup);
- ``flat``: every flat of the same night and setup (all the profile's ``setup_keys``);
- ``arc``: the arc of the same night and setup, the slit aside (arcs are often taken through a
  narrow slit), **closest in time** to the science frame;
- ``standard``: the standard star of the same night and setup closest in time (a standard is
  its own standard).

A frame of another night, another setup or another spectrograph is never used; every frame of
the folder gets a :class:`Decision` saying what it is and why it was or was not used, for the
provenance. :meth:`Association.require` fails with a message naming each missing calibration
and why the candidates were refused. Ties in time go to the file name, so the result does not
depend on the order the files are listed in.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from indexer.footprint import looks_like_fits
from indexer.instruments.longslit import FrameInfo, frame_info, profile_for

ROLES = ("bias", "flat", "arc", "standard")


class AssociationError(ValueError):
    """A required calibration is missing; the message names it and the reasons."""


@dataclass
class Decision:
    """What one frame of the folder is and what the association did with it."""

    file: str
    type: str | None  #: frame type (None: not a frame of a known spectrograph)
    date_obs: str | None
    used_as: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "type": self.type,
            "date_obs": self.date_obs,
            "used_as": self.used_as,
            "reasons": self.reasons,
        }

    def text(self) -> str:
        what = self.type or "not a long-slit frame"
        verdict = f"used as {self.used_as}" if self.used_as else "not used"
        return f"{self.file} ({what}): {verdict}: {'; '.join(self.reasons)}"


@dataclass
class Association:
    target: FrameInfo
    bias: list[FrameInfo]
    flat: list[FrameInfo]
    arc: FrameInfo | None
    standard: FrameInfo | None
    decisions: list[Decision]

    def missing(self, roles: tuple[str, ...]) -> list[str]:
        have = {
            "bias": bool(self.bias),
            "flat": bool(self.flat),
            "arc": self.arc is not None,
            "standard": self.standard is not None,
        }
        return [role for role in roles if not have[role]]

    def require(self, roles: tuple[str, ...]) -> None:
        """Raise :class:`AssociationError` naming every missing calibration of ``roles``."""
        missing = self.missing(roles)
        if not missing:
            return
        parts = []
        for role in missing:
            refused = [d for d in self.decisions if d.type == role]
            why = "; ".join(f"{d.file}: {', '.join(d.reasons)}" for d in refused)
            parts.append(
                f"no {role} for {self.target.name} (night {self.target.night}, setup "
                f"{_setup_text(self.target.setup)})"
                + (f": refused {why}" if why else f": the folder holds no {role} frame")
            )
        raise AssociationError("; ".join(parts))

    def used(self) -> list[tuple[str, FrameInfo]]:
        """(role, frame) of every calibration used, the target first."""
        out: list[tuple[str, FrameInfo]] = [(self.target.type, self.target)]
        out += [("bias", f) for f in self.bias] + [("flat", f) for f in self.flat]
        if self.arc is not None:
            out.append(("arc", self.arc))
        if self.standard is not None and self.standard.path != self.target.path:
            out.append(("standard", self.standard))
        return out


def _setup_text(setup: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in setup.items())


def _date(info: FrameInfo) -> str | None:
    return info.date_obs.isoformat(timespec="seconds") if info.date_obs else None


def scan_folder(folder: Path) -> tuple[list[FrameInfo], list[Decision]]:
    """The long-slit frames of a folder and a decision for each other FITS file in it."""
    frames: list[FrameInfo] = []
    others: list[Decision] = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or not looks_like_fits(path):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = fits.getheader(path, 0)
        except (OSError, ValueError) as exc:
            others.append(Decision(path.name, None, None, reasons=[f"unreadable: {exc}"]))
            continue
        profile = profile_for(header)
        if profile is None or header.get("NAXIS", 0) != 2:
            others.append(
                Decision(
                    path.name,
                    None,
                    None,
                    reasons=["not a raw frame of a known spectrograph (no profile recognises it)"],
                )
            )
            continue
        frames.append(frame_info(path, header, profile))
    return frames, others


def _minutes(a: FrameInfo, b: FrameInfo) -> float:
    if a.date_obs is None or b.date_obs is None:
        return float("inf")
    return (a.date_obs - b.date_obs) / dt.timedelta(minutes=1)


def _mismatches(target: FrameInfo, frame: FrameInfo, role: str) -> list[str]:
    reasons = []
    if frame.profile.key != target.profile.key:
        return [f"another spectrograph ({frame.profile.key}, the target's is {target.profile.key})"]
    if frame.night is None:
        reasons.append("no observing date")
    elif frame.night != target.night:
        reasons.append(f"another night ({frame.night}, the target's is {target.night})")
    if role == "bias":
        keys = tuple(target.geometry)
        ours, theirs = target.geometry, frame.geometry
        label = "another detector geometry"
    else:
        keys = tuple(target.setup)
        if role == "arc" and target.profile.slit_key:
            keys = tuple(k for k in keys if k != target.profile.slit_key)
        ours, theirs = target.setup, frame.setup
        label = "another setup"
    diff = [
        f"{k} {theirs.get(k)!r} (the target's {ours.get(k)!r})"
        for k in keys
        if theirs.get(k) != ours.get(k)
    ]
    if diff:
        reasons.append(f"{label}: " + ", ".join(diff))
    return reasons


def associate(
    target: FrameInfo, frames: list[FrameInfo], others: list[Decision] | None = None
) -> Association:
    """Choose the calibrations of ``target`` among ``frames`` (rules in the module docstring)."""
    decisions: dict[str, Decision] = {}
    accepted: dict[str, list[tuple[float, str, FrameInfo]]] = {role: [] for role in ROLES}
    for frame in sorted(frames, key=lambda f: f.name):
        decision = Decision(frame.name, frame.type, _date(frame))
        decisions[frame.name] = decision
        role = frame.type
        if frame.path == target.path:
            decision.reasons.append("the frame being reduced")
            if role == "standard":
                accepted["standard"].append((0.0, frame.name, frame))
            continue
        if role not in ROLES:
            decision.reasons.append(f"a {role} frame is not a calibration of this reduction")
            continue
        reasons = _mismatches(target, frame, role)
        if reasons:
            decision.reasons.extend(reasons)
            continue
        accepted[role].append((abs(_minutes(frame, target)), frame.name, frame))
    for role in ROLES:
        accepted[role].sort(key=lambda item: (item[0], item[1]))
    bias = [f for _, _, f in accepted["bias"]]
    flat = [f for _, _, f in accepted["flat"]]
    for role, chosen in (("bias", bias), ("flat", flat)):
        for frame in chosen:
            d = decisions[frame.name]
            d.used_as = role
            d.reasons.append(
                f"same night and {'detector geometry' if role == 'bias' else 'setup'}; "
                f"{_minutes(frame, target):+.1f} min from the target"
            )
    picked: dict[str, FrameInfo | None] = {}
    for role in ("arc", "standard"):
        candidates = accepted[role]
        picked[role] = candidates[0][2] if candidates else None
        for k, (gap, _, frame) in enumerate(candidates):
            d = decisions[frame.name]
            if k == 0:
                d.used_as = role
                d.reasons.append(
                    f"closest {role} in time of the same night and setup"
                    + (" (slit aside)" if role == "arc" else "")
                    + f": {_minutes(frame, target):+.1f} min from the target"
                )
            else:
                d.reasons.append(
                    f"same night and setup but not the closest {role} ({gap:.1f} min from the "
                    f"target, {candidates[0][2].name} is {candidates[0][0]:.1f} min)"
                )
    ordered = [decisions[name] for name in sorted(decisions)] + list(others or [])
    return Association(
        target=target,
        bias=bias,
        flat=flat,
        arc=picked["arc"],
        standard=picked["standard"],
        decisions=ordered,
    )


def for_frame(path: Path) -> Association:
    """Scan the folder of ``path`` and associate its calibrations (``path`` must be a frame)."""
    path = Path(path)
    frames, others = scan_folder(path.parent)
    target = next((f for f in frames if f.path.resolve() == path.resolve()), None)
    if target is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0)
        target = frame_info(path, header)
        frames.append(target)
    return associate(target, frames, others)
