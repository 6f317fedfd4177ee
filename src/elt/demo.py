"""``elt demo``: what ILSD buys, measured on the spot with the small Fashion-MNIST models shipped in
the package.

For each paradigm (masked tokens and diffusion) two shipped models of the same architecture and
budget (3 unique layers × 4 loops): one trained with ILSD (``demo:masked``, ``demo:diffusion``) and
one with plain ("vanilla") looping (``demo:masked-vanilla``, ``demo:diffusion-vanilla``). Each
samples a class-balanced set at L = 1 … L_max + 1 from its single checkpoint; the shipped
Fashion-MNIST classifier scores the class accuracy (95 % Wilson intervals as error bars) and every
loop count is timed. It writes one grid per paradigm (ILSD beside vanilla, rows = loop counts,
columns = classes) and a quality-vs-loops plot.

Where the install ships it, ``demo:video`` (and ``demo:video-vanilla``), a masked model of 16-frame
moving Fashion-MNIST clips, adds an animated grid (``video_grid.gif``, a still ``video_grid.png``):
one clip per class at every loop count, classified frame by frame on the sprite's crop
(:mod:`elt.eval.video`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from elt.errors import UserError
from elt.fileio import write_json, write_via

ASSETS = Path(__file__).parent / "assets" / "demo"
PARADIGMS = ("masked", "diffusion")
VARIANTS = ("", "-vanilla")  # demo:<paradigm><variant>
VIDEO = "video"  # demo:video<variant>: the masked paradigm on moving Fashion-MNIST clips
DEFAULT_PER_CLASS = 5
VIDEO_PER_CLASS = (
    1  # a clip costs ~16 images' worth of tokens: one per class keeps the demo near a minute
)


def shipped_models() -> dict[str, Path]:
    """Shipped demo models by name (``masked``, ``masked-vanilla``, ...)."""
    from elt.inference.demo_models import demo_models

    return demo_models()


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (stays inside [0, 1], sane at 0 and
    n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# Denoising / decoding steps of the demo (each model's config default: masked 12, diffusion 25).
# Fewer steps keep the whole demo near a minute on 2 CPU cores; at these counts the shipped models'
# class accuracy is within the demo's own error bars of the defaults (docs/benchmarks.md). `elt
# sample`/`elt eval` use the config's.
DEMO_STEPS = {"masked": 6, "diffusion": 8, VIDEO: 6}


def default_jobs() -> int:
    """Worker processes: 2 where there are 2 CPUs or more (single-threaded processes do not stall
    each other on a shared machine, unlike threads of one process), else 1."""
    from elt.runtime import available_cpus

    return 2 if available_cpus() >= 2 else 1


def panel_of(name: str) -> str:
    """The demo panel a shipped model is drawn in: its name without the variant (masked, diffusion,
    video)."""
    return name.removesuffix(VARIANTS[1])


def demo_names(
    models: dict, paradigms: tuple[str, ...], vanilla: bool | None, video: bool | None
) -> list[str]:
    """The demo models to show, ILSD before vanilla per panel. ``vanilla``/``video``: None = where
    this install ships them, True = required (a missing one is reported by the caller), False = left
    out. Video is a masked-paradigm model, so it comes with ``masked`` only."""
    panels = list(paradigms)
    if "masked" in paradigms and (video or (video is None and VIDEO in models)):
        panels.append(VIDEO)
    return [
        p + v
        for p in panels
        for v in VARIANTS
        if not v or vanilla or (vanilla is None and p + v in models)
    ]


def run_demo(
    out: str | Path,
    paradigms: tuple[str, ...] = PARADIGMS,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    extra_loops: int = 1,
    progress: bool = True,
    vanilla: bool | None = None,
    jobs: int | None = None,
    video: bool | None = None,
) -> dict:
    """Sample, score and draw the shipped models; returns the record also written to ``demo.json``.
    ``vanilla``: also the vanilla-looped models (``None``: those this install ships). The record's
    ``vanilla`` lists the vanilla models shown. ``video``: the video models too (``None``: where
    shipped; with ``masked`` only). ``jobs``: processes sampling side by side (``None``:
    :func:`default_jobs`); every model is seeded on its own, so the images do not depend on it."""
    import torch

    models = shipped_models()
    names = demo_names(models, paradigms, vanilla, video)
    vanilla = [n for n in names if n.endswith(VARIANTS[1])]
    missing = [n for n in names if n not in models]
    if missing:
        raise UserError(
            f"no shipped demo model {', '.join('demo:' + n for n in missing)} "
            f"(shipped: {', '.join('demo:' + n for n in models) or 'none'})"
        )
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise UserError(f"jobs={jobs} must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    panels = list(dict.fromkeys(panel_of(n) for n in names))
    record: dict = {
        "threads": threads,
        "jobs": min(jobs, len(names)),
        "per_class": per_class,
        "seed": seed,
        "steps": {p: DEMO_STEPS[p] for p in panels},
        "vanilla": vanilla,
        "models": {},
    }
    groups = [
        names[i::jobs] for i in range(min(jobs, len(names)))
    ]  # ILSD models and vanilla ones apart
    sampled = _sample_groups(groups, per_class, seed, extra_loops, threads, progress)
    rows_of: dict[str, list[np.ndarray]] = {}
    for name in names:
        record["models"][name], rows_of[name] = sampled[name]
    for panel in panels:
        shown = {n: rows_of[n] for n in names if record["models"][n]["panel"] == panel}
        draw = draw_video_grid if panel == VIDEO else draw_grid
        grid = draw(record, shown, out / f"{panel}_grid.png", panel)
        for name in shown:
            record["models"][name]["grid"] = grid.name
    plot = plot_quality(record, out / "quality_vs_loops.png")
    record["plot"] = plot.name
    write_json(out / "demo.json", record)
    return record


def _sample_groups(
    groups: list[list[str]],
    per_class: int,
    seed: int,
    extra_loops: int,
    threads: int,
    progress: bool,
) -> dict:
    """The first group in this process (with progress bars), the others each in a spawned worker
    process."""
    if len(groups) == 1:
        return sample_models(groups[0], per_class, seed, extra_loops, threads, progress)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        len(groups) - 1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = [
            pool.submit(sample_models, g, per_class, seed, extra_loops, threads, False)
            for g in groups[1:]
        ]
        sampled = sample_models(groups[0], per_class, seed, extra_loops, threads, progress)
        if progress and not all(f.done() for f in futures):
            print(
                f"waiting for {', '.join('demo:' + n for g in groups[1:] for n in g)} (sampled in "
                f"{len(futures)} other process{'es' if len(futures) > 1 else ''})",
                flush=True,
            )
        for future in futures:
            sampled.update(future.result())
    return sampled


def sample_models(
    names: list[str], per_class: int, seed: int, extra_loops: int, threads: int, progress: bool
) -> dict[str, tuple[dict, list[np.ndarray]]]:
    """Each named shipped model at L = 1 … L_max + extra_loops (and its adaptive row if
    ILSD-trained): ``{name: (record entry, grid rows)}``. Runs in a worker process as well as in the
    caller's."""
    import torch
    from tqdm.auto import tqdm

    from elt.eval.classifier import load_classifier
    from elt.inference.checkpoints import load_generator

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    models = shipped_models()
    classifier = load_classifier()
    sampled = {}
    for name in names:
        generator = load_generator(models[name])
        cfg = generator.config
        panel = panel_of(name)
        video = panel == VIDEO
        steps = DEMO_STEPS[panel]
        loops = list(range(1, generator.trained_loops + 1 + extra_loops))
        labels = np.tile(np.arange(generator.num_classes), VIDEO_PER_CLASS if video else per_class)
        rows, results = [], []
        generator.generate(
            labels, loops=1, steps=1, seed=seed
        )  # warm-up: the first call's set-up is not timed
        for k in tqdm(loops, desc=f"demo:{name}: loop counts", disable=not progress, leave=False):
            start = time.perf_counter()
            images = generator.generate(labels, loops=k, steps=steps, seed=seed)
            seconds = time.perf_counter() - start
            correct = int((predicted_classes(images, classifier) == labels).sum())
            low, high = wilson_interval(correct, len(labels))
            results.append(
                {
                    "loops": k,
                    "class_accuracy": correct / len(labels),
                    "ci95": [low, high],
                    "n": len(labels),
                    "ms_per_sample": 1000 * seconds / len(labels),
                    "gflops_per_sample": float(generator.gflops_per_sample(loops=k, steps=steps)),
                }
            )
            rows.append(
                images[: generator.num_classes]
            )  # the first sample of every class, in class order
        entry = {
            "checkpoint": f"demo:{name}",
            "paradigm": cfg.paradigm,
            "panel": panel,
            "mode": cfg.ilsd.mode,
            "steps": steps,
            "trained_loops": generator.trained_loops,
            "unique_layers": generator.backbone.unique_layers,
            "results": results,
        }
        if (
            cfg.ilsd.mode == "ilsd" and not video
        ):  # the any-time row: each sample picks its own loops per step
            adaptive, adaptive_images = adaptive_row(
                generator, cfg.paradigm, labels, classifier, seed, steps
            )
            rows.append(adaptive_images[: generator.num_classes])
            entry["adaptive"] = adaptive
        sampled[name] = (entry, rows)
    return sampled


