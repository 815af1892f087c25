"""The instrument registry: one module per instrument, recognition by header, nothing above the
index naming a camera."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

from indexer import instruments
from indexer.footprint import read_footprint
from indexer.instruments import FootprintError, NotRecognisedError
from tests.conftest import ROOT


def test_every_instrument_module_is_registered_with_a_complete_description():
    modules = sorted(
        p.stem
        for p in (ROOT / "indexer" / "instruments").glob("*.py")
        if not p.stem.startswith("_")
    )
    registered = instruments.all_instruments()
    # one module may register several instruments (longslit.py: one per spectrograph profile)
    assert sorted({type(i).__module__.rsplit(".", 1)[1] for i in registered}) == modules
    assert {"xmm-epic", "chandra-acis"} <= {i.key for i in registered}
    for instrument in registered:
        data = instrument.to_json()
        assert data["key"] == f"{data['mission']}-{data['instrument']}".lower()
        assert set(data["kinds"]) <= set(instruments.KINDS)
        assert data["cameras"], instrument.key
        for camera in data["cameras"]:
            assert re.fullmatch(r"#[0-9a-f]{6}", camera["colour"]), camera
        assert instruments.get(instrument.key) is instrument
        assert (
            instruments.for_row({"mission": data["mission"], "instrument": data["instrument"]})
            is instrument
        )


def test_camera_order_follows_the_registry():
    order = instruments.camera_order()
    xmm = [order[("XMM", c)] for c in ("EMOS1", "EMOS2", "EPN")]
    assert xmm == sorted(xmm)
    with pytest.raises(KeyError, match="no instrument NOPE/X"):
        instruments.for_row({"mission": "NOPE", "instrument": "X"})


def test_registering_a_broken_instrument_is_refused():
    class Broken(instruments.Instrument):
        key = "broken-thing"
        mission, name, title = "BROKEN", "THING", "Broken"
        kinds = ("photons",)
        cameras = ()

        def recognise(self, hdul):
            return False

        def describe(self, hdul, depth):
            raise NotImplementedError

    with pytest.raises(ValueError, match="unknown data kinds"):
        instruments.register(Broken)
    assert "broken-thing" not in {i.key for i in instruments.all_instruments()}


def test_xmm_files_are_recognised_by_header_not_name(real_data, tmp_path):
    source = real_data / "0201901401" / "mos1_exp1_clean_evts.fits"
    renamed = tmp_path / "P0000000000ACISF_evt2.dat"
    shutil.copy(source, renamed)
    footprint = read_footprint(renamed)
    meta = footprint.meta
    assert (meta["mission"], meta["instrument"], meta["camera"], meta["kind"]) == (
        "XMM", "EPIC", "EMOS1", "events",
    )  # fmt: skip
    with fits.open(source) as hdul:
        assert meta["obsid"] == hdul[0].header["OBS_ID"]
    expmap = next((real_data / "0201901401").glob("*pn*expmap.fits"))
    assert read_footprint(expmap).meta["kind"] == "exposure-map"


def test_an_unknown_instrument_is_refused_in_one_line(tmp_path):
    path = tmp_path / "swift.fits"
    fits.PrimaryHDU(header=fits.Header({"TELESCOP": "SWIFT", "INSTRUME": "XRT"})).writeto(path)
    with pytest.raises(NotRecognisedError) as caught:
        read_footprint(path)
    message = str(caught.value)
    assert "\n" not in message and "TELESCOP=SWIFT" in message and "XMM-Newton EPIC" in message


def test_an_epic_table_without_sky_columns_is_refused(tmp_path):
    path = tmp_path / "odd.fits"
    primary = fits.PrimaryHDU(header=fits.Header({"TELESCOP": "XMM", "INSTRUME": "EMOS1"}))
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="TIME", format="D", array=[1.0, 2.0])], name="EVENTS"
    )
    fits.HDUList([primary, table]).writeto(path)
    with pytest.raises(FootprintError, match="neither an event list"):
        read_footprint(path)


def test_nothing_above_the_index_names_a_camera():
    """The app and the page learn cameras from the registry (GET /api/instruments)."""
    names = [c.name for i in instruments.all_instruments() for c in i.cameras]
    names += [c.label for i in instruments.all_instruments() for c in i.cameras if len(c.label) > 2]
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    found = []
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "app" / "static").glob("*.js"),
                 *(ROOT / "app" / "static").glob("*.css"), *(ROOT / "app" / "templates").rglob("*.html")]:  # fmt: skip
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_files_the_readme_names_exist():
    """The README's "Adding an instrument" and "Adding a script" steps name real files."""
    text = (ROOT / "README.md").read_text()
    named = set(
        re.findall(r"`((?:app|indexer|demo|scripts|tests|bench)/[\w./-]+\.(?:py|toml))`", text)
    )
    assert "indexer/instruments/chandra_acis.py" in named
    # names with a placeholder (scripts/NAME.toml, demo/<mission>_<instrument>.py) are patterns
    real = {p for p in named if not re.search(r"[A-Z]{3,}|<", p)}
    missing = sorted(p for p in real if not (ROOT / p).exists())
    assert missing == []


def test_a_truncated_gzip_event_list_is_unreadable_not_unknown(sample_archive, tmp_path):
    """astropy drops the HDUs of a gzip stream that ends early without a word: we do not."""
    whole = next(sample_archive.rglob("*MIEVLI*.FTZ")).read_bytes()
    cut = tmp_path / "cut.FTZ"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(instruments.FootprintError, match="truncated or corrupt gzip file"):
        read_footprint(cut)
