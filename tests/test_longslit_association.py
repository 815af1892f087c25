"""Calibration association (``scripts/longslit/calibrations.py``) on the real nights: which
frames each science frame gets, which it must never get and why, whatever the files' names.

Expected values: the data set's README (what each frame is) and DATE-OBS read here.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from longslit import calibrations  # noqa: E402

KAST = "kast_blue_2015-05-20"
SPRAT = "lt_sprat_2018-08-10"


def date_obs(path: Path) -> dt.datetime:
    return dt.datetime.fromisoformat(fits.getheader(path)["DATE-OBS"])


@pytest.fixture
def kast_shuffled(longslit_data, tmp_path) -> tuple[Path, dict[str, str]]:
    """The Kast night under meaningless names (copy name -> original name)."""
    names = sorted(p.name for p in (longslit_data / KAST).iterdir())
    order = names[:]
    random.Random(11).shuffle(order)
    folder = tmp_path / "night"
    folder.mkdir()
    mapping = {}
    for k, name in enumerate(order):
        suffix = ".fits.gz" if name.endswith(".fits.gz") else Path(name).suffix
        copy = f"x{k:02d}{suffix}"
        shutil.copy(longslit_data / KAST / name, folder / copy)
        mapping[copy] = name
    return folder, mapping


def test_kast_science_gets_its_calibrations_whatever_the_names(kast_shuffled):
    folder, mapping = kast_shuffled
    science = next(folder / c for c, n in mapping.items() if n == "b27.fits.gz")
    association = calibrations.for_frame(science)
    original = lambda frames: sorted(mapping[f.name] for f in frames)  # noqa: E731
    assert original(association.bias) == ["b21.fits.gz", "b22.fits.gz", "b23.fits.gz"]
    assert original(association.flat) == ["b11.fits.gz", "b12.fits.gz", "b13.fits.gz"]
    assert mapping[association.arc.name] == "b1.fits.gz"  # through another slit (0.5")
    assert mapping[association.standard.name] == "b24.fits.gz"
    association.require(("bias", "flat", "arc", "standard"))
    # every FITS file of the folder has a decision; the reference tables are not frames
    decided = {mapping[d.file]: d for d in association.decisions}
    assert set(decided) == {n for n in mapping.values() if ".fits" in n}
    assert decided["feige66_002.fits.gz"].type is None
    assert decided["b27.fits.gz"].used_as is None


def test_sprat_science_gets_the_xe_arc_and_never_the_other_nights_flat(longslit_data):
    folder = longslit_data / SPRAT
    arc = folder / "v_a_20180810_13_1_0_1.fits.gz"
    for name in ("v_e_20180810_12_1_0_0.fits.gz", "v_e_20180810_12_2_0_0.fits.gz"):
        association = calibrations.for_frame(folder / name)
        assert association.arc is not None and association.arc.name == arc.name
        minutes = (date_obs(arc) - date_obs(folder / name)) / dt.timedelta(minutes=1)
        assert 9 <= round(minutes) <= 11  # 11.1 and 8.9 min after the two exposures began
        assert association.flat == [] and association.bias == []
        rejected = next(d for d in association.decisions if d.file == "v_slit_red_1.fits.gz")
        assert rejected.used_as is None and rejected.type == "flat"
        text = " ".join(rejected.reasons)
        assert "another night (2018-11-29" in text and "GRATROT '1'" in text
        # the profile requires only the arc: SPRAT frames carry no overscan and no biases here
        association.require(("arc",))
        with pytest.raises(calibrations.AssociationError, match="no flat for v_e_.*v_slit_red_1"):
            association.require(("flat",))


def edited_copy(source: Path, target: Path, **cards) -> Path:
    with fits.open(source) as hdul:
        for key, value in cards.items():
            hdul[0].header[key.replace("_", "-") if key == "DATE_OBS" else key] = value
        hdul.writeto(target)
    return target


def test_other_night_other_setup_and_the_closest_arc(longslit_data, tmp_path):
    src = longslit_data / KAST
    folder = tmp_path / "night"
    folder.mkdir()
    for name in ("b27.fits.gz", "b1.fits.gz", "b11.fits.gz", "b21.fits.gz"):
        shutil.copy(src / name, folder / name)
    # an arc of the next night, one through another grism, and a later, closer one
    edited_copy(src / "b1.fits.gz", folder / "next_night.fits", DATE_OBS="2015-05-21T04:30:00.0")
    edited_copy(src / "b1.fits.gz", folder / "other_grism.fits", GRISM_N="452/3306")
    edited_copy(src / "b1.fits.gz", folder / "closer.fits", DATE_OBS="2015-05-20T05:10:00.0")
    # a flat through another slit is refused (only arcs may differ in slit); a bias of another
    # grism is still a bias of the night
    edited_copy(src / "b12.fits.gz", folder / "narrow_flat.fits", SLIT_N="1.0 arcsec")
    edited_copy(src / "b22.fits.gz", folder / "bias_other_grism.fits", GRISM_N="452/3306")
    association = calibrations.for_frame(folder / "b27.fits.gz")
    why = {d.file: " ".join(d.reasons) for d in association.decisions}
    assert association.arc.name == "closer.fits"
    assert "not the closest arc" in why["b1.fits.gz"]
    assert "another night (2015-05-20, the target's is 2015-05-19)" in why["next_night.fits"]
    assert "another setup: GRISM_N '452/3306'" in why["other_grism.fits"]
    assert [f.name for f in association.flat] == ["b11.fits.gz"]
    assert "SLIT_N '1.0 arcsec'" in why["narrow_flat.fits"]
    assert sorted(f.name for f in association.bias) == ["b21.fits.gz", "bias_other_grism.fits"]


def test_missing_calibrations_are_named(longslit_data, tmp_path):
    folder = tmp_path / "night"
    folder.mkdir()
    for name in ("b27.fits.gz", "b21.fits.gz"):
        shutil.copy(longslit_data / KAST / name, folder / name)
    association = calibrations.for_frame(folder / "b27.fits.gz")
    with pytest.raises(calibrations.AssociationError) as err:
        association.require(("bias", "flat", "arc"))
    message = str(err.value)
    assert "no flat for b27.fits.gz" in message and "no arc for b27.fits.gz" in message
    assert "no bias" not in message
    assert "night 2015-05-19" in message
