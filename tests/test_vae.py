"""The pretrained-VAE adapter (diffusers AutoencoderKL from a local folder), with random weights of
the layout."""

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

from elt.tokenizers.vae import PretrainedVAE, VAEError, resolve_vae_dir  # noqa: E402

# The Stable-Diffusion VAE's layout (stabilityai/sd-vae-ft-ema config.json), the one the paper uses.
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    act_fn="silu",
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
# The same layout, narrower, for fast tests (downsampling ×4, 4 latent channels).
SMALL_VAE = dict(
    SD_VAE,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
)


def save_random_vae(folder, layout=SMALL_VAE, **changes):
    torch.manual_seed(0)
    AutoencoderKL(**{**layout, **changes}).save_pretrained(folder)
    return folder


def test_loads_from_a_local_folder_with_its_scaling(tmp_path):
    vae = PretrainedVAE.from_pretrained(save_random_vae(tmp_path / "vae"))
    assert (vae.latent_channels, vae.downsample, vae.image_channels) == (4, 4, 3)
    assert vae.scaling_factor == pytest.approx(0.18215) and vae.shift_factor == 0.0
    assert vae.latent_shape(32) == (4, 8, 8)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = vae.encode(images)
    assert latents.shape == (2, 4, 8, 8)
    raw_mean = vae.model.encode(images).latent_dist.mean
    torch.testing.assert_close(latents, raw_mean * 0.18215)
    decoded = vae.decode(latents)
    torch.testing.assert_close(
        decoded, vae.model.decode(raw_mean).sample.clamp(-1, 1), rtol=1e-4, atol=1e-4
    )
    assert decoded.shape == (2, 3, 32, 32) and decoded.abs().max() <= 1
    grey = vae.decode(latents, channels=1)
    want = (
        vae.model.decode(raw_mean).sample.mean(1, keepdim=True).clamp(-1, 1)
    )  # averaged, then clamped
    torch.testing.assert_close(grey, want, rtol=1e-4, atol=1e-4)
    # grey images are repeated to the three input channels
    torch.testing.assert_close(
        vae.encode(images[:, :1]), vae.encode(images[:, :1].expand(-1, 3, -1, -1))
    )


def test_scaling_override_and_shift_factor(tmp_path):
    folder = save_random_vae(tmp_path / "vae", scaling_factor=1.5, shift_factor=0.25)
    vae = PretrainedVAE.from_pretrained(folder)
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    raw = vae.model.encode(images).latent_dist.mean
    torch.testing.assert_close(vae.encode(images), (raw - 0.25) * 1.5)
    override = PretrainedVAE.from_pretrained(folder, scaling_factor=0.5)
    torch.testing.assert_close(override.encode(images), (raw - 0.25) * 0.5)


def test_finds_a_pipeline_vae_subfolder_and_explains_a_missing_one(tmp_path):
    save_random_vae(tmp_path / "pipeline" / "vae")
    assert resolve_vae_dir(tmp_path / "pipeline") == tmp_path / "pipeline" / "vae"
    with pytest.raises(VAEError, match="no diffusers AutoencoderKL"):
        PretrainedVAE.from_pretrained(tmp_path / "nowhere")


def test_deepcopy_shares_the_frozen_vae(tmp_path):
    import copy

    vae = PretrainedVAE.from_pretrained(save_random_vae(tmp_path / "vae"))
    assert copy.deepcopy(vae) is vae
    assert not any(p.requires_grad for p in vae.model.parameters())


def test_indivisible_image_size_is_explained(tmp_path):
    vae = PretrainedVAE.from_pretrained(save_random_vae(tmp_path / "vae"))
    with pytest.raises(VAEError, match="divisible"):
        vae.latent_shape(30)
