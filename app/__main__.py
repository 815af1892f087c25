"""``python -m app COMMAND``: operate the Regio service.

Commands:
  run            run the whole service in the foreground (what `make run` calls)
  settings       print every setting with its current value and help
  create-user    create an account (the password is read from a file, never the command line)
  create-token   print a new API token for an account
  ingest         keep the index current and start the runs of standing requests (app.ingest)
  cron           fire the schedules (app.automation_cron, on rq's cron scheduler)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run Redis (embedded unless configured), workers and the web server")
    sub.add_parser("settings", help="print every setting, its value and its help")
    user = sub.add_parser("create-user", help="create an account in REGIO_SESSIONS/accounts.db")
    user.add_argument("email", metavar="EMAIL")
    user.add_argument(
        "--password-file",
        required=True,
        metavar="FILE",
        help="file whose first line is the password ('-': standard input)",
    )
    user.add_argument("--name", default="", help="the user's full name")
    user.add_argument("--admin", action="store_true", help="make the user staff (owns everything)")
    token = sub.add_parser("create-token", help="print a new API token for an account")
    token.add_argument("email", metavar="EMAIL")
    token.add_argument("--name", default="", help="what the token is for (shown in token lists)")
    sub.add_parser(
        "ingest", help="watch the archive, update the index, start standing requests' runs"
    )
    sub.add_parser("cron", help="fire the schedules (rq's cron scheduler)")
    args = parser.parse_args(argv)

    if args.command == "run":
        from app.service import run

        return run()

    from app import settings
    from app.redaction import redact

    try:
        values = settings.load()
    except settings.SettingError as exc:
        return _fail(exc)
    if args.command == "settings":
        for s in settings.SETTINGS:
            # a password inside a URL (REGIO_REDIS_URL) is redacted too
            value = "(hidden)" if s.secret and values[s.name] else redact(str(values[s.name]))
            print(f"{s.env}={value!s}\n    {s.help}")
        return 0
    if args.command == "create-user":
        return _create_user(values, args)
    if args.command == "create-token":
        return _create_token(values, args)
    if args.command == "ingest":
        from app.ingest import main as ingest_main

        return ingest_main(values)
    if args.command == "cron":
        from app.automation_cron import main as cron_main

        return cron_main(values)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _read_password(name: str) -> str:
    """The first line of a file (or of standard input for '-'), without its line ending."""
    if name == "-":
        text = sys.stdin.readline()
    else:
        with Path(name).open(encoding="utf-8") as f:
            text = f.readline()
    return text.rstrip("\r\n")


def _create_user(values: dict, args: argparse.Namespace) -> int:
    from app import accounts

    try:
        password = _read_password(args.password_file)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read the password file: {exc}")
    try:
        user = accounts.create_user(
            accounts.db_path(values["SESSIONS"]), args.email, args.name, password, staff=args.admin
        )
    except accounts.AccountError as exc:
        return _fail(exc)
    print(f"created {'staff ' if user.is_staff else ''}user {user.email} (id {user.id})")
    return 0


def _create_token(values: dict, args: argparse.Namespace) -> int:
    from app import accounts

    db = accounts.db_path(values["SESSIONS"])
    try:
        user = accounts.get_user_by_email(db, args.email)
        secret = accounts.create_token(db, user.id, args.name)
    except accounts.UserNotFound:
        return _fail(f"no account has the e-mail address {args.email}")
    except accounts.AccountError as exc:
        return _fail(exc)
    print(secret)
    return 0


if __name__ == "__main__":
    sys.exit(main())
