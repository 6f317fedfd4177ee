"""Exact resume: a run interrupted at step k and resumed ends bit-identical to an uninterrupted run,
also when the process was killed with SIGKILL in the middle of writing a checkpoint."""

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

import elt
from conftest import TOY_OVERRIDES
from elt.config import load_config
from elt.inference.checkpoints import is_complete, resolve_checkpoint
from elt.inference.files import MANIFEST_FILE, STATE_FILE
from elt.train.checkpoint import load_training_state, save_checkpoint
from elt.train.trainer import Trainer, train

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
# 40 items, global batch 16: 2 batches per epoch, so k=5 stops mid-epoch after an epoch boundary
RESUME_OVERRIDES = [
    *TOY_OVERRIDES,
    "data.limit=40",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.every=1",
]


def cfg_for(run_dir, *extra):
    return load_config(None, [*RESUME_OVERRIDES, f"train.out_dir={run_dir}", *extra])


def assert_same_files(a_dir, b_dir, names=("model.safetensors", "ema.safetensors")):
    for name in names:
        a, b = load_file(str(Path(a_dir, name))), load_file(str(Path(b_dir, name)))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key}"


def assert_same_optimizer(a_dir, b_dir):
    a, b = load_training_state(a_dir)["optimizer"], load_training_state(b_dir)["optimizer"]
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        for name, value in a["state"][index].items():
            assert torch.equal(value, b["state"][index][name]), (index, name)


def read_log(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def test_resume_mid_epoch_is_bit_exact(toy_paradigm, tmp_path):
    straight = train(cfg_for(tmp_path / "a", "train.steps=10"), progress=False)
    cfg = cfg_for(tmp_path / "b", "train.steps=10")
    first = Trainer(cfg, progress=False)
    first.fit(until=5)
    assert (first.epoch, first.batch_in_epoch) == (2, 1)  # mid-epoch, after an epoch boundary
    resumed = Trainer(cfg, progress=False)
    resumed.resume_from(tmp_path / "b")
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch) == (5, 2, 1)
    final = resumed.fit()
    assert_same_files(straight, final)
    assert_same_optimizer(straight, final)
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 11))  # no duplicated steps after the resume
    for ra, rb in zip(a, b, strict=True):
        assert (ra["loss"], ra["student_loops"], ra["lambda"], ra["lr"]) == (
            rb["loss"],
            rb["student_loops"],
            rb["lambda"],
            rb["lr"],
        )


def test_checkpoint_holds_the_whole_training_state(toy_paradigm, tmp_path):
    final = train(
        cfg_for(tmp_path / "r", "train.steps=3", "lr_schedule.warmup_steps=5"), progress=False
    )  # mid warm-up
    state = torch.load(
        final / STATE_FILE, map_location="cpu", weights_only=True
    )  # no arbitrary unpickling
    assert {
        "step",
        "epoch",
        "batch_in_epoch",
        "optimizer",
        "ema",
        "rng",
        "student_draw",
        "schedule",
        "world_size",
        "global_batch",
    } <= state.keys()
    assert state["step"] == 3 and state["ema"]["updates"] == 3 and state["world_size"] == 1
    assert {"cpu", "python", "numpy"} <= state["rng"][0].keys()
    assert (
        state["schedule"]["lr"] == pytest.approx(0.003 * 4 / 5)
        and 0 <= state["schedule"]["lambda"] <= 1
    )
    model, ema = (
        load_file(str(final / "model.safetensors")),
        load_file(str(final / "ema.safetensors")),
    )
    assert any(
        not torch.equal(model[k], ema[k]) for k in model
    )  # the EMA is its own set of weights
    manifest = json.loads((final / MANIFEST_FILE).read_text())
    assert manifest["files"]["model.safetensors"] == (final / "model.safetensors").stat().st_size
    # sampling uses the EMA by default
    generator = elt.load(final)
    assert torch.equal(generator.state_dict()["pos"], ema["pos"])


def test_resume_auto_skips_a_damaged_newest_checkpoint(toy_paradigm, tmp_path, capsys):
    cfg = cfg_for(tmp_path / "r", "train.steps=12", "checkpoint.every=4")
    Trainer(cfg, progress=False).fit(until=8)
    root = tmp_path / "r" / "checkpoints"
    # a truncated file no longer matches the manifest: not a complete checkpoint
    state8 = root / "step_0000008" / STATE_FILE
    data = state8.read_bytes()
    state8.write_bytes(data[: len(data) // 2])
    assert not is_complete(root / "step_0000008")
    assert resolve_checkpoint(tmp_path / "r") == root / "step_0000004"
    # same size, garbage content: found only by loading, then the next older one is used
    state8.write_bytes(b"\0" * len(data))
    assert is_complete(root / "step_0000008")
    trainer = Trainer(cfg, progress=False)
    assert trainer.resume_from(tmp_path / "r") == root / "step_0000004"
    assert trainer.step == 4
    assert "trying an older checkpoint" in capsys.readouterr().err


def test_pruning_keeps_the_newest_and_never_a_later_branch(tmp_path):
    cfg = load_config(None, [])
    module = torch.nn.Linear(2, 2)
    for step in (1, 2, 3, 9):
        save_checkpoint(tmp_path, step, cfg, module, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_0000003", "step_0000009"]
    save_checkpoint(
        tmp_path, 4, cfg, module, keep=2
    )  # resumed from step 3: step 9 is another branch
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_0000003", "step_0000004", "step_0000009"]
    assert (
        resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000004"
    )  # the last written


HANGING_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import dist_worker
dist_worker.register()
import torch
import elt.train.checkpoint as checkpoint
from elt.config import load_config
from elt.train.trainer import train

real_save = torch.save

def save_then_hang(obj, path, *args, **kwargs):
    real_save(obj, path, *args, **kwargs)
    # half-written state of the second checkpoint, then wait to be killed
    if "0000008" in str(path):
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        Path({marker!r}).write_text("writing")
        time.sleep(120)

checkpoint.torch.save = save_then_hang
train(load_config(None, {overrides!r}), progress=False)
"""


@pytest.mark.slow
def test_kill_9_during_checkpoint_write_keeps_the_previous_one(toy_paradigm, tmp_path):
    overrides = [
        *RESUME_OVERRIDES,
        "train.steps=12",
        "checkpoint.every=4",
        f"train.out_dir={tmp_path / 'b'}",
    ]
    marker = tmp_path / "marker"
    script = HANGING_WRITER.format(tests=str(TESTS), marker=str(marker), overrides=overrides)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the writer never reached the checkpoint at step 8"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    root = tmp_path / "b" / "checkpoints"
    assert not (root / "step_0000008").exists()
    assert [
        p.name.startswith(".tmp_step_0000008") for p in root.iterdir() if p.name.startswith(".tmp")
    ] == [True]
    assert resolve_checkpoint(tmp_path / "b") == root / "step_0000004"
    elt.load(tmp_path / "b")  # loadable
    # resume from step 4 and finish: identical to a run that was never killed
    final = train(load_config(None, overrides), resume="auto", progress=False)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]  # stale write cleaned up
    straight = train(
        cfg_for(tmp_path / "a", "train.steps=12", "checkpoint.every=4"), progress=False
    )
    assert_same_files(straight, final)
    assert_same_optimizer(straight, final)
