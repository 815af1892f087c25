"""The response step of generate_spectra: SAS when present, else an exact canned RMF, else NONE.

The expected choice is worked out here from the event list (the source's mean RAWY counted with
astropy, the channel count, the date), not from the script's own helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from tests.science_helpers import build_input, run_script, write_rmf

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sas-reference"
PN_REF_RMF = REFERENCE / "epn_ff20_dY9.rmf"  # a doubles-only (PATTERN 1-4) pn response


@pytest.fixture(scope="module")
def reference():
    if not PN_REF_RMF.is_file():
        if os.environ.get("CI"):
            raise RuntimeError(f"the SAS reference files are missing: {REFERENCE}")
        pytest.skip(f"SAS reference files not found at {REFERENCE} (../shared/data)")
    return REFERENCE


def pn_case(sample_archive):
    """The first demo observation's pn list and a circle on its brightest truth source."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    obs = truth["observations"][0]
    path = sample_archive / obs["cameras"]["EPN"]["file"]
    source = next(s for s in truth["sources"] if s["id"] == "CL0958-02")
    return obs["obsid"], path, source["ra"], source["dec"], 0.01


def independent_row(path: Path, ra: float, dec: float, radius: float) -> int:
    """Canned-response row of the source: mean RAWY of its standard pn events, 20 rows a row."""
    from indexer.instruments import column_wcs

    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        wcs = column_wcs(hdul["EVENTS"].header)
    x0, y0 = wcs.all_world2pix([[ra, dec]], 1)[0]
    r = radius / abs(wcs.wcs.cdelt[0])
    inside = (d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r
    inside &= (d["FLAG"] == 0) & (d["PATTERN"] <= 4)
    ccds, counts = np.unique(d["CCDNR"][inside], return_counts=True)
    main = inside & (d["CCDNR"] == ccds[np.argmax(counts)])
    return int(min(9, (float(np.mean(d["RAWY"][main])) - 1) // 20))


def run_pn(sample_archive, tmp_path, env_extra: dict, params: dict | None = None):
    obsid, path, ra, dec, radius = pn_case(sample_archive)
    text = f"icrs\ncircle({ra},{dec},{radius})"
    inp = build_input("generate_spectra", [path], text, None, tmp_path / "output", params)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}
    env.update(env_extra)
    proc = run_script("generate_spectra", inp, tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = fits.getheader(tmp_path / "output" / f"{obsid}_EPN_src.pha", "SPECTRUM")
    return proc, header


def test_doubles_only_rmf_is_never_named_for_a_singles_doubles_spectrum(
    sample_archive, tmp_path, reference
):
    proc, h = run_pn(sample_archive, tmp_path, {"REGIO_RESPONSES": str(reference)})
    assert h["RESPFILE"] == "NONE" and h["ANCRFILE"] == "NONE"
    assert h["DSVAL4"] == ":4"  # the spectrum is PATTERN 0-4
    line = next(x for x in proc.stdout.splitlines() if "RESPFILE NONE" in x)
    assert "SAS is not initialised" in line and "epn_ff20_dY9.rmf (pattern d != sd" in line


def test_library_of_several_rmfs_gives_the_exact_one(sample_archive, tmp_path, reference):
    obsid, path, ra, dec, radius = pn_case(sample_archive)
    row = independent_row(path, ra, dec, radius)
    other = (row + 1) % 10
    library = tmp_path / "library"
    library.mkdir()
    # renamed copies of one real pn RMF (4096 channels): only their names differ, which is what
    # the choice is made on; every decoy differs from the right file in one criterion only
    names = [
        f"epn_ff20_sdY{row}_v20.0.rmf",  # the one
        f"epn_ff20_sdY{row}_v19.0.rmf",  # older version
        f"epn_ff20_dY{row}_v21.0.rmf",  # doubles only
        f"epn_ff20_sY{row}_v21.0.rmf",  # singles only
        f"epn_ff20_sdY{other}_v21.0.rmf",  # another RAWY row
        f"epn_lw20_sdY{row}_v21.0.rmf",  # large window
        f"epn_e9_ff20_sdY{row}_v21.0.rmf",  # an epoch missing from epochs.toml
        "m1_e13_im_pall_c.rmf",  # MOS1
    ]
    for name in names:
        shutil.copyfile(reference / "epn_ff20_dY9.rmf", library / name)
    proc, h = run_pn(sample_archive, tmp_path, {"REGIO_RESPONSES": str(library)})
    assert h["RESPFILE"] == names[0], proc.stdout
    assert (tmp_path / "output" / names[0]).is_file()  # copied next to the spectrum
    assert h["ANCRFILE"] == "NONE"
    # SAS-made or canned, a fit client finds it relative to the spectrum
    assert fits.getheader(tmp_path / "output" / h["RESPFILE"], 1)["DETCHANS"] == h["DETCHANS"]


def test_epoch_table_admits_an_epoch_file_only_within_its_dates(
    sample_archive, tmp_path, reference
):
    obsid, path, ra, dec, radius = pn_case(sample_archive)
    row = independent_row(path, ra, dec, radius)
    date = fits.getheader(path, "EVENTS")["DATE-OBS"][:10]
    library = tmp_path / "library"
    library.mkdir()
    shutil.copyfile(reference / "epn_ff20_dY9.rmf", library / f"epn_e2_ff20_sdY{row}.rmf")
    shutil.copyfile(reference / "epn_ff20_dY9.rmf", library / f"epn_e3_ff20_sdY{row}.rmf")
    year = int(date[:4])
    (library / "epochs.toml").write_text(
        f'[EPN]\n2 = ["1999-12-10", "{year - 1}-12-31"]\n3 = ["{year}-01-01", "2030-12-31"]\n'
    )
    _, h = run_pn(sample_archive, tmp_path, {"REGIO_RESPONSES": str(library)})
    assert h["RESPFILE"] == f"epn_e3_ff20_sdY{row}.rmf"


def test_mos_canned_rmf_needs_800_channels(real_data, tmp_path):
    path = real_data / "0201901401" / "mos1_exp1_clean_evts.fits"
    library = tmp_path / "library"
    library.mkdir()
    write_rmf(library / "m1_e13_im_pall_c.rmf", 800, 15.0, "EMOS1")
    write_rmf(library / "m1_e13_im_p0_c.rmf", 800, 15.0, "EMOS1")  # singles only
    write_rmf(library / "m2_e13_im_pall_c.rmf", 800, 15.0, "EMOS2")
    (library / "epochs.toml").write_text('[EMOS1]\n13 = ["2004-01-01", "2004-12-31"]\n')
    text = "icrs\ncircle(149.59,-11.06,0.0166667)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}
    env["REGIO_RESPONSES"] = str(library)
    for mos_bin, expected in ((5, "NONE"), (15, "m1_e13_im_pall_c.rmf")):
        out = tmp_path / f"bin{mos_bin}"
        inp = build_input("generate_spectra", [path], text, None, out / "output",
                          {"screen_flares": False, "mos_bin": mos_bin})  # fmt: skip
        proc = run_script("generate_spectra", inp, out, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        h = fits.getheader(out / "output" / "0201901401_EMOS1_src.pha", "SPECTRUM")
        assert h["RESPFILE"] == expected, proc.stdout
        if expected == "NONE":
            assert "DETCHANS 800 != 2400" in proc.stdout


FAKE_TOOL = """#!/bin/sh
# a stand-in for a SAS task: records its arguments, writes the file it is asked for
echo "$(basename "$0") $*" >> "{log}"
for arg in "$@"; do
  case "$arg" in
    rmfset=*) [ "$(basename "$0")" = rmfgen ] && cp "{rmf}" "${{arg#rmfset=}}" ;;
    arfset=*) cp "{arf}" "${{arg#arfset=}}" ;;
  esac
done
"""


def test_sas_makes_the_responses_when_installed(sample_archive, tmp_path, reference):
    bin_dir = tmp_path / "sas" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "sas" / "calls.log"
    for tool in ("rmfgen", "arfgen"):
        script = bin_dir / tool
        script.write_text(
            FAKE_TOOL.format(log=log, rmf=reference / "epn_ff20_dY9.rmf",
                             arf=reference / "pn_pi_src.arf")
        )  # fmt: skip
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {
        "SAS_DIR": str(tmp_path / "sas"),
        "SAS_CCF": str(tmp_path / "sas" / "ccf.cif"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "REGIO_RESPONSES": str(reference),
    }
    proc, h = run_pn(sample_archive, tmp_path, env, {"source_extent": "point"})
    obsid = pn_case(sample_archive)[0]
    stem = f"{obsid}_EPN_src"
    assert (h["RESPFILE"], h["ANCRFILE"]) == (f"{stem}.rmf", f"{stem}.arf"), proc.stdout
    calls = log.read_text().splitlines()
    assert calls[0] == f"rmfgen spectrumset={stem}.pha rmfset={stem}.rmf"
    assert calls[1].startswith(
        f"arfgen spectrumset={stem}.pha arfset={stem}.arf withrmfset=yes rmfset={stem}.rmf "
        "badpixlocation="
    )
    assert calls[1].endswith("detmaptype=psf")
    # the header still verifies after the keywords were written
    with fits.open(tmp_path / "output" / f"{stem}.pha", checksum=True) as hdul:
        assert hdul["SPECTRUM"].header["RESPFILE"] == f"{stem}.rmf"


def test_pn_spectrum_keywords_cover_the_reference_pn_spectrum(sample_archive, tmp_path, reference):
    """Keyword by keyword against pn_pi_src_bin10.ds (its SPECTRUM and GTI headers), but the
    CIAO bookkeeping it carries (ASCDSVER, HDUNAME, HISTNUM) and its own data-subspace layout."""
    proc, h = run_pn(sample_archive, tmp_path, {})
    ref = fits.getheader(reference / "pn_pi_src_bin10.ds", "SPECTRUM")
    skip = {"ASCDSVER", "HDUNAME", "HISTNUM", "QUALITY", "GROUPING", "CREATOR", "DATE"}
    keys = {
        k for k in ref
        if k not in ("", "COMMENT", "HISTORY") and "DS" not in k
        and not k.startswith(("TTYPE", "TFORM", "TUNIT", "NAXIS"))
    } - skip  # fmt: skip
    assert keys - set(h) == set()
    obsid = pn_case(sample_archive)[0]
    with fits.open(tmp_path / "output" / f"{obsid}_EPN_src.pha") as ours:
        gti = ours[h["DSREF5"].lstrip(":")].header
        ref_gti = fits.getheader(reference / "pn_pi_src_bin10.ds", 2)  # its first GTI table
        for key in ("TELESCOP", "INSTRUME"):
            assert key in ref_gti and key in ours[0].header
        assert {"START", "STOP"} == set(ours[h["DSREF5"].lstrip(":")].columns.names)
        assert gti["HDUCLAS1"] == "GTI"


def fake_sas(tmp_path, rmf: Path, arf: Path, fail: bool = False) -> dict:
    """A stand-in SAS (rmfgen, arfgen copying ``rmf``/``arf``, or failing) and its environment."""
    bin_dir = tmp_path / "sas" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "sas" / "calls.log"
    for tool in ("rmfgen", "arfgen"):
        script = bin_dir / tool
        body = FAKE_TOOL.format(log=log, rmf=rmf, arf=arf)
        if fail:
            body = '#!/bin/sh\necho "** rmfgen: error (CalClosed): no CCF" >&2\nexit 3\n'
        script.write_text(body)
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {
        "SAS_DIR": str(tmp_path / "sas"),
        "SAS_CCF": str(tmp_path / "sas" / "ccf.cif"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }


def test_failing_sas_falls_back_to_the_library(sample_archive, tmp_path, reference):
    obsid, path, ra, dec, radius = pn_case(sample_archive)
    row = independent_row(path, ra, dec, radius)
    library = tmp_path / "library"
    library.mkdir()
    shutil.copyfile(reference / "epn_ff20_dY9.rmf", library / f"epn_ff20_sdY{row}.rmf")
    env = fake_sas(tmp_path, reference / "epn_ff20_dY9.rmf", reference / "pn_pi_src.arf", True)
    proc, h = run_pn(sample_archive, tmp_path, {**env, "REGIO_RESPONSES": str(library)})
    assert "rmfgen failed (exit 3): ** rmfgen: error (CalClosed): no CCF" in proc.stdout
    assert h["RESPFILE"] == f"epn_ff20_sdY{row}.rmf" and h["ANCRFILE"] == "NONE"


def test_combined_spectrum_response_is_the_exposure_weighted_rmf_times_arf(real_data, tmp_path):
    from tests.science_helpers import read_response

    arf = REFERENCE / "MNLup_2138_0670580101_EMOS1_S001_spec.arf"
    if not arf.is_file():
        pytest.skip(f"SAS reference files not found at {REFERENCE}")
    with fits.open(arf) as a:
        grid = (a["SPECRESP"].data["ENERG_LO"], a["SPECRESP"].data["ENERG_HI"])
    rmf = write_rmf(tmp_path / "mos.rmf", 800, 15.0, "EMOS1", energies=grid)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}
    env.update(fake_sas(tmp_path, rmf, arf))
    paths = [real_data / o / "mos1_exp1_clean_evts.fits" for o in ("0201901401", "0404910601")]
    text = "icrs\ncircle(149.59,-11.06,0.0166667)"
    inp = build_input("generate_spectra", paths, text, None, tmp_path / "output",
                      {"screen_flares": False, "mos_bin": 15})  # fmt: skip
    proc = run_script("generate_spectra", inp, tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "output"
    h = fits.getheader(out / "combined_EMOS1_src.pha", "SPECTRUM")
    assert (h["RESPFILE"], h["ANCRFILE"]) == ("combined_EMOS1.rsp", "NONE")
    parts = [
        fits.getheader(out / f"{o}_EMOS1_src.pha", "SPECTRUM") for o in ("0201901401", "0404910601")
    ]
    total = sum(p["EXPOSURE"] for p in parts)
    expected = sum(
        p["EXPOSURE"] / total * read_response(out / p["RESPFILE"], out / p["ANCRFILE"])[2]
        for p in parts
    )
    combined = read_response(out / "combined_EMOS1.rsp")[2]
    assert np.allclose(combined, expected, rtol=1e-5, atol=1e-6 * expected.max())
    assert fits.getheader(out / "combined_EMOS1.rsp", 1)["HDUCLAS3"] == "FULL"
