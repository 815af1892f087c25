"""Benchmark of standing requests: how long from an observation landing in the archive to its
products being listed, against a manual run of the same script on the same data.

A demo archive of the CL0958 field is made (``demo.archive``); one XMM observation is held
back, the rest indexed. By default the held-back files look just written (their modification
time is now), so ingest waits REGIO_INGEST_SETTLE seconds before reading them; ``--kept-times``
keeps their old times, as ``rsync -a`` would. A session on a bright source of the field gets a standing request
(``generate_spectra`` by default, scope "new"), then the real processes run as ``make run``
would start them: an rq worker, and ``python -m app ingest`` (REGIO_INGEST_SETTLE as set, 2 s by
default). The held-back observation is copied aside and moved into the archive; the clock starts
at the move. Polling like a client would, the benchmark notes when the new exposures are in the
index, when the run is queued, started and ended, and when ``GET /api/runs/<id>/products`` lists
its products.

The reference, measured in the same run: a manual launch of the same script on the same
exposures (``POST /api/sessions/<id>/runs`` after selecting them), from the click to the products
listed. ``standing_vs_manual`` is the ratio of the two (lower is better; the difference is what
ingest and the standing request add: settling, indexing, matching).

Run: ``.venv/bin/python bench/standing_latency.py [--script NAME]``. The last line is
``RESULT file_to_products_s=<s> ... standing_vs_manual=<ratio>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app, jobs, runs  # noqa: E402
from app.plumbing import parse_time  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from indexer.index import Index  # noqa: E402

POLL = 0.05  # seconds between two looks, as a client polling the API
DEADLINE = 600.0


def wait(condition, what: str) -> Any:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(POLL)
    raise SystemExit(f"gave up after {DEADLINE} s waiting for {what}")


def child_env(values: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update({f"REGIO_{k}": str(v) for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="generate_spectra")
    parser.add_argument("--settle", type=int, default=2, help="REGIO_INGEST_SETTLE [s]")
    parser.add_argument(
        "--kept-times", action="store_true",
        help="keep the files' modification times (rsync -a, cp -p): no settling wait; by "
        "default the files look just written, so they wait REGIO_INGEST_SETTLE seconds",
    )  # fmt: skip
    args = parser.parse_args()

    from demo.archive import generate_archive
    from indexer.build import build_index

    with tempfile.TemporaryDirectory(prefix="regio-bench-standing-") as tmp_name:
        tmp = Path(tmp_name)
        source_archive, archive, staging = tmp / "generated", tmp / "archive", tmp / "staging"
        print("generating the demo archive ...", flush=True)
        truth = generate_archive(source_archive, observations=6, seed=1234, chandra=0)
        field = [o for o in truth["observations"] if o["field"] == "CL0958"]
        held = field[-1]["obsid"]
        archive.mkdir()
        staging.mkdir()
        for folder in source_archive.iterdir():
            if folder.is_dir() and folder.name != held:
                shutil.copytree(folder, archive / folder.name)
        values: dict[str, Any] = {
            "INSTANCE": tmp / "instance", "INDEX": tmp / "index", "SESSIONS": tmp / "sessions",
            "ARCHIVE": archive, "SCRIPTS": ROOT / "scripts", "INGEST_SETTLE": args.settle,
        }  # fmt: skip
        print("indexing the archive without the held-back observation ...", flush=True)
        build_index([archive], values["INDEX"])
        with EmbeddedRedis(tmp / "redis", port=free_port()) as server:
            values["REDIS_URL"] = server.url
            env = child_env(values)
            logs = tmp / "logs"
            logs.mkdir()
            worker = subprocess.Popen(
                jobs.worker_command(server.url, name="bench-standing"), cwd=ROOT, env=env,
                stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            )  # fmt: skip
            ingest = subprocess.Popen(
                [sys.executable, "-m", "app", "ingest"], cwd=ROOT, env=env,
                stdout=open(logs / "ingest.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            )  # fmt: skip
            try:
                return measure(values, truth, held, source_archive, archive, staging, args, logs)
            finally:
                for proc in (ingest, worker):
                    proc.send_signal(signal.SIGTERM)
                for proc in (ingest, worker):
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def measure(values, truth, held, source_archive, archive, staging, args, logs) -> int:
    client = create_app(values).test_client()
    src = max(
        (s for s in truth["sources"] if s["kind"] == "point" and held in s["expected"]),
        key=lambda s: s["expected"][held]["EPN"]["counts_r30"],
    )
    region = {"source": f'icrs;circle({src["ra"]},{src["dec"]},30")',
              "background": f'icrs;annulus({src["ra"]},{src["dec"]},60",120")'}  # fmt: skip
    session = client.post("/api/sessions", json=region).get_json()
    sid = session["id"]
    made = client.post(f"/api/sessions/{sid}/standing-requests", json={
        "instruments": ["XMM/EPIC"], "scripts": [{"script": args.script}], "scope": "new",
    })  # fmt: skip
    assert made.status_code == 201, made.get_json()
    wait(lambda: b"watching" in (logs / "ingest.log").read_bytes(), "the ingest process")
    # files change as the archive delivers them: copied aside, then moved in at once
    shutil.copytree(source_archive / held, staging / held)
    if not args.kept_times:  # written just now, as by a transfer without -p
        for path in (staging / held).iterdir():
            os.utime(path)
    landed = time.monotonic()
    landed_wall = time.time()
    os.rename(staging / held, archive / held)
    index_dir = Path(values["INDEX"])
    wait(lambda: any(r["obsid"] == held for r in Index.load(index_dir).observations()),
         "the new observation in the index")  # fmt: skip
    indexed = time.monotonic()

    def standing_run():
        page = client.get("/api/runs?trigger=standing").get_json()
        return page["runs"][0] if page["runs"] else None

    run = wait(standing_run, "the standing request's run")
    queued = time.monotonic()
    rid = run["id"]

    def listed():
        current = client.get(f"/api/runs/{rid}").get_json()
        if current["phase"] in runs.TERMINAL:
            products = client.get(f"/api/runs/{rid}/products").get_json()
            return (current, products) if products or current["phase"] != "COMPLETED" else None
        return None

    final, products = wait(listed, "the products")
    done = time.monotonic()
    if final["phase"] != "COMPLETED":
        raise SystemExit(f"the run ended {final['phase']}: {final['error']}")

    def wall(text: str) -> float:
        return parse_time(text).timestamp() - landed_wall

    standing_s = done - landed
    print(f"script {args.script} on {len(final['trigger_detail']['new_exposures'])} new "
          f"exposures of observation {held}, REGIO_INGEST_SETTLE={args.settle}, "
          f"{'modification times kept' if args.kept_times else 'files just written'}:")  # fmt: skip
    print(f"  file landed -> in the index     {indexed - landed:6.2f} s")
    print(f"  file landed -> run queued       {queued - landed:6.2f} s "
          f"(record created {wall(final['created']):.2f} s)")  # fmt: skip
    print(f"  file landed -> run started      {wall(final['started']):6.2f} s")
    print(f"  file landed -> run ended        {wall(final['ended']):6.2f} s")
    print(f"  file landed -> products listed  {standing_s:6.2f} s ({len(products)} products)")

    # the reference: the same script, launched by hand on the same exposures
    exposures = final["trigger_detail"]["new_exposures"]
    assert client.put(f"/api/sessions/{sid}/selection",
                      json={"exposures": exposures}).status_code == 200  # fmt: skip
    clicked = time.monotonic()
    manual = client.post(f"/api/sessions/{sid}/runs", json={"script": args.script}).get_json()
    rid = manual["id"]
    final, products = wait(listed, "the manual run's products")
    manual_s = time.monotonic() - clicked
    print(f"  reference: click -> products listed of a manual run  {manual_s:6.2f} s")
    ratio = standing_s / manual_s
    print(f"standing_vs_manual = {ratio:.2f} (lower is better; 1.00: the automation adds nothing)")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in {
        "file_to_index_s": round(indexed - landed, 2),
        "file_to_queued_s": round(queued - landed, 2),
        "file_to_products_s": round(standing_s, 2),
        "manual_click_to_products_s": round(manual_s, 2),
        "standing_vs_manual": round(ratio, 3),
    }.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
