"""Bad inputs to every command: exit status 2, exactly one line on stderr, no traceback, and no new files.

Each case prepares its inputs in a fresh folder (the working directory too), snapshots the folder, runs
``elt ...`` in-process and checks the contract. A shared tiny toy checkpoint (4 steps) serves the
checkpoint cases; cases that damage it work on a copy.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TOY_OVERRIDES
from elt.cli import main

TOY_YAML = "paradigm: toy\n"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 4-step toy run (checkpoint step_0000004)."""
    from elt import registry
    from elt.config import load_config
    from elt.train.trainer import train

    registry.register_paradigm("toy", "toy_task")
    run = tmp_path_factory.mktemp("toyrun") / "run"
    train(load_config(None, [*TOY_OVERRIDES, "train.steps=4", "train.tensorboard=false", f"train.out_dir={run}"]),
          progress=False)
    yield run


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def checkpoint_copy(toy_run: Path, where: Path) -> Path:
    """A copy of the toy checkpoint without its manifest, so damaged files are found by loading."""
    ckpt = where / "ckpt"
    shutil.copytree(toy_run / "checkpoints" / "step_0000004", ckpt)
    (ckpt / "manifest.json").unlink()
    return ckpt


def damage(name: str, how: str):
    def prepare(toy_run, where):
        ckpt = checkpoint_copy(toy_run, where)
        path = ckpt / name
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                          "random": os.urandom(len(data))}[how])
        return ckpt
    return prepare


def config_text(text: str):
    def prepare(toy_run, where):
        ckpt = checkpoint_copy(toy_run, where)
        (ckpt / "config.yaml").write_text(text)
        return ckpt
    return prepare


def wrong_width(toy_run, where):
    ckpt = checkpoint_copy(toy_run, where)
    cfg = ckpt / "config.yaml"
    cfg.write_text(cfg.read_text().replace("width: 32", "width: 64"))
    return ckpt


def sample_damaged(name: str, how: str):
    return lambda r, w: ["sample", "--ckpt", str(damage(name, how)(r, w)), "--out", str(w / "o"), "--num", "2"]


def train_args(where, *overrides):
    yaml = where / "toy.yaml"
    yaml.write_text(TOY_YAML)
    return ["train", str(yaml), "--no-progress", *TOY_OVERRIDES, "train.steps=2", "train.tensorboard=false",
            *overrides]


def existing_file(where):
    (where / "taken").write_text("user data")
    return where / "taken"


