"""What ``loops`` means everywhere (Python API, ``elt sample``/``eval``/``calibrate``, the config):
an *operating point*, one of

* a loop count ``L`` — the same L at every sampling step (masked decoding step or diffusion step);
* a per-step schedule — one loop count per sampling step, written as a linear ramp ``A:B`` or as
  segments ``AxN+BxM`` (A loops for N steps, then B loops for M steps; the step counts must add up
  to the sampler's steps), or given in Python as a list of ints;
* an adaptive exit ``exit:T`` / ``exit:T:MIN-MAX`` — at every step each sample loops until its
  prediction changed by less than T between two consecutive loops (masked: share of changed argmax
  tokens at the masked positions; diffusion: relative L2 change of the x0 prediction), at least MIN
  (default 2, the first loop with a predecessor to compare against) and at most MAX (default L_max,
  may exceed it) loops; ``exit:inf`` exits as soon as MIN loops are done, ``exit:0`` never exits
  before MAX.

On the command line ``--loops`` takes comma-separated points, and ``A-B`` expands to the fixed
points A, A+1, …, B: ``--loops 1-4,4:1,1x6+4x6,exit:0.05``. :func:`point_label` writes any point
back in this grammar (a Python list becomes segments), so labels in files and tables can be parsed
again."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from elt.errors import UserError
from elt.limits import MAX_LOOPS, MAX_POINTS, MAX_SAMPLING_STEPS, check_loops


class ScheduleError(UserError, ValueError):
    """A loop count, schedule or adaptive-exit setting that cannot be used (one line, names the
    value)."""


GRAMMAR = (
    "L (fixed loop count, e.g. 2), A-B (the fixed counts A..B), A:B (linear ramp from A loops at "
    "the "
    "first step to B at the last), AxN+BxM (A loops for N steps, then B for M; counts sum to the "
    "steps), "
    "exit:T[:MIN-MAX] (adaptive exit at change threshold T)"
)


LOOPS_HELP = (
    "operating points, comma-separated: L (fixed, e.g. 2), A-B (fixed A..B), A:B (linear ramp from "
    "A loops "
    "at the first step to B at the last), AxN+BxM (A loops for N steps, then B for M; the counts "
    "add up "
    "to the steps), exit:T[:MIN-MAX] (adaptive exit: stop a sample's loops once its prediction "
    "changed by "
    "less than T; MIN default 2, MAX default L_max)"
)


@dataclass(frozen=True)
class Ramp:
    """Linear ramp of the loop count from ``start`` (first step) to ``end`` (last step), rounded."""

    start: int
    end: int

    def expand(self, steps: int) -> list[int]:
        if steps == 1:
            return [self.start]
        return [
            int(math.floor(self.start + (self.end - self.start) * i / (steps - 1) + 0.5))
            for i in range(steps)
        ]


@dataclass(frozen=True)
class Segments:
    """``parts`` = ((loops, steps), ...): loops for that many consecutive steps; step counts sum to
    the steps."""

    parts: tuple[tuple[int, int], ...]

    def expand(self, steps: int) -> list[int]:
        total = sum(n for _, n in self.parts)
        if total != steps:
            raise ScheduleError(
                f"loop schedule {point_label(self)!r} covers {total} steps but sampling uses "
                f"{steps} steps; make the step counts add up to {steps}"
            )
        return [loops for loops, n in self.parts for _ in range(n)]


@dataclass(frozen=True)
class AdaptiveExit:
    """Per-sample, per-step early exit: stop looping when the prediction changed by less than
    ``threshold``."""

    threshold: float
    min_loops: int = 2
    max_loops: int | None = None  # None: the model's L_max

    def __post_init__(self):
        if not (self.threshold >= 0):  # also rejects NaN
            raise ScheduleError(f"exit threshold must be >= 0 (or inf), got {self.threshold}")
        if self.min_loops < 2:
            raise ScheduleError(
                f"adaptive exit needs min loops >= 2 (loop 1 has no previous prediction to "
                f"compare with), got {self.min_loops}; use the fixed point 1 for one loop"
            )
        if self.max_loops is not None and self.max_loops < self.min_loops:
            raise ScheduleError(
                f"adaptive exit max loops {self.max_loops} is below min loops {self.min_loops}"
            )

    def resolved(self, default_max: int) -> AdaptiveExit:
        """The same rule with ``max_loops`` filled in (L_max), checked against ``min_loops``."""
        top = self.max_loops if self.max_loops is not None else max(default_max, self.min_loops)
        return AdaptiveExit(self.threshold, self.min_loops, top)


OperatingPoint = int | Ramp | Segments | AdaptiveExit
LoopSchedule = int | Sequence[int] | str | Ramp | Segments | AdaptiveExit | None

_INT = r"\d+"
_RAMP = re.compile(rf"^({_INT}):({_INT})$")
_SEGMENT = re.compile(rf"^({_INT})x({_INT})$")
_RANGE = re.compile(rf"^({_INT})-({_INT})$")
_EXIT = re.compile(r"^exit:([^:]+)(?::(\d+)-(\d*))?$")


def _positive(value: int, text: str) -> int:
    if value < 1:
        raise ScheduleError(f"loop counts must be >= 1, got {text!r}; allowed: {GRAMMAR}")
    if (
        value > MAX_LOOPS
    ):  # a model's own ceiling (elt.limits.loop_ceiling) is checked once it is known
        raise ScheduleError(
            f"loops {text!r} asks for {value} loops; allowed: at most {MAX_LOOPS} (and at most "
            "4·L_max for a given model)"
        )
    return value


def _steps(count: int, text: str) -> int:
    if count > MAX_SAMPLING_STEPS:
        raise ScheduleError(
            f"loop schedule {text!r} covers {count} steps; allowed: at most {MAX_SAMPLING_STEPS}"
        )
    return count


def parse_point(text: str) -> OperatingPoint:
    """One operating point (not a range): ``2``, ``4:1``, ``1x12+4x13``, ``exit:0.05`` or
    ``exit:0.05:2-6``."""
    item = str(text).strip().lower()
    if re.fullmatch(_INT, item):
        return _positive(int(item), text)
    if match := _RAMP.match(item):
        return Ramp(_positive(int(match[1]), text), _positive(int(match[2]), text))
    if "x" in item and re.fullmatch(r"[\dx+ ]+", item):
        parts = []
        for piece in item.split("+"):
            seg = _SEGMENT.match(piece.strip())
            if not seg:
                raise ScheduleError(
                    f"bad loop schedule segment {piece!r} in {text!r}; write LOOPSxSTEPS joined "
                    "by +, e.g. 1x12+4x13"
                )
            loops, count = _positive(int(seg[1]), text), _steps(int(seg[2]), text)
            if count < 1:
                raise ScheduleError(
                    f"segment {piece!r} in {text!r} covers no steps; step counts must be >= 1"
                )
            parts.append((loops, count))
        return Segments(tuple(parts))
    if match := _EXIT.match(item):
        try:
            threshold = float(match[1])
        except ValueError:
            raise ScheduleError(
                f"bad exit threshold {match[1]!r} in {text!r}; a number >= 0 or inf, e.g. exit:0.05"
            ) from None
        if match[2] is None:
            return AdaptiveExit(threshold)
        bottom = int(match[2])
        if bottom > MAX_LOOPS:
            _positive(bottom, text)
        return AdaptiveExit(threshold, bottom, _positive(int(match[3]), text) if match[3] else None)
    raise ScheduleError(f"invalid loops {text!r}; allowed: {GRAMMAR}")


def parse_loops(text: str | Sequence[str]) -> list[OperatingPoint]:
    """Comma-separated operating points (a list of such strings also works); ranges ``A-B`` expand
    to fixed points. Duplicates are dropped, order kept."""
    items = [text] if isinstance(text, str) else list(text)
    points: list[OperatingPoint] = []
    seen: set = set()
    for chunk in items:
        for part in str(chunk).split(","):
            part = part.strip()
            if not part:
                continue
            if match := _RANGE.match(part):
                lo, hi = _positive(int(match[1]), part), int(match[2])
                if hi < lo:
                    raise ScheduleError(f"empty loop range {part!r}; write LOW-HIGH, e.g. 1-4")
                _positive(hi, part)
                new = range(lo, hi + 1)
            else:
                new = [parse_point(part)]
            for p in new:
                if p not in seen:
                    seen.add(p)
                    points.append(p)
            if len(points) > MAX_POINTS:
                raise ScheduleError(
                    f"--loops {str(text)[:40]!r} names more than {MAX_POINTS} operating points; "
                    f"allowed: at most {MAX_POINTS}"
                )
    if not points:
        raise ScheduleError(f"no loop counts in {text!r}; allowed: {GRAMMAR}")
    return points


def as_point(loops: LoopSchedule) -> OperatingPoint | None:
    """Any accepted form of ``loops`` (int, list, string, point object, None) → a point (None stays
    None)."""
    if loops is None or isinstance(loops, (Ramp, Segments, AdaptiveExit)):
        return loops
    if isinstance(loops, bool):
        raise ScheduleError(
            f"loops must be an int, a list of ints or a schedule string, got {loops!r}"
        )
    if isinstance(loops, int):
        return _positive(int(loops), str(loops))
    if isinstance(loops, str):
        points = parse_loops(loops)
        if len(points) != 1:
            raise ScheduleError(
                f"loops {loops!r} names {len(points)} operating points; sampling takes one"
            )
        return points[0]
    if not isinstance(loops, Sequence | np.ndarray | torch.Tensor):
        raise ScheduleError(
            f"loops={loops!r}: give an integer loop count >= 1, a list of them (one per sampling "
            f"step) or a schedule string ({GRAMMAR})"
        )
    raw = np.asarray(loops).reshape(-1).tolist()
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise ScheduleError(f"a loop schedule holds integer loop counts >= 1, got {raw}")
    values = [int(v) for v in raw]
    if not values:
        raise ScheduleError("an empty loop schedule; give one loop count per sampling step")
    for v in values:
        _positive(v, str(list(values)))
    parts: list[list[int]] = []
    for v in values:
        if parts and parts[-1][0] == v:
            parts[-1][1] += 1
        else:
            parts.append([v, 1])
    return Segments(tuple((a, n) for a, n in parts))


def point_label(point: LoopSchedule) -> str:
    """The point in the ``--loops`` grammar (parses back to the same point)."""
    point = as_point(point)
    if point is None:
        return "default"
    if isinstance(point, int):
        return str(point)
    if isinstance(point, Ramp):
        return f"{point.start}:{point.end}"
    if isinstance(point, Segments):
        return "+".join(f"{a}x{n}" for a, n in point.parts)
    threshold = f"{point.threshold:g}"
    if point.max_loops is None and point.min_loops == 2:
        return f"exit:{threshold}"
    top = "" if point.max_loops is None else point.max_loops
    return f"exit:{threshold}:{point.min_loops}-{top}"


def file_token(point: LoopSchedule) -> str:
    """A file-name-safe form of the label (``samples_L<token>.npz``): ``:`` becomes ``_``."""
    return point_label(point).replace(":", "_")


def resolve(loops: LoopSchedule, steps: int, default: int) -> list[int] | AdaptiveExit:
    """A per-step list of loop counts for fixed points and schedules, or the adaptive rule with its
    maximum filled in. ``None`` means ``default`` at every step."""
    point = as_point(loops)
    if point is None:
        point = default
    if isinstance(point, AdaptiveExit):
        return point.resolved(default)
    if isinstance(point, int):
        return [point] * steps
    return point.expand(steps)


def check_ceiling(
    plan: list[int] | AdaptiveExit, trained_loops: int, loops: LoopSchedule = None
) -> None:
    """A resolved plan within the model's loop ceiling (:func:`elt.limits.loop_ceiling`, 4·L_max, at
    least 8)."""
    top = plan.max_loops if isinstance(plan, AdaptiveExit) else max(plan, default=0)
    check_loops(top, trained_loops, f"loops {point_label(loops if loops is not None else top)!r}")


def loops_per_step(loops: LoopSchedule, steps: int, default: int) -> list[int]:
    """Expand a fixed loop count or a schedule to one value per sampling step (adaptive exits are
    refused: their loops are only known after sampling)."""
    plan = resolve(loops, steps, default)
    if isinstance(plan, AdaptiveExit):
        raise ScheduleError(
            f"{point_label(plan)} is an adaptive exit: its loops per step are only known after "
            "sampling"
        )
    if len(plan) != steps:
        raise ScheduleError(
            f"loop schedule has {len(plan)} entries but sampling uses {steps} steps"
        )
    return plan


def max_loops(loops: LoopSchedule) -> int | None:
    """The most loops per step a point asks for (an adaptive exit: its MAX, else its MIN; None: the
    default)."""
    point = as_point(loops)
    if point is None or isinstance(point, int):
        return point
    if isinstance(point, Ramp):
        return max(point.start, point.end)
    if isinstance(point, Segments):
        return max(count for count, _ in point.parts)
    return point.max_loops if point.max_loops is not None else point.min_loops
