"""``elt bench peers``: the peers compute the same function as elt (weights copied; the checks would
catch a wrong copy), and the benchmark runs at smoke sizes and writes its table's JSON."""

import json

import pytest
import torch

from elt.bench import peers
from elt.cli import main

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def diffusion_pair():
    generator = peers.build_elt_diffusion(
        peers.load_peer_config("fmnist_diffusion", peers.SMOKE_OVERRIDES), torch.device("cpu")
    )
    return generator, peers.dit_from_elt(generator)


@pytest.fixture(scope="module")
def masked_pair():
    generator = peers.build_elt_masked(
        peers.load_peer_config("fmnist_masked", peers.SMOKE_OVERRIDES), torch.device("cpu")
    )
    return generator, peers.TorchMaskGIT(generator)


def test_diffusers_dit_with_copied_weights_computes_elts_function(diffusion_pair):
    generator, dit = diffusion_pair
    assert (
        len(dit.transformer_blocks) == generator.backbone.unique_layers * generator.backbone.loops
    )
    z, t, labels = peers.diffusion_inputs(generator, 3, seed=4)
    with torch.no_grad():
        ours = generator(z, t, labels)[0]
        theirs = peers.dit_output(dit, z, t, labels)
    assert ours.std() > 0.05  # not the all-zero output of an adaLN-Zero model at initialisation
    assert (ours - theirs).abs().max() < 1e-5
    assert peers.dit_difference(generator, dit) < 1e-5
    # the check is not blind: DiT's own timestep frequencies (shift 1) or one block's weights off
    # break it
    broken = peers.dit_from_elt(generator)
    broken.transformer_blocks[0].norm1.emb.time_proj.downscale_freq_shift = 1
    assert peers.dit_difference(generator, broken) > 1e-3
    broken = peers.dit_from_elt(generator)
    with torch.no_grad():
        broken.transformer_blocks[-1].attn1.to_v.weight.mul_(1.1)
    assert peers.dit_difference(generator, broken) > 1e-3


def test_diffusers_dit_training_gradients_match(diffusion_pair):
    """One training step's loss and the gradient of a shared block (summed over its copies in DiT)
    agree."""
    import copy

    generator, dit = diffusion_pair
    g, d = copy.deepcopy(generator).train(), copy.deepcopy(dit).train()
    z, t, labels = peers.diffusion_inputs(g, 4, seed=5)
    loss_g = (g(z, t, labels)[0] ** 2).mean()
    loss_d = (peers.dit_output(d, z, t, labels) ** 2).mean()
    assert abs(loss_g.item() - loss_d.item()) < 1e-5 * max(1.0, abs(loss_g.item()))
    loss_g.backward()
    loss_d.backward()
    n = g.backbone.unique_layers
    copies = sum(
        d.transformer_blocks[i].ff.net[2].weight.grad
        for i in range(0, len(d.transformer_blocks), n)
    )
    assert torch.allclose(g.backbone.blocks[0].mlp.fc2.weight.grad, copies, atol=1e-5, rtol=1e-4)


def test_torch_transformer_encoder_with_copied_weights_computes_elts_logits(masked_pair):
    generator, peer = masked_pair
    tokens, labels = peers.masked_inputs(generator, 3, seed=6)
    with torch.no_grad():
        ours, theirs = generator.logits(tokens, labels), peer(tokens, labels)
    assert ours.std() > 0.05
    assert (ours - theirs).abs().max() < 1e-5
    broken = peers.TorchMaskGIT(generator)
    with torch.no_grad():  # layers in the wrong order: loop i must use block i mod N
        layers = broken.encoder.layers
        layers[0], layers[1] = layers[1], layers[0]
    assert peers.encoder_difference(generator, broken) > 1e-3


def test_bench_peers_smoke_writes_json(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "peers",
                "--smoke",
                "--modes",
                "eager",
                "--precisions",
                "fp32",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "peer/elt" in capsys.readouterr().out
    result = json.loads((tmp_path / "peers.json").read_text())
    assert result["command"].startswith(
        "elt bench peers --peer-configs fmnist_diffusion,fmnist_masked"
    )
    assert all(m["max_abs_difference_fp32"] < 1e-5 for m in result["models"])
    assert [c["ok"] for c in result["checks"]] == [
        True
    ]  # same logits, decoder and seed: the same tokens
    rows = result["rows"]
    assert {(r["config"], r["workload"].split()[0], r["batch"]) for r in rows} == {
        (c, w, b)
        for c, ws in (
            ("fmnist_diffusion", ("forward", "ddim", "train")),
            ("fmnist_masked", ("forward", "maskgit")),
        )
        for w in ws
        for b in (1, 4)
    }
    for r in rows:
        assert r["elt_ms"] > 0 and r["peer_over_elt"] == pytest.approx(r["peer_ms"] / r["elt_ms"])
        assert 0 < r["elt_roofline_share"] and 0 < r["peer_roofline_share"]
        # same architecture, same FLOPs (DiT re-embeds time and class in every block: a little more)
        assert r["elt_gflop"] <= r["peer_gflop"] <= 1.3 * r["elt_gflop"]


def test_bad_peer_options_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "peers", "--precisions", "fp16", "--out", str(tmp_path)]) == 2
    assert "--precisions: 'fp16' is not one of fp32, bf16" in capsys.readouterr().err


def test_compiled_rows_report_the_roofline_of_their_eager_gemms(tmp_path, monkeypatch):
    """A compiled row's GEMMs cannot be recorded from generated code, so they come from the eager
    workload of the same shape: compiled rows have a roofline share even when no eager row ran
    (torch.compile replaced by the identity here: the bookkeeping is under test, not inductor)."""
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: fn)
    args = ["bench", "peers", "--smoke", "--precisions", "fp32", "--batches", "1"]
    assert main([*args, "--modes", "compiled", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "peers.json").read_text())["rows"]
    assert rows and {r["mode"] for r in rows} == {"compiled"}
    for r in rows:
        assert 0 < r["elt_roofline_share"] and 0 < r["peer_roofline_share"]
        assert r["elt_gflop"] <= r["peer_gflop"] <= 1.3 * r["elt_gflop"]