def predicted_classes(samples: np.ndarray, classifier) -> np.ndarray:
    """The classifier's class per image (N×H×W×C) or per clip (N×T×H×W×C: its frames' mean logits on
    the sprite crops, as ``elt eval video`` scores video accuracy)."""
    if samples.ndim == 5:
        from elt.eval.video import classify_frames

        return classify_frames(samples, classifier)[1].mean(axis=1).argmax(-1)
    return classifier(samples).logits.argmax(1)


# The adaptive-exit row: each sample stops looping at each step once its prediction stopped changing
# (docs/anytime.md); thresholds from the calibration of the shipped models.
DEMO_ADAPTIVE = {"masked": "exit:0.2", "diffusion": "exit:0.05"}


def adaptive_row(
    generator, paradigm: str, labels: np.ndarray, classifier, seed: int, steps: int | None = None
) -> tuple[dict, np.ndarray]:
    """Generate ``labels`` with the paradigm's adaptive exit; its scores, mean loops used and
    GFLOPs."""
    point = DEMO_ADAPTIVE[paradigm]
    start = time.perf_counter()
    images, used = generator.generate(
        labels, loops=point, steps=steps, seed=seed, return_loops=True
    )
    seconds = time.perf_counter() - start
    correct = int((classifier(images).logits.argmax(1) == labels).sum())
    return {
        "loops": point,
        "mean_loops": float(used.mean()),
        "class_accuracy": correct / len(labels),
        "ci95": list(wilson_interval(correct, len(labels))),
        "n": len(labels),
        "ms_per_sample": 1000 * seconds / len(labels),
        "gflops_per_sample": float(
            generator.gflops_per_sample(loops=point, loops_used=used, steps=steps)
        ),
    }, images


