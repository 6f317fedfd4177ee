"""The shipped demo models and `elt demo`; inference-only export."""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

import elt
from conftest import TOY_OVERRIDES
from elt.cli import main
from elt.config import load_config
from elt.demo import demo_names, draw_video_grid, shipped_models
from elt.inference.export import export_inference
from elt.sampling import sample_to_disk
from elt.train.trainer import train


def test_export_is_small_and_samples_like_the_ema(toy_paradigm, tmp_path):
    train(
        load_config(None, [*TOY_OVERRIDES, "train.steps=20", f"train.out_dir={tmp_path / 'run'}"]),
        progress=False,
    )
    out = export_inference(tmp_path / "run", tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    full = elt.load(tmp_path / "run").generate([0, 1, 2, 3], seed=3).astype(int)
    half = elt.load(out).generate([0, 1, 2, 3], seed=3).astype(int)
    assert np.abs(full - half).max() <= 2  # fp16 weights: same images up to rounding


def test_export_sets_default_sampling_settings_and_refuses_other_keys(tmp_path, capsys):
    out = tmp_path / "hot"
    assert (
        main(
            [
                "export",
                "--ckpt",
                "demo:masked",
                "--out",
                str(out),
                "sampling.guidance=3",
                "masked.temperature_base=2.5",
            ]
        )
        == 0
    )
    shipped, hot = elt.load("demo:masked"), elt.load(out)
    assert hot.config.sampling.guidance == 3.0 and hot.config.masked.temperature_base == 2.5
    assert (
        hot.config.model == shipped.config.model
    )  # the architecture and weights are the shipped ones
    labels = [
        0,
        1,
        2,
        3,
    ]  # the export samples as the shipped model does with those settings given at load
    overridden = elt.load(
        "demo:masked", overrides=["sampling.guidance=3", "masked.temperature_base=2.5"]
    )
    assert np.array_equal(
        hot.generate(labels, loops=1, steps=4, seed=0),
        overridden.generate(labels, loops=1, steps=4, seed=0),
    )
    assert not np.array_equal(
        hot.generate(labels, loops=1, steps=4, seed=0),
        shipped.generate(labels, loops=1, steps=4, seed=0),
    )
    capsys.readouterr()
    assert (
        main(["export", "--ckpt", "demo:masked", "--out", str(tmp_path / "bad"), "model.width=64"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.width=64" in err and "sampling.guidance" in err
    assert not (tmp_path / "bad").exists()


def test_both_paradigms_ship_a_small_demo_model():
    models = shipped_models()
    assert (
        {"masked", "diffusion"}
        <= set(models)
        <= {f"{p}{v}" for p in ("masked", "diffusion", "video") for v in ("", "-vanilla")}
    )
    total = sum(f.stat().st_size for d in models.values() for f in d.iterdir())
    assert total <= 5 * 2**20 * len(models)
    for (
        name,
        folder,
    ) in models.items():  # shipped configs name no folder of the machine they were trained on
        text = (folder / "config.yaml").read_text()
        assert "/work/" not in text and "\n  out_dir: /" not in text, name
        if name.endswith("-vanilla"):
            assert elt.load(f"demo:{name}").config.ilsd.mode == "vanilla"


def test_export_and_checkpoint_files_get_the_umask_mode(toy_paradigm, tmp_path):
    old = os.umask(0o022)
    try:
        train(
            load_config(
                None, [*TOY_OVERRIDES, "train.steps=2", f"train.out_dir={tmp_path / 'run'}"]
            ),
            progress=False,
        )
        out = export_inference(tmp_path / "run", tmp_path / "export")
    finally:
        os.umask(old)
    ckpt = next((tmp_path / "run" / "checkpoints").glob("step_*"))
    for path in [*ckpt.iterdir(), *out.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_samples_json_records_the_steps_and_guidance_used(tmp_path):
    generator = elt.load("demo:masked")
    record = sample_to_disk(generator, [1], 2, tmp_path, progress=False)
    saved = json.loads((tmp_path / "samples.json").read_text())
    assert record["steps"] == saved["steps"] == generator.config.sampling.steps
    assert saved["guidance"] == generator.config.sampling.guidance
    sample_to_disk(generator, [1], 2, tmp_path / "b", steps=3, guidance=2.0, progress=False)
    saved = json.loads((tmp_path / "b" / "samples.json").read_text())
    assert (saved["steps"], saved["guidance"]) == (3, 2.0)


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
        ci = [r["ci95"] for r in info["results"]]
        assert all(
            lo <= r["class_accuracy"] <= hi for (lo, hi), r in zip(ci, info["results"], strict=True)
        )
    assert (tmp_path / "quality_vs_loops.png").is_file()
    assert "quality vs loops" in capsys.readouterr().out
    vanilla = [n for n in record["models"] if n.endswith("-vanilla")]
    assert record["vanilla"] == vanilla
    for name in vanilla:
        assert record["models"][name]["mode"] == "vanilla"
        assert (
            record["models"][name]["grid"] == record["models"][name.split("-")[0]]["grid"]
        )  # drawn side by side
    if "video" in shipped_models():  # one clip per class at every loop count, animated
        info = record["models"]["video"]
        assert info["panel"] == "video" and info["paradigm"] == "masked"
        assert [r["n"] for r in info["results"]] == [10] * (info["trained_loops"] + 1)
        assert info["results"][info["trained_loops"] - 1]["class_accuracy"] >= 0.3  # chance is 0.1
        with Image.open(tmp_path / "video_grid.gif") as gif:
            assert gif.n_frames == elt.load("demo:video").config.data.frames


def test_demo_names_follow_what_is_shipped_and_the_flags():
    shipped = {n: None for n in ("masked", "masked-vanilla", "diffusion", "video", "video-vanilla")}
    both = ("masked", "diffusion")
    assert demo_names(shipped, both, None, None) == [
        "masked",
        "masked-vanilla",
        "diffusion",
        "video",
        "video-vanilla",
    ]
    assert demo_names(shipped, both, False, None) == ["masked", "diffusion", "video"]
    assert demo_names(shipped, both, None, False) == ["masked", "masked-vanilla", "diffusion"]
    assert demo_names(shipped, ("diffusion",), None, None) == [
        "diffusion"
    ]  # video is a masked model
    assert demo_names({"masked": None}, ("masked",), True, True) == [
        "masked",
        "masked-vanilla",
        "video",
        "video-vanilla",
    ]  # required: reported missing
    assert demo_names({"masked": None}, ("masked",), None, None) == ["masked"]


def test_video_grid_animates_every_loop_count_of_every_model(tmp_path):
    rng = np.random.default_rng(0)
    clips = {
        name: [rng.integers(0, 256, (10, 8, 32, 32, 1), dtype=np.uint8) for _ in range(3)]
        for name in ("video", "video-vanilla")
    }
    results = [{"loops": k, "class_accuracy": k / 10} for k in (1, 2, 3)]
    record = {
        "steps": {"video": 6},
        "models": {
            "video": {"mode": "ilsd", "trained_loops": 2, "results": results},
            "video-vanilla": {"mode": "vanilla", "trained_loops": 2, "results": results},
        },
    }
    still = draw_video_grid(record, clips, tmp_path / "video_grid.png")
    with Image.open(still.with_suffix(".gif")) as gif:
        assert gif.n_frames == 8
        gif.seek(5)
        frame = np.asarray(gif.convert("L"))
    assert (
        frame.shape[0] > 6 * 64
    )  # six rows of clips (3 loop counts × 2 models), upscaled 2× (32 px)
    with Image.open(still) as png:  # the still: first / middle / last frame of every row
        assert png.size[1] > 18 * 64
