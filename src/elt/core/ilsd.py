"""Intra-Loop Self Distillation (ILSD), paradigm-agnostic.

    loss = GT(teacher) + λ·GT(student) + (1−λ)·DIST(student, stopgrad(teacher))

The teacher is the head output after L_max loops, the student the head output after L_int loops of
the same forward pass. Paradigms supply the ground-truth and distillation losses; this module
supplies the combination, the λ schedule and the seeded draw of L_int.

Training modes (``ILSDConfig.mode``):
  * ``ilsd``    — the objective above (default).
  * ``vanilla`` — teacher ground-truth loss only: the paper's "vanilla looping" baseline.
  * ``unique``  — a non-looped stack of N·L unique layers (built by the model factory), teacher
    loss only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

MODES = ("ilsd", "vanilla", "unique")
LAMBDA_SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class ILSDTerms:
    """The total loss and its parts (detached copies for logging are taken by ``as_floats``)."""

    total: torch.Tensor
    teacher_gt: torch.Tensor
    student_gt: torch.Tensor | None = None
    distill: torch.Tensor | None = None
    lam: float = 1.0
    student_loops: int | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "teacher_gt": float(self.teacher_gt.detach())}
        if self.student_gt is not None:
            out["student_gt"] = float(self.student_gt.detach())
        if self.distill is not None:
            out["distill"] = float(self.distill.detach())
        out["lambda"] = self.lam
        if self.student_loops is not None:
            out["student_loops"] = self.student_loops
        return out


def ilsd_loss(
    teacher: torch.Tensor,
    student: torch.Tensor | None,
    gt_loss: Callable[[torch.Tensor], torch.Tensor],
    distill_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lam: float,
    student_loops: int | None = None,
) -> ILSDTerms:
    """Combine the ILSD terms.

    Args:
        teacher: head output after L_max loops (receives gradient only from its own ground-truth
            loss).
        student: head output after L_int loops, or ``None`` for the vanilla / unique modes.
        gt_loss: ``prediction → scalar`` loss against the ground truth.
        distill_loss: ``(student, teacher_detached) → scalar`` distillation loss.
        lam: weight of the student's ground-truth term; the distillation term gets ``1 − lam``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    teacher_gt = gt_loss(teacher)
    if student is None:
        return ILSDTerms(total=teacher_gt, teacher_gt=teacher_gt, lam=lam)
    student_gt = gt_loss(student)
    distill = distill_loss(student, teacher.detach())
    total = teacher_gt + lam * student_gt + (1.0 - lam) * distill
    return ILSDTerms(
        total=total,
        teacher_gt=teacher_gt,
        student_gt=student_gt,
        distill=distill,
        lam=lam,
        student_loops=student_loops,
    )


def ilsd_lambda(
    step: int, total_steps: int, schedule: str = "linear", start: float = 1.0, end: float = 0.0
) -> float:
    """λ at ``step`` of ``total_steps``: decays from ``start`` to ``end`` (linear by default, as the
    paper)."""
    if schedule not in LAMBDA_SCHEDULES:
        raise ValueError(
            f"unknown lambda schedule {schedule!r}; choose one of {', '.join(LAMBDA_SCHEDULES)}"
        )
    if schedule == "constant" or total_steps <= 1:
        return float(start)
    progress = min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "linear":
        weight = 1.0 - progress
    else:
        weight = 0.5 * (1.0 + math.cos(math.pi * progress))
    return float(end + (start - end) * weight)


class StudentLoopDraw:
    """Draws L_int ~ Uniform{min_loops, …, max_loops − 1} once per training step, from its own
    seeded generator (so resuming reproduces the draws, and data-loading randomness does not shift
    them)."""

    def __init__(self, max_loops: int, min_loops: int = 1, seed: int = 0):
        if max_loops < 2:
            raise ValueError(f"ILSD needs loops >= 2 to have a student (got loops={max_loops})")
        if not 1 <= min_loops < max_loops:
            raise ValueError(f"min_student_loops must lie in 1..{max_loops - 1}, got {min_loops}")
        self.min_loops = min_loops
        self.max_loops = max_loops
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> int:
        return int(torch.randint(self.min_loops, self.max_loops, (1,), generator=self.generator))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
