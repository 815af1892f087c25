"""The script catalogue: scientist-authored scripts discovered from their manifests.

A script is an executable file in the scripts folder (setting ``REGIO_SCRIPTS``) plus a manifest
``<scripts>/<name>.toml``; the script's name is the manifest's file stem. Adding a script needs no
change to the app: drop the two files in the folder. A manifest looks like::

    title = "Source spectrum"
    version = "1.2"
    executable = "spectrum.py"        # a file in the scripts folder; *.py runs with the worker's Python
    documentation = "One paragraph shown on the launch form."
    time_limit = 600                  # seconds; the run ends ERROR "time limit exceeded" beyond it
    cold_start = false                # optional; true: a new interpreter per run, never a warm
                                      # start (app.warm), e.g. for a script that needs one
    stages = ["extract", "plot"]      # optional: the [STAGE] names in order (or stage_count = 2)

    [[parameters]]
    name = "bin_size"
    type = "int"                      # int | float | bool | string | choice
    default = 20
    unit = "counts"
    min = 1
    max = 1000
    help = "Minimum counts per spectral bin."

    [[parameters]]
    name = "grouping"
    type = "choice"
    choices = ["min-counts", "optimal"]
    default = "min-counts"

    [[products]]
    kind = "spectrum"                 # spectrum | lightcurve | image | table | plot | other
    description = "Source and background spectra (OGIP PHA)."

    [accepts]                         # the data the script can process
    kinds = ["events"]                # data kinds (indexer.instruments.KINDS)
    instruments = ["XMM/EPIC"]        # MISSION/INSTRUMENT; omitted or empty: any instrument

``stages`` (the names the script enters with ``[STAGE]``, in order) or ``stage_count`` announce
how many stages a run has, so the page reads "stage k of n"; a script whose count depends on its
input prints ``[STAGES] n`` before its first stage instead (``regio_kit.stages(n)``), which
overrides the manifest. A parameter without ``default`` is required. A manifest without ``[accepts]`` accepts every
kind of data. The page and ``GET /api/scripts?session=ID`` offer only the scripts that accept
every selected exposure, and launching one on data it does not accept is refused. Manifests are checked strictly (unknown keys, wrong
types, a default that breaks its own constraints): a broken manifest is logged and left out of the
catalogue without hiding the other scripts.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.instruments import KINDS

log = logging.getLogger("regio.catalog")

PARAM_TYPES = ("int", "float", "bool", "string", "choice")
PRODUCT_KINDS = ("spectrum", "lightcurve", "image", "table", "plot", "other")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SCRIPT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INSTRUMENT_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,40}/[A-Za-z0-9_.+-]{1,40}$")
MAX_STRING_PARAM = 1000  # characters in a string parameter value

_MISSING = object()


class CatalogError(ValueError):
    """A manifest is invalid or a script is missing; the message names the file and the key."""


class ParamError(ValueError):
    """Run parameters are invalid; ``param`` names the offending parameter (None: the whole set)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Parameter:
    """One run parameter of a script, as declared in its manifest."""

    name: str
    type: str
    default: Any = _MISSING
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def check(self, value: Any) -> Any:
        """The value, coerced (int -> float for float parameters), or ParamError naming the parameter."""
        label = f"parameter '{self.name}'"
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ParamError(f"{label} must be true or false, not {value!r}", self.name)
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ParamError(f"{label} must be a string, not {value!r}", self.name)
            if len(value) > MAX_STRING_PARAM or "\x00" in value:
                raise ParamError(
                    f"{label} must be a text of at most {MAX_STRING_PARAM} characters", self.name
                )
            return value
        if self.type == "choice":
            if not any(_same(value, c) for c in self.choices):
                options = ", ".join(repr(c) for c in self.choices)
                raise ParamError(f"{label} must be one of {options}, not {value!r}", self.name)
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamError(f"{label} must be a whole number, not {value!r}", self.name)
        else:  # float
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParamError(f"{label} must be a number, not {value!r}", self.name)
            value = float(value)
            if not math.isfinite(value):
                raise ParamError(f"{label} must be a finite number, not {value!r}", self.name)
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and value < self.min:
            raise ParamError(f"{label} must be at least {self.min}{unit}, not {value}", self.name)
        if self.max is not None and value > self.max:
            raise ParamError(f"{label} must be at most {self.max}{unit}, not {value}", self.name)
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            out["default"] = self.default
        out.update(unit=self.unit, help=self.help)
        if self.type in ("int", "float"):
            out.update(min=self.min, max=self.max)
        if self.type == "choice":
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Product:
    """A kind of product a script declares it makes."""

    kind: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "description": self.description}


