"""Every Regio setting, declared once as data: name, default, type and help.

Values come from, in order of precedence (last wins): the defaults below, environment variables
named ``REGIO_<NAME>``, then the mapping given to ``create_app(test_config)`` or ``load()``.
The README's settings table is checked against ``SETTINGS`` by the tests, so a new setting must be
documented there too.

Relative paths are resolved against the project root (the folder holding ``wsgi.py``), so the
service behaves the same whatever the current directory is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "REGIO_"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: str = "str"  # str | int | float | path | paths | bool
    secret: bool = False  # never printed by `python -m app settings`

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    def parse(self, raw: Any) -> Any:
        """Convert a raw value (an environment string or a Python value) to this setting's type."""
        if raw is None:
            return None
        if self.type == "int":
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise SettingError(f"{self.env} must be a whole number, not {raw!r}") from None
        if self.type == "float":
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise SettingError(f"{self.env} must be a number, not {raw!r}") from None
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise SettingError(f"{self.env} must be true or false, not {raw!r}")
        if self.type == "path":
            return _resolve(raw) if str(raw) else None
        if self.type == "paths":
            parts = raw if isinstance(raw, list | tuple) else str(raw).split(os.pathsep)
            return [_resolve(p) for p in parts if str(p)]
        return str(raw)


class SettingError(ValueError):
    """A setting has a value of the wrong type or out of range."""