# (id, argv builder (toy_run, where) -> argv, substring the one line must contain)
CASES = [
    # -- train: values out of range, checked when the config is built -----------------------------------
    ("train-checkpoint-every-negative", lambda r, w: train_args(w, "train.checkpoint_every=-1"),
     "train.checkpoint_every"),
    ("train-sample-every-negative", lambda r, w: train_args(w, "train.sample_every=-5"), "train.sample_every"),
    ("train-data-limit-zero", lambda r, w: train_args(w, "data.limit=0"), "data.limit"),
    ("train-data-limit-negative", lambda r, w: train_args(w, "data.limit=-3"), "data.limit"),
    ("train-tokenizer-steps-zero", lambda r, w: train_args(w, "tokenizer.steps=0"), "tokenizer.steps"),
    ("train-grad-clip-negative", lambda r, w: train_args(w, "train.grad_clip=-1"), "train.grad_clip"),
    ("train-warmup-negative", lambda r, w: train_args(w, "train.warmup_steps=-2"), "train.warmup_steps"),
    ("train-threads-negative", lambda r, w: train_args(w, "train.threads=-1"), "train.threads"),
    ("train-keep-negative", lambda r, w: train_args(w, "train.keep_checkpoints=-1"), "train.keep_checkpoints"),
    ("train-log-every-zero", lambda r, w: train_args(w, "train.log_every=0"), "train.log_every"),
    ("train-lr-nan", lambda r, w: train_args(w, "train.lr=nan"), "train.lr"),
    ("train-guidance-nan", lambda r, w: train_args(w, "sampling.guidance=nan"), "sampling.guidance"),
    ("train-guidance-inf", lambda r, w: train_args(w, "sampling.guidance=inf"), "sampling.guidance"),
    ("train-sample-loops-zero", lambda r, w: train_args(w, "train.sample_loops=[0,2]"), "train.sample_loops"),
    ("train-seed-too-large", lambda r, w: train_args(w, f"train.seed={2**64}"), "train.seed"),
    ("train-seed-negative", lambda r, w: train_args(w, "train.seed=-1"), "train.seed"),
    ("train-ema-decay-one", lambda r, w: train_args(w, "train.ema_decay=1.0"), "train.ema_decay"),
    ("train-wrong-type", lambda r, w: train_args(w, "model.width=wide"), "model.width"),
    # -- train: where it writes, checked before any work ----------------------------------------------------
    ("train-out-dir-is-a-file", lambda r, w: train_args(w, f"train.out_dir={existing_file(w)}"), "existing file"),
    ("train-out-dir-under-a-file", lambda r, w: train_args(w, f"train.out_dir={existing_file(w) / 'run'}"),
     "which is a file"),
    ("train-device-unknown", lambda r, w: train_args(w, f"train.out_dir={w / 'run'}", "train.device=tpu"),
     "unknown device 'tpu'"),
    ("train-device-missing-gpu", lambda r, w: train_args(w, f"train.out_dir={w / 'run'}", "train.device=cuda:7"),
     "cuda:7"),
    ("train-data-root-nowhere", lambda r, w: ["train", "fmnist_diffusion", "--no-progress", "model.width=32",
                                              "model.heads=2", f"train.out_dir={w / 'run'}",
                                              f"data.root={w / 'no_such_folder'}"], "no_such_folder"),
    ("train-resume-damaged-state", lambda r, w: [*train_args(w, f"train.out_dir={w / 'run'}"), "--resume",
                                                  str(damage("state.pt", "random")(r, w))], "state.pt"),
    ("train-resume-empty-state", lambda r, w: [*train_args(w, f"train.out_dir={w / 'run'}"), "--resume",
                                                str(damage("state.pt", "empty")(r, w))], "empty"),
    # -- sample -----------------------------------------------------------------------------------------------
    ("sample-guidance-nan", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--guidance", "nan"],
     "guidance"),
    ("sample-guidance-inf", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--guidance", "inf"],
     "guidance"),
    ("sample-seed-too-large", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--seed",
                                            str(2**70)], "seed"),
    ("sample-seed-negative", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--seed", "-4"],
     "seed"),
    ("sample-num-zero", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--num", "0"], "--num"),
    ("sample-loops-zero", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--loops", "0,1"],
     "--loops"),
    ("sample-device-unknown", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--device",
                                            "quantum"], "unknown device"),
    ("sample-device-missing-gpu", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--device",
                                                "cuda:7"], "cuda:7"),
    ("sample-out-is-a-file", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(existing_file(w))],
     "existing file"),
    ("sample-out-under-a-file", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(existing_file(w) / "x")],
     "which is a file"),
    ("sample-no-checkpoint", lambda r, w: ["sample", "--ckpt", str(w), "--out", str(w / "o")], "no checkpoint"),
    *[(f"sample-{how}-ema", sample_damaged("ema.safetensors", how), "damaged")
      for how in ("empty", "truncated", "random")],
    ("sample-raw-weights-random", lambda r, w: ["sample", "--ckpt", str(damage("model.safetensors", "random")(r, w)),
                                                "--out", str(w / "o"), "--raw-weights"], "damaged"),
    ("sample-wrong-sizes", lambda r, w: ["sample", "--ckpt", str(wrong_width(r, w)), "--out", str(w / "o")],
     "does not match"),
    ("sample-config-not-yaml", lambda r, w: ["sample", "--ckpt", str(config_text("model: [width: 3\n  - {")(r, w)),
                                             "--out", str(w / "o")], "YAML"),
    ("sample-config-wrong-type", lambda r, w: ["sample", "--ckpt", str(config_text(
        "paradigm: toy\nmodel:\n  width: abc\n")(r, w)), "--out", str(w / "o")], "model.width"),
    ("sample-config-not-a-mapping", lambda r, w: ["sample", "--ckpt", str(config_text("- 1\n- 2\n")(r, w)),
                                                  "--out", str(w / "o")], "config.yaml"),
    ("sample-config-interpolation", lambda r, w: ["sample", "--ckpt", str(config_text(
        "paradigm: toy\ntrain:\n  out_dir: ${oc.env:ELT_TEST_SECRET}\n")(r, w)), "--out", str(w / "o")],
     "interpolation"),
    ("sample-override-wrong-type", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"),
                                                 "sampling.guidance=lots"], "sampling override"),
    ("sample-override-not-sampling", lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"),
                                                   "model.width=8"], "cannot set"),
    # -- info / export ------------------------------------------------------------------------------------------
    ("info-truncated-ema", lambda r, w: ["info", str(damage("ema.safetensors", "truncated")(r, w))], "damaged"),
    ("export-onto-its-source", lambda r, w: ["export", "--ckpt", str(checkpoint_copy(r, w)), "--out",
                                             str(w / "ckpt")], "being exported"),
    ("export-into-its-run", lambda r, w: ["export", "--ckpt", str(r), "--out",
                                          str(r / "checkpoints" / "exported")], "being exported"),
    ("export-onto-another-checkpoint", lambda r, w: ["export", "--ckpt", str(r), "--out",
                                                     str(checkpoint_copy(r, w))], "checkpoint"),
    ("export-onto-a-full-folder", lambda r, w: ["export", "--ckpt", str(r), "--out", str(existing_file(w).parent)],
     "not empty"),
    ("export-out-is-a-file", lambda r, w: ["export", "--ckpt", str(r), "--out", str(existing_file(w))],
     "existing file"),
    # -- eval -------------------------------------------------------------------------------------------------
    ("eval-merge-wrong-shape", lambda r, w: ["eval", "merge", str(json_file(w, {"rows": 5, "provenance": {}})),
                                             "--out", str(w / "m")], "'rows'"),
    ("eval-merge-a-list", lambda r, w: ["eval", "merge", str(json_file(w, [1, 2])), "--out", str(w / "m")],
     "JSON object"),
    ("eval-merge-bad-rows", lambda r, w: ["eval", "merge", str(json_file(w, {
        "rows": [1], "provenance": {}, "plot_metrics": []})), "--out", str(w / "m")], "rows"),
    ("eval-merge-out-is-a-file", lambda r, w: ["eval", "merge", str(json_file(w, {})), "--out",
                                               str(existing_file(w))], "existing file"),
    ("eval-out-is-a-file", lambda r, w: ["eval", "--ckpt", str(r), "--loops", "1", "--num", "4", "--out",
                                         str(existing_file(w))], "existing file"),
    ("eval-seed-too-large", lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--seed", str(2**65)],
     "--seed"),
    ("eval-threads-negative", lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--threads", "-2"],
     "--threads"),
    ("eval-guidance-inf", lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--guidance", "-inf"],
     "--guidance"),
    ("eval-floor-threads-negative", lambda r, w: ["eval", "floor", "--classifier", str(w / "none.safetensors"),
                                          "--threads", "-1"], "--threads"),
    # -- bench / demo / tokenizer ---------------------------------------------------------------------------------
    ("bench-width-zero", lambda r, w: ["bench", "train", "--width", "0", "--out", str(w / "b")], "--width"),
    ("bench-batch-negative", lambda r, w: ["bench", "sampling", "--batch", "-1", "--out", str(w / "b")], "--batch"),
    ("bench-threads-negative", lambda r, w: ["bench", "memory", "--threads", "-1", "--out", str(w / "b")],
     "--threads"),
    ("bench-repeats-zero", lambda r, w: ["bench", "train", "--repeats", "0", "--out", str(w / "b")], "--repeats"),
    ("bench-device-unknown", lambda r, w: ["bench", "train", "--device", "gpu0", "--out", str(w / "b")],
     "unknown device"),
    ("bench-out-is-a-file", lambda r, w: ["bench", "train", "--out", str(existing_file(w))], "existing file"),
    ("demo-per-class-zero", lambda r, w: ["demo", "--per-class", "0", "--out", str(w / "d")], "--per-class"),
    ("demo-seed-negative", lambda r, w: ["demo", "--seed", "-1", "--out", str(w / "d")], "--seed"),
    ("demo-out-is-a-file", lambda r, w: ["demo", "--out", str(existing_file(w))], "existing file"),
    ("tokenizer-steps-zero", lambda r, w: ["tokenizer", "train", "fmnist_masked", "tokenizer.steps=0", "--out",
                                           str(w / "t")], "tokenizer.steps"),
    ("tokenizer-out-is-a-file", lambda r, w: ["tokenizer", "train", "fmnist_masked", "--out",
                                              str(existing_file(w))], "existing file"),
]


