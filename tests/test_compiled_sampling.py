"""Compiled sampling (``sampling.compile`` / ``elt sample --compile``): the compiled fixed-loop
steps give the eager samples within the documented tolerance, compile once per (batch, loops) and
follow weight changes.

Tolerance (docs/benchmarks.md, "Compiled sampling"): inductor fuses and reorders float operations,
so a compiled step differs from the eager one by float rounding (network outputs within 1e-4 in
fp32); after all sampling steps the diffusion latents stay within 1e-3 and the uint8 images within 1
level; masked tokens are discrete draws and come out equal unless a draw sits within rounding of a
boundary (not the case here)."""

import numpy as np
import pytest
import torch

from elt.config import load_config
from elt.registry import build_generator

DIFFUSION = [
    "paradigm=diffusion",
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "data.num_classes=4",
    "data.image_size=8",
    "diffusion.patch_size=2",
    "sampling.steps=4",
    "train.precision=fp32",
]
MASKED = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "sampling.steps=4",
    "tokenizer.channels=16",
    "tokenizer.levels=[5,5,5]",
    "sampling.precision=fp32",
]


def perturbed(generator):
    with torch.no_grad():  # zero-initialised layers would make outputs trivially equal
        for index, (_, p) in enumerate(generator.named_parameters()):
            if p.abs().sum() == 0:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(index))
    return generator.eval()


@pytest.fixture(scope="module")
def diffusion():
    torch.manual_seed(0)
    return perturbed(build_generator(load_config(None, DIFFUSION)))


@pytest.fixture(scope="module")
def masked():
    torch.manual_seed(0)
    return perturbed(build_generator(load_config("fmnist_masked", MASKED)))


def with_compile(generator, on: bool):
    generator.config.sampling.compile = on
    return generator


def test_compiled_diffusion_samples_equal_eager_within_tolerance(diffusion):
    labels = [0, 1, 2]
    kw = dict(steps=4, guidance=2.0, seed=3)
    eager = with_compile(diffusion, False).sample_latents(labels, loops=2, **kw)
    compiled = with_compile(diffusion, True).sample_latents(labels, loops=2, **kw)
    try:
        assert not torch.equal(eager, torch.zeros_like(eager))
        assert (compiled - eager).abs().max() < 1e-3
        images_eager = with_compile(diffusion, False).generate(labels, loops=[3, 1, 2, 2], **kw)
        images = with_compile(diffusion, True).generate(labels, loops=[3, 1, 2, 2], **kw)
        assert np.abs(images.astype(int) - images_eager.astype(int)).max() <= 1
        # one compiled step per (loops, guidance) and reused across steps and calls: 3 loop counts
        # so far
        assert sorted(k[1] for k in diffusion._compiled_steps if k != "state") == [
            (("guidance", 2.0), ("loops", 1)),
            (("guidance", 2.0), ("loops", 2)),
            (("guidance", 2.0), ("loops", 3)),
        ]
    finally:
        with_compile(diffusion, False)


def test_compiled_sampling_follows_weight_changes(diffusion):
    """On a CPU the weights are frozen into the compiled code: changing them must recompile, not
    reuse."""
    import copy

    g = copy.deepcopy(diffusion)
    labels, kw = [0, 3], dict(loops=2, steps=2, guidance=1.0, seed=1)
    before = with_compile(g, True).sample_latents(labels, **kw)
    with torch.no_grad():
        g.final.linear.bias.add_(0.5)
    after = g.sample_latents(labels, **kw)
    eager_after = with_compile(g, False).sample_latents(labels, **kw)
    assert (after - before).abs().max() > 0.1
    assert (after - eager_after).abs().max() < 1e-3


def test_compiled_step_has_the_weights_frozen_into_its_code(diffusion):
    """Freezing is in effect (Dynamo reads it from the global inductor config when it traces, so
    ``torch.compile(options=...)`` alone leaves every weight a graph input): a weight change that
    the parameter's version counter does not see (through ``.data``) reaches the eager network but
    not the compiled step, whose weights are constants of the code."""
    import copy

    from elt.core.generator import compile_step

    g = copy.deepcopy(diffusion)
    z, t, labels = torch.randn(2, *g.data_shape), torch.full((2,), 0.5), torch.tensor([0, 1])
    with torch.no_grad():
        step = compile_step(lambda a, b, c: g(a, b, c, 2)[0], torch.device("cpu"))
        before = step(z, t, labels)
        assert (before - g(z, t, labels, 2)[0]).abs().max() < 1e-4
        g.final.linear.bias.data.add_(0.5)
        assert (g(z, t, labels, 2)[0] - before).abs().max() > 0.1  # the eager network sees it
        assert torch.equal(step(z, t, labels), before)  # the compiled code does not


def test_compiled_masked_tokens_equal_eager(masked):
    labels = [0, 1, 2, 3]
    kw = dict(steps=4, guidance=2.0, seed=5)
    eager = with_compile(masked, False).generate_tokens(labels, loops=2, **kw)
    try:
        compiled = with_compile(masked, True).generate_tokens(labels, loops=2, **kw)
        assert torch.equal(compiled, eager)
        tokens = torch.full((2, masked.seq_len), masked.mask_id)
        labels2 = torch.tensor([0, 1])
        with torch.no_grad():
            step = masked.compiled_step(
                "guided_logits", masked.guided_logits, loops=3, guidance=1.0
            )
            assert (
                step(tokens, labels2) - masked.guided_logits(tokens, labels2, 3, 1.0)
            ).abs().max() < 1e-4
    finally:
        with_compile(masked, False)


def test_sample_compile_flag_asks_for_compiled_steps(monkeypatch, tmp_path):
    """``elt sample --compile``: its sampling request asks for compiled steps, and resolves so
    against a checkpoint whose config leaves sampling.compile false."""
    import elt.sampling
    from elt.cli import main

    seen = {}

    def fake_write(generator, request, num, out, progress=True, classes=None):
        seen["config"] = bool(generator.config.sampling.compile)
        seen["resolved"] = generator.resolve_request(request).compile
        raise SystemExit(0)

    monkeypatch.setattr(elt.sampling, "write_samples", fake_write)
    argv = ["sample", "--ckpt", "demo:diffusion", "--out", str(tmp_path / "s"), "--num", "1"]
    with pytest.raises(SystemExit):
        main([*argv, "--compile"])
    assert seen == {"config": False, "resolved": True}
    with pytest.raises(SystemExit):
        main(argv)
    assert seen == {"config": False, "resolved": False}
