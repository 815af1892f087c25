"""Warm starts of Python scripts: a fork server per worker that has already imported the science
stack, whose children run scripts inside the very sandbox a cold start would use.

Why: a cold Python script pays interpreter start-up and the imports of numpy, astropy,
matplotlib... (1-2 s) on every run, often more than its work. How, keeping the script contract
(``python SCRIPT input.json`` in the run folder, stdout/stderr to the log, exit code) and the
containment of ``app.sandbox``:

- the **zygote** (``serve``; one per rq worker, started and restarted by ``Zygote``, a child of
  the worker that dies with it) imports ``WARM_PRELOAD`` (installed packages only, never code
  of the scripts folder: the zygote is not confined, so it runs nothing a scientist wrote),
  draws one matplotlib figure (fonts loaded), and listens on a Unix socket in a private folder
  (mode 0700) that no sandbox shows. Its environment is the scripts' (no ``REGIO_*``, no
  ``RQ_*``), so its memory, which every run inherits, holds no secret;
- per run the runner (``app.runner``) starts bubblewrap exactly as for a cold start (same
  layout: the run folder read-write, the rest read-only, new PID/network/IPC/UTS namespaces,
  ``--die-with-parent``) but runs in it a **holder** (``HOLDER``: a shell that says it is ready,
  then waits for an exit code on its stdin and exits with it; it ignores SIGTERM, so a stopped
  script keeps the grace a cold one has). It sends the zygote the
  namespaces of the sandbox (``/proc/PID/ns/*`` descriptors), the write end of the log pipe, the
  holder's stdin, argv, folder and environment;
- the zygote forks; the child joins the sandbox's namespaces (``setns``: user, mount, network,
  IPC, UTS, cgroup, and PID for its children) and forks the **script process**, which is then a
  member of the sandbox's PID namespace, sees only the sandbox's file system, drops every
  capability (bounding set, ambient, effective/permitted/inheritable; no new privileges), closes
  every descriptor but the log, re-seeds the random generators, and runs the script with
  ``runpy`` as ``__main__``. The child waits for it (and kills it if the runner's connection
  drops) and writes its exit status to the holder, which exits with it: bubblewrap ends with the
  script's status as for a cold start, and takes every process left in the sandbox with it.

The runner's supervision (log, stages, time limit, cancel, kill) is unchanged: it watches the
bubblewrap process as always. A script process killed or crashing fails only its run; a dead
zygote is restarted by the worker before its next job (``Zygote.ensure``); a run that cannot
start warm (no zygote, the zygote refuses, the sandbox is not bubblewrap) starts cold, and its
log says which. Non-Python scripts and manifests with ``cold_start = true`` always start cold.

Standard library only at the top (``serve`` runs as ``python app/warm.py serve``, without the
service's packages, with the environment and so the ``sys.path`` of a cold start).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence

#: Modules the zygote imports by default (installed packages only; REGIO_WARM_PRELOAD).
DEFAULT_PRELOAD = (
    "numpy", "scipy.spatial", "scipy.optimize", "astropy.io.fits", "astropy.wcs",
    "astropy.table", "astropy.time", "astropy.coordinates", "matplotlib.figure",
    "matplotlib.backends.backend_agg", "matplotlib.path", "regions", "mocpy",
)  # fmt: skip
#: Namespaces joined, in this order (the user namespace first: it owns the others).
NAMESPACES = ("user", "mnt", "net", "ipc", "uts", "cgroup", "pid")
#: What bubblewrap runs in a warm sandbox: ready on stdout, then the script's exit code from
#: stdin (125 if none comes: the warm start failed).
#: It ignores SIGTERM: stopping a run signals every process under bubblewrap, and the holder's
#: death would end the sandbox, and the script in it, at once, without the grace a script gets
#: to tidy up (the runner's SIGKILL after ``KILL_GRACE`` still ends everything).
HOLDER = [
    "/bin/sh",
    "-c",
    "trap '' TERM; echo ready; exec 1>&-; read -r code || code=125; exit \"$code\"",
]
SOCKET_NAME = "zygote.sock"
START_TIMEOUT = 120.0  # seconds for the zygote's imports
READY_TIMEOUT = 30.0  # seconds for the holder to say the sandbox is ready
REPLY_TIMEOUT = 30.0  # seconds for the zygote to fork the script
MAX_REQUEST = 1 << 20
HERE = os.path.abspath(__file__)

# prctl(2) and capability constants (linux/prctl.h, linux/capability.h)
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522


class WarmError(RuntimeError):
    """A warm start could not be made (the run then starts cold)."""


# ------------------------------------------------------------------------------ worker side


class Zygote:
    """The worker's fork server: a child process, restarted by ``ensure`` when it has died."""

    def __init__(
        self, preload: Sequence[str] = DEFAULT_PRELOAD, env: Mapping[str, str] | None = None
    ):
        self.preload = list(preload)
        self.env = dict(env if env is not None else scripts_env(os.environ))
        self.folder = ""
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.problem: str | None = None
        self.owner = os.getpid()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.folder, SOCKET_NAME)

    def alive(self) -> bool:
        """Whether the zygote runs (asked from the worker or from one of its work horses)."""
        if self.proc is None:
            return False
        if os.getpid() == self.owner:
            return self.proc.poll() is None
        try:  # a work horse: not its child, so look at /proc (a zombie is dead)
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except (OSError, IndexError):
            return False

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start the zygote and wait until it listens; False (``problem`` says why) if it
        could not."""
        self.stop()
        self.folder = tempfile.mkdtemp(prefix="regio-warm-")  # 0700: only this user
        self.owner = os.getpid()
        env = {**self.env, "MPLCONFIGDIR": os.path.join(self.folder, "mpl")}
        from app.plumbing import die_with_parent

        self.proc = subprocess.Popen(
            [sys.executable, HERE, "serve", self.socket_path, *self.preload],
            env=env,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL),  # noqa: PLW1509
        )
        self.starts += 1
        line = _read_line(self.proc.stdout.fileno(), timeout)  # type: ignore[union-attr]
        if line != "ready":
            self.problem = f"the warm server did not start ({line or 'no answer'})"
            self.stop()
            return False
        self.problem = None
        return True

    def ensure(self) -> bool:
        """Restart the zygote if it died; whether it is alive."""
        return self.alive() or self.start()

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = ""


#: The zygote of this worker (set in the rq worker process, inherited by its work horses).
CURRENT: Zygote | None = None


def current() -> Zygote | None:
    """This worker's zygote, if it runs."""
    return CURRENT if CURRENT is not None and CURRENT.alive() else None


