"""The adaptive exit's per-loop bookkeeping (elt.core.adaptive): what depends only on the set of
active samples is computed once per set, each prediction is summarised once, and loops before
``min_loops − 1`` are not read out, without changing the decision (the demo samples are pinned by
test_anytime / test_demo_hashes)."""

import pytest
import torch

from elt.config import load_config
from elt.core.adaptive import run_adaptive
from elt.core.looped import LoopedTransformer
from elt.core.schedule import AdaptiveExit
from elt.diffusion.model import x0_from
from elt.diffusion.process import DiffusionProcess
from elt.registry import build_generator

TINY = [
    "paradigm=diffusion",
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "data.num_classes=4",
    "data.image_size=8",
    "diffusion.patch_size=2",
    "train.precision=fp32",
]


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_x0_from_coefficients_is_to_x0_eps(prediction):
    process = DiffusionProcess(prediction=prediction)
    g = torch.Generator().manual_seed(0)
    out, z, t = (
        torch.randn(3, 1, 4, 4, generator=g),
        torch.randn(3, 1, 4, 4, generator=g),
        torch.rand(3, generator=g),
    )
    expected = process.to_x0_eps(out, z, t)[0]
    assert torch.equal(x0_from(prediction, out, z, *process._coefficients(t, z)), expected)


def test_readout_starts_at_the_loop_before_min_loops():
    torch.manual_seed(0)
    backbone = LoopedTransformer(16, 1, 6, 2).eval()
    h = torch.randn(2, 4, 16)
    read_at = []

    def readout(state, cond, active):
        read_at.append(len(read_at))
        return state.mean(-1)

    def change(previous, new, active):
        return (new - previous).abs().amax(1)

    with torch.no_grad():
        out, used = run_adaptive(backbone, h, None, 1, readout, change, AdaptiveExit(0.0, 4, 6))
        fixed = backbone(h, loops=6).final.mean(-1)
    assert len(read_at) == 4  # loops 3 (the first compared), 4, 5 and 6: not loops 1 and 2
    assert torch.equal(out, fixed) and (used == 6).all()


def test_diffusion_exit_converts_each_prediction_once_and_coefficients_once_per_active_set(
    monkeypatch,
):
    torch.manual_seed(0)
    generator = build_generator(load_config(None, TINY)).eval()
    with torch.no_grad():
        for index, (_, p) in enumerate(generator.named_parameters()):
            if p.abs().sum() == 0:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(index))
    z, t, labels = torch.randn(1, 1, 8, 8), torch.full((1,), 0.5), torch.tensor([1])
    with torch.no_grad():
        fixed = generator.guided(z, t, labels, 5, 2.0)
    calls = {"coefficients": 0, "ada": 0}
    original = DiffusionProcess._coefficients

    def counted(self, t, like):
        calls["coefficients"] += 1
        return original(self, t, like)

    monkeypatch.setattr(DiffusionProcess, "_coefficients", counted)
    ada = generator.final.ada
    ada.register_forward_hook(lambda *a: calls.__setitem__("ada", calls["ada"] + 1))
    with (
        torch.no_grad()
    ):  # batch 1, never exits before the last loop: one active set for all 5 loops
        out, used = generator.adaptive(z, t, labels, AdaptiveExit(0.0, 2, 5), guidance=2.0)
    assert (used == 5).all() and torch.equal(out, fixed)
    assert (
        calls["coefficients"] == 1
    )  # was 2 per compared loop (previous and new prediction converted again)
    assert calls["ada"] == 1  # the final layer's modulation: was once per loop
