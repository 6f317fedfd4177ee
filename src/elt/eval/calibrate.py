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

Quality needs a domain classifier that takes the model's images: the shipped Fashion-MNIST one
(default), or ``--classifier CLS_DIR`` trained on the model's image folder (``elt eval
train-classifier --data DIR``). ``--latency-only`` measures cost alone (quality columns null); its
front is by compute bought: a point is on it when no other point runs at least as many mean loops
for at most the cost, and ``--budget-ms`` then picks the point with the most loops within the
budget. The model's image shape is checked against the classifier before anything is sampled.
When ``--out`` is not the run directory, the run gets a pointer to it (``calibration.pointer.json``)
so that ``elt sample --ckpt RUN --budget-ms X`` finds it.
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
POINTER_FILE = "calibration.pointer.json"  # in a run: where its latest calibration was written
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


def pareto(
    points: list[dict], cost: str, quality: str = "fd_cls", higher_is_better: bool = False
) -> list[bool]:
    """Flags: not dominated in (``cost`` lower, ``quality`` lower; higher with
    ``higher_is_better``)."""
    sign = -1.0 if higher_is_better else 1.0
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
            and sign * q[quality] <= sign * p[quality]
            and (q[cost] < p[cost] or sign * q[quality] < sign * p[quality])
            for q in points
        )
        flags.append(not dominated)
    return flags


