"""Session folders: regions as DS9 and JSON, coverage, selection; bad input changes nothing."""

import json

import pytest

from app import shapes
from app.sessions import SelectionError, SessionNotFound, SessionStore

SOURCE = 'icrs;circle(149.59,-11.06,60")'
BACKGROUND = 'icrs;annulus(149.59,-11.06,120",240")'
ROWS = [
    {"obsid": "0201901401", "camera": "EMOS1", "coverage": 1.0, "path": "/a"},
    {"obsid": "0201901401", "camera": "EMOS2", "coverage": 1.0, "path": "/b"},
    {"obsid": "0404910601", "camera": "EMOS1", "coverage": 0.5, "path": "/c"},
]


@pytest.fixture
def store(tmp_path):
    return SessionStore(tmp_path / "sessions")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_create_stores_regions_as_ds9_and_json(store):
    sid = store.create(shapes.parse(SOURCE), shapes.parse(BACKGROUND), owner="ana")
    folder = store.folder(sid)
    assert "circle(149.59000000,-11.06000000,0.01666667)" in (folder / "source.reg").read_text()
    assert "annulus(" in (folder / "background.reg").read_text()
    record = store.get(sid)
    assert record["owner"] == "ana"
    assert record["regions"]["source"][0]["type"] == "circle"
    assert record["regions"]["background"][0]["type"] == "annulus"
    source, background = store.regions(sid)
    assert shapes.to_json(source) == record["regions"]["source"]
    assert [s["id"] for s in store.list()] == [sid]
    assert store.list(owner="someone else") == []


def test_first_coverage_selects_everything_then_selection_is_kept(store):
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, ROWS)
    assert len(store.get(sid)["selection"]["observations"]) == 3
    store.set_selection(sid, [{"obsid": "0404910601", "camera": "EMOS1"}])
    assert [r["path"] for r in store.selected_rows(sid)] == ["/c"]
    store.set_coverage(sid, ROWS[:2])  # the new region no longer has 0404910601
    assert store.get(sid)["selection"]["observations"] == []


@pytest.mark.parametrize(
    "bad",
    [
        "EMOS1",
        [{"obsid": "0201901401"}],
        [{"obsid": "0201901401", "camera": "EPN"}],
        [{"obsid": "0201901401", "camera": "EMOS1", "extra": 1}],
        [["0201901401", "EMOS1"]],
    ],
)
def test_bad_selection_is_refused_and_changes_nothing(store, bad):
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, ROWS)
    before = _snapshot(store.folder(sid))
    with pytest.raises(SelectionError):
        store.set_selection(sid, bad)
    assert _snapshot(store.folder(sid)) == before


@pytest.mark.parametrize("sid", ["../etc", "short", "a/b/c/d/e/f/g", "", "x" * 40, None])
def test_malformed_or_unknown_ids_are_not_found(store, sid):
    with pytest.raises(SessionNotFound):
        store.get(sid)


def test_run_dir_rejects_traversal(store):
    sid = store.create(shapes.parse(SOURCE), None)
    with pytest.raises(SessionNotFound):
        store.run_dir(sid, "../../x")
    assert store.run_dir(sid, "abcdefgh12").parent.name == "runs"


def test_no_half_written_session_is_left_on_failure(store, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("app.sessions.shapes.to_ds9", boom)
    with pytest.raises(OSError):
        store.create(shapes.parse(SOURCE), None)
    assert list(store.root.iterdir()) == []
    assert json.dumps(store.list()) == "[]"