def scripts_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the zygote: the worker's without Regio's and rq's settings."""
    return {k: v for k, v in environ.items() if not k.startswith(("REGIO_", "RQ_"))}


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


# -------------------------------------------------------------------------------- horse side


def sandbox_pid(wrapper: int) -> int:
    """The deepest process under the bubblewrap process ``wrapper`` (the holder): a member of
    every namespace of the sandbox."""
    from app.reaper import children_map

    children = children_map()
    best, depth, todo = wrapper, 0, [(wrapper, 0)]
    while todo:
        pid, d = todo.pop()
        if d > depth:
            best, depth = pid, d
        todo.extend((c, d + 1) for c in children.get(pid, []))
    if best == wrapper:
        raise WarmError("the sandbox has no process")
    return best


def start_in_sandbox(
    zygote: Zygote,
    ns_pid: int,
    log_fd: int,
    status_fd: int,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
) -> tuple[socket.socket, int]:
    """Ask ``zygote`` to run ``argv`` in the namespaces of process ``ns_pid``; returns the open
    connection (closing it kills the script) and the script process's pid."""
    names, fds = [], []
    try:
        for name in NAMESPACES:
            path = f"/proc/{ns_pid}/ns/{name}"
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue  # not a new one (e.g. no user namespace when bwrap runs as root)
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                names.append(name)
        if "mnt" not in names or "pid" not in names:
            raise WarmError(f"process {ns_pid} is not in a sandbox of its own")
        request = json.dumps(
            {"argv": list(argv), "cwd": cwd, "env": dict(env), "namespaces": names}
        ).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(REPLY_TIMEOUT)
            conn.connect(zygote.socket_path)
            message = struct.pack("!I", len(request)) + request
            socket.send_fds(conn, [message], [log_fd, status_fd, *fds])
            reply = json.loads(_read_line(conn.fileno(), REPLY_TIMEOUT) or "{}")
        except (OSError, ValueError) as exc:
            conn.close()
            raise WarmError(f"the warm server did not answer: {exc}") from None
        if "pid" not in reply:
            conn.close()
            raise WarmError(f"the warm server refused: {reply.get('error', 'no reason given')}")
        return conn, int(reply["pid"])
    except OSError as exc:
        raise WarmError(f"cannot reach the sandbox's namespaces: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)


# ------------------------------------------------------------------------------- the zygote


def serve(path: str, preload: Iterable[str]) -> None:
    """Import ``preload``, listen on ``path``, fork a child per request (``_child``)."""
    if sys.path and sys.path[0] == os.path.dirname(HERE):
        sys.path.pop(0)  # app/ is not a folder of importable modules
    loaded = []
    for name in preload:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional package: the rest stays warm
            print(f"warm: cannot preload {name}: {exc}", file=sys.stderr, flush=True)
    if "matplotlib.figure" in sys.modules and "matplotlib.backends.backend_agg" in sys.modules:
        _warm_matplotlib()
    cap_last = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115
    gc.collect()
    gc.freeze()  # the preloaded objects: never scanned (nor copied) by a child's collections
    keep = _read_only_files()  # descriptors the imports left open (font files...)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(REPLY_TIMEOUT)
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 16)
            if len(data) < 4:
                raise ValueError("short request")
            (size,) = struct.unpack("!I", data[:4])
            if size > MAX_REQUEST:
                raise ValueError("request too large")
            while len(data) < 4 + size:
                more = conn.recv(4 + size - len(data))
                if not more:
                    raise ValueError("truncated request")
                data += more
            request = json.loads(data[4 : 4 + size])
            if len(fds) != 2 + len(request["namespaces"]):
                raise ValueError("wrong number of descriptors")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            listener.detach()  # its descriptor is closed below, with the others
            code = 1
            try:
                _child(conn, request, fds, keep, cap_last)
            except BaseException as exc:  # noqa: BLE001 - tell the runner, never return
                with contextlib.suppress(Exception):
                    conn.sendall(json.dumps({"error": repr(exc)}).encode() + b"\n")
            os._exit(code)
        conn.close()
        for fd in fds:
            os.close(fd)


