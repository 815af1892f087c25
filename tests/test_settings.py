"""Settings are data: defaults, REGIO_* environment variables, test overrides; all documented."""

import re

import pytest

from app import settings
from tests.conftest import ROOT


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\|\s*`(REGIO_[A-Z_]+)`\s*\|", readme, flags=re.M))
    declared = {s.env for s in settings.SETTINGS}
    assert declared - documented == set(), "settings missing from the README table"
    assert documented - declared == set(), "README documents settings that do not exist"


def test_readme_table_shows_the_real_defaults():
    readme = (ROOT / "README.md").read_text()
    for s in settings.SETTINGS:
        row = re.search(rf"^\|\s*`{s.env}`\s*\|\s*([^|]*)\|", readme, flags=re.M)
        assert row, s.env
        shown = row.group(1).strip().strip("`")
        assert shown == (str(s.default) if s.default != "" else "(empty)"), s.env


def test_every_setting_has_help():
    for s in settings.SETTINGS:
        assert len(s.help) > 20, s.name


def test_defaults_environment_then_overrides():
    values = settings.load(environ={})
    assert values["PORT"] == 5000
    assert values["ARCHIVE"] == []
    assert values["INDEX"] == settings.ROOT / "instance" / "index"

    env = {"REGIO_PORT": "8123", "REGIO_ARCHIVE": "/a:/b/c", "REGIO_WORKERS": "3"}
    values = settings.load(environ=env)
    assert values["PORT"] == 8123
    assert [str(p) for p in values["ARCHIVE"]] == ["/a", "/b/c"]
    assert values["WORKERS"] == 3

    values = settings.load({"PORT": 9000}, environ=env)
    assert values["PORT"] == 9000


def test_relative_paths_resolve_against_the_project_root():
    values = settings.load(environ={"REGIO_SESSIONS": "data/sessions"})
    assert values["SESSIONS"] == settings.ROOT / "data" / "sessions"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REGIO_PORT": "eighty"}, "REGIO_PORT must be a whole number"),
        ({"REGIO_PORT": "70000"}, "between 1 and 65535"),
        ({"REGIO_WORKERS": "-1"}, "REGIO_WORKERS is out of range"),
        ({"REGIO_PROT": "8000"}, "unknown setting(s) in the environment: REGIO_PROT"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(env, message):
    with pytest.raises(settings.SettingError, match=re.escape(message)):
        settings.load(environ=env)


def test_unknown_override_is_refused():
    with pytest.raises(settings.SettingError, match="unknown setting 'PROT'"):
        settings.load({"PROT": 1}, environ={})
