"""Summarise `elt calibrate` runs of the shipped demo models into the any-time study
(docs/anytime.md).

Reads ``DIR/<paradigm>_seed<S>/calibration.json`` (or ``calibration.partial.json`` of an unfinished
run), prints one Markdown table per model (GFLOPs as % of fixed L_max, FD_cls and class accuracy
relative to L_max, the spread over seeds where several were run), checks the target (a schedule or
adaptive point within 5 % of L_max's FD_cls and 1 point of its class accuracy at ≤ 60 % of its
GFLOPs), draws both fronts into one PNG and writes the summary as JSON.

    python benchmarks/anytime_study.py --runs DIR --png docs/assets/anytime_fronts.png \
        --out benchmarks/results/anytime_study.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elt.fileio import write_json


def load_runs(root: Path, paradigm: str) -> dict[int, list[dict]]:
    runs = {}
    for folder in sorted(p for p in root.glob(f"{paradigm}_seed*") if p.is_dir()):
        seed = int(folder.name.rsplit("seed", 1)[1])
        for name in ("calibration.json", "calibration.partial.json"):
            if (folder / name).is_file():
                runs[seed] = json.loads((folder / name).read_text())["points"]
                break
    return runs


def summarise(runs: dict[int, list[dict]], top: str) -> list[dict]:
    labels = list(dict.fromkeys(p["loops"] for points in runs.values() for p in points))
    rows = []
    for label in labels:
        per_seed = {
            s: next(p for p in pts if p["loops"] == label)
            for s, pts in runs.items()
            if any(p["loops"] == label for p in pts)
        }
        fd = [p["fd_cls"] for p in per_seed.values()]
        acc = [p["class_acc"] for p in per_seed.values()]
        first = next(iter(per_seed.values()))
        rows.append(
            {
                "loops": label,
                "seeds": sorted(per_seed),
                "n_per_seed": first["n"],
                "gflops": float(np.mean([p["gflops"] for p in per_seed.values()])),
                "mean_loops": float(np.mean([p["mean_loops"] for p in per_seed.values()])),
                "fd_cls": float(np.mean(fd)),
                "fd_cls_seeds": fd,
                "class_acc": float(np.mean(acc)),
                "class_acc_seeds": acc,
                "latency_ms": first.get("latency_ms"),
                "ms_per_sample": first.get("ms_per_sample"),
            }
        )
    ref = {s: next((p for p in pts if p["loops"] == top), None) for s, pts in runs.items()}
    for (
        r
    ) in rows:  # relative to L_max of the same seed, averaged over the seeds the point was run with
        seeds = [s for s in r["seeds"] if ref.get(s) is not None]
        if not seeds:
            continue
        point = {s: next(p for p in runs[s] if p["loops"] == r["loops"]) for s in seeds}
        fd = [100 * (point[s]["fd_cls"] / ref[s]["fd_cls"] - 1) for s in seeds]
        acc = [100 * (point[s]["class_acc"] - ref[s]["class_acc"]) for s in seeds]
        r["gflops_pct_of_lmax"] = (
            100 * r["gflops"] / float(np.mean([ref[s]["gflops"] for s in seeds]))
        )
        r["fd_cls_vs_lmax_pct"], r["fd_cls_vs_lmax_pct_seeds"] = float(np.mean(fd)), fd
        r["class_acc_vs_lmax_points"], r["class_acc_vs_lmax_points_seeds"] = (
            float(np.mean(acc)),
            acc,
        )
        r["meets_target"] = (
            r["loops"] != top
            and r["gflops_pct_of_lmax"] <= 60 + 1e-9
            and r["fd_cls_vs_lmax_pct"] <= 5 + 1e-9
            and r["class_acc_vs_lmax_points"] >= -1 - 1e-9
        )
    return rows


def _verdict(row: dict) -> str:
    if not row.get("meets_target"):
        return ""
    return "meets" if not row["loops"].isdigit() else "meets (fixed L)"


def markdown(rows: list[dict]) -> str:
    head = (
        "| loops | seeds | mean L | GFLOPs | % of L_max | FD_cls (per seed) | vs L_max (per seed) "
        "| class acc "
        "(per seed) | vs L_max (per seed) | target |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:

        def each(values, fmt):
            return "" if len(values) < 2 else " (" + ", ".join(fmt.format(v) for v in values) + ")"

        lines.append(
            f"| `{r['loops']}` | {','.join(map(str, r['seeds']))} | {r['mean_loops']:.2f} | "
            f"{r['gflops']:.2f} | "
            f"{r.get('gflops_pct_of_lmax', float('nan')):.0f}% | "
            f"{r['fd_cls']:.1f}{each(r['fd_cls_seeds'], '{:.1f}')} | "
            f"{r.get('fd_cls_vs_lmax_pct', float('nan')):+.1f}%"
            f"{each(r.get('fd_cls_vs_lmax_pct_seeds', []), '{:+.1f}%')} | "
            f"{100 * r['class_acc']:.1f}%"
            f"{each([100 * v for v in r['class_acc_seeds']], '{:.1f}%')} | "
            f"{r.get('class_acc_vs_lmax_points', float('nan')):+.1f}"
            f"{each(r.get('class_acc_vs_lmax_points_seeds', []), '{:+.1f}')} | {_verdict(r)} |"
        )
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elt.eval.calibrate import point_kind

    fig, axes = plt.subplots(2, len(summary), figsize=(5.6 * len(summary), 7.2), squeeze=False)
    style = {"fixed L": ("o", "C0"), "schedule": ("s", "C1"), "adaptive exit": ("^", "C2")}
    for j, (paradigm, rows) in enumerate(summary.items()):
        for i, (key, label) in enumerate(
            [("fd_cls", "FD_cls (lower is better)"), ("class_acc", "class accuracy (%)")]
        ):
            ax = axes[i][j]
            for kind, (marker, color) in style.items():
                pts = [r for r in rows if point_kind(r["loops"]) == kind]
                if not pts:
                    continue
                scale = 100 if key == "class_acc" else 1
                ax.scatter(
                    [r["gflops"] for r in pts],
                    [scale * r[key] for r in pts],
                    marker=marker,
                    color=color,
                    label=kind,
                )
                for r in pts:
                    values = r[f"{key}_seeds"]
                    if len(values) > 1:
                        ax.vlines(
                            r["gflops"], scale * min(values), scale * max(values), color=color, lw=1
                        )
                    ax.annotate(
                        r["loops"],
                        (r["gflops"], scale * r[key]),
                        textcoords="offset points",
                        xytext=(4, 3),
                        fontsize=7,
                        color=color,
                    )
                fixed = sorted(
                    (r for r in rows if point_kind(r["loops"]) == "fixed L"),
                    key=lambda r: r["gflops"],
                )
                ax.plot(
                    [r["gflops"] for r in fixed],
                    [scale * r[key] for r in fixed],
                    "-",
                    color="C0",
                    lw=0.8,
                )
            ax.set(xlabel="GFLOPs per sample", ylabel=label)
            ax.grid(alpha=0.3)
            if i == 0:
                n = rows[0]["n_per_seed"]
                seeds = sorted({s for r in rows for s in r["seeds"]})
                ax.set_title(
                    f"{paradigm} demo model ({n} samples per point and seed, seeds {seeds})",
                    fontsize=9,
                )
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", required=True, help="folder with <paradigm>_seed<S>/ calibrate outputs"
    )
    parser.add_argument("--top", default="4", help="the fixed L_max point (default 4)")
    parser.add_argument("--png", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    summary = {}
    for paradigm in ("masked", "diffusion"):
        runs = load_runs(Path(args.runs), paradigm)
        if runs:
            summary[paradigm] = summarise(runs, args.top)
            print(f"\n{paradigm}\n")
            print(markdown(summary[paradigm]))
    if args.png:
        plot(summary, Path(args.png))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, summary)


if __name__ == "__main__":
    main()
