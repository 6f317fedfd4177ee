"""End to end: a tiny pixel-space run whose loss falls, the CLI (train → sample → info), and the
latent path through a random-weight VAE of the SD layout (encode once, cache, train, decode
samples)."""

import json

import numpy as np
import pytest
import torch

import elt
from elt.cli import main
from elt.config import load_config
from elt.train.trainer import train

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "train.batch_size=32",
    "lr_schedule.warmup_steps=10",
    "optimizer.lr=2e-3",
    "logging.every=5",
    "train.threads=1",
    "train.ema_decay=0.9",
    "logging.sample_loops=[1,3]",
    "data.limit=256",
    "sampling.steps=3",
]


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective",
    [
        [
            "diffusion.process=ddpm",
            "diffusion.prediction=x0",
            "diffusion.weighting=sigmoid",
        ],  # the paper's
        ["diffusion.process=flow", "diffusion.prediction=v", "diffusion.weighting=v"],
    ],
)
def test_tiny_cpu_run_loss_falls(tmp_path, objective):
    # 120 steps: the flow objective's v-loss has a large irreducible part and at 80 steps fell to
    # 0.68x (the paper's loop) and 0.70x (the config's input injection), on the bar; at 120 steps
    # 0.63x
    cfg = load_config(
        "fmnist_diffusion",
        [*TINY, *objective, "train.steps=120", f"train.out_dir={tmp_path / 'run'}"],
    )
    train(cfg, progress=False)
    log = read_log(tmp_path / "run")
    first, last = (
        np.mean([r["teacher_gt"] for r in log[:2]]),
        np.mean([r["teacher_gt"] for r in log[-4:]]),
    )
    assert last < 0.7 * first, (first, last)
    assert {"student_gt", "distill"} <= log[-1].keys()
    assert list((tmp_path / "run" / "samples").glob("step_*.png"))


@pytest.mark.slow
def test_cli_train_sample_info(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "samples"
    assert (
        main(
            [
                "train",
                "fmnist_diffusion",
                "--no-progress",
                *TINY,
                "train.steps=4",
                f"train.out_dir={run}",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,2,4",
                "--num",
                "12",
                "--steps",
                "2",
                "--guidance",
                "1.5",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    for loops in (1, 2, 4):
        data = np.load(out / f"samples_L{loops}.npz")
        assert data["arr_0"].shape == (12, 32, 32, 1) and data["arr_0"].dtype == np.uint8
        assert np.bincount(data["arr_1"]).tolist() == [2, 2] + [1] * 8
    assert (out / "grid.png").is_file()
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["paradigm"] == "diffusion" and info["trained_loops"] == 3
    flops = info["gflops_per_sample"]
    assert flops["1"] < flops["2"] < flops["3"]


def _save_vae(folder, **layout):
    from test_vae import save_random_vae

    return save_random_vae(folder, **layout)


def latent_overrides(tmp_path, vae_dir):
    return [
        "diffusion.space=latent",
        f"diffusion.vae_path={vae_dir}",
        "diffusion.patch_size=1",
        "data.image_size=32",
        "data.limit=12",
        "train.batch_size=4",
        "train.steps=3",
        f"train.out_dir={tmp_path / 'run'}",
        "sampling.steps=2",
        "model.width=32",
        "model.heads=2",
        "model.unique_layers=1",
        "model.loops=2",
        "logging.sample_loops=[1]",
        "train.threads=1",
    ]


@pytest.mark.slow
def test_latent_path_end_to_end_with_the_sd_vae_layout(tmp_path):
    pytest.importorskip("diffusers")
    from elt.diffusion.task import build_generator, image_dataset, prepare_data
    from test_vae import SD_VAE

    vae_dir = _save_vae(tmp_path / "sd-vae", layout=SD_VAE)
    cfg = load_config("fmnist_diffusion", latent_overrides(tmp_path, vae_dir))
    generator = build_generator(cfg)
    assert generator.data_shape == (
        4,
        4,
        4,
    )  # 32² pixels → 4×4×4 latents (downsampling 8, as the SD-VAE)
    data = prepare_data(cfg, generator, tmp_path / "run")
    image, label = image_dataset(cfg)[5]
    latent, latent_label = data[5]
    torch.testing.assert_close(
        latent, generator.vae.encode(image[None])[0], rtol=1e-4, atol=1e-5
    )  # scaled
    assert int(latent_label) == int(label)
    train(cfg, progress=False)
    loaded = elt.load(tmp_path / "run")
    images = loaded.generate([0, 7], loops=1, seed=0)
    assert images.shape == (2, 32, 32, 1) and images.dtype == np.uint8  # decoded through the VAE
    assert list((tmp_path / "run" / "cache").glob("latents_*.npy"))


@pytest.mark.slow
def test_latent_cache_is_reused_and_rebuilt_for_another_vae(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from elt.diffusion.task import build_generator, prepare_data
    from elt.tokenizers.vae import PretrainedVAE

    calls = []
    real = PretrainedVAE.encode
    monkeypatch.setattr(
        PretrainedVAE, "encode", lambda self, x: calls.append(len(x)) or real(self, x)
    )
    vae_a = _save_vae(tmp_path / "a")
    cfg = load_config("fmnist_diffusion", latent_overrides(tmp_path, vae_a))
    first = prepare_data(cfg, build_generator(cfg), tmp_path / "run")
    assert sum(calls) == 12
    again = prepare_data(cfg, build_generator(cfg), tmp_path / "run")
    assert sum(calls) == 12 and np.array_equal(np.asarray(first.latents), np.asarray(again.latents))
    vae_b = _save_vae(tmp_path / "b", scaling_factor=0.5)
    cfg_b = load_config("fmnist_diffusion", latent_overrides(tmp_path, vae_b))
    prepare_data(cfg_b, build_generator(cfg_b), tmp_path / "run")
    assert sum(calls) == 24  # a different VAE (weights or scaling) never reuses the cache
