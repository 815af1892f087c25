"""Test script: a hostile script trying to escape its run folder (tests/test_containment.py).

It reports every attempt on stdout as ``[escape] <what>: blocked (<error>)`` or
``[escape] <what>: DONE``; the tests check the outcome from outside, not these lines.

- ``links`` (param ``tries``: also in ``everything``): replaces its ``log.txt`` with a symbolic
  link to the instance's ``secret_key``, declares an ``output/`` product that is such a link,
  and an ``output/`` folder link to the instance;
- ``everything`` adds: reading the secret key, the run database and another session's files and
  copying what it read into a product, writing into ``regio.db`` and ``accounts.db``, writing
  into the scripts folder, reaching Redis over TCP, writing a kernel setting (/proc/sys);
- in both, leaving a set-user-ID program in its output;
- in both, a grandchild with a clean environment and a session of its own (``setsid``) that
  would run forever, its command line marked ``regio-escape-<run id>``; then the script waits
  for the file ``go`` in its run folder (the test makes it once it has seen the grandchild
  alive, at most ``wait`` seconds) and exits 0, leaving the grandchild behind.
"""

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

MARK = b"ESCAPE-WAS-HERE\n"


def attempt(what, action):
    try:
        result = action()
    except Exception as exc:  # every failure is an expected outcome here
        print(f"[escape] {what}: blocked ({type(exc).__name__}: {exc})", flush=True)
        return None
    print(f"[escape] {what}: DONE", flush=True)
    return result


def read(path):
    return Path(path).read_bytes()[:4096]


def append(path):
    with open(path, "ab") as f:
        f.write(MARK)


def link_over(target, name):
    tmp = Path(f"{name}.escape-link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, name)


def read_tree(root, own):
    """Everything readable below ``root`` but outside ``own`` (other sessions' files)."""
    found = b""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_relative_to(own) or path.suffix in (".db", ".zip"):
                continue
            with contextlib.suppress(OSError):
                found += b"\n== " + str(path).encode() + b"\n" + path.read_bytes()[:4096]
    if not found:
        raise FileNotFoundError(f"nothing readable below {root}")
    return found


def reach(address):
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64)


def rewrite_sysctl():
    path = Path("/proc/sys/vm/swappiness")
    path.write_text(path.read_text())


def set_uid_copy(path):
    path.write_bytes(Path("/bin/true").read_bytes())
    path.chmod(0o4755)
    if not path.stat().st_mode & 0o4000:
        raise PermissionError("the set-user-ID bit did not stick")


def grandchild(marker):
    """Fork twice; the grandchild starts a new session and execs a shell loop with an empty
    environment (no REGIO_RUN_ID), named ``marker``."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    if os.fork():
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.execve("/bin/sh", ["/bin/sh", "-c", "while :; do sleep 1; done", marker], {})


def main(input_path):
    inp = json.loads(Path(input_path).read_text())
    params = inp["params"]
    run_dir = Path(input_path).resolve().parent
    out = Path(inp["output_dir"])
    instance = Path(params["instance"])
    secret = instance / "secret_key"
    sessions = run_dir.parents[2]  # <sessions>/<session>/runs/<run>
    print(f"[STAGE] escape from {run_dir}", flush=True)

    stolen = b""
    if params["tries"] == "everything":
        for what, path in (
            ("read the secret key", secret),
            ("read the run database", sessions / "regio.db"),
        ):
            stolen += attempt(what, lambda p=path: read(p)) or b""
        stolen += attempt("read the other sessions", lambda: read_tree(sessions, run_dir)) or b""
        attempt("write regio.db", lambda: append(sessions / "regio.db"))
        attempt("write accounts.db", lambda: append(sessions / "accounts.db"))
        attempt("write the instance", lambda: append(instance / "escape.txt"))
        attempt("write the scripts folder", lambda: append(Path(__file__).parent / "pwned.txt"))
        if params["redis"]:
            attempt("reach Redis", lambda: reach(params["redis"]))
        attempt("write a kernel setting", rewrite_sysctl)  # the value it holds: harmless
    attempt("leave a set-user-ID program", lambda: set_uid_copy(out / "suid"))
    attempt("write its own output", lambda: (out / "stolen.txt").write_bytes(stolen or MARK))

    attempt("link a product to the secret key", lambda: os.symlink(secret, out / "secret.txt"))
    attempt("link a folder to the instance", lambda: os.symlink(instance, out / "instance"))
    products = [
        {"file": "stolen.txt", "kind": "other", "description": "what it could read"},
        {"file": "secret.txt", "kind": "other", "description": "a link to the secret key"},
        {"file": "instance/secret_key", "kind": "other", "description": "through a folder link"},
    ]
    (out / "products.json").write_text(json.dumps(products))
    attempt("replace its log with a link to the secret key", lambda: link_over(secret, "log.txt"))

    marker = f"regio-escape-{inp['run_id']}"
    grandchild(marker)
    print(f"[STAGE] wait ({marker})", flush=True)
    deadline = time.monotonic() + params["wait"]
    while not (run_dir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("[escape] leaving the grandchild behind", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