def _resolve(value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else ROOT / path


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "INSTANCE",
        "instance",
        "Folder for the service's private runtime files: embedded Redis, run database, logs.",
        "path",
    ),
    Setting(
        "ARCHIVE",
        "",
        "Archive folders of event lists, separated by ':'. Empty: the demo archive "
        "(generated on first `make run` into REGIO_INSTANCE/demo-archive).",
        "paths",
    ),
    Setting(
        "INDEX",
        "instance/index",
        "Index folder (SQLite metadata, per-camera MOCs, MOC set) built by `python -m indexer build`.",
        "path",
    ),
    Setting(
        "SESSIONS",
        "sessions",
        "Folder holding the session folders (regions, selections, runs and their products).",
        "path",
    ),
    Setting(
        "SCRIPTS",
        "scripts",
        "Folder of the processing scripts and their manifests (NAME.toml); read by the web app "
        "and by every worker.",
        "path",
    ),
    Setting(
        "RESPONSES",
        "",
        "Response library of the spectra scripts (canned RMFs by instrument, pattern selection, "
        "mode, epoch; README 'Responses'), used when SAS/CIAO are not on the workers: only an "
        "exact match is named in RESPFILE. Empty: RESPFILE 'NONE'. Passed to the scripts.",
        "path",
    ),
    Setting(
        "REDIS_URL",
        "",
        "URL of a Redis server shared by the web app and the workers "
        "(redis://:PASSWORD@host:port/db, rediss:// for TLS; the password is never printed). "
        "Empty: start a private embedded redis-server on a unix socket in REGIO_INSTANCE.",
    ),
    Setting(
        "SURVEY",
        "",
        "Background survey of the sky viewer: a HiPS URL or id for sites online (e.g. "
        "CDS/P/DSS2/color). Empty: the archive's own HiPS served at /hips/ (works offline).",
    ),
    Setting("HOST", "127.0.0.1", "Address the web server listens on."),
    Setting("PORT", 5000, "Port the web server listens on.", "int"),
    Setting("WORKERS", 1, "Number of RQ worker processes `make run` starts on this host.", "int"),
    Setting(
        "WEB_PROCESSES",
        2,
        "Web server processes on this host (gunicorn workers): each serves requests on its own "
        "core; a launch costs ~40 ms of CPU, so one process queues requests under load.",
        "int",
    ),
    Setting(
        "WEB_THREADS",
        16,
        "Threads of the web server with REGIO_WEB_WORKER_CLASS=gthread, where each open live log "
        "stream holds one of them (unused with gevent).",
        "int",
    ),
    Setting(
        "WEB_WORKER_CLASS",
        "gevent",
        "How the web server serves requests: `gevent` (cooperative: an open live log stream "
        "costs a socket, not a thread) or `gthread` (REGIO_WEB_THREADS threads; the fallback).",
    ),
    Setting(
        "WEB_CONNECTIONS",
        4000,
        "With gevent: the most connections the web server handles at once, live log streams "
        "included (each needs a file descriptor; `make run` raises the open-files limit).",
        "int",
    ),
    Setting(
        "STREAMS_PER_USER",
        20,
        "Most live log streams (/api/runs/ID/events) one user may have open at once, across all "
        "web processes (without accounts: one client address); more get 429.",
        "int",
    ),
    Setting(
        "DEMO_OBSERVATIONS",
        12,
        "Number of observations in the generated demo archive (used when REGIO_ARCHIVE is empty).",
        "int",
    ),
    Setting("DEMO_SEED", 1, "Random seed of the generated demo archive.", "int"),
    Setting(
        "SECRET_KEY",
        "",
        "Key signing browser cookies. Empty: a random key kept in REGIO_INSTANCE/secret_key.",
        secret=True,
    ),
    Setting(
        "AUTH",
        "none",
        "Who may use the service: `none` (single-user mode: no sign-in, e.g. on a laptop) or "
        "`accounts` (every page and API call needs a signed-in user or an API token).",
    ),
    Setting(
        "SIGNUP",
        False,
        "With REGIO_AUTH=accounts: let visitors create their own account at /signup. Off: staff "
        "create accounts (admin page or `python -m app create-user`).",
        "bool",
    ),
    Setting(
        "BASE_URL",
        "http://127.0.0.1:5000",
        "Public URL of the service, used in the links of e-mails and webhooks.",
    ),
    Setting(
        "SMTP_HOST",
        "",
        "Mail server for run notifications and password resets. Empty: no e-mail is sent.",
    ),
    Setting("SMTP_PORT", 25, "Port of the mail server (465: TLS from the start).", "int"),
    Setting("SMTP_USER", "", "User name for the mail server. Empty: no login."),
    Setting("SMTP_PASSWORD", "", "Password for the mail server (never printed).", secret=True),
    Setting(
        "SMTP_STARTTLS",
        False,
        "Upgrade the mail server connection with STARTTLS (certificate checked) before logging in.",
        "bool",
    ),
    Setting("MAIL_FROM", "regio@localhost", "Sender address of the e-mails Regio sends."),
    Setting(
        "SANDBOX",
        "auto",
        "How science scripts are confined: `bwrap` (Debian's bubblewrap, required: a run fails "
        "when it does not work), `auto` (bubblewrap when it works, else the fallback, said in "
        "the run's log) or `off` (the fallback: no file or network isolation, but the script's "
        "descendants still end with it). See 'Containment of scripts'.",
    ),
    Setting(
        "WARM",
        "auto",
        "Warm starts of Python scripts: `auto` (each worker keeps a warm server that has imported "
        "the science packages and forks scripts inside their bubblewrap sandbox, ~1-2 s saved per "
        "run; cold when bubblewrap is not used or the manifest says `cold_start = true`) or `off` "
        "(every script starts a new interpreter). See 'Warm starts'.",
    ),
    Setting(
        "WARM_PRELOAD",
        "",
        "Modules the warm server imports, separated by spaces or commas (installed packages only: "
        "code of the scripts folder is never run outside the sandbox); empty: numpy, scipy, "
        "astropy, matplotlib (Agg), regions, mocpy.",
    ),
    Setting(
        "SANDBOX_PATHS",
        "",
        "Extra folders scripts may read inside the sandbox, separated by ':' (software such as "
        "SAS or CIAO, calibration files). Folders holding REGIO_SESSIONS or REGIO_INSTANCE are "
        "never shown.",
        "paths",
    ),
    Setting(
        "LOG_MAX_BYTES",
        16 * 1024 * 1024,
        "Largest log a run keeps, in bytes; the script's output beyond it is dropped, and the "
        "log and the run (`log_dropped`) say how much.",
        "int",
    ),
    Setting(
        "INGEST_SETTLE",
        2,
        "Seconds a new archive file must stay unchanged before `python -m app ingest` indexes it "
        "(a file still being copied waits).",
        "int",
    ),
    Setting(
        "INGEST_RESCAN",
        60,
        "Seconds between two full rescans of the archive by `python -m app ingest`, for file "
        "systems that send no change events (NFS).",
        "int",
    ),
    Setting(
        "SCHEDULE_MIN_INTERVAL",
        60,
        "Shortest period, in seconds, a schedule given by 'interval' may have (cron schedules "
        "tick at most once a minute).",
        "int",
    ),
    Setting(
        "WEBHOOK_ALLOW_PRIVATE",
        False,
        "Let webhooks reach loopback, private and link-local addresses (off: users cannot make "
        "the workers call services inside the network).",
        "bool",
    ),
    Setting(
        "REGION_MAX_DEG",
        5.0,
        "Largest region, in degrees across (a circle's diameter, a box's diagonal, the span of "
        "several shapes), that sessions and coverage queries accept; larger ones are refused "
        "with a message.",
        "float",
    ),
    Setting(
        "SESAME_URL",
        "",
        "CDS Sesame name resolver the target box asks when no archived observation has the "
        "name, e.g. https://cds.unistra.fr/cgi-bin/nph-sesame/-oxp/SNV. Empty: names are "
        "resolved from the archive only (no network).",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
AUTH_MODES = ("none", "accounts")
WEB_WORKER_CLASSES = ("gevent", "gthread")
SANDBOX_MODES = ("auto", "bwrap", "off")
MIN_LOG_BYTES = 1024


def load(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return every setting's value: defaults, then ``REGIO_*`` environment variables, then ``overrides``.

    ``overrides`` keys are setting names without the prefix (``{"PORT": 8000}``); an unknown name
    is an error, so a typo in a test config or in the environment is caught early.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env, setting.default)
        values[setting.name] = setting.parse(raw)
    unknown_env = sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :] not in BY_NAME
    )
    if unknown_env:
        raise SettingError(f"unknown setting(s) in the environment: {', '.join(unknown_env)}")
    for name, raw in (overrides or {}).items():
        if name not in BY_NAME:
            raise SettingError(f"unknown setting {name!r}")
        values[name] = BY_NAME[name].parse(raw)
    _check(values)
    return values


