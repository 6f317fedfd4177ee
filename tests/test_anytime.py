"""Loop schedules, adaptive exit and the operating-point grammar (elt.core.schedule / elt.core.adaptive)."""

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

    from elt.train.checkpoint import load_generator

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parent.parent
    return {p: load_generator(root / path) for p, path in DEMO.items()}


# -- the grammar -------------------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("point", ["3", "4:1", "1x6+4x6", "exit:0.05", "exit:0.1:3-6", "exit:0:3-", "exit:inf"])
def test_labels_round_trip(point):
    assert point_label(parse_point(point)) == point
    assert parse_point(point_label(parse_point(point))) == parse_point(point)


def test_list_becomes_segments():
    assert point_label([4] * 3 + [2] * 2) == "4x3+2x2"
    assert as_point([4, 4, 2, 2, 2]) == Segments(((4, 2), (2, 3)))


@pytest.mark.parametrize("bad, words", [
    ("0", "loop counts must be >= 1"), ("4:0", ">= 1"), ("a", "invalid loops"), ("3-1", "empty loop range"),
    ("1x3+4", "bad loop schedule segment"), ("1x0", "covers no steps"), ("exit:-1", "threshold must be >= 0"),
    ("exit:abc", "bad exit threshold"), ("exit:0.1:1-4", "min loops >= 2"), ("exit:0.1:5-3", "below min"),
    ("exit:nan", "threshold must be >= 0"), ("", "no loop counts"),
])
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


# -- both paradigms follow the same contract ------------------------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
def test_schedule_contract(demo_models, paradigm):
    """A ramp, its list and its segments are one schedule; the loops used per step are returned as given;
    GFLOPs of a schedule are the mean of its steps' fixed-L costs."""
    g = demo_models[paradigm]
    steps = 4
    labels = [0, 1, 2]
    ramp, used = g.generate(labels, loops="4:1", steps=steps, seed=1, return_loops=True)
    assert used.shape == (3, steps) and (used == np.array([4, 3, 2, 1])).all()
    np.testing.assert_array_equal(ramp, g.generate(labels, loops=[4, 3, 2, 1], steps=steps, seed=1))
    np.testing.assert_array_equal(ramp, g.generate(labels, loops="4x1+3x1+2x1+1x1", steps=steps, seed=1))
    fixed = {k: g.gflops_per_sample(loops=k, steps=steps) for k in (1, 2, 3, 4)}
    assert g.gflops_per_sample(loops="4:1", steps=steps) == pytest.approx(np.mean(list(fixed.values())))
    assert g.gflops_per_sample(loops=2, steps=steps) == pytest.approx(
        g.gflops_per_sample(loops="exit:0", steps=steps, loops_used=np.full((3, steps), 2)), rel=0.2)
    with pytest.raises(ScheduleError, match="covers 3 steps but sampling uses 4"):
        g.generate(labels, loops="1x3", steps=steps)


# -- adaptive exit --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["masked", "diffusion"])
@pytest.mark.parametrize("guidance_on", [False, True])
def test_threshold_zero_is_fixed_max_and_inf_is_min(demo_models, paradigm, guidance_on):
    g = demo_models[paradigm]
    guidance = ({"masked": 1.0, "diffusion": 2.0} if guidance_on else {"masked": 0.0, "diffusion": 1.0})[paradigm]
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
    """Samples that exit at different loops inside one batch are the images each gives alone (per-sample seeds)."""
    g = demo_models[paradigm]
    threshold = {"masked": 0.08, "diffusion": 0.05}[paradigm]
    labels, seeds, steps = [0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], 4
    point = f"exit:{threshold}:2-6"
    batch, used = g.generate(labels, loops=point, steps=steps, seeds=seeds, return_loops=True)
    assert len(np.unique(used)) > 1, "the threshold should make samples exit at different loops"
    for i, (label, seed) in enumerate(zip(labels, seeds, strict=True)):
        alone, used_alone = g.generate([label], loops=point, steps=steps, seeds=[seed], return_loops=True)
        np.testing.assert_array_equal(used_alone[0], used[i])
        assert np.abs(alone[0].astype(int) - batch[i].astype(int)).max() <= 1


def test_per_sample_seeds_leave_batch_seed_path_alone(demo_models):
    """The default (one stream per batch) is unchanged by the per-sample option; per-sample streams make a
    sample independent of its batch."""
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
