"""Pick an operating point from a calibration: the cheapest one that meets a quality target, or the
best one that fits a latency budget (``calibration.json`` written by ``elt calibrate``).

    import elt
    from elt.anytime import choose_loops
    generator = elt.load("runs/fmnist_diffusion")
    images = generator.generate(labels, loops=choose_loops("runs/fmnist_diffusion", budget_ms=300))

Latency is what ``elt calibrate`` measured on its machine: the median time of one ``generate`` call
for a batch of ``latency_batch`` samples (recorded in the file); quality is FD_cls (lower is better)
of the shipped domain classifier, with class accuracy beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from elt.errors import UserError
from elt.eval.calibrate import CALIBRATION_FILE


class TargetError(UserError):
    """No calibrated point meets the target, or the target itself is invalid."""


def calibration_path(source: str | Path) -> Path:
    """``calibration.json`` itself, a folder holding it, or a checkpoint directory of a run that
    holds it."""
    path = Path(source)
    if path.is_file():
        return path
    candidates = [path / CALIBRATION_FILE]
    if path.parent.name == "checkpoints":  # RUN/checkpoints/step_N → RUN
        candidates.append(path.parent.parent / CALIBRATION_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TargetError(
        f"no {CALIBRATION_FILE} at {source}; run 'elt calibrate --ckpt {source}' first (or pass "
        "--calibration PATH)"
    )


def load_calibration(source: str | Path) -> dict:
    path = calibration_path(source)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TargetError(f"cannot read {path}: {exc}".splitlines()[0]) from exc
    check_record(record, path)
    record["path"] = str(path)
    return record


NUMBER_FIELDS = ("fd_cls", "latency_ms", "gflops", "class_acc")


def check_record(record, path) -> None:
    """The shape ``elt calibrate`` writes: ``{"points": [{"loops": POINT, "fd_cls": x, ...}, ...]}``
    with every ``loops`` a valid operating point and every figure a number or null; anything else is
    one line."""
    from elt.core.schedule import as_point

    if not isinstance(record, dict):
        raise TargetError(
            f"{path} is not a calibration (expected a JSON object with 'points', got "
            f"{type(record).__name__})"
        )
    points = record.get("points")
    if not points:
        raise TargetError(f"{path} holds no calibrated points")
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise TargetError(f"{path}: 'points' must be a list of objects (one per calibrated point)")
    for i, point in enumerate(points):
        loops = point.get("loops")
        if not isinstance(loops, (int, str)) or isinstance(loops, bool):
            raise TargetError(f"{path}: point {i} has no valid 'loops' (got {str(loops)[:40]!r})")
        try:
            as_point(loops)
        except UserError as exc:
            raise TargetError(f"{path}: point {i}: {exc}") from None
        for key in NUMBER_FIELDS:
            value = point.get(key)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise TargetError(
                    f"{path}: point {i} has {key}={str(value)[:40]!r}; expected a finite number or "
                    "null"
                )


def _describe(point: dict) -> str:
    latency = point.get("latency_ms")
    return (
        f"loops {point['loops']} (FD_cls {point.get('fd_cls', float('nan')):.3g}, class acc "
        f"{100 * point.get('class_acc', float('nan')):.1f}%, "
        f"{point.get('gflops', float('nan')):.3g} GFLOPs, "
        + (f"{latency:.0f} ms" if latency is not None else "latency not measured")
        + ")"
    )


def choose_point(
    source: str | Path | dict, budget_ms: float | None = None, fd_cls: float | None = None
) -> dict:
    """The calibrated point for a target: with ``fd_cls`` alone the cheapest (lowest latency, then
    GFLOPs) point whose FD_cls is at most it; with ``budget_ms`` alone the best-quality point whose
    latency fits; with both the cheapest point meeting both. Raises :class:`TargetError` (one line
    naming the best available point)."""
    record = source if isinstance(source, dict) else load_calibration(source)
    for name, value in (("--budget-ms", budget_ms), ("--quality", fd_cls)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise TargetError(f"{name} must be a positive number, got {value}")
    if budget_ms is None and fd_cls is None:
        raise TargetError("give a target: budget_ms (latency) and/or fd_cls (quality)")
    points = [p for p in record["points"] if p.get("fd_cls") is not None]
    if not points:
        raise TargetError(
            f"{record.get('path', 'the calibration')} has no point with an FD_cls figure; "
            "recalibrate"
        )
    if budget_ms is not None and any(p.get("latency_ms") is None for p in points):
        raise TargetError(
            f"{record.get('path', 'the calibration')} has no latency figures; recalibrate without "
            "--no-latency"
        )

    def cost(p: dict) -> tuple:
        return (
            p.get("latency_ms") if p.get("latency_ms") is not None else math.inf,
            p.get("gflops", math.inf),
        )

    fits = [
        p
        for p in points
        if (budget_ms is None or p["latency_ms"] <= budget_ms)
        and (fd_cls is None or p["fd_cls"] <= fd_cls)
    ]
    where = record.get("path", "the calibration")
    if not fits:
        if fd_cls is not None and budget_ms is None:
            best = min(points, key=lambda p: (p["fd_cls"], cost(p)))
            raise TargetError(
                f"no calibrated point reaches FD_cls <= {fd_cls:g}; the best is {_describe(best)} "
                f"({where})"
            )
        if budget_ms is not None and fd_cls is None:
            best = min(points, key=cost)
            raise TargetError(
                f"no calibrated point runs within {budget_ms:g} ms; the fastest is "
                f"{_describe(best)} "
                f"({where})"
            )
        within = [p for p in points if p["latency_ms"] <= budget_ms]
        best = min(within, key=lambda p: p["fd_cls"]) if within else min(points, key=cost)
        raise TargetError(
            f"no calibrated point meets FD_cls <= {fd_cls:g} within {budget_ms:g} ms; the closest "
            "is "
            f"{_describe(best)} ({where})"
        )
    if fd_cls is None:
        chosen = min(fits, key=lambda p: (p["fd_cls"], cost(p)))
    else:
        chosen = min(fits, key=cost)
    return {**chosen, "calibration": where}


def choose_loops(
    source: str | Path | dict, budget_ms: float | None = None, fd_cls: float | None = None
) -> str:
    """The ``loops`` value (operating point in the ``--loops`` grammar) of :func:`choose_point`."""
    return str(choose_point(source, budget_ms=budget_ms, fd_cls=fd_cls)["loops"])
