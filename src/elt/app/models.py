"""What the page serves, without any web library: the loaded models (each loaded once and kept), the
checking of what a user typed, generation with its measured cost, and the encoding of images and
videos.

Only elt's public API is used (``elt.load``, ``generate``, ``gflops_per_sample``, ``trained_loops``,
``num_classes``) and the loop grammar of :mod:`elt.core.schedule`, so the page works for every
checkpoint ``elt sample`` works for."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elt.core.schedule import (
    AdaptiveExit,
    OperatingPoint,
    Ramp,
    ScheduleError,
    parse_point,
    point_label,
    resolve,
)
from elt.errors import CheckpointError, UserError

MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
MAX_SEED = 2**62
MAX_COMPARE_SAMPLES = 8
EXTRA_LOOPS = 2  # the loop slider runs past L_max by this much: the model still samples there
GIF_FRAME_MS = 125
# how the loops are chosen on the page: one count at every step, a per-step schedule, or an adaptive
# exit
LOOP_MODES = ("fixed L", "schedule", "adaptive exit")
# starting exit threshold per paradigm: the points docs/anytime.md found to keep quality on the demo
# models
DEFAULT_EXIT = {"masked": 0.2, "diffusion": 0.05}


class InputError(UserError):
    """A value typed on the page that cannot be used; its message is shown on the page."""


@dataclass
class Model:
    """One loaded checkpoint and what the page shows about it."""

    name: str
    path: str
    generator: object
    class_names: list[str]
    paradigm: str
    default_steps: int | None = None
    default_guidance: float | None = None

    @property
    def trained_loops(self) -> int:
        return int(self.generator.trained_loops)

    @property
    def max_loops(self) -> int:
        return self.trained_loops + EXTRA_LOOPS

    @property
    def default_exit(self) -> float:
        return DEFAULT_EXIT.get(self.paradigm, 0.05)

    def describe(self) -> str:
        steps = "?" if self.default_steps is None else self.default_steps
        guidance = "?" if self.default_guidance is None else f"{self.default_guidance:g}"
        off = {"masked": "0", "diffusion": "1"}.get(self.paradigm)
        return (
            f"**{self.name}** — {self.paradigm}, trained at L_max = {self.trained_loops}, "
            f"{len(self.class_names)} classes; default {steps} sampling steps, guidance {guidance}"
            + (f" ({off} = off)" if off else "")
            + ("" if self.name.startswith("demo:") else f"  \n`{self.path}`")
        )


def shipped_checkpoints() -> dict[str, Path]:
    """The demo checkpoints shipped in the package, by name (``demo:masked``,
    ``demo:diffusion``)."""
    from elt.demo import shipped_models

    return {f"demo:{paradigm}": path for paradigm, path in shipped_models().items()}


def class_names_for(generator) -> list[str]:
    """The class picker's entries ("0: circle"): the names the checkpoint stores
    (``generator.class_names``), else Fashion-MNIST's for its data sets (checkpoints saved before
    names were stored), else "class N"."""
    config = getattr(generator, "config", None)
    data_name = str(getattr(getattr(config, "data", None), "name", "") or "")
    count = int(generator.num_classes)
    names = getattr(generator, "class_names", None)
    if not names and data_name in ("fashion_mnist", "moving_fmnist"):
        from elt.data.fashion_mnist import CLASSES

        names = list(CLASSES)
    if names and len(names) == count:
        return [f"{i}: {name}" for i, name in enumerate(names)]
    return [f"class {i}" for i in range(count)]


def _sampling_defaults(generator) -> tuple[str, int | None, float | None]:
    """(paradigm, default steps, default guidance s): the generator's own resolution of
    ``sampling.*`` and the paradigm's defaults where it has one, else the config's ``sampling:``
    section."""
    config = getattr(generator, "config", None)
    paradigm = str(getattr(config, "paradigm", "") or type(generator).__name__)
    settings = getattr(generator, "sampling_settings", None)
    if callable(settings):
        steps, guidance = settings(None, None)
    else:
        section = getattr(config, "sampling", None) if config is not None else None
        steps, guidance = getattr(section, "steps", None), getattr(section, "guidance", None)
    return (
        paradigm,
        (int(steps) if steps is not None else None),
        (float(guidance) if guidance is not None else None),
    )


def load_models(
    specs: Sequence[str] | None, device: str = "cpu", loader: Callable | None = None
) -> dict[str, Model]:
    """Load every checkpoint once (the shipped demo models when ``specs`` is empty); a missing or
    broken one is a :class:`CheckpointError` naming it, raised before anything is served."""
    from elt.inference.checkpoints import load_generator

    loader = loader or load_generator
    shipped = shipped_checkpoints()
    if specs:
        named = []
        for spec in specs:
            if spec.startswith("demo:"):
                if spec not in shipped:
                    raise CheckpointError(
                        f"unknown shipped model {spec!r}; available: {', '.join(shipped) or 'none'}"
                    )
                named.append((spec, shipped[spec]))
            else:
                named.append((spec, Path(spec)))
    else:
        if not shipped:
            raise CheckpointError("no shipped demo models found in the package; pass --ckpt RUN")
        named = list(shipped.items())
    models: dict[str, Model] = {}
    for name, path in named:
        if name in models:
            continue
        if not Path(path).exists():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
        try:
            generator = loader(str(path), device=device)
        except UserError:
            raise
        except Exception as exc:  # a corrupt file surfaces as whatever its reader raises
            raise CheckpointError(
                f"cannot load checkpoint {str(path)!r}: {type(exc).__name__}: {exc}"
            ) from None
        paradigm, steps, guidance = _sampling_defaults(generator)
        models[name] = Model(
            name=name,
            path=str(path),
            generator=generator,
            class_names=class_names_for(generator),
            paradigm=paradigm,
            default_steps=steps,
            default_guidance=guidance,
        )
    return models


# -- what the user typed ---------------------------------------------------------------------------
def _text(value) -> str:
    return "" if value is None else str(value).strip()


def parse_int(value, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """An integer in [low, high] from a box; empty → ``default``. Floats like ``3.0`` count as
    integers."""
    text = _text(value)
    if not text:
        return default
    try:
        number = float(text)
        if not number.is_integer():
            raise ValueError
        result = int(number)
    except (ValueError, OverflowError):
        raise InputError(f"{name} must be a whole number, got {text!r}") from None
    if not low <= result <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {result}")
    return result


def parse_float(value, name: str, low: float, high: float) -> float | None:
    """A number in [low, high] from a box; empty → ``None`` (the model's default)."""
    text = _text(value)
    if not text:
        return None
    try:
        result = float(text)
    except ValueError:
        raise InputError(f"{name} must be a number, got {text!r}") from None
    if not np.isfinite(result) or not low <= result <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {text}")
    return result


@dataclass
class Request:
    """A checked request: every field is valid for the chosen model. ``loops`` is an operating point
    of :mod:`elt.core.schedule`: a loop count, a per-step schedule (``Ramp``/``Segments``) or an
    ``AdaptiveExit``."""

    model: Model
    label: int
    seed: int
    loops: OperatingPoint
    steps: int | None
    guidance: float | None


def _exit_point(threshold, min_loops, max_loops, model: Model) -> AdaptiveExit:
    """The adaptive exit from its three boxes, written as ``exit:T:MIN-MAX`` and read by the core
    parser."""
    text = _text(threshold)
    if not text:
        raise InputError(
            f"exit threshold is empty; a number >= 0 or inf, e.g. {model.default_exit:g}"
        )
    low = parse_int(min_loops, "exit min loops", 2, model.max_loops, default=2)
    high = parse_int(max_loops, "exit max loops", 2, model.max_loops, default=model.trained_loops)
    return parse_point(f"exit:{text}:{low}-{high}")


def parse_loop_point(
    model: Model,
    mode,
    loops,
    schedule="",
    threshold="",
    min_loops=None,
    max_loops=None,
    steps: int | None = None,
) -> OperatingPoint:
    """What the loop controls ask for, checked for ``model``: a schedule is read by the core parser
    (its one-line message is the page's) and must fit the sampling steps; no step may run more than
    the page's loop limit."""
    mode = _text(mode) or LOOP_MODES[0]
    if mode not in LOOP_MODES:
        raise InputError(f"unknown loops mode {mode!r}; choose one of: {', '.join(LOOP_MODES)}")
    try:
        if mode == "fixed L":
            return parse_int(loops, "loop count L", 1, model.max_loops, default=model.trained_loops)
        if mode == "adaptive exit":
            return _exit_point(threshold, min_loops, max_loops, model)
        text = _text(schedule)
        if not text:
            raise InputError(
                "loop schedule is empty; write e.g. 4:1 (a ramp) or 3x6+2x6 (segments)"
            )
        point = parse_point(text)  # any point of the grammar, exit:T[:MIN-MAX] included
        if isinstance(point, AdaptiveExit):
            point = point.resolved(model.trained_loops)
            top = point.max_loops
        elif isinstance(point, Ramp):
            top = max(point.start, point.end)
        else:  # a fixed count or segments
            top = point if isinstance(point, int) else max(loops for loops, _ in point.parts)
        step_count = steps if steps is not None else model.default_steps
        if step_count and not isinstance(point, AdaptiveExit):
            resolve(
                point, step_count, model.trained_loops
            )  # segments must cover the sampling steps
    except ScheduleError as exc:
        raise InputError(str(exc)) from None
    if top > model.max_loops:
        raise InputError(
            f"loop schedule {point_label(point)!r} runs {top} loops at a step; this page allows at "
            "most "
            f"{model.max_loops} (L_max + {EXTRA_LOOPS})"
        )
    return point


def check_request(
    models: dict[str, Model],
    model_name,
    class_choice,
    seed,
    loops,
    steps,
    guidance,
    mode="fixed L",
    schedule="",
    threshold="",
    min_loops=None,
    max_loops=None,
) -> Request:
    if model_name not in models:
        raise InputError(f"unknown model {model_name!r}; choose one of: {', '.join(models)}")
    model = models[model_name]
    bare = [name.split(": ", 1)[-1] for name in model.class_names]  # "0: circle" -> "circle"
    if class_choice in model.class_names:
        label = model.class_names.index(class_choice)
    elif isinstance(class_choice, str) and class_choice.strip() in bare:
        label = bare.index(class_choice.strip())
    else:
        label = parse_int(class_choice, "class", 0, len(model.class_names) - 1, default=0)
    seed = parse_int(seed, "seed", 0, MAX_SEED, default=0)
    steps = parse_int(steps, "sampling steps", 1, MAX_STEPS)
    point = parse_loop_point(model, mode, loops, schedule, threshold, min_loops, max_loops, steps)
    return Request(
        model=model,
        label=label,
        seed=seed,
        loops=point,
        steps=steps,
        guidance=parse_float(guidance, "guidance", 0.0, MAX_GUIDANCE),
    )


# -- generation and its cost -----------------------------------------------------------------------
def _runs(values) -> str:
    """Per-step loops compactly: equal neighbours as ``value×count`` (``3×2 2×10``); means to 2
    digits."""
    parts: list[list] = []
    for v in values:
        text = f"{v:.2g}" if float(v) != int(v) else str(int(v))
        if parts and parts[-1][0] == text:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    return " ".join(text if n == 1 else f"{text}×{n}" for text, n in parts)


@dataclass
class Result:
    samples: np.ndarray  # uint8 N×H×W×C or N×T×H×W×C
    loops: OperatingPoint
    gflops_per_sample: float
    seconds: float
    loops_used: np.ndarray | None = (
        None  # int N×steps: the loops each sample ran at each sampling step
    )

    @property
    def is_video(self) -> bool:
        return self.samples.ndim == 5

    @property
    def mean_loops(self) -> float:
        """Loops per sampling step, mean over samples and steps (the fixed count where nothing was
        recorded)."""
        if self.loops_used is None or not self.loops_used.size:
            return float(self.loops) if isinstance(self.loops, int) else float("nan")
        return float(np.mean(self.loops_used))

    def loops_text(self) -> str:
        """``L = 3 loops at each of 12 steps`` for a fixed count; otherwise the point, the mean
        loops used per step and the loops per step (means over the samples)."""
        steps = None if self.loops_used is None else self.loops_used.shape[1]
        if isinstance(self.loops, int):
            return f"L = {self.loops} loops" + (f" at each of {steps} steps" if steps else "")
        text = f"loops {point_label(self.loops)}: mean {self.mean_loops:.2f} loops per step"
        if steps:
            text += f" (per step: {_runs(self.loops_used.mean(0))})"
        return text

    def caption(self) -> str:
        count = len(self.samples)
        per, measured = (" per sample", f" for {count} samples") if count > 1 else ("", "")
        return (
            f"{self.loops_text()} · {self.gflops_per_sample:.3g} GFLOPs{per} · "
            f"{1000 * self.seconds:.0f} ms measured{measured}"
        )


def generate(
    request: Request, count: int = 1, loops: OperatingPoint | None = None, progress: bool = False
) -> Result:
    """``count`` samples of the request's class, all from its seed; cost measured around
    ``generate`` alone, GFLOPs counted from the loops each sample actually ran (an adaptive exit's
    differ per sample and step)."""
    model, loops = request.model, request.loops if loops is None else loops
    labels = [request.label] * count
    start = time.perf_counter()
    samples, used = model.generator.generate(
        labels,
        loops=loops,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
        progress=progress,
        return_loops=True,
    )
    seconds = time.perf_counter() - start
    used = np.asarray(used)
    gflops = float(
        model.generator.gflops_per_sample(
            loops=loops, steps=request.steps, guidance=request.guidance, loops_used=used
        )
    )
    return Result(
        samples=np.asarray(samples),
        loops=loops,
        gflops_per_sample=gflops,
        seconds=seconds,
        loops_used=used,
    )


# -- encoding --------------------------------------------------------------------------------------
def strip(samples: np.ndarray) -> np.ndarray:
    """Samples side by side (1-px dark gap): N×H×W×C → H×(N·W+N-1)×C, videos frame by frame."""
    gap_shape = list(samples.shape[1:])
    gap_shape[-2] = 1
    parts = []
    for i, sample in enumerate(samples):
        if i:
            parts.append(np.zeros(gap_shape, samples.dtype))
        parts.append(sample)
    return np.concatenate(parts, axis=-2)


def encode(array: np.ndarray) -> tuple[bytes, str]:
    """One image H×W×C → PNG bytes, one video T×H×W×C → looping animated GIF bytes; returns (bytes,
    suffix)."""
    from PIL import Image

    def to_pil(frame):
        return Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)

    buffer = io.BytesIO()
    if array.ndim == 4:
        frames = [to_pil(frame) for frame in array]
        frames[0].save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=GIF_FRAME_MS,
            loop=0,
        )
        return buffer.getvalue(), ".gif"
    to_pil(array).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def write_media(array: np.ndarray, directory: Path, stem: str) -> Path:
    """Encode and write under a temporary name, then rename (a reader never sees half a file)."""
    data, suffix = encode(array)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}{suffix}"
    partial = directory / f".{stem}{suffix}.partial"
    partial.write_bytes(data)
    partial.replace(path)
    return path
