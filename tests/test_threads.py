"""One thread setting for every command: --threads > ELT_THREADS > train.threads > OMP_NUM_THREADS >
default."""

import os

import numpy as np
import pytest
import torch

from elt import runtime
from elt.cli import build_parser, main
from elt.demo import wilson_interval
from elt.runtime import THREADS_ENV, default_threads, resolve_threads, set_threads


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_order_flag_env_config_omp_default(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    assert resolve_threads() == (4, "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads()[1] == "OMP_NUM_THREADS"
    assert resolve_threads(config=2) == (2, "train.threads")
    monkeypatch.setenv(THREADS_ENV, "5")
    assert resolve_threads(config=2) == (5, THREADS_ENV)
    assert resolve_threads(requested=6, config=2) == (6, "--threads")


@pytest.mark.parametrize("cpus, expected", [(1, 1), (2, 1), (3, 1), (16, 8)])
def test_default_leaves_room_for_another_job(monkeypatch, cpus, expected):
    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    assert default_threads() == expected


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_env_value_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(runtime.ConfigError, match=THREADS_ENV):
        set_threads()


def test_bad_env_value_from_the_cli_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv(THREADS_ENV, "many")
    assert main(["info", "demo:masked"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("elt: error:") and "ELT_THREADS='many'" in err and "\n" not in err


def test_flag_before_or_after_the_command_sets_threads_and_the_environment(monkeypatch, capsys):
    monkeypatch.setenv(THREADS_ENV, "1")  # restored by monkeypatch after main() overwrites it
    assert main(["--threads", "2", "info", "demo:masked"]) == 0
    assert torch.get_num_threads() == 2 and os.environ[THREADS_ENV] == "2"
    assert main(["info", "demo:masked", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    assert capsys.readouterr().out.count('"paradigm": "masked"') == 2


def test_every_command_accepts_threads():
    parser = build_parser()
    for argv in (
        ["demo"],
        ["sample", "--ckpt", "x", "--out", "y"],
        ["eval", "merge", "a", "--out", "o"],
        ["tokenizer", "train", "cfg"],
        ["train", "cfg"],
        ["export", "--ckpt", "x", "--out", "y"],
    ):
        args, _ = parser.parse_known_args([*argv, "--threads", "3"])
        assert getattr(args, "global_threads", None) == 3 or getattr(args, "threads", None) == 3, (
            argv
        )


def test_threads_means_the_same_setting_in_every_command():
    """Only the classifier training pins its own thread count (its figures are reproducible at 1);
    every other command's --threads is the one global setting, so ELT_THREADS and the default apply
    to all of them alike."""
    parser = build_parser()
    for argv in (
        ["eval", "--ckpt", "x", "--out", "o"],
        ["eval", "floor"],
        ["eval", "video", "--samples", "s"],
        ["calibrate", "--ckpt", "x"],
        ["bench", "sampling"],
        ["demo"],
        ["sample", "--ckpt", "x", "--out", "y"],
    ):
        args, _ = parser.parse_known_args([*argv, "--threads", "3"])
        assert args.global_threads == 3 and not hasattr(args, "threads"), argv


def test_train_threads_applies_without_flag_or_env():
    assert set_threads(config=1) == 1 and torch.get_num_threads() == 1


def test_wilson_interval_matches_the_formula_and_stays_in_range():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    widths = [np.subtract(*wilson_interval(n // 2, n)[::-1]) for n in (10, 50, 200)]
    assert widths[0] > widths[1] > widths[2]  # more samples, tighter bars
