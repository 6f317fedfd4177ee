"""``elt bench`` and benchmarks/gpu_suite.sh at tiny sizes: they run, write JSON, and their
accounting holds invariants (equal FLOPs for looped vs unique, parameters ×L for the unique stack,
less memory)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elt.bench.timing import fit_line
from elt.cli import main

ROOT = Path(__file__).parent.parent


def test_bench_all_smoke_writes_json_with_consistent_accounting(tmp_path, capsys):
    assert main(["bench", "all", "--smoke", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training step" in out and "cost of each loop" in out and "training memory" in out
    train = json.loads((tmp_path / "train.json").read_text())
    rows = {r["mode"]: r for r in train["rows"]}
    assert set(rows) == {"vanilla", "ilsd", "unique"}
    assert rows["vanilla"]["params"] == rows["ilsd"]["params"] < rows["unique"]["params"]
    # equal FLOPs per sample: TFLOP/s ∝ samples/s with the same constant for every mode
    per_sample = {m: r["tflops"] / r["samples_per_s"] for m, r in rows.items()}
    assert (
        per_sample["unique"]
        == pytest.approx(per_sample["vanilla"])
        == pytest.approx(per_sample["ilsd"])
    )
    assert all(r["mfu"] is None for r in rows.values())  # no known peak for a CPU: n/a, not a guess
    assert rows["vanilla"]["tokens_per_s"] == pytest.approx(
        17 * rows["vanilla"]["samples_per_s"]
    )  # 16 + class
    assert train["device_type"] == "cpu" and train["threads"] == 1
    assert train["command"].startswith("elt bench train --kind masked --width 32")

    sampling = json.loads((tmp_path / "sampling.json").read_text())
    assert [(r["batch"], r["loops"]) for r in sampling["by_loops"]] == [
        (b, L) for b in (1, 4) for L in (1, 2, 3)
    ]
    assert [r["batch"] for r in sampling["by_batch"]] == [1, 4]
    assert {"ms_per_loop", "fixed_ms"} <= sampling["per_loop"].keys()

    memory = {
        (r["mode"], r["checkpoint_loops"]): r
        for r in json.loads((tmp_path / "memory.json").read_text())["rows"]
    }
    looped, unique, ckpt = memory["ilsd", False], memory["unique", False], memory["ilsd", True]
    # the unique stack holds L× the block weights (and their grads and Adam moments) ...
    assert unique["param_mib"] > 1.5 * looped["param_mib"]
    # ... while activations are those of the same N·L layer applications (ILSD adds one head output)
    assert looped["activation_mib"] == pytest.approx(unique["activation_mib"], rel=0.25)
    assert ckpt["activation_mib"] < 0.7 * looped["activation_mib"]
    assert (
        looped["accounted_vs_unique"] < 1
        and ckpt["accounted_vs_unique"] < looped["accounted_vs_unique"]
    )


def test_bench_trainer_runs_the_real_trainer(tmp_path):
    assert (
        main(
            [
                "bench",
                "trainer",
                "--smoke",
                "--kind",
                "diffusion",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
                "--tag",
                "t",
            ]
        )
        == 0
    )
    row = json.loads((tmp_path / "trainer_t.json").read_text())["rows"][0]
    assert row["steps_timed"] == 2 and row["samples_per_s"] > 0 and row["mfu"] is None
    assert row["tokens_per_s"] == pytest.approx(16 * row["samples_per_s"])  # adaLN: no prefix token


def test_bad_bench_options_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "train", "--width", "30", "--heads", "4", "--out", str(tmp_path)]) == 2
    assert "divisible" in capsys.readouterr().err


def test_fit_line_recovers_cost_per_loop():
    assert fit_line([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0]) == pytest.approx((1.0, 2.0))


def test_a_negative_fixed_cost_is_printed_as_a_caveat_not_a_number():
    from elt.bench.suites import NEGATIVE_FIXED, format_per_loop, per_loop_fit

    ms = [1.0, 5.0, 6.0]  # noisy smoke timings at L = 1, 2, 3: the line crosses zero below L = 1
    fixed, per_loop = fit_line([1, 2, 3], ms)
    assert fixed < 0
    fit = per_loop_fit(fixed, per_loop, 3, ms[-1], 4)
    assert (
        fit["note"] == NEGATIVE_FIXED and fit["loop_share_at_max"] is None
    )  # the JSON says so too
    line = format_per_loop(fit)
    assert NEGATIVE_FIXED in line and f"{fixed:.2f}" not in line and "%" not in line
    fixed, per_loop = fit_line([1, 2, 3], [3.0, 5.0, 7.0])  # a real fixed cost is still printed
    line = format_per_loop(per_loop_fit(fixed, per_loop, 3, 7.0, 4))
    assert (
        "fixed 1.00 ms" in line
        and "86% of the time at L=3" in line
        and "note" not in per_loop_fit(1, 2, 3, 7, 4)
    )


@pytest.mark.slow
def test_gpu_suite_smoke_runs_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "env.json",
        "gpu_suite.json",
        "memory.json",
        "peers.json",
        "recipes.json",
        "sampling.json",
        "scaling.json",
        "scaling_diffusion.png",
        "scaling_masked.png",
        "train.json",
        "train_compiled.json",
        "trainer.json",
        "trainer_compiled.json",
    ]
    status = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert [(s["stage"], s["status"]) for s in status["stages"]] == [
        ("suite", "ok"),
        ("recipes", "ok"),
    ]
    # the card is named in the status file, env.json and the output (first and last line)
    card = json.loads((tmp_path / "env.json").read_text())["card"]
    assert card.startswith("no GPU (CPU: ") and status["card"] == card
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"gpu_suite: card {card}" and lines[-1].startswith(
        f"gpu_suite: card {card};"
    )
    # the peer benchmark ran the ImageNet recipes' configs (at smoke widths): the real run's path
    peers = json.loads((tmp_path / "peers.json").read_text())
    assert [m["config"] for m in peers["models"]] == [
        "imagenet256_diffusion_elt_8x4",
        "imagenet256_masked_elt_l_8x3",
    ]
    assert {r["config"] for r in peers["rows"]} == {m["config"] for m in peers["models"]}
    scaling = json.loads((tmp_path / "scaling.json").read_text())
    assert sorted(scaling["paradigms"]) == ["diffusion", "masked"]
    assert all(
        list(p["axes"]) == ["batch", "loops", "tokens", "steps"]
        for p in scaling["paradigms"].values()
    )
    recipes = json.loads((tmp_path / "recipes.json").read_text())
    assert len(recipes["train"]) == 6 and all(
        r["steps"] == 2 and r["tokens_per_s"] > 0 for r in recipes["train"]
    )
    assert all(
        c["flop_ratio"] == pytest.approx(1.0) for c in recipes["comparison"]
    )  # iso-FLOP pairs
    assert json.loads((tmp_path / "train_compiled.json").read_text())["config"]["compile"] is True


def test_gpu_suite_help_prints_usage_and_runs_nothing(tmp_path):
    for flag in ("--help", "-h"):
        result = subprocess.run(
            ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), flag],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "--fetch-wheels" in result.stdout and "GPU_SUITE_BUDGET_S" in result.stdout
        assert "set -uo pipefail" not in result.stdout  # the header comment only
    assert not (ROOT / "--help").exists() and not list(tmp_path.iterdir())  # no folder named --help
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr


def test_gpu_suite_deadline_stops_a_stage_and_records_it(tmp_path):
    """A budget too small for the suite: its stage is stopped at the deadline (not run to the end),
    the recipes get what is left or are skipped, and gpu_suite.json says so; exit status 124."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "GPU_SUITE_BUDGET_S": "9",
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 124, result.stdout[-2000:] + result.stderr[-2000:]
    status = json.loads((tmp_path / "gpu_suite.json").read_text())
    stages = {s["stage"]: s["status"] for s in status["stages"]}
    assert status["budget_s"] == 9 and stages["suite"] in ("timed_out", "skipped"), (
        stages,
        seconds,
    )
    assert stages["recipes"] in ("skipped", "timed_out", "ok")
    assert seconds < 9 + 10 + 30, (
        stages
    )  # the budget, timeout's kill grace, start-ups on a loaded machine
    assert not (tmp_path / "trainer_compiled.json").exists()  # the suite's last benchmark never ran


