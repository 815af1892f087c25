"""Hostile requests: every one gets a JSON 4xx saying what is wrong, and nothing stored changes.

The corpus (``hostile_requests``) covers malformed DS9 and JSON regions, huge numbers, deep
nesting, wrong types in every field, traversal in every path parameter, symbolic links among a
run's products, unknown ids, oversized bodies and control characters. Each request is checked
for its status, the JSON error body ``{"error", "message", "status"}`` and a fragment of the
message, and the session folders, the SQLite databases and the run queue are compared before and
after it. ``bench/hostile.py`` replays the same corpus and measures the CPU time of each request;
this test asserts no time.
"""

from __future__ import annotations

import io
import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import accounts, bodies, create_app, jobs, runs
from app.catalog import load_script
from indexer import limits
from tests.conftest import ROOT, app_settings

SCRIPTS = ROOT / "tests" / "scripts"
PASSWORD = "correct horse battery staple"


@dataclass
class Case:
    """One hostile request and what it must get: ``status`` and a fragment of the message."""

    name: str
    method: str
    path: str
    status: int
    fragment: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def send(self, client, world: dict[str, Any]):
        ids = world["ids"]
        path = self.path.format(**ids)
        kwargs = dict(self.kwargs)
        if "json" in kwargs:  # ids in a JSON body too
            kwargs["json"] = json.loads(json.dumps(kwargs["json"]).replace("{eid}", ids["eid"]))
        if "files" in kwargs:  # multipart bodies are read once: build them for each send
            kwargs["data"] = {
                k: (io.BytesIO(v), f"{k}.reg") for k, v in kwargs.pop("files").items()
            }
            kwargs["data"].update(kwargs.pop("fields", {}))
            kwargs["content_type"] = "multipart/form-data"
        headers = {**world["headers"], **kwargs.pop("headers", {})}
        return client.open(path, method=self.method.upper(), headers=headers, **kwargs)


# ------------------------------------------------------------------------------- the world


