"""The masked ELT generator over t×h×w token grids (video): 3D positions, generation shape, the
token cache of C×T×H×W clips, video grids (PNG still, GIF, MP4), and a tiny train → sample run on
CPU.

A stand-in 3D tokenizer (tests/video_stub.py) keeps these tests independent of the trained video
tokenizer."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import elt
from elt.cli import main
from elt.config import load_config
from elt.core.blocks import sincos_embedding
from elt.masked import task
from elt.masked.model import MaskedGenerator
from video_stub import SquaresDataset, StubVideoTokenizer

TINY = [
    "model.width=48",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "sampling.steps=6",
    "train.threads=1",
    "train.precision=fp32",
    "data.num_classes=2",
    "data.image_size=16",
    "model.class_dropout=0.0",
]


def video_cfg(*extra):
    """A masked config with video shapes (the stub tokenizer stands in for the fsq3d one)."""
    return load_config(
        "fmnist_masked",
        [
            *TINY,
            "data.name=moving_fmnist",
            "data.frames=4",
            "data.sprite_size=8",
            "tokenizer.kind=fsq3d",
            *extra,
        ],
    )


@pytest.fixture
def stubbed(monkeypatch):
    """Route the masked task's tokenizer and data to the stand-ins."""
    monkeypatch.setattr(
        task, "build_tokenizer", lambda cfg: StubVideoTokenizer(image_size=cfg.data.image_size)
    )
    monkeypatch.setattr(task, "load_trained_tokenizer", lambda *a, **k: {})
    monkeypatch.setattr(
        task, "build_dataset", lambda data_cfg, split: SquaresDataset(n=96, size=16)
    )


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return MaskedGenerator(video_cfg(), StubVideoTokenizer()).eval()


def test_stub_tokenizer_round_trips_block_constant_videos():
    tok = StubVideoTokenizer()
    tokens = torch.randint(0, tok.codebook_size, (3, *tok.token_grid))
    videos = tok.decode(tokens)
    assert videos.shape == (3, 1, 4, 16, 16)
    assert torch.equal(tok.encode(videos), tokens)


def test_positions_are_3d_and_separate_time_from_space(generator):
    t, h, w = generator.grid
    assert generator.is_video and generator.seq_len == t * h * w == 32
    pos = generator.pos_embed[0].detach().view(t, h, w, -1)
    assert torch.equal(generator.pos_embed[0].detach(), sincos_embedding((t, h, w), 48))
    # every position has its own code
    assert len(torch.unique(pos.reshape(t * h * w, -1), dim=0)) == t * h * w
    # moving in time changes only the time channels; moving in space never touches them
    d_time = (pos[1] - pos[0]).abs().amax(dim=(0, 1)) > 0
    d_row = (pos[:, 1] - pos[:, 0]).abs().amax(dim=(0, 1)) > 0
    d_col = (pos[:, :, 1] - pos[:, :, 0]).abs().amax(dim=(0, 1)) > 0
    assert d_time.any() and d_row.any() and d_col.any()
    assert not (d_time & d_row).any() and not (d_time & d_col).any() and not (d_row & d_col).any()
    # a flattened 2D code over (t·h)×w could not tell "next frame" from "next row" by channels
    flat = sincos_embedding((t * h, w), 48).view(t, h, w, -1)
    flat_time = (flat[1] - flat[0]).abs().amax(dim=(0, 1)) > 0
    flat_row = (flat[:, 1] - flat[:, 0]).abs().amax(dim=(0, 1)) > 0
    assert (flat_time & flat_row).any()


def test_model_output_depends_on_frame_order(generator):
    """Swapping the two token frames must change the logits beyond the swap: positions carry
    time."""
    tokens = torch.randint(0, generator.codebook_size, (2, *generator.grid))
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        a = generator.logits(tokens.flatten(1), labels).view(2, *generator.grid, -1)
        b = generator.logits(tokens.flip(1).flatten(1), labels).view(2, *generator.grid, -1)
    assert not torch.allclose(a.flip(1), b, atol=1e-4)


