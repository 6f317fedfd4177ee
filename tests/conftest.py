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
