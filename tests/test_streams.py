"""Live log streams (``/api/runs/<id>/events``): exact byte offsets whatever the log holds, and at
most REGIO_STREAMS_PER_USER open streams per user, counted in Redis across web processes.

How many streams a web process holds while its API stays responsive is measured by
``bench/streams.py``; ``tests/test_supervision.py`` checks that the API answers with more streams
open than gthread had threads.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import redis

from app import create_app, runs
from app.plumbing import now
from app.views import runs_api
from tests.conftest import ROOT, app_settings
from tests.test_api import annulus, circle, source_of

SCRIPTS = ROOT / "tests" / "scripts"


@pytest.fixture
def env(tmp_path, sample_index, redis_url):
    return {**app_settings(tmp_path, sample_index, redis_url, SCRIPTS), "STREAMS_PER_USER": 2}


@pytest.fixture
def session_url(client, sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    src, _ = source_of(truth)
    response = client.post(
        "/api/sessions", json={"source": circle(src), "background": annulus(src)}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["url"]


def queued_run(client, session_url) -> str:
    """A run that stays QUEUED (no worker in these tests) and so never ends by itself."""
    response = client.post(f"{session_url}/runs", json={"script": "stages"})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def ended_run_with_log(client, session_url, log: bytes) -> str:
    """A run that ended (ERROR) with ``log`` as its log file."""
    run_id = queued_run(client, session_url)
    db = runs.db_path(client.application.extensions["regio.settings"]["SESSIONS"])
    run = runs.get(db, run_id)
    (Path(run.run_dir) / runs.LOG).write_bytes(log)
    runs.finish(db, run_id, runs.ERROR, expect={"phase": runs.QUEUED}, ended=now(), error="test")
    return run_id


def events(response) -> list[tuple[str, str | None, str]]:
    """(event, id, data) of a whole SSE response (closed after, as a WSGI server does)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    response.close()
    assert "\r" not in text, "a carriage return would split an SSE line"
    found = []
    for block in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if line.startswith(("event:", "id:", "data:")):
                key, _, value = line.partition(":")
                fields.setdefault(key, []).append(value[1:] if value.startswith(" ") else value)
        if "event" in fields:
            found.append(
                (fields["event"][0], (fields.get("id") or [None])[0], "\n".join(fields["data"]))
            )
    return found


# ----------------------------------------------------------------------------- the log as events


def test_offsets_are_exact_bytes_and_resuming_anywhere_continues_exactly(client, session_url):
    long_line = "é" * (runs_api.STREAM_CHUNK // 2 + 7)  # two bytes each: longer than a chunk
    log = (
        b"plain\n"
        + "ünïcode ✓\n".encode()
        + b"latin-1 caf\xe9 is not UTF-8\n"
        + b"progress 10%\r20%\r30%\n"
        + b"windows line\r\n"
        + long_line.encode()
        + b"\n"
        + b"last line without newline"
    )
    run_id = ended_run_with_log(client, session_url, log)
    got = events(client.get(f"/api/runs/{run_id}/events"))
    assert got[0][0] == "state" and got[-1][0] == "end"
    lines = [(int(i), data) for kind, i, data in got if kind == "log"]
    assert lines[-1][0] == len(log) and int(got[-1][1]) == len(log)
    texts = [data for _, data in lines]
    assert texts[:5] == [
        "plain",
        "ünïcode ✓",
        "latin-1 caf\ufffd is not UTF-8",
        "30%",
        "windows line",
    ]
    assert "".join(texts[5:-1]) == long_line and len(texts) > 7, "the long line comes in pieces"
    assert texts[-1] == "last line without newline"
    for offset, _ in lines:  # every id is a boundary: resuming there repeats and loses nothing
        again = events(
            client.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": str(offset)})
        )
        assert [d for k, _, d in again if k == "log"] == texts[
            [o for o, _ in lines].index(offset) + 1 :
        ]


def test_a_stream_follows_a_log_as_it_grows(client, session_url, monkeypatch):
    monkeypatch.setattr(runs_api, "STREAM_POLL", 0.01)
    run_id = queued_run(client, session_url)
    db = runs.db_path(client.application.extensions["regio.settings"]["SESSIONS"])
    log_path = Path(runs.get(db, run_id).run_dir) / runs.LOG
    stream = runs_api.event_stream(db, run_id, 0)
    assert next(stream).startswith("retry:")
    assert '"phase": "QUEUED"' in next(stream)
    log_path.write_bytes(b"half a li")
    runs.update(db, run_id, expect={"phase": runs.QUEUED}, stage="one")
    assert '"stage": "one"' in next(stream), "a change of the record is seen"
    with open(log_path, "ab") as f:
        f.write(b"ne\nsecond ")
    assert next(stream) == runs_api._sse("log", "half a line", 12)
    runs.finish(db, run_id, runs.ERROR, expect={"phase": runs.QUEUED}, ended=now(), error="x")
    rest = "".join(stream)
    assert runs_api._sse("log", "second ", 19) in rest and "event: end" in rest


# --------------------------------------------------------------------------- streams per user


def test_a_user_has_at_most_streams_per_user_open(client, session_url, redis_url):
    run_id = queued_run(client, session_url)
    url = f"/api/runs/{run_id}/events"
    first = client.get(url, buffered=False)
    second = client.get(url, buffered=False)
    assert first.status_code == second.status_code == 200
    refused = client.get(url)
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "2 live log streams" in refused.get_json()["message"]
    other = client.get(url, buffered=False, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200, "another client has streams of its own"
    other.close()
    first.close()  # closing a stream frees its place at once
    third = client.get(url, buffered=False)
    assert third.status_code == 200
    for response in (second, third):
        response.close()
    with redis.Redis.from_url(redis_url) as conn:
        assert [k for k in conn.keys("regio:streams:*") if conn.zcard(k)] == []


def test_streams_of_a_dead_web_process_stop_counting(client, session_url, monkeypatch):
    monkeypatch.setattr(runs_api, "STREAM_LEASE", 0.5)
    run_id = queued_run(client, session_url)
    url = f"/api/runs/{run_id}/events"
    conn = client.application.extensions["regio.redis"]
    for _ in range(2):  # two slots taken and never released, as by a killed process
        assert runs_api.StreamSlot(conn, "address:127.0.0.1", 2).take()
    assert client.get(url).status_code == 429
    time.sleep(0.6)
    stream = client.get(url, buffered=False)
    assert stream.status_code == 200
    stream.close()


def test_streams_go_on_when_redis_is_unreachable(env, session_url, client):
    run_id = ended_run_with_log(client, session_url, b"one line\n")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    without_redis = create_app({**env, "REDIS_URL": dead, "STREAMS_PER_USER": 1}).test_client()
    for _ in range(2):  # more than STREAMS_PER_USER: nothing is counted, nothing refused
        got = events(without_redis.get(f"/api/runs/{run_id}/events"))
        assert [d for k, _, d in got if k == "log"] == ["one line"]
