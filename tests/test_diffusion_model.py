"""The DiT-style ELT generator: patches, adaLN-Zero start, CFG, loop schedules, determinism, FLOPs,
ILSD terms."""

import numpy as np
import pytest
import torch

from elt.config import ConfigError, load_config
from elt.core.blocks import sincos_embedding
from elt.diffusion.patches import patchify, token_grid, unpatchify
from elt.diffusion.task import build_generator

TINY = [
    "paradigm=diffusion",
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "data.num_classes=4",
    "data.image_size=8",
    "diffusion.patch_size=2",
    "sampling.steps=4",
]


def tiny(*extra, perturb=True):
    torch.manual_seed(0)
    generator = build_generator(load_config(None, [*TINY, *extra])).eval()
    if perturb:  # zero-initialised layers would make every check trivially pass; give them weights
        with torch.no_grad():
            for name, p in generator.named_parameters():
                if p.abs().sum() == 0:
                    p.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    return generator


# -- patches ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,patch", [((2, 3, 8, 12), (2, 4)), ((2, 4, 4, 8, 6), (2, 4, 3)), ((1, 1, 6), (3,))]
)
def test_patchify_round_trips_in_2d_and_3d(shape, patch):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    grid = token_grid(shape[1:], patch)
    assert tokens.shape == (shape[0], int(np.prod(grid)), shape[1] * int(np.prod(patch)))
    assert torch.equal(unpatchify(tokens, patch, grid, shape[1]), x)


def test_patch_tokens_follow_the_positional_grid_order():
    """Token i covers the patch at grid coordinate i in row-major order, the order sincos_embedding
    uses."""
    t, h, w = 2, 4, 6
    coords = torch.stack(
        torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    )
    video = coords.float().unsqueeze(0)  # channels = (t, y, x) coordinate of every voxel
    tokens = patchify(video, (1, 2, 3))  # grid 2×2×2
    first_voxel = tokens.view(1, 8, 3, 6)[
        0, :, :, 0
    ]  # channel-major: (channel, within-patch index)
    expected = torch.tensor(
        [[a, 2 * b, 3 * c] for a in range(2) for b in range(2) for c in range(2)]
    ).float()
    assert torch.equal(first_voxel, expected)
    assert sincos_embedding((2, 2, 2), 12).shape == (8, 12)


def test_patchify_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 10, 10), (4, 4))
    with pytest.raises(ValueError, match="axes"):
        patchify(torch.zeros(1, 1, 8, 8), (2, 2, 2))


# -- initialisation --------------------------------------------------------------------------------
def test_adaln_zero_makes_every_block_the_identity_at_step_zero():
    generator = tiny(perturb=False)
    torch.manual_seed(1)
    h = torch.randn(3, generator.tokens, 32)
    cond = generator.condition(torch.rand(3), torch.tensor([0, 1, -1]))
    assert cond.abs().sum() > 0
    for block in generator.backbone.blocks:
        assert torch.equal(block(h, cond), h)
    out, exits = generator(
        torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, 2]), exit_loops=[1]
    )
    assert (
        torch.count_nonzero(out) == 0 and torch.count_nonzero(exits[1]) == 0
    )  # zero-initialised head


# -- guidance, loops, determinism ------------------------------------------------------------------
def test_cfg_scale_one_is_the_conditional_prediction_and_guides_every_channel():
    generator = tiny("data.channels=3")
    torch.manual_seed(2)
    z, t, labels = torch.randn(4, 3, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 3])
    cond = generator(z, t, labels, loops=2)[0]
    uncond = generator(z, t, torch.full_like(labels, -1), loops=2)[0]
    torch.testing.assert_close(generator.guided(z, t, labels, 2, 1.0), cond)
    guided = generator.guided(z, t, labels, 2, 3.0)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    for channel in range(3):  # no channel is left unguided (the DiT 3-of-4-channel slip)
        assert not torch.allclose(guided[:, channel], cond[:, channel], atol=1e-4)


