"""The shipped demo models and `elt demo`; inference-only export."""

import json

import numpy as np
import pytest

import elt
from conftest import TOY_OVERRIDES
from elt.cli import main
from elt.config import load_config
from elt.demo import shipped_models
from elt.train.checkpoint import export_inference
from elt.train.trainer import train


def test_export_is_small_and_samples_like_the_ema(toy_paradigm, tmp_path):
    train(load_config(None, [*TOY_OVERRIDES, "train.steps=20", f"train.out_dir={tmp_path / 'run'}"]),
          progress=False)
    out = export_inference(tmp_path / "run", tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    full = elt.load(tmp_path / "run").generate([0, 1, 2, 3], seed=3).astype(int)
    half = elt.load(out).generate([0, 1, 2, 3], seed=3).astype(int)
    assert np.abs(full - half).max() <= 2  # fp16 weights: same images up to rounding


def test_both_paradigms_ship_a_small_demo_model():
    models = shipped_models()
    assert set(models) == {"masked", "diffusion"}
    total = sum(f.stat().st_size for d in models.values() for f in d.iterdir())
    assert total <= 20 * 2**20


@pytest.mark.slow
def test_demo_writes_grids_plot_and_scores(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--per-class", "2", "--no-progress"]) == 0
    record = json.loads((tmp_path / "demo.json").read_text())
    for paradigm in ("masked", "diffusion"):
        info = record["models"][paradigm]
        assert [r["loops"] for r in info["results"]] == list(range(1, info["trained_loops"] + 2))
        trained = info["results"][info["trained_loops"] - 1]
        assert trained["class_accuracy"] >= 0.6  # recognisable classes (chance is 0.1)
        assert (tmp_path / info["grid"]).is_file()
    assert (tmp_path / "quality_vs_loops.png").is_file()
    assert "quality vs loops" in capsys.readouterr().out
