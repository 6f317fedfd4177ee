"""Fuzz the command line: ``key=value`` overrides of ``elt train`` (tiny toy sizes) and the flags of
``elt sample`` and ``elt eval``, drawn by Hypothesis from values a hostile or careless user types
(out of range, wrong type, non-finite, huge, empty, interpolations, paths on pseudo filesystems)
mixed with valid ones.

Each example runs ``elt`` in-process in a fresh working directory under a per-case time limit and
checks: no traceback (any exception but the CLI's own exit fails the example), no hang, an exit
status of 0 or 2 whose refusal is an ``elt ...: error:`` line, nothing left behind by a refusal (no
file at all when it came before the work started, never a temporary file). Derandomized: the same
examples on every run."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import TOY_OVERRIDES  # noqa: E402
from elt.cli import main  # noqa: E402

CASE_SECONDS = 20  # per example: a hang fails it (valid toy runs take well under a second)
EXAMPLES = {
    "train": 80,
    "sample": 60,
    "eval": 90,
}  # 230 in CI; ELT_FUZZ_EXAMPLES=N for a longer, random search
SCALE = int(os.environ.get("ELT_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=SCALE or examples,
        deadline=None,
        derandomize=not SCALE,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


class Hang(Exception):
    pass


class Accepted(Exception):
    """Raised in place of ``elt eval``'s sweep: the arguments passed every check before the work."""


# values a user might type for any key: valid small ones and every kind of bad one
NUMBERS = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "0.5",
    "-0.5",
    "1e9",
    "nan",
    "inf",
    "-inf",
    str(2**64),
    str(10**30),
    "1e-12",
]
WORDS = [
    "",
    " ",
    "abc",
    "null",
    "true",
    "[]",
    "[1,2]",
    "[0.9]",
    "{}",
    "${oc.env:HOME}",
    "/proc/x",
    "a\tb",
    "x" * 300,
]


def _fuzz_keys() -> list[str]:
    from elt.config import config_rules

    slow = {
        "train.compile",
        "train.steps",
        "logging.wandb",
        "model.preset",
        "data.num_workers",
        "train.threads",
        "train.device",
        "distributed.strategy",
    }  # minutes, network or process-wide settings when valid
    return sorted(k for k in config_rules() if k not in slow)