def build_world(app, source_ra: float, source_dec: float) -> dict[str, Any]:
    """A session on a covered field, with a queued run whose output folder holds one real
    product and symbolic links leading out of it; in accounts mode an owner with a token."""
    values = app.extensions["regio.settings"]
    client = app.test_client()
    headers: dict[str, str] = {}
    if values["AUTH"] == "accounts":
        db = accounts.db_path(values["SESSIONS"])
        owner = accounts.create_user(db, "owner@example.org", "Owner", PASSWORD)
        accounts.create_user(db, "reader@example.org", "Reader", PASSWORD)
        headers["Authorization"] = f"Token {accounts.create_token(db, owner.id, 'test')}"
    body = {
        "source": f'icrs;circle({source_ra},{source_dec},30")',
        "background": f'icrs;annulus({source_ra},{source_dec},60",120")',
        "title": "hostile corpus",
    }
    response = client.post("/api/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    session = response.get_json()
    assert session["coverage"], "the source must be covered for the selection cases"
    sid = session["id"]
    folder = Path(values["SESSIONS"]) / sid
    run = runs.create(
        runs.db_path(values["SESSIONS"]),
        folder / "runs" / "hostile12345",
        run_id="hostile12345",
        session_id=sid,
        script=load_script(SCRIPTS, "stages"),
        params={},
    )
    output = Path(run.run_dir) / runs.OUTPUT
    (output / "table.txt").write_text("label steps\ntest 3\n")
    (output / "passwd").symlink_to("/etc/passwd")
    (output / "session.json").symlink_to(folder / "session.json")
    (output / "up").symlink_to(folder)
    (Path(run.run_dir) / "log.txt").write_text("[regio] started\n")
    return {
        "app": app,
        "client": client,
        "headers": headers,
        "sessions": Path(values["SESSIONS"]),
        "redis": values["REDIS_URL"],
        "ids": {
            "sid": sid,
            "rid": run.id,
            "eid": session["coverage"][0]["exposure_id"],
            "ra": source_ra,
            "dec": source_dec,
        },
    }


def snapshot(world: dict[str, Any]) -> dict[str, Any]:
    """Everything stored: the files under the sessions folder (SQLite databases by content, so
    that a read leaving the file as it was is not a change) and the length of the run queue."""
    import redis

    out: dict[str, Any] = {}
    root = world["sessions"]
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            out[name] = ("link", str(path.readlink()))
        elif path.suffix == ".db":
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                out[name] = ("db", list(conn.iterdump()))
            finally:
                conn.close()
        elif path.name.endswith("-journal"):
            continue  # a transaction in flight, not something stored
        elif path.is_file():
            out[name] = ("file", path.read_bytes())
        else:
            out[name] = ("folder",)
    conn = redis.Redis.from_url(world["redis"])
    try:
        out["redis:queue"] = jobs.queue_length(conn)
        out["redis:keys"] = sorted(k for k in conn.keys("*") if b"rate" not in k)
    finally:
        conn.close()
    return out


# ------------------------------------------------------------------------------ the corpus


def _polygon(n: int, ra: float = 10.0, dec: float = 10.0, radius: float = 0.01) -> list:
    return [
        [ra + radius * math.cos(2 * math.pi * i / n), dec + radius * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]


def _ds9_polygon(n: int) -> str:
    return "polygon(" + ",".join(f"{a:.4f},{d:.4f}" for a, d in _polygon(n)) + ")"


def _raw(text: str | bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"data": text.encode() if isinstance(text, str) else text, "content_type": content_type}


def _json(value: Any) -> dict[str, Any]:
    return {"json": value}


def hostile_requests() -> list[Case]:
    """The corpus, in single-user mode (``accounts_requests`` adds the accounts-only ones).
    Paths use ``{sid}`` (the session), ``{rid}`` (its run), ``{eid}`` (a covering exposure)."""
    new, regions = "/api/sessions", "/api/sessions/{sid}/regions"
    selection, view, run = "/api/sessions/{sid}/selection", "/api/sessions/{sid}/view", None
    run = "/api/sessions/{sid}/runs"
    circle = 'icrs;circle(10,10,30")'
    cases = [
        # --- malformed DS9
        Case("ds9 unbalanced", "post", new, 400, "cannot parse DS9", _json({"source": "icrs;circle(1,2"})),
        Case("ds9 no frame", "post", new, 400, "no coordinate system", _json({"source": "circle(1,2,3)"})),
        Case("ds9 pixels", "put", regions, 400, "pixel coordinates", _json({"source": "image;circle(1,2,3)"})),
        Case("ds9 point", "post", new, 400, "unsupported shape 'point'", _json({"source": "icrs;point(1,2)"})),
        Case("ds9 vector", "post", new, 400, "cannot parse DS9", _json({"source": "icrs;vector(1,2,3,4)"})),
        Case("ds9 101 shapes", "post", new, 400, "too many shapes", _json({"source": "icrs;" + (circle[5:] + ";") * 101})),
        Case("ds9 102 annuli", "post", new, 400, "too many shapes",
             _json({"source": "icrs;annulus(1,2," + ",".join(f'{i}"' for i in range(1, 105)) + ")"})),
        Case("ds9 1001 vertices", "post", new, 400, "too many polygon vertices: 1001",
             _json({"source": "icrs;" + _ds9_polygon(1001)})),
        Case("ds9 5 x 1000 vertices", "post", new, 400, "vertices in the region",
             _json({"source": "icrs\n" + "\n".join([_ds9_polygon(1000)] * 5)})),
        Case("ds9 newlines", "post", new, 400, "too many lines", _json({"source": "\n" * 5000 + circle})),
        Case("ds9 semicolons", "post", new, 400, "too many lines", _json({"source": "icrs" + ";" * 5000 + circle[5:]})),
        Case("ds9 too long", "post", new, 400, "too long",
             _json({"source": circle + "#" * limits.MAX_TEXT_CHARS})),
        Case("ds9 400 digits", "post", new, 400, "more than 40 digits",
             _json({"source": "icrs;circle(1" + "0" * 400 + ",2,3)"})),
        Case("ds9 infinite radius", "post", new, 400, "positive and finite", _json({"source": "icrs;circle(1,2,1e999)"})),
        Case("ds9 nan centre", "post", new, 400, "finite", _json({"source": "icrs;circle(nan,2,1)"})),
        Case("ds9 latitude", "post", new, 400, "Latitude", _json({"source": "icrs;circle(1,100,1)"})),
        Case("ds9 radius 200 deg", "post", new, 400, "at most 180 deg", _json({"source": "icrs;circle(1,2,200)"})),
        Case("ds9 only exclusions", "post", new, 400, "only has exclusions", _json({"source": 'icrs;-circle(1,2,3")'})),
        Case("ds9 excluded away", "post", new, 400, "exclusions remove all",
             _json({"source": 'icrs;circle(1,2,3");-circle(1,2,4\')'})),
        # at the limits, so that everything is parsed before the last shape is refused
        Case("ds9 full, last bad", "post", new, 400, "strictly positive",
             _json({"source": "icrs\n" + 'circle(1,2,3")\n' * 98 + _ds9_polygon(1000) + '\ncircle(1,2,0")'})),
        Case("ds9 100 polygons, last flat", "post", new, 400, "shape 100: the polygon has no area",
             _json({"source": "icrs\n" + (_ds9_polygon(10) + "\n") * 99 + "polygon(1,1,1,1,1,1)"})),
        Case("ds9 100 shapes too wide", "post", new, 400, "too large for a coverage",
             _json({"source": "icrs\n" + "".join(f"circle({10 + i / 100},10,1)\n-circle({10 + i / 100},10,3)\n" for i in range(50))})),
        Case("ds9 100 shapes excluded away", "post", new, 400, "exclusions remove all",
             _json({"source": "icrs\n" + "".join(f"circle({10 + i / 1000},10,0.1)\n-circle({10 + i / 1000},10,0.3)\n" for i in range(50))})),
        Case("json 100 shapes excluded away", "post", new, 400, "exclusions remove all",
             _json({"source": [{"type": "circle", "ra": 10 + i / 1000, "dec": 10, "radius": 0.1 + (i % 2) * 0.2, "exclude": i % 2 == 1} for i in range(100)]})),
        Case("ds9 polygon excluded away", "post", new, 400, "exclusions remove all",
             _json({"source": "icrs\n" + _ds9_polygon(1000) + "\n-circle(10,10,1)"})),
        Case("ds9 background excluded away", "post", new, 400, "background region: the region is empty",
             _json({"source": circle, "background": "icrs\n" + _ds9_polygon(999) + "\n-circle(10,10,1)"})),
        Case("json full, last bad", "post", new, 400, "shape 100: 'radius' must be positive",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 0.01}] * 98
                    + [{"type": "polygon", "vertices": _polygon(1000)},
                       {"type": "circle", "ra": 1, "dec": 2, "radius": 0}]})),
        Case("json full, last vertex bad", "post", new, 400, "vertex 1000 dec must be",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 0.01}] * 99
                    + [{"type": "polygon", "vertices": _polygon(999) + [[1, "2"]]}]})),
        Case("ds9 flat polygon", "post", new, 400, "no area", _json({"source": "icrs;polygon(1,1,1,1,1,1)"})),
        Case("ds9 annulus inverted", "post", new, 400, "outer_radius", _json({"source": 'icrs;annulus(1,2,30",20")'})),
        Case("ds9 bad background", "post", new, 400, "background region", _json({"source": circle, "background": "nonsense"})),
        Case("ds9 escape in text", "post", new, 400, "control character",
             _raw('{"source": "icrs;circle(1,2,3) # text={\\u001b[31m}"}')),
        Case("ds9 file with NUL", "post", new, 400, "control character U+0000",
             {"files": {"source": circle.encode() + b"\x00"}}),
        Case("ds9 file binary", "post", new, 400, "not text (UTF-8)", {"files": {"source": b"\xff\xfe\x00"}}),
        Case("ds9 file too big", "put", regions, 413, "larger than",
             {"files": {"source": b"#" * (limits.MAX_REGION_FILE_BYTES + 1)}}),
        Case("multipart unknown field", "post", new, 400, "unknown field(s): colour",
             {"files": {"source": circle.encode()}, "fields": {"colour": "red"}}),
        Case("multipart title newline", "post", new, 400, "'title' must be one line",
             {"files": {"source": circle.encode()}, "fields": {"title": "a\nb"}}),
        # --- malformed viewer JSON regions
        Case("json polygon 1001", "post", new, 400, "too many polygon vertices: 1001",
             _json({"source": [{"type": "polygon", "vertices": _polygon(1001)}]})),
        Case("json 5 polygons x 1000", "post", new, 400, "vertices in the region: 5000",
             _json({"source": [{"type": "polygon", "vertices": _polygon(1000)}] * 5})),
        Case("json polygon 100000", "post", new, 413, "larger than",
             _raw('{"source": [{"type": "polygon", "vertices": [' + "[1,2]," * 99_999 + "[1,2]]}]}")),
        Case("json polygon 50000", "post", new, 400, "values (max",
             _raw('{"source": [{"type": "polygon", "vertices": [' + "[1,2]," * 49_999 + "[1,2]]}]}")),
        Case("json 101 shapes", "post", new, 400, "too many shapes",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 0.1}] * 101})),
        Case("json unknown type", "post", new, 400, "unknown type 'hexagon'", _json({"source": [{"type": "hexagon"}]})),
        Case("json type list", "post", new, 400, "unknown type list", _json({"source": [{"type": ["circle"]}]})),
        Case("json shape string", "post", new, 400, "must be an object", _json({"source": ["circle"]})),
        Case("json ra text", "post", new, 400, "'ra' must be a number",
             _json({"source": [{"type": "circle", "ra": "1", "dec": 2, "radius": 1}]})),
        Case("json ra 400 digits", "post", new, 400, "longer than 40",
             _raw('{"source": [{"type": "circle", "ra": 1' + "0" * 400 + ', "dec": 2, "radius": 1}]}')),
        Case("json dec 1e20", "post", new, 400, "larger than",
             _raw('{"source": [{"type": "circle", "ra": 1, "dec": 100000000000000000000, "radius": 1}]}')),
        Case("json radius 1e400", "post", new, 400, "infinite as a float",
             _raw('{"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 1e400}]}')),
        Case("json radius NaN", "post", new, 400, "NaN is not JSON",
             _raw('{"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": NaN}]}')),
        Case("json radius -Infinity", "post", new, 400, "-Infinity is not JSON",
             _raw('{"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": -Infinity}]}')),
        Case("json radius negative", "post", new, 400, "'radius' must be positive",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": -1}]})),
        Case("json vertices object", "post", new, 400, "list of [ra, dec] pairs",
             _json({"source": [{"type": "polygon", "vertices": {"a": 1}}]})),
        Case("json vertex triple", "post", new, 400, "vertex 3 must be",
             _json({"source": [{"type": "polygon", "vertices": [[1, 2], [2, 3], [3, 4, 5]]}]})),
        Case("json vertex null", "post", new, 400, "vertex 2 ra must be",
             _json({"source": [{"type": "polygon", "vertices": [[1, 2], [None, 3], [3, 4]]}]})),
        Case("json exclude text", "post", new, 400, "true or false",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 1, "exclude": "yes"}]})),
        Case("json shape unknown field", "post", new, 400, "unknown field(s) for a circle",
             _json({"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 1, "colour": "red"}]})),
        Case("json annulus inverted", "post", new, 400, "outer_radius",
             _json({"source": [{"type": "annulus", "ra": 1, "dec": 2, "inner": 2, "outer": 1}]})),
        # --- wrong types in the body
        Case("body array", "post", new, 400, "must be a JSON object, not an array", _json([1, 2, 3])),
        Case("body string", "post", new, 400, "not a string", _json("icrs;circle(1,2,3)")),
        Case("body null", "put", regions, 400, "not null", _raw("null")),
        Case("body number", "put", selection, 400, "not a number", _raw("42")),
        Case("source number", "post", new, 400, "'source' must be a DS9 region string or a list", _json({"source": 5})),
        Case("source object", "post", new, 400, "not an object", _json({"source": {"type": "circle"}})),
        Case("source true", "put", regions, 400, "not true or false", _json({"source": True})),
        Case("background number", "post", new, 400, "'background' must be", _json({"source": circle, "background": 1})),
        Case("missing source", "post", new, 400, "'source' is required", _json({"background": circle})),
        Case("unknown field", "post", new, 400, "unknown field(s): colour", _json({"source": circle, "colour": "red"})),
        Case("title list", "post", new, 400, "'title' must be text", _json({"source": circle, "title": ["a"]})),
        Case("title too long", "post", new, 400, "at most 200 characters", _json({"source": circle, "title": "x" * 201})),
        Case("title newline", "post", new, 400, "U+000A", _json({"source": circle, "title": "a\nb"})),
        Case("title line separator", "post", new, 400, "U+2028", _json({"source": circle, "title": "a\u2028b"})),
        Case("title NUL", "post", new, 400, "control character", _json({"source": circle, "title": "a\u0000b"})),
        Case("title DEL", "post", new, 400, "control character", _json({"source": circle, "title": "a\u007fb"})),
        Case("title C1", "post", new, 400, "control character", _json({"source": circle, "title": "a\u0085b"})),
        Case("title lone surrogate", "post", new, 400, "U+D800", _raw('{"source": "icrs;circle(1,2,3)", "title": "\\ud800"}')),
        Case("title huge number", "post", new, 400, "longer than 40", _raw('{"source": "x", "title": ' + "9" * 400 + "}")),
        # --- JSON syntax, encoding, nesting, size
        Case("not json", "put", regions, 400, "not valid JSON", _raw("{not json")),
        Case("empty json", "put", regions, 400, "not valid JSON", _raw("")),
        Case("json trailing garbage", "put", regions, 400, "not valid JSON", _raw('{"source": "x"} []')),
        Case("latin-1 body", "post", new, 400, "not UTF-8", _raw('{"source": "icrs;circle(1,2,3)", "title": "\xe9"}'.encode("latin-1"))),
        Case("utf-16 body", "post", new, 400, "not UTF-8", _raw(json.dumps({"source": circle}).encode("utf-16"))),
        Case("text/plain body", "put", regions, 415, "Content-Type: application/json", _raw("source=x", "text/plain")),
        Case("5000 nested arrays", "post", new, 400, "nested 5000 deep", _raw("[" * 5000 + "]" * 5000)),
        Case("5000 nested objects", "post", new, 400, "nested 5000 deep",
             _raw('{"a":' * 5000 + "1" + "}" * 5000)),
        Case("5000 nested in source", "post", new, 400, "nested 5001 deep",
             _raw('{"source": ' + "[" * 5000 + "]" * 5000 + "}")),
        Case("17 nested", "put", selection, 400, "nested 17 deep",
             _raw('{"exposures": ' + "[" * 16 + "]" * 16 + "}")),
        Case("many small arrays", "post", new, 400, "values (max",
             _raw('{"source": [' + "[0]," * 100_000 + "[0]]}")),
        Case("body over the limit", "put", regions, 413, "larger than",
             _raw(json.dumps({"source": "icrs;" + 'circle(1,2,3");' * 40_000}))),
        # --- huge numbers and wrong types elsewhere
        Case("view ra 400 digits", "put", view, 400, "longer than 40", _raw('{"ra": 1' + "0" * 400 + ', "dec": 1, "fov": 1}')),
        Case("view fov 1e308", "put", view, 400, "'fov' must be a number between", _raw('{"ra": 1, "dec": 1, "fov": 1e308}')),
        Case("json radius 1e300", "post", new, 400, "magnitude at most",
             _raw('{"source": [{"type": "circle", "ra": 1, "dec": 2, "radius": 1e300}]}')),
        Case("view ra text", "put", view, 400, "'ra' must be a number", _json({"ra": "1", "dec": 1, "fov": 1})),
        Case("view ra null", "put", view, 400, "'ra' must be a number", _json({"ra": None, "dec": 1, "fov": 1})),
        Case("view ra bool", "put", view, 400, "'ra' must be a number", _json({"ra": True, "dec": 1, "fov": 1})),
        Case("selection not a list", "put", selection, 400, "must be a list", _json({"exposures": "all"})),
        Case("selection object", "put", selection, 400, "must be a list", _json({"exposures": {"a": 1}})),
        Case("selection nested list", "put", selection, 400, "entry 1 must be an exposure id", _json({"exposures": [["XMM"]]})),
        Case("selection number", "put", selection, 400, "entry 1 must be an exposure id", _json({"exposures": [1]})),
        Case("selection null", "put", selection, 400, "entry 2 must be an exposure id", _json({"exposures": ["{eid}", None]})),
        Case("selection unknown", "put", selection, 400, "does not cover", _json({"exposures": ["XMM:0000000000:EPN"]})),
        Case("selection both forms", "put", selection, 400, "the body must be", _json({"exposures": [], "observations": []})),
        Case("selection obsid list", "put", selection, 400, "must be strings",
             _json({"observations": [{"obsid": ["0201901401"], "camera": "EPN"}]})),
        Case("selection camera object", "put", selection, 400, "must be strings",
             _json({"observations": [{"obsid": "0201901401", "camera": {"a": 1}}]})),
        Case("selection pair list", "put", selection, 400, "must be an object", _json({"observations": [["0201901401", "EPN"]]})),
        Case("selection observations text", "put", selection, 400, "must be a list", _json({"observations": "all"})),
        Case("run script list", "post", run, 400, "unknown script", _json({"script": ["stages"]})),
        Case("run script null", "post", run, 400, "unknown script", _json({"script": None})),
        Case("run script number", "post", run, 400, "unknown script", _json({"script": 7})),
        Case("run script traversal", "post", run, 400, "unknown script", _json({"script": "../stages"})),
        Case("run params list", "post", run, 400, "'params' must be an object", _json({"script": "stages", "params": [1]})),
        Case("run params text", "post", run, 400, "'params' must be an object", _json({"script": "stages", "params": "x"})),
        Case("run param text for int", "post", run, 400, "must be a whole number",
             _json({"script": "stages", "params": {"steps": "3"}})),
        Case("run param bool for int", "post", run, 400, "must be a whole number",
             _json({"script": "stages", "params": {"steps": True}})),
        Case("run param 10**30", "post", run, 400, "larger than",
             _raw('{"script": "stages", "params": {"steps": 1' + "0" * 30 + "}}")),
        Case("run param 1e400", "post", run, 400, "infinite as a float", _raw('{"script": "stages", "params": {"sleep": 1e400}}')),
        Case("run param bell", "post", run, 400, "control character",
             _json({"script": "stages", "params": {"label": "a\u0007b"}})),
        Case("run param long text", "post", run, 400, "at most 1000 characters",
             _json({"script": "stages", "params": {"label": "x" * 1001}})),
        Case("run param choice list", "post", run, 400, "must be one of", _json({"script": "stages", "params": {"mode": ["fast"]}})),
        Case("run param unknown", "post", run, 400, "unknown parameter", _json({"script": "stages", "params": {"nope": 1}})),
        Case("run unknown field", "post", run, 400, "unknown field(s): extra", _json({"script": "stages", "extra": 1})),
        # --- offsets
        Case("offset superscript", "get", "/api/runs/{rid}/log?offset=%C2%B2", 400, "digits 0-9"),
        Case("offset fullwidth", "get", "/api/runs/{rid}/log?offset=%EF%BC%91%EF%BC%92", 400, "digits 0-9"),
        Case("offset arabic-indic", "get", "/api/runs/{rid}/log?offset=%D9%A3", 400, "digits 0-9"),
        Case("offset negative", "get", "/api/runs/{rid}/log?offset=-3", 400, "digits 0-9"),
        Case("offset 20 digits", "get", "/api/runs/{rid}/log?offset=" + "9" * 20, 400, "digits 0-9"),
        Case("offset empty", "get", "/api/runs/{rid}/log?offset=", 400, "digits 0-9"),
        Case("last-event-id superscript", "get", "/api/runs/{rid}/events", 400, "Last-Event-ID",
             {"headers": {"Last-Event-ID": "²"}}),
        # --- traversal in every path parameter, symbolic links, unknown ids
        Case("session traversal", "get", "/api/sessions/..%2F..%2Fetc", 404, "not found"),
        Case("session dots", "get", "/api/sessions/%2E%2E", 404, "no session"),
        Case("session dots write", "put", "/api/sessions/%2E%2E/regions", 404, "no session", _json({"source": circle})),
        Case("session NUL", "get", "/api/sessions/{sid}%00", 404, "no session"),
        Case("session unknown", "get", "/api/sessions/nosuchsession1", 404, "no session"),
        Case("session unknown write", "put", "/api/sessions/nosuchsession1/selection", 404, "no session",
             _json({"exposures": []})),
        Case("session unknown runs", "get", "/api/sessions/nosuchsession1/runs", 404, "no session"),
        Case("session traversal runs", "post", "/api/sessions/..%2F{sid}/runs", 404, "not found",
             _json({"script": "stages"})),
        Case("session method", "post", "/api/sessions/{sid}", 405, "not allowed"),
        Case("scripts unknown session", "get", "/api/scripts?session=nosuchsession1", 404, "no session"),
        Case("scripts traversal session", "get", "/api/scripts?session=../../etc/passwd", 404, "no session"),
        Case("run traversal", "get", "/api/runs/..%2F..%2Fregio.db", 404, "not found"),
        Case("run dots", "get", "/api/runs/%2E%2E/log", 404, "no run"),
        Case("run unknown", "get", "/api/runs/nosuchrun123", 404, "no run"),
        Case("run unknown cancel", "post", "/api/runs/nosuchrun123/cancel", 404, "no run"),
        Case("run unknown bundle", "get", "/api/runs/nosuchrun123/bundle.zip", 404, "no run"),
        Case("run NUL", "get", "/api/runs/{rid}%00/products", 404, "no run"),
        Case("product traversal", "get", "/api/runs/{rid}/products/..%2Finput.json", 400, "invalid product name"),
        Case("product absolute", "get", "/api/runs/{rid}/products/%2Fetc%2Fpasswd", 404, "not found"),
        Case("product NUL", "get", "/api/runs/{rid}/products/table.txt%00", 400, "invalid product name"),
        Case("product backslash", "get", "/api/runs/{rid}/products/..%5Cinput.json", 400, "invalid product name"),
        Case("product link outside", "get", "/api/runs/{rid}/products/passwd", 400, "invalid product name"),
        Case("product link in session", "get", "/api/runs/{rid}/products/session.json", 400, "invalid product name"),
        Case("product link folder", "get", "/api/runs/{rid}/products/up/session.json", 400, "invalid product name"),
        Case("product unknown", "get", "/api/runs/{rid}/products/nothing.fits", 404, "no product"),
        Case("exposure traversal", "get", "/api/exposures/..%2F..%2Fetc%2Fpasswd/moc", 404, "not found"),
        Case("exposure dots", "get", "/api/exposures/%2E%2E/moc", 404, "no exposure"),
        Case("exposure unknown", "get", "/api/exposures/XMM:0000000000:EPN/moc", 404, "no exposure"),
        Case("exposure NUL", "get", "/api/exposures/%00/moc", 404, "no exposure"),
        Case("collaborator dots", "delete", "/api/sessions/{sid}/collaborators/%2E%2E", 404, "needs accounts"),
        Case("share link dots", "delete", "/api/sessions/{sid}/share-links/%2E%2E", 404, "needs accounts"),
        Case("unknown route", "get", "/api/nothing/here", 404, "not found"),
    ]  # fmt: skip
    return cases


def accounts_requests() -> list[Case]:
    """Hostile requests that need accounts mode (sharing)."""
    collaborators = "/api/sessions/{sid}/collaborators"
    return [
        Case("collaborator email list", "post", collaborators, 400, "no account",
             _json({"email": ["owner@example.org"], "role": "read"})),
        Case("collaborator role list", "post", collaborators, 400, "the body must be",
             _json({"email": "reader@example.org", "role": ["read"]})),
        Case("collaborator role object", "post", collaborators, 400, "the body must be",
             _json({"email": "reader@example.org", "role": {"read": 1}})),
        Case("collaborator email long", "post", collaborators, 400, "no account",
             _json({"email": "x" * 1000 + "@example.org", "role": "read"})),
        Case("collaborator email NUL", "post", collaborators, 400, "control character",
             _json({"email": "reader\u0000@example.org", "role": "read"})),
        Case("collaborator deep", "post", collaborators, 400, "nested",
             _raw('{"email": ' + "[" * 5000 + "]" * 5000 + ', "role": "read"}')),
        Case("collaborator traversal", "delete", collaborators + "/..%2F..%2Fx", 404, "not found"),
        Case("collaborator dots", "delete", collaborators + "/%2E%2E", 404, "no such collaborator"),
        Case("collaborator NUL", "delete", collaborators + "/%00", 404, "no such collaborator"),
        Case("share link dots", "delete", "/api/sessions/{sid}/share-links/%2E%2E", 404, "no such share link"),
        Case("session dots", "get", "/api/sessions/%2E%2E", 404, "no session"),
        Case("token garbage", "get", "/api/sessions", 401, "API token", {"headers": {"Authorization": "Token nonsense"}}),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- the tests


def _bright_source(sample_archive) -> tuple[float, float]:
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    return src["ra"], src["dec"]


def _world(tmp_path_factory, sample_index, sample_archive, redis_server, **config):
    tmp = tmp_path_factory.mktemp("hostile")
    app = create_app({**app_settings(tmp, sample_index, redis_server, SCRIPTS), **config})
    return build_world(app, *_bright_source(sample_archive))


@pytest.fixture(scope="module")
def world(tmp_path_factory, sample_index, sample_archive, redis_server):
    return _world(tmp_path_factory, sample_index, sample_archive, redis_server)


@pytest.fixture(scope="module")
def accounts_world(tmp_path_factory, sample_index, sample_archive, redis_server):
    return _world(tmp_path_factory, sample_index, sample_archive, redis_server, AUTH="accounts")


def check(case: Case, world: dict[str, Any]) -> None:
    before = snapshot(world)
    with case.send(world["client"], world) as response:
        body = json.loads(response.data)  # the stdlib's parser: messages may quote a control
        assert response.status_code == case.status, (case.name, response.status_code, body)
        assert 400 <= response.status_code < 500
        assert response.mimetype == "application/json", (case.name, response.data[:200])
        assert set(body) == {"error", "message", "status"}, body
        assert body["status"] == case.status and body["error"]
        assert case.fragment in body["message"], (case.name, body["message"])
        assert "Traceback" not in body["message"] and len(body["message"]) < 600
    assert snapshot(world) == before, f"{case.name}: something stored changed"


def test_the_corpus_is_large_and_named_once():
    names = [c.name for c in hostile_requests()] + [c.name for c in accounts_requests()]
    assert len(names) >= 60
    assert len(set(c.name for c in hostile_requests())) == len(hostile_requests())


@pytest.mark.parametrize("case", hostile_requests(), ids=lambda c: c.name)
def test_hostile_request_gets_a_json_4xx_and_changes_nothing(case, world):
    check(case, world)


@pytest.mark.parametrize("case", accounts_requests(), ids=lambda c: c.name)
def test_hostile_request_in_accounts_mode(case, accounts_world):
    check(case, accounts_world)


def test_the_world_still_works_after_the_corpus(world):
    """The valid requests next to the hostile ones still succeed (the refusals are not a
    service that refuses everything)."""
    client, ids = world["client"], world["ids"]
    session = client.get(f"/api/sessions/{ids['sid']}").get_json()
    assert session["title"] == "hostile corpus"
    assert client.get(f"/api/runs/{ids['rid']}/log?offset=0").status_code == 200
    with client.get(f"/api/runs/{ids['rid']}/products/table.txt") as product:
        assert product.status_code == 200 and product.data.startswith(b"label")
    deep_but_fine = {
        "source": [{"type": "polygon", "vertices": _polygon(1000, ids["ra"], ids["dec"])}]
    }
    response = client.post("/api/sessions", json=deep_but_fine)
    assert response.status_code == 201, response.get_json()
    assert len(response.get_json()["regions"]["source"][0]["vertices"]) == 1000


@pytest.mark.parametrize(
    ("email", "fragment"),
    [
        ("not-an-address", b"not an e-mail address"),
        ("", b"not an e-mail address"),
        ("a@b", b"not an e-mail address"),
        ("owner@example.org\x00", b"not an e-mail address"),
        ("x" * 400 + "@example.org", b"not an e-mail address"),
    ],
)
def test_login_with_a_malformed_email_is_a_400(accounts_world, email, fragment):
    """The sign-in page is HTML: a malformed address gets the page again, with 400."""
    client = accounts_world["app"].test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    before = snapshot(accounts_world)
    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert response.status_code == 400
    assert fragment in response.data and b"\x00" not in response.data
    assert snapshot(accounts_world) == before


# ------------------------------------------------------------------- the byte-level JSON scan

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(-(2.0**53), 2.0**53)
    | st.text(alphabet=st.sampled_from('ab"\\[]{},:\t\né\u2028'), max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k"\\[{,'), max_size=4), children, max_size=4
        )
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _items(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(_items(v) for v in value)
    if isinstance(value, dict):
        return len(value) + sum(_items(v) for v in value.values())
    return 0


@given(JSON_VALUES, st.booleans(), st.booleans())
def test_the_byte_scan_measures_what_the_parser_builds(value, ascii_only, indent):
    """Depth exact and item count an upper bound (empty brackets count one), whatever quotes,
    backslashes and brackets the strings hold, escaped or raw."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=1 if indent else None).encode()
    depth, items = bodies.json_shape(text)
    assert depth == _depth(value)
    assert _items(value) <= items <= _items(value) + 1 + text.count(b"[]") + text.count(b"{}")
    if depth <= limits.MAX_JSON_DEPTH and items <= limits.MAX_JSON_ITEMS:
        assert bodies.parse_json(text) == value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"[" * 17 + b"]" * 17, "nested 17 deep"),
        (b'["' + b"[" * 100 + b'"]', None),  # brackets in a string are no nesting
        (b'["\\"' + b"[" * 100 + b'"]', None),  # nor after an escaped quote
        (b'["\\\\"' + b",[" * 20 + b"]" * 20 + b"]", "nested 21 deep"),  # an escaped backslash
        (b"[" + b"0," * limits.MAX_JSON_ITEMS + b"0]", "values (max"),
        (b'["' + b"0," * limits.MAX_JSON_ITEMS + b'0"]', None),  # commas in a string
        (b'["\\u0000"]', "control character"),
        (b'["\\\\u0000"]', None),  # a backslash followed by the text u0000
        (b'["\\u001F", "\\u007f", "\\u0085"]', "control character"),
        (b'["\\b"]', "control character"),
        (b'["tab\\tand\\nlines\\r"]', None),
        ('["\u0085"]'.encode(), "control character"),
        (b"[NaN]", "NaN is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b"[1" + b"0" * 40 + b"]", "longer than 40"),
        (b"[9007199254740993]", "larger than"),
        (b"[-9007199254740992, 9007199254740992.0, 1e-300]", None),
        (b"[1e400]", "infinite as a float"),
        (b"[1e22, -1.5e300]", None),  # floats need only be finite: a column density in cm^-2
        (b'"\xff"', "not UTF-8"),
        (b'\xef\xbb\xbf{"bom": 1}', None),
        (b"", "not valid JSON"),
    ],
)
def test_parse_json_refuses_with_a_reason(text, fragment):
    if fragment is None:
        assert bodies.parse_json(text) == json.loads(text.decode("utf-8-sig"))
    else:
        with pytest.raises(bodies.InputError, match=re.escape(fragment)):
            bodies.parse_json(text)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("0", 0), ("12", 12), ("9" * 15, int("9" * 15)), ("²", None), ("１２", None), ("٣", None),
     ("-1", None), ("+1", None), (" 1", None), ("1.0", None), ("", None), ("9" * 16, None)],
)  # fmt: skip
def test_byte_offsets_are_ascii_digits(raw, value):
    if value is None:
        with pytest.raises(bodies.InputError, match="digits 0-9"):
            bodies.byte_offset(raw, "'offset'")
    else:
        assert bodies.byte_offset(raw, "'offset'") == value


def test_any_get_json_is_bounded(world):
    """``request.get_json`` (for views that do not use ``json_body``) goes through the same
    parser: a deep body is a 400, not a RecursionError."""
    app = world["app"]
    with app.test_request_context(
        "/api/x", method="POST", data="[" * 5000 + "]" * 5000, content_type="application/json"
    ):
        from flask import request
        from werkzeug.exceptions import BadRequest

        with pytest.raises(BadRequest):
            request.get_json()


def test_the_session_cookie_may_hold_control_characters(accounts_world):
    """Flask reads its signed session cookie through the app's JSON provider: a flashed
    message quoting a control character must not make every later page fail."""
    client = accounts_world["app"].test_client()
    with client.session_transaction() as cookie:
        cookie["_flashes"] = [("error", "a bell \x07 and \x1b[31m an escape")]
    page = client.get("/login")
    assert page.status_code == 200
    assert b"a bell" in page.data
