"""What a training phase tells the user on stderr: a start summary before the first step, the
measured time per step and for the whole phase once a few steps have run, and progress while it
runs. Shared by the model trainer (elt.train) and the tokenizer trainer (elt.tokenizers).

Progress is a tqdm bar when stderr is a terminal (and the bar is not turned off with
``--no-progress``); otherwise (a log file, a pipe, ``--no-progress``) it is one plain line every
``every`` steps (``logging.every``) and at least every :data:`LINE_INTERVAL_S` seconds, and at the
last step::

    elt: train step 300/1500  loss 0.4123  0.41 s/step  ETA 8m12s

The time estimate is measured on the real steps: the first step is left out (it pays one-time
costs: allocations, kernel selection, compilation), the next :data:`TIMED_STEPS` are timed, and the
estimate is printed once after them::

    elt: train: ~0.42 s/step (timed over steps 2-4), ~10m30s for 1500 steps"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

LINE_INTERVAL_S = 30.0  # without a terminal, a line at least this often (and every `every` steps)
TIMED_STEPS = 3  # steps timed for the estimate, after the first one

# Whether training reports on stderr (summary, estimate, plain progress lines). The training
# commands (elt train, elt tokenizer train) turn it on; the Python API (elt.train.trainer.train,
# Trainer.fit, train_tokenizer) stays quiet unless called inside ``reporting()`` (its progress bar
# is its own ``progress`` argument).
_REPORTING: ContextVar[bool] = ContextVar("elt_reporting", default=False)


@contextmanager
def reporting(enabled: bool = True) -> Iterator[None]:
    """Training inside this block prints its start summary, time estimate and progress lines."""
    token = _REPORTING.set(enabled)
    try:
        yield
    finally:
        _REPORTING.reset(token)


def is_reporting() -> bool:
    return _REPORTING.get()


def format_duration(seconds: float) -> str:
    """``42s``, ``8m12s``, ``2h05m``: a duration in its two largest units."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_count(n: int) -> str:
    """``950``, ``12.3k``, ``4.56M``: a parameter or item count for a one-line summary."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.3g}k"
    if n < 1_000_000_000:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e9:.3g}G"


def estimate_line(phase: str, step_s: float, steps: int, how: str) -> str:
    """``elt: tokenizer: ~0.42 s/step (timed over steps 2-4), ~14m00s for 2000 steps``."""
    return (
        f"elt: {phase}: ~{step_s:.3g} s/step ({how}), ~{format_duration(step_s * steps)} for "
        f"{steps} steps"
    )


def data_description(data, items: int | None) -> str:
    """One line on the data a phase trains on: name, root, items, classes, size, channels,
    frames."""
    frames = getattr(data, "frames", 0) or 0
    what = "clips" if frames else "images"
    parts = [str(data.name)]
    if getattr(data, "root", None):
        parts[0] += f" at {data.root}"
    if items is not None:
        parts.append(f"{items} {what}")
    if getattr(data, "num_classes", None):
        parts.append(f"{data.num_classes} classes")
    size = data.image_size
    parts.append(f"{size}x{size} px" if size else "size from the data")
    channels = data.channels
    parts.append(f"{channels} channel{'s' if channels != 1 else ''}" if channels else "")
    if frames:
        parts.append(f"{frames} frames")
    return ", ".join(p for p in parts if p)


def print_summary(title: str, rows: Iterable[tuple[str, str]], stream: TextIO | None = None):
    """The start summary of a phase: a title line, then one indented ``key: value`` line per
    row."""
    if not is_reporting():
        return
    stream = stream or sys.stderr
    lines = [f"elt: {title}"] + [f"elt:   {key}: {value}" for key, value in rows]
    print("\n".join(lines), file=stream, flush=True)


def parameter_counts(module, trainable: Iterable | None = None) -> str:
    """``1.23M parameters (456k trainable)``; ``trainable``: the parameters the optimizer steps
    (default: those with ``requires_grad``)."""
    total = sum(p.numel() for p in module.parameters())
    params = trainable if trainable is not None else module.parameters()
    train = sum(p.numel() for p in params if p.requires_grad)
    return f"{format_count(total)} parameters ({format_count(train)} trainable)"


def stderr_is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of one training phase from step ``initial`` to ``total``: a tqdm bar on a terminal
    (``bar=True``), else plain lines; and the one-time estimate after the first timed steps.

    Call :meth:`update` after every step with the new step count and the metrics to show (a dict,
    or a callable giving one: only called when a line or the bar's postfix is written). The
    estimate and the lines are written inside :func:`reporting` only (``enabled=None``), or as
    ``enabled`` says."""

    def __init__(
        self,
        phase: str,
        total: int,
        initial: int = 0,
        bar: bool = True,
        enabled: bool | None = None,
        every: int = 50,
        stream: TextIO | None = None,
        interval_s: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.phase, self.total, self.initial = phase, total, initial
        self.enabled = is_reporting() if enabled is None else enabled
        self.stream = stream or sys.stderr
        self.every, self.interval_s, self.clock = max(1, every), interval_s, clock
        self.use_bar = bar and stderr_is_terminal(self.stream)
        self._bar = None
        if self.use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=phase, dynamic_ncols=True, file=self.stream
            )
        self.step_s: float | None = None  # the measured time per step, once known
        self._first_done: float | None = None
        self._line_time = self._line_step = None

    def update(self, step: int, metrics: dict | Callable[[], dict] | None = None) -> None:
        """``step``: the number of steps done (initial + 1 after the first)."""
        now = self.clock()
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
        if step == self.initial + 1:  # the first step: one-time costs, not timed
            self._first_done = now
            self._line_time, self._line_step = now, step
        elif self.step_s is None and step == self.initial + 1 + TIMED_STEPS:
            self.step_s = (now - self._first_done) / TIMED_STEPS
            if self.enabled:
                self._write(
                    estimate_line(
                        self.phase,
                        self.step_s,
                        self.total - self.initial,
                        f"timed over steps {self.initial + 2}-{step}",
                    )
                )
        due = step % self.every == 0 or step == self.total
        if self._bar is not None:
            if due and metrics is not None:
                self._bar.set_postfix(_formatted(metrics))
            return
        if not self.enabled:
            return
        late = self._line_time is not None and now - self._line_time >= self.interval_s
        if due or late:
            self._write(self._line(step, now, metrics))
            self._line_time, self._line_step = now, step

    def _line(self, step: int, now: float, metrics) -> str:
        parts = [f"elt: {self.phase} step {step}/{self.total}"]
        parts += [f"{k} {v}" for k, v in _formatted(metrics).items()]
        rate = None
        if self._line_step is not None and step > self._line_step:
            rate = (now - self._line_time) / (step - self._line_step)
        rate = rate if rate is not None else self.step_s
        if rate is not None:
            parts.append(f"{rate:.3g} s/step")
            if step < self.total:
                parts.append(f"ETA {format_duration(rate * (self.total - step))}")
        return "  ".join(parts)

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _formatted(metrics) -> dict[str, str]:
    if metrics is None:
        return {}
    values = metrics() if callable(metrics) else metrics
    out = {}
    for key, value in values.items():
        if isinstance(value, float):
            out[key] = f"{value:.2f} dB" if key == "psnr" else f"{value:.4f}"
        else:
            out[key] = str(value)
    return out