def _warm_matplotlib() -> None:
    """Draw one small figure: fonts found and loaded, text layout caches filled."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2), dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([1, 2], [1, 2], ".", label="x")
    ax.set_xscale("log")
    ax.set_title("warm 0.5 keV", fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(io.BytesIO(), format="png")


def _read_only_files() -> set[int]:
    """Descriptors above 2 open read-only on regular files (what imports keep open, e.g. font
    files): the script processes keep them (they show nothing the sandbox does not)."""
    keep = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = int(next(li for li in f if li.startswith("flags:")).split()[1], 8)
            if os.path.isfile(os.readlink(f"/proc/self/fd/{fd}")) and flags & 0o3 == os.O_RDONLY:
                keep.add(fd)
        except (OSError, StopIteration, ValueError):
            continue
    return keep


def _child(
    conn: socket.socket, request: dict, fds: list[int], keep: set[int], cap_last: int
) -> None:
    """In the sandbox's namespaces, fork the script process, wait for it, report its status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    log_fd, status_fd, *ns_fds = fds
    libc = ctypes.CDLL(None, use_errno=True)
    for name, fd in zip(request["namespaces"], ns_fds, strict=True):
        if libc.setns(fd, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        os.close(fd)
    conn_fd = conn.fileno()
    pid = os.fork()
    if pid == 0:
        conn.detach()
        _script(request, log_fd, {log_fd, status_fd, conn_fd}, keep, cap_last, libc)
    os.close(log_fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    pidfd = os.pidfd_open(pid)
    while not select.select([pidfd], [], [], 0.5)[0]:
        with contextlib.suppress(OSError):
            if select.select([conn], [], [], 0)[0] and not conn.recv(1, socket.MSG_PEEK):
                os.kill(pid, signal.SIGKILL)  # the runner is gone
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 + (-code) if code < 0 else code  # as bubblewrap reports a signal
    os.write(status_fd, f"{code}\n".encode())
    os._exit(0)


def _read_only_file(fd: int) -> bool:
    import fcntl
    import stat

    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        return regular and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except OSError:
        return False


def _drop_capabilities(libc: ctypes.CDLL, cap_last: int) -> None:
    """No capability left and none to gain: bounding set and ambient set emptied, effective,
    permitted and inheritable sets cleared, no new privileges (set-user-ID programs included)."""
    for cap in range(cap_last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")


def _script(
    request: dict, log_fd: int, close: set[int], keep: set[int], cap_last: int, libc: ctypes.CDLL
) -> None:
    """The script process: a member of the sandbox; never returns."""
    code = 1
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and (fd in close or fd not in keep or not _read_only_file(fd)):
                with contextlib.suppress(OSError):
                    os.close(fd)
        _drop_capabilities(libc, cap_last)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _reseed()
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = _unbuffered(1, "strict")
        sys.stderr = _unbuffered(2, "backslashreplace")
        argv = request["argv"]
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        code = _run_main(argv[0])
        import atexit

        atexit._run_exitfuncs()  # as an interpreter that ends
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _unbuffered(fd: int, errors: str):
    import io

    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors=errors, write_through=True
    )


def _reseed() -> None:
    """Fresh random states (a fork shares the zygote's)."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _run_main(path: str) -> int:
    """``runpy.run_path(path)`` as ``__main__``; the exit code as the interpreter would give."""
    import runpy
    import traceback

    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter: traceback, exit code 1
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) < 3:
        print("usage: warm.py serve SOCKET [MODULE...]", file=sys.stderr)
        sys.exit(2)
    serve(sys.argv[2], sys.argv[3:])
