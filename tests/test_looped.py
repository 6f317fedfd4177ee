"""The loop engine: looping equals an unrolled tied stack, exits are prefixes, parameters don't grow
with L."""

import copy

import pytest
import torch
from torch import nn

from elt.core.blocks import Block
from elt.core.looped import LoopedTransformer


def make(cond_dim=None, **kw):
    torch.manual_seed(0)
    model = LoopedTransformer(
        dim=32, unique_layers=3, loops=4, heads=4, cond_dim=cond_dim, **kw
    ).double()
    if (
        cond_dim is not None
    ):  # adaLN-Zero starts as the identity; perturb so the test is not trivial
        for block in model.blocks:
            nn.init.normal_(block.ada[1].weight, std=0.1)
    return model


def unrolled(model: LoopedTransformer, loops: int) -> nn.ModuleList:
    """N·L independent modules whose weights are copies of the N unique blocks (tied by value)."""
    return nn.ModuleList(
        copy.deepcopy(model.blocks[i % model.unique_layers])
        for i in range(model.unique_layers * loops)
    )


@pytest.mark.parametrize("cond_dim", [None, 16])
def test_looping_equals_unrolled_tied_stack(cond_dim):
    model = make(cond_dim)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    cond = torch.randn(2, 16, dtype=torch.float64) if cond_dim else None
    h = x
    for block in unrolled(model, 4):
        h = block(h, cond)
    out = model(x, cond).final
    assert torch.equal(out, h)  # exact: the same operations in the same order
    assert not torch.allclose(out, x)  # and the blocks actually did something


def test_exits_equal_separate_forwards_with_fewer_loops():
    model = make()
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    out = model(x, loops=4, exit_loops=(1, 2, 3))
    for k in (1, 2, 3):
        assert torch.equal(out.exits[k], model(x, loops=k).final)
    assert set(out.exits) == {1, 2, 3}
    assert not torch.allclose(out.exits[1], out.final)


def test_any_loop_count_including_beyond_trained():
    model = make()
    x = torch.randn(1, 4, 32, dtype=torch.float64)
    six = model(x, loops=6).final
    h = x
    for block in unrolled(model, 6):
        h = block(h)
    assert torch.equal(six, h)
    assert model.loops == 4  # the trained L_max is unchanged by sampling at other L
    with pytest.raises(ValueError, match="loops must be >= 1"):
        model(x, loops=0)
    with pytest.raises(ValueError, match="exit_loops"):
        model(x, loops=2, exit_loops=(3,))


def test_parameter_count_does_not_depend_on_loops():
    counts = {
        loops: sum(p.numel() for p in LoopedTransformer(32, 3, loops, 4).parameters())
        for loops in (1, 2, 4, 8)
    }
    assert len(set(counts.values())) == 1
    one_block = sum(p.numel() for p in Block(32, 4).parameters())
    assert counts[1] == 3 * one_block


def test_prefix_tokens_condition_and_are_stripped():
    model = make()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    p1 = torch.randn(2, 1, 32, dtype=torch.float64)
    p2 = torch.randn(2, 1, 32, dtype=torch.float64)
    a = model(x, prefix=p1, exit_loops=(2,))
    b = model(x, prefix=p2)
    assert a.final.shape == x.shape and a.exits[2].shape == x.shape
    assert not torch.allclose(a.final, b.final)  # the prefix is attended to


def test_adaln_zero_blocks_start_as_identity():
    model = LoopedTransformer(dim=32, unique_layers=2, loops=3, heads=4, cond_dim=8)
    x = torch.randn(2, 5, 32)
    assert torch.equal(model(x, torch.randn(2, 8)).final, x)


def gradients(model, x):
    model.zero_grad()
    out = model(x, exit_loops=(2,))
    (out.final.pow(2).mean() + out.exits[2].sin().mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_same_outputs_and_gradients():
    plain = make()
    ckpt = make(checkpoint_loops=True)
    ckpt.load_state_dict(plain.state_dict())
    plain.train()
    ckpt.train()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    g1, g2 = gradients(plain, x), gradients(ckpt, x)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-10, atol=1e-12)


def test_optional_loop_embedding_and_norm_change_the_function():
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    base = make()
    norm = make(loop_norm=True)
    norm.load_state_dict(base.state_dict(), strict=False)
    assert not torch.allclose(base(x).final, norm(x).final)
    emb = make(loop_embedding=True)
    emb.load_state_dict(base.state_dict(), strict=False)
    torch.testing.assert_close(
        emb(x).final, base(x).final
    )  # zero-initialised: identical at the start
    nn.init.normal_(emb.loop_embed.weight, std=0.1)
    assert not torch.allclose(emb(x).final, base(x).final)


