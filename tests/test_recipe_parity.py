"""Training-recipe parity with the anchors' loops: LR decay after warm-up (exact under resume), gradient
accumulation (k micro-batches = one big batch), per-sample label dropout for classifier-free guidance."""

import math

import pytest
import torch

from conftest import TOY_OVERRIDES
from elt.config import ConfigError, load_config
from elt.core.blocks import LabelEmbedder
from elt.train.trainer import Trainer, accumulation_steps, lr_at, train
from test_resume import assert_same_files, assert_same_optimizer, cfg_for, read_log

DET = [*TOY_OVERRIDES, "paradigm=toy_det", "data.limit=40", "train.threads=1", "train.tensorboard=false",
       "train.log_every=1", "train.device=cpu"]


@pytest.fixture
def det_paradigm(monkeypatch):
    from elt import registry

    monkeypatch.setitem(registry.TASK_MODULES, "toy", "toy_task")
    monkeypatch.setitem(registry.TASK_MODULES, "toy_det", "dist_worker")


def schedule_cfg(*extra):
    return load_config(None, ["train.lr=1.0", "train.warmup_steps=2", "train.steps=6", *extra])


def test_lr_curves_match_a_hand_computation():
    constant = [lr_at(s, schedule_cfg()) for s in range(6)]
    assert constant == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]  # default: warm-up, then constant (old behaviour)
    # cosine from step 2 (end of warm-up) to step 5 (the last) with floor 0.1: progress 0, 1/3, 2/3, 1
    cosine = [lr_at(s, schedule_cfg("train.lr_schedule=cosine", "train.min_lr_ratio=0.1")) for s in range(6)]
    hand = [0.5, 1.0, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25, 0.1]
    assert cosine == pytest.approx(hand, abs=1e-12)
    linear = [lr_at(s, schedule_cfg("train.lr_schedule=linear")) for s in range(6)]
    assert linear == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0], abs=1e-12)
    # no warm-up: the decay starts at step 0
    nowarm = [lr_at(s, schedule_cfg("train.lr_schedule=cosine", "train.warmup_steps=0")) for s in range(6)]
    assert nowarm == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(6)], abs=1e-12)
    with pytest.raises(ConfigError, match="lr_schedule"):
        schedule_cfg("train.lr_schedule=step")
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        schedule_cfg("train.min_lr_ratio=1.5")


def test_cosine_schedule_resumes_exactly(toy_paradigm, tmp_path):
    extra = ("train.steps=10", "train.lr_schedule=cosine", "train.min_lr_ratio=0.05")
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
    """The noiseless toy's loss depends only on which items are in the batch: 4 micro-batches of 4 must
    train like one batch of 16 (same items, same student loop count per step)."""
    logs, weights = [], []
    for name, extra in (("one", []), ("acc", ["train.grad_accum_steps=4"]), ("micro", ["train.micro_batch_size=8"])):
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
            if ".attn.qkv." not in key:  # key bias: no gradient, Adam amplifies rounding (see test_distributed)
                torch.testing.assert_close(w[key], weights[0][key], rtol=0, atol=1e-5, msg=key)


def test_accumulation_settings_are_checked():
    assert accumulation_steps(load_config(None, ["train.batch_size=64", "train.micro_batch_size=8"]), 2) == 4
    assert accumulation_steps(load_config(None, ["train.grad_accum_steps=3"]), 1) == 3
    with pytest.raises(ConfigError, match="micro_batch_size"):
        accumulation_steps(load_config(None, ["train.batch_size=64", "train.micro_batch_size=24"]), 1)
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        load_config(None, ["train.grad_accum_steps=0"])


def test_label_dropout_is_per_sample_as_in_cfg_training():
    """The paper drops class labels in 10% of training examples for classifier-free guidance; the anchors
    (MaskGIT, DiT) draw the drop per sample. Within one batch some labels are dropped and most kept, at
    the configured rate, and never at evaluation."""
    embed = LabelEmbedder(10, 8, drop_prob=0.1).train()
    labels = torch.arange(10).repeat(2000)
    torch.manual_seed(0)
    out = embed(labels)
    dropped = (out == embed.table.weight[embed.null_class]).all(dim=1)
    assert 0.09 < float(dropped.float().mean()) < 0.11
    per_batch = dropped[: 64 * 300].view(300, 64)
    assert ((per_batch.sum(1) > 0) & (per_batch.sum(1) < 64)).float().mean() > 0.95  # mixed within a batch
    assert not (embed.eval()(labels) == embed.table.weight[embed.null_class]).all(dim=1).any()
    for name in ("fmnist_masked", "fmnist_diffusion"):
        assert load_config(name).model.class_dropout == pytest.approx(0.1)


def test_sharded_checkpoint_resumes_exactly_in_one_process(toy_paradigm, tmp_path):
    """train.checkpoint_format=dcp: weights, optimizer and EMA written by torch.distributed.checkpoint
    (sharded/), the rest in state.pt; resuming gives the uninterrupted run bit for bit."""
    extra = ("train.steps=8", "train.lr_schedule=cosine", "train.checkpoint_format=dcp")
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
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]


def test_resume_with_another_accumulation_keeps_the_data_position(det_paradigm, tmp_path):
    """Steps 1-3 without accumulation, then 4-6 resumed with 4 micro-batches: the same items per step (the
    position is kept in whole steps), so the curve is the uninterrupted one."""
    base = [*DET, "train.steps=6"]
    straight = load_config(None, [*base, f"train.out_dir={tmp_path / 'a'}"])
    Trainer(straight, progress=False).fit()
    first = load_config(None, [*base, f"train.out_dir={tmp_path / 'b'}"])
    Trainer(first, progress=False).fit(until=3)
    second = Trainer(load_config(None, [*base, f"train.out_dir={tmp_path / 'b'}", "train.grad_accum_steps=4"]),
                     progress=False)
    second.resume_from(tmp_path / "b")
    assert second.batch_in_epoch == 4  # step 3 is the first of epoch 1 (2 steps per epoch), ×4 micro-batches
    second.fit()
    for a, b in zip(read_log(tmp_path / "a"), read_log(tmp_path / "b"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]


def test_accumulation_keeps_each_items_noise(toy_paradigm, tmp_path):
    """With input noise keyed by the global sample index, micro-batches draw each item's own noise: 4
    micro-batches still train like the unsplit batch."""
    logs = []
    for name, extra in (("one", []), ("acc", ["train.grad_accum_steps=4"])):
        cfg = load_config(None, [*TOY_OVERRIDES, "data.limit=40", "train.threads=1", "train.tensorboard=false",
                                 "train.log_every=1", "train.steps=4", f"train.out_dir={tmp_path / name}", *extra])
        Trainer(cfg, progress=False).fit()
        logs.append(read_log(tmp_path / name))
    for a, b in zip(*logs, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]
