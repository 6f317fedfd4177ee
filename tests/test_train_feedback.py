"""What training tells the user (issue 34): the start summary and the measured time estimate of
every training phase, plain progress lines when stderr is not a terminal, ``--dry-run``
(estimates, writes nothing), and the graceful stop and exact resume of tokenizer training."""

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elt.cli import main
from elt.config import load_config
from elt.progress import Progress, format_duration
from elt.tokenizers import fsq
from elt.tokenizers.train import STATE_FILE, train_tokenizer

SRC = Path(__file__).resolve().parent.parent / "src"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian Fashion-MNIST")

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "tokenizer.channels=16",
    "tokenizer.levels=[5,5,5]",
    "tokenizer.batch_size=16",
    "tokenizer.eval_items=0",
    "data.limit=200",
    "data.image_size=16",
    "train.threads=1",
    "train.steps=20",
    "train.batch_size=16",
    "train.precision=fp32",
    "logging.every=10",
    "logging.sample_every=0",
    "logging.tensorboard=false",
    "lr_schedule.warmup_steps=2",
]
ESTIMATE = re.compile(
    r"^elt: (train|tokenizer): ~[0-9.e-]+ s/step \(timed over .*\), ~\S+ for (\d+) steps$"
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_every_n_steps_at_least_every_30_s_and_one_measured_estimate():
    clock, out = FakeClock(), io.StringIO()  # a StringIO is not a terminal
    progress = Progress("train", 12, every=5, stream=out, clock=clock, enabled=True)
    for step in range(1, 13):
        clock.now += 100.0 if step == 1 else (40.0 if step == 7 else 2.0)  # step 1: warm-up
        progress.update(step, {"loss": 1.0 / step})
    progress.close()
    lines = out.getvalue().splitlines()
    # the estimate: steps 2-4 timed (2 s each, the 100 s first step left out), for the 12 steps
    assert lines[0] == "elt: train: ~2 s/step (timed over steps 2-4), ~24s for 12 steps"
    steps = [int(re.match(r"elt: train step (\d+)/12", line).group(1)) for line in lines[1:]]
    assert steps == [5, 7, 10, 12]  # every 5 steps, step 7 after 40 s, and the last one
    assert lines[1] == "elt: train step 5/12  loss 0.2000  2 s/step  ETA 14s"
    assert lines[2].endswith(
        "21 s/step  ETA 1m45s"
    )  # 7: (2 + 40) s over 2 steps = 21 s/step, 5 left
    assert lines[-1] == "elt: train step 12/12  loss 0.0833  2 s/step"
    assert format_duration(3 * 3600 + 125) == "3h02m"


def test_a_terminal_gets_the_bar_and_no_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    progress = Progress("train", 10, every=1, stream=out, clock=FakeClock(), enabled=True)
    for step in range(1, 11):
        progress.update(step, {"loss": 0.5})
    progress.close()
    assert "train step" not in out.getvalue() and "\r" in out.getvalue()


def cli(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "elt.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def stop_after(proc, marker: str, sig: int) -> tuple[str, str]:
    """Read stderr until ``marker`` appears, send ``sig``, return (stdout, all of stderr)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    else:
        pytest.fail("the marker never came: " + "".join(seen))
    out, err = proc.communicate(timeout=120)
    return out, "".join(seen) + err


@pytest.mark.slow
@needs_fmnist
def test_tokenizer_ctrl_c_saves_a_state_and_resume_gives_the_same_tokenizer(tmp_path, capsys):
    overrides = [*TINY, "tokenizer.steps=40", "logging.every=5"]
    folder = tmp_path / "tok"
    proc = cli("tokenizer", "train", "fmnist_masked", *overrides, "--out", str(folder))
    _, err = stop_after(proc, "elt: tokenizer step 5/40", signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stop = re.search(
        r"elt: stopped tokenizer training at step (\d+)/40; state saved in (\S+);", err
    )
    assert stop, err
    assert "continue with --resume auto" in err
    assert 5 <= int(stop.group(1)) < 40 and stop.group(2) == str(folder / STATE_FILE)
    assert (folder / STATE_FILE).is_file() and not fsq.is_saved(folder)  # never a tokenizer
    # without --resume: refused in one line, the state kept
    assert main(["tokenizer", "train", "fmnist_masked", *overrides, "--out", str(folder)]) == 2
    assert "--resume auto" in capsys.readouterr().err and (folder / STATE_FILE).is_file()
    # resumed: the summary says from where, and the result equals an uninterrupted training
    code = main(
        [
            "tokenizer",
            "train",
            "fmnist_masked",
            *overrides,
            "--out",
            str(folder),
            "--resume",
            "auto",
        ]
    )
    assert code == 0
    assert f"resumed: from step {stop.group(1)}" in capsys.readouterr().err
    assert fsq.is_saved(folder) and not (folder / STATE_FILE).exists()
    train_tokenizer(load_config("fmnist_masked", overrides), tmp_path / "straight", progress=False)
    a = load_file(str(tmp_path / "straight" / fsq.WEIGHTS_FILE))
    b = load_file(str(folder / fsq.WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-exact: same data order, RNG and optimizer


@pytest.mark.slow
@needs_fmnist
def test_elt_train_stopped_in_the_tokenizer_phase_resumes_with_resume_auto(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [*TINY, "tokenizer.steps=40", "logging.every=5", f"train.out_dir={run}"]
    proc = cli("train", "fmnist_masked", *overrides)
    _, err = stop_after(proc, "elt: tokenizer step 5/40", signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert re.search(r"elt: stopped tokenizer training at step \d+/40; state saved in ", err)
    assert (run / "tokenizer" / STATE_FILE).is_file()
    assert not fsq.is_saved(run / "tokenizer") and not (run / "checkpoints").exists()
    # a fresh start would drop the state: refused in one line, pointing to --resume auto
    assert main(["train", "fmnist_masked", *overrides]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert main(["train", "fmnist_masked", *overrides, "--resume", "auto"]) == 0
    err = capsys.readouterr().err  # capsys: stderr is not a terminal, so plain lines
    assert fsq.is_saved(run / "tokenizer") and not (run / "tokenizer" / STATE_FILE).exists()
    lines = err.splitlines()
    # the model phase's start summary, before its first step
    start = lines.index(f"elt: training the masked model -> {run}")
    summary = lines[start + 1 : start + 5]
    assert summary[0] == "elt:   data: fashion_mnist, 200 images, 10 classes, 16x16 px, 1 channel"
    assert summary[1] == "elt:   tokens per sample: 16"  # 16 px / 4x downsampling = 4x4 tokens
    params = re.match(
        r"elt:   model: 2 blocks x 3 loops, width 32, (\S+) parameters \((\S+) train", summary[2]
    )
    assert params and params.group(1) != params.group(2)  # the frozen tokenizer is not trained
    assert summary[3] == "elt:   run: 20 steps x batch 16, fp32, 1 thread, cpu"
    estimates = [m.groups() for m in map(ESTIMATE.match, lines) if m]
    assert ("train", "20") in estimates
    assert [line.split("  ")[0] for line in lines if line.startswith("elt: train step")] == [
        "elt: train step 5/20",
        "elt: train step 10/20",
        "elt: train step 15/20",
        "elt: train step 20/20",
    ]
    assert re.search(r"^elt: train step 10/20  loss \d+\.\d{4}  \S+ s/step  ETA \S+$", err, re.M)
    assert re.search(r"^elt: tokenizer step 40/40  psnr \d+\.\d\d dB", err, re.M)


@needs_fmnist
def test_dry_run_times_every_phase_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "fmnist_masked", *TINY, "tokenizer.steps=500", f"train.out_dir={run}"]
    assert main([*args, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert not run.exists()  # no run directory, tokenizer, cache or lock
    lines = captured.err.splitlines()
    assert "elt: dry run: would train the fsq tokenizer first -> " + str(run / "tokenizer") in lines
    assert f"elt: dry run: would train the masked model -> {run}" in lines
    estimates = [m.groups() for m in map(ESTIMATE.match, lines) if m]
    assert estimates == [("tokenizer", "500"), ("train", "20")]
    assert re.search(r"estimated total ~\S+ \(tokenizer \S+ \+ train \S+;", captured.err)
    # the tokenizer command's dry run: the same, nothing written either
    folder = tmp_path / "tok"
    code = main(["tokenizer", "train", "fmnist_masked", *TINY, "--out", str(folder), "--dry-run"])
    assert code == 0 and not folder.exists()
    # a real run's refusal still happens: checkpoints there and no --resume
    (run / "checkpoints" / "step_0000005").mkdir(parents=True)
    assert main([*args, "--dry-run"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "step_0000005"]


def test_dry_run_of_a_pixel_diffusion_config_estimates_the_model_phase(tmp_path, capsys):
    run = tmp_path / "run"
    folder = tmp_path / "images"
    from PIL import Image

    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (30 * i, 100 if label == "a" else 200, 0)).save(
                folder / label / f"{i}.png"
            )
    code = main(
        [
            "train",
            "fmnist_diffusion",
            "data.name=folder",
            f"data.root={folder}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=8",
            "diffusion.patch_size=2",
            "model.width=32",
            "model.heads=2",
            "model.unique_layers=2",
            "model.loops=2",
            "train.steps=1000",
            "train.batch_size=4",
            "train.threads=1",
            f"train.out_dir={run}",
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert not run.exists()
    assert (
        "elt:   data: folder at " + str(folder) + ", 16 images, 2 classes, 8x8 px, 3 channels"
        in err
    )
    assert "elt:   tokens per sample: 16" in err  # (8 / 2)²
    assert [m.groups() for m in map(ESTIMATE.match, err.splitlines()) if m] == [("train", "1000")]


def test_dry_run_of_a_plugin_paradigm_without_the_hook_uses_a_scratch_folder(
    toy_paradigm, tmp_path, capsys
):
    """A paradigm without ``dry_run_data`` prepares its real data in a temporary folder: the run
    directory is still never created, and the model phase is timed."""
    from conftest import TOY_OVERRIDES

    config = tmp_path / "toy.yaml"
    config.write_text("paradigm: toy\n")
    run = tmp_path / "run"
    args = ["train", str(config), *TOY_OVERRIDES, "train.steps=50", f"train.out_dir={run}"]
    assert main([*args, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert not run.exists()
    assert [m.groups() for m in map(ESTIMATE.match, err.splitlines()) if m] == [("train", "50")]
    assert f"elt: dry run: would train the toy model -> {run}" in err


@needs_fmnist
@pytest.mark.parametrize("new_steps", [12, 4])
def test_resuming_a_tokenizer_with_other_steps_says_what_it_does(tmp_path, capsys, new_steps):
    """An interrupted tokenizer training resumed with another tokenizer.steps names both counts and
    what happens: it trains on to the new count, or, already past it, is saved as it is (and
    tokenizer.json says how many steps it had)."""
    from elt.tokenizers.train import TokenizerTraining

    cfg = load_config("fmnist_masked", [*TINY, "tokenizer.steps=8"])
    run = TokenizerTraining(cfg)
    for _ in range(6):
        run.train_step()
    folder = tmp_path / "tok"
    folder.mkdir()
    torch.save(run.state(1.0), folder / STATE_FILE)
    capsys.readouterr()
    resumed = load_config("fmnist_masked", [*TINY, f"tokenizer.steps={new_steps}"])
    info = train_tokenizer(resumed, folder, progress=False, resume=True)
    err = capsys.readouterr().err
    said = (
        "it trains to step 12, with the learning-rate schedule of 12 steps from here on"
        if new_steps == 12
        else "it is past that already and is saved as it is, after 6 steps"
    )
    assert (
        "elt: warning: resuming the tokenizer training saved at step 6/8 with "
        f"tokenizer.steps={new_steps}: {said}"
    ) in err
    assert info["steps"] == max(new_steps, 6) and fsq.is_saved(folder)
    assert not (folder / STATE_FILE).exists()