def test_flops_scale_linearly_with_loops():
    model = LoopedTransformer(64, 2, 4, 4)
    assert model.flops_per_token(16, loops=4) == pytest.approx(
        4 * model.flops_per_token(16, loops=1)
    )


def test_input_injection_starts_as_the_plain_loop_and_feeds_the_input_to_every_loop():
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    base = make()
    inj = make(input_injection=True)
    inj.load_state_dict(base.state_dict(), strict=False)
    torch.testing.assert_close(
        inj(x).final, base(x).final
    )  # zero-initialised: identical at the start
    nn.init.normal_(inj.inject.weight, std=0.1)
    # reference: add W·x before every loop, by hand from the blocks
    h = x
    for _ in range(inj.loops):
        h = h + inj.inject(x)
        for block in inj.blocks:
            h = block(h, None)
    torch.testing.assert_close(inj(x).final, h)
    assert not torch.allclose(h, base(x).final)
    with pytest.raises(ValueError, match="re-injects its input"):
        inj.loop_once(x, None, 0)
    assert inj.flops_per_token(5, 2) == pytest.approx(base.flops_per_token(5, 2) + 2 * 2 * 32 * 32)


def test_sampling_computes_each_blocks_adaln_terms_once_per_pass_with_the_same_bits():
    """Without gradients (sampling) each block's conditioning matmul runs once per forward pass, not
    once per loop, and the output is bit-identical to the pass that recomputes it every loop (what
    training does, so autograd and FSDP see the plain block)."""
    model = make(cond_dim=16)
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    cond = torch.randn(3, 16, dtype=torch.float64)
    calls = []
    for block in model.blocks:
        block.ada.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        cached = model(x, cond, loops=4, exit_loops=[2]).final
    assert len(calls) == model.unique_layers
    calls.clear()
    recomputed = model(x, cond, loops=4, exit_loops=[2]).final  # gradients on: every loop
    assert len(calls) == model.unique_layers * 4
    assert torch.equal(cached, recomputed.detach())


def test_compiled_gelu_is_the_tanh_approximation(monkeypatch):
    """Under torch.compile the MLP's GELU is written with a sigmoid (inductor vectorises it); it is
    the same function as ATen's tanh approximation up to float rounding. The branch is taken by
    making ``is_compiling`` true (compiling itself costs seconds and adds only kernel fusion)."""
    import torch.nn.functional as F

    from elt.core.blocks import gelu_tanh

    x = torch.linspace(-8, 8, 4001)
    reference = F.gelu(x, approximate="tanh")
    assert torch.equal(gelu_tanh(x), reference)  # eager: ATen's kernel itself
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    sigmoid_form = gelu_tanh(x)
    assert not torch.equal(sigmoid_form, reference)  # the other branch ran
    assert (sigmoid_form - reference).abs().max() < 2e-6
    assert (sigmoid_form - F.gelu(x)).abs().max() > 1e-4  # and not the exact (erf) GELU


def test_compiled_linear_adds_the_bias_after_the_matmul(monkeypatch):
    """Under torch.compile an fp32 linear layer is a matmul followed by the bias addition (inductor
    then fuses the addition into the next kernel instead of ATen's addmm copying the bias first):
    the same map up to float rounding; eager, bf16 autocast and bias-free layers keep the layer."""
    import torch.nn.functional as F

    from elt.core.blocks import linear

    torch.manual_seed(0)
    layer, bare = torch.nn.Linear(192, 768), torch.nn.Linear(192, 768, bias=False)
    x = torch.randn(130, 192)
    calls = []
    real = F.linear
    monkeypatch.setattr(F, "linear", lambda *a: calls.append(len(a)) or real(*a))
    assert torch.equal(linear(layer, x), layer(x))
    assert calls == [3, 3]  # eager: the layer's own call, weight and bias together
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    calls.clear()
    split = linear(layer, x)
    assert calls == [2]  # the matmul alone; the bias added after
    assert (split - layer(x)).abs().max() < 1e-5
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(layer, x).dtype == torch.bfloat16
    assert torch.equal(linear(bare, x), bare(x))
    assert calls == [3, 3, 3]  # bf16 autocast and no bias: the layer itself
