"""Bounds on the sizes a user can ask for, and memory estimates checked before anything is
allocated.

The foundation layer: imports nothing from elt but :mod:`elt.errors`. Every command, the config and
the sampling API check sizes against these numbers, so an absurd value (``model.width=2000000``,
``--num 1000000000000``, ``--loops 100000000``) is one line naming the value, the estimate and the
limit instead of an out-of-memory traceback or a run that never ends.

Ceilings (each one far above every shipped config and study, and far below what would hang):

* loops: at most :func:`loop_ceiling` = ``max(4 · L_max, 8)`` per sampling step once the model is
  known (the studies go to 1.5 · L_max for ELT and to 4 · L_max for a single-pass stack; quality is
  flat or worse past L_max while the cost grows linearly), and at most :data:`MAX_LOOPS` before it
  is;
* operating points in one ``--loops``: :data:`MAX_POINTS`; sampling steps:
  :data:`MAX_SAMPLING_STEPS`;
* training steps: :data:`MAX_TRAIN_STEPS`; every other integer: :data:`MAX_INT`;
* image side :data:`MAX_IMAGE_SIZE`, clip length :data:`MAX_FRAMES`;
* memory: the estimate (lower bound) of what a value needs against the memory of this machine
  (:func:`host_memory_bytes`: physical memory, or the cgroup limit when lower).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from elt.errors import UserError


class LimitError(UserError, ValueError):
    """A size beyond what the model, the data or the machine allows (one line: value, estimate,
    limit)."""


LOOP_CEILING_FACTOR = 4
LOOP_CEILING_MIN = 8
# before the model is known (command-line parsing); the model's ceiling is usually far lower
MAX_LOOPS = 1024
MAX_POINTS = 256  # operating points one --loops names (a sweep of 256 points is already hours)
MAX_SAMPLING_STEPS = 10_000  # 10x the DDPM's 1000 training steps
MAX_TRAIN_STEPS = 10**9  # about a month at 400 steps/s
MAX_INT = 2**53  # any other integer field (exact in a float; far beyond every count and size)
MAX_IMAGE_SIZE = 4096  # pixels per side
MAX_FRAMES = 1024  # frames per clip
MAX_WIDTH = 2**24  # model width, a type ceiling: the memory estimate refuses far smaller widths
MAX_BATCH = 2**20  # samples in one batch
MAX_SEED = 2**63 - 2**32  # room for per-batch and per-rank offsets below torch's 64-bit seed limit


def loop_ceiling(trained_loops: int) -> int:
    """The most loops per step a model trained at ``trained_loops`` (L_max) samples with."""
    return max(LOOP_CEILING_FACTOR * int(trained_loops), LOOP_CEILING_MIN)


def check_loops(value: int, trained_loops: int | None = None, what: str | None = None) -> int:
    """A loop count within :func:`loop_ceiling` (or :data:`MAX_LOOPS` when no model is known
    yet)."""
    limit = MAX_LOOPS if trained_loops is None else loop_ceiling(trained_loops)
    if value > limit:
        why = (
            f"{LOOP_CEILING_FACTOR}·L_max, at least {LOOP_CEILING_MIN}, for a model trained at "
            "L_max="
            f"{trained_loops}"
            if trained_loops is not None
            else "for any model"
        )
        subject = what or f"loops={value}"
        raise LimitError(
            f"{subject} asks for {value} loops per step; allowed: at most {limit} ({why})"
        )
    return value


def check_at_most(name: str, value, limit, unit: str = "") -> None:
    """``value <= limit`` or one line naming both."""
    if value is not None and value > limit:
        raise LimitError(f"{name}={value} is too large; allowed: at most {limit}{unit}")


# -- memory ----------------------------------------------------------------------------------------
def host_memory_bytes() -> int:
    """Memory this process may use: physical memory, or the cgroup (container) limit when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check from here
        total = 2**62
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return int(total)


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``-style, powers of 1024."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(
    name: str, value, estimate: float, limit: float | None = None, needs: str = ""
) -> None:
    """Refuse a value whose estimated memory exceeds ``limit`` (default: this machine's memory)."""
    limit = host_memory_bytes() if limit is None else limit
    if not math.isfinite(estimate) or estimate > limit:
        raise LimitError(
            f"{name}={value} needs about {fmt_bytes(estimate)}{' ' + needs if needs else ''}, more "
            f"than the {fmt_bytes(limit)} of memory here; choose a smaller value"
        )


def transformer_parameters(
    width: int, layers: int, mlp_ratio: float = 4.0, tokens: int = 0, vocab: int = 0
) -> int:
    """A lower bound on the parameters of a transformer: per block attention (4·w²) and MLP
    (2·r·w²), plus a position embedding per token and an embedding per vocabulary entry (norms and
    biases left out)."""
    return int(layers * (4 + 2 * max(mlp_ratio, 0.0)) * width * width + (tokens + vocab) * width)


