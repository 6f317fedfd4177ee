"""Quality-vs-compute plots of a sweep: one line per model (× steps), points labelled with the loop
count, the real-data floor as a dashed horizontal line. Columns: GFLOPs per sample, measured
latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from elt.fileio import write_via  # noqa: E402

X_AXES = [("gflops", "GFLOPs per sample"), ("latency_ms", "latency (ms per batch)")]
LOG_SCALE_METRICS = ("fd_cls", "fid", "fvd", "kid")


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    steps_values = {(r["model"], r.get("steps")) for r in rows}
    several_steps = len({s for _, s in steps_values}) > 1
    for row in rows:
        name = row["model"] + (
            f" ({row['steps']} steps)" if several_steps and row.get("steps") else ""
        )
        groups.setdefault(name, []).append(row)
    return {name: sorted(items, key=_order) for name, items in groups.items()}


def _order(row: dict) -> tuple:
    """Fixed loop counts by L, then schedules and adaptive exits by GFLOPs (their labels are
    strings)."""
    loops = row["loops"]
    return (0, loops, 0.0) if isinstance(loops, int) else (1, 0, row.get("gflops") or 0.0)


def plot_sweep(result: dict, path: str | Path) -> Path:
    """Draw ``result`` (from :func:`elt.eval.sweep.run_sweep`) to ``path``."""
    rows, floor = result["rows"], result.get("floor") or {}
    metrics = [tuple(m) for m in result.get("plot_metrics", [])] or [("fd_cls", "FD_cls")]
    metrics = [m for m in metrics if any(r.get(m[0]) is not None for r in rows)]
    groups = _series(rows)
    prov = result.get("provenance", {})
    latency_batch = next((r.get("latency_batch") for r in rows if r.get("latency_batch")), None)
    fig, axes = plt.subplots(
        len(metrics), len(X_AXES), figsize=(5.2 * len(X_AXES), 3.6 * len(metrics)), squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, label) in enumerate(metrics):
        for j, (x_key, x_label) in enumerate(X_AXES):
            ax = axes[i][j]
            drawn = False
            for g, (name, items) in enumerate(groups.items()):
                pts = [
                    (r[x_key], r[key], r["loops"])
                    for r in items
                    if r.get(x_key) is not None and r.get(key) is not None
                ]
                if not pts:
                    continue
                drawn = True
                xs, ys, ls = zip(*pts, strict=True)
                color = colors[g % len(colors)]
                ax.plot(xs, ys, "o-", color=color, label=name, markersize=5)
                for x, y, loops in pts:
                    ax.annotate(
                        f"L={loops}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color=color,
                    )
            values = [r[key] for r in rows if isinstance(r.get(key), int | float) and r[key] > 0]
            if key in LOG_SCALE_METRICS and values and max(values) > 10 * min(values):
                ax.set_yscale("log")  # one collapsed model must not flatten every other line
            if floor.get(key) is not None:
                ax.axhline(
                    floor[key],
                    color="0.3",
                    linestyle="--",
                    linewidth=1,
                    label=f"real data (N={floor.get('n', prov.get('n'))})",
                )
            if not drawn:
                ax.text(
                    0.5,
                    0.5,
                    f"no {x_label} measured",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                )
            if x_key == "latency_ms" and latency_batch:
                x_label = f"latency (ms, batch of {latency_batch}, {prov.get('device', '?')})"
            ax.set_xlabel(x_label)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    n = prov.get("n")
    title = prov.get("title") or "quality vs compute"
    fig.suptitle(
        f"{title} ({prov.get('extractor', prov.get('suite', ''))}, N={n} per point)", fontsize=10
    )
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; every plot of ``elt eval`` ends
    here."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_via(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return path
