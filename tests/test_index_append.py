"""Appending exposures to the index (a new MOC set segment instead of a rebuild) gives the same
answers as a full build: near RA 0 and the poles, after deltas are merged, for readers that
loaded an older generation, and through ``build_index`` when new files arrive."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from mocpy import MOC

from demo import synth
from indexer import build, store
from indexer import mocset as mocsets
from indexer.build import DB_NAME, build_index, publish_added, read_manifest, segment_names
from indexer.index import Index
from indexer.mocset import write_range_fits

BASE_MOCS = 1500
NEW_MOCS = 600


def mixed(mocs: int, seed: int, prefix: str = "") -> list[tuple[dict, np.ndarray]]:
    """The rows of a small mixed catalogue; ``prefix`` renames the obsids (new exposures)."""
    rows = [pair for chunk in synth.mixed_rows(mocs, seed=seed) for pair in chunk]
    for row, _ in rows:
        row["obsid"] = prefix + row["obsid"]
    return rows


def regions(rows: list[dict]) -> list[str]:
    """Regions on RA 0, both poles, a tile corner, and around a sample of the pointings."""
    texts = [
        "icrs;circle(0.02,0.5,0.3)",
        "icrs;circle(359.95,-30.2,0.2)",
        "icrs;box(0.0,0.5,0.5,0.1,0)",
        "icrs;circle(45,89.75,0.4)",
        "icrs;circle(0,90,2)",
        "icrs;circle(200,-89.6,0.3)",
        "icrs;circle(0,-90,2.5)",
        "icrs;polygon(359.8,-1,0.2,-1,0.2,1,359.8,1)",
    ]
    rng = np.random.default_rng(5)
    for row in [rows[int(i)] for i in rng.integers(0, len(rows), 40)]:
        radius = 10 ** rng.uniform(math.log10(1 / 120), math.log10(1.5))
        texts.append(f"icrs;circle({row['ra_pnt']:.6f},{row['dec_pnt']:.6f},{radius:.6f})")
    return texts


def answers(index: Index, texts: list[str]) -> list[dict[str, float]]:
    return [{r["exposure_id"]: r["coverage"] for r in index.query(text)} for text in texts]


def append(index_dir: Path, pairs: list[tuple[dict, np.ndarray]]) -> build.BuildReport:
    """Record footprints as a build records the files it read, then publish them (the append
    step of ``build_index``)."""
    db = store.connect(index_dir / DB_NAME)
    paths = []
    try:
        records = []
        for row, ranges in pairs:
            meta = {k: v for k, v in row.items() if k not in ("id", "path", "moc_file")}
            path = f"{store.SYNTHETIC_PREFIX}{row['mission']}/{row['obsid']}/{row['camera']}"
            paths.append(path)
            records.append(
                {
                    "path": path,
                    "size": 0,
                    "mtime_ns": 0,
                    "checksum": "synthetic",
                    "meta": meta,
                    "depth": 13,
                    "ranges": ranges,
                }  # fmt: skip
            )
        store.insert_files(db, records)
    finally:
        db.conn.close()
    return publish_added(index_dir, paths)


@pytest.fixture(scope="module")
def catalogues():
    base = mixed(BASE_MOCS, seed=3)
    new = mixed(NEW_MOCS, seed=4, prefix="N")
    missions = {row["mission"] for row, _ in base}
    assert missions == {"XMM", "CHANDRA", "SWIFT", "EROSITA"}
    return base, new


def full_index(folder: Path, pairs) -> Path:
    """A full build of ``pairs`` (ids renumbered from 1, as a build from scratch does)."""
    copies = [({**row, "id": i}, ranges) for i, (row, ranges) in enumerate(pairs, start=1)]
    synth.write_catalog(folder, [copies], 13, "test")
    return folder


def test_appended_segments_answer_like_a_full_build(catalogues, tmp_path, monkeypatch):
    base, new = catalogues
    monkeypatch.setattr(build, "MAX_DELTAS", 3)
    appended = full_index(tmp_path / "appended", base)
    base_folder = tmp_path / "appended" / segment_names(read_manifest(appended))[0]
    base_mtime = (base_folder / "ranges.npy").stat().st_mtime_ns
    old = Index.load(appended)
    texts = regions([row for row, _ in base + new])
    before = answers(old, texts)

    batches = np.array_split(np.arange(len(new)), 5)
    for k, batch in enumerate(batches, start=1):
        report = append(appended, [new[i] for i in batch])
        assert len(report.new_exposures) == len(batch)
        names = segment_names(read_manifest(appended))
        # 3 deltas at most: the 4th append merged them with the new one
        assert len(names) == [2, 3, 4, 2, 3][k - 1], names
        assert names[0] == base_folder.name
    assert (base_folder / "ranges.npy").stat().st_mtime_ns == base_mtime  # base not rewritten

    reference = full_index(tmp_path / "reference", base + new)
    after_append = Index.load(appended)
    assert after_append is not old and len(after_append.mocset) == len(base) + len(new)
    expected = answers(Index.load(reference), texts)
    got = answers(after_append, texts)
    for text, g, e in zip(texts, got, expected, strict=True):
        assert g.keys() == e.keys(), text
        for key in e:
            assert g[key] == pytest.approx(e[key], abs=1e-9), (text, key)
    # the new exposures on the special fields (RA 0, poles) are found
    found = set().union(*got[:8])
    assert any(key.split(":")[1].startswith("N") for key in found)
    for mission in ("XMM", "CHANDRA", "SWIFT", "EROSITA"):
        assert any(k.startswith(mission) and ":N" in k for k in found), mission

    # the reader of the first generation still answers from it (its segments were memory-mapped
    # before later generations replaced or removed delta folders)
    assert answers(old, texts) == before
    assert len(old.mocset) == len(base)
    # and the footprints of appended exposures are the ones stored
    some = new[len(new) // 2][0]
    key = f"{some['mission']}:{some['obsid']}:{some['camera']}"
    assert np.array_equal(
        after_append.exposure_moc(key).to_depth29_ranges,
        mocsets.ranges_to_moc(new[len(new) // 2][1], 13).to_depth29_ranges,
    )


def test_a_reader_keeps_its_generation_while_deltas_are_merged(catalogues, tmp_path, monkeypatch):
    base, new = catalogues
    monkeypatch.setattr(build, "MAX_DELTAS", 1)
    folder = full_index(tmp_path / "index", base)
    append(folder, new[:100])
    reader = Index.load(folder)
    first_delta = segment_names(read_manifest(folder))[1]
    texts = regions([row for row, _ in new[:100]])
    seen = answers(reader, texts)
    append(folder, new[100:200])  # merges the two deltas into a new folder
    assert not (folder / first_delta).exists()
    assert answers(reader, texts) == seen  # the removed delta is still mapped


def test_appending_a_key_already_indexed_rebuilds(catalogues, tmp_path):
    base, _ = catalogues
    folder = full_index(tmp_path / "index", base)
    row, ranges = base[10]
    again = (
        {**row, "exposure": row["exposure"] * 2, "source": "events"},
        ranges[: len(ranges) // 2],
    )
    db = store.connect(folder / DB_NAME)
    meta = {k: v for k, v in again[0].items() if k not in ("id", "path", "moc_file")}
    store.put_file(db, "/nowhere/longer.fits", size=1, mtime_ns=1, checksum="x", status="indexed",
                   meta=meta, depth=13, ranges=again[1])  # fmt: skip
    db.conn.close()
    report = publish_added(folder, ["/nowhere/longer.fits"])
    key = f"{row['mission']}:{row['obsid']}:{row['camera']}"
    assert report.changed_exposures == [key] and report.new_exposures == []
    assert len(segment_names(read_manifest(folder))) == 1  # a full publish
    index = Index.load(folder)
    assert index.exposure_row(key)["path"] == "/nowhere/longer.fits"
    assert np.array_equal(
        index.exposure_moc(key).to_depth29_ranges,
        mocsets.ranges_to_moc(again[1], 13).to_depth29_ranges,
    )


def test_build_appends_new_files_and_rebuilds_on_removal(sample_archive, tmp_path):
    folders = sorted(p for p in sample_archive.iterdir() if p.is_dir() and p.name.isdigit())
    archive, index_dir = tmp_path / "archive", tmp_path / "index"
    archive.mkdir()
    for folder in folders[:2]:
        shutil.copytree(folder, archive / folder.name)
    build_index([archive], index_dir)
    reader = Index.load(index_dir)
    shutil.copytree(folders[2], archive / folders[2].name)
    report = build_index([archive], index_dir)
    assert len(report.new_exposures) == 3 and report.exposures == 9
    manifest = read_manifest(index_dir)
    assert len(manifest["segments"]) == 2 and manifest["n_mocs"] == 9
    for row in Index.load(index_dir).observations():  # the MOC files of appended rows
        assert MOC.from_fits(index_dir / row["moc_file"]).sky_fraction > 0

    truth = json.loads((sample_archive / "truth.json").read_text())
    texts = [f"icrs;circle({o['ra_pnt']},{o['dec_pnt']},0.2)" for o in truth["observations"]]
    fresh = tmp_path / "fresh"
    build_index([archive], fresh)
    assert answers(Index.load(index_dir), texts) == answers(Index.load(fresh), texts)
    assert sum(map(len, answers(reader, texts))) < sum(map(len, answers(Index.load(fresh), texts)))

    # nothing changed: no new generation
    assert build_index([archive], index_dir).exposures == 9
    assert read_manifest(index_dir)["generation"] == manifest["generation"]
    # a removal rebuilds into one segment
    shutil.rmtree(archive / folders[0].name)
    removed = build_index([archive], index_dir)
    assert len(removed.removed_exposures) == 3
    assert len(read_manifest(index_dir)["segments"]) == 1
    shutil.rmtree(fresh)
    build_index([archive], fresh)
    assert answers(Index.load(index_dir), texts) == answers(Index.load(fresh), texts)


def test_moc_files_written_without_astropy_equal_mocpy_files(tmp_path):
    rows = mixed(60, seed=8)
    for k, (_, ranges) in enumerate([*rows, (None, np.zeros((0, 2), dtype=np.uint32))]):
        ours, theirs = tmp_path / f"ours-{k}.fits", tmp_path / f"mocpy-{k}.fits"
        write_range_fits(ours, ranges, 13)
        mocsets.ranges_to_moc(ranges, 13).save(str(theirs), format="fits")
        assert ours.read_bytes() == theirs.read_bytes(), k


def test_streamed_sets_equal_in_memory_ones_whatever_the_pieces(catalogues, tmp_path, monkeypatch):
    """The streaming writer of full builds cuts chunks into pieces of bounded size: the set is
    the one built in memory, for pieces of one MOC, a few, or whole chunks."""
    base, _ = catalogues
    ids = np.array([row["id"] for row, _ in base])
    ranges = [r for _, r in base]
    reference = mocsets.from_ranges(ids, ranges, 13)
    for k, piece in enumerate((1, 5_000, 10**9)):
        monkeypatch.setattr(mocsets, "PIECE_RANGES", piece)
        chunks = [(ids[i : i + 400], ranges[i : i + 400]) for i in range(0, len(ids), 400)]
        mocsets.write_streamed(tmp_path / f"set-{k}", chunks, 13)
        loaded = mocsets.load(tmp_path / f"set-{k}")
        for name in mocsets._ARRAYS:
            assert np.array_equal(getattr(loaded, name), getattr(reference, name)), (piece, name)


def test_full_builds_write_the_mocs_in_sky_order(catalogues, tmp_path):
    """A full build writes the MOCs along the NESTED curve of their pointings (what keeps a
    query's reads few), and an exposure without a pointing still gets its MOC, last."""
    base, _ = catalogues
    pairs = [(dict(row), ranges) for row, ranges in base[:300]]
    pairs[7][0]["ra_pnt"] = pairs[7][0]["dec_pnt"] = None
    index = Index.load(full_index(tmp_path / "index", pairs))
    rows = {row["id"]: row for row in index.observations()}
    ids = [int(i) for i in index.mocset.ids]
    assert sorted(ids) == sorted(rows)
    assert ids[-1] == 8  # renumbered from 1: the row without a pointing
    ra = np.array([rows[i]["ra_pnt"] for i in ids[:-1]], dtype=float)
    dec = np.array([rows[i]["dec_pnt"] for i in ids[:-1]], dtype=float)
    assert np.array_equal(mocsets.sky_order(ra, dec), np.arange(len(ra)))
    assert ids[:-1] != sorted(ids[:-1])  # not by id: the order really changed
    for text in regions([row for row, _ in pairs])[:20]:
        region = index.region_moc(text)
        expected = {
            k + 1
            for k, (_, ranges) in enumerate(pairs)
            if not mocsets.ranges_to_moc(ranges, 13).intersection(region).empty()
        }
        assert {row["id"] for row in index.query(text)} == expected, text


def test_sky_order_puts_neighbours_together_and_unknown_pointings_last():
    ra = np.array([10.0, 200.0, np.nan, 10.001, 200.001, 10.0])
    dec = np.array([5.0, -40.0, 1.0, 5.001, -40.001, 95.0])  # dec 95: no such pointing
    order = mocsets.sky_order(ra, dec).tolist()
    assert set(order[-2:]) == {2, 5}
    assert abs(order.index(0) - order.index(3)) == 1
    assert abs(order.index(1) - order.index(4)) == 1


def test_reads_of_the_ranges_file_give_the_in_memory_answers(catalogues, tmp_path, monkeypatch):
    """Queries read only the ranges near the region, in blocks (``pread``): whatever the gap
    joining two blocks, the answers are those of the same set held in memory."""
    base, _ = catalogues
    folder = full_index(tmp_path / "index", base)
    texts = regions([row for row, _ in base])
    index = Index.load(folder)
    in_memory = mocsets.SegmentedMocSet(
        [mocsets.load(folder / name, mmap=False) for name in segment_names(read_manifest(folder))]
    )
    assert all(segment.ranges_fd is None for segment in in_memory.segments)
    assert all(segment.ranges_fd is not None for segment in index.mocset.segments)
    for gap in (0, 3, 1024, 10**9):
        monkeypatch.setattr(mocsets, "_READ_GAP", gap)
        for text in texts:
            region = mocsets.region_ranges(index.region_moc(text))
            read, fractions = mocsets.query(index.mocset, region)
            held, expected = mocsets.query(in_memory, region)
            assert np.array_equal(read, held), (gap, text)
            assert np.array_equal(fractions, expected), (gap, text)
