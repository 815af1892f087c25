"""Region queries: the MOC set against a brute-force loop over every camera MOC, the real data
set, the coverage MOC JSON and the query/coverage CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mocpy import MOC

from demo import epic_geometry as geometry
from demo import synth
from indexer import mocset as mocsets
from indexer.build import build_index
from indexer.index import Index, region_depth
from indexer.shapes import RegionError
from tests.conftest import ROOT

SYNTH_OBSERVATIONS = 300
SYNTH_SEED = 11
CLUSTER = (149.59, -11.06)  # RXCJ0958.3-1103
REAL_OBSIDS = {"0201901401", "0201903501", "0404910601"}  # data/xmm-rxcj0958/README.md


@pytest.fixture(scope="module")
def synth_index(tmp_path_factory):
    """A 300-observation synthetic index (and 100 Chandra ACIS-I exposures) plus the camera MOCs
    rebuilt independently, by id."""
    folder = tmp_path_factory.mktemp("synth") / "index"
    synth.synth_catalog(folder, observations=SYNTH_OBSERVATIONS, seed=SYNTH_SEED)
    index = Index.load(folder)
    plan = synth.pointings(SYNTH_OBSERVATIONS, SYNTH_SEED)
    mocs = {}
    for c, camera in enumerate(geometry.CAMERAS):
        for i, moc in enumerate(synth.camera_mocs(camera, plan)):
            mocs[c * SYNTH_OBSERVATIONS + i + 1] = moc  # synth ids: camera-major, from 1
    acis = synth.pointings(SYNTH_OBSERVATIONS // 3, SYNTH_SEED + 1)
    for i, moc in enumerate(synth.acis_i_mocs(acis)):
        mocs[3 * SYNTH_OBSERVATIONS + i + 1] = moc  # then the ACIS exposures
    return index, mocs


@pytest.fixture(scope="module")
def real_index(real_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-index")
    build_index([real_data], folder)
    return folder


def brute_force(mocs: dict[int, MOC], region: MOC) -> dict[int, float]:
    """{id: covered fraction} of every camera MOC intersecting the region, one by one."""
    area = region.sky_fraction
    out = {}
    for ident, moc in mocs.items():
        common = moc.intersection(region)
        if not common.empty():
            out[ident] = common.sky_fraction / area
    return out


def offset(ra: float, dec: float, distance: float, pa: float) -> tuple[float, float]:
    """Point at ``distance`` deg and position angle ``pa`` deg from (ra, dec), spherical trig."""
    d, p, d0 = math.radians(distance), math.radians(pa), math.radians(dec)
    sin_dec = math.sin(d0) * math.cos(d) + math.cos(d0) * math.sin(d) * math.cos(p)
    dec1 = math.asin(max(-1.0, min(1.0, sin_dec)))
    dra = math.atan2(math.sin(p) * math.sin(d) * math.cos(d0), math.cos(d) - math.sin(d0) * sin_dec)
    return (ra + math.degrees(dra)) % 360.0, math.degrees(dec1)


@st.composite
def region_texts(draw, rows):
    where = draw(st.sampled_from(["pointing", "pointing", "anywhere", "ra0", "pole"]))
    if where == "pointing":
        row = rows[draw(st.integers(0, len(rows) - 1))]
        ra, dec = offset(
            row["ra_pnt"], row["dec_pnt"], draw(st.floats(0, 0.4)), draw(st.floats(0, 360))
        )
    elif where == "ra0":  # across RA = 0/360, on the special fields of the synthetic catalogue
        ra = draw(st.floats(-0.3, 0.3)) % 360.0
        dec = draw(st.sampled_from([0.5, -30.2])) + draw(st.floats(-0.2, 0.2))
    elif where == "pole":
        ra = draw(st.floats(0, 360, exclude_max=True))
        dec = draw(st.sampled_from([1, -1])) * draw(st.floats(89.3, 89.99))
    else:
        ra = draw(st.floats(0, 360, exclude_max=True))
        dec = math.degrees(math.asin(draw(st.floats(-1, 1))))
    # from 0.5" (far below one 25.8" index cell) to 2 deg
    size = 10 ** draw(st.floats(math.log10(0.5 / 3600), math.log10(2.0)))
    shape = draw(st.sampled_from(["circle", "ellipse", "box", "polygon", "annulus", "exclusion"]))
    angle = draw(st.floats(0, 180))
    if shape == "circle":
        return f"icrs;circle({ra:.7f},{dec:.7f},{size:.8f})"
    if shape == "exclusion":
        return (
            f"icrs;circle({ra:.7f},{dec:.7f},{size:.8f});-circle({ra:.7f},{dec:.7f},{size / 3:.8f})"
        )
    if shape == "annulus":
        return f"icrs;annulus({ra:.7f},{dec:.7f},{size / 2:.8f},{size:.8f})"
    if shape in ("ellipse", "box"):
        return f"icrs;{shape}({ra:.7f},{dec:.7f},{size:.8f},{size / 3:.8f},{angle:.3f})"
    n = draw(st.integers(3, 7))
    angles = [(i + draw(st.floats(0, 0.8))) * 360 / n + angle for i in range(n)]  # sorted
    vertices = [offset(ra, dec, size * draw(st.floats(0.5, 1.0)), a) for a in angles]
    return "icrs;polygon(" + ",".join(f"{v_ra:.7f},{v_dec:.7f}" for v_ra, v_dec in vertices) + ")"


def test_stored_mocs_equal_the_built_ones(synth_index):
    index, mocs = synth_index
    assert len(index.mocset) == len(mocs) == 3 * SYNTH_OBSERVATIONS + SYNTH_OBSERVATIONS // 3
    missions = {row["mission"] for row in index.observations()}
    assert missions == {"XMM", "CHANDRA"}
    for position, ident in enumerate(np.asarray(index.mocset.ids)):
        stored = index.mocset.moc(position).to_depth29_ranges
        assert np.array_equal(stored, mocs[int(ident)].to_depth29_ranges), ident


@settings(
    max_examples=300,
    deadline=None,
    database=None,  # a fixed, reproducible sample: no replays of other runs' examples
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_query_equals_brute_force(synth_index, data):
    index, mocs = synth_index
    text = data.draw(region_texts(index.observations()), label="region")
    try:
        region = index.region_moc(text)
    except RegionError:
        if not text.startswith("icrs;polygon("):
            raise
        # a polygon drawn within arcseconds of a pole may have its vertices on one great
        # circle: shapes refuses it (tested with the shapes); nothing to query
        assume(False)
    expected = brute_force(mocs, region)
    results = index.query(text)
    got = {row["id"]: row["coverage"] for row in results}
    assert got.keys() == expected.keys()
    for ident, fraction in expected.items():
        assert got[ident] == pytest.approx(fraction, abs=2e-6)
    assert all(0 < row["coverage"] <= 1 for row in results)


def test_special_fields_ra_zero_pole_and_tiny(synth_index):
    """Fixed cases on the synthetic catalogue's first pointings (RA ~ 0, both poles)."""
    index, mocs = synth_index
    rows = {(r["obsid"], r["camera"]): r for r in index.observations()}
    for number, (_, ra, dec, _) in enumerate(synth.SPECIAL_FIELDS, start=1):
        obsid = f"{number:010d}"
        for text in (
            f"icrs;circle({ra},{dec},1')",
            f'icrs;circle({ra},{dec},0.3")',  # far smaller than one index cell
            f"icrs;box({(ra + 0.05) % 360},{dec},0.1,0.02,0)",  # straddles RA 0 for field 1
        ):
            found = {(r["obsid"], r["camera"]) for r in index.query(text)}
            for camera in ("EMOS2", "EPN"):
                assert (obsid, camera) in found, (text, camera)
            expected = brute_force(mocs, index.region_moc(text))
            assert {rows[key]["id"] for key in found} == expected.keys()


