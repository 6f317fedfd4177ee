"""Summarise the Fashion-MNIST ablations and width ladder (docs/results.md, "What closes the gap").

Reads the ``eval.json`` files that ``scripts/fmnist_study.sh`` writes under OUT/<paradigm>/runs/ and
prints two markdown tables: each looped model at every evaluated L beside the 12-layer unique stack
trained the same way, and the width ladder (FD_cls of ELT 3x4 at L_max over that of the iso-FLOP
unique stack, per width). Writes the figures to OUT/<paradigm>/ablations.json and the ladder plot to
OUT/<paradigm>/width_ladder.png.

    python scripts/fmnist_ablation_table.py results/ablations --paradigm diffusion
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elt.fileio import write_json, write_via

# model key → (the unique stack it is compared with, its L_max)
ABLATIONS = {
    "ilsd": ("unique12", 4),
    "inject": ("unique12", 4),
    "loopemb": ("unique12", 4),
    "cosine": ("unique12", 4),
    "n6x2": ("unique12", 2),
    "long2": ("unique12_long2", 4),
    "inject_long2": ("unique12_long2", 4),
    "ilsd_s1": ("unique12_s1", 4),
    "inject_s1": ("unique12_s1", 4),
    "inject_lam1": ("unique12", 4),
    "inject_min2": ("unique12", 4),
    "inject_lamcos": ("unique12", 4),
    "inject_lam1_s1": ("unique12_s1", 4),
}
# width → (unique stack, {series: ELT 3x4 model key})
LADDER = {
    96: ("unique12_w96", {"ELT 3x4 ILSD": "ilsd_w96", "with input injection": "inject_w96"}),
    192: ("unique12", {"ELT 3x4 ILSD": "ilsd", "with input injection": "inject"}),
    288: ("unique12_w288", {"ELT 3x4 ILSD": "ilsd_w288", "with input injection": "inject_w288"}),
}


def load_rows(runs: Path) -> dict[str, list[dict]]:
    """model key → its evaluated rows (one per L), from every ``<key>_L...`` folder."""
    found: dict[str, list[dict]] = {}
    for path in sorted(runs.glob("*/eval.json")):
        key = path.parent.name.rsplit("_L", 1)[0]
        found.setdefault(key, []).extend(json.loads(path.read_text())["rows"])
    return {k: sorted(v, key=lambda r: r["loops"]) for k, v in found.items()}


def at(rows: list[dict], loops: int) -> dict | None:
    return next((r for r in rows if r["loops"] == loops), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the study's OUT folder (holds <paradigm>/runs/)")
    parser.add_argument("--paradigm", default="diffusion", choices=["masked", "diffusion"])
    parser.add_argument(
        "--suffix",
        action="append",
        default=None,
        help="SUFFIX of rows that fmnist_study.sh scored with other sampling settings "
        "(SAMPLING=...), "
        "compared with the unique stack sampled the same way; repeatable (default: _guided)",
    )
    args = parser.parse_args(argv)
    runs = args.out / args.paradigm / "runs"
    if not runs.is_dir():
        print(
            f"error: no evaluated runs under {runs}: run scripts/fmnist_study.sh first",
            file=sys.stderr,
        )
        return 2
    rows = load_rows(runs)
    summary: dict = {"ablations": {}, "ladder": {}}

    print(
        "| model | params (M) | L_max | FD_cls at L = 1, 2, …, L_max+1 | class acc at L_max "
        "| FD_cls / unique stack at L_max |"
    )
    print("|---|---|---|---|---|---|")
    compared = dict(ABLATIONS)
    for suffix in args.suffix or ["_guided"]:
        compared.update(
            {key + suffix: (ref + suffix, lmax) for key, (ref, lmax) in ABLATIONS.items()}
        )
    for key, (ref_key, lmax) in compared.items():
        if key not in rows or ref_key not in rows:
            continue
        ref, top = rows[ref_key][0], at(rows[key], lmax)
        if top is None:
            continue
        curve = [r for r in rows[key] if r["loops"] <= lmax + 1]
        ratio = top["fd_cls"] / ref["fd_cls"]
        summary["ablations"][key] = {
            "name": top["model"],
            "params_m": top["params_m"],
            "lmax": lmax,
            "fd_cls": {r["loops"]: r["fd_cls"] for r in curve},
            "class_acc": {r["loops"]: r["class_acc"] for r in curve},
            "reference": ref["model"],
            "reference_fd_cls": ref["fd_cls"],
            "reference_class_acc": ref["class_acc"],
            "ratio_at_lmax": ratio,
        }
        fds = " / ".join(f"{r['fd_cls']:.1f}" for r in curve)
        print(
            f"| {top['model']} | {top['params_m']:.2f} | {lmax} | {fds} "
            f"| {100 * top['class_acc']:.1f} % "
            f"| {ratio:.2f} (unique: {ref['fd_cls']:.1f}, {100 * ref['class_acc']:.1f} %) |"
        )

    print()
    print(
        "| width | model | params (M) | FD_cls / class acc at L=4 | unique 12: params (M) | unique "
        "12 "
        "| FD_cls ratio ELT / unique |"
    )
    print("|---|---|---|---|---|---|---|")
    series: dict[str, list[tuple[float, float, int]]] = {}
    for width, (uniq_key, elt_keys) in LADDER.items():
        uniq_row = at(rows.get(uniq_key, []), 1)
        for label, elt_key in elt_keys.items():
            elt_row = at(rows.get(elt_key, []), 4)
            if elt_row is None or uniq_row is None:
                continue
            ratio = elt_row["fd_cls"] / uniq_row["fd_cls"]
            series.setdefault(label, []).append((elt_row["params_m"], ratio, width))
            summary["ladder"].setdefault(width, {})[label] = {
                "elt_params_m": elt_row["params_m"],
                "elt_fd_cls": elt_row["fd_cls"],
                "elt_class_acc": elt_row["class_acc"],
                "unique_params_m": uniq_row["params_m"],
                "unique_fd_cls": uniq_row["fd_cls"],
                "unique_class_acc": uniq_row["class_acc"],
                "ratio": ratio,
            }
            print(
                f"| {width} | {label} | {elt_row['params_m']:.2f} "
                f"| {elt_row['fd_cls']:.1f} / {100 * elt_row['class_acc']:.1f} % | "
                f"{uniq_row['params_m']:.2f} "
                f"| {uniq_row['fd_cls']:.1f} / {100 * uniq_row['class_acc']:.1f} % | {ratio:.2f} |"
            )

    dest = args.out / args.paradigm
    write_json(dest / "ablations.json", summary, indent=1)
    if any(len(points) > 1 for points in series.values()):  # a ladder needs two widths at least
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.4))
        for label, points in series.items():
            xs, ys, _ = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", label=label)
            for x, y, w in points:
                ax.annotate(
                    f"width {w}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7
                )
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.axhline(1.15, color="grey", lw=0.8, ls=":", label="target: within 15 %")
        ax.set_xscale("log")
        ax.set_xlabel("ELT 3x4 parameters (M)")
        ax.set_ylabel("FD_cls ratio, ELT 3x4 L=4 / unique 12")
        ax.set_title(f"Fashion-MNIST {args.paradigm}: iso-FLOP gap against width", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_via(dest / "width_ladder.png", lambda path: fig.savefig(path, dpi=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
