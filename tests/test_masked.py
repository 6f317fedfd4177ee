"""The masked ELT generator: its loss, ILSD terms, sampler wiring, CFG, loop schedules, data
preparation, and a tiny end-to-end train → sample run on Fashion-MNIST."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import elt
from elt.cli import main
from elt.config import load_config
from elt.errors import ConfigError
from elt.masked.masking import sample_training_mask
from elt.masked.model import soft_cross_entropy
from elt.masked.sampler import iterative_decode
from elt.registry import build_generator
from elt.runtime import autocast_context

TINY_TOKENIZER = [
    "tokenizer.channels=16",
    "tokenizer.levels=[5,5,5]",
    "tokenizer.steps=20",
    "tokenizer.batch_size=32",
    "tokenizer.lr=0.003",
    "tokenizer.warmup_steps=2",
    "tokenizer.eval_items=64",
]
TINY_MODEL = [
    "model.width=64",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=3",
    "sampling.steps=6",
    "train.threads=1",
    "train.precision=fp32",
]


def tiny_cfg(*extra):
    return load_config("fmnist_masked", [*TINY_TOKENIZER, *TINY_MODEL, *extra])


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return build_generator(tiny_cfg("model.class_dropout=0.0")).eval()


def batch_of(generator, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, generator.codebook_size, (n, generator.seq_len), generator=g),
        torch.arange(n) % generator.num_classes,
    )


def test_loss_is_cross_entropy_on_masked_positions_and_soft_distillation(generator):
    tokens, labels = batch_of(generator)
    torch.manual_seed(5)
    terms = generator.training_loss((tokens, labels), student_loops=1, lam=0.25)
    torch.manual_seed(5)  # the same mask, rebuilt by hand
    mask = sample_training_mask(len(tokens), generator.seq_len)
    inputs = torch.where(mask, torch.full_like(tokens, generator.mask_id), tokens)
    with torch.no_grad():
        teacher = generator.logits(inputs, labels, loops=3)[mask]
        student = generator.logits(inputs, labels, loops=1)[mask]
    assert terms.teacher_gt.item() == pytest.approx(
        F.cross_entropy(teacher, tokens[mask]).item(), rel=1e-5
    )
    assert terms.student_gt.item() == pytest.approx(
        F.cross_entropy(student, tokens[mask]).item(), rel=1e-5
    )
    assert terms.distill.item() == pytest.approx(
        soft_cross_entropy(student, teacher).item(), rel=1e-5
    )
    expected = terms.teacher_gt + 0.25 * terms.student_gt + 0.75 * terms.distill
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    # soft cross-entropy is KL + the teacher's entropy: minimal (= entropy) when the student equals
    # the teacher
    entropy = -(teacher.softmax(-1) * teacher.log_softmax(-1)).sum(-1).mean()
    assert soft_cross_entropy(teacher, teacher).item() == pytest.approx(entropy.item(), rel=1e-5)


def test_vanilla_mode_has_only_the_teacher_term(generator):
    terms = generator.training_loss(batch_of(generator), student_loops=None, lam=1.0)
    assert (
        terms.student_gt is None
        and terms.distill is None
        and torch.equal(terms.total, terms.teacher_gt)
    )
    terms.total.backward()
    assert generator.backbone.blocks[0].attn.qkv.weight.grad is not None


def test_tokenizer_is_frozen_and_stays_in_eval_mode(generator):
    generator.train()
    assert not generator.tokenizer.training and generator.training
    trainable = {id(p) for p in generator.trainable_parameters()}
    assert not any(id(p) in trainable for p in generator.tokenizer.parameters())
    assert any(
        k.startswith("tokenizer.") for k in generator.state_dict()
    )  # saved with the checkpoint


def test_generate_is_deterministic_and_decodes_pixels(generator):
    a = generator.generate([0, 1, 2], seed=3)
    assert a.shape == (3, 32, 32, 1) and a.dtype == np.uint8
    assert np.array_equal(a, generator.generate([0, 1, 2], seed=3))
    assert not np.array_equal(a, generator.generate([0, 1, 2], seed=4))
    assert generator.generate([], seed=0).shape == (0, 32, 32, 1)


def test_guidance_one_is_the_conditional_path(generator):
    labels = torch.tensor([1, 4, 7])
    steps = generator.config.sampling.steps
    cfg = generator.config.masked

    def conditional(tokens, step):
        return generator.logits(tokens, labels, loops=2)

    # as generate_tokens runs: no autograd, and the config's sampling precision (bf16 autocast in
    # fmnist_masked; the reference in fp32 differs by ~3e-3 in the logits, enough to flip a token on
    # some random weights)
    with (
        torch.no_grad(),
        autocast_context(generator.device, str(generator.config.sampling.precision)),
    ):
        expected = iterative_decode(
            conditional,
            3,
            generator.seq_len,
            generator.mask_id,
            steps,
            generator=torch.Generator().manual_seed(9),
            temperature_base=cfg.temperature_base,
            temperature_range=cfg.temperature_range,
        )
    got = generator.generate_tokens(labels, loops=2, guidance=1.0, seed=9)
    assert torch.equal(got.flatten(1), expected)
    guided = generator.generate_tokens(labels, loops=2, guidance=3.0, seed=9)
    assert not torch.equal(guided, got)


def test_guidance_uses_the_null_class(generator):
    tokens = torch.full((2, generator.seq_len), generator.mask_id)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        cond = generator.logits(tokens, labels, 3)
        uncond = generator.logits(tokens, torch.tensor([-1, -1]), 3)
        guided = generator.guided_logits(tokens, labels, 3, 2.0)
    assert torch.allclose(
        guided, uncond + 2.0 * (cond - uncond), atol=1e-5
    )  # s = 2, as in diffusion


def test_loop_schedules(generator):
    steps = generator.config.sampling.steps
    same = generator.generate([0, 1], loops=[2] * steps, seed=1)
    assert np.array_equal(same, generator.generate([0, 1], loops=2, seed=1))
    mixed = generator.generate([0, 1], loops=[1, 1, 2, 2, 3, 3], seed=1)
    assert mixed.shape == same.shape
    with pytest.raises(ValueError, match="6 steps"):
        generator.generate([0], loops=[1, 2], seed=0)
    with pytest.raises(ValueError, match="class labels"):
        generator.generate([10], seed=0)


def test_gflops_grow_with_loops_and_guidance(generator):
    g = {loops: generator.gflops_per_sample(loops=loops) for loops in (1, 2, 3)}
    decode = generator.tokenizer.decode_gflops()
    assert 0 < decode < g[1] < g[2] < g[3]
    assert g[3] - g[2] == pytest.approx(g[2] - g[1])  # linear in the loop count
    assert generator.gflops_per_sample(loops=2, guidance=2.0) - decode == pytest.approx(
        2 * (g[2] - decode)
    )
    assert generator.gflops_per_sample(loops=[1, 1, 1, 3, 3, 3]) == pytest.approx((g[1] + g[3]) / 2)


def test_bf16_sampling_is_deterministic(generator):
    from omegaconf import OmegaConf

    OmegaConf.update(generator.config, "sampling.precision", "bf16")
    a = generator.generate([0, 5], seed=2)
    assert np.array_equal(a, generator.generate([0, 5], seed=2))
    with pytest.raises(ConfigError, match="sampling.precision"):
        tiny_cfg("sampling.precision=fp16")


@pytest.fixture(scope="module")
def shared_tokenizer(tmp_path_factory):
    """One tiny tokenizer trained once (through prepare_data) and shared by the runs below."""
    from elt.masked.task import prepare_data

    folder = tmp_path_factory.mktemp("tokenizer")
    cfg = tiny_cfg("data.limit=512", f"tokenizer.path={folder}")
    dataset = prepare_data(cfg, build_generator(cfg), folder.parent / "unused_run", progress=False)
    assert len(dataset) == 512
    return folder


def test_prepare_data_reuses_tokenizer_and_cache(shared_tokenizer, monkeypatch, tmp_path):
    import elt.tokenizers.train as tokenizer_training
    from elt.masked import task

    monkeypatch.setattr(
        tokenizer_training, "train_tokenizer", lambda *a, **k: pytest.fail("retrained")
    )
    cfg = tiny_cfg("data.limit=512", f"tokenizer.path={shared_tokenizer}")
    generator = build_generator(cfg)
    cache_file = next((shared_tokenizer / "cache").glob("*.npy"))
    before = cache_file.stat().st_mtime_ns
    torch.manual_seed(0)
    state = torch.get_rng_state()
    dataset = task.prepare_data(cfg, generator, tmp_path, progress=False)
    assert torch.equal(
        torch.get_rng_state(), state
    )  # preparing data does not shift the run's randomness
    assert cache_file.stat().st_mtime_ns == before  # read, not rebuilt
    tokens, label = dataset[3]
    images = task.build_dataset(cfg.data, "train")
    assert torch.equal(tokens, generator.tokenizer.encode(images[3][0][None]).flatten())
    assert label == images[3][1]


def test_stale_token_cache_is_rebuilt(tmp_path):
    from elt.data.cache import state_dict_hash
    from elt.masked.task import encode_dataset

    cfg = tiny_cfg("data.limit=64")
    tokenizer = build_generator(cfg).tokenizer
    first = np.array(encode_dataset(cfg, tokenizer, tmp_path, progress=False))
    cache_file = next(tmp_path.glob("*.npy"))
    stamp = cache_file.stat().st_mtime_ns
    encode_dataset(cfg, tokenizer, tmp_path, progress=False)
    assert cache_file.stat().st_mtime_ns == stamp  # same tokenizer: reused
    with torch.no_grad():
        for p in tokenizer.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    second = np.array(encode_dataset(cfg, tokenizer, tmp_path, progress=False))
    assert json.loads(cache_file.with_suffix(".json").read_text())["key"][
        "tokenizer"
    ] == state_dict_hash(tokenizer)
    assert not np.array_equal(
        first, second
    )  # re-encoded with the new weights, not read from the stale cache


@pytest.mark.slow
def test_tiny_end_to_end_train_then_sample(shared_tokenizer, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "fmnist_masked",
        *TINY_TOKENIZER,
        *TINY_MODEL,
        "data.limit=512",
        f"tokenizer.path={shared_tokenizer}",
        f"train.out_dir={run}",
        "train.steps=120",
        "train.batch_size=32",
        "logging.every=10",
        "lr_schedule.warmup_steps=10",
        "optimizer.lr=0.002",
        "logging.sample_every=0",
        "logging.sample_loops=[1,3]",
        "--no-progress",
    ]
    assert main(args) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["teacher_gt"] < 0.85 * log[0]["teacher_gt"]
    assert log[-1]["student_gt"] < 0.85 * log[0]["student_gt"]
    assert list((run / "samples").glob("step_*.png"))
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
                "20",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with np.load(out / "samples_L1.npz") as data:
        assert data["arr_0"].shape == (20, 32, 32, 1) and data["arr_0"].dtype == np.uint8
        assert np.array_equal(data["arr_1"], np.arange(20) % 10)
    assert (out / "grid.png").is_file()
    generator = elt.load(run)  # self-contained: the tokenizer comes from the checkpoint
    images = generator.generate([0, 1], loops=2, seed=0)
    assert images.shape == (2, 32, 32, 1) and images.std() > 0


def test_pretrained_vq_tokenizer_on_an_image_folder(tmp_path):
    """ImageNet-style path: image folder + a diffusers VQModel from a local folder (random weights
    here)."""
    pytest.importorskip("diffusers")
    from elt.masked.task import prepare_data
    from test_folders import write_tree
    from test_tokenizer import tiny_vq_folder

    vq_model, vq_folder = tiny_vq_folder(tmp_path)
    write_tree(tmp_path / "images", broken=False)
    cfg = load_config(
        "fmnist_masked",
        [
            *TINY_MODEL,
            "data.name=folder",
            f"data.root={tmp_path / 'images'}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=32",
            "data.hflip=true",
            "tokenizer.kind=pretrained_vq",
            f"tokenizer.pretrained_path={vq_folder}",
        ],
    )
    generator = build_generator(cfg)
    assert generator.codebook_size == 64 and generator.seq_len == 64
    dataset = prepare_data(cfg, generator, tmp_path / "run", progress=False)
    for name, value in vq_model.state_dict().items():
        assert torch.equal(generator.tokenizer.vq.state_dict()[name], value), name
    assert len(dataset) == 6 and dataset.variants == 2
    terms = generator.training_loss(
        torch.utils.data.default_collate([dataset[i] for i in range(4)]), 1, 0.5
    )
    assert torch.isfinite(terms.total)
    assert generator.generate([0, 1], seed=0).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="3-channel"):
        build_generator(
            load_config(
                "fmnist_masked",
                ["tokenizer.kind=pretrained_vq", f"tokenizer.pretrained_path={vq_folder}"],
            )
        )


def test_masked_positions_pad_to_a_few_sizes_and_weight_only_the_masked_ones():
    from elt.masked.model import masked_positions

    sizes = set()
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        mask = torch.rand(8, 64, generator=g) < torch.rand(8, 1, generator=g)
        index, weights = masked_positions(mask, buckets=16)
        count = int(mask.sum())
        assert sorted(index[:count].tolist()) == mask.flatten().nonzero().squeeze(1).tolist()
        assert torch.all(weights[count:] == 0) and torch.all(index[count:] == 0)
        assert weights.sum().item() == pytest.approx(1.0 if count else 0.0)
        assert len(index) >= count and len(index) % 32 == 0  # 8·64 positions in 16 buckets of 32
        sizes.add(len(index))
    assert 4 < len(sizes) <= 16  # a handful of shapes, not one per step
