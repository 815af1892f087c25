"""The demo archive: synthetic observations of every demo instrument, ``python -m indexer sample``.

``generate_archive(OUT_DIR, observations=N, seed=S, events_scale=F, chandra=C)`` writes

- ``OUT_DIR/<obsid>/P<obsid>...FTZ``: N XMM-Newton EPIC observations (``demo.xmm_epic``), and
- ``OUT_DIR/chandra/<obsid>/acisf<obsid>N001_evt2.fits.gz``: C Chandra ACIS level-2 event lists
  (``demo.chandra_acis``),

and their ground truth ``OUT_DIR/truth.json``: the XMM truth (``demo.xmm_epic``), with the
Chandra truth under ``"chandra"``. The same arguments give byte-identical files.

Adding an instrument to the demo: a ``demo/<instrument>.py`` whose ``generate(out_dir,
observations, seed, events_scale, progress)`` writes its files below ``out_dir`` and returns its
truth, called from :func:`generate_archive`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TRUTH_NAME = "truth.json"
CHANDRA_FOLDER = "chandra"
#: Chandra ACIS observations in the demo archive by default.
DEFAULT_CHANDRA_OBSERVATIONS = 3


def generate_archive(
    out_dir: Path | str,
    observations: int = 12,
    seed: int = 1,
    events_scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
    *,
    chandra: int = DEFAULT_CHANDRA_OBSERVATIONS,
) -> dict[str, Any]:
    """Write the demo archive to ``out_dir`` and return its ground truth (see the module doc).

    ``observations`` >= 1 XMM observations, ``chandra`` >= 0 Chandra observations.
    """
    from demo import chandra_acis, xmm_epic

    if chandra < 0:
        raise ValueError("chandra must be >= 0")
    out = Path(out_dir)
    truth = xmm_epic.generate_archive(out, observations, seed, events_scale, progress)
    if chandra:
        truth["chandra"] = chandra_acis.generate(
            out / CHANDRA_FOLDER, chandra, seed, events_scale, progress
        )
    (out / TRUTH_NAME).write_text(json.dumps(truth, indent=1, sort_keys=False) + "\n")
    return truth


# --- command line ---------------------------------------------------------------------------


def _is_previous_archive(path: Path) -> bool:
    truth = path / TRUTH_NAME
    if not truth.is_file():
        return False
    try:
        data = json.loads(truth.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "regio-sample-truth"


def _clear_previous(out: Path) -> None:
    """Remove a previous demo archive's observation folders and truth."""
    for child in out.iterdir():
        if child.is_dir() and (
            (child.name.isdigit() and len(child.name) == 10) or child.name == CHANDRA_FOLDER
        ):
            shutil.rmtree(child)
    (out / TRUTH_NAME).unlink()


def run(args: argparse.Namespace) -> int:
    """``python -m indexer sample``: validate the arguments, build the archive, report."""
    from indexer.cli import CLIError

    if args.observations < 1:
        raise CLIError(f"--observations must be at least 1 (got {args.observations})")
    if args.chandra < 0:
        raise CLIError(f"--chandra must be at least 0 (got {args.chandra})")
    if not (args.events_scale > 0 and np.isfinite(args.events_scale)):
        raise CLIError(f"--events-scale must be a positive number (got {args.events_scale})")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise CLIError(f"OUT_DIR {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_archive(out):
        raise CLIError(f"OUT_DIR {out} is not empty and is not a previous sample archive")
    if out.is_dir() and _is_previous_archive(out):
        _clear_previous(out)
    try:
        truth = generate_archive(
            out,
            observations=args.observations,
            seed=args.seed,
            events_scale=args.events_scale,
            chandra=args.chandra,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except OSError as exc:
        raise CLIError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    n = sum(c["events"] for o in truth["observations"] for c in o["cameras"].values())
    n_chandra = len(truth.get("chandra", {}).get("observations", []))
    print(
        f"wrote {len(truth['observations'])} XMM observations ({n} events) and {n_chandra} "
        f"Chandra observations to {out}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``sample`` sub-command to the ``python -m indexer`` parser."""
    p = subparsers.add_parser(
        "sample",
        help="write a synthetic demo archive (XMM EPIC and Chandra ACIS) with ground truth",
        description="Write a synthetic archive of XMM-Newton EPIC and Chandra ACIS event lists "
        "with their ground truth (truth.json).",
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", help="output folder (new, empty or a previous sample)"
    )
    p.add_argument(
        "--observations", type=int, default=12, metavar="N", help="XMM observations (12)"
    )
    p.add_argument(
        "--chandra",
        type=int,
        default=DEFAULT_CHANDRA_OBSERVATIONS,
        metavar="C",
        help=f"Chandra ACIS observations ({DEFAULT_CHANDRA_OBSERVATIONS})",
    )
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (1)")
    p.add_argument(
        "--events-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every count rate by F (1.0; e.g. 50 for benchmarks)",
    )
    p.set_defaults(func=run)
