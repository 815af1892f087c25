"""Session folders: regions as DS9 and JSON, coverage, selection; bad input changes nothing."""

import json

import pytest

from app import shapes
from app.sessions import SelectionError, SessionNotFound, SessionStore

SOURCE = 'icrs;circle(149.59,-11.06,60")'
BACKGROUND = 'icrs;annulus(149.59,-11.06,120",240")'
ROWS = [
    {"mission": "XMM", "instrument": "EPIC", "obsid": "0201901401", "camera": "EMOS1",
     "kind": "events", "coverage": 1.0, "path": "/a"},
    {"mission": "XMM", "instrument": "EPIC", "obsid": "0201901401", "camera": "EMOS2",
     "kind": "events", "coverage": 1.0, "path": "/b"},
    {"mission": "XMM", "instrument": "EPIC", "obsid": "0404910601", "camera": "EMOS1",
     "kind": "events", "coverage": 0.5, "path": "/c"},
    {"mission": "XMM", "instrument": "EPIC", "obsid": "0404910601", "camera": "EPN",
     "kind": "exposure-map", "coverage": 0.5, "path": "/d"},
    {"mission": "CHANDRA", "instrument": "ACIS", "obsid": "0404910601", "camera": "EMOS1",
     "kind": "events", "coverage": 0.2, "path": "/e"},
]  # fmt: skip


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


def test_first_coverage_selects_processable_data_then_selection_is_kept(store):
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, ROWS)
    record = store.get(sid)
    assert [r["exposure_id"] for r in record["coverage"]] == [
        "XMM:0201901401:EMOS1", "XMM:0201901401:EMOS2", "XMM:0404910601:EMOS1",
        "XMM:0404910601:EPN", "CHANDRA:0404910601:EMOS1",
    ]  # fmt: skip
    # the exposure map has no data to process, and Chandra is another instrument (the region is
    # covered best by XMM EPIC): not selected at first, so a script fits the first selection
    assert record["selection"]["exposures"] == [
        "XMM:0201901401:EMOS1", "XMM:0201901401:EMOS2", "XMM:0404910601:EMOS1",
    ]  # fmt: skip
    store.set_selection(sid, ["XMM:0404910601:EMOS1", "CHANDRA:0404910601:EMOS1"])
    assert [r["path"] for r in store.selected_rows(sid)] == ["/c", "/e"]
    store.set_coverage(sid, ROWS[:2])  # the new region no longer has 0404910601
    assert store.get(sid)["selection"]["exposures"] == []


def test_first_selection_takes_the_instrument_covering_the_region_best(store):
    """A field seen by two missions: the first selection is the best-covering instrument's
    exposures with data, whatever the order of the rows."""
    rows = [{**r, "coverage": 0.9} if r["mission"] == "CHANDRA" else r for r in ROWS[2:]]
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, rows)
    assert store.get(sid)["selection"]["exposures"] == ["CHANDRA:0404910601:EMOS1"]
    maps_only = [{**r, "kind": "exposure-map"} for r in ROWS]
    other = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(other, maps_only)
    assert store.get(other)["selection"]["exposures"] == []


def test_legacy_selection_maps_unambiguous_pairs(store):
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, ROWS)
    assert store.legacy_selection(sid, [{"obsid": "0201901401", "camera": "EMOS2"}]) == [
        "XMM:0201901401:EMOS2"
    ]
    with pytest.raises(SelectionError, match="ambiguous"):  # XMM and CHANDRA share the pair
        store.legacy_selection(sid, [{"obsid": "0404910601", "camera": "EMOS1"}])


@pytest.mark.parametrize(
    "bad",
    [
        "EMOS1",
        [{"obsid": "0201901401", "camera": "EMOS1"}],
        ["XMM:0201901401:EPN"],
        ["XMM:0201901401:EMOS1", 3],
        [["0201901401", "EMOS1"]],
        ["x"] * 10_001,
    ],
)
def test_bad_selection_is_refused_and_changes_nothing(store, bad):
    sid = store.create(shapes.parse(SOURCE), None)
    store.set_coverage(sid, ROWS)
    before = _snapshot(store.folder(sid))
    with pytest.raises(SelectionError):
        store.set_selection(sid, bad)
    assert _snapshot(store.folder(sid)) == before


def test_a_session_from_before_instrument_plugins_is_migrated(store):
    """Old sessions stored (obsid, camera) pairs and coverage rows without ids or kinds."""
    sid = store.create(shapes.parse(SOURCE), None)
    folder = store.folder(sid)
    old_rows = [
        {"mission": "XMM", "obsid": "0201901401", "camera": "EMOS1", "source": "events",
         "coverage": 1.0, "path": "/a"},
        {"mission": "XMM", "obsid": "0201901401", "camera": "EPN", "source": "expmap",
         "coverage": 1.0, "path": "/p"},
    ]  # fmt: skip
    (folder / "coverage.json").write_text(json.dumps(old_rows))
    (folder / "selection.json").write_text(
        json.dumps({"observations": [{"obsid": "0201901401", "camera": "EMOS1"}]})
    )
    record = store.get(sid)
    assert record["selection"] == {"exposures": ["XMM:0201901401:EMOS1"]}
    assert [(r["exposure_id"], r["kind"]) for r in record["coverage"]] == [
        ("XMM:0201901401:EMOS1", "events"),
        ("XMM:0201901401:EPN", "exposure-map"),
    ]
    assert [r["path"] for r in store.selected_rows(sid)] == ["/a"]
    # the upgrade is written back once, in the new format
    assert json.loads((folder / "selection.json").read_text()) == record["selection"]
    assert all("exposure_id" in r for r in json.loads((folder / "coverage.json").read_text()))


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