def test_region_depth_adapts_to_size():
    assert region_depth(1 / 60, 13) == 15  # 1' circle: 6.4" cells
    assert region_depth(5.0, 13) == 13  # 5 deg: index cells
    assert region_depth(3 / 3600, 13) == 18  # 3" circle: 0.8" cells
    assert region_depth(1e-9, 13) == 18


def test_real_cluster_is_covered_by_all_three_observations(real_index):
    index = Index.load(real_index)
    results = index.query(f"icrs;circle({CLUSTER[0]},{CLUSTER[1]},1')")
    found = {(r["obsid"], r["camera"]): r for r in results}
    assert found.keys() == {(o, c) for o in REAL_OBSIDS for c in ("EMOS1", "EMOS2", "EPN")}
    for (_, camera), row in found.items():
        assert row["source"] == ("expmap" if camera == "EPN" else "events")
        assert row["coverage"] == pytest.approx(1.0)
        # the cluster sits ~1.7' from the pointings (RA_PNT/DEC_PNT in the README)
        assert 1.0 < row["offaxis_arcmin"] < 2.5
    assert (
        index.query(f"icrs;circle({CLUSTER[0] + 1 / math.cos(math.radians(11.06))},-11.06,1')")
        == []
    )
    assert index.query("icrs;circle(149.59,-10.06,1')") == []


