"""The paradigm-agnostic trainer, checkpoints, sampling to disk and the CLI, on the tests' toy
paradigm."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import elt
from conftest import TOY_OVERRIDES
from elt.cli import main
from elt.config import load_config
from elt.inference.checkpoints import resolve_checkpoint
from elt.train.trainer import NonFiniteLossError, Trainer, train


def toy_cfg(tmp_path, *extra):
    return load_config(None, [*TOY_OVERRIDES, f"train.out_dir={tmp_path / 'run'}", *extra])


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_training_reduces_loss_and_logs_ilsd_parts(toy_runs_300, toy_paradigm):
    """300 toy steps with ILSD and vanilla (conftest.toy_runs_300, shared with
    test_eval_sweep.py)."""
    run = toy_runs_300 / "ilsd"
    final = resolve_checkpoint(run)
    log = read_log(run)
    assert log[-1]["teacher_gt"] < 0.3 * log[0]["teacher_gt"]
    assert {"student_gt", "distill", "lambda", "student_loops"} <= log[0].keys()
    assert all(1 <= r["student_loops"] <= 2 for r in log)
    assert log[0]["lambda"] > log[-1]["lambda"]
    assert (final / "model.safetensors").is_file() and (final / "ema.safetensors").is_file()
    assert list((run / "samples").glob("step_*.png"))
    # the trained model reproduces the class templates, at every loop count (ILSD), from the EMA
    # weights
    generator = elt.load(run)
    from toy_task import template_uint8

    want = template_uint8(4)
    for loops in (1, 2, 3):
        got = generator.generate([0, 1, 2, 3], loops=loops, seed=1).astype(np.int64)
        assert np.abs(got - want).mean() < 25, loops
    # the same model trained vanilla (teacher loss only) is clearly worse at L=1 than at L=L_max
    vanilla = elt.load(toy_runs_300 / "vanilla")
    errors = {
        k: np.abs(vanilla.generate([0, 1, 2, 3], loops=k, seed=1).astype(np.int64) - want).mean()
        for k in (1, 3)
    }
    assert errors[1] > 1.5 * errors[3]


def test_same_seed_same_images(toy_paradigm, tmp_path):
    train(toy_cfg(tmp_path, "train.steps=5"), progress=False)
    generator = elt.load(tmp_path / "run")
    a = generator.generate([0, 1, 2], seed=7)
    assert np.array_equal(a, generator.generate([0, 1, 2], seed=7))
    assert not np.array_equal(a, generator.generate([0, 1, 2], seed=8))


def test_resume_is_bit_exact(toy_paradigm, tmp_path):
    straight = toy_cfg(tmp_path / "a", "train.steps=20")
    train(straight, progress=False)
    interrupted = toy_cfg(tmp_path / "b", "train.steps=20")
    Trainer(interrupted, progress=False).fit(until=10)
    assert (tmp_path / "b/run/checkpoints/step_0000010").is_dir()
    train(interrupted, resume="auto", progress=False)
    a = load_file(str(tmp_path / "a/run/checkpoints/step_0000020/model.safetensors"))
    b = load_file(str(tmp_path / "b/run/checkpoints/step_0000020/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_loss_stops_with_the_step(toy_paradigm, tmp_path, monkeypatch):
    trainer = Trainer(toy_cfg(tmp_path, "train.steps=10"), progress=False)
    real = trainer.generator.training_loss

    def poisoned(batch, student_loops, lam):
        terms = real(batch, student_loops, lam)
        if trainer.step == 3:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(trainer.generator, "training_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        trainer.fit()


def test_vanilla_and_unique_modes_train(toy_paradigm, tmp_path):
    for mode in ("vanilla", "unique"):
        train(toy_cfg(tmp_path / mode, "train.steps=3", f"ilsd.mode={mode}"), progress=False)
        log = read_log(tmp_path / mode / "run")
        assert "student_gt" not in log[-1]
    unique = elt.load(tmp_path / "unique" / "run")
    assert (unique.backbone.unique_layers, unique.backbone.loops) == (6, 1)


def test_cli_train_sample_info(toy_paradigm, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "nonexistent.yaml", *TOY_OVERRIDES]) == 2
    assert "not found" in capsys.readouterr().err
    cfg_file = tmp_path / "toy.yaml"
    cfg_file.write_text("paradigm: toy\n")
    assert (
        main(
            [
                "train",
                str(cfg_file),
                "--no-progress",
                *TOY_OVERRIDES,
                "train.steps=4",
                f"train.out_dir={run}",
            ]
        )
        == 0
    )
    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,3",
                "--num",
                "10",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    for loops in (1, 3):
        data = np.load(out / f"samples_L{loops}.npz")
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (10, 4, 4, 1)
        assert np.bincount(data["arr_1"]).tolist() == [3, 3, 2, 2]  # balanced over the 4 classes
    assert (out / "grid.png").is_file()
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["paradigm"] == "toy" and info["trained_loops"] == 3 and info["unique_layers"] == 2
    assert info["gflops_per_sample"]["3"] == pytest.approx(
        3 * info["gflops_per_sample"]["1"], rel=1e-4
    )


def test_cli_errors_are_one_line_and_exit_2(toy_paradigm, tmp_path, capsys):
    assert main(["train", "nope", "model.loop=3"]) == 2
    assert main(["sample", "--ckpt", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("elt: error:") for line in err)
    assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(tmp_path), "--out", "o", "--loops", "0,1"])


def test_compile_flag_compiles_one_block_graph_for_all_blocks_and_loops(
    toy_paradigm, tmp_path, monkeypatch
):
    """train.compile=true compiles each block in place; one graph serves both blocks and all 3
    loops. (The eager backend keeps this fast on CPUs; inductor is what runs on GPUs.)"""
    import functools

    import torch._dynamo

    from elt.train import trainer as trainer_module

    monkeypatch.setattr(
        trainer_module,
        "compile_blocks",
        functools.partial(trainer_module.compile_blocks, backend="eager"),
    )
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    final = train(toy_cfg(tmp_path, "train.steps=3", "train.compile=true"), progress=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert load_file(str(final / "model.safetensors")).keys() == elt.load(final).state_dict().keys()
    torch._dynamo.reset()


def test_log_has_throughput_mfu_memory_and_tensorboard(toy_paradigm, tmp_path, capsys):
    cfg = toy_cfg(
        tmp_path,
        "train.steps=4",
        "logging.every=2",
        "logging.peak_tflops=0.001",
        "logging.wandb=true",
    )
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    assert (
        "wandb is not installed" in capsys.readouterr().err
    )  # asked for but missing: a warning, not a crash
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [2, 4]
    flops = (
        3 * trainer.generator.backbone.flops_per_token(16, 3) * 16
    )  # 4×4 toy image = 16 tokens, 3 loops
    assert trainer.flops_per_sample == pytest.approx(flops)
    for r in log:
        assert r["samples_per_s"] > 0 and r["rss_peak_mib"] > 0
        assert r["tokens_per_s"] == pytest.approx(16 * r["samples_per_s"])
        assert r["mfu"] == pytest.approx(flops * r["samples_per_s"] / 1e9)
    # without a known peak (CPUs) MFU is absent rather than made up
    assert Trainer(toy_cfg(tmp_path / "b"), progress=False).peak is None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/teacher_gt",
        "loss/distill",
        "ilsd/lambda",
        "ilsd/student_loops",
        "perf/samples_per_s",
        "perf/mfu",
    } <= tags
    assert [e.step for e in events.Scalars("loss/loss")] == [2, 4]
