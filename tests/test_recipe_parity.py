"""Training-recipe parity with the anchors' loops: LR decay after warm-up (exact under resume),
gradient accumulation (k micro-batches = one big batch), per-sample label dropout for
classifier-free guidance, MAGVIT's weight-decay exemptions, MaskGIT/MAGVIT's transformer dropout."""

import math

import pytest
import torch

from conftest import TOY_OVERRIDES
from elt import registry
from elt.config import ConfigError, load_config
from elt.core.blocks import Block, LabelEmbedder
from elt.train.optim import build_optimizer
from elt.train.trainer import Trainer, accumulation_steps, lr_at, train
from test_resume import assert_same_files, assert_same_optimizer, cfg_for, read_log

DET = [
    *TOY_OVERRIDES,
    "paradigm=toy_det",
    "data.limit=40",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.every=1",
    "train.device=cpu",
]


@pytest.fixture
def det_paradigm(monkeypatch):
    from elt import registry

    monkeypatch.setattr(registry, "_PARADIGMS", {**registry.paradigms()})  # restored afterwards
    registry.register_paradigm("toy", "toy_task")
    registry.register_paradigm("toy_det", "dist_worker")


def schedule_cfg(*extra):
    return load_config(
        None, ["optimizer.lr=1.0", "lr_schedule.warmup_steps=2", "train.steps=6", *extra]
    )


def test_lr_curves_match_a_hand_computation():
    constant = [lr_at(s, schedule_cfg()) for s in range(6)]
    assert constant == [
        0.5,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    ]  # default: warm-up, then constant (old behaviour)
    # cosine from step 2 (end of warm-up) to step 5 (the last) with floor 0.1: progress 0, 1/3, 2/3,
    # 1
    cosine = [
        lr_at(s, schedule_cfg("lr_schedule.kind=cosine", "lr_schedule.min_ratio=0.1"))
        for s in range(6)
    ]
    hand = [0.5, 1.0, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25, 0.1]
    assert cosine == pytest.approx(hand, abs=1e-12)
    linear = [lr_at(s, schedule_cfg("lr_schedule.kind=linear")) for s in range(6)]
    assert linear == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0], abs=1e-12)
    # no warm-up: the decay starts at step 0
    nowarm = [
        lr_at(s, schedule_cfg("lr_schedule.kind=cosine", "lr_schedule.warmup_steps=0"))
        for s in range(6)
    ]
    assert nowarm == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(6)], abs=1e-12
    )
    with pytest.raises(ConfigError, match="lr_schedule"):
        schedule_cfg("lr_schedule.kind=step")
    with pytest.raises(ConfigError, match="lr_schedule.min_ratio"):
        schedule_cfg("lr_schedule.min_ratio=1.5")


def test_cosine_schedule_resumes_exactly(toy_paradigm, tmp_path):
    extra = ("train.steps=10", "lr_schedule.kind=cosine", "lr_schedule.min_ratio=0.05")
    straight = train(cfg_for(tmp_path / "a", *extra), progress=False)
    cfg = cfg_for(tmp_path / "b", *extra)
    Trainer(cfg, progress=False).fit(until=5)
    resumed = Trainer(cfg, progress=False)
    resumed.resume_from(tmp_path / "b")
    final = resumed.fit()
    assert_same_files(straight, final)
    assert_same_optimizer(straight, final)
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["lr"] for r in a] == [r["lr"] for r in b] == [lr_at(s, cfg) for s in range(10)]
    assert a[-1]["lr"] == pytest.approx(0.003 * 0.05)