@dataclass(frozen=True)
class Accepts:
    """What data a script can process: data kinds and (optionally) instruments."""

    kinds: tuple[str, ...] = ()  # empty: every kind
    instruments: tuple[str, ...] = ()  # "MISSION/INSTRUMENT"; empty: every instrument

    def accepts(self, row: Mapping[str, Any]) -> bool:
        """True if an exposure row (``mission``, ``instrument``, ``kind``) is processable."""
        if self.kinds and row.get("kind", "events") not in self.kinds:
            return False
        return not self.instruments or (
            f"{row.get('mission')}/{row.get('instrument')}" in self.instruments
        )

    def describe(self) -> str:
        kinds = ", ".join(self.kinds) if self.kinds else "any kind of data"
        return kinds + (f" of {', '.join(self.instruments)}" if self.instruments else "")

    def to_json(self) -> dict[str, list[str]]:
        return {"kinds": list(self.kinds), "instruments": list(self.instruments)}


@dataclass(frozen=True)
class Script:
    """A script of the catalogue: its manifest, checked, and where its executable is."""

    name: str
    title: str
    version: str
    executable: Path
    documentation: str
    time_limit: int
    parameters: tuple[Parameter, ...] = ()
    products: tuple[Product, ...] = ()
    accepts: Accepts = Accepts()
    manifest: Path = field(default=Path(), compare=False)
    stages: tuple[str, ...] = ()  #: stage names announced by the manifest, in order
    stage_count: int | None = None  #: ``len(stages)`` or the manifest's ``stage_count``
    cold_start: bool = False  #: never started warm (``app.warm``): a new interpreter per run

    def mismatch(self, rows: list[Mapping[str, Any]]) -> str | None:
        """Why the script cannot process these exposure rows (None when it accepts them all)."""
        refused = [r for r in rows if not self.accepts.accepts(r)]
        if not refused:
            return None
        names = ", ".join(
            f"{r.get('mission')} {r.get('camera')} {r.get('obsid')} ({r.get('kind', 'events')})"
            for r in refused[:5]
        ) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        return f"script {self.name} does not accept {names}: it accepts {self.accepts.describe()}"

    def command(self) -> list[str]:
        """The argv prefix that runs the script (the runner appends the input file).

        Python scripts run with the interpreter of the current process (the worker's), anything else
        is executed directly (a shell script wrapping SAS, a compiled program...).
        """
        if self.executable.suffix == ".py":
            return [sys.executable, str(self.executable)]
        return [str(self.executable)]

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The public description served by ``GET /api/scripts`` (no file system paths)."""
        return {
            "name": self.name,
            "title": self.title,
            "version": self.version,
            "documentation": self.documentation,
            "time_limit": self.time_limit,
            "parameters": [p.to_json() for p in self.parameters],
            "products": [p.to_json() for p in self.products],
            "accepts": self.accepts.to_json(),
            "stages": list(self.stages),
            "stage_count": self.stage_count,
        }


def validate_params(script: Script, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The complete, checked parameter set of a run: given values checked, defaults filled in.

    Types are strict (no bool for a number, no string for a number, no 2.0 for an int); ranges,
    choices and unknown names are checked. Raises ParamError with a message naming the parameter.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParamError("parameters must be a JSON object mapping names to values")
    unknown = sorted(str(k) for k in params if script.parameter(str(k)) is None)
    if unknown:
        known = ", ".join(p.name for p in script.parameters) or "none"
        raise ParamError(
            f"unknown parameter '{unknown[0]}' for script '{script.name}' (it takes: {known})",
            unknown[0],
        )
    out: dict[str, Any] = {}
    for p in script.parameters:
        if p.name in params:
            out[p.name] = p.check(params[p.name])
        elif p.required:
            raise ParamError(f"parameter '{p.name}' is required", p.name)
        else:
            out[p.name] = p.default
    return out


def load_catalog(scripts_dir: Path | str) -> dict[str, Script]:
    """Every valid script of ``scripts_dir`` by name; broken manifests are logged and left out."""
    scripts, problems = scan_catalog(scripts_dir)
    for name, message in problems.items():
        log.error("script %r left out of the catalogue: %s", name, message)
    return scripts


def scan_catalog(scripts_dir: Path | str) -> tuple[dict[str, Script], dict[str, str]]:
    """The valid scripts by name, and the broken manifests by name with what is wrong."""
    folder = Path(scripts_dir)
    scripts: dict[str, Script] = {}
    problems: dict[str, str] = {}
    if not folder.is_dir():
        log.warning("the scripts folder %s does not exist", folder)
        return scripts, problems
    for manifest in sorted(folder.glob("*.toml")):
        try:
            scripts[manifest.stem] = load_script(folder, manifest.stem)
        except CatalogError as exc:
            problems[manifest.stem] = str(exc)
    return scripts, problems


def load_script(scripts_dir: Path | str, name: str) -> Script:
    """One script, from ``<scripts_dir>/<name>.toml``; CatalogError if missing or invalid."""
    if not SCRIPT_NAME_RE.match(name):
        raise CatalogError(f"{name!r} is not a valid script name")
    folder = Path(scripts_dir)
    path = folder / f"{name}.toml"
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise CatalogError(f"no script {name!r}: {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    return _ManifestReader(path, folder).script(name, data)


def _same(value: Any, choice: Any) -> bool:
    """Equal and of the same type: ``True`` is not the choice ``1``, nor ``"1"``."""
    return type(value) is type(choice) and value == choice


class _ManifestReader:
    """Checks one manifest's data, raising CatalogError with the file and key in the message."""

    TOP_KEYS = {
        "title": True,
        "version": True,
        "executable": True,
        "documentation": True,
        "time_limit": True,
        "parameters": False,
        "products": False,
        "accepts": False,
        "stages": False,
        "stage_count": False,
        "cold_start": False,
    }
    PARAM_KEYS = {"name", "type", "default", "unit", "min", "max", "choices", "help"}
    PRODUCT_KEYS = {"kind", "description"}

    def __init__(self, path: Path, folder: Path) -> None:
        self.path = path
        self.folder = folder

    def fail(self, where: str, message: str) -> CatalogError:
        return CatalogError(f"{self.path}: {where}: {message}")

    def script(self, name: str, data: dict[str, Any]) -> Script:
        self.keys("the manifest", data, set(self.TOP_KEYS))
        for key, required in self.TOP_KEYS.items():
            if required and key not in data:
                raise self.fail(key, "is missing")
        for key in ("title", "version", "executable", "documentation"):
            self.text(key, data[key])
        time_limit = data["time_limit"]
        if isinstance(time_limit, bool) or not isinstance(time_limit, int) or time_limit <= 0:
            raise self.fail(
                "time_limit", f"must be a positive number of seconds, not {time_limit!r}"
            )
        params = tuple(
            self.parameter(f"parameters[{i}]", p)
            for i, p in enumerate(self.tables("parameters", data))
        )
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise self.fail("parameters", f"duplicate name {duplicates[0]!r}")
        products = tuple(
            self.product(f"products[{i}]", p) for i, p in enumerate(self.tables("products", data))
        )
        stages, stage_count = self.stages(data)
        cold_start = data.get("cold_start", False)
        if not isinstance(cold_start, bool):
            raise self.fail("cold_start", f"must be true or false, not {cold_start!r}")
        return Script(
            name=name,
            title=data["title"].strip(),
            version=data["version"].strip(),
            executable=self.executable(data["executable"]),
            documentation=data["documentation"].strip(),
            time_limit=time_limit,
            parameters=params,
            products=products,
            accepts=self.accepts(data.get("accepts", {})),
            manifest=self.path,
            stages=stages,
            stage_count=stage_count,
            cold_start=cold_start,
        )

    def stages(self, data: dict[str, Any]) -> tuple[tuple[str, ...], int | None]:
        """``(stage names, stage count)`` from ``stages`` and/or ``stage_count`` (they must agree)."""
        names = data.get("stages", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise self.fail("stages", "must be a list of non-empty stage names")
        count = data.get("stage_count", len(names) or None)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise self.fail("stage_count", f"must be a whole number, not {count!r}")
        if count is not None and not 0 < count <= 500:
            raise self.fail("stage_count", f"must be between 1 and 500, not {count}")
        if names and count != len(names):
            raise self.fail("stage_count", f"is {count} but stages lists {len(names)} names")
        return tuple(n.strip() for n in names), count

    def accepts(self, table: Any) -> Accepts:
        if not isinstance(table, dict):
            raise self.fail("accepts", "must be a table with 'kinds' and/or 'instruments'")
        self.keys("accepts", table, {"kinds", "instruments"})
        lists = {}
        for key in ("kinds", "instruments"):
            values = table.get(key, [])
            if not isinstance(values, list) or not all(
                isinstance(v, str) and v.strip() for v in values
            ):
                raise self.fail(f"accepts.{key}", "must be a list of non-empty strings")
            lists[key] = tuple(v.strip() for v in values)
        unknown = [k for k in lists["kinds"] if k not in KINDS]
        if unknown:
            raise self.fail(
                "accepts.kinds", f"unknown data kind {unknown[0]!r} (known: {', '.join(KINDS)})"
            )
        bad = [i for i in lists["instruments"] if not INSTRUMENT_RE.match(i)]
        if bad:
            raise self.fail("accepts.instruments", f"{bad[0]!r} is not MISSION/INSTRUMENT")
        return Accepts(kinds=lists["kinds"], instruments=lists["instruments"])

    def keys(self, where: str, table: dict[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )

    def text(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, not {value!r}")
        return value

    def tables(self, key: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]])")
        return value

    def executable(self, name: str) -> Path:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise self.fail("executable", f"must be a file name in {self.folder}, not {name!r}")
        path = (self.folder / name).resolve()
        if not path.is_file():
            raise self.fail("executable", f"{self.folder / name} does not exist")
        if path.suffix != ".py" and not os.access(path, os.X_OK):
            raise self.fail("executable", f"{path} is not executable (chmod +x)")
        return path

    def parameter(self, where: str, table: dict[str, Any]) -> Parameter:
        self.keys(where, table, self.PARAM_KEYS)
        name = table.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise self.fail(where, f"name must be an identifier, not {name!r}")
        where = f"parameter {name!r}"
        kind = table.get("type")
        if kind not in PARAM_TYPES:
            raise self.fail(where, f"type must be one of {', '.join(PARAM_TYPES)}, not {kind!r}")
        bounds = {}
        for key in ("min", "max"):
            value = table.get(key)
            if value is None:
                continue
            if kind not in ("int", "float"):
                raise self.fail(where, f"{key} is only for int and float parameters")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(where, f"{key} must be a number, not {value!r}")
            bounds[key] = value
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise self.fail(where, "min is greater than max")
        choices = table.get("choices")
        if kind == "choice":
            if not isinstance(choices, list) or not choices:
                raise self.fail(where, "a choice parameter needs a non-empty list of choices")
            if not all(type(c) in (str, int, float) for c in choices):
                raise self.fail(where, "choices must be strings or numbers")
            if len({type(c) for c in choices}) > 1:
                raise self.fail(where, "choices must all be of the same type")
        elif choices is not None:
            raise self.fail(where, "choices is only for choice parameters")
        for key in ("unit", "help"):
            if not isinstance(table.get(key, ""), str):
                raise self.fail(where, f"{key} must be a string")
        param = Parameter(
            name=name,
            type=kind,
            default=table.get("default", _MISSING),
            unit=table.get("unit", ""),
            min=bounds.get("min"),
            max=bounds.get("max"),
            choices=tuple(choices or ()),
            help=table.get("help", ""),
        )
        if not param.required:
            try:
                object.__setattr__(param, "default", param.check(param.default))
            except ParamError as exc:
                raise self.fail(where, f"invalid default: {exc}") from None
        return param

    def product(self, where: str, table: dict[str, Any]) -> Product:
        self.keys(where, table, self.PRODUCT_KEYS)
        kind = table.get("kind")
        if kind not in PRODUCT_KINDS:
            raise self.fail(where, f"kind must be one of {', '.join(PRODUCT_KINDS)}, not {kind!r}")
        return Product(
            kind=kind, description=self.text(f"{where}.description", table.get("description"))
        )