def _check(values: Mapping[str, Any]) -> None:
    if not 0 < values["PORT"] < 65536:
        raise SettingError(f"REGIO_PORT must be between 1 and 65535, not {values['PORT']}")
    for name in ("WORKERS", "WEB_PROCESSES", "WEB_THREADS", "DEMO_OBSERVATIONS"):
        if values[name] < (0 if name == "WORKERS" else 1):
            raise SettingError(f"REGIO_{name} is out of range: {values[name]}")
    for name, least in (
        ("WEB_CONNECTIONS", 10),
        ("STREAMS_PER_USER", 1),
        ("INGEST_SETTLE", 0),
        ("INGEST_RESCAN", 1),
        ("SCHEDULE_MIN_INTERVAL", 1),
    ):
        if values[name] < least:
            raise SettingError(f"REGIO_{name} must be at least {least}, not {values[name]}")
    if values["WEB_WORKER_CLASS"] not in WEB_WORKER_CLASSES:
        raise SettingError(
            f"REGIO_WEB_WORKER_CLASS must be one of {', '.join(WEB_WORKER_CLASSES)}, "
            f"not {values['WEB_WORKER_CLASS']!r}"
        )
    if values["AUTH"] not in AUTH_MODES:
        raise SettingError(
            f"REGIO_AUTH must be one of {', '.join(AUTH_MODES)}, not {values['AUTH']!r}"
        )
    if values["WARM"] not in ("auto", "off"):
        raise SettingError(f"REGIO_WARM must be auto or off, not {values['WARM']!r}")
    if values["SANDBOX"] not in SANDBOX_MODES:
        raise SettingError(
            f"REGIO_SANDBOX must be one of {', '.join(SANDBOX_MODES)}, not {values['SANDBOX']!r}"
        )
    if not 0 < values["REGION_MAX_DEG"] <= 180:
        raise SettingError(
            f"REGIO_REGION_MAX_DEG must be above 0 and at most 180, not {values['REGION_MAX_DEG']}"
        )
    if values["SESAME_URL"] and not str(values["SESAME_URL"]).startswith(("http://", "https://")):
        raise SettingError(
            f"REGIO_SESAME_URL must start with http:// or https://, not {values['SESAME_URL']!r}"
        )
    if values["LOG_MAX_BYTES"] < MIN_LOG_BYTES:
        raise SettingError(
            f"REGIO_LOG_MAX_BYTES must be at least {MIN_LOG_BYTES}, not {values['LOG_MAX_BYTES']}"
        )
    if not 0 < values["SMTP_PORT"] < 65536:
        raise SettingError(
            f"REGIO_SMTP_PORT must be between 1 and 65535, not {values['SMTP_PORT']}"
        )
    if not str(values["BASE_URL"]).startswith(("http://", "https://")):
        raise SettingError(
            f"REGIO_BASE_URL must start with http:// or https://, not {values['BASE_URL']!r}"
        )
    if any(c in str(values["MAIL_FROM"]) for c in "\r\n") or "@" not in str(values["MAIL_FROM"]):
        raise SettingError(
            f"REGIO_MAIL_FROM must be one e-mail address, not {values['MAIL_FROM']!r}"
        )


def archive_dirs(values: Mapping[str, Any]) -> list[Path]:
    """The archive folders to index: the configured ones, or the demo archive."""
    return list(values["ARCHIVE"]) or [demo_archive_dir(values)]


def demo_archive_dir(values: Mapping[str, Any]) -> Path:
    return Path(values["INSTANCE"]) / "demo-archive"