def _label(record: dict, name: str) -> str:
    info = record["models"][name]
    mode = "ILSD" if info["mode"] == "ilsd" else info["mode"]
    return f"{mode} (trained at L = {info['trained_loops']})"


def draw_grid(record: dict, panels: dict[str, list[np.ndarray]], path: Path, paradigm: str) -> Path:
    """Panels side by side (ILSD, vanilla), rows = loop counts, one column per class, class names on
    top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elt.data.fashion_mnist import CLASSES

    rows0 = next(iter(panels.values()))
    height = 4.6 * len(rows0) / rows0[0].shape[0] + 1.5
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), height), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels.items(), strict=True):
        info = record["models"][name]
        tiles = np.concatenate([np.concatenate(list(row[..., 0]), axis=1) for row in rows], axis=0)
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        size = rows[0].shape[1]
        ax.set_xticks([size * (i + 0.5) for i in range(rows[0].shape[0])])
        ax.set_xticklabels(
            [CLASSES[i] for i in range(rows[0].shape[0])], rotation=60, ha="left", fontsize=7
        )
        ax.xaxis.tick_top()
        ax.set_yticks([size * (i + 0.5) for i in range(len(rows))])
        results = info["results"]
        labels = [
            f"L={r['loops']}{' *' if r['loops'] == info['trained_loops'] else ''}\n"
            f"{100 * r['class_accuracy']:.0f}%"
            for r in results
        ]
        if info.get("adaptive"):
            a = info["adaptive"]
            labels.append(
                f"{a['loops']}\nmean L {a['mean_loops']:.1f}\n{100 * a['class_accuracy']:.0f}%"
            )
        ax.set_yticklabels(labels, fontsize=7)
        ax.tick_params(length=0)
        ax.set_xlabel(f"demo:{name} — {_label(record, name)}", fontsize=8)
    fig.suptitle(
        f"{paradigm}: one checkpoint each, rows = loops L at sampling, {record['steps'][paradigm]} "
        f"steps\n(* = trained L; % = class accuracy of {10 * record['per_class']} samples)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_video_grid(
    record: dict, panels: dict[str, list[np.ndarray]], path: Path, panel: str = VIDEO
) -> Path:
    """The video models' clips as one animated grid (``path`` with ``.gif``; ``path`` itself is the
    still of first / middle / last frames): per model, one row per loop count, one clip per
    class."""
    from elt.visual import save_video_grid

    rows, labels = [], []
    for name, model_rows in panels.items():
        info = record["models"][name]
        tag = "ILSD" if info["mode"] == "ilsd" else info["mode"]
        for row, r in zip(model_rows, info["results"], strict=True):
            rows.append(row)
            labels.append(
                f"{tag} L={r['loops']}{'*' if r['loops'] == info['trained_loops'] else ''} "
                f"{100 * r['class_accuracy']:.0f}%"
            )
    title = (
        f"{', '.join('demo:' + n for n in panels)}: one clip per class, {record['steps'][panel]} "
        "steps "
        "(* = trained L, % = clips recognised)"
    )
    save_video_grid(path, rows, labels, title=title, mp4=False)
    return path


def plot_quality(record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elt.eval.classifier import shipped_record

    paradigms = list(
        dict.fromkeys(info["panel"] for info in record["models"].values())
    )  # one plot per panel
    fig, axes = plt.subplots(
        1, len(paradigms) + 1, figsize=(4.4 * (len(paradigms) + 1), 3.8), squeeze=False
    )
    real = (shipped_record() or {}).get("test_accuracy")
    time_ax = axes[0][-1]
    for ax, paradigm in zip(axes[0], paradigms, strict=False):
        if real and paradigm != VIDEO:  # (real 20-px clips score lower: docs/results.md, video)
            ax.axhline(100 * real, color="black", ls="--", lw=1, label="real test images")
        trained = set()
        for name, info in record["models"].items():
            if info["panel"] != paradigm:
                continue
            res = info["results"]
            n = res[0]["n"]
            loops = [r["loops"] for r in res]
            acc = np.array([100 * r["class_accuracy"] for r in res])
            err = np.array(
                [
                    [
                        100 * (r["class_accuracy"] - r["ci95"][0]),
                        100 * (r["ci95"][1] - r["class_accuracy"]),
                    ]
                    for r in res
                ]
            ).T
            style = "o-" if info["mode"] == "ilsd" else "s--"
            shift = (
                -0.06 if info["mode"] == "ilsd" else 0.06
            )  # keep the two models' error bars apart
            ax.errorbar(
                [k + shift for k in loops],
                acc,
                yerr=err,
                fmt=style,
                capsize=3,
                label=_label(record, name),
            )
            line = time_ax.plot(
                loops, [r["ms_per_sample"] for r in res], style, label=f"{paradigm} {info['mode']}"
            )
            if info.get("adaptive"):  # drawn at its mean loop count
                a = info["adaptive"]
                color = line[0].get_color()
                ax.plot(
                    [a["mean_loops"]],
                    [100 * a["class_accuracy"]],
                    "*",
                    ms=11,
                    color="black",
                    label=f"ILSD {a['loops']} (mean L {a['mean_loops']:.1f})",
                )
                time_ax.plot([a["mean_loops"]], [a["ms_per_sample"]], "*", ms=11, color=color)
            trained.add(info["trained_loops"])
        for t in sorted(trained):
            ax.axvline(t, color="grey", lw=0.8, ls=":", label=f"trained L = {t}")
        ax.set(
            xlabel="loops L at sampling",
            ylabel="class accuracy (%)",
            ylim=(0, 100),
            title=f"{paradigm} ({n} samples per L, 95% CI)",
        )
    time_ax.set(
        xlabel="loops L at sampling",
        ylabel="ms per sample or clip (this CPU)",
        title="cost vs loops",
    )
    for ax in axes[0]:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    write_via(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path