# -- rules of config fields ------------------------------------------------------------------------
# Every field of every config section names one of these (elt.config.RULES, a paradigm's ``RULES``),
# so a new field without a check fails tests/test_bad_inputs.py. ``None`` passes every rule: whether
# a field may be null is its dataclass type, which OmegaConf enforces.
def _config_error(message: str) -> Exception:
    from elt.errors import ConfigError

    return ConfigError(message)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."  # never echo a long foreign value


class Rule:
    def check(self, key: str, value) -> None:  # pragma: no cover - every rule overrides it
        raise NotImplementedError


class Flag(Rule):
    """A bool (OmegaConf enforces the type; nothing more to check)."""

    def check(self, key: str, value) -> None:
        if value is not None and not isinstance(value, bool):
            raise _config_error(f"config key {key!r} is {_shown(value)}; allowed: true or false")


class Range(Rule):
    """A finite number in [lo, hi] (``lo_open``: > lo; ``hi_open``: < hi); ``integer``: a whole
    number."""

    def __init__(
        self,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
        integer: bool = False,
    ):
        self.lo, self.hi, self.lo_open, self.hi_open, self.integer = (
            lo,
            hi,
            lo_open,
            hi_open,
            integer,
        )

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            if self.integer:
                return f"an integer in {self.lo}..{self.hi}"
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"a number in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "a finite number"

    def check(self, key: str, value) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _config_error(
                f"config key {key!r} is {_shown(value)}; allowed: {self.describe()}"
            )
        if not math.isfinite(value):
            raise _config_error(f"config key {key!r} must be a finite number, got {value}")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low:
            bound = f"{'>' if self.lo_open else '>='} {self.lo:g}"
            raise _config_error(
                f"config key {key!r} must be {bound}, got {value}"
                + (f"; allowed: {self.describe()}" if self.hi is not None else "")
            )
        if high:
            raise _config_error(f"config key {key!r} is {value}; allowed: {self.describe()}")


def Int(lo: int = 1, hi: int = MAX_INT) -> Range:  # noqa: N802 - reads as a type in the rule tables
    """A whole number in lo..hi."""
    return Range(lo, hi, integer=True)


class Choice(Rule):
    def __init__(self, *allowed: str):
        self.allowed = allowed

    def check(self, key: str, value) -> None:
        if value is not None and value not in self.allowed:
            raise _config_error(
                f"config key {key!r} is {_shown(value)}; allowed: {', '.join(self.allowed)}"
            )


class Text(Rule):
    """A non-empty string without control characters (``None`` passes where the type allows it)."""

    def check(self, key: str, value) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not value.strip() or any(ord(c) < 32 for c in value):
            raise _config_error(
                f"config key {key!r} is {_shown(value)}; allowed: a non-empty name or path"
                + (" (null for the default)" if isinstance(value, str) else "")
            )


class Ints(Rule):
    """A list of whole numbers, each in lo..hi, with ``min_len``..``max_len`` entries."""

    def __init__(self, lo: int, hi: int, min_len: int = 0, max_len: int = 64):
        self.lo, self.hi, self.min_len, self.max_len = lo, hi, min_len, max_len

    def check(self, key: str, value) -> None:
        values = list(value or [])
        if not self.min_len <= len(values) <= self.max_len or not all(
            isinstance(v, int) and not isinstance(v, bool) and self.lo <= v <= self.hi
            for v in values
        ):
            raise _config_error(
                f"config key {key!r} holds {_shown(values)}; allowed: "
                f"{self.min_len}..{self.max_len} "
                f"integers in {self.lo}..{self.hi}"
            )


class Floats(Rule):
    """A list of exactly ``length`` numbers, each in [lo, hi) (``hi_open``) or [lo, hi]."""

    def __init__(self, length: int, lo: float, hi: float, hi_open: bool = True):
        self.length, self.lo, self.hi, self.hi_open = length, lo, hi, hi_open

    def check(self, key: str, value) -> None:
        values = list(value or [])

        def ok(v) -> bool:
            return (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and self.lo <= v
                and (v < self.hi if self.hi_open else v <= self.hi)
            )

        if len(values) != self.length or not all(ok(v) for v in values):
            raise _config_error(
                f"config key {key!r} is {_shown(values)}; allowed: {self.length} numbers in "
                f"[{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            )


class Any_(Rule):
    """Checked elsewhere (named here so that every field has an entry)."""

    def __init__(self, where: str):
        self.where = where

    def check(self, key: str, value) -> None:
        return None
