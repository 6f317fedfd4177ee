"""Loop schedules, adaptive exit and the operating-point grammar (elt.core.schedule /
elt.core.adaptive)."""

from __future__ import annotations

import numpy as np
import pytest

from elt.core.schedule import (
    AdaptiveExit,
    Ramp,
    ScheduleError,
    Segments,
    as_point,
    loops_per_step,
    parse_loops,
    parse_point,
    point_label,
    resolve,
)
from elt.errors import UserError

DEMO = {p: f"src/elt/assets/demo/{p}" for p in ("masked", "diffusion")}


@pytest.fixture(scope="module")
def demo_models():
    from pathlib import Path

    import torch

    from elt.inference.checkpoints import load_generator

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parent.parent
    return {p: load_generator(root / path) for p, path in DEMO.items()}


def in_fp32(generator):
    """A copy that samples in float32 even where the checkpoint trained in bf16 (the demo models):
    bf16 matmul kernels (oneDNN/AMX on CPUs with native bf16) round differently for different batch
    sizes, so a sample's bits depend on its batch there; the per-sample tests below check the
    compaction logic, not the kernels."""
    import copy

    generator = copy.deepcopy(generator)
    generator.config.sampling.precision = "fp32"
    return generator


# -- the grammar -----------------------------------------------------------------------------------
def test_parse_every_form():
    assert parse_loops("1-3,2,6") == [1, 2, 3, 6]
    assert parse_point("4:1") == Ramp(4, 1)
    assert parse_point("1x12+4x13") == Segments(((1, 12), (4, 13)))
    assert parse_point("exit:0.05") == AdaptiveExit(0.05)
    assert parse_point("exit:0.1:3-6") == AdaptiveExit(0.1, 3, 6)
    assert parse_point("exit:inf").threshold == float("inf")
    assert parse_loops("1,4:1,exit:0.05") == [1, Ramp(4, 1), AdaptiveExit(0.05)]


def test_expansion():
    assert Ramp(4, 1).expand(4) == [4, 3, 2, 1]
    assert Ramp(1, 4).expand(7) == [1, 2, 2, 3, 3, 4, 4]  # rounds half up
    assert Ramp(3, 1).expand(1) == [3]
    assert loops_per_step("1x2+4x3", 5, 4) == [1, 1, 4, 4, 4]
    assert loops_per_step(None, 3, 4) == [4, 4, 4]
    assert loops_per_step([2, 2, 3], 3, 4) == [2, 2, 3]
    assert resolve("exit:0.1", 5, 4) == AdaptiveExit(0.1, 2, 4)
    assert resolve("exit:0.1:2-7", 5, 4).max_loops == 7  # max may exceed L_max


@pytest.mark.parametrize(
    "point", ["3", "4:1", "1x6+4x6", "exit:0.05", "exit:0.1:3-6", "exit:0:3-", "exit:inf"]
)
def test_labels_round_trip(point):
    assert point_label(parse_point(point)) == point
    assert parse_point(point_label(parse_point(point))) == parse_point(point)


def test_list_becomes_segments():
    assert point_label([4] * 3 + [2] * 2) == "4x3+2x2"
    assert as_point([4, 4, 2, 2, 2]) == Segments(((4, 2), (2, 3)))


@pytest.mark.parametrize(
    "bad, words",
    [
        ("0", "loop counts must be >= 1"),
        ("4:0", ">= 1"),
        ("a", "invalid loops"),
        ("3-1", "empty loop range"),
        ("1x3+4", "bad loop schedule segment"),
        ("1x0", "covers no steps"),
        ("exit:-1", "threshold must be >= 0"),
        ("exit:abc", "bad exit threshold"),
        ("exit:0.1:1-4", "min loops >= 2"),
        ("exit:0.1:5-3", "below min"),
        ("exit:nan", "threshold must be >= 0"),
        ("", "no loop counts"),
    ],
)
def test_bad_points_are_one_line_user_errors(bad, words):
    with pytest.raises(UserError, match=words) as info:
        parse_loops(bad)
    assert "\n" not in str(info.value)


def test_schedule_must_cover_the_steps():
    with pytest.raises(ScheduleError, match="covers 5 steps but sampling uses 6"):
        loops_per_step("1x2+4x3", 6, 4)
    with pytest.raises(ScheduleError, match="covers 6 steps but sampling uses 5"):
        loops_per_step([1] * 6, 5, 4)
    with pytest.raises(ScheduleError, match="adaptive exit"):
        loops_per_step("exit:0.1", 5, 4)
    with pytest.raises(ScheduleError, match="sampling takes one"):
        as_point("1,2")


