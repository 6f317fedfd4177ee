"""Sampling randomness (elt.core.rng): the token draw follows the given distribution, never picks a
zero-probability token, and per-sample streams make a sample independent of its batch."""

import torch

from elt.core import rng


def test_multinomial_matches_distribution_and_skips_zero_probability():
    probs = (
        torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0]).expand(4, 50_000, 5) * 7.0
    )  # unnormalised on purpose
    draws = rng.multinomial(probs, torch.Generator().manual_seed(0))
    assert draws.shape == (4, 50_000)
    freq = torch.bincount(draws.reshape(-1), minlength=5).double() / draws.numel()
    assert freq[1] == 0 and freq[4] == 0
    # 200k draws: the standard error of a frequency is below 0.0011, so 0.005 is > 4.5 sigma
    assert torch.allclose(
        freq, torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.double), atol=0.005
    )


def test_multinomial_one_hot_rows_are_exact():
    probs = torch.nn.functional.one_hot(torch.tensor([[3, 0, 7], [9, 9, 1]]), 10).float()
    assert torch.equal(
        rng.multinomial(probs, torch.Generator().manual_seed(1)),
        torch.tensor([[3, 0, 7], [9, 9, 1]]),
    )


def test_multinomial_per_sample_streams_are_batch_independent():
    probs = torch.softmax(torch.randn(3, 6, 11, generator=torch.Generator().manual_seed(2)), -1)
    together = rng.multinomial(probs, rng.make_streams(None, [5, 6, 7], 3, torch.device("cpu")))
    alone = rng.multinomial(probs[1:2], rng.make_streams(None, [6], 1, torch.device("cpu")))
    assert torch.equal(together[1:2], alone)
    same_seed = rng.multinomial(probs, rng.make_streams(None, [5, 6, 7], 3, torch.device("cpu")))
    assert torch.equal(together, same_seed)