@contextlib.contextmanager
def isolated_case():
    """A fresh working directory, the process-wide settings restored, and a time limit."""
    threads, env = torch.get_num_threads(), os.environ.get("ELT_THREADS")
    cwd = os.getcwd()

    def alarm(signum, frame):
        raise Hang(f"no answer within {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    with tempfile.TemporaryDirectory(prefix="elt-fuzz-") as where:
        os.chdir(where)
        try:
            yield Path(where)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(cwd)
            torch.set_num_threads(threads)
            if env is None:
                os.environ.pop("ELT_THREADS", None)
            else:
                os.environ["ELT_THREADS"] = env


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


RUNTIME_STOPS = (
    "loss is nan",
    "loss is inf",
    "loss is -inf",
    "non-finite",
)  # mid-run: the run folder stays


def run_case(argv: list[str], where: Path, before: set[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse usage errors
            status = exc.code
    text = err.getvalue()
    assert "Traceback" not in text, text
    assert status in (0, 2), (status, text)
    after = snapshot(where)
    assert not [p for p in after if ".tmp" in p or p.endswith("~")], (
        after
    )  # never a temporary file left
    if status == 2:
        lines = [line for line in text.strip().splitlines() if not line.startswith("elt: warning:")]
        assert lines and ": error:" in lines[-1], text
        if not any(stop in lines[-1] for stop in RUNTIME_STOPS):
            assert after == before, f"a refusal left files: {sorted(after - before)}\n{text}"
    if os.environ.get("ELT_FUZZ_LOG"):
        print(
            status,
            argv,
            text.strip().splitlines()[-1:] if text.strip() else "",
            file=sys.__stdout__,
        )
    return status, text


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from elt import registry
    from elt.config import load_config
    from elt.train.trainer import train

    registry.register_paradigm("toy", "toy_task")
    run = tmp_path_factory.mktemp("fuzzrun") / "run"
    train(
        load_config(
            None,
            [*TOY_OVERRIDES, "train.steps=2", "logging.tensorboard=false", f"train.out_dir={run}"],
        ),
        progress=False,
    )
    return run


@st.composite
def overrides(draw):
    keys = draw(st.lists(st.sampled_from(_fuzz_keys()), min_size=1, max_size=3, unique=True))
    return [f"{key}={draw(st.sampled_from(NUMBERS + WORDS))}" for key in keys]


@fuzz(EXAMPLES["train"])
@given(items=overrides(), steps=st.sampled_from(["1", "2", "0", "-3", str(2**70), "x"]))
def test_fuzz_train_overrides(toy_run, items, steps):
    with isolated_case() as where:
        (where / "toy.yaml").write_text("paradigm: toy\n")
        before = snapshot(where)
        argv = [
            "train",
            "toy.yaml",
            "--no-progress",
            *TOY_OVERRIDES,
            "logging.tensorboard=false",
            "train.out_dir=run",
            f"train.steps={steps}",
            *items,
        ]
        run_case(argv, where, before)


SAMPLE_FLAGS = {
    "--num": ["1", "2", "0", "-1", str(10**12), "x", "2.5"],
    "--loops": [
        "1",
        "2-3",
        "0",
        "13",
        "1:3",
        "3:1",
        "exit:0.1",
        "exit:nan",
        "exit:0:2-100000000",
        "1-100000",
        "1x4",
        "",
        ",",
        "exit:0.1:1-2",
        "100000000",
    ],
    "--steps": ["1", "3", "0", "100000000", "x"],
    "--guidance": ["0", "1", "2.5", "-1", "nan", "inf", "x"],
    "--seed": ["0", "7", "-5", str(2**64), "1.5"],
    "--batch-size": ["1", "3", "0", str(2**40), "-2"],
    "--out": ["o", "", "   ", ".", "/proc/elt-fuzz", "/dev/null/x", "o/\x01"],
    "--quality": ["5", "nan", "-1"],
    "--budget-ms": ["100", "inf", "0"],
}
SAMPLE_OVERRIDES = [
    "sampling.guidance=2",
    "sampling.guidance=nan",
    "sampling.steps=0",
    "sampling.loops=100",
    "sampling.loops=2",
    "model.width=8",
    "sampling.precision=fp64",
    "masked.temperature_base=-1",
    "sampling.guidance=${oc.env:HOME}",
]


@st.composite
def flags(draw, table: dict[str, list[str]], required: dict[str, str]):
    chosen = draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True))
    argv = []
    for name, value in required.items():
        if name not in chosen:
            argv += [name, value]
    for name in chosen:
        argv += [name, draw(st.sampled_from(table[name]))]
    return argv


@fuzz(EXAMPLES["sample"])
@given(
    argv=flags(SAMPLE_FLAGS, {"--out": "o", "--num": "2"}),
    extra=st.lists(st.sampled_from(SAMPLE_OVERRIDES), max_size=2, unique=True),
    calibration=st.sampled_from(
        [
            None,
            "[1]",
            '{"points": [{"loops": "2", "fd_cls": 1, "latency_ms": 1}]}',
            '{"points": [{"loops": "99", "fd_cls": 1, "latency_ms": 1}]}',
            "{bad",
        ]
    ),
)
def test_fuzz_sample_flags(toy_run, argv, extra, calibration):
    with isolated_case() as where:
        if calibration is not None:
            (where / "calibration.json").write_text(calibration)
            argv = [*argv, "--calibration", "calibration.json"]
        before = snapshot(where)
        run_case(["sample", "--ckpt", str(toy_run), "--no-progress", *argv, *extra], where, before)


EVAL_FLAGS = {
    "--num": ["6", "10", "3", "0", str(10**12), "x"],
    "--loops": ["1", "1-3", "0", "50", "exit:0.1", "1-100000", "2:1"],
    "--steps": ["4", "4,8", "0", "4,100000000", "a,b", ""],
    "--guidance": ["1", "nan", "-inf", "x"],
    "--seed": ["0", "-1", str(2**70)],
    "--batch-size": ["4", "0", str(2**40)],
    "--latency-batch": ["1", "0"],
    "--latency-repeats": ["1", "0", str(10**9)],
    "--metrics": ["domain", "inception", "fvd", "nope"],
    "--classifier": ["garbage.safetensors", "missing.safetensors"],
    "--out": ["e", "", "/proc/elt-fuzz", "/sys/x"],
    "--samples": ["nowhere", "."],
}


@fuzz(EXAMPLES["eval"])
@given(argv=flags(EVAL_FLAGS, {"--out": "e", "--loops": "1", "--num": "6"}))
def test_fuzz_eval_flags(toy_run, argv, monkeypatch):
    import elt.eval.run as eval_run

    def accepted(*args):
        raise Accepted

    monkeypatch.setattr(
        eval_run, "sweep", accepted
    )  # past every argument check: the sweep itself is not fuzzed
    with isolated_case() as where:
        (where / "garbage.safetensors").write_bytes(os.urandom(512))
        before = snapshot(where)
        try:
            run_case(
                ["eval", "--ckpt", str(toy_run), "--no-progress", "--no-latency", *argv],
                where,
                before,
            )
        except Accepted:
            assert snapshot(where) == before  # nothing written before the sweep
