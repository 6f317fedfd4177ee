"""The quality-vs-compute sweep: one checkpoint evaluated at many loop counts (× sampling steps).

ELT's claim is one model at many compute budgets, so evaluation is a curve, not a number. For every
model (ELT, vanilla looped, unique stack, ...), steps value and loop count L the sweep records

  * quality from a :class:`~elt.eval.suites.MetricSuite` (samples drawn with balanced labels and the
    same seed at every L, or read from ``samples_L<L>.npz`` files written by ``elt sample``);
  * GFLOPs per sample (``generator.gflops_per_sample``, analytic);
  * latency: median wall time of ``generate`` on a batch of ``latency_batch`` after one warm-up
    call;
  * peak memory during those calls (CUDA: ``max_memory_allocated``; CPU: growth of the process RSS,
    sampled every 2 ms by a background thread);
  * throughput of the bulk generation (ms per sample at ``batch_size``) when samples are generated
    here;

and the suite's real-vs-real floor at the same N. ``write_outputs`` turns the result into JSON, CSV
and a plot of quality against GFLOPs and latency."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from elt.core.generator import LoopedGenerator
from elt.core.schedule import LoopSchedule, file_token, point_label
from elt.errors import UserError
from elt.fileio import atomic_write, load_npz, write_json, write_text
from elt.runtime import resolve_device
from elt.sampling import (
    balanced_labels,
    generate_batched,
    generate_features,
    shard_info,
)
from elt.version import __version__

LABEL_POLICY = "balanced: sample i is conditioned on class i mod num_classes"


class SweepInputError(UserError, ValueError):
    """The sweep was given something it cannot evaluate (a user-fixable problem)."""


@dataclass
class SweepModel:
    """One model on the plot: a generator, a folder of ``elt sample`` output, or both (quality read
    from the files; GFLOPs, latency and memory measured with the generator)."""

    name: str
    generator: LoopedGenerator | None = None
    samples_dir: Path | None = None
    checkpoint: str | None = None


def rss_bytes() -> int:
    """This process's resident memory in bytes (Linux: /proc/self/statm; elsewhere the peak so
    far)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_kernel_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where /proc does not allow
    it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _kernel_peak_bytes() is not None
    except OSError:
        return False