# -- both paradigms follow the same contract -------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
def test_schedule_contract(demo_models, paradigm):
    """A ramp, its list and its segments are one schedule; the loops used per step are returned as
    given; GFLOPs of a schedule are the mean of its steps' fixed-L costs."""
    g = demo_models[paradigm]
    steps = 4
    labels = [0, 1, 2]
    ramp, used = g.generate(labels, loops="4:1", steps=steps, seed=1, return_loops=True)
    assert used.shape == (3, steps) and (used == np.array([4, 3, 2, 1])).all()
    np.testing.assert_array_equal(ramp, g.generate(labels, loops=[4, 3, 2, 1], steps=steps, seed=1))
    np.testing.assert_array_equal(
        ramp, g.generate(labels, loops="4x1+3x1+2x1+1x1", steps=steps, seed=1)
    )
    fixed = {k: g.gflops_per_sample(loops=k, steps=steps) for k in (1, 2, 3, 4)}
    assert g.gflops_per_sample(loops="4:1", steps=steps) == pytest.approx(
        np.mean(list(fixed.values()))
    )
    assert g.gflops_per_sample(loops=2, steps=steps) == pytest.approx(
        g.gflops_per_sample(loops="exit:0", steps=steps, loops_used=np.full((3, steps), 2)), rel=0.2
    )
    with pytest.raises(ScheduleError, match="covers 3 steps but sampling uses 4"):
        g.generate(labels, loops="1x3", steps=steps)


# -- adaptive exit ---------------------------------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
@pytest.mark.parametrize("guidance_on", [False, True])
def test_threshold_zero_is_fixed_max_and_inf_is_min(demo_models, paradigm, guidance_on):
    g = demo_models[paradigm]
    guidance = (
        2.0 if guidance_on else 1.0
    )  # s = 1: conditional only (one branch); s = 2: both CFG branches
    labels, steps = [0, 3, 5, 7], 3
    kw = dict(steps=steps, guidance=guidance, seed=2)
    adaptive, used = g.generate(labels, loops="exit:0:2-5", return_loops=True, **kw)
    assert (used == 5).all()
    np.testing.assert_array_equal(adaptive, g.generate(labels, loops=5, **kw))
    adaptive, used = g.generate(labels, loops="exit:inf:3-5", return_loops=True, **kw)
    assert (used == 3).all()
    np.testing.assert_array_equal(adaptive, g.generate(labels, loops=3, **kw))


@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
def test_per_sample_exits_match_each_sample_alone(demo_models, paradigm):
    """Samples that exit at different loops inside one batch are the images each gives alone
    (per-sample seeds)."""
    g = in_fp32(demo_models[paradigm])
    threshold = {"masked": 0.08, "diffusion": 0.05}[paradigm]
    labels, seeds, steps = [0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], 4
    point = f"exit:{threshold}:2-6"
    batch, used = g.generate(labels, loops=point, steps=steps, seeds=seeds, return_loops=True)
    assert len(np.unique(used)) > 1, "the threshold should make samples exit at different loops"
    for i, (label, seed) in enumerate(zip(labels, seeds, strict=True)):
        alone, used_alone = g.generate(
            [label], loops=point, steps=steps, seeds=[seed], return_loops=True
        )
        np.testing.assert_array_equal(used_alone[0], used[i])
        assert np.abs(alone[0].astype(int) - batch[i].astype(int)).max() <= 1


@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
def test_adaptive_exit_reinjects_the_input_of_the_samples_still_looping(demo_models, paradigm):
    """With input injection, each sample's loop input follows it through the active-row
    compaction."""

    import torch
    from torch import nn

    g = in_fp32(demo_models[paradigm])
    torch.manual_seed(0)
    g.backbone.inject = nn.Linear(g.backbone.dim, g.backbone.dim)
    nn.init.normal_(g.backbone.inject.weight, std=0.02)
    plain = in_fp32(demo_models[paradigm])
    labels, seeds, steps = [0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], 3
    fixed = g.generate(labels, loops=4, steps=steps, seeds=seeds)
    assert not np.array_equal(fixed, plain.generate(labels, loops=4, steps=steps, seeds=seeds))
    np.testing.assert_array_equal(
        g.generate(labels, loops="exit:0:2-4", steps=steps, seeds=seeds), fixed
    )
    threshold = {"masked": 0.08, "diffusion": 0.05}[paradigm]
    batch, used = g.generate(
        labels, loops=f"exit:{threshold}:2-6", steps=steps, seeds=seeds, return_loops=True
    )
    assert len(np.unique(used)) > 1, "the threshold should make samples exit at different loops"
    for i in (0, 3, 5):
        alone, used_alone = g.generate(
            [labels[i]],
            loops=f"exit:{threshold}:2-6",
            steps=steps,
            seeds=[seeds[i]],
            return_loops=True,
        )
        np.testing.assert_array_equal(used_alone[0], used[i])
        assert np.abs(alone[0].astype(int) - batch[i].astype(int)).max() <= 1


