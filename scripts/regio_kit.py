"""regio_kit: the small kit for Regio's Python processing scripts.

A script imports it as ``from regio_kit import ...`` (Python puts the script's own folder first on
``sys.path``). The kit imports nothing from the web app, so a script also runs by hand, with no
Redis and no web service::

    python scripts/NAME.py input.json

A scripts folder other than ``scripts/`` (``REGIO_SCRIPTS``) needs this file beside its scripts:
copy it or link it (``tests/scripts/regio_kit.py`` is such a link).

The contract between the runner and a script (any language):

- argv[1] is the path of the run's input file (JSON, below); the current directory is the run
  folder; stdout and stderr both go to the run's log, shown live in the browser.
- ``[STAGES] <n>`` on stdout announces how many stages the run will have (the page then reads
  "stage k of n"; a fixed count can be declared in the manifest instead, ``stages = [...]``);
  ``[STAGE] <name>`` enters a stage; ``[PROGRESS] <k>/<n>`` reports progress in the
  current stage; ``[ERROR] <message>`` gives the message shown to the user when the script fails;
  every other line is log text.
- Exit code 0 means success; anything else is a failure of the current stage.
- Products are files in ``output_dir``, described in ``output_dir/products.json`` (see
  ``save_product``). The environment carries ``REGIO_RUN_ID``.

The input file::

    {
      "run_id": "k3v9x0q2m7ab",
      "session_id": "...",
      "script": {"name": "spectrum", "version": "1.2"},
      "regio_version": "0.1.0",
      "params": {"bin_size": 20, ...},             # validated, defaults filled in
      "regions": {"source": {...}, "background": {...}},   # ICRS regions (see app/shapes.py)
      "observations": [
        {"obsid": "0123456789", "camera": "MOS1", "instrument": "EMOS1",
         "path": "/archive/.../P0123456789M1S001MIEVLI0000.FTZ", ...,
         "regions_pixel": {"source": {...}, "background": {...}}}   # in the event file's X/Y
      ],
      "output_dir": "/abs/path/of/the/run/output"
    }

A typical script::

    from regio_kit import main, progress, save_product, stage

    def run(inp):
        with stage("extract"):
            for k, obs in enumerate(inp["observations"], 1):
                ...
                progress(k, len(inp["observations"]))
        with stage("plot"):
            ...
            save_product(inp["output_dir"], "spectrum.png", "plot", "Source spectrum")

    if __name__ == "__main__":
        main(run)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

MANIFEST = "products.json"
KINDS = ("spectrum", "lightcurve", "image", "table", "plot", "other")


class ScriptError(Exception):
    """Raise it (or call ``fail``) to end the script with a clear message for the user."""


def _say(line: str) -> None:
    print(line, flush=True)


def load_input(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's input (layout in this module's docstring); creates ``output_dir`` if needed."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the input file {path}: {exc}")
    if not isinstance(data, dict):
        fail(f"the input file {path} does not hold a JSON object")
    data.setdefault("params", {})
    data.setdefault("observations", [])
    data.setdefault("regions", {})
    out = Path(data.get("output_dir") or Path(path).resolve().parent / "output")
    out.mkdir(parents=True, exist_ok=True)
    data["output_dir"] = str(out)
    return data


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Enter a stage: prints ``[STAGE] name``; an exception inside fails the run in this stage."""
    name = " ".join(str(name).split())
    if not name:
        raise ValueError("a stage needs a name")
    _say(f"[STAGE] {name}")
    yield


def stages(count: int) -> None:
    """Announce the number of stages of this run: ``[STAGES] count`` (before the first stage)."""
    count = int(count)
    if not 0 < count <= 500:
        raise ValueError(f"a run has 1 to 500 stages, not {count}")
    _say(f"[STAGES] {count}")


def progress(done: int, total: int) -> None:
    """Report progress in the current stage: ``[PROGRESS] done/total``."""
    _say(f"[PROGRESS] {int(done)}/{int(total)}")


def save_product(
    output_dir: str | os.PathLike[str],
    filename: str,
    kind: str,
    description: str,
    obsid: str | None = None,
    camera: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Describe a file the script wrote in ``output_dir``, appending it to ``products.json``.

    ``filename`` is relative to ``output_dir`` (sub-folders allowed) and must exist. Describing
    the same file again replaces its entry. ``extra`` keys (JSON values) are kept in the entry.
    Returns the entry.
    """
    if kind not in KINDS:
        raise ValueError(f"product kind must be one of {', '.join(KINDS)}, not {kind!r}")
    out = Path(output_dir)
    rel = Path(filename)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"a product file name must be relative to the output folder: {filename!r}")
    path = out / rel
    if not path.is_file():
        raise FileNotFoundError(f"product file {path} does not exist")
    entry = {
        "file": rel.as_posix(),
        "kind": kind,
        "description": description,
        "obsid": obsid,
        "camera": camera,
        "size": path.stat().st_size,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **extra,
    }
    manifest = out / MANIFEST
    entries = []
    if manifest.exists():
        with open(manifest, encoding="utf-8") as f:
            entries = json.load(f)
    entries = [e for e in entries if e.get("file") != entry["file"]] + [entry]
    tmp = manifest.with_name(MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, manifest)  # readers never see a half-written manifest
    return entry


def fail(message: str) -> NoReturn:
    """End the script now: prints ``[ERROR] message`` (what the user sees) and exits with 1."""
    _say(f"[ERROR] {message}")
    sys.stderr.flush()
    sys.exit(1)


def main(fn: Callable[[dict[str, Any]], Any], argv: list[str] | None = None) -> NoReturn:
    """Run ``fn(input)`` with the input file named by argv[1]; exit 0 on success.

    An uncaught exception prints its traceback, then a last ``[ERROR]`` line naming it, and exits
    with 1, so the user sees what went wrong without reading a traceback.
    """
    argv = sys.argv if argv is None else argv
    if len(argv) != 2:
        print(f"usage: {Path(argv[0]).name} INPUT.json", file=sys.stderr)
        sys.exit(2)
    data = load_input(argv[1])
    try:
        fn(data)
    except ScriptError as exc:
        fail(str(exc))
    except Exception as exc:
        sys.stdout.flush()
        traceback.print_exc()
        sys.stderr.flush()
        fail(f"{type(exc).__name__}: {exc}")
    sys.stdout.flush()
    sys.exit(0)
