"""``python -m app COMMAND``: operate the Regio service.

Commands:
  run        run the whole service in the foreground (what `make run` calls)
  settings   print every setting with its current value and help
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run Redis (embedded unless configured), workers and the web server")
    sub.add_parser("settings", help="print every setting, its value and its help")
    args = parser.parse_args(argv)

    if args.command == "run":
        from app.service import run

        return run()
    if args.command == "settings":
        from app import settings

        try:
            values = settings.load()
        except settings.SettingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for s in settings.SETTINGS:
            print(f"{s.env}={values[s.name]!s}\n    {s.help}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
