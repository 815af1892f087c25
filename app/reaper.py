"""The fallback confinement of a script when bubblewrap is not used (``app.sandbox``).

Run as ``python -I -S app/reaper.py COMMAND...`` by the runner: it makes itself a *child
subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), starts COMMAND and waits for it. Every process the
script starts stays its descendant, whatever it does (a new session with ``setsid``, a double
fork, a clean environment): the kernel hands orphans to the nearest subreaper, which is this
process. When the script's main process ends, the reaper kills every process left below it and
exits with the script's status (a script killed by a signal is reported as killed by that signal).
On SIGTERM, SIGINT or SIGHUP (the runner sets SIGTERM as the reaper's parent-death signal, so it
also fires when the work horse is killed) it kills the whole tree and exits.

Standard library only, no ``app`` import: it starts in a few milliseconds with ``-I -S``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
#: Exit status when COMMAND cannot be started (the message goes to stderr, i.e. the run's log).
CANNOT_START = 127


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every live (not zombie) process, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(root: int) -> list[int]:
    """The live descendants of ``root`` (not ``root`` itself), parents before children."""
    children = children_map()
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_tree(root: int, rounds: int = 200, reap_children: bool = True) -> None:
    """SIGKILL every descendant of ``root`` until none is left (new ones may appear while a
    round runs: their parents were killed, so they come back to the subreaper, i.e. below root).
    ``reap_children``: also collect our own dead children (only for the reaper itself: another
    process must not reap children that ``subprocess`` waits for)."""
    for _ in range(rounds):
        pids = descendants(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if reap_children:
            reap()
        time.sleep(0.001)


def reap() -> None:
    """Collect the zombies among our children (orphans handed to us included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: reaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded (no ldconfig run)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reaper: cannot become a child subreaper", file=sys.stderr)
        return CANNOT_START
    me = os.getpid()

    def stop(signum: int, _frame: object) -> None:
        kill_tree(me)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    child = os.fork()
    if child == 0:  # pragma: no cover - the script's process
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"reaper: cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(CANNOT_START)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    kill_tree(me)
    if os.WIFSIGNALED(status):  # die the same way, so the runner sees "killed by signal N"
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(me, sig)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
