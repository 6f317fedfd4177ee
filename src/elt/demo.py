"""``elt demo``: the shipped small Fashion-MNIST models sampled at every loop count, measured on the spot.

For each shipped model (masked and diffusion) it generates a class-balanced set at L = 1 … L_max + 1 from
one checkpoint, scores it with the shipped Fashion-MNIST classifier (class accuracy), times it, and
writes a grid (rows = loop counts) plus a quality-vs-loops plot. Runs in under a minute on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from elt.errors import UserError
from elt.fileio import write_json, write_via

ASSETS = Path(__file__).parent / "assets" / "demo"
PARADIGMS = ("masked", "diffusion")


def shipped_models() -> dict[str, Path]:
    return {p: ASSETS / p for p in PARADIGMS if (ASSETS / p / "config.yaml").is_file()}


def run_demo(out: str | Path, paradigms: tuple[str, ...] = PARADIGMS, per_class: int = 4, seed: int = 0,
             extra_loops: int = 1, progress: bool = True) -> dict:
    """Sample, score and draw every shipped model; returns the record also written to ``demo.json``."""
    import torch
    from tqdm.auto import tqdm

    from elt.eval.classifier import load_classifier
    from elt.train.checkpoint import load_generator
    from elt.visual import save_grid

    models = shipped_models()
    missing = [p for p in paradigms if p not in models]
    if missing:
        raise UserError(f"no shipped demo model for {', '.join(missing)} (looked in {ASSETS})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classifier = load_classifier()
    record: dict = {"threads": torch.get_num_threads(), "per_class": per_class, "seed": seed, "models": {}}
    for paradigm in paradigms:
        generator = load_generator(models[paradigm])
        loops = list(range(1, generator.trained_loops + 1 + extra_loops))
        labels = np.tile(np.arange(generator.num_classes), per_class)
        rows, results = [], []
        for k in tqdm(loops, desc=f"{paradigm}: loop counts", disable=not progress):
            start = time.perf_counter()
            images = generator.generate(labels, loops=k, seed=seed)
            seconds = time.perf_counter() - start
            logits = classifier(images).logits
            accuracy = float((logits.argmax(1) == labels).mean())
            results.append({"loops": k, "class_accuracy": accuracy, "ms_per_sample": 1000 * seconds / len(labels),
                            "gflops_per_sample": float(generator.gflops_per_sample(loops=k))})
            rows.append(images[: 2 * generator.num_classes])  # two samples of every class, in class order
        grid = save_grid(out / f"{paradigm}_grid.png", rows,
                         [f"L={k}" + (" (trained)" if k == generator.trained_loops else "") for k in loops],
                         title=f"{paradigm}: one checkpoint, rows = loop count")
        record["models"][paradigm] = {"checkpoint": str(models[paradigm]), "trained_loops": generator.trained_loops,
                                      "unique_layers": generator.backbone.unique_layers, "grid": grid.name,
                                      "results": results}
    plot = plot_quality(record, out / "quality_vs_loops.png")
    record["plot"] = plot.name
    write_json(out / "demo.json", record)
    return record


def plot_quality(record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elt.eval.classifier import shipped_record

    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    real = (shipped_record() or {}).get("test_accuracy")
    if real:
        acc_ax.axhline(100 * real, color="black", ls="--", lw=1, label="real test images")
    for paradigm, info in record["models"].items():
        loops = [r["loops"] for r in info["results"]]
        acc_ax.plot(loops, [100 * r["class_accuracy"] for r in info["results"]], "o-", label=paradigm)
        time_ax.plot(loops, [r["ms_per_sample"] for r in info["results"]], "o-", label=paradigm)
        acc_ax.axvline(info["trained_loops"], color="grey", lw=0.8, ls=":")
    acc_ax.set(xlabel="loops L at sampling", ylabel="class accuracy (%)", ylim=(0, 100),
               title=f"quality vs loops ({record['per_class']} samples per class)")
    time_ax.set(xlabel="loops L at sampling", ylabel="ms per sample (this CPU)", title="cost vs loops")
    for ax in (acc_ax, time_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    write_via(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path
