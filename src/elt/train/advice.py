"""Advice where a value is legal but surely a mistake: one warning line each, and the run goes on.

* before training (:func:`before_fit`): a warm-up longer than the run, a batch larger than the data,
  a data limit below the number of classes;
* while training (:class:`DivergenceWatch`): the loss grows past :data:`DIVERGENCE_FACTOR` times its
  value at the first step of this process (e.g. ``optimizer.lr=1e9``: 1.4 → 2e21); one line naming
  the step, once.
"""

from __future__ import annotations

import math
import sys

DIVERGENCE_FACTOR = (
    100.0  # a healthy run's loss stays far below 100x its first value (ILSD, MSE, CE alike)
)
DIVERGENCE_FLOOR = (
    0.01  # reference losses below this count as this (a tiny first loss is not a tight bound)
)


def warn(message: str) -> None:
    print(f"elt: warning: {message}", file=sys.stderr)


def fit_advice(cfg, data_items: int | None, global_batch: int | None, step: int = 0) -> list[str]:
    """The warnings for a run about to train from ``step`` (empty: nothing looks wrong)."""
    lines = []
    train, warmup = cfg.train, cfg.lr_schedule.warmup_steps
    if warmup > train.steps and step < train.steps:
        lines.append(
            f"lr_schedule.warmup_steps={warmup} is longer than the run "
            f"(train.steps={train.steps}): "
            f"the learning rate never reaches optimizer.lr={cfg.optimizer.lr:g}"
        )
    if data_items is not None and train.batch_size > data_items:
        lines.append(
            f"train.batch_size={train.batch_size} is larger than the data ({data_items} items): "
            "every step "
            f"uses a global batch of {global_batch}"
        )
    limit = cfg.data.limit
    if limit is not None and limit < cfg.data.num_classes:
        lines.append(
            f"data.limit={limit} keeps fewer training items than the {cfg.data.num_classes} "
            "classes: some "
            "classes are never seen"
        )
    return lines


def before_fit(trainer) -> None:
    """Print :func:`fit_advice` for a trainer (main process only)."""
    if not trainer.env.is_main:
        return
    items = len(trainer.dataset) if hasattr(trainer.dataset, "__len__") else None
    for line in fit_advice(
        trainer.cfg, items, getattr(trainer, "global_batch", None), trainer.step
    ):
        warn(line)


class DivergenceWatch:
    """Warns once when the loss grows past ``DIVERGENCE_FACTOR`` × the first loss it saw."""

    def __init__(self, enabled: bool = True, factor: float = DIVERGENCE_FACTOR):
        self.enabled, self.factor = enabled, factor
        self.first: tuple[int, float] | None = None
        self.warned = False

    def bound(self) -> float | None:
        return (
            None if self.first is None else self.factor * max(abs(self.first[1]), DIVERGENCE_FLOOR)
        )

    def update(self, step: int, loss: float, lr: float | None = None) -> str | None:
        """Feed one step's loss; returns (and prints) the warning the first time the loss passes the
        bound."""
        if self.warned or not self.enabled:
            return None
        if self.first is None:
            if math.isfinite(loss):
                self.first = (step, float(loss))
            return None
        if (
            not float(loss) > self.bound()
        ):  # NaN too: non-finite losses are the trainer's error, not a warning
            return None
        self.warned = True
        first_step, first_loss = self.first
        message = (
            f"the loss grew past {self.bound():.3g} ({self.factor:g}x its {first_loss:.3g} at step "
            f"{first_step}) at step {step} (loss {float(loss):.3g}): the run is diverging; lower "
            "optimizer.lr"
            + (f" (now {lr:g})" if lr is not None else "")
            + " or lengthen lr_schedule.warmup_steps"
        )
        warn(message)
        return message
