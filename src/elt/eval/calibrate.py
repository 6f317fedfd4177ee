"""``elt calibrate``: measure a grid of operating points of one checkpoint on this machine, write
the quality-vs-cost Pareto front and ``calibration.json`` (what ``elt sample --budget-ms/--quality``
and :func:`elt.anytime.choose_point` read).

For every point (fixed L, loop schedules, adaptive exits) it generates ``num`` class-balanced
samples at ``batch_size`` and records

* quality: FD_cls against the Fashion-MNIST test set and class accuracy, in the shipped domain
  classifier;
* cost: GFLOPs per sample counted from the loops actually run (adaptive exits: per sample and step),
  mean loops per sample-step, throughput of the bulk generation (ms per sample at ``batch_size``),
  and latency (median wall time of one ``generate`` call of ``latency_batch`` samples after a
  warm-up).

A point is on the front when no other point is at least as good in FD_cls and at least as cheap
(GFLOPs;
separately: latency), and strictly better in one.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import numpy as np

from elt.fileio import write_json, write_text

CALIBRATION_FILE = "calibration.json"  # what elt.anytime.choose_point reads
FRONT_STEM = "pareto"
PARTIAL_FILE = "calibration.partial.json"  # the points measured so far, while a calibration runs


def default_points(generator) -> list[str]:
    """Fixed 1..L_max, two ramps, three adaptive thresholds (the paradigm's own change measure)."""
    top = int(generator.trained_loops)
    thresholds = {"masked": (0.1, 0.2, 0.3), "diffusion": (0.03, 0.05, 0.1)}
    paradigm = str(getattr(getattr(generator, "config", None), "paradigm", "diffusion"))
    points = [str(k) for k in range(1, top + 1)] + [f"{top}:1", f"1:{top}"]
    points += [f"exit:{t:g}" for t in thresholds.get(paradigm, thresholds["diffusion"])]
    return points


def pareto(points: list[dict], cost: str, quality: str = "fd_cls") -> list[bool]:
    """Flags: not dominated in (``cost`` lower, ``quality`` lower)."""
    flags = []
    for p in points:
        if p.get(cost) is None or p.get(quality) is None:
            flags.append(False)
            continue
        dominated = any(
            q is not p
            and q.get(cost) is not None
            and q.get(quality) is not None
            and q[cost] <= p[cost]
            and q[quality] <= p[quality]
            and (q[cost] < p[cost] or q[quality] < p[quality])
            for q in points
        )
        flags.append(not dominated)
    return flags


class QualityProbe:
    """FD_cls and class accuracy in the shipped classifier's features; reference = Fashion-MNIST
    test set."""

    def __init__(self, data_root=None, device="cpu"):
        from elt.eval.classifier import load_classifier
        from elt.eval.suites import DomainSuite

        self.suite = DomainSuite.fashion_mnist(load_classifier(device=device), data_root=data_root)
        self.suite.reference_stats()

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict:
        from elt.eval.metrics import class_accuracy

        fake = self.suite.features(images)
        return {
            "fd_cls": float(self.suite.frechet(fake.features)),
            "class_acc": float(class_accuracy(fake.logits, labels)),
        }

    def provenance(self) -> dict:
        return self.suite.provenance()


def calibrate(
    generator,
    points: list,
    probe,
    num: int = 200,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 64,
    latency_batch: int = 1,
    latency_repeats: int = 3,
    measure_latency: bool = True,
    progress: bool = True,
    on_point=None,
) -> dict:
    """Measure every point; returns the record written to ``calibration.json``. ``on_point(rows)``
    is called after each point (``elt calibrate`` keeps a ``calibration.partial.json`` with it, so
    an interrupted calibration keeps what it measured)."""
    import torch
    from tqdm.auto import tqdm

    from elt.core.schedule import point_label
    from elt.eval.sweep import measure_latency as latency_of
    from elt.sampling import balanced_labels, generate_batched, loops_summary

    labels = balanced_labels(num, generator.num_classes)
    rows = []
    bar = tqdm(points, desc="calibrate", disable=not progress)
    for point in bar:
        label = point_label(point)
        bar.set_postfix_str(f"loops {label}")
        start = time.perf_counter()
        images, used = generate_batched(
            generator,
            labels,
            point,
            batch_size=batch_size,
            seed=seed,
            steps=steps,
            guidance=guidance,
            progress=progress,
            desc=f"loops {label}",
            return_loops=True,
        )
        seconds = time.perf_counter() - start
        row = {
            "loops": label,
            "n": num,
            "mean_loops": loops_summary(used)["mean"],
            "loops_per_step": loops_summary(used)["per_step"],
            "gflops": float(generator.gflops_per_sample(point, steps, guidance, loops_used=used)),
            "ms_per_sample": 1000 * seconds / num,
            "samples_per_s": num / seconds,
            "batch_size": batch_size,
        }
        row.update(probe(images, labels))
        if measure_latency:
            timing = latency_of(
                generator,
                point,
                steps,
                guidance,
                batch=latency_batch,
                repeats=latency_repeats,
                seed=seed,
            )
            row.update(
                latency_ms=timing["latency_ms"],
                latency_batch=latency_batch,
                latency_calls=timing["latency_calls"],
            )
        rows.append(row)
        if on_point is not None:
            on_point(rows)
    for key, flag in (("gflops", "pareto_gflops"), ("latency_ms", "pareto_latency")):
        for row, on in zip(rows, pareto(rows, key), strict=True):
            row[flag] = on
    cfg = generator.config
    import platform

    from elt.version import __version__

    provenance = {
        **probe.provenance(),
        "n": num,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "paradigm": str(cfg.paradigm),
        "trained_loops": int(generator.trained_loops),
        "batch_size": batch_size,
        "latency": {
            "batch": latency_batch,
            "min_repeats": latency_repeats,
            "statistic": "median of generate() calls after 1 warm-up",
        },
        "device": str(generator.device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "elt": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {"provenance": provenance, "points": rows}


CSV_COLUMNS = [
    "loops",
    "gflops",
    "mean_loops",
    "latency_ms",
    "latency_batch",
    "ms_per_sample",
    "samples_per_s",
    "fd_cls",
    "class_acc",
    "n",
    "pareto_gflops",
    "pareto_latency",
]


def write_calibration(record: dict, out: Path, checkpoint: str) -> dict[str, Path]:
    """calibration.json (every point), pareto.json / pareto.csv (the GFLOPs front; the CSV has every
    point with its flags) and pareto.png, each written under a temporary name and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    record = {**record, "checkpoint": checkpoint}
    paths = {
        "calibration": out / CALIBRATION_FILE,
        "json": out / f"{FRONT_STEM}.json",
        "csv": out / f"{FRONT_STEM}.csv",
        "png": out / f"{FRONT_STEM}.png",
    }
    front = {
        "provenance": record["provenance"],
        "checkpoint": checkpoint,
        "front_gflops": [p for p in record["points"] if p.get("pareto_gflops")],
        "front_latency": [p for p in record["points"] if p.get("pareto_latency")],
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in record["points"]:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in CSV_COLUMNS})
    plot_front(record, paths["png"])
    write_text(paths["csv"], buffer.getvalue())
    write_json(paths["json"], front)
    write_json(paths["calibration"], record)
    return paths


def point_kind(label: str) -> str:
    if label.startswith("exit"):
        return "adaptive exit"
    return "fixed L" if label.isdigit() else "schedule"


def plot_front(record: dict, path: Path, title: str | None = None) -> Path:
    """FD_cls and class accuracy against GFLOPs and latency; fixed L, schedules and adaptive exits
    marked apart, the GFLOPs (resp. latency) front as a line."""
    from elt.eval.plots import plt, save_figure

    points = record["points"]
    axes_x = [("gflops", "GFLOPs per sample", "pareto_gflops")]
    if any(p.get("latency_ms") is not None for p in points):
        axes_x.append(
            (
                "latency_ms",
                f"latency (ms, batch {points[0].get('latency_batch', '?')})",
                "pareto_latency",
            )
        )
    metrics = [("fd_cls", "FD_cls (lower is better)"), ("class_acc", "class accuracy")]
    fig, axes = plt.subplots(
        len(metrics), len(axes_x), figsize=(5.4 * len(axes_x), 3.8 * len(metrics)), squeeze=False
    )
    style = {"fixed L": ("o", "C0"), "schedule": ("s", "C1"), "adaptive exit": ("^", "C2")}
    for i, (key, ylabel) in enumerate(metrics):
        for j, (x_key, xlabel, flag) in enumerate(axes_x):
            ax = axes[i][j]
            for kind, (marker, color) in style.items():
                pts = [
                    p for p in points if point_kind(p["loops"]) == kind and p.get(x_key) is not None
                ]
                if pts:
                    ax.scatter(
                        [p[x_key] for p in pts],
                        [p[key] for p in pts],
                        marker=marker,
                        color=color,
                        label=kind,
                    )
                    for p in pts:
                        ax.annotate(
                            p["loops"],
                            (p[x_key], p[key]),
                            textcoords="offset points",
                            xytext=(4, 3),
                            fontsize=7,
                            color=color,
                        )
            front = sorted((p for p in points if p.get(flag)), key=lambda p: p[x_key])
            if front:
                ax.plot(
                    [p[x_key] for p in front],
                    [p[key] for p in front],
                    "-",
                    color="0.5",
                    lw=1,
                    label="Pareto front (FD_cls)",
                )
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    prov = record["provenance"]
    fig.suptitle(
        title
        or f"{prov.get('paradigm', '')}: quality vs compute, N={prov.get('n')} per point "
        f"({prov.get('threads')} threads, {prov.get('device')})",
        fontsize=10,
    )
    return save_figure(fig, path)


def output_dir(ckpt: str, out: str | None) -> tuple[Path, str | None]:
    """``out``, else the run directory when writable (else ./calibration-<run name>, with a note); a
    shipped model (``demo:NAME``) or any checkpoint inside the installed package gets
    ``./calibration-NAME`` (nothing is written into the package). The folder is checked to be
    writable (one line naming ``--out``) before any work."""
    from elt.fileio import PACKAGE_DIR, check_output_dir
    from elt.inference.checkpoints import resolve_checkpoint

    if out is None:
        source = resolve_checkpoint(ckpt).resolve()
        if source.is_relative_to(PACKAGE_DIR):
            folder = Path(f"calibration-{source.name}")
            check_output_dir(folder, "--out")
            return folder, (
                f"{ckpt} is a model shipped inside the elt package, which is never written to: "
                f"writing to {folder.resolve()} (choose another folder with --out)"
            )
    if out:
        folder, note = Path(out), None
    else:
        path = resolve_checkpoint(ckpt)
        run = path.parent.parent if path.parent.name == "checkpoints" else path
        folder, note = run, None
        if not os.access(run, os.W_OK):
            folder = Path(f"calibration-{run.name}")
            note = f"{run} is not writable: writing to {folder.resolve()}"
    check_output_dir(folder, "--out")
    return folder, note


def calibrate_checkpoint(
    ckpt: str,
    out: str | Path | None = None,
    points: list | None = None,
    num: int = 200,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    latency_batch: int = 1,
    latency_repeats: int = 3,
    measure_latency: bool = True,
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    on_note=None,
) -> tuple[dict, dict[str, Path]]:
    """``elt calibrate`` as a call: check the request against the checkpoint's config, choose the
    output folder (:func:`output_dir`; ``on_note(line)`` hears where it went when not ``out``),
    measure ``points`` (default: :func:`default_points`) while holding the run directory's lock, and
    write calibration.json, the Pareto table and plot. Returns (record, paths written)."""
    from elt.eval.inputs import user_errors
    from elt.fileio import run_dir_lock
    from elt.inference.checkpoints import load_generator
    from elt.sampling import check_points, check_sampling_request

    check_sampling_request(ckpt, num, batch_size, points)  # config.yaml: before the weights
    out, note = output_dir(ckpt, None if out is None else str(out))
    if note and on_note is not None:
        on_note(note)
    with run_dir_lock(out):  # calibrating into a run directory: never while a training holds it
        generator = load_generator(ckpt, device=device)
        points = points or default_points(generator)
        check_points(generator, points, steps)  # every schedule fits the steps before sampling
        partial = out / PARTIAL_FILE

        def keep(rows: list[dict]) -> None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(partial, {"checkpoint": str(ckpt), "points": rows})

        with user_errors():
            record = calibrate(
                generator,
                points,
                QualityProbe(data_root, device=device),
                num=num,
                seed=seed,
                steps=steps,
                guidance=guidance,
                batch_size=batch_size,
                latency_batch=latency_batch,
                latency_repeats=latency_repeats,
                measure_latency=measure_latency,
                progress=progress,
                on_point=keep,
            )
        paths = write_calibration(record, out, str(ckpt))
        partial.unlink(missing_ok=True)
    return record, paths


def format_points(record: dict) -> str:
    """The measured points as a text table (``*``: on the GFLOPs front)."""
    head = ["loops", "GFLOPs", "mean L", "latency ms", "ms/sample", "FD_cls", "class acc", "front"]
    lines = [head]
    for p in record["points"]:
        lines.append(
            [
                p["loops"],
                f"{p['gflops']:.3g}",
                f"{p['mean_loops']:.2f}",
                "-" if p.get("latency_ms") is None else f"{p['latency_ms']:.0f}",
                f"{p['ms_per_sample']:.1f}",
                f"{p['fd_cls']:.3g}",
                f"{100 * p['class_acc']:.1f}%",
                "*" if p.get("pareto_gflops") else "",
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)
