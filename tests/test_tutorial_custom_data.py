"""docs/custom_data.md runs as written, at a tiny size.

Every command of the page's ``bash`` blocks runs in order, in a fresh folder, as a reader would
paste them: ``python -m elt.data.shapes`` through its ``main``, ``elt …`` through ``elt.cli.main``
in this process. Only sizes change, by *appending* arguments (a later ``key=value`` or flag wins):
a 32 px folder of 8 images per class, few steps and small widths. The shape keys (image size,
channels, classes) are NOT appended: the folder configs leave them null and the tutorial relies on
their inference from the folder."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from elt.cli import main as elt_main
from elt.data.shapes import main as shapes_main
from test_docs import elt_argv, fenced_blocks, shell_commands

PAGE = Path(__file__).resolve().parent.parent / "docs" / "custom_data.md"

TINY_FOLDER = ["--per-class", "8", "--size", "32"]
TINY_TRAIN = [
    "model.width=32",
    "model.heads=2",
    "train.steps=3",
    "train.batch_size=6",
    "lr_schedule.warmup_steps=1",
    "train.threads=1",
    "logging.every=1",
    "logging.tensorboard=false",
    "checkpoint.every=0",
    "tokenizer.steps=3",
    "tokenizer.batch_size=6",
    "tokenizer.channels=16",
    "tokenizer.eval_items=4",
    "sampling.steps=2",
    "--no-progress",
]
FEW = ["--steps", "2", "--no-progress"]


def extra(argv: list[str]) -> list[str]:
    """The arguments appended to one command of the page (``elt`` arguments or shapes argv)."""
    command = argv[0]
    if command == "shapes":
        return TINY_FOLDER
    if command == "train":
        return [] if "--dry-run" in argv else TINY_TRAIN
    if command == "sample":
        return ["--num", "6", *FEW]
    if command == "eval" and argv[1:2] == ["train-classifier"]:
        return ["--epochs", "1", "--no-progress"]
    if command == "eval":
        return ["--num", "6", "--latency-repeats", "1", *FEW]
    if command == "calibrate":
        return ["--loops", "1,2", "--num", "6", "--latency-repeats", "1", *FEW]
    return []


def page_commands() -> list[list[str]]:
    """The page's commands: ``["shapes", ...]`` for the toy folder, else ``elt`` arguments."""
    commands = []
    for lang, body in fenced_blocks(PAGE.read_text()):
        if lang != "bash":
            continue
        for argv in shell_commands(body):
            if argv[:3] == ["python", "-m", "elt.data.shapes"]:
                commands.append(["shapes", *argv[3:]])
            else:
                commands.append(elt_argv(argv))
    return commands


def test_the_page_covers_the_whole_path():
    """Folder, both trainings, samples at several loop counts, a classifier, an evaluation, a
    calibration and a latency budget: each appears as a command (checked without running)."""
    commands = page_commands()
    names = [" ".join(c[:2]) if c[0] == "eval" else c[0] for c in commands]
    for needed in ("shapes", "train", "sample", "eval train-classifier", "calibrate"):
        assert needed in names, (needed, names)
    trains = [c for c in commands if c[0] == "train" and "--dry-run" not in c]
    assert {c[1] for c in trains} == {"folder_masked", "folder_diffusion"}
    assert any("--budget-ms" in c for c in commands)
    assert any(c[0] == "eval" and "--classifier" in c for c in commands)
    assert any(
        c[0] == "sample" and "--loops" in c and "," in c[c.index("--loops") + 1] for c in commands
    )


@pytest.mark.slow
def test_custom_data_tutorial_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in page_commands():
        full = [*argv, *extra(argv)]
        if argv[0] == "shapes":
            code = shapes_main(full[1:])
        else:
            code = elt_main(full)
        assert code == 0, f"custom_data.md: {shlex.join(argv)} failed"
        ran.append(full)
    assert ran, "no commands found"
    # the toy folder, both runs trained from the folder configs with the shape the folder has
    assert sorted(p.name for p in (tmp_path / "shapes").iterdir()) == [
        "circle",
        "square",
        "triangle",
    ]
    for run in ("runs/shapes_masked", "runs/shapes_diffusion"):
        config = (tmp_path / run / "config.yaml").read_text()
        assert "image_size: 32" in config and "channels: 3" in config and "num_classes: 3" in config
    # samples at every requested loop count, class-balanced over the three classes
    for folder in sorted(tmp_path.glob("samples/*")):
        for path in sorted(folder.glob("samples_L*.npz")):
            data = np.load(path)
            assert data["arr_0"].shape[1:] == (32, 32, 3), path
            assert set(data["arr_1"].tolist()) <= {0, 1, 2}
    classifier = json.loads((tmp_path / "classifier/classifier.json").read_text())
    assert 0.0 <= classifier["heldout_accuracy"] <= 1.0