def test_accumulation_of_micro_batches_equals_one_big_batch(det_paradigm, tmp_path):
    """The noiseless toy's loss depends only on which items are in the batch: 4 micro-batches of 4
    must train like one batch of 16 (same items, same student loop count per step)."""
    logs, weights = [], []
    for name, extra in (
        ("one", []),
        ("acc", ["train.grad_accum_steps=4"]),
        ("micro", ["train.micro_batch_size=8"]),
    ):
        cfg = load_config(None, [*DET, "train.steps=6", f"train.out_dir={tmp_path / name}", *extra])
        trainer = Trainer(cfg, progress=False)
        assert trainer.global_batch == 16
        assert trainer.per_rank_batch == {"one": 16, "acc": 4, "micro": 8}[name]
        trainer.fit()
        logs.append(read_log(tmp_path / name))
        weights.append({k: v.clone() for k, v in trainer.generator.state_dict().items()})
    for other, w in zip(logs[1:], weights[1:], strict=True):
        for a, b in zip(logs[0], other, strict=True):
            assert a["student_loops"] == b["student_loops"] and a["lr"] == b["lr"]
            for key in ("loss", "teacher_gt", "student_gt", "distill"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        for key in weights[0]:
            if (
                ".attn.qkv." not in key
            ):  # key bias: no gradient, Adam amplifies rounding (see test_distributed)
                torch.testing.assert_close(w[key], weights[0][key], rtol=0, atol=1e-5, msg=key)


def test_accumulation_settings_are_checked():
    assert (
        accumulation_steps(
            load_config(None, ["train.batch_size=64", "train.micro_batch_size=8"]), 2
        )
        == 4
    )
    assert accumulation_steps(load_config(None, ["train.grad_accum_steps=3"]), 1) == 3
    with pytest.raises(ConfigError, match="micro_batch_size"):
        accumulation_steps(
            load_config(None, ["train.batch_size=64", "train.micro_batch_size=24"]), 1
        )
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        load_config(None, ["train.grad_accum_steps=0"])


def test_label_dropout_is_per_sample_as_in_cfg_training():
    """The paper drops class labels in 10% of training examples for classifier-free guidance; the
    anchors (MaskGIT, DiT) draw the drop per sample. Within one batch some labels are dropped and
    most kept, at the configured rate, and never at evaluation."""
    embed = LabelEmbedder(10, 8, drop_prob=0.1).train()
    labels = torch.arange(10).repeat(2000)
    torch.manual_seed(0)
    out = embed(labels)
    dropped = (out == embed.table.weight[embed.null_class]).all(dim=1)
    assert 0.09 < float(dropped.float().mean()) < 0.11
    per_batch = dropped[: 64 * 300].view(300, 64)
    assert (
        (per_batch.sum(1) > 0) & (per_batch.sum(1) < 64)
    ).float().mean() > 0.95  # mixed within a batch
    assert not (embed.eval()(labels) == embed.table.weight[embed.null_class]).all(dim=1).any()
    for name in ("fmnist_masked", "fmnist_diffusion"):
        assert load_config(name).model.class_dropout == pytest.approx(0.1)


def test_sharded_checkpoint_resumes_exactly_in_one_process(toy_paradigm, tmp_path):
    """checkpoint.format=dcp: weights, optimizer and EMA written by
    torch.distributed.checkpoint (sharded/), the rest in state.pt; resuming gives the uninterrupted
    run bit for bit."""
    extra = ("train.steps=8", "lr_schedule.kind=cosine", "checkpoint.format=dcp")
    straight = train(cfg_for(tmp_path / "a", *extra), progress=False)
    cfg = cfg_for(tmp_path / "b", *extra)
    Trainer(cfg, progress=False).fit(until=4)
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000004"
    assert (ckpt / "sharded" / ".metadata").is_file()
    from elt.train.checkpoint import load_training_state

    assert load_training_state(ckpt)["optimizer"] is None  # not gathered: it lives in sharded/
    resumed = Trainer(cfg, progress=False)
    resumed.resume_from(tmp_path / "b")
    final = resumed.fit()
    assert_same_files(straight, final)
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [
        r["loss"] for r in read_log(tmp_path / "b")
    ]


def test_resume_with_another_accumulation_keeps_the_data_position(det_paradigm, tmp_path):
    """Steps 1-3 without accumulation, then 4-6 resumed with 4 micro-batches: the same items per
    step (the position is kept in whole steps), so the curve is the uninterrupted one."""
    base = [*DET, "train.steps=6"]
    straight = load_config(None, [*base, f"train.out_dir={tmp_path / 'a'}"])
    Trainer(straight, progress=False).fit()
    first = load_config(None, [*base, f"train.out_dir={tmp_path / 'b'}"])
    Trainer(first, progress=False).fit(until=3)
    second = Trainer(
        load_config(None, [*base, f"train.out_dir={tmp_path / 'b'}", "train.grad_accum_steps=4"]),
        progress=False,
    )
    second.resume_from(tmp_path / "b")
    assert (
        second.batch_in_epoch == 4
    )  # step 3 is the first of epoch 1 (2 steps per epoch), ×4 micro-batches
    second.fit()
    for a, b in zip(read_log(tmp_path / "a"), read_log(tmp_path / "b"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]


def test_accumulation_keeps_each_items_noise(toy_paradigm, tmp_path):
    """With input noise keyed by the global sample index, micro-batches draw each item's own noise:
    4 micro-batches still train like the unsplit batch."""
    logs = []
    for name, extra in (("one", []), ("acc", ["train.grad_accum_steps=4"])):
        cfg = load_config(
            None,
            [
                *TOY_OVERRIDES,
                "data.limit=40",
                "train.threads=1",
                "logging.tensorboard=false",
                "logging.every=1",
                "train.steps=4",
                f"train.out_dir={tmp_path / name}",
                *extra,
            ],
        )
        Trainer(cfg, progress=False).fit()
        logs.append(read_log(tmp_path / name))
    for a, b in zip(*logs, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]


def tiny_masked(*extra):
    return load_config(
        "fmnist_masked",
        [
            "model.width=32",
            "model.heads=2",
            "model.unique_layers=2",
            "model.loops=2",
            "train.device=cpu",
            *extra,
        ],
    )


def test_weight_decay_exemption_spares_biases_norms_and_embeddings():
    """MAGVIT (maskgvt_train_lib.py get_optimizer) decays weight matrices only. With zero gradients
    one AdamW step multiplies a decayed parameter by exactly 1 − lr·wd and leaves an exempt one
    unchanged."""
    lr, wd = 0.1, 0.5
    exempt = {"bias", "norm", "embedding"}
    for groups in ([], ["bias"], sorted(exempt)):
        cfg = tiny_masked(
            f"optimizer.lr={lr}",
            f"optimizer.weight_decay={wd}",
            f"optimizer.weight_decay_exempt=[{','.join(groups)}]",
        )
        torch.manual_seed(0)
        generator = registry.build_generator(cfg)
        params = generator.trainable_parameters()
        optimizer = build_optimizer(generator, params, cfg, torch.device("cpu"))
        assert len(optimizer.param_groups) == (1 if not groups else 2)
        before = {n: p.detach().clone() for n, p in generator.named_parameters() if p.requires_grad}
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        spared = {
            "bias": ["backbone.blocks.0.attn.qkv.bias", "head.1.bias", "embed_norm.bias"],
            "norm": ["backbone.blocks.1.norm2.weight", "embed_norm.weight", "head.0.weight"],
            "embedding": ["token_embed.weight", "class_embed.table.weight", "pos_embed"],
        }
        decayed = [
            "backbone.blocks.0.attn.qkv.weight",
            "backbone.blocks.1.mlp.fc2.weight",
            "head.1.weight",
        ]
        after = dict(generator.named_parameters())
        for kind, names in spared.items():
            for name in names:
                factor = (
                    1.0
                    if kind in groups or (name.endswith(".bias") and "bias" in groups)
                    else 1 - lr * wd
                )
                torch.testing.assert_close(
                    after[name].detach(), before[name] * factor, rtol=0, atol=0, msg=name
                )
        for name in decayed:
            torch.testing.assert_close(
                after[name].detach(), before[name] * (1 - lr * wd), rtol=0, atol=0, msg=name
            )
    with pytest.raises(ConfigError, match="weight_decay_exempt"):
        tiny_masked("optimizer.weight_decay_exempt=[weights]")


def test_trainer_resumes_exactly_with_dropout_and_exemptions(toy_paradigm, tmp_path):
    """Two optimizer groups and dropout drawn from the saved RNG state: resuming at step 5 gives the
    uninterrupted run bit for bit; dropout changes the run (it is applied)."""
    extra = (
        "train.steps=10",
        "model.dropout=0.2",
        "model.attention_dropout=0.2",
        "optimizer.weight_decay=0.1",
        "optimizer.weight_decay_exempt=[bias,norm,embedding]",
    )
    straight = train(cfg_for(tmp_path / "a", *extra), progress=False)
    cfg = cfg_for(tmp_path / "b", *extra)
    first = Trainer(cfg, progress=False)
    assert [g["weight_decay"] for g in first.optimizer.param_groups] == [0.1, 0.0]
    first.fit(until=5)
    resumed = Trainer(cfg, progress=False)
    resumed.resume_from(tmp_path / "b")
    final = resumed.fit()
    assert_same_files(straight, final)
    assert_same_optimizer(straight, final)
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [
        r["loss"] for r in read_log(tmp_path / "b")
    ]
    train(cfg_for(tmp_path / "c", *extra[:1], *extra[3:]), progress=False)
    assert [r["loss"] for r in read_log(tmp_path / "c")][1:] != [
        r["loss"] for r in read_log(tmp_path / "a")
    ][1:]


def test_block_dropout_is_training_only_and_zero_is_the_plain_block():
    """MaskGIT/MAGVIT's hidden and attention-probability dropout: off in eval (the same function as
    a block without it), random in training, reproducible from the RNG; at 0 training equals eval
    exactly."""
    x = torch.randn(3, 5, 16)
    cond = torch.randn(3, 16)
    for cond_dim in (None, 16):
        torch.manual_seed(0)
        plain = Block(16, 2, cond_dim=cond_dim)
        if cond_dim:  # adaLN-Zero starts as the identity: give the branches weight
            torch.nn.init.normal_(plain.ada[1].weight, std=0.5)
        c = cond if cond_dim else None
        for dropout, attention in ((0.5, 0.0), (0.0, 0.5), (0.3, 0.3)):
            block = Block(16, 2, cond_dim=cond_dim, dropout=dropout, attention_dropout=attention)
            block.load_state_dict(plain.state_dict())
            ref = plain.eval()(x, c)
            assert torch.equal(block.eval()(x, c), ref)
            block.train()
            torch.manual_seed(1)
            a = block(x, c)
            torch.manual_seed(1)
            assert torch.equal(block(x, c), a)  # drawn from the RNG
            assert not torch.allclose(a, ref), (cond_dim, dropout, attention)
        assert torch.equal(
            plain.train()(x, c), plain.eval()(x, c)
        )  # dropout 0: no random draw anywhere
    generator = registry.build_generator(
        tiny_masked("model.dropout=0.1", "model.attention_dropout=0.2")
    )
    assert {(b.dropout, b.attn.dropout) for b in generator.backbone.blocks} == {(0.1, 0.2)}
    # the masked model's input embeddings (tokens and the class token) are dropped at the same rate,
    # as in MaskGIT's Embed module: in training only, each element zeroed or scaled by 1/(1 − p)
    tokens, labels = (
        torch.randint(0, generator.codebook_size, (64, generator.seq_len)),
        torch.arange(64) % 10,
    )
    generator.eval()
    clean = generator.embed(tokens), generator.class_token(labels, allow_dropout=True)
    generator.train()
    torch.manual_seed(0)
    noisy = generator.embed(tokens), generator.class_token(labels, allow_dropout=True)
    for a, b in zip(clean, noisy, strict=True):
        kept = b != 0
        assert 0.85 < float(kept.float().mean()) < 0.95
        if b is noisy[0]:
            torch.testing.assert_close(b[kept], a[kept] / 0.9)
    plain = registry.build_generator(tiny_masked()).train()
    assert torch.equal(plain.embed(tokens), plain.eval().embed(tokens))
    with pytest.raises(ConfigError, match="model.dropout"):
        tiny_masked("model.dropout=1.0")


def test_ema_decay_zero_samples_the_trained_weights_exactly():
    """MAGVIT keeps no EMA of its transformer (the UCF-101 recipes: train.ema_decay=0): the "EMA"
    weights used for sampling are then the trained weights, bit for bit, after every update."""
    from elt.train.ema import EMA

    torch.manual_seed(0)
    model = Block(16, 2)
    ema = EMA(model, 0.0)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ema.update(model)
        for (name, a), b in zip(
            model.state_dict().items(), ema.materialize().state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
