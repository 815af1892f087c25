"""``python -m app ingest``: keep the index current while the service runs, and start the runs
of standing requests on the data that arrives.

It runs ``indexer.ingest.watch`` on the archive folders of the settings (``REGIO_ARCHIVE``, or
the demo archive, as ``make run`` resolves them: ``settings.archive_dirs``) and the index
``REGIO_INDEX``, with ``REGIO_INGEST_SETTLE`` and ``REGIO_INGEST_RESCAN``. After each build that
changed exposures (``on_change``):

1. the standing requests are served first (``app.automation.check_standing``: the runs are
   queued within a second of the build), then
2. the sky image (HiPS) of the archive is brought up to date (``indexer.hips``), which takes
   longer and only matters to the viewer.

At start, before watching, the standing requests are checked once against the index as it is:
data indexed while this process was not running (by the service's start-up build, or a manual
``python -m indexer build``) is served too.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app import automation
from app import settings as settings_mod

log = logging.getLogger("regio.ingest")


class Ingest:
    """The watcher and its callback, for one set of settings."""

    def __init__(self, values: Mapping[str, Any], *, hips: bool = True) -> None:
        import redis

        self.values = values
        self.hips = hips
        self.redis = redis.Redis.from_url(values["REDIS_URL"])
        self.stop = threading.Event()

    def serve(self, reason: str) -> list[Any]:
        """Start the runs of the standing requests that new data fulfil; never raises."""
        try:
            return automation.check_standing(self.values, self.redis, reason=reason)
        except Exception:
            log.exception("serving the standing requests failed")
            return []

    def on_change(self, report: Any) -> None:
        queued = self.serve(
            f"{len(report.new_exposures)} new, {len(report.changed_exposures)} changed, "
            f"{len(report.removed_exposures)} removed"
        )
        if queued:
            log.info("queued %d run(s) for standing requests", len(queued))
        if self.hips:
            try:
                from indexer.hips import build_hips

                build_hips(Path(self.values["INDEX"]))
            except Exception:  # the sky image is a convenience: never stop ingest for it
                log.exception("HiPS rebuild failed")

    def run(self) -> None:
        """Serve what is already indexed, then watch until ``stop`` is set."""
        from indexer.ingest import watch

        dirs = settings_mod.archive_dirs(self.values)
        while not self.stop.is_set():
            missing = [str(d) for d in dirs if not Path(d).is_dir()]
            if not missing:
                break
            log.warning("waiting for missing archive folder(s): %s", ", ".join(missing))
            self.stop.wait(self.values["INGEST_RESCAN"])
        if self.stop.is_set():
            return
        self.serve("start")
        log.info("watching %s (index %s)", ", ".join(map(str, dirs)), self.values["INDEX"])
        watch(
            dirs,
            Path(self.values["INDEX"]),
            on_change=self.on_change,
            settle=float(self.values["INGEST_SETTLE"]),
            rescan=float(self.values["INGEST_RESCAN"]),
            hips=False,  # rebuilt by on_change, after the standing requests
            stop=self.stop,
        )


def main(values: Mapping[str, Any]) -> int:
    """Run the ingest process until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="[regio ingest] %(message)s", stream=sys.stderr)
    if not values["REDIS_URL"]:
        print(
            "error: REGIO_REDIS_URL is not set: `make run` starts the ingest process with it",
            file=sys.stderr,
        )
        return 2
    ingest = Ingest(values)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        ingest.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        ingest.run()
    except Exception as exc:  # e.g. the index folder is not writable: say so, exit non-zero
        log.exception("ingest stopped after %.0f s: %s", time.monotonic() - started, exc)
        return 1
    return 0
