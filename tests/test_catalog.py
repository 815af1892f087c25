"""The script catalogue: manifests are checked strictly, parameters are validated strictly."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import catalog
from app.catalog import ParamError
from tests.conftest import ROOT

SCRIPTS = ROOT / "tests" / "scripts"


@pytest.fixture(scope="module")
def cat() -> dict[str, catalog.Script]:
    return catalog.load_catalog(SCRIPTS)


def test_catalogue_lists_the_valid_scripts_and_logs_the_broken_one(caplog):
    with caplog.at_level(logging.ERROR, logger="regio.catalog"):
        scripts = catalog.load_catalog(SCRIPTS)
    assert sorted(scripts) == ["escape", "fails", "slow", "slow_short", "stages", "xmm_only"]
    assert "broken" in caplog.text and "'integer'" in caplog.text
    _, problems = catalog.scan_catalog(SCRIPTS)
    assert list(problems) == ["broken"]
    assert "parameter 'n'" in problems["broken"]


def test_script_fields_and_commands(cat):
    stages = cat["stages"]
    assert stages.title == "Three stages (test)"
    assert stages.version == "1.0"
    assert stages.time_limit == 120
    assert [p.name for p in stages.parameters] == ["sleep", "steps", "label", "plot", "mode"]
    assert [p.kind for p in stages.products] == ["table", "plot"]
    # Python scripts run with the worker's own interpreter, anything else directly
    assert stages.command() == [sys.executable, str(SCRIPTS / "stages.py")]
    assert cat["slow"].command() == [str(SCRIPTS / "slow.sh")]
    assert cat["slow_short"].time_limit == 2


def test_to_json_is_what_the_api_serves(cat):
    data = cat["stages"].to_json()
    assert set(data) == {
        "name", "title", "version", "documentation", "time_limit", "parameters", "products",
        "accepts", "stages", "stage_count",
    }  # fmt: skip
    assert (data["stages"], data["stage_count"]) == ([], None)  # announces no count
    assert data["accepts"] == {"kinds": [], "instruments": []}  # no [accepts]: anything
    assert "/" not in str(data)  # no file system paths leak
    sleep = data["parameters"][0]
    assert sleep == {
        "name": "sleep", "type": "float", "required": False, "default": 0.0, "unit": "s",
        "help": "Pause after each progress step.", "min": 0, "max": 60,
    }  # fmt: skip
    assert data["parameters"][4]["choices"] == ["fast", "careful"]
    assert data["products"][0] == {
        "kind": "table",
        "description": "A text table with the label and the step count.",
    }


def test_defaults_are_filled(cat):
    assert catalog.validate_params(cat["stages"], {}) == {
        "sleep": 0.0, "steps": 3, "label": "test", "plot": False, "mode": "fast",
    }  # fmt: skip
    assert catalog.validate_params(cat["stages"], None)["steps"] == 3
    given_ = {"sleep": 2, "steps": 10, "label": "x", "plot": True, "mode": "careful"}
    out = catalog.validate_params(cat["stages"], given_)
    assert out == {**given_, "sleep": 2.0}
    assert isinstance(out["sleep"], float)  # an int is accepted for a float, and coerced


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"steps": "3"}, "steps", "parameter 'steps' must be a whole number, not '3'"),
        ({"steps": True}, "steps", "parameter 'steps' must be a whole number, not True"),
        ({"steps": 2.0}, "steps", "parameter 'steps' must be a whole number, not 2.0"),
        ({"steps": None}, "steps", "must be a whole number, not None"),
        ({"steps": 0}, "steps", "parameter 'steps' must be at least 1, not 0"),
        ({"steps": 1001}, "steps", "parameter 'steps' must be at most 1000, not 1001"),
        ({"sleep": "1"}, "sleep", "parameter 'sleep' must be a number, not '1'"),
        ({"sleep": False}, "sleep", "parameter 'sleep' must be a number, not False"),
        ({"sleep": -0.5}, "sleep", "parameter 'sleep' must be at least 0 s, not -0.5"),
        ({"sleep": 61}, "sleep", "parameter 'sleep' must be at most 60 s, not 61.0"),
        ({"sleep": float("nan")}, "sleep", "must be a finite number"),
        ({"sleep": float("inf")}, "sleep", "must be a finite number"),
        ({"plot": 1}, "plot", "parameter 'plot' must be true or false, not 1"),
        ({"plot": "true"}, "plot", "parameter 'plot' must be true or false, not 'true'"),
        ({"label": 5}, "label", "parameter 'label' must be a string, not 5"),
        ({"label": "x" * 1001}, "label", "at most 1000 characters"),
        ({"label": "a\x00b"}, "label", "at most 1000 characters"),
        ({"mode": "slow"}, "mode", "parameter 'mode' must be one of 'fast', 'careful', not 'slow'"),
        ({"mode": ["fast"]}, "mode", "must be one of"),
        ({"bogus": 1}, "bogus", "unknown parameter 'bogus' for script 'stages' (it takes: sleep,"),
        ({"Steps": 3}, "Steps", "unknown parameter 'Steps'"),
    ],
)
def test_bad_parameters_are_rejected_with_a_clear_message(cat, params, param, message):
    with pytest.raises(ParamError) as info:
        catalog.validate_params(cat["stages"], params)
    assert message in str(info.value)
    assert info.value.param == param


def test_parameters_must_be_a_mapping(cat):
    with pytest.raises(ParamError, match="must be a JSON object"):
        catalog.validate_params(cat["stages"], ["steps", 3])  # type: ignore[arg-type]


def test_choice_types_are_strict(tmp_path):
    write_script(
        tmp_path,
        "c",
        '[[parameters]]\nname = "n"\ntype = "choice"\nchoices = [1, 2]\ndefault = 1\n',
    )
    script = catalog.load_script(tmp_path, "c")
    assert catalog.validate_params(script, {"n": 2}) == {"n": 2}
    for bad in (True, "2", 2.0):
        with pytest.raises(ParamError, match="must be one of 1, 2"):
            catalog.validate_params(script, {"n": bad})


def test_a_parameter_without_default_is_required(tmp_path):
    write_script(tmp_path, "r", '[[parameters]]\nname = "obj"\ntype = "string"\n')
    script = catalog.load_script(tmp_path, "r")
    assert script.to_json()["parameters"][0]["required"] is True
    with pytest.raises(ParamError, match="parameter 'obj' is required"):
        catalog.validate_params(script, {})
    assert catalog.validate_params(script, {"obj": "M31"}) == {"obj": "M31"}


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = (
    scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=3), scalars)
)
names = st.sampled_from(["sleep", "steps", "label", "plot", "mode", "x"])


@given(params=st.dictionaries(names, json_values))
def test_any_json_input_is_either_valid_or_a_param_error(cat, params):
    script = cat["stages"]
    try:
        out = catalog.validate_params(script, params)
    except ParamError as exc:
        assert exc.param in params
        return
    assert set(out) == {"sleep", "steps", "label", "plot", "mode"}
    assert catalog.validate_params(script, out) == out  # validated parameters stay valid


# ------------------------------------------------------------------------- manifest checks

BASE = """title = "T"
version = "1"
executable = "s.py"
documentation = "D"
time_limit = 10
"""


def write_script(folder: Path, name: str, extra: str = "", base: str = BASE) -> Path:
    (folder / "s.py").write_text("print('hi')\n")
    path = folder / f"{name}.toml"
    path.write_text(base + extra)
    return path


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (BASE.replace('title = "T"\n', ""), "title: is missing"),
        (BASE + 'colour = "red"\n', "unknown key 'colour'"),
        (BASE.replace('version = "1"', "version = 1"), "version: must be a non-empty string"),
        (BASE.replace("time_limit = 10", "time_limit = 0"), "time_limit: must be a positive"),
        (BASE.replace("time_limit = 10", "time_limit = true"), "time_limit: must be a positive"),
        (BASE.replace("time_limit = 10", 'time_limit = "10"'), "time_limit: must be a positive"),
        (BASE.replace('"s.py"', '"../s.py"'), "executable: must be a file name"),
        (BASE.replace('"s.py"', '"missing.py"'), "missing.py does not exist"),
        (BASE.replace('"s.py"', '"s.sh"'), "is not executable (chmod +x)"),
        (BASE + "parameters = 3\n", "parameters: must be an array of tables"),
        (BASE + '[[parameters]]\nname = "1x"\ntype = "int"\n', "name must be an identifier"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "integer"\n', "type must be one of"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "int"\ndefault = 1.5\n', "invalid default"),
        (
            BASE + '[[parameters]]\nname = "n"\ntype = "int"\nmax = 3\ndefault = 4\n',
            "invalid default",
        ),
        (
            BASE + '[[parameters]]\nname = "n"\ntype = "int"\nmin = 5\nmax = 3\n',
            "min is greater than max",
        ),
        (BASE + '[[parameters]]\nname = "n"\ntype = "int"\nmin = "1"\n', "min must be a number"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "string"\nmax = 3\n', "only for int and float"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "int"\nchoices = [1]\n', "only for choice"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "choice"\n', "needs a non-empty list"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "choice"\nchoices = [1, "a"]\n', "same type"),
        (
            BASE + '[[parameters]]\nname = "n"\ntype = "choice"\nchoices = [true]\n',
            "strings or numbers",
        ),
        (BASE + '[[parameters]]\nname = "n"\ntype = "int"\nmaximum = 3\n', "unknown key 'maximum'"),
        (BASE + '[[parameters]]\nname = "n"\ntype = "int"\nunit = 3\n', "unit must be a string"),
        (
            BASE
            + '[[parameters]]\nname = "n"\ntype = "int"\n[[parameters]]\nname = "n"\ntype = "int"\n',
            "duplicate name 'n'",
        ),
        (BASE + '[[products]]\nkind = "movie"\ndescription = "x"\n', "kind must be one of"),
        (BASE + '[[products]]\nkind = "plot"\n', "description: must be a non-empty string"),
        ("title = ", "Invalid"),
        (BASE + "accepts = 3\n", "accepts: must be a table"),
        (BASE + '[accepts]\nkinds = ["photons"]\n', "unknown data kind 'photons'"),
        (BASE + "[accepts]\nkinds = [1]\n", "accepts.kinds: must be a list of non-empty"),
        (BASE + '[accepts]\ninstruments = ["EPIC"]\n', "'EPIC' is not MISSION/INSTRUMENT"),
        (BASE + '[accepts]\nmissions = ["XMM"]\n', "unknown key 'missions'"),
    ],
)
def test_broken_manifests_are_reported_with_file_and_key(tmp_path, manifest, message):
    (tmp_path / "s.sh").write_text("#!/bin/sh\n")
    path = write_script(tmp_path, "x", base=manifest)
    write_script(tmp_path, "good")
    scripts, problems = catalog.scan_catalog(tmp_path)
    assert list(scripts) == ["good"]  # the broken one does not hide the others
    assert message in problems["x"]
    assert str(path) in problems["x"]


def test_load_script_errors(tmp_path):
    with pytest.raises(catalog.CatalogError, match="does not exist"):
        catalog.load_script(tmp_path, "nothing")
    with pytest.raises(catalog.CatalogError, match="not a valid script name"):
        catalog.load_script(tmp_path, "../etc/passwd")
    assert catalog.load_catalog(tmp_path / "missing") == {}


def test_a_new_script_needs_no_change_to_the_app(tmp_path):
    """Dropping an executable and a manifest in the folder is all it takes."""
    (tmp_path / "wrap.sh").write_text("#!/bin/sh\necho '[STAGE] sas'\n")
    (tmp_path / "wrap.sh").chmod(0o755)
    (tmp_path / "wrap.toml").write_text(BASE.replace('"s.py"', '"wrap.sh"'))
    assert catalog.load_catalog(tmp_path)["wrap"].command() == [str(tmp_path / "wrap.sh")]


ROW_XMM = {
    "mission": "XMM",
    "instrument": "EPIC",
    "camera": "EMOS1",
    "obsid": "1",
    "kind": "events",
}
ROW_ACIS = {"mission": "CHANDRA", "instrument": "ACIS", "camera": "ACIS-S", "obsid": "2",
            "kind": "events"}  # fmt: skip
ROW_MAP = {**ROW_XMM, "camera": "EPN", "kind": "exposure-map"}


def test_accepts_matches_kinds_and_instruments(tmp_path):
    write_script(tmp_path, "xmm", '[accepts]\nkinds = ["events"]\ninstruments = ["XMM/EPIC"]\n')
    write_script(tmp_path, "any_events", '[accepts]\nkinds = ["events"]\n')
    write_script(tmp_path, "anything")
    scripts = catalog.load_catalog(tmp_path)
    xmm = scripts["xmm"]
    assert xmm.mismatch([ROW_XMM]) is None
    message = xmm.mismatch([ROW_XMM, ROW_ACIS])
    assert "CHANDRA ACIS-S 2 (events)" in message and "XMM/EPIC" in message
    assert "exposure-map" in xmm.mismatch([ROW_MAP])
    assert scripts["any_events"].mismatch([ROW_XMM, ROW_ACIS]) is None
    assert scripts["any_events"].mismatch([ROW_MAP]) is not None
    assert scripts["anything"].mismatch([ROW_MAP, ROW_ACIS]) is None
    assert xmm.to_json()["accepts"] == {"kinds": ["events"], "instruments": ["XMM/EPIC"]}
