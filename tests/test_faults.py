"""Injected faults: nothing is lost and nothing silently wrong.

Export onto its source, NaN weights, two trainings on one run directory (and the lock a killed run
leaves), disk full while checkpointing and while sampling (ENOSPC injected into the write), partial
log lines, untrusted checkpoint configs and ``latest`` pointers, odd image modes.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import elt
from conftest import TOY_OVERRIDES
from elt.cli import main
from elt.config import load_config
from elt.errors import CheckpointError, UserError
from elt.fileio import LockedError, OutputError, atomic_write, exclusive_lock, save_npz
from elt.inference.checkpoints import resolve_checkpoint
from elt.train.checkpoint import NonFiniteWeightsError
from elt.train.trainer import Trainer, train

SRC = Path(__file__).parent.parent / "src"


def toy_cfg(run, *extra):
    return load_config(
        None, [*TOY_OVERRIDES, f"train.out_dir={run}", "logging.tensorboard=false", *extra]
    )


def toy_yaml(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("paradigm: toy\n")
    return str(path)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def errors_after_the_report(err: str) -> list[str]:
    """The stderr of a training command after its report (start summary, time estimate, progress
    lines: every line ``elt: ...``, none an error), which must end it."""
    lines = err.strip().splitlines()
    assert all(line.startswith("elt: ") for line in lines), lines
    report = [line for line in lines if not line.startswith("elt: error:")]
    return lines[len(report) :] if lines[: len(report)] == report else lines


# -- export ----------------------------------------------------------------------------------------
def test_export_never_writes_into_its_source(toy_paradigm, tmp_path, capsys):
    final = train(toy_cfg(tmp_path / "run", "train.steps=3"), progress=False)
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    for out in (final, tmp_path / "run", final / "inner"):
        assert main(["export", "--ckpt", str(final), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("elt: error:" in line for line in err)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before  # untouched, still loads
    elt.load(final)
    # a fresh folder works, and exporting again replaces that earlier export (and only that)
    out = tmp_path / "exported"
    assert main(["export", "--ckpt", str(final), "--out", str(out)]) == 0
    assert main(["export", "--ckpt", str(final), "--out", str(out), "--fp32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    assert load_file(str(out / "model.safetensors"))["pos"].dtype == torch.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


# -- NaN / Inf -------------------------------------------------------------------------------------
def poison_after(trainer, bad_step):
    """Make the optimizer step that ends step ``bad_step`` write NaN into one weight (loss still
    finite)."""
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step + 1 == bad_step:
            with torch.no_grad():
                trainer.generator.pos.fill_(float("nan"))
        return out

    trainer.optimizer.step = step


def test_nan_weights_are_never_checkpointed_and_resume_falls_back(toy_paradigm, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = toy_cfg(run, "train.steps=8", "checkpoint.every=2")
    trainer = Trainer(cfg, progress=False)
    poison_after(trainer, 4)
    with pytest.raises(NonFiniteWeightsError, match="after step 4"):
        trainer.fit()
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002"]
    assert (root / "latest").read_text() == "step_0000002"
    # a non-finite checkpoint that got onto disk anyway (an older elt wrote them): resume skips it
    bad = root / "step_0000004"
    shutil.copytree(root / "step_0000002", bad)
    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(str(bad / name))
        state["pos"] = torch.full_like(state["pos"], float("inf"))
        save_file(state, str(bad / name))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"] = {
        p.name: p.stat().st_size for p in bad.iterdir() if p.name != "manifest.json"
    }
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (root / "latest").write_text("step_0000004")
    with pytest.raises(
        CheckpointError, match="NaN/Inf"
    ):  # sampling from it would give blank images
        elt.load(run)
    resumed = Trainer(cfg, progress=False)
    assert resumed.resume_from(run) == root / "step_0000002" and resumed.step == 2
    assert "NaN/Inf" in capsys.readouterr().err
    resumed.fit()
    assert resolve_checkpoint(run).name == "step_0000008"


def test_nan_weights_stop_the_cli_with_one_line(toy_paradigm, tmp_path, capsys, monkeypatch):
    from elt.train import trainer as trainer_mod

    real_save = trainer_mod.Trainer.save

    def poisoned_save(self):
        with torch.no_grad():
            self.generator.pos.fill_(float("nan"))
        return real_save(self)

    monkeypatch.setattr(trainer_mod.Trainer, "save", poisoned_save)
    status = main(
        [
            "train",
            toy_yaml(tmp_path),
            "--no-progress",
            *TOY_OVERRIDES,
            "train.steps=3",
            "logging.tensorboard=false",
            f"train.out_dir={tmp_path / 'run'}",
        ]
    )
    err = errors_after_the_report(capsys.readouterr().err)
    assert status == 2 and len(err) == 1 and "step 3" in err[0] and "NaN/Inf" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists() or not list(
        (tmp_path / "run" / "checkpoints").glob("step_*")
    )


# -- the run lock ----------------------------------------------------------------------------------
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from elt.fileio import exclusive_lock
    with exclusive_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def hold_lock(run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_training_on_a_run_directory_is_refused(toy_paradigm, tmp_path, capsys):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        with pytest.raises(LockedError, match=f"process {holder.pid} on host"):
            train(toy_cfg(run, "train.steps=2"), progress=False)
        status = main(
            [
                "train",
                toy_yaml(tmp_path),
                "--no-progress",
                *TOY_OVERRIDES,
                "train.steps=2",
                f"train.out_dir={run}",
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1 and str(holder.pid) in err[0] and "in use" in err[0]
        assert files_under(run) == {".lock"}  # nothing of the refused run was written
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_killed_run_is_recovered(toy_paradigm, tmp_path):
    run = tmp_path / "run"
    holder = hold_lock(run)
    os.kill(
        holder.pid, signal.SIGKILL
    )  # dies holding the lock: the lock file stays, naming a dead pid
    holder.wait()
    assert str(holder.pid) in (run / ".lock").read_text()
    final = train(toy_cfg(run, "train.steps=2"), progress=False)
    assert final.name == "step_0000002" and not (run / ".lock").exists()


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with exclusive_lock(tmp_path / "r") as path:
        with exclusive_lock(tmp_path / "r"):
            assert path.exists()
        assert path.exists()
    assert not (tmp_path / "r").exists()  # created by the lock, nothing else written: removed again


# -- disk full -------------------------------------------------------------------------------------
def enospc_after(real, fail: list[int]):
    """``real`` that writes a partial file and raises ENOSPC on the calls whose index is in
    ``fail``."""
    calls = [0]

    def write(tensors, filename, *args, **kwargs):
        calls[0] += 1
        if calls[0] in fail:
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, *args, **kwargs)

    return write


def test_disk_full_during_checkpoint_is_one_line_and_resume_works(
    toy_paradigm, tmp_path, capsys, monkeypatch
):
    from elt.train import checkpoint as ckpt_mod

    run = tmp_path / "run"
    args = [
        "train",
        toy_yaml(tmp_path),
        "--no-progress",
        *TOY_OVERRIDES,
        "train.steps=6",
        "checkpoint.every=2",
        "logging.tensorboard=false",
        f"train.out_dir={run}",
    ]
    # save_file is called twice per checkpoint (raw, EMA): fail the EMA write of the step-4
    # checkpoint
    monkeypatch.setattr(ckpt_mod, "save_file", enospc_after(ckpt_mod.save_file, fail=[4]))
    assert main(args) == 2
    err = errors_after_the_report(capsys.readouterr().err)
    assert len(err) == 1 and "step 4" in err[0] and "no space left" in err[0], err
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [
        "latest",
        "step_0000002",
    ]  # no partial, no temp folder
    monkeypatch.undo()  # space freed
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    assert main([*args, "--resume", "auto"]) == 0
    assert resolve_checkpoint(run).name == "step_0000006"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_disk_full_during_sampling_leaves_no_truncated_file(
    toy_paradigm, tmp_path, capsys, monkeypatch
):
    final = train(toy_cfg(tmp_path / "run", "train.steps=2"), progress=False)
    out = tmp_path / "samples"
    real_savez = np.savez
    seen_during_write = []

    def savez(file, *arrays, **named):
        seen_during_write.append(sorted(p.name for p in out.iterdir()))
        if len(seen_during_write) == 2:  # the second loop count: the disk fills up mid-file
            file.write(b"PK partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(file, *arrays, **named)

    monkeypatch.setattr(np, "savez", savez)
    argv = [
        "sample",
        "--ckpt",
        str(final),
        "--loops",
        "1,3",
        "--num",
        "6",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples_L3.npz" in err[0] and "no space left" in err[0]
    assert seen_during_write[0] == [
        f".samples_L1.npz.tmp-{os.getpid()}"
    ]  # written under a temporary name
    assert sorted(p.name for p in out.iterdir()) == [
        "samples_L1.npz"
    ]  # complete, and nothing partial
    assert np.load(out / "samples_L1.npz")["arr_0"].shape == (6, 4, 4, 1)
    monkeypatch.undo()
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    assert main(argv) == 0
    assert {"samples_L1.npz", "samples_L3.npz", "grid.png", "samples.json"} <= {
        p.name for p in out.iterdir()
    }


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, np.arange(3))
    with pytest.raises(OutputError, match="a.npz"):
        with atomic_write(path, "wb") as handle:
            handle.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert np.load(path)["arr_0"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
    with pytest.raises(KeyError):  # any other failure: the temporary file is removed too
        with atomic_write(path, "wb") as handle:
            handle.write(b"half")
            raise KeyError("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


# -- logs ------------------------------------------------------------------------------------------
def test_fresh_start_rotates_the_log_and_partial_lines_do_not_break_resume(
    toy_paradigm, tmp_path, capsys
):
    run = tmp_path / "run"
    cfg = toy_cfg(run, "train.steps=4", "logging.every=1", "checkpoint.every=2")
    (run).mkdir()
    (run / "log.jsonl").write_text(
        '{"step": 9}\n'
    )  # a log without checkpoints (a run stopped before its first)
    train(cfg, progress=False)  # a fresh start into that directory: the old log is kept aside
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]
    assert [
        json.loads(line)["step"] for line in (run / "log.1.jsonl").read_text().splitlines()
    ] == [9]
    assert "log.1.jsonl" in capsys.readouterr().err
    with pytest.raises(
        UserError, match="--resume auto"
    ):  # a run with checkpoints is never restarted over
        train(cfg, progress=False)
    with open(run / "log.jsonl", "a") as handle:  # killed in the middle of a log write
        handle.write('{"step": 5, "loss": 0.')
    cfg8 = toy_cfg(run, "train.steps=6", "logging.every=1", "checkpoint.every=2")
    train(cfg8, resume="auto", progress=False)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert "unreadable line" in capsys.readouterr().err


# -- untrusted run directories ---------------------------------------------------------------------
def test_checkpoint_configs_are_not_interpolated_and_latest_stays_inside(
    toy_paradigm, tmp_path, monkeypatch
):
    final = train(toy_cfg(tmp_path / "run", "train.steps=2"), progress=False)
    monkeypatch.setenv("ELT_TEST_SECRET", "hunter2")
    evil = tmp_path / "evil"
    shutil.copytree(final, evil)
    (evil / "manifest.json").unlink()
    text = (
        (evil / "config.yaml")
        .read_text()
        .replace("wandb_project: elt", "wandb_project: ${oc.env:ELT_TEST_SECRET}")
    )
    (evil / "config.yaml").write_text(text)
    with pytest.raises(Exception) as info:
        elt.load(evil)
    assert "interpolation" in str(info.value) and "hunter2" not in str(info.value)
    # the latest pointer may only name a step folder next to it
    root = tmp_path / "run" / "checkpoints"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(final, elsewhere)
    for pointer in ("../../elsewhere", str(elsewhere), "step_0000002/../../../elsewhere"):
        (root / "latest").write_text(pointer)
        assert resolve_checkpoint(tmp_path / "run") == final
    # environment variables are never resolved into a run's saved config: refused before any file is
    # written
    cfg = toy_cfg(
        tmp_path / "run2", "train.steps=1", "logging.wandb_project=${oc.env:ELT_TEST_SECRET}"
    )
    with pytest.raises(UserError, match="logging.wandb_project") as info:
        train(cfg, progress=False)
    assert "hunter2" not in str(info.value) and not (tmp_path / "run2").exists()


def test_device_names_are_validated():
    from elt.runtime import DeviceError, resolve_device

    assert resolve_device("cpu").type == "cpu"
    for bad in ("tpu", "cuda:x", "", "cpu:0:1"):
        with pytest.raises(DeviceError):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="not available"):
            resolve_device("cuda")


# -- odd image modes -------------------------------------------------------------------------------
def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    from elt.data.folders import ImageFolder

    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "a" / "deep.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "b" / "float.tif")
    Image.fromarray((ramp * 40 - 10).astype(np.float32)).save(tmp_path / "b" / "weird.tif")
    data = ImageFolder(tmp_path, image_size=8, channels=1)
    for index in (0, 1):  # both decode to the same ramp, from black to white
        image, _ = data.load(index)
        assert image.min() == pytest.approx(-1, abs=0.02) and image.max() == pytest.approx(
            1, abs=0.02
        )
        assert image.flatten()[32] == pytest.approx(ramp.flatten()[32] * 2 - 1, abs=0.05)
    with pytest.warns(UserWarning, match=r"only \[0, 1\] or \[0, 255\]"):
        assert data.load(2) is None  # values in [-10, 30]: refused with a message, not guessed
