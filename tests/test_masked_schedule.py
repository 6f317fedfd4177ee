"""Masking schedule (training and decoding) and the iterative decoder's invariants, with stand-in
logits."""

import math

import pytest
import torch

from elt.masked.masking import masked_counts, sample_training_mask, unmask_counts
from elt.masked.sampler import gumbel_temperature, iterative_decode


def test_training_mask_follows_cosine_ratio():
    g = torch.Generator().manual_seed(0)
    mask = sample_training_mask(20000, 64, generator=g)
    counts = mask.sum(1).float()
    assert counts.min() >= 1 and counts.max() <= 64
    # E[cos(pi/2 u)] = 2/pi for u ~ U[0, 1): the mean masked fraction (ceil adds < 1/64)
    assert abs(counts.mean().item() / 64 - 2 / math.pi) < 0.02
    # positions are uniform: every position is masked about equally often
    per_position = mask.float().mean(0)
    assert (per_position - per_position.mean()).abs().max() < 0.03


def test_decoding_schedule_is_cosine_and_complete():
    assert masked_counts(64, 12)[0] == math.floor(64 * math.cos(math.pi / 2 / 12))
    for seq_len, steps in [(64, 12), (64, 1), (16, 16), (256, 24), (7, 3)]:
        counts = masked_counts(seq_len, steps)
        assert len(counts) == steps and counts[-1] == 0
        assert all(
            a > b for a, b in zip([seq_len, *counts], counts, strict=False)
        )  # each step fixes >= 1
        assert sum(unmask_counts(seq_len, steps)) == seq_len
    with pytest.raises(ValueError, match="at most 16 steps"):
        masked_counts(16, 17)


def test_gumbel_temperature_matches_the_paper():
    assert gumbel_temperature(0, 12) == pytest.approx(0.5 + 0.8 * (1 - 1 / 12))
    assert gumbel_temperature(11, 12) == pytest.approx(0.5)
    assert gumbel_temperature(3, 8, base=1.0, spread=2.0) == pytest.approx(1.0 + 2.0 * (1 - 4 / 8))


def random_logits_fn(vocab, seed=1):
    """Logits that depend on the visible tokens (like a model) but are cheap."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab + 1, vocab, generator=g) * 3

    def fn(tokens, step):
        return table[tokens] + table[tokens.roll(1, dims=1)]

    return fn


def test_each_step_fixes_the_scheduled_count_and_never_remasks():
    seq_len, vocab, steps = 64, 50, 12
    mask_id = vocab
    history = []

    def on_step(step, before, after):
        history.append((step, before.clone(), after.clone()))

    out = iterative_decode(
        random_logits_fn(vocab),
        5,
        seq_len,
        mask_id,
        steps,
        generator=torch.Generator().manual_seed(0),
        on_step=on_step,
    )
    assert len(history) == steps
    fixed = unmask_counts(seq_len, steps)
    for step, before, after in history:
        newly = (before == mask_id) & (after != mask_id)
        assert (newly.sum(1) == fixed[step]).all(), step
        was_fixed = before != mask_id
        assert torch.equal(after[was_fixed], before[was_fixed]), (
            "a fixed token changed or was re-masked"
        )
        assert ((after == mask_id).sum(1) == masked_counts(seq_len, steps)[step]).all()
    assert (out != mask_id).all() and out.min() >= 0 and out.max() < vocab
    assert torch.equal(out, history[-1][2])


def test_decoding_is_deterministic_for_a_seed():
    fn = random_logits_fn(30)
    a = iterative_decode(fn, 4, 16, 30, 6, generator=torch.Generator().manual_seed(3))
    b = iterative_decode(fn, 4, 16, 30, 6, generator=torch.Generator().manual_seed(3))
    c = iterative_decode(fn, 4, 16, 30, 6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_confident_tokens_are_fixed_first():
    """With a peaked distribution at some positions and flat elsewhere, the peaked ones go first."""
    seq_len, vocab = 8, 10
    confident = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0], dtype=torch.bool)

    def fn(tokens, step):
        logits = torch.zeros(tokens.shape[0], seq_len, vocab)
        logits[:, confident, 3] = 30.0
        return logits

    seen = []
    iterative_decode(
        fn,
        16,
        seq_len,
        vocab,
        4,
        generator=torch.Generator().manual_seed(0),
        temperature_base=0.0,
        temperature_range=0.0,
        on_step=lambda step, before, after: seen.append(after.clone()),
    )
    first = seen[0] != vocab  # fixed after step 0: cos(pi/8)*8 = 7.39 -> 7 masked, 1 fixed
    assert (first.sum(1) == 1).all()
    assert not first[:, ~confident].any(), (
        "a flat (unconfident) position was fixed before a peaked one"
    )
    assert (seen[0][first] == 3).all()


def test_bad_logits_shape_is_reported():
    with pytest.raises(ValueError, match="logits_fn returned shape"):
        iterative_decode(lambda tokens, step: torch.zeros(2, 3, 5), 2, 4, 5, 2)