class QualityProbe:
    """FD_cls and class accuracy in a domain classifier's features: the shipped one against the
    Fashion-MNIST test set, or ``classifier`` (weights, or a folder from ``elt eval
    train-classifier --data DIR``: against that folder's training split)."""

    def __init__(self, data_root=None, device="cpu", classifier=None):
        from elt.eval.folder_classifier import FolderClassifierFeatures
        from elt.eval.inputs import load_classifier
        from elt.eval.suites import DomainSuite

        extractor = load_classifier(classifier, device=device)
        if isinstance(extractor, FolderClassifierFeatures):
            self.suite = DomainSuite.from_folder_classifier(extractor)
        else:
            self.suite = DomainSuite.fashion_mnist(extractor, data_root=data_root)
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
    probe=None,
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
    """Measure every point; returns the record written to ``calibration.json``. ``probe=None``:
    latency and GFLOPs only (``fd_cls``/``class_acc`` null, front by mean loops bought).
    ``on_point(rows)`` is called after each point (``elt calibrate`` keeps a
    ``calibration.partial.json`` with it, so an interrupted calibration keeps what it measured)."""
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
        row.update(probe(images, labels) if probe is not None else NO_QUALITY)
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
    quality = ("fd_cls", False) if probe is not None else ("mean_loops", True)
    for key, flag in (("gflops", "pareto_gflops"), ("latency_ms", "pareto_latency")):
        for row, on in zip(rows, pareto(rows, key, *quality), strict=True):
            row[flag] = on
    cfg = generator.config
    import platform

    from elt.version import __version__

    provenance = {
        **(probe.provenance() if probe is not None else LATENCY_ONLY),
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


NO_QUALITY = {"fd_cls": None, "class_acc": None}
LATENCY_ONLY = {
    "suite": None,
    "latency_only": True,
    "front": "no other point runs at least as many mean loops for at most the cost",
}

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
    front_label = "Pareto front (FD_cls)"
    if all(p.get("fd_cls") is None for p in points):  # --latency-only
        metrics = [("mean_loops", "mean loops per sample-step")]
        front_label = "front (most loops for the cost)"
    fig, axes = plt.subplots(
        len(metrics), len(axes_x), figsize=(5.4 * len(axes_x), 3.8 * len(metrics)), squeeze=False
    )
    style = {"fixed L": ("o", "C0"), "schedule": ("s", "C1"), "adaptive exit": ("^", "C2")}
    for i, (key, ylabel) in enumerate(metrics):
        for j, (x_key, xlabel, flag) in enumerate(axes_x):
            ax = axes[i][j]
            for kind, (marker, color) in style.items():
                pts = [
                    p
                    for p in points
                    if point_kind(p["loops"]) == kind
                    and p.get(x_key) is not None
                    and p.get(key) is not None
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
            front = sorted(
                (p for p in points if p.get(flag) and p.get(key) is not None),
                key=lambda p: p[x_key],
            )
            if front:
                ax.plot(
                    [p[x_key] for p in front],
                    [p[key] for p in front],
                    "-",
                    color="0.5",
                    lw=1,
                    label=front_label,
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
    classifier: str | Path | None = None,
    latency_only: bool = False,
) -> tuple[dict, dict[str, Path]]:
    """``elt calibrate`` as a call: check the request against the checkpoint's config, choose the
    output folder (:func:`output_dir`; ``on_note(line)`` hears where it went when not ``out``),
    measure ``points`` (default: :func:`default_points`) while holding the run directory's lock, and
    write calibration.json, the Pareto table and plot. Returns (record, paths written).
    ``classifier`` scores quality in that classifier's space (``elt eval train-classifier --data
    DIR``); ``latency_only`` measures cost alone. The model's image shape is checked against the
    classifier from its config.yaml, before the weights are loaded. When ``out`` is not the run
    directory, a pointer to it is left in the run (:data:`POINTER_FILE`)."""
    from elt.eval.inputs import user_errors
    from elt.fileio import run_dir_lock
    from elt.inference.checkpoints import load_generator
    from elt.sampling import check_points, check_sampling_request

    check_sampling_request(ckpt, num, batch_size, points)  # config.yaml: before the weights
    out, note = output_dir(ckpt, None if out is None else str(out))
    if note and on_note is not None:
        on_note(note)
    with run_dir_lock(out):  # calibrating into a run directory: never while a training holds it
        check_quality_source(ckpt, classifier, latency_only, measure_latency)  # before the weights
        generator = load_generator(ckpt, device=device)
        points = points or default_points(generator)
        check_points(generator, points, steps)  # every schedule fits the steps before sampling
        partial = out / PARTIAL_FILE

        def keep(rows: list[dict]) -> None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(partial, {"checkpoint": str(ckpt), "points": rows})

        with user_errors():
            probe = None if latency_only else QualityProbe(data_root, device, classifier)
            record = calibrate(
                generator,
                points,
                probe,
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
    pointer = record_in_run(ckpt, paths["calibration"])
    if pointer is not None and on_note is not None:
        on_note(pointer)
    return record, paths


FMNIST_SHAPE = "grey 28 or 32 px images in 10 classes"


def check_quality_source(ckpt: str, classifier, latency_only: bool, measure_latency: bool) -> None:
    """Before any weights are loaded: a classifier that takes the model's images (the folder
    classifier's shape, or Fashion-MNIST's by default), or latency only — one line otherwise."""
    from omegaconf import OmegaConf

    from elt.errors import UserError
    from elt.eval.inputs import check_ckpts_fit_classifier
    from elt.inference.checkpoints import load_config_of

    if latency_only:
        if classifier is not None:
            raise UserError("give --classifier CLS_DIR or --latency-only, not both")
        if not measure_latency:
            raise UserError("--latency-only measures latency: drop --no-latency")
        return
    if check_ckpts_fit_classifier([ckpt], classifier) is not None:
        return  # a folder classifier that takes this model's images
    cfg = load_config_of(ckpt)
    size, channels, classes, frames = (
        OmegaConf.select(cfg, f"data.{key}", default=None)
        for key in ("image_size", "channels", "num_classes", "frames")
    )
    if (
        (frames or 0) > 0
        or size not in (None, 28, 32)
        or channels not in (None, 1)
        or classes not in (None, 10)
    ):
        made = (
            f"videos of {frames} frames"
            if frames
            else (f"{size}×{size}×{channels} images in {classes} classes")
        )
        raise UserError(
            f"{ckpt} makes {made}, not the Fashion-MNIST classifier's {FMNIST_SHAPE}: pass "
            "--classifier CLS_DIR (train one with 'elt eval train-classifier --data DIR') or "
            "--latency-only"
        )


def run_of(ckpt: str) -> Path | None:
    """The run directory of a checkpoint, or ``None`` for a shipped model (never written to)."""
    from elt.fileio import PACKAGE_DIR
    from elt.inference.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    if path.resolve().is_relative_to(PACKAGE_DIR):
        return None
    return path.parent.parent if path.parent.name == "checkpoints" else path


def record_in_run(ckpt: str, calibration: Path) -> str | None:
    """Point the run at ``calibration`` (``RUN/calibration.pointer.json``, written atomically) when
    it lies outside the run, or drop a stale pointer when it is the run's own; returns a note when
    the run could not be told."""
    from elt.fileio import write_json

    run = run_of(ckpt)
    if run is None:
        return None
    pointer = run / POINTER_FILE
    try:
        if calibration.resolve().parent == run.resolve():
            pointer.unlink(missing_ok=True)
            return None
        write_json(
            pointer,
            {
                "calibration": str(calibration.resolve()),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    except OSError as exc:  # a read-only run, or one a training holds: the flag still works
        return (
            f"could not record the calibration in {run} ({str(exc).splitlines()[0][:120]}); "
            f"pass --calibration {calibration.parent} to 'elt sample'"
        )
    return None


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
                "-" if p.get("fd_cls") is None else f"{p['fd_cls']:.3g}",
                "-" if p.get("class_acc") is None else f"{100 * p['class_acc']:.1f}%",
                "*" if p.get("pareto_gflops") else "",
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)