def test_per_sample_seeds_leave_batch_seed_path_alone(demo_models):
    """The default (one stream per batch) is unchanged by the per-sample option; per-sample streams
    make a sample independent of its batch."""
    g = demo_models["diffusion"]
    a = g.generate([0, 1], steps=3, seeds=[5, 6])
    b = g.generate([1], steps=3, seeds=[6])
    assert np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="one seed per sample"):
        g.generate([0, 1], steps=3, seeds=[5])


def test_adaptive_gflops_need_the_loops_used(demo_models):
    g = demo_models["diffusion"]
    with pytest.raises(ValueError, match="loops_used"):
        g.gflops_per_sample(loops="exit:0.1")
    low = g.gflops_per_sample(loops="exit:0.1", steps=3, loops_used=np.full((2, 3), 2))
    high = g.gflops_per_sample(loops="exit:0.1", steps=3, loops_used=np.full((2, 3), 4))
    assert low < high


def test_masked_adaptive_gflops_follow_the_operations_run(demo_models):
    """The analytic count of an adaptive exit (head read after every loop, on the still-masked
    positions only) tracks PyTorch's FLOP counter as closely as the count of a fixed loop count
    does."""
    from torch.utils.flop_counter import FlopCounterMode

    g = demo_models["masked"]
    labels = list(range(6))
    ratios = {}
    for loops in (2, "exit:0.2", "exit:0:2-4"):
        with FlopCounterMode(display=False) as counter:
            _, used = g.generate(labels, loops=loops, steps=6, seed=0, return_loops=True)
        counted = counter.get_total_flops() / len(labels) / 1e9
        ratios[loops] = g.gflops_per_sample(loops=loops, steps=6, loops_used=used) / counted
    assert ratios["exit:0.2"] == pytest.approx(ratios[2], rel=0.01)
    assert ratios["exit:0:2-4"] == pytest.approx(ratios[2], rel=0.01)


# -- picking a point from a calibration ------------------------------------------------------------
def _calibration():
    from elt.eval.calibrate import pareto

    points = [
        {"loops": "1", "gflops": 2.0, "latency_ms": 100.0, "fd_cls": 30.0, "class_acc": 0.85},
        {"loops": "2", "gflops": 4.0, "latency_ms": 190.0, "fd_cls": 20.0, "class_acc": 0.90},
        {"loops": "4", "gflops": 8.0, "latency_ms": 380.0, "fd_cls": 18.0, "class_acc": 0.91},
        {
            "loops": "exit:0.05",
            "gflops": 4.6,
            "latency_ms": 230.0,
            "fd_cls": 18.5,
            "class_acc": 0.91,
        },
        {"loops": "4:1", "gflops": 5.0, "latency_ms": 250.0, "fd_cls": 21.0, "class_acc": 0.90},
    ]
    assert pareto(points, "gflops") == [True, True, True, True, False]
    return {"points": points, "path": "calibration.json"}


def test_choose_point_for_budget_quality_and_both():
    from elt.anytime import choose_loops

    record = _calibration()
    assert choose_loops(record, budget_ms=200) == "2"  # best FD_cls within 200 ms
    assert choose_loops(record, budget_ms=240) == "exit:0.05"
    assert choose_loops(record, fd_cls=19) == "exit:0.05"  # cheapest with FD_cls <= 19
    assert choose_loops(record, fd_cls=25) == "2"
    assert choose_loops(record, fd_cls=19, budget_ms=1000) == "exit:0.05"
    for point in ("1", "2", "exit:0.05"):
        assert parse_point(point) is not None  # what was picked is a valid --loops value


@pytest.mark.parametrize(
    "target, words",
    [
        (
            {"fd_cls": 5.0},
            "no calibrated point reaches FD_cls <= 5; the best is loops 4 (FD_cls 18",
        ),
        (
            {"budget_ms": 50},
            "no calibrated point runs within 50 ms; the fastest is loops 1 (FD_cls 30",
        ),
        (
            {"budget_ms": 150, "fd_cls": 19},
            "no calibrated point meets FD_cls <= 19 within 150 ms; the closest is loops 1",
        ),
        ({"budget_ms": -1}, "--budget-ms must be a positive number"),
        ({}, "give a target"),
    ],
)
def test_unmeetable_or_bad_targets_are_one_line_errors(target, words):
    from elt.anytime import TargetError, choose_point

    with pytest.raises(TargetError) as info:
        choose_point(_calibration(), **target)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_calibration_names_the_command(tmp_path):
    from elt.anytime import TargetError, load_calibration

    with pytest.raises(TargetError, match="run 'elt calibrate --ckpt"):
        load_calibration(tmp_path)