def test_masked_memory_growth_benchmark_smoke(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "masked_memory_growth", Path(__file__).parents[1] / "benchmarks" / "masked_memory_growth.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "growth.json"
    result = module.main(
        ["--steps", "6", "--every", "2", "--width", "32", "--batch", "4", "--out", str(out)]
    )
    assert [r["step"] for r in result["rows"]] == [0, 2, 4, 6] and all(
        r["rss_mib"] > 0 for r in result["rows"]
    )
    assert json.loads(out.read_text())["seq_len"] == 256


def test_bench_sampling_describes_the_checkpoint_not_the_cli_defaults(tmp_path, capsys):
    import yaml

    from elt.inference.checkpoints import resolve_checkpoint
    from elt.inference.files import CONFIG_FILE

    assert (
        main(
            [
                "bench",
                "sampling",
                "--ckpt",
                "demo:masked",
                "--threads",
                "1",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--loops-list",
                "1,2",
                "--batches",
                "1",
                "--batch",
                "1",
                "--sample-steps",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    cfg = yaml.safe_load((resolve_checkpoint("demo:masked") / CONFIG_FILE).read_text())
    result = json.loads((tmp_path / "sampling.json").read_text())
    model = result["model"]
    assert (model["paradigm"], model["mode"]) == (cfg["paradigm"], cfg["ilsd"]["mode"])
    assert [model[k] for k in ("width", "heads", "unique_layers", "loops")] == [
        cfg["model"][k] for k in ("width", "heads", "unique_layers", "loops")
    ]
    assert (
        cfg["model"]["width"] != 256
    )  # the CLI's default width: the check below can tell them apart
    assert "width" not in result["config"] and "--width" not in result["command"]
    assert [r["loops"] for r in result["by_batch"]] == [
        cfg["model"]["loops"]
    ]  # the batch table at its L_max
    header = capsys.readouterr().out.splitlines()[0]
    assert (
        f"{cfg['paradigm']} {cfg['model']['unique_layers']}N×{cfg['model']['loops']}L" in header
        and f"width {cfg['model']['width']}," in header
    )


def test_bench_sampling_times_the_loop_table_at_every_batch_size_of_batches(tmp_path, monkeypatch):
    from collections import Counter

    from elt.bench.models import BenchModel

    calls = Counter()  # (batch, loops) of every forward pass of the tiny model
    states = BenchModel.states

    def counting(self, data, loops=None, exit_loops=()):
        calls[data["inputs"].shape[0], loops] += 1
        return states(self, data, loops=loops, exit_loops=exit_loops)

    monkeypatch.setattr(BenchModel, "states", counting)
    assert (
        main(
            [
                "bench",
                "sampling",
                "--width",
                "16",
                "--heads",
                "1",
                "--unique-layers",
                "1",
                "--max-loops",
                "3",
                "--tokens",
                "4",
                "--vocab",
                "8",
                "--sample-steps",
                "1",
                "--warmup",
                "1",
                "--repeats",
                "2",
                "--loops-list",
                "1,2",
                "--batches",
                "2,3",
                "--batch",
                "5",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    # every (batch, loops) point: 1 warm-up + 2 timed calls; the loop table at batches 2 and 3, the
    # batch table at L_max = 3; --batch (5) plays no part
    assert calls == {(b, L): 3 for b in (2, 3) for L in (1, 2, 3)}
    result = json.loads((tmp_path / "sampling.json").read_text())
    assert [(r["batch"], r["loops"]) for r in result["by_loops"]] == [
        (2, 1),
        (2, 2),
        (3, 1),
        (3, 2),
    ]
    assert [(r["batch"], r["loops"]) for r in result["by_batch"]] == [(2, 3), (3, 3)]
    assert result["per_loop"]["batch"] == 3 and "--batches 2,3" in result["command"]
