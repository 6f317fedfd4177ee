"""Argument types shared by the command groups: one check per kind of argument, used by every
command that takes it (``--num``, ``--seed``, ``--guidance``, ``--steps``, ``--batch-size``,
``--out``, ``--loops``), so ``elt sample``, ``calibrate``, ``export``, ``eval``, ``bench`` and
``demo`` refuse the same values with the same line at parse time, before anything is loaded or
written. Sizes are bounded by :mod:`elt.limits`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from elt.core.schedule import LOOPS_HELP  # noqa: F401  (the --loops grammar, documented once)
from elt.limits import MAX_BATCH, MAX_INT, MAX_POINTS, MAX_SAMPLING_STEPS, MAX_SEED

PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
NO_PROGRESS_HELP = (
    "no progress bar: progress comes as plain lines (step, loss or PSNR, s/step, ETA) every "
    "logging.every steps and at least every 30 s, as it does whenever stderr is not a terminal"
)


def parse_loops(text: str):
    """The ``--loops`` value → operating points (:func:`elt.core.schedule.parse_loops`: loop counts,
    ranges, schedules, adaptive exits); a bad value is argparse's one-line usage error naming it."""
    from elt.core.schedule import ScheduleError
    from elt.core.schedule import parse_loops as parse

    try:
        return parse(text)
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{str(text)[:40]!r} is not an integer") from None


def bounded_int(lo: int, hi: int, why: str = ""):
    """An argparse type: an integer in lo..hi (``why`` says where the ceiling comes from)."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} must be >= {lo}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"{value} is too large; allowed: at most {hi}{why}")
        return value

    parse.__name__ = f"int {lo}..{hi}"  # argparse names the type in its messages
    return parse


positive_int = bounded_int(1, MAX_INT)
count = (
    positive_int  # samples, repeats, epochs: bounded later by what fits (elt.limits.check_memory)
)
batch_size = bounded_int(1, MAX_BATCH)
steps_int = bounded_int(1, MAX_SAMPLING_STEPS, " sampling steps")
not_negative_int = bounded_int(0, MAX_INT)


def seed(text: str) -> int:
    """A seed: an integer in 0..2**63-2**32 (the config's train.seed rule)."""
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; allowed: an integer in 0..{MAX_SEED}"
        )
    return value


def finite_float(text: str) -> float:
    """A finite number (guidance scales, targets): nan and inf are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{str(text)[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"{text} is not allowed; use a finite number (e.g. 0, 1.5, 3)"
        )
    return value


def out_dir(text: str) -> str:
    """An output folder: a non-empty path, not on a pseudo filesystem (``/proc``, ``/sys``,
    ``/dev``); whether it can be written is :func:`elt.fileio.check_output_dir` (run by each command
    before any work)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("an empty path; give a folder name (e.g. --out samples)")
    if any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} holds control characters; give a plain folder name"
        )
    resolved = str(Path(text).expanduser().absolute())
    for root in PSEUDO_FILESYSTEMS:
        if resolved == root or resolved.startswith(root + "/"):
            raise argparse.ArgumentTypeError(
                f"{text[:60]!r} is on the {root} pseudo filesystem; choose a folder on a disk"
            )
    return text


def int_list(hi: int, what: str = "values"):
    """An argparse type: comma-separated integers ``>= 1`` and ranges ``A-B`` (e.g. ``1,8,32`` or
    ``1-4``), at most :data:`~elt.limits.MAX_POINTS` of them, each at most ``hi``."""

    def parse(text: str) -> list[int]:
        values: list[int] = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            lo_text, dash, hi_text = part.partition("-")
            lo = _int(lo_text) if lo_text else 0
            top = _int(hi_text) if dash else lo
            if lo < 1 or top < lo:
                raise argparse.ArgumentTypeError(
                    f"invalid {what} {part!r}; integers >= 1 or ranges A-B, e.g. 1,8,32"
                )
            if top > hi:
                raise argparse.ArgumentTypeError(
                    f"{what} {top} is too large; allowed: at most {hi}"
                )
            if top - lo + 1 + len(values) > MAX_POINTS:
                raise argparse.ArgumentTypeError(
                    f"{str(text)[:40]!r} names more than {MAX_POINTS} {what}"
                )
            values += [v for v in range(lo, top + 1) if v not in values]
        if not values:
            raise argparse.ArgumentTypeError(f"no {what} in {str(text)[:40]!r}")
        return values

    parse.__name__ = what
    return parse


def parse_steps(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid steps list {text[:40]!r}; use e.g. 8 or 8,16"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid steps list {text[:40]!r}; steps are integers >= 1"
        )
    if max(values) > MAX_SAMPLING_STEPS or len(values) > MAX_POINTS:
        raise argparse.ArgumentTypeError(
            f"invalid steps list {text[:40]!r}; at most {MAX_POINTS} values, each at "
            f"most {MAX_SAMPLING_STEPS}"
        )
    return values
