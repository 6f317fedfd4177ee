"""FSQ tokenizer (quantiser, round trip, training, save/load) and the pretrained-VQ adapter (random
weights)."""

import json

import pytest
import torch

from elt.config import load_config
from elt.tokenizers.fsq import (
    FSQ,
    FSQTokenizer,
    TokenizerMismatchError,
    is_saved,
    load_tokenizer,
    save_tokenizer,
)


def test_fsq_indices_and_codes_are_a_bijection():
    q = FSQ([8, 5, 5, 5])
    assert q.codebook_size == 1000
    indices = torch.arange(1000).view(1, 10, 100)
    codes = q.indices_to_codes(indices)
    assert codes.shape == (1, 4, 10, 100) and codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(q.codes_to_indices(codes), indices)
    assert len({tuple(c) for c in codes.permute(0, 2, 3, 1).reshape(-1, 4).tolist()}) == 1000


def test_fsq_quantize_hits_exactly_the_grid_and_passes_gradients():
    q = FSQ([8, 5, 3])
    z = (torch.randn(64, 3, 8, 8) * 4).requires_grad_()
    codes = q.quantize(z)
    for channel, levels in enumerate([8, 5, 3]):
        assert codes[:, channel].unique().numel() == levels  # large z reaches every level
    assert torch.equal(q.indices_to_codes(q.codes_to_indices(codes)), codes.detach())
    codes.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through
    with pytest.raises(ValueError, match="token indices"):
        q.indices_to_codes(torch.tensor([[[1000]]]))


def test_tokenizer_round_trip_shapes_and_consistency():
    torch.manual_seed(0)
    tok = FSQTokenizer(
        image_size=32, image_channels=1, levels=[8, 5, 5, 5], downsample=4, channels=32
    ).eval()
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    indices = tok.encode(images)
    assert indices.shape == (3, 8, 8) and indices.dtype == torch.long
    assert indices.min() >= 0 and indices.max() < 1000
    decoded = tok.decode(indices)
    assert decoded.shape == (3, 1, 32, 32) and decoded.min() >= -1 and decoded.max() <= 1
    # decode(indices) is the same function as the straight-through training path
    assert torch.allclose(decoded, tok.reconstruct(images).clamp(-1, 1), atol=1e-5)
    assert tok.token_grid == (8, 8) and tok.codebook_size == 1000
    assert tok.decode_gflops() > 0
    with pytest.raises(ValueError, match="expects images"):
        tok.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        FSQTokenizer(downsample=3)


def test_save_load_round_trip_and_mismatch(tmp_path):
    tok = FSQTokenizer(channels=16, levels=[4, 4])
    save_tokenizer(tok, tmp_path, {"metrics": {"psnr": 1.0}})
    assert is_saved(tmp_path)
    other = FSQTokenizer(channels=16, levels=[4, 4])
    meta = load_tokenizer(other, tmp_path)
    assert meta["metrics"]["psnr"] == 1.0
    for (name, a), (_, b) in zip(tok.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(TokenizerMismatchError, match="levels"):
        load_tokenizer(FSQTokenizer(channels=16, levels=[8, 5, 5, 5]), tmp_path)


TINY = [
    "data.limit=256",
    "tokenizer.channels=16",
    "tokenizer.levels=[5,5,5]",
    "tokenizer.batch_size=32",
    "tokenizer.lr=0.003",
    "tokenizer.warmup_steps=5",
    "tokenizer.eval_items=128",
    "train.threads=1",
]


def test_training_improves_reconstruction_and_reports_psnr(tmp_path):
    from elt.tokenizers.factory import build_tokenizer
    from elt.tokenizers.train import eval_split, evaluate_reconstruction, train_tokenizer

    cfg = load_config("fmnist_masked", [*TINY, "tokenizer.steps=60"])
    torch.manual_seed(0)
    untrained = evaluate_reconstruction(build_tokenizer(cfg), eval_split(cfg)[0])
    meta = train_tokenizer(cfg, tmp_path / "tok", progress=False)
    metrics = meta["metrics"]
    assert metrics["split"] == "test" and metrics["items"] == 128
    assert metrics["mse"] < 0.5 * untrained["mse"]
    assert metrics["psnr"] == pytest.approx(
        10 * torch.log10(torch.tensor(1 / metrics["mse"])).item(), rel=1e-5
    )
    assert json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["hash"] == meta["hash"]
    assert (tmp_path / "tok" / "reconstructions.png").is_file()
    # the saved weights reproduce the reported figure
    reloaded = build_tokenizer(cfg)
    load_tokenizer(reloaded, tmp_path / "tok")
    again = evaluate_reconstruction(reloaded, eval_split(cfg)[0])
    assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-4)


def test_tokenizer_cli(tmp_path, capsys):
    from elt.cli import main

    args = [
        "tokenizer",
        "train",
        "fmnist_masked",
        *TINY,
        "tokenizer.steps=3",
        "--out",
        str(tmp_path / "t"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "PSNR" in capsys.readouterr().out and is_saved(tmp_path / "t")
    assert main(args) == 2  # refuses to overwrite without --force
    assert "--force" in capsys.readouterr().err
    assert (
        main(
            [
                "tokenizer",
                "train",
                "fmnist_masked",
                "tokenizer.kind=pretrained_vq",
                "--out",
                str(tmp_path / "u"),
            ]
        )
        == 2
    )


def tiny_vq_folder(tmp_path, in_channels=3):
    from diffusers import VQModel

    torch.manual_seed(0)
    model = VQModel(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=8,
        num_vq_embeddings=64,
        norm_num_groups=8,
        sample_size=32,
    )
    model.save_pretrained(tmp_path / "vq")
    return model.eval(), tmp_path / "vq"


def test_pretrained_vq_adapter_matches_diffusers(tmp_path):
    pytest.importorskip("diffusers")
    from elt.tokenizers.pretrained_vq import PretrainedVQTokenizer

    model, folder = tiny_vq_folder(tmp_path)
    tok = PretrainedVQTokenizer.from_folder(folder, image_size=32)
    assert tok.codebook_size == 64 and tok.token_grid == (8, 8) and tok.downsample == 4
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    indices = tok.encode(images)
    assert indices.shape == (2, 8, 8)
    with torch.no_grad():
        latents = model.encode(images).latents
        _, _, (_, _, reference_indices) = model.quantize(latents)
        reference_images = model.decode(latents).sample.clamp(-1, 1)
    assert torch.equal(indices.flatten(), reference_indices.flatten())
    assert torch.allclose(tok.decode(indices), reference_images, atol=1e-4)
    # the architecture alone (random weights of the same layout) loads the saved state exactly
    empty = PretrainedVQTokenizer.from_folder(folder, image_size=32, weights=False)
    empty.load_state_dict(tok.state_dict())
    assert torch.equal(empty.encode(images), indices)
    assert tok.decode_gflops() > 0
    with pytest.raises(FileNotFoundError, match="no diffusers VQModel"):
        PretrainedVQTokenizer.from_folder(tmp_path / "missing", image_size=32)
