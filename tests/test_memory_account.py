"""The per-GPU memory account (elt.train.memory): its activation count matches what autograd really
saves, and its FSDP units order as they must."""

import pytest
import torch

from elt.core.looped import LoopedTransformer
from elt.recipes import build_on_meta, load_recipe
from elt.train.memory import fsdp_account, layer_activation_values


@pytest.mark.parametrize("cond", [None, 64])
def test_activation_count_matches_autograds_saved_tensors(cond):
    width, layers, loops, batch, tokens = 64, 2, 3, 2, 16
    model = LoopedTransformer(width, layers, loops, heads=4, cond_dim=cond)
    x = torch.randn(batch, tokens, width, requires_grad=True)
    c = torch.randn(batch, width) if cond else None
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, c)
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()} | {
        x.untyped_storage().data_ptr()
    }
    values = sum(n for ptr, n in saved.items() if ptr not in skip)
    expected = (
        layer_activation_values(width, 4.0, cond is not None) * tokens * batch * layers * loops
    )
    assert values == pytest.approx(expected, rel=0.05)


def test_per_block_wrap_gathers_less_than_the_one_unit_wrap():
    xl = build_on_meta(load_recipe("imagenet256_masked_elt_xl_7x4"))
    one = fsdp_account(xl, 8, "backbone", micro_batch=4)
    block = fsdp_account(xl, 8, "block", micro_batch=4)
    reuse = fsdp_account(xl, 8, "block", reshard_after_forward=False, micro_batch=4)
    params = sum(p.numel() for p in xl.parameters())
    assert one.sharded_state == block.sharded_state == 20 * params / 8
    assert block.gathered < reuse.gathered < one.gathered
    assert one.activations == block.activations
    assert (
        fsdp_account(xl, 8, "block", micro_batch=4, checkpoint_loops=True).activations
        < block.activations
    )
    assert fsdp_account(xl, 16, "block", micro_batch=4).sharded_state == block.sharded_state / 2


def test_the_grid_gathers_the_whole_fp32_ema_on_top_of_the_sharded_state():
    """The trainer keeps the EMA sharded (20 bytes per parameter / ranks, EMA included) and gathers
    it whole only to draw a grid: the account's peak is the larger of that moment and the training
    step."""

    generator = build_on_meta(load_recipe("imagenet256_diffusion_dit_32"))
    account = fsdp_account(generator, 8, "block", micro_batch=64)
    params = sum(p.numel() for p in generator.parameters())
    assert account.grid == account.sharded_state + 4 * params
    assert account.peak == max(account.training, account.grid) == account.training
    small = fsdp_account(generator, 8, "block", micro_batch=1, checkpoint_loops=True)
    assert small.peak >= small.grid > small.sharded_state