def test_generate_returns_uint8_videos(generator):
    videos = generator.generate([0, 1, 1], seed=3)
    assert videos.shape == (3, 4, 16, 16, 1) and videos.dtype == np.uint8
    assert np.array_equal(videos, generator.generate([0, 1, 1], seed=3))
    assert generator.generate([], seed=0).shape == (0, 4, 16, 16, 1)
    steps = generator.config.sampling.steps
    assert generator.generate([0], loops=[1, 1, 2, 2, 3, 3], seed=1).shape == (1, 4, 16, 16, 1)
    with pytest.raises(ValueError, match=f"{steps} steps"):
        generator.generate([0], loops=[1, 2], seed=0)


def test_training_loss_on_video_tokens(generator):
    tokens = torch.randint(0, generator.codebook_size, (4, *generator.grid))
    terms = generator.training_loss((tokens, torch.tensor([0, 1, 0, 1])), student_loops=1, lam=0.5)
    assert terms.student_gt is not None and torch.isfinite(terms.total)
    with pytest.raises(ValueError, match="32 tokens"):
        generator.training_loss(
            (tokens[:, :1], torch.tensor([0, 1, 0, 1])), student_loops=1, lam=0.5
        )


def test_bad_token_grid_is_rejected():
    class Flat(StubVideoTokenizer):
        token_grid = (32,)

    with pytest.raises(ValueError, match="2 .* or 3"):
        MaskedGenerator(video_cfg(), Flat())


def test_fsq3d_dispatch_and_image_guard(monkeypatch):
    """kind=fsq3d builds elt.tokenizers.video_fsq.VideoFSQTokenizer with the contract's
    arguments."""
    import elt.tokenizers.video_fsq as video_fsq

    seen = {}

    class Fake(StubVideoTokenizer):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(frames=kwargs["frames"], image_size=kwargs["image_size"])

    monkeypatch.setattr(video_fsq, "VideoFSQTokenizer", Fake)  # what the tokenizer factory builds
    cfg = OmegaConf.create(
        OmegaConf.to_container(video_cfg())
    )  # plain: the keys exist before the merge too
    cfg.data.frames = 4
    cfg.tokenizer.kind = "fsq3d"
    cfg.tokenizer.temporal_downsample = 2
    tokenizer = task.build_tokenizer(cfg)
    assert isinstance(tokenizer, Fake)
    assert seen == {
        "frames": 4,
        "image_size": 16,
        "image_channels": 1,
        "levels": list(cfg.tokenizer.levels),
        "downsample": cfg.tokenizer.downsample,
        "temporal_downsample": 2,
        "channels": cfg.tokenizer.channels,
    }
    cfg.tokenizer.kind = "fsq"
    with pytest.raises(ValueError, match="needs tokenizer.kind=fsq3d"):
        task.build_tokenizer(cfg)
    cfg.data.frames = 0
    cfg.tokenizer.kind = "fsq3d"
    with pytest.raises(ValueError, match=r"data.frames >= 2"):
        task.build_tokenizer(cfg)


def test_encode_dataset_caches_video_tokens(stubbed, tmp_path):
    cfg = video_cfg()
    tokenizer = StubVideoTokenizer()
    cache = np.asarray(task.encode_dataset(cfg, tokenizer, tmp_path, progress=False))
    data = SquaresDataset(n=96, size=16)
    assert cache.shape == (96, 1, 33)
    for i in (0, 5, 95):
        video, label = data[i]
        assert np.array_equal(cache[i, 0, :32], tokenizer.encode(video[None]).flatten().numpy())
        assert cache[i, 0, 32] == label
    tokens, label = task.TokenDataset(cache)[5]
    assert tokens.shape == (32,) and label == data[5][1]


