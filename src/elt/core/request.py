"""One sampling request: what a caller asks for (:class:`SampleRequest`), checked when it is made,
and what a generator will run (:class:`ResolvedRequest`), resolved once against the model.

A request names its operating points (loop counts, per-step schedules, adaptive exits), the
sampling steps, the guidance scale, the seed, the precision, the batch size, the diffusion solver
and whether sampling steps run compiled; ``None`` leaves a setting to the model.
:func:`resolve_request` fills each one from the model's config (its ``sampling:`` section), then
from the paradigm's defaults, and resolves every operating point into the loops of each step,
within the loop ceiling. The result is frozen and passed down unchanged: ``elt sample`` resolves
its request once, and every batch, every record and the GFLOPs count read the same values.

:meth:`LoopedGenerator.generate(labels, loops=..., steps=...)
<elt.core.generator.LoopedGenerator.generate>` is the convenience form: it builds a request of
one operating point and resolves it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elt.core.schedule import AdaptiveExit, LoopSchedule, as_point, check_ceiling, resolve
from elt.errors import ConfigError
from elt.limits import MAX_SEED
from elt.runtime import PRECISIONS

DEFAULT_BATCH_SIZE = 256  # samples per generate call when sampling many (sampling to disk, eval)


@dataclass(frozen=True)
class SampleRequest:
    """What a caller asks for; ``None`` is the model's setting (``sampling:`` section, then the
    paradigm's default). Out-of-range values are a one-line :class:`~elt.errors.ConfigError` when
    the request is made, before any model is loaded.

    ``points``: the operating points to sample at (each an int, a per-step list, a schedule string
    such as ``"4:1"`` or ``"exit:0.05"``, or ``None`` for the config's ``sampling.loops``, else
    L_max). ``seed``: an int is deterministic, ``None`` draws a fresh one per call from OS entropy.
    ``sampler``: the diffusion solver (ddim | ddpm | euler). ``compile``: torch.compile the
    fixed-loop sampling steps."""

    points: tuple = (None,)
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    precision: str | None = None
    batch_size: int | None = None
    sampler: str | None = None
    compile: bool | None = None

    def __post_init__(self) -> None:
        points = self.points
        if isinstance(points, (str, int)) or not isinstance(points, Sequence):
            raise ConfigError(f"points must be a sequence of operating points, got {points!r}")
        if not points:
            raise ConfigError("no loop counts given")
        object.__setattr__(self, "points", tuple(points))
        for point in self.points:
            as_point(point)  # a ScheduleError (one line) for a bad loop count or schedule
        if self.steps is not None and (
            isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1
        ):
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.guidance is not None and not math.isfinite(float(self.guidance)):
            raise ConfigError(
                f"guidance={self.guidance} is not allowed; use a finite number (e.g. 0, 1.5, 3)"
            )
        seed = self.seed
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
        ):
            raise ConfigError(
                f"seed={seed!r} is out of range; allowed: an integer in 0..{MAX_SEED}"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")

    @classmethod
    def one(cls, loops: LoopSchedule = None, **settings: Any) -> SampleRequest:
        """A request of one operating point (what ``generate(labels, loops=...)`` builds)."""
        return cls(points=(loops,), **settings)


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every setting decided (what a generator runs). ``points`` are the operating
    points as asked (they name the files and records); ``plans`` their per-step loop counts (a
    list) or adaptive rules, in the same order. ``steps``/``guidance`` are ``None`` only for a
    generator that declares no defaults (a plug-in paradigm whose ``generate`` decides them)."""

    points: tuple
    plans: tuple
    steps: int | None
    guidance: float | None
    seed: int | None
    precision: str | None
    batch_size: int
    sampler: str | None
    compile: bool

    def at(self, index: int) -> ResolvedRequest:
        """The same request restricted to one of its operating points (nothing is resolved
        again)."""
        return dataclasses.replace(self, points=(self.points[index],), plans=(self.plans[index],))

    def with_seed(self, seed: int | None) -> ResolvedRequest:
        """The same request with another seed (batch b of many uses ``seed + b``)."""
        return dataclasses.replace(self, seed=seed)

    def one_point(self) -> ResolvedRequest:
        """This request, which must hold one operating point (a one-line error otherwise)."""
        self._only(self.points)
        return self

    @property
    def loops(self) -> LoopSchedule:
        """The operating point of a one-point request."""
        return self._only(self.points)

    @property
    def plan(self) -> list[int] | AdaptiveExit | None:
        """The per-step loops (or the adaptive rule) of a one-point request."""
        return self._only(self.plans)

    def _only(self, values: tuple):
        if len(values) != 1:
            raise ValueError(
                f"this request holds {len(values)} operating points; take one with .at(i)"
            )
        return values[0]


def configured(config: Any, name: str) -> Any:
    """The config's ``sampling.<name>`` (``None`` when unset or without a config)."""
    section = getattr(config, "sampling", None) if config is not None else None
    return section.get(name) if section is not None else None


def resolve_request(
    request: SampleRequest,
    config: Any,
    defaults: Mapping[str, Any],
    trained_loops: int,
    options: Sequence[str] = ("precision", "compile"),
) -> ResolvedRequest:
    """Decide every setting of ``request`` once: the request's value, else the config's
    ``sampling.<name>``, else ``defaults[name]`` (the paradigm's); then every operating point into
    per-step loops (``None``: ``sampling.loops``, else ``trained_loops``) within the loop ceiling
    (:func:`elt.limits.loop_ceiling`). ``options`` are the settings this generator has: asking a
    generator for one it lacks (``sampler`` of a masked model) is a one-line error."""
    for name in ("sampler", "precision", "compile"):
        if name not in options and getattr(request, name) is not None:
            raise ConfigError(f"{name}={getattr(request, name)!r}: this model has no {name} option")

    def setting(name: str) -> Any:
        value = getattr(request, name)
        if value is None:
            value = configured(config, name)
        return defaults.get(name) if value is None else value

    steps, guidance = setting("steps"), setting("guidance")
    steps = None if steps is None else int(steps)
    if steps is not None and steps < 1:
        raise ConfigError(f"sampling steps must be >= 1, got {steps}")
    default_point = configured(config, "loops")
    plans = []
    for asked in request.points:
        point = default_point if asked is None else asked
        if steps is None:  # a generator without defaults: its generate decides the steps
            plans.append(None)
            continue
        plan = resolve(point, steps, trained_loops)
        check_ceiling(plan, trained_loops, point)
        plans.append(plan)
    precision = setting("precision") if "precision" in options else None
    return ResolvedRequest(
        points=request.points,
        plans=tuple(plans),
        steps=steps,
        guidance=None if guidance is None else float(guidance),
        seed=request.seed,
        precision=None if precision is None else str(precision),
        batch_size=int(request.batch_size or DEFAULT_BATCH_SIZE),
        sampler=setting("sampler") if "sampler" in options else None,
        compile=bool(setting("compile")) if "compile" in options else False,
    )
