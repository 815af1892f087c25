"""The Chandra ACIS instrument module (``indexer.instruments.chandra_acis``): recognition by
header, metadata, footprint, standard filters and energies, bad files, and a real ACIS list.

Files come from the demo generator (``demo.chandra_acis``, a fixed seed and its declared
observations) and from the real M82 list shipped with stingray; expected values are read from
the files with astropy / numpy here, or taken from the generator's truth, never from the module.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from demo.chandra_acis import generate
from indexer import instruments
from indexer.build import build_index
from indexer.footprint import FootprintError, UnreadableError, read_footprint
from indexer.hips import EventReader
from indexer.index import Index
from indexer.instruments import chandra_acis, xmm_epic
from indexer.store import EXPOSURE_COLUMNS
from tests.conftest import SAMPLE_SEED
from tests.science_helpers import sky_wcs

AIMPOINT_CHIP = {"ACIS-I": 3, "ACIS-S": 7}  # I3, S3
GOOD_GRADES = [0, 2, 3, 4, 6]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """The three declared demo observations (ACIS-I, ACIS-S across RA 0, ACIS-I near the pole)."""
    out = tmp_path_factory.mktemp("acis-demo")
    return out, generate(out, observations=3, seed=SAMPLE_SEED)


def files(demo) -> list[tuple[Path, dict]]:
    out, truth = demo
    return [(out / obs["path"], obs) for obs in truth["observations"]]


def stingray_list(folder: Path) -> Path:
    """A private copy of the real ACIS-S list of M82 (ObsID 10027, S3 = ccd_id 7, 4612 events)
    shipped with stingray (found without importing stingray, which warns about numba)."""
    spec = importlib.util.find_spec("stingray")
    assert spec is not None and spec.origin, "stingray is not installed"
    source = Path(spec.origin).parent / "tests" / "data" / "chandra_test.fits"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "m82_10027.fits"
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


def rewrite(source: Path, target: Path, **changes) -> Path:
    """Copy an event list (uncompressed) with keywords changed (None: removed) in every HDU."""
    with fits.open(source) as hdul:
        for hdu in hdul:
            for key, value in changes.items():
                if value is None:
                    hdu.header.remove(key, ignore_missing=True)
                elif key in hdu.header or hdu.name in ("PRIMARY", "EVENTS"):
                    hdu.header[key] = value
        hdul.writeto(target)
    return target


# --- the registry ---------------------------------------------------------------------------


def test_registry_has_acis_with_its_cameras():
    acis = instruments.get("chandra-acis")
    assert (acis.mission, acis.name, acis.title, acis.kinds) == (
        "CHANDRA",
        "ACIS",
        "Chandra ACIS",
        ("events",),
    )
    assert [c.to_json() for c in acis.cameras] == [
        {"name": "ACIS-I", "label": "ACIS-I", "colour": "#3182bd"},
        {"name": "ACIS-S", "label": "ACIS-S", "colour": "#de2d26"},
    ]
    assert instruments.for_row({"mission": "CHANDRA", "instrument": "ACIS"}) is acis
    assert chandra_acis.GOOD_GRADES == (0, 2, 3, 4, 6)
    assert chandra_acis.SKY_PIXEL_ARCSEC == 0.492
    assert chandra_acis.PI_CHANNELS == (1, 1024) and chandra_acis.PI_CHANNEL_EV == 14.6


def test_recognised_by_headers_not_by_name(demo, tmp_path):
    path, obs = files(demo)[0]
    archive = tmp_path / "archive"
    archive.mkdir()
    renamed = [archive / "events.dat", archive / "P0112230101M1S001MIEVLI0000.FTZ"]
    for target in renamed:
        shutil.copyfile(path, target)
    for target in renamed:
        with fits.open(target) as hdul:
            assert instruments.recognise(hdul).key == "chandra-acis"
        meta = read_footprint(target).meta
        assert (meta["mission"], meta["instrument"], meta["camera"]) == (
            "CHANDRA",
            "ACIS",
            "ACIS-I",
        )
    report = build_index([archive], tmp_path / "index")
    assert (report.added, report.skipped) == (2, 0), report.problems
    rows = Index.load(tmp_path / "index").observations()
    assert [(r["mission"], r["obsid"], r["camera"]) for r in rows] == [
        ("CHANDRA", obs["obsid"], "ACIS-I")
    ]
    # and an XMM header is not ACIS, nor is a Chandra HRC one
    acis = instruments.get("chandra-acis")
    for telescope, detector in (("XMM", "EMOS1"), ("CHANDRA", "HRC")):
        header = fits.Header({"TELESCOP": telescope, "INSTRUME": detector})
        assert not acis.recognise(fits.HDUList([fits.PrimaryHDU(header=header)]))


# --- metadata -------------------------------------------------------------------------------


def test_metadata_matches_the_headers(demo):
    xmm_keys = set(xmm_epic.metadata(fits.Header({"OBS_ID": "1"}), fits.Header())) | {"n_events"}
    for path, obs in files(demo):
        meta = read_footprint(path).meta
        assert set(meta) == xmm_keys and set(meta) <= set(EXPOSURE_COLUMNS)
        with fits.open(path) as hdul:
            h = hdul["EVENTS"].header
            chip = AIMPOINT_CHIP[obs["camera"]]
            gti = next(g for g in hdul[2:] if g.header["CCD_ID"] == chip).data
            ontime = float(np.sum(gti["STOP"] - gti["START"]))
            n_rows = len(hdul["EVENTS"].data)
        assert meta == {
            "mission": "CHANDRA",
            "obsid": str(h["OBS_ID"]),
            "camera": obs["camera"],
            "instrument": "ACIS",
            "kind": "events",
            "object": h["OBJECT"],
            "observer": h["OBSERVER"],
            "date_obs": h["DATE-OBS"],
            "date_end": h["DATE-END"],
            "exposure": pytest.approx(h["EXPOSURE"], rel=1e-12),
            "ra_pnt": h["RA_PNT"],
            "dec_pnt": h["DEC_PNT"],
            "pa_pnt": h["ROLL_PNT"],
            "filter": None,
            "submode": f"{h['READMODE']} {h['DATAMODE']}",
            "source": "events",
            "n_events": n_rows,
        }
        # the exposure is the aimpoint chip's live time: its GTIs times the dead-time correction
        assert meta["exposure"] == pytest.approx(ontime * h["DTCOR"], rel=1e-9)
        assert (meta["obsid"], meta["ra_pnt"], meta["dec_pnt"]) == (
            obs["obsid"],
            obs["ra_pnt"],
            obs["dec_pnt"],
        )


def test_metadata_fallbacks_and_camera_without_sim_z(demo, tmp_path):
    (acis_i, truth_i), (acis_s, truth_s) = files(demo)[:2]
    with fits.open(acis_i) as hdul:
        h = hdul["EVENTS"].header.copy()
    plain = rewrite(
        acis_i,
        tmp_path / "fallback.fits",
        EXPOSURE=None,
        RA_PNT=None,
        DEC_PNT=None,
        ROLL_PNT=None,
        GRATING="HETG",
        DATAMODE="CC33_FAINT",
        READMODE="CONTINUOUS",
    )
    meta = read_footprint(plain).meta
    assert meta["exposure"] == h["LIVETIME"]
    assert (meta["ra_pnt"], meta["dec_pnt"], meta["pa_pnt"]) == (
        h["RA_NOM"],
        h["DEC_NOM"],
        h["ROLL_NOM"],
    )
    assert (meta["filter"], meta["submode"]) == ("HETG", "CONTINUOUS CC33_FAINT")
    no_live = rewrite(acis_i, tmp_path / "ontime.fits", EXPOSURE=None, LIVETIME=None)
    assert read_footprint(no_live).meta["exposure"] == h["ONTIME"]

    # without SIM_Z, or with an HRC position, the chip with the most events decides
    for path, obs in ((acis_i, truth_i), (acis_s, truth_s)):
        with fits.open(path) as hdul:
            ccd = hdul["EVENTS"].data["ccd_id"]
        busiest = int(np.argmax(np.bincount(ccd)))
        expected = "ACIS-I" if busiest <= 3 else "ACIS-S"
        assert expected == obs["camera"]
        for sim_z, name in ((None, "nosim"), (126.98, "hrcsim")):
            copy = rewrite(path, tmp_path / f"{name}-{obs['obsid']}.fits", SIM_Z=sim_z)
            assert read_footprint(copy).meta["camera"] == expected
    # SIM_Z, when usable, wins over the chips
    moved = rewrite(acis_i, tmp_path / "moved.fits", SIM_Z=-190.1)
    assert read_footprint(moved).meta["camera"] == "ACIS-S"


@pytest.mark.parametrize(
    ("sim_z", "camera"),
    [(-233.6, "ACIS-I"), (-211.0, "ACIS-I"), (-209.0, "ACIS-S"), (-190.1, "ACIS-S")]
    + [(126.98, None), (250.47, None), (float("nan"), None), (None, None)],
)
def test_camera_from_sim_z(sim_z, camera):
    assert chandra_acis.camera_from_sim_z(sim_z) == camera


def test_camera_from_chips():
    assert chandra_acis.camera_from_chips(np.array([7, 7, 3, 2])) == "ACIS-S"
    assert chandra_acis.camera_from_chips(np.array([0, 1, 1, 9])) == "ACIS-I"
    assert chandra_acis.camera_from_chips(np.array([], dtype=int)) is None


# --- footprint ------------------------------------------------------------------------------


def test_footprint_is_the_chips_with_data(demo):
    for path, obs in files(demo):
        moc = read_footprint(path).moc
        centres = obs["chip_centres"]
        for ccd, (ra, dec) in centres.items():
            inside = bool(moc.contains_lonlat(ra * u.deg, dec * u.deg)[0])
            assert inside == (int(ccd) in obs["chips"]), (obs["obsid"], ccd)
        # the middle of the 2' gap between the arrays (between I2 and S2, both on) is outside
        i2, s2 = SkyCoord(*centres["2"], unit="deg"), SkyCoord(*centres["6"], unit="deg")
        middle = i2.directional_offset_by(i2.position_angle(s2), i2.separation(s2) / 2)
        assert not moc.contains_lonlat(middle.ra, middle.dec)[0], obs["obsid"]
        # every event is inside (the outlines hold the chips' events)
        with fits.open(path) as hdul:
            data, header = hdul["EVENTS"].data, hdul["EVENTS"].header
            ra, dec = sky_wcs(header).wcs_pix2world(data["x"], data["y"], 1)
        assert moc.contains_lonlat(ra * u.deg, dec * u.deg).mean() > 0.999
        # area: the active chips (1024 x 0.492" = 8.4' a side), plus the dither and cell edges
        chips_arcmin2 = len(obs["chips"]) * (1024 * 0.492 / 60.0) ** 2
        area = moc.sky_fraction * 4 * np.pi * (180 / np.pi * 60) ** 2
        assert chips_arcmin2 < area < 1.25 * chips_arcmin2


def test_footprint_crosses_ra_zero(demo):
    path, obs = files(demo)[1]
    assert obs["field"] == "PKS0000"
    moc = read_footprint(path).moc
    ras = np.array([ra for ra, _ in (obs["chip_centres"][str(c)] for c in obs["chips"])])
    assert (ras > 359.0).any() and (ras < 1.0).any()
    for ra, dec in (obs["chip_centres"][str(c)] for c in obs["chips"]):
        assert moc.contains_lonlat(ra * u.deg, dec * u.deg)[0]


# --- filters and energies -------------------------------------------------------------------


def test_standard_filter_and_energies_match_numpy(demo):
    acis = instruments.get("chandra-acis")
    assert acis.imaging_columns == ("ENERGY", "PI", "GRADE", "STATUS")
    for path, obs in files(demo):
        with fits.open(path) as hdul:
            data = hdul["EVENTS"].data
            status = np.asarray(data["status"])
            assert status.shape == (len(data), 32) and status.dtype == bool
            expected = np.isin(data["grade"], GOOD_GRADES) & ~status.any(axis=1)
            energy, pi = np.asarray(data["energy"], float), np.asarray(data["pi"])
        assert int(expected.sum()) == obs["standard_events"] < obs["events"]
        # what astropy gives
        columns = {"GRADE": np.asarray(data["grade"]), "STATUS": status, "ENERGY": energy}
        assert np.array_equal(acis.imaging_mask(obs["camera"], columns), expected)
        # what the streaming reader of the HiPS builder gives (the 32X column as 4 bytes)
        masks, energies, pis = [], [], []
        with EventReader(path, acis.imaging_columns) as reader:
            for chunk in reader.chunks(chunk_rows=7000):
                assert chunk["STATUS"].shape == (len(chunk["X"]), 4)
                masks.append(acis.imaging_mask(obs["camera"], chunk))
                energies.append(acis.energy_ev(chunk))
                pis.append(acis.energy_ev({"PI": chunk["PI"]}))
        assert np.array_equal(np.concatenate(masks), expected)
        assert np.allclose(np.concatenate(energies), energy)
        # without an energy column: PI x 14.6 eV, the top of the channel holding the energy
        from_pi = np.concatenate(pis)
        assert np.allclose(from_pi, pi * 14.6)
        inside = (energy < from_pi) & (energy >= from_pi - 14.6)
        assert inside[(energy >= 0) & (energy < 1024 * 14.6)].all()


def test_status_filter_accepts_every_shape():
    bits = np.zeros((3, 32), dtype=bool)
    bits[1, 17] = True
    as_bytes = np.packbits(bits, axis=1)
    as_ints = as_bytes.view(">u4").ravel()
    for status in (bits, as_bytes, as_ints):
        assert chandra_acis.status_ok(status).tolist() == [True, False, True]
    grade = np.array([0, 6, 7])
    assert chandra_acis.standard_filter(grade, bits).tolist() == [True, False, False]
    assert chandra_acis.standard_filter(grade).tolist() == [True, True, False]


# --- bad input ------------------------------------------------------------------------------


def test_bad_files_are_reported_and_the_build_goes_on(demo, tmp_path):
    path, obs = files(demo)[0]
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copyfile(path, archive / path.name)
    header = fits.Header({"TELESCOP": "CHANDRA", "INSTRUME": "ACIS", "OBS_ID": "4213"})
    fits.PrimaryHDU(np.zeros((8, 8), dtype=np.float32), header=header).writeto(
        archive / "acisf04213N001_fov1.fits"
    )
    only_telescope = fits.Header({"TELESCOP": "CHANDRA"})
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header=only_telescope).writeto(
        archive / "chandra.fits"
    )
    content = path.read_bytes()
    (archive / "truncated_evt2.fits.gz").write_bytes(content[: len(content) * 2 // 3])
    (archive / "cut_end_evt2.fits.gz").write_bytes(content[:-5])  # the gzip trailer is cut
    raw = gzip.decompress(content)
    (archive / "cut_evt2.fits").write_bytes(raw[: len(raw) // 2])
    rewrite(path, archive / "acisf04213_000N001_evt1.fits", CONTENT="EVT1")
    (archive / "garbage.fits.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)

    report = build_index([archive], tmp_path / "index")
    assert (report.added, report.skipped) == (1, 7), report.problems
    reasons = {Path(p).name: reason for p, reason in report.problems}
    for name, reason in reasons.items():
        assert reason and "\n" not in reason and len(reason) <= 300, (name, reason)
    assert "ACIS file without an event list" in reasons["acisf04213N001_fov1.fits"]
    assert "TELESCOP=CHANDRA" in reasons["chandra.fits"]
    assert "level-1" in reasons["acisf04213_000N001_evt1.fits"]
    for name in ("truncated_evt2.fits.gz", "cut_end_evt2.fits.gz"):
        assert "truncated" in reasons[name] and "gzip" in reasons[name], reasons[name]
    assert "truncated" in reasons["cut_evt2.fits"]
    with pytest.raises(UnreadableError):
        read_footprint(archive / "truncated_evt2.fits.gz")
    with pytest.raises(FootprintError):
        read_footprint(archive / "garbage.fits.gz")
    # the good list is indexed and found
    ra, dec = obs["chip_centres"]["3"]
    found = Index.load(tmp_path / "index").query(f'icrs;circle({ra},{dec},30")')
    assert [(r["mission"], r["obsid"], r["camera"]) for r in found] == [
        ("CHANDRA", obs["obsid"], "ACIS-I")
    ]


# --- a real ACIS list -----------------------------------------------------------------------


def test_real_stingray_list_is_indexed_and_found(tmp_path):
    path = stingray_list(tmp_path / "archive")
    with fits.open(path) as hdul:
        header, data = hdul["EVENTS"].header, hdul["EVENTS"].data
        assert "status" not in [n.lower() for n in data.columns.names]
        ra, dec = sky_wcs(header).wcs_pix2world(data["x"], data["y"], 1)
        expected_good = int(np.isin(data["grade"], GOOD_GRADES).sum())
        columns = {"GRADE": np.asarray(data["grade"]), "ENERGY": np.asarray(data["energy"])}
    report = build_index([path.parent], tmp_path / "index")
    assert (report.added, report.skipped) == (1, 0), report.problems
    index = Index.load(tmp_path / "index")
    for region in (
        'icrs;circle(149.0,69.68,30")',
        f'icrs;circle({np.median(ra)},{np.median(dec)},10")',
    ):
        found = index.query(region)
        assert len(found) == 1, region
        row = found[0]
        assert (row["mission"], row["obsid"], row["camera"], row["instrument"]) == (
            "CHANDRA",
            "10027",
            "ACIS-S",
            "ACIS",
        )
        assert row["object"] == "M82" and row["n_events"] == len(ra)
        assert row["exposure"] == pytest.approx(header["EXPOSURE"])
        assert row["submode"] == "TIMED FAINT" and row["filter"] is None
    # far from its events (the other side of M82's pointing, 12' away) nothing is found
    assert index.query('icrs;circle(149.6,69.72,30")') == []
    # no status column: the standard filter is the grade filter alone
    acis = instruments.get("chandra-acis")
    assert int(acis.imaging_mask("ACIS-S", columns).sum()) == expected_good