def test_edge_region_has_partial_coverage(real_index):
    """A circle on the edge of the MOS field of view (radius 14.4') is partly covered."""
    index = Index.load(real_index)
    row = next(r for r in index.observations() if r["camera"] == "EMOS2")
    ra, dec = offset(row["ra_pnt"], row["dec_pnt"], 14.4 / 60, 45.0)
    results = index.query(f"icrs;circle({ra},{dec},2')")
    mine = next(r for r in results if r["id"] == row["id"])
    assert 0.2 < mine["coverage"] < 0.8
    assert mine["offaxis_arcmin"] == pytest.approx(14.4, abs=0.05)


def test_coverage_json_stays_under_the_limit(synth_index):
    index, mocs = synth_index
    for limit in (1_500_000, 20_000, 2_000):
        result = index.coverage_moc_json(max_bytes=limit)
        assert len(json.dumps(result, separators=(",", ":"))) <= limit
        assert all(key.isdigit() and int(key) <= index.depth for key in result)
        coverage = MOC.from_json(result)
        for moc in list(mocs.values())[::37]:
            assert moc.difference(coverage).empty()  # degrading only grows the coverage
    full = index.coverage_moc_json()
    assert max(int(key) for key in full) == index.depth  # 300 observations fit at full depth
    with pytest.raises(ValueError):
        index.coverage_moc_json(max_bytes=10)


def test_exposure_moc_json_and_fits_files(real_index):
    index = Index.load(real_index)
    for row in index.observations():
        assert row["exposure_id"] == f"XMM:{row['obsid']}:{row['camera']}"
        from_json = MOC.from_json(index.exposure_moc_json(row["exposure_id"]))
        from_fits = MOC.from_fits(real_index / row["moc_file"])
        assert np.array_equal(from_json.to_depth29_ranges, from_fits.to_depth29_ranges)
        # an XMM camera covers about pi * 14.4'^2 ~ 650 arcmin^2 (less with a dead CCD)
        area = from_fits.sky_fraction * 4 * math.pi * (180 * 60 / math.pi) ** 2
        assert 450 < area < 800, (row["obsid"], row["camera"], area)
    with pytest.raises(KeyError):
        index.exposure_moc_json("XMM:0000000000:EPN")


def test_load_is_cached_until_the_index_changes(real_data, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.fits").write_bytes(
        (real_data / "0201901401" / "mos1_exp1_clean_evts.fits").read_bytes()
    )
    folder = tmp_path / "index"
    build_index([archive], folder)
    first = Index.load(folder)
    assert Index.load(folder) is first
    assert len(first.observations()) == 1
    assert first.stats()["exposures"] == 1  # counted once per generation
    (archive / "b.fits").write_bytes(
        (real_data / "0201901401" / "mos2_exp1_clean_evts.fits").read_bytes()
    )
    build_index([archive], folder)
    second = Index.load(folder)
    assert second is not first
    assert len(second.observations()) == 2
    stats = second.stats()
    assert stats["exposures"] == 2 and stats["per_camera"] == {"XMM EMOS1": 1, "XMM EMOS2": 1}
    assert stats["depth"] == 13 and stats["mocset_bytes"] > 0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_query_and_coverage_cli(real_index):
    done = run_cli(
        "query", "--index", str(real_index), "--region", 'icrs;circle(149.59,-11.06,60")'
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {row["obsid"] for row in rows} == REAL_OBSIDS and len(rows) == 9
    assert all({"coverage", "offaxis_arcmin", "exposure", "path"} <= row.keys() for row in rows)
    done = run_cli("coverage", "--index", str(real_index), "--max-bytes", "3000")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) <= 3000
    assert not MOC.from_json(json.loads(done.stdout)).empty()
    done = run_cli(
        "coverage", "--index", str(real_index), "--obsid", "0201901401", "--camera", "EPN"
    )
    assert done.returncode == 0, done.stderr
    by_pair = done.stdout
    assert not MOC.from_json(json.loads(by_pair)).empty()
    done = run_cli("coverage", "--index", str(real_index), "--exposure", "XMM:0201901401:EPN")
    assert done.returncode == 0, done.stderr
    assert done.stdout == by_pair
    done = run_cli("coverage", "--index", str(real_index), "--exposure", "XMM:1:EPN")
    assert done.returncode == 2 and "no exposure XMM:1:EPN" in done.stderr


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        ("", "empty region"),
        ("circle(149.59,-11.06,60)", "no coordinate system"),
        ("image;circle(100,100,20)", "pixel coordinates"),
        ("icrs;circle(149.59,-11.06,0)", "strictly positive"),
        ("icrs;polygon(149.59,-11.06,149.6,-11.0)", "at least 3 vertices"),
        ("icrs;circle(149.59,-11.06", "cannot parse"),
    ],
)
def test_bad_region_cli_exits_2_without_traceback(real_index, region, fragment):
    done = run_cli("query", "--index", str(real_index), "--region", region)
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_query_api_raises_region_error(real_index):
    with pytest.raises(RegionError, match="at least 3 vertices"):
        Index.load(real_index).query("icrs;polygon(1,2,3,4)")