def json_file(where: Path, obj) -> Path:
    path = where / "in.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, toy_run, tmp_path, capsys, monkeypatch):
    name, build, expected = case
    if "cuda:7" in name or "missing-gpu" in name:
        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    monkeypatch.setenv("ELT_TEST_SECRET", "hunter2-secret-value")
    where = tmp_path / "case"
    where.mkdir()
    monkeypatch.chdir(where)
    argv = build(toy_run, where)
    before = snapshot(where)
    run_before = snapshot(toy_run)
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only" not in err and "hunter2" not in err
    assert expected in lines[0], lines[0]
    assert snapshot(where) == before, "files were written"
    assert snapshot(toy_run) == run_before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_is_refused_before_work(toy_run, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["sample", "--ckpt", str(toy_run), "--out", str(locked / "o")]) == 2
        train_status = main(train_args(tmp_path, f"train.out_dir={locked / 'run'}"))
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert train_status == 2 and len(err) == 2 and all("not writable" in line for line in err)
    assert list(locked.iterdir()) == []


def test_empty_elt_data_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    from elt.data import fashion_mnist
    from elt.data.fashion_mnist import DataNotFoundError, load_arrays

    monkeypatch.setattr(fashion_mnist, "_torchvision_download", lambda root: None)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ELT_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="empty"):
        load_arrays()
    monkeypatch.setenv("ELT_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="ELT_DATA=.*missing.*is not a directory"):
        load_arrays()
    monkeypatch.delenv("ELT_DATA")
    with pytest.raises(DataNotFoundError, match="data.root=.*missing"):
        load_arrays(tmp_path / "missing")
