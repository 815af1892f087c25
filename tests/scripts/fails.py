"""Test script: fails in its second stage, in one of three ways."""

import sys

from regio_kit import fail, main, progress, stage


def run(inp):
    with stage("prepare"):
        progress(1, 1)
    with stage("extract"):
        print("reading the event list")
        how = inp["params"]["how"]
        if how == "fail":
            fail("no events in the source region")
        if how == "raise":
            raise ValueError("the background region is empty")
        print("giving up", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main(run)