@pytest.mark.parametrize("command", ["query", "coverage"])
def test_missing_index_exits_2(tmp_path, command):
    extra = ["--region", "icrs;circle(1,2,3)"] if command == "query" else []
    done = run_cli(command, "--index", str(tmp_path / "nowhere"), *extra)
    assert done.returncode == 2
    assert "no index in" in done.stderr and "Traceback" not in done.stderr


def test_mocset_from_moc_fits_files(real_index, tmp_path):
    """The MOC set rebuilt from the index's MOC FITS files (fast RANGE reader, and mocpy for
    other layouts) equals the one the build wrote, and survives save/load."""
    index = Index.load(real_index)
    rows = {row["id"]: row for row in index.observations()}
    ids = [int(i) for i in index.mocset.ids]
    paths = [real_index / rows[i]["moc_file"] for i in ids]
    mixed = list(paths)
    mixed[0] = tmp_path / "uniq.fits"  # a v1 (NUNIQ) file takes the mocpy path
    MOC.from_fits(paths[0]).save(str(mixed[0]), format="fits", v1_compatible=True)
    for source in (paths, mixed):
        rebuilt = mocsets.from_fits_files(ids, source, index.depth)
        mocsets.save(rebuilt, tmp_path / f"set-{source is mixed}")
        loaded = mocsets.load(tmp_path / f"set-{source is mixed}")
        (built,) = index.mocset.segments  # a fresh build: one segment
        for name in ("ids", "offsets", "ranges", "cell_ptr", "cell_mocs"):
            assert np.array_equal(getattr(loaded, name), getattr(built, name)), name


def test_synth_catalog_cli_writes_a_mixed_index(tmp_path):
    folder = tmp_path / "synth"
    done = run_cli(
        "synth-catalog", "--index", str(folder), "--observations", "30", "--chandra", "5"
    )
    assert done.returncode == 0, done.stderr
    assert "exposures=95" in done.stdout
    rows = Index.load(folder).observations()
    assert sum(r["camera"] == "ACIS-I" for r in rows) == 5
    again = run_cli("synth-catalog", "--index", str(folder), "--observations", "30")
    assert again.returncode == 2 and "already holds an index" in again.stderr
    bad = run_cli("synth-catalog", "--index", str(tmp_path / "x"), "--chandra", "-1")
    assert bad.returncode == 2 and "--chandra must be at least 0" in bad.stderr


def test_moc_fits_files_of_several_orders_and_layouts_are_read_right(tmp_path):
    """The fast reader remembers checked headers: files differing in more than their length
    (another order, another program's layout) are still read right, or left to mocpy."""
    import astropy.units as u

    mocs = [
        MOC.from_cone(10 * u.deg, 20 * u.deg, radius=r * u.arcmin, max_depth=order)
        for order, r in ((13, 5), (13, 9), (11, 7), (14, 3))
    ]
    paths = []
    for i, moc in enumerate(mocs):
        paths.append(tmp_path / f"{i}.fits")
        moc.save(str(paths[-1]), format="fits", overwrite=True)
    json_path = tmp_path / "as-json.json"  # not FITS at all: refused by the fast path
    mocs[0].save(str(json_path), format="json", overwrite=True)
    for moc, path in zip(mocs, paths, strict=True):
        fast = mocsets._read_range_fits(path, 13)
        if moc.max_order > 13:
            assert fast is None  # deeper than the index: left to mocpy's degrading reader
        else:
            np.testing.assert_array_equal(fast, mocsets.moc_to_ranges(moc, 13))
    assert mocsets._read_range_fits(json_path, 13) is None
    built = mocsets.from_fits_files([1, 2, 3, 4], paths, 13)
    for position, moc in enumerate(mocs):
        expected = mocsets.moc_to_ranges(moc, 13)
        np.testing.assert_array_equal(built.moc(position).to_depth29_ranges,
                                      mocsets.ranges_to_moc(expected, 13).to_depth29_ranges)  # fmt: skip


def test_exposure_checksums_name_every_exposure_as_its_rows_do(synth_index):
    """The lean look at what the index holds (standing requests diff it at every ingest)."""
    index, _ = synth_index
    rows = index.observations()
    assert index.exposure_checksums() == {row["exposure_id"]: row["checksum"] or "" for row in rows}
    assert len(rows) == len(index.exposure_checksums())
