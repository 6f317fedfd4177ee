"""Every paper-scale recipe trains 5 steps on a CPU at tiny width, through its real data path: a
generated image folder with a (random-weight, reduced-depth) MaskGIT VQGAN or diffusers VAE for
ImageNet, generated videos with an fsq3d tokenizer for UCF-101. Only sizes are overridden; the
recipe's paradigm, ILSD mode, N×L, schedule and losses are its own."""

import json

import pytest

from elt.config import load_config
from elt.recipes import recipe_names
from elt.train.trainer import lr_at, train
from test_prepare import write_images
from test_video_data import UCF_CLASSES, ucf_root  # noqa: F401 - the fixture

pytest.importorskip("diffusers")

TINY = [
    "model.width=32",
    "model.heads=2",
    "train.steps=5",
    "train.batch_size=4",
    "lr_schedule.warmup_steps=1",
    "train.device=cpu",
    "train.precision=fp32",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.every=1",
    "logging.samples_per_class=1",
    "data.num_workers=0",
    "distributed.strategy=ddp",
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from test_maskgit_vq import tiny_maskgit_folder
    from test_vae import save_random_vae

    root = tmp_path_factory.mktemp("recipe_assets")
    write_images(root / "images", per_class=6, broken=1, size=40)
    vq = tiny_maskgit_folder(root / "maskgit")
    vae = save_random_vae(root / "vae")
    return root, vq, vae


def recipe_overrides(name, root, vq, vae, ucf, run):
    if name.startswith("imagenet256_masked"):
        data = [
            f"data.root={root / 'images'}",
            "data.num_classes=2",
            "data.image_size=32",
            f"tokenizer.pretrained_path={vq}",
            f"tokenizer.path={root / 'vq_cache'}",
            "sampling.steps=3",
        ]
    elif name.startswith("imagenet256_diffusion"):
        data = [
            f"data.root={root / 'images'}",
            "data.num_classes=2",
            "data.image_size=32",
            f"diffusion.vae_path={vae}",
            f"diffusion.latent_cache={root / 'latents'}",
            "sampling.steps=3",
        ]
    else:
        data = [
            f"data.root={ucf}",
            f"data.num_classes={len(UCF_CLASSES)}",
            "data.frames=4",
            "data.image_size=16",
            "tokenizer.channels=8",
            "tokenizer.steps=2",
            "tokenizer.batch_size=2",
            "tokenizer.eval_items=0",
            f"tokenizer.path={root / 'fsq3d'}",
            "tokenizer.warmup_steps=1",
            "sampling.steps=3",
        ]
    return [*TINY, *data, f"train.out_dir={run}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", recipe_names())
def test_recipe_trains_five_steps_on_cpu(name, assets, ucf_root, tmp_path):  # noqa: F811
    root, vq, vae = assets
    cfg = load_config(name, recipe_overrides(name, root, vq, vae, ucf_root, tmp_path / "run"))
    final = train(cfg, progress=False)
    assert final.name == "step_0000005"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert all(r["loss"] == r["loss"] and r["loss"] < 1e4 for r in log)  # finite
    assert [r["lr"] for r in log] == pytest.approx([lr_at(s, cfg) for s in range(5)])
    floor = (
        1.0 if cfg.lr_schedule.kind == "constant" else cfg.lr_schedule.min_ratio
    )  # MaskGIT/DiT: constant
    assert log[-1]["lr"] == pytest.approx(
        cfg.optimizer.lr * floor
    )  # the recipe's schedule reaches its end
    assert ("student_loops" in log[0]) == (cfg.ilsd.mode == "ilsd")