# -- config and CLI --------------------------------------------------------------------------------
def test_config_sampling_loops_is_the_default_point(demo_models, tmp_path):
    import elt
    from elt.errors import ConfigError

    g = elt.load(DEMO["diffusion"], overrides=["sampling.loops=2:1"])
    _, used = g.generate([0], steps=3, return_loops=True)
    assert used.tolist() == [[2, 2, 1]]  # round-half-up ramp from 2 to 1 over 3 steps
    _, used = g.generate([0], loops=3, steps=3, return_loops=True)  # an explicit argument wins
    assert used.tolist() == [[3, 3, 3]]
    with pytest.raises(ConfigError, match="sampling.loops"):
        elt.load(DEMO["diffusion"], overrides=["sampling.loops=exit:-1"])


def test_cli_bad_loops_and_targets_exit_2_with_one_line(tmp_path, capsys):
    from elt.cli import main

    for argv, words in [
        (
            ["sample", "--ckpt", DEMO["masked"], "--loops", "2:x", "--out", str(tmp_path / "a")],
            "invalid loops '2:x'",
        ),
        (
            ["sample", "--ckpt", DEMO["masked"], "--loops", "1x5", "--out", str(tmp_path / "a")],
            "covers 5 steps but sampling uses 12 steps",
        ),
        (
            [
                "sample",
                "--ckpt",
                DEMO["masked"],
                "--budget-ms",
                "100",
                "--calibration",
                str(tmp_path),
                "--out",
                str(tmp_path / "a"),
            ],
            "no calibration.json",
        ),
        (
            [
                "sample",
                "--ckpt",
                DEMO["masked"],
                "--budget-ms",
                "100",
                "--loops",
                "2",
                "--out",
                str(tmp_path / "a"),
            ],
            "either --loops or a target",
        ),
        (
            [
                "calibrate",
                "--ckpt",
                DEMO["masked"],
                "--loops",
                "exit:0.1:1-4",
                "--out",
                str(tmp_path / "c"),
            ],
            "min loops >= 2",
        ),
    ]:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's one-line usage error (a bad --loops value)
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert "error:" in err and words in err and "\n" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_sample_writes_the_loops_used_beside_the_samples(tmp_path):
    import json

    from elt.cli import main

    out = tmp_path / "s"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                DEMO["diffusion"],
                "--loops",
                "2,exit:0.05",
                "--num",
                "4",
                "--steps",
                "3",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads((out / "samples.json").read_text())
    assert record["files"] == {"2": "samples_L2.npz", "exit:0.05": "samples_Lexit_0.05.npz"}
    with np.load(out / "samples_Lexit_0.05.npz") as data:
        assert data["arr_0"].shape[0] == 4 and data["loops"].shape == (4, 3)
        assert record["loops_used"]["exit:0.05"]["mean"] == pytest.approx(data["loops"].mean())
    with np.load(out / "samples_L2.npz") as data:
        assert (data["loops"] == 2).all()


@pytest.mark.slow
def test_calibrate_then_sample_for_a_target(tmp_path, capsys):
    import json

    from elt.cli import main
    from elt.data.fashion_mnist import DataNotFoundError, locate

    try:
        locate(None, "test")
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (make data)")
    out = tmp_path / "cal"
    assert (
        main(
            [
                "calibrate",
                "--ckpt",
                DEMO["diffusion"],
                "--out",
                str(out),
                "--loops",
                "1,2,exit:0.1",
                "--num",
                "20",
                "--batch-size",
                "10",
                "--steps",
                "3",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads((out / "calibration.json").read_text())
    assert [p["loops"] for p in record["points"]] == ["1", "2", "exit:0.1"]
    for p in record["points"]:
        assert (
            p["gflops"] > 0 and p["latency_ms"] > 0 and 0 <= p["class_acc"] <= 1 and p["fd_cls"] > 0
        )
    assert record["points"][0]["gflops"] < record["points"][1]["gflops"]
    assert all((out / name).is_file() for name in ("pareto.json", "pareto.csv", "pareto.png"))
    best = min(record["points"], key=lambda p: p["fd_cls"])
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                "--ckpt",
                DEMO["diffusion"],
                "--calibration",
                str(out),
                "--quality",
                str(best["fd_cls"] * 1.0001),
                "--num",
                "2",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "s"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert f"picked {best['loops']}" in capsys.readouterr().out
