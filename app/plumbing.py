"""Plumbing shared by the app's modules. It owns no store and no file format.

- Times: ``now`` (ISO 8601 UTC, ``Z``-suffixed, as every record and file of Regio writes them),
  ``iso`` and ``parse_time``.
- Atomic files: ``atomic_path``, ``write_atomic``, ``write_json``: the data goes to a private
  temporary file next to the target (``.<name>.<random>.tmp``), renamed over it at the end, so
  readers and concurrent writers never see half a file and a failure leaves the old file intact.
- Child processes: ``die_with_parent``, a ``preexec_fn`` setting the Linux parent-death signal, so
  a child cannot outlive the process that started it (``app.service`` for its workers and web
  server, ``app.redis_server`` for the embedded Redis, ``app.runner`` for a run's script).

The stores that use them (``app.runs``, ``app.sessions``, ``app.accounts``) still decide their
own file names and layouts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import json
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# loaded once, at import: dlopen in a forked child of a threaded process could deadlock
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------------------------- times


def iso(when: dt.datetime, timespec: str = "milliseconds") -> str:
    """An aware datetime as ISO 8601 UTC text ending in ``Z`` (``2025-01-31T12:00:00.000Z``)."""
    return when.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def now(timespec: str = "milliseconds") -> str:
    """The current time as ``iso`` writes it; ``timespec="seconds"`` drops the milliseconds."""
    return iso(dt.datetime.now(dt.UTC), timespec)


def parse_time(text: str) -> dt.datetime:
    """An aware datetime from ISO 8601 text (``Z`` or an offset); a time without zone is UTC."""
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


# ------------------------------------------------------------------------------ atomic files


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A private temporary name for writing ``path``: it replaces ``path`` when the block ends
    without an error and is removed otherwise. The folder must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, making its folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path | str, data: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (``default`` as in ``json.dumps``)."""
    write_atomic(path, json.dumps(data, indent=1, default=default) + "\n")


# --------------------------------------------------------------------------- child processes


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process ``parent_pid`` (the one starting
    it, ``os.getpid()``) dies, even by SIGKILL; it exits at once if that already happened.

    Linux ties the signal to the thread that forked the child: start children from a thread that
    lives as long as the process (the main thread), or they get ``sig`` when that thread ends."""

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl = getattr(_LIBC, "prctl", None)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
