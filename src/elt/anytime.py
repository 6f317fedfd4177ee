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
from elt.eval.calibrate import CALIBRATION_FILE, POINTER_FILE


class TargetError(UserError):
    """No calibrated point meets the target, or the target itself is invalid."""


def calibration_path(source: str | Path) -> Path:
    """``calibration.json`` itself, a folder holding it, or a run (or one of its checkpoint
    directories) that holds it or records where ``elt calibrate --out DIR`` wrote it
    (``calibration.pointer.json``, which wins: it is written by the newest calibration)."""
    path = Path(source)
    if path.is_file():
        return path
    folders = [path]
    if path.parent.name == "checkpoints":  # RUN/checkpoints/step_N → RUN
        folders.append(path.parent.parent)
    for folder in folders:
        pointed = pointed_calibration(folder / POINTER_FILE)
        if pointed is not None:
            return pointed
        if (folder / CALIBRATION_FILE).is_file():
            return folder / CALIBRATION_FILE
    raise TargetError(
        f"no {CALIBRATION_FILE} at {source}; run 'elt calibrate --ckpt {source}' first (or pass "
        "--calibration PATH)"
    )


def pointed_calibration(pointer: Path) -> Path | None:
    """The calibration a run's pointer file names (``None``: no pointer); a pointer to a file that
    is gone or unreadable is one line."""
    if not pointer.is_file():
        return None
    try:
        target = Path(json.loads(pointer.read_text())["calibration"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TargetError(f"cannot read {pointer}: {exc}".splitlines()[0]) from None
    if not target.is_file():
        raise TargetError(
            f"{pointer} points to {target}, which is gone; recalibrate (elt calibrate) or pass "
            "--calibration PATH"
        )
    return target


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
    quality = (
        "no quality measured"
        if point.get("fd_cls") is None
        else f"FD_cls {point['fd_cls']:.3g}"
        + (
            f", class acc {100 * point['class_acc']:.1f}%"
            if point.get("class_acc") is not None
            else ""
        )
    )
    gflops = point.get("gflops")
    return (
        f"loops {point['loops']} ({quality}, "
        + (f"{gflops:.3g} GFLOPs, " if gflops is not None else "")
        + (f"{latency:.0f} ms" if latency is not None else "latency not measured")
        + ")"
    )


def latency_only(record: dict) -> bool:
    """A calibration without quality figures (``elt calibrate --latency-only``)."""
    return bool(record.get("points")) and all(p.get("fd_cls") is None for p in record["points"])


def choose_latency_only(record: dict, budget_ms: float | None, fd_cls: float | None) -> dict:
    """``--budget-ms`` on a latency-only calibration: the point with the most mean loops within the
    budget (ties: the faster); ``--quality`` cannot be answered (one line)."""
    where = record.get("path", "the calibration")
    if fd_cls is not None:
        raise TargetError(
            f"{where} is a latency-only calibration (no FD_cls): --quality needs one measured "
            "with a classifier; recalibrate with 'elt calibrate --classifier CLS_DIR' (or use "
            "--budget-ms)"
        )
    points = [p for p in record["points"] if p.get("latency_ms") is not None]
    if not points:
        raise TargetError(f"{where} has no latency figures; recalibrate with --latency-only")
    within = [p for p in points if p["latency_ms"] <= budget_ms]
    if not within:
        fastest = min(points, key=lambda p: p["latency_ms"])
        raise TargetError(
            f"no calibrated point runs within {budget_ms:g} ms; the fastest is "
            f"{_describe(fastest)} ({where})"
        )

    def loops(p: dict) -> float:
        return p.get("mean_loops") if p.get("mean_loops") is not None else -math.inf

    chosen = max(within, key=lambda p: (loops(p), -p["latency_ms"]))
    return {**chosen, "calibration": where}


def choose_point(
    source: str | Path | dict, budget_ms: float | None = None, fd_cls: float | None = None
) -> dict:
    """The calibrated point for a target: with ``fd_cls`` alone the cheapest (lowest latency, then
    GFLOPs) point whose FD_cls is at most it; with ``budget_ms`` alone the best-quality point whose
    latency fits; with both the cheapest point meeting both. A latency-only calibration (no FD_cls
    anywhere) answers ``budget_ms`` with the point of most mean loops within it, and refuses
    ``fd_cls``. Raises :class:`TargetError` (one line naming the best available point)."""
    record = source if isinstance(source, dict) else load_calibration(source)
    for name, value in (("--budget-ms", budget_ms), ("--quality", fd_cls)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise TargetError(f"{name} must be a positive number, got {value}")
    if budget_ms is None and fd_cls is None:
        raise TargetError("give a target: budget_ms (latency) and/or fd_cls (quality)")
    if latency_only(record):
        return choose_latency_only(record, budget_ms, fd_cls)
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
