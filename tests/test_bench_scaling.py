"""``elt bench scaling``: the cost fit recovers known costs, the smoke run measures every axis of
both paradigms and writes its JSON and plots whole, bad options are one-line errors."""

import argparse
import json
import random

import pytest

from elt.bench import scaling
from elt.bench.scaling import AXES, fit_cost
from elt.cli import main


def test_fit_recovers_fixed_and_per_unit_costs_of_exact_timings():
    xs = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
    ys = [12.5 + 3.25 * x for x in xs]
    for relative in (False, True):
        fit = fit_cost(xs, ys, relative=relative)
        assert fit["fixed_ms"] == pytest.approx(12.5) and fit["ms_per_unit"] == pytest.approx(3.25)
        assert fit["predicted_ms"] == pytest.approx(ys)
        assert fit["max_abs_relative_residual"] == pytest.approx(0, abs=1e-12)
        assert "note" not in fit


def test_fit_reproduces_noisy_timings_within_their_noise():
    """Timings with ±3 % multiplicative noise: every fitted value within 6 % of its measured point,
    and the costs within 10 % of the true ones."""
    rng = random.Random(0)
    xs = [1.0, 4.0, 16.0, 64.0, 256.0]
    truth = [40.0 + 7.0 * x for x in xs]
    ys = [y * (1 + rng.uniform(-0.03, 0.03)) for y in truth]
    fit = fit_cost(xs, ys, relative=True)
    assert fit["max_abs_relative_residual"] < 0.06
    assert all(abs(p - y) / y < 0.06 for p, y in zip(fit["predicted_ms"], ys, strict=True))
    assert fit["fixed_ms"] == pytest.approx(40.0, rel=0.1)
    assert fit["ms_per_unit"] == pytest.approx(7.0, rel=0.1)


def test_relative_fit_keeps_the_small_points_on_a_x4_spaced_axis():
    """Why batch and tokens are fitted relatively: 5 % off at the largest point moves the ordinary
    line's fixed cost far off (the batch-1 point misfitted by over 10 %); the relative fit stays
    within a few % everywhere."""
    xs = [1.0, 4.0, 16.0, 64.0, 256.0]
    ys = [10.0 + 2.0 * x for x in xs]
    ys[-1] *= 1.05
    ordinary, relative = fit_cost(xs, ys), fit_cost(xs, ys, relative=True)
    assert abs(ordinary["relative_residuals"][0]) > 0.1
    assert relative["max_abs_relative_residual"] < 0.05


def test_a_negative_cost_gets_a_note_not_a_silent_number():
    fit = fit_cost([1.0, 2.0, 3.0], [1.0, 5.0, 6.0])
    assert fit["fixed_ms"] < 0 and fit["note"] == scaling.NEGATIVE_FIXED
    fit = fit_cost([1.0, 2.0], [5.0, 4.0])
    assert fit["ms_per_unit"] < 0 and fit["note"] == scaling.NEGATIVE_SLOPE
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_cost([1.0], [2.0])


@pytest.mark.slow
def test_scaling_smoke_measures_every_axis_of_both_paradigms(tmp_path, capsys):
    assert main(["bench", "scaling", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert sorted(result["paradigms"]) == ["diffusion", "masked"]
    assert result["config"]["precision"] == "bf16"  # auto: the demo models' sampling precision
    assert "--smoke" in result["command"] and "elt bench scaling" in result["command"]
    for paradigm, entry in result["paradigms"].items():
        base = entry["base"]
        assert list(entry["axes"]) == list(AXES)
        assert base["loops"] == entry["model"]["max_loops"] == 2  # the smoke model's L_max
        axes = entry["axes"]
        assert axes["batch"]["values"] == [1, 4] and axes["loops"]["values"] == [1, 2, 3]
        assert axes["steps"]["values"] == [1, 2, 3]
        assert axes["tokens"]["values"] == sorted({4, 8, entry["model"]["demo_grid"]})
        assert axes["tokens"]["x"] == [v * v for v in axes["tokens"]["values"]]
        for axis, row in axes.items():
            assert len(row["ms"]) == len(row["values"]) and all(ms > 0 for ms in row["ms"])
            fit = row["fit"]  # the recorded fit is the line through the recorded points
            assert fit["predicted_ms"] == pytest.approx(
                [fit["fixed_ms"] + fit["ms_per_unit"] * x for x in row["x"]]
            )
            refit = fit_cost(row["x"], row["ms"], relative=scaling.RELATIVE_FIT[axis])
            assert refit["ms_per_unit"] == pytest.approx(fit["ms_per_unit"])
            assert f"{paradigm} — {axis}:" in out
        # the work timed grows as the analytical account says: GFLOPs ∝ batch, affine in loops
        # and steps (per step: L loops + the head), more per token at a larger grid
        gflop = axes["batch"]["gflop"]
        assert gflop[1] == pytest.approx(4 * gflop[0])
        steps = axes["steps"]["gflop"]
        assert steps[1] - steps[0] == pytest.approx(steps[2] - steps[1]) and steps[1] > steps[0]
        loops = axes["loops"]["gflop"]
        assert loops[1] - loops[0] == pytest.approx(loops[2] - loops[1]) and loops[1] > loops[0]
        assert axes["tokens"]["gflop"] == sorted(axes["tokens"]["gflop"])
        # the base point (batch 4, L 2, 2 steps, the demo grid) lies on every axis: its time in each
        spread = entry["base_ms_by_axis"]
        assert spread["loops"] == axes["loops"]["ms"][axes["loops"]["values"].index(2)]
        assert (
            spread["tokens"] == axes["tokens"]["ms"][axes["tokens"]["values"].index(base["grid"])]
        )
        assert set(spread) == {"batch", "loops", "tokens", "steps"}
    plots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert plots == ["scaling_diffusion.png", "scaling_masked.png"]
    assert result["plots"] == [str(tmp_path / name) for name in plots]
    for name in plots:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing else (no temporaries)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*plots, "scaling.json"])
    # the plots can be drawn again from the JSON alone (where matplotlib was missing)
    for name in plots:
        (tmp_path / name).unlink()
    assert scaling.replot(str(tmp_path / "scaling.json")) == result["plots"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in plots)


