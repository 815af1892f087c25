"""The long-slit instrument module (``indexer.instruments.longslit``) on the real frames:
recognition and classification by header (whatever the files are called), metadata, the slit's
footprint in the index, the observing night, and frames it must refuse.

Expected values come from the data set's README (which frame is what) and from the headers read
here with astropy; footprints are checked with astropy's own sky offsets, not the module's.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from indexer import instruments
from indexer.build import build_index
from indexer.footprint import FootprintError, NotRecognisedError, read_footprint
from indexer.index import Index
from indexer.instruments import longslit

KAST = "kast_blue_2015-05-20"
SPRAT = "lt_sprat_2018-08-10"
#: what each frame is, from the data set's README
KAST_TYPES = {
    "b1.fits.gz": "arc",
    "b11.fits.gz": "flat",
    "b12.fits.gz": "flat",
    "b13.fits.gz": "flat",
    "b21.fits.gz": "bias",
    "b22.fits.gz": "bias",
    "b23.fits.gz": "bias",
    "b24.fits.gz": "standard",
    "b27.fits.gz": "science",
}
SPRAT_TYPES = {
    "v_e_20180810_12_1_0_0.fits.gz": "science",
    "v_e_20180810_12_2_0_0.fits.gz": "science",
    "v_a_20180810_13_1_0_1.fits.gz": "arc",
    "v_s_20180810_27_1_0_0.fits.gz": "standard",
    "v_slit_red_1.fits.gz": "flat",
}


def kind_of(path: Path) -> str:
    header = fits.getheader(path)
    profile = longslit.profile_for(header)
    assert profile is not None, path.name
    return longslit.classify(header, profile).type


def test_one_instrument_per_spectrograph_with_its_arms_as_cameras():
    kast = instruments.get("shane-kast")
    sprat = instruments.get("lt-sprat")
    assert (kast.mission, kast.name, [c.name for c in kast.cameras]) == ("SHANE", "KAST", ["BLUE"])
    assert (sprat.mission, sprat.name, [c.name for c in sprat.cameras]) == (
        "LT",
        "SPRAT",
        ["SPRAT"],
    )
    assert kast.kinds == sprat.kinds == ("longslit-frame",)
    for profile in longslit.PROFILES.values():
        assert instruments.for_row({"mission": profile.mission, "instrument": profile.instrument})
        for amp in profile.amplifiers:
            rows, cols = amp.data_slices()
            assert rows.stop > rows.start and cols.stop > cols.start


def test_kast_frames_classified_by_header_whatever_their_names(longslit_data, tmp_path):
    # copies under shuffled, meaningless names, listed in a random order
    names = list(KAST_TYPES)
    random.Random(7).shuffle(names)
    expected = {}
    for k, name in enumerate(names):
        copy = tmp_path / f"frame{k:02d}.fits.gz"
        shutil.copy(longslit_data / KAST / name, copy)
        expected[copy.name] = KAST_TYPES[name]
    found = {p.name: kind_of(p) for p in sorted(tmp_path.iterdir(), reverse=True)}
    assert found == expected
    # OBSTYPE says DARK on the biases and OBJECT on the arc: only a hint, overruled
    bias = fits.getheader(longslit_data / KAST / "b21.fits.gz")
    assert bias["OBSTYPE"] == "DARK"
    why = longslit.classify(bias, longslit.PROFILES["shane-kast-blue"])
    assert why.type == "bias" and any("suggests dark" in r for r in why.reasons)


def test_sprat_frames_classified_and_the_dark_without_instrument_refused(longslit_data):
    folder = longslit_data / SPRAT
    assert {name: kind_of(folder / name) for name in SPRAT_TYPES} == SPRAT_TYPES
    dark = fits.getheader(folder / "v_dark_1.fits.gz")
    assert longslit.profile_for(dark) is None  # no INSTRUME/TELESCOP: not recognised
    with pytest.raises(NotRecognisedError):
        read_footprint(folder / "v_dark_1.fits.gz")


def test_classification_rules_on_edited_headers():
    profile = longslit.PROFILES["lt-sprat"]
    base = fits.Header({"INSTRUME": "SPRAT", "TELESCOP": "Liverpool Telescope", "EXPTIME": 120.0})

    def kind(**cards):
        header = base.copy()
        header.update(cards)
        return longslit.classify(header, profile).type

    assert kind(OBJECT="SN 2018abc") == "science"
    assert kind(OBJECT="SN 2018abc", LAMP1SET=True) == "arc"  # a lamp beats the name
    assert kind(OBJECT="SN 2018abc", LAMP2SET=True) == "flat"
    assert kind(OBJECT="anything", EXPTIME=0.0) == "bias"
    assert kind(OBJECT="Hiltner 102") == "standard"
    assert kind(OBJECT="BD+28 4211") == "standard"
    assert kind(OBJECT="Sky flat evening") == "flat"
    assert kind(OBJECT="UNKNOWN", OBSTYPE="ARC") == "arc"  # the hint decides when nothing else
    assert kind(OBJECT="dark 600s", EXPTIME=600.0) == "dark"


def test_night_is_the_local_evening_date():
    from datetime import date, datetime

    kast = longslit.PROFILES["shane-kast-blue"].longitude
    sprat = longslit.PROFILES["lt-sprat"].longitude
    # Lick: 01:35 UT on May 20 is the evening of May 19 (UTC-8); La Palma: after midnight UT
    assert longslit.night(datetime(2015, 5, 20, 1, 35), kast) == date(2015, 5, 19)
    assert longslit.night(datetime(2015, 5, 20, 12, 30), kast) == date(2015, 5, 19)
    assert longslit.night(datetime(2018, 8, 11, 1, 36), sprat) == date(2018, 8, 10)
    assert longslit.night(datetime(2018, 8, 10, 23, 22), sprat) == date(2018, 8, 10)
    assert longslit.night(datetime(2018, 8, 11, 14, 0), sprat) == date(2018, 8, 11)


def test_sky_frames_have_metadata_and_calibrations_are_skipped(longslit_data):
    folder = longslit_data / KAST
    header = fits.getheader(folder / "b27.fits.gz")
    meta = read_footprint(folder / "b27.fits.gz").meta
    centre = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    assert meta["mission"] == "SHANE" and meta["instrument"] == "KAST" and meta["camera"] == "BLUE"
    assert meta["kind"] == "longslit-frame" and meta["source"] == "science"
    assert meta["obsid"] == "20150519_27"
    assert meta["object"] == "J1217p3905" and meta["exposure"] == 1200.0
    assert meta["filter"] == "600/4310" and meta["submode"] == "2.0 arcsec"
    assert meta["date_obs"] == "2015-05-20T04:37:33" and meta["date_end"] == "2015-05-20T04:57:33"
    assert meta["ra_pnt"] == pytest.approx(centre.ra.deg) and meta["dec_pnt"] == pytest.approx(
        centre.dec.deg
    )
    assert meta["pa_pnt"] == pytest.approx(header["TUB"])
    assert read_footprint(folder / "b24.fits.gz").meta["source"] == "standard"
    for name, kind in KAST_TYPES.items():
        if kind in ("bias", "flat", "arc"):
            with pytest.raises(FootprintError, match=f"calibration frame \\({kind}"):
                read_footprint(folder / name)
    sprat = read_footprint(longslit_data / SPRAT / "v_e_20180810_12_2_0_0.fits.gz").meta
    assert (sprat["mission"], sprat["obsid"], sprat["camera"]) == ("LT", "20180810_12_2", "SPRAT")
    assert sprat["filter"] == "Wasatch600" and sprat["submode"] == "1.8 arcsec"
    assert sprat["pa_pnt"] == pytest.approx(148.0739)


def test_slit_footprint_covers_the_slit_and_nothing_far(longslit_data):
    path = longslit_data / KAST / "b27.fits.gz"
    header = fits.getheader(path)
    moc = read_footprint(path).moc
    centre = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    pa = float(header["TUB"]) * u.deg
    along = [centre.directional_offset_by(pa + s * u.deg, 70 * u.arcsec) for s in (0, 180)]
    inside = [centre, *along]
    outside = [
        centre.directional_offset_by(pa + 90 * u.deg, 2 * u.arcmin),  # across the slit
        centre.directional_offset_by(pa, 3 * u.arcmin),  # beyond its 145" length
    ]
    lon = lambda cs: u.Quantity([c.ra for c in cs])  # noqa: E731
    lat = lambda cs: u.Quantity([c.dec for c in cs])  # noqa: E731
    assert moc.contains_lonlat(lon(inside), lat(inside)).all()
    assert not moc.contains_lonlat(lon(outside), lat(outside)).any()
    # the MOC is small: a few cells of 25.8" along a 145" slit
    area = moc.sky_fraction * 4 * np.pi * (180 / np.pi * 3600) ** 2
    assert 145 * 2 < area < 145 * 26 * 4


def test_index_finds_the_spectra_covering_a_region(longslit_data, tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(longslit_data / KAST, archive / KAST)
    shutil.copytree(longslit_data / SPRAT, archive / SPRAT)
    report = build_index([archive], tmp_path / "index")
    reasons = dict(report.problems)
    assert report.exposures == 5  # b24, b27, two SPRAT science frames, the SPRAT standard
    skipped = {Path(p).name: r for p, r in reasons.items()}
    assert "calibration frame" in skipped["b1.fits.gz"]
    assert "used by reductions, not a sky exposure" in skipped["b21.fits.gz"]
    assert "no registered instrument" in skipped["v_dark_1.fits.gz"]
    index = Index.load(tmp_path / "index")
    header = fits.getheader(archive / KAST / "b27.fits.gz")
    centre = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    found = index.query(f'icrs;circle({centre.ra.deg},{centre.dec.deg},10")')
    assert [(r["mission"], r["obsid"], r["kind"]) for r in found] == [
        ("SHANE", "20150519_27", "longslit-frame")
    ]
    far = centre.directional_offset_by(0 * u.deg, 10 * u.arcmin)
    assert index.query(f'icrs;circle({far.ra.deg},{far.dec.deg},10")') == []


def test_pixel_wcs_puts_the_pointing_on_the_middle_of_the_frame(longslit_data):
    path = longslit_data / SPRAT / "v_e_20180810_12_1_0_0.fits.gz"
    header = fits.getheader(path)
    wcs = instruments.get("lt-sprat").pixel_wcs(path)
    centre = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    x, y = wcs.world_to_pixel(centre)
    assert (x + 1, y + 1) == pytest.approx(((1024 + 1) / 2, (254 + 1) / 2), abs=1e-6)
    # one row along the slit is the spatial scale, in the direction of the slit's PA
    sky = wcs.pixel_to_world([x, x], [y, y + 100])
    assert sky[0].separation(sky[1]).arcsec == pytest.approx(44.0, rel=1e-3)
    pa = sky[0].position_angle(sky[1]).deg % 180
    assert pa == pytest.approx(header["ROTSKYPA"] % 180, abs=0.05)


def test_frames_without_date_or_pointing_are_refused(longslit_data, tmp_path):
    for key in ("DATE-OBS", "RA"):
        with fits.open(longslit_data / KAST / "b27.fits.gz") as hdul:
            del hdul[0].header[key]
            hdul.writeto(tmp_path / f"no-{key}.fits")
        with pytest.raises(FootprintError):
            read_footprint(tmp_path / f"no-{key}.fits")
