"""Argument types shared by the command groups (loop lists, positive integers, step lists)."""

from __future__ import annotations

import argparse
import sys


def parse_loops(text: str) -> list[int]:
    """``"1,2,4"`` or ``"1-4"`` or ``"1-4,6"`` → sorted unique loop counts ≥ 1."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values.update(range(lo, hi + 1))
            elif part:
                values.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid loop list {text!r}; use e.g. 1,2,4 or 1-4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"invalid loop list {text!r}; loop counts are integers >= 1")
    return sorted(values)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


class DeprecatedFlag(argparse.Action):
    """A renamed option still accepted for one release: stores its value and prints one line naming the new
    option (``p.add_argument("--old", action=DeprecatedFlag, new="--new", dest="new", ...)``)."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"elt: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def parse_steps(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid steps list {text!r}; use e.g. 8 or 8,16") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"invalid steps list {text!r}; steps are integers >= 1")
    return values
