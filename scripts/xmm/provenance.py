"""Provenance of every product: FITS keywords/HISTORY and ``provenance.json`` in the output folder.

Recorded: Regio version, script name and version, run id, parameters, input event lists (path,
size, SHA-256 computed here and the catalogue's checksum), the regions (ICRS DS9 and, per
observation, the DS9 ``physical`` text in the event list's X/Y actually used), the event filters
and flare screening, and the creation date (UTC).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "provenance.json"


def sha256(path: str | Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class Provenance:
    """Collects what a run did; writes it to FITS headers and to ``provenance.json``."""

    def __init__(self, inp: dict[str, Any]):
        self.inp = inp
        self.created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        script = inp.get("script") or {}
        self.script = str(script.get("name", "unknown"))
        self.script_version = str(script.get("version", ""))
        self.inputs: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add_input(
        self, obs: dict[str, Any], camera: str, pixel_regions: dict[str, str], filters: str
    ) -> str:
        """Record one event list; returns its SHA-256 (a mismatch with the catalogue is noted)."""
        path = str(obs.get("path"))
        digest = sha256(path)
        expected = obs.get("checksum")
        if expected and expected != digest:
            self.notes.append(f"{path}: SHA-256 {digest} differs from the catalogue's {expected}")
        self.inputs.append(
            {
                "obsid": obs.get("obsid"),
                "camera": camera,
                "path": path,
                "size": Path(path).stat().st_size,
                "sha256": digest,
                "catalog_checksum": expected,
                "regions_pixel": pixel_regions,
                "filters": filters,
            }
        )
        return digest

    def note(self, text: str) -> None:
        self.notes.append(text)

    def record(self) -> dict[str, Any]:
        regions = self.inp.get("regions") or {}
        return {
            "regio_version": self.inp.get("regio_version"),
            "script": {"name": self.script, "version": self.script_version},
            "run_id": self.inp.get("run_id"),
            "session_id": self.inp.get("session_id"),
            "created": self.created + "Z",
            "parameters": self.inp.get("params", {}),
            "regions_icrs": {k: (v or {}).get("ds9") for k, v in regions.items()},
            "inputs": self.inputs,
            "notes": self.notes,
        }

    def write_json(self, output_dir: str | Path) -> Path:
        path = Path(output_dir) / PROVENANCE_FILE
        path.write_text(json.dumps(self.record(), indent=1, default=str), encoding="utf-8")
        return path

    def cards(self, obsid: str | None = None, camera: str | None = None) -> list[tuple]:
        """FITS cards (keyword, value, comment) and HISTORY lines for one product: the inputs of
        ``obsid`` and ``camera`` (either None: any), e.g. all observations of one camera."""
        out: list[tuple] = [
            (
                "CREATOR",
                f"Regio {self.script} {self.script_version}",
                "software that made this file",
            ),
            ("DATE", self.created, "file creation date (UTC)"),
            ("REGIOVER", str(self.inp.get("regio_version", "")), "Regio version"),
            ("REGIOSCR", self.script, "Regio script name"),
            ("REGIOSVR", self.script_version, "Regio script version"),
            ("REGIORUN", str(self.inp.get("run_id", "")), "Regio run id"),
        ]
        params = self.inp.get("params", {})
        out.append(("HISTORY", f"Regio {self.script} {self.script_version} at {self.created}Z"))
        out.append(("HISTORY", "parameters: " + json.dumps(params, sort_keys=True)))
        for item in self.inputs:
            if (obsid is None or item["obsid"] == obsid) and (
                camera is None or item["camera"] == camera
            ):
                out.append(("HISTORY", f"input {item['path']} sha256 {item['sha256']}"))
                out.append(("HISTORY", f"filters {item['filters']}"))
                for name, text in item["regions_pixel"].items():
                    body = " ".join(line for line in text.splitlines()[2:])
                    out.append(("HISTORY", f"{name} region (X/Y physical): {body}"))
        for name, ds9 in self.record()["regions_icrs"].items():
            if ds9:
                body = " ".join(
                    line for line in ds9.splitlines() if line and not line.startswith("#")
                )
                out.append(("HISTORY", f"{name} region (ICRS): {body}"))
        return out
