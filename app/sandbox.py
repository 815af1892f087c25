"""What a science script may see and how it is confined: the command line that starts it.

Scripts are written by scientists and run on the workers; a script must not be able to read or
change anything of the service (the cookie-signing key in ``REGIO_INSTANCE``, ``regio.db``,
``accounts.db``, other users' sessions) nor leave processes behind. Two ways to start one:

**bubblewrap** (``bwrap``, Debian's ``bubblewrap`` package; ``REGIO_SANDBOX=bwrap`` or ``auto``).
The script runs in new PID, network, IPC and UTS namespaces, with no capabilities, and dies with
the work horse (``--die-with-parent``). Its file system is an empty read-only root holding only:

- read-only: the system (``/usr`` and the ``/bin``, ``/lib*`` links or folders, a few files of
  ``/etc``: ``ETC_FILES``), the Python that runs the worker (its venv and base installation),
  the service packages scripts import (``PACKAGES``, e.g. ``indexer`` installed from the
  checkout), the folders of the worker's ``PATH`` and the software its environment names
  (``SOFTWARE_VARIABLES``: SAS, CIAO, CALDB), the scripts folder (and the files its symbolic
  links point to, like ``tests/scripts/regio_kit.py``), the archive folders,
  ``REGIO_RESPONSES``, ``REGIO_SANDBOX_PATHS``, and the input files the run's ``input.json``
  names;
- read-write: the run folder, except its ``log.txt`` and ``input.json`` (read-only: the runner's
  log cannot be replaced or grown behind its back, the input cannot be rewritten);
- private: ``/tmp`` (a tmpfs, also ``HOME``; the worker's matplotlib font lists are shown
  read-only in its cache folder, :func:`font_caches`), ``/proc`` of its own PID namespace
  (read-only), a minimal ``/dev``; no network but its own loopback.

Everything is bound at its own path, so the paths in ``input.json`` work unchanged. A path that
holds the sessions or instance folder (or lies inside one, other than the run folder and an
archive folder) is never shown, whatever the settings say (``Layout.hidden``).

When the script's main process ends, bubblewrap's init (PID 1 of the namespace) ends and the
kernel kills every process left in the namespace: no descendant survives the run.

**The fallback** (``REGIO_SANDBOX=off``, or ``auto`` when bubblewrap is missing or does not work,
e.g. in a container without namespaces): the script runs with the worker's rights, under
``app/reaper.py``, a child subreaper that kills every descendant of the script when it ends (or
when the work horse dies). It keeps that guarantee, the log cap and the no-follow serving of run
files (``app.runs``), but not the file and network isolation: use it only where every script is
trusted.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = "bwrap"
#: Where ``bwrap`` is looked for when it is not on the worker's PATH.
BWRAP_DEFAULT = "/usr/bin/bwrap"
NAMESPACES = (
    "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--die-with-parent", "--cap-drop", "ALL",
)  # fmt: skip
#: System folders shown read-only (or re-created as the same symbolic links, merged /usr).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: The files of /etc a program may need (dynamic linker, time zone, users, Debian alternatives).
ETC_FILES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group",
    "nsswitch.conf", "alternatives", "fonts", "mime.types",
)  # fmt: skip
#: Service packages scripts import (the science code shares constants with the indexer).
PACKAGES = ("indexer",)
#: Variables of the worker's environment naming software or calibration files scripts use (SAS,
#: CIAO, HEASoft, CALDB): the paths they hold are shown read-only, as are the PATH's folders.
SOFTWARE_VARIABLES = ("SAS_DIR", "SAS_CCFPATH", "SAS_CCF", "ASCDS_INSTALL", "CALDB", "HEADAS")
#: Files of the run folder the script may read but not change or replace.
PROTECTED = ("log.txt", "input.json")
REAPER = Path(__file__).resolve().with_name("reaper.py")
MAX_SCAN = 10_000  # entries of the scripts folder looked at for symbolic links
PROBE_TIMEOUT = 10.0


class SandboxError(RuntimeError):
    """The sandbox is required (REGIO_SANDBOX=bwrap) but bubblewrap does not work here."""


@dataclass
class Layout:
    """What the script sees: ``read_only`` paths, its ``run_dir`` (read-write) and, for the log,
    the paths refused (``hidden``: path, reason)."""

    run_dir: Path
    read_only: list[Path] = field(default_factory=list)
    hidden: list[tuple[Path, str]] = field(default_factory=list)
    #: Single files shown read-only at another path: (file on the host, path in the sandbox).
    files: list[tuple[Path, str]] = field(default_factory=list)


#: matplotlib's cache folder in the sandbox (``HOME`` is ``/tmp``).
SANDBOX_FONT_CACHE = "/tmp/.cache/matplotlib"


def matplotlib_cache(environ: Mapping[str, str]) -> Path:
    """Where matplotlib keeps its cache for a process with ``environ``: ``MPLCONFIGDIR``, else
    ``XDG_CACHE_HOME/matplotlib``, else ``~/.cache/matplotlib``."""
    if environ.get("MPLCONFIGDIR"):
        return Path(environ["MPLCONFIGDIR"])
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]) / "matplotlib"
    return Path(environ.get("HOME") or Path.home()) / ".cache" / "matplotlib"


def font_caches(folders: Iterable[Path]) -> list[tuple[Path, str]]:
    """The matplotlib font lists (``fontlist-v*.json``) found in ``folders`` (the first of each
    name), each with its path in the sandbox's cache folder. Shown read-only in a writable
    folder, they spare a script started cold the building of the list (~0.7 s here). They hold
    the paths of font files, which the sandbox shows too (Python, ``/usr``)."""
    found: dict[str, Path] = {}
    for folder in folders:
        with contextlib.suppress(OSError):
            for path in sorted(Path(folder).glob("fontlist-v*.json")):
                if path.is_file() and not path.is_symlink():
                    found.setdefault(path.name, path)
    return [(path, f"{SANDBOX_FONT_CACHE}/{name}") for name, path in found.items()]


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def python_paths() -> list[Path]:
    """The worker's Python: the venv, its base installation, and the interpreter itself."""
    paths = {Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    paths.add(_real(sys.executable).parent)
    return sorted(paths)


def package_paths(names: Iterable[str] = PACKAGES) -> list[Path]:
    """The folders of the service packages scripts import (editable installs point into the
    checkout: only the package folder is shown, not the checkout)."""
    found = []
    for name in names:
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                found.extend(Path(p) for p in spec.submodule_search_locations)
    return found


def software_paths(environ: Mapping[str, str]) -> list[Path]:
    """The folders of the worker's ``PATH`` and the paths ``SOFTWARE_VARIABLES`` name (a site's
    SAS or CIAO, set up in the worker's environment, works in the sandbox as outside)."""
    paths = []
    for name in ("PATH", *SOFTWARE_VARIABLES):
        for part in environ.get(name, "").split(os.pathsep):
            if part.startswith("/"):
                paths.append(Path(part))
    return paths


def script_paths(scripts_dir: Path) -> list[Path]:
    """The scripts folder, plus the targets of its symbolic links that lie outside it (a
    scripts folder may link the kit, ``regio_kit.py``, from another one)."""
    scripts_dir = Path(scripts_dir)
    paths = [scripts_dir]
    root = _real(scripts_dir)
    seen = 0
    for folder, dirs, files in os.walk(scripts_dir):
        for name in dirs + files:
            seen += 1
            path = Path(folder) / name
            if path.is_symlink():
                target = _real(path)
                if not _inside(target, root) and target.exists():
                    paths.append(target)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        if seen > MAX_SCAN:
            break
    return paths


def layout(
    run_dir: Path,
    *,
    read_only: Iterable[Path | str],
    private: Iterable[Path | str],
    allowed: Iterable[Path | str] = (),
) -> Layout:
    """The layout for a run: ``read_only`` candidates that exist, minus those that would show a
    ``private`` folder (sessions, instance): a candidate holding one, or inside one unless it is
    inside an ``allowed`` folder (the archive folders: the demo archive lives in the instance)."""
    run_dir = Path(run_dir)
    private_real = [_real(p) for p in private]
    allowed_real = [_real(p) for p in allowed]
    result = Layout(run_dir=run_dir)
    seen: set[Path] = set()
    for candidate in read_only:
        path = Path(candidate)
        if not path.is_absolute() or path in seen or not path.exists():
            continue
        seen.add(path)
        real = _real(path)
        problem = None
        for root in private_real:
            if _inside(root, real):
                problem = f"it holds {root}"
            elif _inside(real, root) and not any(_inside(real, a) for a in allowed_real):
                problem = f"it lies inside {root}"
            if problem:
                break
        if problem:
            result.hidden.append((path, problem))
        else:
            result.read_only.append(path)
    result.read_only.sort(key=lambda p: (len(p.parts), str(p)))  # parents before children
    return result


def bwrap_command(
    bwrap: str, command: Sequence[str], plan: Layout, env: dict[str, str] | None = None
) -> list[str]:
    """The bwrap command line running ``command`` in the run folder with the layout ``plan``."""
    argv = [bwrap, *NAMESPACES]
    for name in SYSTEM:
        if os.path.islink(name):
            argv += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            argv += ["--ro-bind", name, name]
    # /proc read-only: a uid-0 script (a worker running as root) must not write sysctls
    argv += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev"]
    argv += ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    for source, target in plan.files:
        argv += ["--dir", os.path.dirname(target), "--ro-bind", str(source), target]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path in plan.read_only:
        argv += ["--ro-bind", str(path), str(path)]
        real = _real(path)
        if real != path:  # a link in the path: the target's own path works too
            argv += ["--ro-bind", str(real), str(real)]
    run_dir = str(plan.run_dir)
    argv += ["--bind", run_dir, run_dir]
    for name in PROTECTED:
        argv += ["--ro-bind-try", f"{run_dir}/{name}", f"{run_dir}/{name}"]
    argv += ["--remount-ro", "/", "--chdir", run_dir]
    for key, value in (env or {}).items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


def reaper_command(command: Sequence[str]) -> list[str]:
    """The fallback: ``command`` under the child subreaper ``app/reaper.py``."""
    return [sys.executable, "-I", "-S", str(REAPER), "--", *command]


def find_bwrap() -> str | None:
    """The bwrap executable: on the PATH, else ``BWRAP_DEFAULT``; None if neither exists."""
    found = shutil.which(BWRAP)
    if found:
        return found
    return BWRAP_DEFAULT if os.access(BWRAP_DEFAULT, os.X_OK) else None


@functools.lru_cache(maxsize=4)
def probe(bwrap: str) -> str | None:
    """None if ``bwrap`` can make the namespaces the runner asks for here, else why not.

    Cached per process: a work horse probes once (the rq worker forks one per job)."""
    try:
        result = subprocess.run(
            [bwrap, *NAMESPACES, "--ro-bind", "/", "/", "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} cannot run: {exc}"
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines()
        return f"{bwrap} does not work here: {why[-1] if why else f'exit {result.returncode}'}"
    return None