def test_a_failing_run_leaves_the_previous_json_whole(tmp_path, monkeypatch):
    """The JSON is written once, atomically, after every axis: a run that fails half-way leaves
    the previous file as it was and no partial one."""
    previous = tmp_path / "scaling.json"
    previous.write_text('{"previous": true}\n')
    calls = []

    def failing(fns, device, warmup, repeats):
        calls.append(len(fns))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return {name: 0.001 for name in fns}

    monkeypatch.setattr(scaling, "time_interleaved", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["bench", "scaling", "--smoke", "--paradigms", "diffusion", "--out", str(tmp_path)])
    assert calls == [2, 3]  # the batch axis (1, 4), then the loops axis (1, 2, 3) failed
    assert previous.read_text() == '{"previous": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scaling.json"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--paradigms", "video"], "--paradigms: 'video' is not one of diffusion, masked"),
        (["--loops-list", "exit:0.1"], "--loops-list: scaling takes loop counts"),
        (["--grids", "8"], "--grids: a line fit needs at least 2 different values"),
    ],
)
def test_bad_scaling_options_are_one_line_errors(tmp_path, capsys, options, message):
    assert main(["bench", "scaling", *options, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_each_benchmark_keeps_its_own_defaults(tmp_path, monkeypatch):
    """--loops-list, --warmup and --repeats have no parser default any more (scaling's differ):
    sampling still gets loops 1-4, 3 warm-up and 10 timed calls; scaling 1 and 5 and its axes."""
    from elt.bench import suites

    seen = {}
    monkeypatch.setattr(
        suites, "run_benchmark", lambda name, args: seen.update({name: dict(vars(args))})
    )
    assert main(["bench", "sampling", "--out", str(tmp_path)]) == 0
    assert main(["bench", "scaling", "--out", str(tmp_path)]) == 0
    sampling, scaled = seen["sampling"], seen["scaling"]
    assert sampling["loops_list"] == [1, 2, 3, 4] and sampling["batches"] == [1, 8, 32]
    assert (sampling["warmup"], sampling["repeats"], sampling["precision"]) == (3, 10, "fp32")
    assert (scaled["warmup"], scaled["repeats"], scaled["precision"]) == (1, 5, "bf16")
    assert scaled["loops_list"] is None and scaled["batches"] is None  # its own axes


def test_python_m_elt_bench_sets_threads_as_elt_does(tmp_path, monkeypatch):
    """``python -m elt.bench`` (the GPU suite's entry) applies the thread default of ``elt``: half
    the CPUs, not PyTorch's one thread per core (threads that wait for each other on a busy
    CPU); ``--threads N`` sets N."""
    import torch

    from elt import runtime
    from elt.bench import suites
    from elt.cli.bench import main as bench_main

    for name in ("OMP_NUM_THREADS", runtime.THREADS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 4)
    seen = []
    monkeypatch.setattr(suites, "run", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert bench_main(["scaling", "--out", str(tmp_path)]) == 0
        assert bench_main(["scaling", "--threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1]


def test_the_gpu_suite_runs_scaling_and_peers_at_their_real_sizes(tmp_path, monkeypatch):
    """The suite's own (non-smoke) arguments, as the first GPU run will get them: scaling at the
    documented axes (bf16, 2 warm-up and 10 timed calls), peers on the ImageNet recipes' configs."""
    from elt.bench import suites

    seen = {}
    monkeypatch.setattr(
        suites, "run_benchmark", lambda name, args: seen.setdefault(name, dict(vars(args)))
    )
    assert main(["bench", "suite", "--device", "cpu", "--out", str(tmp_path)]) == 0
    scaled, peers = seen["scaling"], seen["peers"]
    assert (scaled["precision"], scaled["warmup"], scaled["repeats"]) == ("bf16", 2, 10)
    assert scaled["batches"] is None and scaled["loops_list"] is None and not scaled["smoke"]
    values = scaling.axis_values(argparse.Namespace(**scaled), trained_loops=4, demo_side=4)
    assert values == {
        "batch": [1, 4, 16, 64, 256],
        "loops": [1, 2, 3, 4, 5, 6, 7, 8],
        "tokens": [4, 8, 16, 32],
        "steps": [1, 2, 4, 8, 16],
    }
    assert peers["peer_configs"] == list(suites.SUITE_PEER_CONFIGS)
    assert peers["batches"] == [1, 8, 64] and peers["modes"] == ["eager", "compiled"]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["card"].startswith("no GPU (CPU: ")
