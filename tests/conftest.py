import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def toy_paradigm(monkeypatch):
    """Register the tests' tiny paradigm as ``paradigm=toy``."""
    from elt import registry

    registry.register_paradigm("toy", "toy_task")
    yield "toy"
    registry.unregister_paradigm("toy")


TOY_OVERRIDES = [
    "paradigm=toy",
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "data.num_classes=4",
    "train.batch_size=16",
    "optimizer.lr=0.003",
    "lr_schedule.warmup_steps=1",
    "logging.every=5",
    "train.ema_decay=0.9",
]


def pytest_addoption(parser):
    parser.addoption(
        "--app-screenshot",
        default=None,
        metavar="PATH",
        help="where the browser test saves its screenshot of `elt app` (default: a temporary dir), "
        "e.g. docs/assets/app.png",
    )


@pytest.fixture(scope="session")
def toy_runs_300(tmp_path_factory):
    """The toy paradigm (TOY_OVERRIDES) trained 300 steps with ILSD (``ilsd/``) and vanilla
    (``vanilla/``), once per session: test_trainer checks what that training did and
    test_eval_sweep sweeps the two checkpoints. Tests read these folders, never write them."""
    from elt import registry
    from elt.config import load_config
    from elt.train.trainer import train

    root = tmp_path_factory.mktemp("toy_runs_300")
    registry.register_paradigm("toy", "toy_task")
    try:
        for mode in ("ilsd", "vanilla"):
            overrides = [*TOY_OVERRIDES, "train.steps=300", f"ilsd.mode={mode}"]
            train(load_config(None, [*overrides, f"train.out_dir={root / mode}"]), progress=False)
    finally:
        registry.unregister_paradigm("toy")
    return root