def gif_seconds(path) -> float:
    """Play time of a GIF (Pillow merges identical consecutive frames, adding up their
    durations)."""
    with Image.open(path) as gif:
        total = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total += gif.info["duration"]
    return total / 1000


def test_video_grid_files(tmp_path):
    from elt.visual import is_video_rows, key_frames, save_grid

    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, (3, 5, 8, 8, 1), dtype=np.uint8) for _ in range(2)]
    assert is_video_rows(rows) and key_frames(5) == [0, 2, 4] and key_frames(2) == [0, 1]
    path = save_grid(tmp_path / "g.png", rows, ["L=1", "L=2"], title="t")
    assert Image.open(tmp_path / "g.gif").n_frames == 5
    assert gif_seconds(tmp_path / "g.gif") == pytest.approx(5 / 8, abs=0.05)
    still = Image.open(path)
    assert still.height > 3 * 2 * 8 * 8  # six sub-rows (2 rows × first/middle/last) at scale 8
    with pytest.raises(ValueError, match="must all be n×H×W×C"):
        save_grid(tmp_path / "bad.png", [rows[0], rows[0][:, 0]])
    av = pytest.importorskip("av")
    with av.open(str(tmp_path / "g.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


@pytest.mark.slow
def test_tiny_video_train_then_sample(stubbed, tmp_path):
    """ILSD training on moving squares: both losses fall; `elt sample` writes N×T×H×W×C npz, PNG,
    GIF."""
    run = tmp_path / "run"
    cfg = video_cfg(
        f"train.out_dir={run}",
        "train.steps=150",
        "train.batch_size=16",
        "logging.every=1",
        "lr_schedule.warmup_steps=10",
        "optimizer.lr=0.003",
        "logging.sample_every=75",
        "checkpoint.every=0",
        "logging.sample_loops=[1,3]",
        "logging.samples_per_class=2",
    )
    from elt.train.trainer import train

    train(cfg, progress=False)
    log = [
        json.loads(line)
        for line in (run / "log.jsonl").read_text().splitlines()
        if '"teacher_gt"' in line
    ]
    for term in (
        "teacher_gt",
        "student_gt",
    ):  # single batches are noisy: first 3 steps vs the last 30
        first, last = np.mean([r[term] for r in log[:3]]), np.mean([r[term] for r in log[-30:]])
        assert last < 0.75 * first, (term, first, last)
    assert list((run / "samples").glob("step_*.gif")) and list((run / "samples").glob("step_*.png"))
    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--loops",
                "1,3",
                "--num",
                "6",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with np.load(out / "samples_L3.npz") as data:
        videos, labels = data["arr_0"], data["arr_1"]
    assert videos.shape == (6, 4, 16, 16, 1) and videos.dtype == np.uint8
    assert np.array_equal(labels, np.arange(6) % 2)
    assert videos.std() > 0
    assert gif_seconds(out / "grid.gif") == pytest.approx(
        4 / 8, abs=0.05
    )  # 4 frames, 8 fps (GIF: centiseconds)
    assert (out / "grid.png").is_file()
    record = json.loads((out / "samples.json").read_text())
    assert record["sample_shape"] == [4, 16, 16, 1] and "grid.gif" in record["animations"]
    assert record["data"] == {
        "name": "moving_fmnist",
        "frames": 4,
        "image_size": 16,
        "sprite_size": 8,
        "motion": "bounce",
    }  # what `elt eval video --real-data` rebuilds
    assert elt.load(run).generate([1], loops=2, seed=0).shape == (1, 4, 16, 16, 1)


def test_shipped_video_config_builds_a_256_token_model():
    from elt.registry import build_generator

    generator = build_generator(load_config("fmnist_video_masked"))
    assert (
        generator.grid == (4, 8, 8) and generator.seq_len == 256 and generator.codebook_size == 1000
    )
    assert generator.trained_loops == 4 and generator.backbone.unique_layers == 2
    assert generator.generate([3], loops=1, steps=2, seed=0).shape == (1, 16, 32, 32, 1)