def test_cfg_runs_conditional_and_unconditional_as_one_batch_with_the_steps_loop_count():
    generator = tiny()
    calls = []
    real = generator.backbone.forward

    def spy(x, cond=None, loops=None, exit_loops=(), prefix=None):
        calls.append((x.shape[0], loops))
        return real(x, cond, loops=loops, exit_loops=exit_loops, prefix=prefix)

    generator.backbone.forward = spy
    generator.generate([0, 1, 2], loops=[3, 1, 2, 2], guidance=2.0, seed=0)
    assert calls == [(6, 3), (6, 1), (6, 2), (6, 2)]
    calls.clear()
    generator.generate([0, 1, 2], loops=2, guidance=1.0, seed=0)
    assert calls == [(3, 2)] * 4


def test_generate_is_seeded_and_loop_count_matters():
    generator = tiny()
    a = generator.generate([0, 1, 2, 3], loops=2, seed=5)
    assert a.dtype == np.uint8 and a.shape == (4, 8, 8, 1)
    assert np.array_equal(a, generator.generate([0, 1, 2, 3], loops=[2, 2, 2, 2], seed=5))
    assert not np.array_equal(a, generator.generate([0, 1, 2, 3], loops=2, seed=6))
    assert not np.array_equal(a, generator.generate([0, 1, 2, 3], loops=1, seed=5))
    ancestral = generator.generate(
        [0, 1, 2, 3], loops=2, seed=5, sampler="ddpm"
    )  # per-call sampler override
    assert np.array_equal(
        ancestral, generator.generate([0, 1, 2, 3], loops=2, seed=5, sampler="ddpm")
    )
    assert not np.array_equal(ancestral, a)
    with pytest.raises(ValueError, match="4 steps"):
        generator.generate([0], loops=[1, 2])
    with pytest.raises(ValueError, match="class labels"):
        generator.generate([7])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler"])
@pytest.mark.parametrize("process", ["ddpm", "flow"])
def test_every_sampler_and_process_generates(sampler, process):
    generator = tiny(
        f"diffusion.sampler={sampler}", f"diffusion.process={process}", "diffusion.prediction=v"
    )
    images = generator.generate([0, 3], seed=0, steps=3)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8


def test_gflops_count_steps_loops_and_guidance():
    generator = tiny()
    one = generator.gflops_per_sample(loops=1, steps=10, guidance=1.0)
    two = generator.gflops_per_sample(loops=2, steps=10, guidance=1.0)
    three = generator.gflops_per_sample(loops=3, steps=10, guidance=1.0)
    assert two - one == pytest.approx(three - two) and two - one > 0  # linear in L
    assert generator.gflops_per_sample(loops=2, steps=20, guidance=1.0) == pytest.approx(2 * two)
    assert generator.gflops_per_sample(loops=2, steps=10, guidance=2.0) == pytest.approx(2 * two)
    mixed = generator.gflops_per_sample(loops=[1, 3] * 5, steps=10, guidance=1.0)
    assert mixed == pytest.approx(two)


# -- training terms --------------------------------------------------------------------------------
def test_training_loss_has_ilsd_terms_and_vanilla_has_teacher_only():
    generator = tiny().train()
    batch = (torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 4)
    torch.manual_seed(0)
    terms = generator.training_loss(batch, student_loops=1, lam=0.25)
    assert terms.distill is not None and terms.distill > 0 and terms.student_loops == 1
    torch.testing.assert_close(
        terms.total, terms.teacher_gt + 0.25 * terms.student_gt + 0.75 * terms.distill
    )
    terms.total.backward()
    assert all(p.grad is not None for p in generator.backbone.parameters())
    torch.manual_seed(0)
    vanilla = generator.training_loss(batch, student_loops=None, lam=1.0)
    assert vanilla.student_gt is None and vanilla.distill is None
    torch.testing.assert_close(vanilla.teacher_gt, terms.teacher_gt)  # same draw, same teacher


def test_state_dict_holds_learned_weights_only():
    keys = tiny().state_dict().keys()
    assert "pos_embed" not in keys and not any(k.startswith("vae") for k in keys)
    assert any(k.startswith("backbone.blocks.0.ada") for k in keys)


def test_bad_diffusion_settings_are_config_errors():
    with pytest.raises(ConfigError, match="diffusion.sampler"):
        build_generator(load_config(None, [*TINY, "diffusion.sampler=heun"]))
    with pytest.raises(ConfigError, match="patch_size"):
        build_generator(load_config(None, [*TINY, "diffusion.patch_size=3"]))
    with pytest.raises(ConfigError, match="vae_path"):
        build_generator(load_config(None, [*TINY, "diffusion.space=latent"]))
