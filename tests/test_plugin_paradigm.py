"""A paradigm is a plug-in: one new package that registers itself (config section + task module) is
trained and sampled through the public CLI, with no change to elt."""

import json
import sys
import textwrap

import numpy as np
import pytest

from elt import registry
from elt.cli import main

PACKAGE = '''
"""A third paradigm: the tests' toy generator under its own name, with its own config section."""
from dataclasses import dataclass

from elt.registry import register_paradigm


@dataclass
class ToyPlugConfig:
    data_items: int = 128  # training items (the toy's templates, repeated)


register_paradigm("toyplug", task="toyplug.task", config=ToyPlugConfig)
'''

TASK = """
import toy_task
from toy_task import build_generator  # noqa: F401  (the architecture is the tests' toy)


def prepare_data(cfg, generator, run_dir, progress=True):
    cfg.data.limit = cfg.toyplug.data_items  # the paradigm reads its own config section
    return toy_task.prepare_data(cfg, generator, run_dir, progress)
"""

CONFIG = """
paradigm: toyplug
model: {width: 32, heads: 2, unique_layers: 2, loops: 3}
data: {num_classes: 4}
train: {steps: 300, batch_size: 16, ema_decay: 0.9, threads: 1}
optimizer: {lr: 0.003}
lr_schedule: {warmup_steps: 5}
logging: {every: 50, tensorboard: false, samples_per_class: 1}
toyplug: {data_items: 64}
sampling: {steps: 1}
"""


@pytest.fixture
def toyplug(tmp_path, monkeypatch):
    root = tmp_path / "plugins"
    (root / "toyplug").mkdir(parents=True)
    (root / "toyplug" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    (root / "toyplug" / "task.py").write_text(textwrap.dedent(TASK))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(registry, "_PARADIGMS", {**registry.paradigms()})  # restored after the test
    __import__("toyplug")  # what the elt.paradigms entry point does for an installed plug-in
    yield "toyplug"
    for name in ("toyplug", "toyplug.task"):
        sys.modules.pop(name, None)


def test_a_registered_paradigm_trains_and_samples_through_the_cli(toyplug, tmp_path, capsys):
    from toy_task import template_uint8

    config = tmp_path / "toyplug.yaml"
    config.write_text(CONFIG)
    run = tmp_path / "run"
    assert main(["train", str(config), f"train.out_dir={run}", "--no-progress"]) == 0
    assert "toyplug:\n  data_items: 64" in (run / "config.yaml").read_text()
    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,3",
                "--num",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    templates = template_uint8(4).reshape(4, -1)
    for loops in (1, 3):
        data = np.load(out / f"samples_L{loops}.npz")
        images, labels = data["arr_0"].astype(np.int64).reshape(8, -1), data["arr_1"]
        nearest = np.abs(images[:, None, :] - templates[None]).mean(-1).argmin(1)
        assert (nearest == labels).all()  # every sample is its own class's template
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["paradigm"] == "toyplug"


def test_an_unknown_paradigm_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("paradigm: nosuch\n")
    assert main(["train", str(config)]) == 2
    assert (
        "config key 'paradigm' is 'nosuch'; allowed: masked, diffusion" in capsys.readouterr().err
    )
