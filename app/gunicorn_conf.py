"""gunicorn settings file of ``make run``'s web server, loaded by path
(``--config file:app/gunicorn_conf.py``, see ``app.service.Service.gunicorn_command``).

The command line carries the options; this file holds what a command line cannot:

- with gevent (``REGIO_WEB_WORKER_CLASS``, default), the standard library is patched here, in
  the master, before gunicorn imports anything else: the master loads the logger class
  (``app.redaction``, hence Flask, redis, ssl), and modules imported before gevent patches them
  keep blocking sockets and locks (gevent warns "Monkey-patching ssl after ssl has already been
  imported"). The gevent worker patches again after the fork, which changes nothing then;
- each web worker gets SIGTERM as soon as its gunicorn master dies (the Linux parent-death
  signal). Without it a worker whose master was killed keeps listening on the port until it
  notices, a few seconds, and the master the supervisor starts in its place cannot bind the
  port meanwhile. (``app.plumbing.die_with_parent`` does the same for the other children; it is
  not imported here, before the patching.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from typing import Any

if os.environ.get("REGIO_WEB_WORKER_CLASS", "gevent") == "gevent":
    from gevent import monkey

    monkey.patch_all()

_PR_SET_PDEATHSIG = 1
# loaded in the master, once: not between fork and the worker's start
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def post_fork(server: Any, _worker: Any) -> None:
    """Runs in each new worker, right after gunicorn forked it from the master ``server``."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != server.pid:  # the master died before prctl took effect
        os._exit(1)
