"""Video FSQ tokenizer: round-trip shapes, exact indices ↔ codes, encode/decode consistency, FLOP
count, save/load, the config/CLI path and a few training steps that must lower the reconstruction
error."""

import math

import pytest
import torch
from torch import nn

from elt.config import load_config
from elt.tokenizers.fsq import (
    TokenizerMismatchError,
    count_gflops,
    is_saved,
    load_tokenizer,
    save_tokenizer,
)
from elt.tokenizers.video_fsq import VideoFSQTokenizer


def small(**kwargs):
    args = {
        "frames": 8,
        "image_size": 32,
        "levels": (8, 5, 5, 5),
        "downsample": 8,
        "temporal_downsample": 4,
        "channels": 32,
    }
    return VideoFSQTokenizer(**{**args, **kwargs})


def test_round_trip_shapes_and_consistency():
    torch.manual_seed(0)
    tok = small().eval()
    videos = torch.rand(3, 1, 8, 32, 32) * 2 - 1
    indices = tok.encode(videos)
    assert tok.token_grid == (2, 4, 4) and tok.codebook_size == 1000 and tok.kind == "fsq3d"
    assert indices.shape == (3, 2, 4, 4) and indices.dtype == torch.long
    assert indices.min() >= 0 and indices.max() < 1000
    decoded = tok.decode(indices)
    assert decoded.shape == (3, 1, 8, 32, 32) and decoded.min() >= -1 and decoded.max() <= 1
    # decode(encode(x)) is the straight-through training path, clamped
    assert torch.allclose(decoded, tok.reconstruct(videos).clamp(-1, 1), atol=1e-5)
    # the default geometry of the contract: 16×64×64 → 4×8×8
    assert VideoFSQTokenizer(channels=16).token_grid == (4, 8, 8)
    rgb = small(image_channels=3, temporal_downsample=2, downsample=4)
    assert rgb.encode(torch.zeros(2, 3, 8, 32, 32)).shape == (2, 4, 8, 8)
    assert rgb.decode(torch.zeros(2, 4, 8, 8, dtype=torch.long)).shape == (2, 3, 8, 32, 32)


def test_indices_and_codes_are_exact_inverses_on_3d_grids():
    tok = small()
    indices = torch.randint(0, 1000, (4, 2, 4, 4))
    codes = tok.quantizer.indices_to_codes(indices)
    assert codes.shape == (4, 4, 2, 4, 4)
    assert torch.equal(tok.quantizer.codes_to_indices(codes), indices)
    # quantised latents of a 3D grid survive codes → indices → codes bit for bit
    quantised = tok.quantizer.quantize(torch.randn(2, 4, 2, 4, 4) * 3)
    assert torch.equal(
        tok.quantizer.indices_to_codes(tok.quantizer.codes_to_indices(quantised)), quantised
    )
    # and decode(indices) is the decoder applied to exactly those codes
    tok.eval()
    with torch.no_grad():
        assert torch.equal(tok.decode(indices), tok.decoder(codes).clamp(-1, 1))


def test_bad_inputs_are_one_line_errors():
    tok = small()
    with pytest.raises(ValueError, match="expects videos"):
        tok.encode(torch.zeros(1, 1, 4, 32, 32))
    with pytest.raises(ValueError, match="expects videos"):
        tok.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="decodes token grids"):
        tok.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="power of two"):
        small(temporal_downsample=3)
    with pytest.raises(ValueError, match="may not exceed"):
        small(downsample=2, temporal_downsample=4)
    with pytest.raises(ValueError, match="frames=6"):
        small(frames=6)
    with pytest.raises(ValueError, match="image_size=36"):
        small(image_size=36)