def _kernel_peak_bytes() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Peak memory of the code inside ``with``, in MiB: CUDA allocator peak, or CPU RSS growth (None
    where the
    RSS did not grow: not measured).

    On Linux the CPU peak is the kernel's own high-water mark (reset on entry through
    ``/proc/self/clear_refs``), so no allocation is missed however short it lives. Elsewhere a
    thread polls the RSS every 2 ms."""

    def __init__(self, device: torch.device):
        self.device = resolve_device(str(device))
        self.peak_mib: float | None = None
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_rss_growth"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._kernel = _reset_kernel_peak()
        self._base = rss_bytes()
        self._peak = self._base
        self._thread = None
        if not self._kernel:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, rss_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return False
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        kernel_peak = _kernel_peak_bytes() if self._kernel else None
        self._peak = max(self._peak, rss_bytes(), kernel_peak or 0)
        # no growth: the working set was resident before the window (the warm-up, an earlier bulk
        # run), so the RSS cannot tell what the calls need — not measured (None, "n/a" in tables),
        # never "0 MiB"
        self.peak_mib = (self._peak - self._base) / 2**20 if self._peak > self._base else None
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    generator: LoopedGenerator,
    loops: LoopSchedule,
    steps: int | None,
    guidance: float | None,
    batch: int = 1,
    repeats: int = 3,
    seed: int = 0,
    min_seconds: float = 0.25,
    max_repeats: int = 50,
) -> dict:
    """Median seconds of ``generate`` for ``batch`` samples, and peak memory. One warm-up call, then
    at least ``repeats`` timed calls, more (up to ``max_repeats``) until ``min_seconds`` have
    passed, so sub-millisecond models still get a stable median."""
    device = generator.device
    labels = balanced_labels(batch, generator.num_classes)
    generator.generate(labels, loops=loops, steps=steps, guidance=guidance, seed=seed)  # warm-up
    times: list[float] = []
    with PeakMemory(device) as memory:
        while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
            _sync(device)
            start = time.perf_counter()
            generator.generate(
                labels, loops=loops, steps=steps, guidance=guidance, seed=seed + len(times)
            )
            _sync(device)
            times.append(time.perf_counter() - start)
    return {
        "latency_ms": 1000 * statistics.median(times),
        "latency_batch": batch,
        "latency_calls": len(times),
        "peak_mem_mib": memory.peak_mib,
        "peak_mem_kind": memory.kind,
    }


def read_samples(
    samples_dir: Path, loops: LoopSchedule, num: int | None = None, with_loops: bool = False
):
    """Images and labels of ``samples_L<loops>.npz`` written by ``elt sample`` (first ``num`` of
    them); with ``with_loops`` also the loops used per sample and step (None in files written before
    they were stored)."""
    path = Path(samples_dir) / f"samples_L{file_token(loops)}.npz"
    if not path.is_file():
        have = sorted(p.name for p in Path(samples_dir).glob("samples_L*.npz"))
        raise FileNotFoundError(
            f"{path} not found (have: {', '.join(have) or 'none'}); run 'elt sample "
            f"--loops {point_label(loops)}' or drop L={point_label(loops)} from --loops"
        )
    data = load_npz(path, "samples file", keys=("arr_0", "arr_1", "loops"))
    if "arr_0" not in data:
        raise SweepInputError(f"{path} has no arr_0 (the uint8 samples 'elt sample' writes)")
    images, labels, used = data["arr_0"], data.get("arr_1"), data.get("loops")
    meta_path = Path(samples_dir) / "samples.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if num is not None:
        if len(images) < num:
            raise SweepInputError(f"{path} holds {len(images)} samples, fewer than --num {num}")
        images, labels = images[:num], (labels[:num] if labels is not None else None)
        used = used[:num] if used is not None else None
    return (images, labels, meta, used) if with_loops else (images, labels, meta)


def check_samples(samples_dir: Path, loops: Sequence[int], num: int | None = None) -> None:
    """Before any feature work: every ``samples_L<L>.npz`` is there and holds at least ``num``
    samples (read from the .npy headers, not the arrays)."""
    import zipfile

    for k in loops:
        path = Path(samples_dir) / f"samples_L{k}.npz"
        if not path.is_file():
            have = sorted(p.name for p in Path(samples_dir).glob("samples_L*.npz"))
            raise SweepInputError(
                f"{path} not found (have: {', '.join(have) or 'none'}); run 'elt sample "
                f"--loops {k}' or drop L={k} from --loops"
            )
        if num is None:
            continue
        try:
            with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
                major, _ = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
            raise SweepInputError(
                f"{path} is not a samples file written by 'elt sample' "
                f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})"
            ) from None
        if dtype.hasobject:
            raise SweepInputError(
                f"samples file {str(path)!r} holds object arrays (pickled Python objects), which "
                "elt never loads; 'elt sample' writes uint8 arrays"
            )
        if shape[0] < num:
            raise SweepInputError(f"{path} holds {shape[0]} samples, fewer than --num {num}")


def configured_steps(generator: LoopedGenerator | None) -> int | None:
    """The number of sampling steps the checkpoint samples with by default (``sampling.steps``, else
    the paradigm's default), if the generator says."""
    settings = getattr(generator, "sampling_settings", None)
    if callable(settings):
        steps = settings(None, None)[0]
        return int(steps) if steps is not None else None
    cfg = getattr(generator, "config", None)
    value = cfg.get("sampling", {}).get("steps") if cfg is not None else None
    return int(value) if value is not None else None


def run_sweep(
    models: Sequence[SweepModel],
    suite,
    loops: Sequence[LoopSchedule],
    steps: Sequence[int | None] = (None,),
    num: int = 1000,
    seed: int = 0,
    guidance: float | None = None,
    batch_size: int = 256,
    latency_batch: int = 1,
    latency_repeats: int = 3,
    measure: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate every model at every (steps, loops); returns the record ``write_outputs`` saves."""
    if not models:
        raise SweepInputError("nothing to evaluate: give at least one checkpoint or samples folder")
    rows = []
    floor = suite.floor(num)
    # under torchrun: metric features are extracted by every rank for its own samples
    # (generate_features), and the reference features are computed now by every rank, not later by
    # rank 0 alone while the others wait
    split_metrics = shard_info()[1] > 1 and callable(getattr(suite, "compare", None))
    if split_metrics and hasattr(suite, "reference_features"):
        suite.reference_features()
    combos = [(m, s, k) for m in models for s in steps for k in loops]
    for model, step, k in tqdm(combos, desc="sweep", disable=not progress):
        gen = model.generator
        label = k if isinstance(k, int) else point_label(k)
        used_steps, used_guidance = (
            gen.sampling_settings(step, guidance) if gen is not None else (step, guidance)
        )
        row = {
            "model": model.name,
            "checkpoint": model.checkpoint,
            "loops": label,
            "steps": used_steps,
            "config_steps": configured_steps(gen),
            "guidance": used_guidance,
            "n": num,
        }
        if model.samples_dir is not None:
            images, labels, meta, used = read_samples(model.samples_dir, k, num, with_loops=True)
            row.update(
                samples=str(
                    model.samples_dir
                ),  # older samples.json files recorded null for defaults
                steps=used_steps if meta.get("steps") is None else meta["steps"],
                guidance=used_guidance if meta.get("guidance") is None else meta["guidance"],
                seed=meta.get("seed"),
                label_policy=meta.get("label_policy"),
            )
            ms_per_sample = (
                1000 * meta["seconds"][str(label)] / meta["num"]
                if "seconds" in meta and str(label) in meta["seconds"] and meta.get("num")
                else None
            )
        else:
            if gen is None:
                raise SweepInputError(
                    f"model {model.name!r} has neither a generator nor a samples folder"
                )
            labels = balanced_labels(num, gen.num_classes)
            _sync(gen.device)
            start = time.perf_counter()
            if (
                split_metrics
            ):  # every rank extracts the features of its own samples; rank 0 gets features only
                result = generate_features(
                    gen,
                    labels,
                    k,
                    suite.features,
                    batch_size=batch_size,
                    seed=seed,
                    steps=used_steps,
                    guidance=used_guidance,
                    progress=progress,
                    desc=f"{model.name} L={label}",
                )
            else:
                result = generate_batched(
                    gen,
                    labels,
                    k,
                    batch_size=batch_size,
                    seed=seed,
                    steps=used_steps,
                    guidance=used_guidance,
                    progress=progress,
                    desc=f"{model.name} L={label}",
                    return_loops=True,
                )
            _sync(gen.device)
            ms_per_sample = 1000 * (time.perf_counter() - start) / num
            row.update(seed=seed, label_policy="balanced")
            if result is None:  # under torchrun: this rank generated its share; rank 0 evaluates
                continue
            images, used = result
        row["ms_per_sample"] = ms_per_sample
        if gen is not None:
            row["params_m"] = sum(p.numel() for p in gen.trainable_parameters()) / 1e6
            row["gflops"] = float(
                gen.gflops_per_sample(
                    loops=k, steps=row["steps"], guidance=row["guidance"], loops_used=used
                )
            )
            if measure:
                row.update(
                    measure_latency(
                        gen, k, row["steps"], row["guidance"], latency_batch, latency_repeats, seed
                    )
                )
        if used is not None:
            row["mean_loops"] = float(np.mean(used))
        row.update(
            suite.compare(images, labels)
            if split_metrics and model.samples_dir is None
            else suite.evaluate(images, labels)
        )
        rows.append(row)
    device = next(
        (m.generator.device for m in models if m.generator is not None), torch.device("cpu")
    )
    provenance = {
        **suite.provenance(),
        "n": num,
        "label_policy": LABEL_POLICY,
        "seed": seed,
        "loops": [k if isinstance(k, int) else point_label(k) for k in loops],
        # as requested (null: each model's configured default) and as used (what the rows carry)
        "steps": [s for s in steps],
        "guidance": guidance,
        "batch_size": batch_size,
        "steps_used": sorted({r["steps"] for r in rows if r.get("steps") is not None}),
        "guidance_used": sorted({r["guidance"] for r in rows if r.get("guidance") is not None}),
        "latency": {
            "batch": latency_batch,
            "min_repeats": latency_repeats,
            "statistic": "median after 1 warm-up, repeated until >= 0.25 s",
        },
        "device": str(device),
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "elt": __version__,
        "python": platform.python_version(),
        "models": [
            {
                "name": m.name,
                "checkpoint": m.checkpoint,
                "samples": str(m.samples_dir) if m.samples_dir else None,
            }
            for m in models
        ],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {
        "provenance": provenance,
        "floor": floor,
        "floor_warning": floor_warning(floor, rows),
        "plot_metrics": [list(p) for p in suite.plot_metrics],
        "rows": rows,
    }


FRECHET_KEYS = (
    "fd_cls",
    "fid",
    "fvd",
)  # lower is better; between two real sets pure estimation bias, ∝ 1/N


def floor_warning(floor: dict | None, rows: Sequence[dict]) -> str | None:
    """One line when the real-vs-real floor scores worse than a model on a Fréchet distance: at that
    N the floor is estimation bias, not a floor. It falls as 1/N (domain FD_cls 2.27 at N = 1000,
    0.23 at N = 10 000), so the N at which it would drop to the model's present score is a lower
    bound on the N needed (the model's score falls with N too)."""
    if not floor or not floor.get("n"):
        return None
    n = int(floor["n"])
    for key in FRECHET_KEYS:
        scored = [r for r in rows if isinstance(r.get(key), (int, float))]
        if floor.get(key) is None or not scored:
            continue
        best = min(scored, key=lambda r: r[key])
        if floor[key] <= best[key]:
            continue
        needed = (
            f"at least N={math.ceil(n * floor[key] / best[key])}"
            if best[key] > 0
            else "a much larger N"
        )
        return (
            f"the real-data floor at N={n} is unreliable: its {key} {floor[key]:.3g} is worse than "
            f"{best.get('model', 'a model')} L={best.get('loops')} ({best[key]:.3g}); a Fréchet "
            "floor falls as "
            f"1/N, so {needed} samples (--num) would be needed for it to be a floor"
        )
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def output_paths(out_dir: str | Path, stem: str = "eval") -> dict[str, Path]:
    """The files :func:`write_outputs` writes into ``out_dir``."""
    out = Path(out_dir)
    return {kind: out / f"{stem}.{kind}" for kind in ("json", "csv", "md", "png")}


def write_outputs(result: dict, out_dir: str | Path, stem: str = "eval") -> dict[str, Path]:
    """``eval.json`` (everything), ``eval.csv`` (one row per model × steps × loops), ``eval.md``
    (the same table for a README) and ``eval.png``."""
    from elt.eval.plots import plot_sweep

    paths = output_paths(out_dir, stem)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_json(paths["json"], result, default=_json_default)
    columns: list[str] = []
    for row in result["rows"]:
        columns += [c for c in row if c not in columns]
    with atomic_write(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    write_text(paths["md"], markdown_table(result))
    plot_sweep(result, paths["png"])
    return paths


MARKDOWN_COLUMNS = [
    ("model", "model"),
    ("loops", "L"),
    ("steps", "steps"),
    ("params_m", "params (M)"),
    ("gflops", "GFLOPs/sample"),
    ("fd_cls", "FD_cls ↓"),
    ("class_acc", "class acc ↑"),
    ("precision", "precision ↑"),
    ("recall", "recall ↑"),
    ("fid", "FID ↓"),
    ("fvd", "FVD ↓"),
    ("is", "IS ↑"),
    ("ms_per_sample", "ms/sample"),
    ("latency_ms", "latency (ms)"),
]


def markdown_table(result: dict) -> str:
    """The rows as a Markdown table (columns that no row has are left out), the real-data floor
    last."""
    rows = result["rows"] + (
        [{"model": "real data", **result["floor"]}] if result.get("floor") else []
    )
    columns = [
        (k, t) for k, t in MARKDOWN_COLUMNS if any(r.get(k) is not None for r in result["rows"])
    ]

    def fmt(key: str, value) -> str:
        if value is None or value == "":
            return "–"
        if key == "class_acc" or key in ("precision", "recall"):
            return f"{100 * value:.1f}%" if key == "class_acc" else f"{value:.3f}"
        if key == "params_m":
            return f"{value:.2f}"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(t for _, t in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def format_table(result: dict) -> str:
    """The rows as a plain-text table for a terminal (the real-data floor last; a column measured in
    some row but not in this one reads ``n/a``, one never attempted ``-``)."""
    keys = [k for k, _ in result["plot_metrics"]]
    extra = [
        k for k in ("kid", "precision", "recall", "density", "coverage", "is") if k not in keys
    ]
    columns = ["model", "steps", "loops", "gflops", "latency_ms", "peak_mem_mib", *keys, *extra]
    measured = {"peak_mem_mib": "peak_mem_kind"}  # attempted in a row but not measured there: n/a
    columns = [
        c
        for c in columns
        if any(r.get(c) is not None or measured.get(c) in r for r in result["rows"])
    ]

    def fmt(row, c):
        v = row.get(c)
        if v is None:
            return "n/a" if measured.get(c) in row else "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = result["rows"] + (
        [{"model": "real data", **result["floor"]}] if result.get("floor") else []
    )
    table = [columns] + [[fmt(r, c) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table
    )


def check_result_shape(result) -> None:
    """What :func:`merge_results` reads from an ``eval.json``: a :class:`SweepInputError` naming
    what is wrong."""
    if not isinstance(result, dict):
        raise SweepInputError(
            f"expected an 'elt eval' record (a JSON object), got {type(result).__name__}"
        )
    for key, kind in (("provenance", dict), ("rows", list), ("plot_metrics", list)):
        if not isinstance(result.get(key), kind):
            raise SweepInputError(
                f"not an 'elt eval' record: {key!r} must be a JSON "
                f"{'object' if kind is dict else 'list'}"
            )
    if not all(isinstance(row, dict) for row in result["rows"]):
        raise SweepInputError(
            "not an 'elt eval' record: every entry of 'rows' must be a JSON object"
        )
    if not all(isinstance(item, list) and len(item) == 2 for item in result["plot_metrics"]):
        raise SweepInputError(
            "not an 'elt eval' record: 'plot_metrics' must hold [key, label] pairs"
        )
    if not isinstance(result["provenance"].get("loops", []), list):
        raise SweepInputError("not an 'elt eval' record: 'provenance.loops' must be a list")


def merge_results(results: Sequence[dict]) -> dict:
    """One record from several sweeps measured with the same suite (e.g. models evaluated at
    different loop counts): rows concatenated in order, the first floor kept, each source's
    provenance kept."""
    if not results:
        raise SweepInputError("nothing to merge")
    for result in results:
        check_result_shape(result)
    suites = {
        json.dumps({k: r["provenance"].get(k) for k in ("suite", "extractor")}, sort_keys=True)
        for r in results
    }
    if len(suites) > 1:
        raise SweepInputError(
            f"cannot merge sweeps measured with different metric suites: {sorted(suites)}"
        )
    sizes = {r["provenance"].get("n") for r in results}
    if len(sizes) > 1:
        raise SweepInputError(
            f"cannot merge sweeps with different sample counts per point: {sorted(sizes)}"
        )
    first = results[0]
    provenance = {
        **first["provenance"],
        "merged_from": [r["provenance"] for r in results],
        "loops": sorted(
            {k for r in results for k in r["provenance"].get("loops", [])},
            key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0, str(k)),
        ),
    }
    rows = [row for r in results for row in r["rows"]]
    return {
        "provenance": provenance,
        "floor": first.get("floor"),
        "floor_warning": floor_warning(first.get("floor"), rows),
        "plot_metrics": first["plot_metrics"],
        "rows": rows,
    }


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
