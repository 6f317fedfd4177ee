"""What the page serves, without any web library: the loaded models (each loaded once and kept), the
checking of what a user typed, generation with its measured cost, and the encoding of images and videos.

Only elt's public API is used (``elt.load``, ``generate``, ``gflops_per_sample``, ``trained_loops``,
``num_classes``), so the page works for every checkpoint ``elt sample`` works for.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elt.errors import CheckpointError, UserError

MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
MAX_SEED = 2**62
MAX_COMPARE_SAMPLES = 8
EXTRA_LOOPS = 2  # the loop slider runs past L_max by this much: the model still samples there
GIF_FRAME_MS = 125


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

    def describe(self) -> str:
        steps = "?" if self.default_steps is None else self.default_steps
        guidance = "?" if self.default_guidance is None else f"{self.default_guidance:g}"
        off = {"masked": "0", "diffusion": "1"}.get(self.paradigm)
        return (f"**{self.name}** — {self.paradigm}, trained at L_max = {self.trained_loops}, "
                f"{len(self.class_names)} classes; default {steps} sampling steps, guidance {guidance}"
                + (f" ({off} = off)" if off else "")
                + ("" if self.name.startswith("demo:") else f"  \n`{self.path}`"))


def shipped_checkpoints() -> dict[str, Path]:
    """The demo checkpoints shipped in the package, by name (``demo:masked``, ``demo:diffusion``)."""
    from elt.demo import shipped_models

    return {f"demo:{paradigm}": path for paradigm, path in shipped_models().items()}


def class_names_for(generator) -> list[str]:
    """Readable class names where the data set is known (Fashion-MNIST and its moving variant)."""
    config = getattr(generator, "config", None)
    data_name = str(getattr(getattr(config, "data", None), "name", "") or "")
    count = int(generator.num_classes)
    if data_name in ("fashion_mnist", "moving_fmnist"):
        from elt.data.fashion_mnist import CLASSES

        if len(CLASSES) == count:
            return [f"{i}: {name}" for i, name in enumerate(CLASSES)]
    return [f"class {i}" for i in range(count)]


def _sampling_defaults(generator) -> tuple[str, int | None, float | None]:
    """(paradigm, default steps, default guidance s): the generator's own resolution of ``sampling.*`` and the
    paradigm's defaults where it has one, else the config's ``sampling:`` section."""
    config = getattr(generator, "config", None)
    paradigm = str(getattr(config, "paradigm", "") or type(generator).__name__)
    settings = getattr(generator, "sampling_settings", None)
    if callable(settings):
        steps, guidance = settings(None, None)
    else:
        section = getattr(config, "sampling", None) if config is not None else None
        steps, guidance = getattr(section, "steps", None), getattr(section, "guidance", None)
    return paradigm, (int(steps) if steps is not None else None), (float(guidance) if guidance is not None else None)


def load_models(specs: Sequence[str] | None, device: str = "cpu",
                loader: Callable | None = None) -> dict[str, Model]:
    """Load every checkpoint once (the shipped demo models when ``specs`` is empty); a missing or broken one
    is a :class:`CheckpointError` naming it, raised before anything is served."""
    import elt

    loader = loader or elt.load
    shipped = shipped_checkpoints()
    if specs:
        named = []
        for spec in specs:
            if spec.startswith("demo:"):
                if spec not in shipped:
                    raise CheckpointError(f"unknown shipped model {spec!r}; available: {', '.join(shipped) or 'none'}")
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
            raise CheckpointError(f"cannot load checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from None
        paradigm, steps, guidance = _sampling_defaults(generator)
        models[name] = Model(name=name, path=str(path), generator=generator, class_names=class_names_for(generator),
                             paradigm=paradigm, default_steps=steps, default_guidance=guidance)
    return models


# -- what the user typed -----------------------------------------------------------------------------------------
def _text(value) -> str:
    return "" if value is None else str(value).strip()


def parse_int(value, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """An integer in [low, high] from a box; empty → ``default``. Floats like ``3.0`` count as integers."""
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
    """A checked request: every field is valid for the chosen model."""

    model: Model
    label: int
    seed: int
    loops: int
    steps: int | None
    guidance: float | None


def check_request(models: dict[str, Model], model_name, class_choice, seed, loops, steps, guidance) -> Request:
    if model_name not in models:
        raise InputError(f"unknown model {model_name!r}; choose one of: {', '.join(models)}")
    model = models[model_name]
    if class_choice in model.class_names:
        label = model.class_names.index(class_choice)
    else:
        label = parse_int(class_choice, "class", 0, len(model.class_names) - 1, default=0)
    return Request(
        model=model,
        label=label,
        seed=parse_int(seed, "seed", 0, MAX_SEED, default=0),
        loops=parse_int(loops, "loop count L", 1, model.max_loops, default=model.trained_loops),
        steps=parse_int(steps, "sampling steps", 1, MAX_STEPS),
        guidance=parse_float(guidance, "guidance", 0.0, MAX_GUIDANCE),
    )


# -- generation and its cost -----------------------------------------------------------------------------------
@dataclass
class Result:
    samples: np.ndarray  # uint8 N×H×W×C or N×T×H×W×C
    loops: int
    gflops_per_sample: float
    seconds: float

    @property
    def is_video(self) -> bool:
        return self.samples.ndim == 5

    def caption(self) -> str:
        count = len(self.samples)
        per, measured = (" per sample", f" for {count} samples") if count > 1 else ("", "")
        return (f"L = {self.loops} loops · {self.gflops_per_sample:.3g} GFLOPs{per} · "
                f"{1000 * self.seconds:.0f} ms measured{measured}")


def generate(request: Request, count: int = 1, loops: int | None = None, progress: bool = False) -> Result:
    """``count`` samples of the request's class, all from its seed; cost measured around ``generate`` alone."""
    model, loops = request.model, request.loops if loops is None else loops
    labels = [request.label] * count
    gflops = float(model.generator.gflops_per_sample(loops=loops, steps=request.steps, guidance=request.guidance))
    start = time.perf_counter()
    samples = model.generator.generate(labels, loops=loops, steps=request.steps, guidance=request.guidance,
                                       seed=request.seed, progress=progress)
    return Result(samples=np.asarray(samples), loops=loops, gflops_per_sample=gflops,
                  seconds=time.perf_counter() - start)


# -- encoding -------------------------------------------------------------------------------------------------------
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
    """One image H×W×C → PNG bytes, one video T×H×W×C → looping animated GIF bytes; returns (bytes, suffix)."""
    from PIL import Image

    def to_pil(frame):
        return Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)

    buffer = io.BytesIO()
    if array.ndim == 4:
        frames = [to_pil(frame) for frame in array]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
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
