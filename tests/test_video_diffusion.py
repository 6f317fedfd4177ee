"""The diffusion paradigm on video: 3D patches (temporal × spatial) of C×T×H×W clips in pixel space,
the config checks, and a tiny train → sample run on moving Fashion-MNIST."""

import json

import numpy as np
import pytest
import torch

from elt.cli import main
from elt.config import ConfigError, load_config
from elt.core.blocks import sincos_embedding
from elt.diffusion.patches import patchify
from elt.diffusion.task import build_generator, image_dataset

VIDEO = [
    "data.name=moving_fmnist",
    "data.frames=4",
    "data.image_size=16",
    "data.sprite_size=8",
    "data.limit=256",
    "diffusion.patch_size=4",
    "diffusion.temporal_patch_size=2",
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "sampling.steps=3",
    "train.threads=1",
    "train.precision=fp32",
]


def video_cfg(*extra):
    return load_config("fmnist_diffusion", [*VIDEO, *extra])


def test_clips_become_3d_patch_tokens_with_3d_positions():
    generator = build_generator(video_cfg())
    assert generator.data_shape == (1, 4, 16, 16)
    assert generator.patch == (2, 4, 4) and generator.grid == (2, 4, 4) and generator.tokens == 32
    assert torch.equal(generator.pos_embed[0], sincos_embedding((2, 4, 4), 32))
    # a change in frame 3 reaches only the tokens of the second temporal slab
    clip = torch.zeros(1, 1, 4, 16, 16)
    moved = clip.clone()
    moved[0, 0, 3, 5, 9] = 1.0
    changed = (patchify(moved, generator.patch) != patchify(clip, generator.patch)).any(-1)[0]
    assert changed.nonzero().flatten().tolist() == [16 + 1 * 4 + 2]  # slab 1, row 1, column 2
    # the network maps a noisy clip to a prediction of the same shape, and the loop count matters
    z, t, labels = torch.randn(2, 1, 4, 16, 16), torch.full((2,), 0.5), torch.tensor([0, 3])
    for block in generator.backbone.blocks:  # leave adaLN-Zero's identity start
        torch.nn.init.normal_(block.ada[1].weight, std=0.05)
    torch.nn.init.normal_(generator.final.linear.weight, std=0.05)
    with torch.no_grad():
        one, three = generator(z, t, labels, loops=1)[0], generator(z, t, labels, loops=3)[0]
    assert one.shape == z.shape and not torch.allclose(one, three)


def test_the_video_dataset_feeds_the_diffusion_path():
    clip, label = image_dataset(video_cfg())[3]
    assert clip.shape == (1, 4, 16, 16) and clip.min() >= -1 and clip.max() <= 1 and 0 <= label < 10


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["diffusion.temporal_patch_size=3"], "temporal_patch_size=3 must divide data.frames=4"),
        (["diffusion.temporal_patch_size=0"], "temporal_patch_size"),
        (["diffusion.space=latent", "diffusion.vae_path=/nowhere"], "pixel space"),
    ],
)
def test_bad_video_settings_are_refused_in_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_generator(video_cfg(*overrides))


@pytest.mark.slow
def test_tiny_video_diffusion_train_then_sample(tmp_path):
    run, out = tmp_path / "run", tmp_path / "samples"
    assert (
        main(
            [
                "train",
                "fmnist_diffusion",
                "--no-progress",
                *VIDEO,
                "train.steps=60",
                "train.batch_size=16",
                "lr_schedule.warmup_steps=5",
                "optimizer.lr=2e-3",
                "logging.every=1",
                "logging.sample_every=0",
                "logging.sample_loops=[1,3]",
                f"train.out_dir={run}",
            ]
        )
        == 0
    )
    log = [
        json.loads(line)
        for line in (run / "log.jsonl").read_text().splitlines()
        if '"teacher_gt"' in line
    ]
    first, last = (
        np.mean([r["teacher_gt"] for r in log[:3]]),
        np.mean([r["teacher_gt"] for r in log[-10:]]),
    )
    assert last < 0.7 * first, (first, last)
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,3",
                "--num",
                "6",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with np.load(out / "samples_L3.npz") as data:
        assert data["arr_0"].shape == (6, 4, 16, 16, 1) and data["arr_0"].dtype == np.uint8
    record = json.loads((out / "samples.json").read_text())
    assert "grid.gif" in record["animations"] and record["data"]["sprite_size"] == 8