def test_decode_gflops_counts_3d_and_transposed_convolutions():
    conv = nn.Conv3d(4, 8, (3, 3, 3), padding=1)
    assert count_gflops(conv, torch.zeros(2, 4, 2, 4, 4)) == pytest.approx(
        2 * 8 * 2 * 4 * 4 * 4 * 27 / 1e9
    )
    up = nn.ConvTranspose3d(8, 4, (2, 2, 2), stride=2)
    assert count_gflops(up, torch.zeros(1, 8, 2, 4, 4)) == pytest.approx(
        2 * 8 * 2 * 4 * 4 * 4 * 8 / 1e9
    )
    tok = small()
    expected = 0
    x = torch.zeros(1, 4, *tok.token_grid)
    for layer in tok.decoder.net:  # an independent count: walk the decoder by hand
        if isinstance(layer, nn.Conv3d):
            out = layer(x)
            expected += 2 * out.numel() * layer.in_channels * math.prod(layer.kernel_size)
        elif isinstance(layer, nn.ConvTranspose3d):
            out = layer(x)
            expected += 2 * x.numel() * layer.out_channels * math.prod(layer.kernel_size)
        else:
            out = layer(x)
            if hasattr(layer, "spatial"):
                c = layer.spatial.in_channels
                expected += 2 * x[0, 0].numel() * c * c * (9 + 3)
        x = out
    assert tok.decode_gflops() == pytest.approx(expected / 1e9)
    assert tok.decode_gflops() > 0


def test_save_load_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    tok = small()
    save_tokenizer(tok, tmp_path, {"metrics": {"psnr": 2.0}})
    assert is_saved(tmp_path)
    other = small()
    meta = load_tokenizer(other, tmp_path)
    assert meta["metrics"]["psnr"] == 2.0 and meta["architecture"]["temporal_downsample"] == 4
    videos = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    assert torch.equal(tok.encode(videos), other.encode(videos))
    with pytest.raises(TokenizerMismatchError, match="frames"):
        load_tokenizer(small(frames=16), tmp_path)
    with pytest.raises(TokenizerMismatchError, match="temporal_downsample"):
        load_tokenizer(small(temporal_downsample=2), tmp_path)


TINY = [
    "data.name=moving_fmnist",
    "data.frames=8",
    "data.image_size=32",
    "data.sprite_size=20",
    "data.limit=64",
    "tokenizer.kind=fsq3d",
    "tokenizer.downsample=8",
    "tokenizer.temporal_downsample=4",
    "tokenizer.channels=32",
    "tokenizer.batch_size=8",
    "tokenizer.lr=0.003",
    "tokenizer.warmup_steps=5",
    "tokenizer.eval_items=16",
    "train.threads=1",
]


def test_build_from_config_and_a_few_steps_lower_the_error(tmp_path):
    from elt.tokenizers.factory import build_tokenizer
    from elt.tokenizers.train import eval_split, evaluate_reconstruction, train_tokenizer

    cfg = load_config(None, [*TINY, "tokenizer.steps=40"])
    tok = build_tokenizer(cfg)
    assert isinstance(tok, VideoFSQTokenizer) and tok.token_grid == (2, 4, 4)
    torch.manual_seed(0)
    untrained = evaluate_reconstruction(build_tokenizer(cfg), eval_split(cfg)[0])
    meta = train_tokenizer(cfg, tmp_path / "tok", progress=False)
    metrics = meta["metrics"]
    assert metrics["split"] == "test" and metrics["items"] == 16
    assert metrics["mse"] < 0.5 * untrained["mse"]
    assert meta["architecture"]["kind"] == "fsq3d" and meta["data"]["frames"] == 8
    assert (tmp_path / "tok" / "reconstructions.png").is_file()
    reloaded = build_tokenizer(cfg)
    load_tokenizer(reloaded, tmp_path / "tok")
    again = evaluate_reconstruction(reloaded, eval_split(cfg)[0])
    assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-4)
    # PSNR is over every frame: the same number a direct computation gives
    clips = torch.stack([eval_split(cfg)[0][i][0] for i in range(16)])
    direct = ((reloaded.decode(reloaded.encode(clips)) - clips) / 2).pow(2).mean()
    assert again["mse"] == pytest.approx(float(direct), rel=1e-4)


def test_cli_trains_fsq3d(tmp_path, capsys):
    from elt.cli import main

    args = [
        "tokenizer",
        "train",
        "fmnist_masked",
        *TINY,
        "tokenizer.steps=2",
        "--out",
        str(tmp_path / "t"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "PSNR" in capsys.readouterr().out and is_saved(tmp_path / "t")
    assert (
        main(
            [
                "tokenizer",
                "train",
                "fmnist_masked",
                "data.name=moving_fmnist",
                "data.frames=8",
                "tokenizer.kind=fsq3d",
                "tokenizer.temporal_downsample=3",
            ]
        )
        == 2
    )
