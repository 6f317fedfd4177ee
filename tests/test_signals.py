"""Preemption: SIGTERM/SIGINT checkpoint the current step and stop cleanly; the run resumes
exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TOY_OVERRIDES
from elt.config import load_config
from elt.inference.checkpoints import resolve_checkpoint
from elt.signals import GracefulStop
from elt.train.trainer import Trainer

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
OVERRIDES = [
    *TOY_OVERRIDES,
    "data.limit=40",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.every=1",
    "train.steps=5000",
]

CLI = """
import sys
sys.path.insert(0, {tests!r})
import dist_worker
dist_worker.register()
from elt.cli import main
sys.exit(main(["train", "--no-progress", *{args!r}]))
"""


def test_repeated_sigterm_keeps_the_one_stop_request():
    """torchrun's agent sends its workers SIGTERM more than once: the stop (and its checkpoint) must
    survive."""
    with GracefulStop() as stop:
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert stop.requested and stop.signum == signal.SIGTERM


@pytest.mark.slow
def test_sigterm_under_the_launcher_checkpoints_and_prints_one_stop_message(tmp_path):
    """``python -m elt.train.launch`` (torchrun) with 2 gloo workers; SIGTERM to the launcher, as a
    scheduler sends it: one stop message, a checkpoint, exit 143, no traceback."""
    run = tmp_path / "run"
    config_file = tmp_path / "toy.yaml"
    config_file.write_text("paradigm: toy\n")
    script = tmp_path / "worker.py"
    script.write_text(
        CLI.format(
            tests=str(TESTS),
            args=[str(config_file), *OVERRIDES, "train.device=cpu", f"train.out_dir={run}"],
        )
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "elt.train.launch",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    stops = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stops) == 1, err
    assert resolve_checkpoint(run).name in stops[0]


def test_graceful_stop_turns_the_first_signal_into_a_flag():
    def wait_for(condition=lambda: False, seconds=5.0):
        # the handler runs in the main thread at its next bytecode; a signal that another thread (a
        # BLAS or worker-pool thread) received reaches it only then, so poll instead of one short
        # sleep
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    # Python's own Ctrl-C handler before the stop, whatever an earlier test (a web server, a pool)
    # left
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with GracefulStop() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(lambda: stop.requested)
            assert stop.requested and stop.signum == signal.SIGINT
            with pytest.raises(
                KeyboardInterrupt
            ):  # a second Ctrl-C aborts (within the 5 s this waits)
                os.kill(os.getpid(), signal.SIGINT)
                wait_for()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_the_run_resumes_exactly(toy_paradigm, tmp_path, sig):
    run = tmp_path / "b"
    config_file = tmp_path / "toy.yaml"
    config_file.write_text("paradigm: toy\n")
    args = [str(config_file), *OVERRIDES, f"train.out_dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI.format(tests=str(TESTS), args=args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 60
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    stopped_at = records[-1]["step"]
    assert f"stopped by {signal.Signals(sig).name} at step {stopped_at}" in err
    assert 3 <= stopped_at < 5000
    ckpt = resolve_checkpoint(run)
    assert ckpt.name == f"step_{stopped_at:07d}"
    # resume from the preemption checkpoint and train 3 more steps: same as never stopping
    cfg = load_config(None, [*OVERRIDES, f"train.out_dir={run}"])
    resumed = Trainer(cfg, progress=False)
    resumed.resume_from(run)
    assert resumed.step == stopped_at
    end_b = resumed.fit(until=stopped_at + 3)
    straight = Trainer(
        load_config(None, [*OVERRIDES, f"train.out_dir={tmp_path / 'a'}"]), progress=False
    )
    end_a = straight.fit(until=stopped_at + 3)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(end_a / name)), load_file(str(end_b / name))
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key}"
