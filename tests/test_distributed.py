"""Data-parallel training on the gloo backend (CPU): 2 processes under torchrun follow the loss
curve of 1 process with the same global batch; sharded sampling writes the images 1 process
writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import elt
from conftest import TOY_OVERRIDES
from elt.config import load_config
from elt.sampling import sample_to_disk
from elt.train.distributed import ShardedSampler
from elt.train.trainer import Trainer

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"

DET_OVERRIDES = [
    *TOY_OVERRIDES,
    "paradigm=toy_det",
    "train.steps=8",
    "logging.every=1",
    "data.limit=40",
    "train.device=cpu",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.samples_per_class=1",
]


def read_log(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def torchrun(args, nproc=2, timeout=120):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(TESTS / "dist_worker.py"),
        *args,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def det_paradigm(monkeypatch):
    from elt import registry

    registry.register_paradigm("toy", "toy_task")
    registry.register_paradigm("toy_det", "dist_worker")
    yield
    registry.unregister_paradigm("toy")
    registry.unregister_paradigm("toy_det")


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """Every 2-process run this module checks, launched ONCE: the 1-process references run here
    in-process, then one torchrun runs the 2-rank jobs one after another in one process group
    (dist_worker.py --jobs), so the module pays for one launch (a torch import per rank) instead
    of one per test. Each test below asserts on its own job's run directory."""
    from elt import registry
    from elt.data.fashion_mnist import DataNotFoundError, locate

    root = tmp_path_factory.mktemp("gloo")
    registry.register_paradigm("toy", "toy_task")
    registry.register_paradigm("toy_det", "dist_worker")
    try:
        one = root / "one"
        single_process_run(one)
        single_process_run(root / "wd_one", *WEIGHT_DECAY_EXEMPT)
        single_process_run(root / "wd_all", "optimizer.weight_decay=0.5")
        try:
            locate()
            paradigms = list(PARADIGM_OVERRIDES)
        except DataNotFoundError:
            paradigms = ["toy"]
        for paradigm in paradigms:
            overrides = [*PARADIGM_OVERRIDES[paradigm], *COMMON]
            cfg = load_config(None, [*overrides, f"train.out_dir={root / paradigm / 'one'}"])
            Trainer(cfg, progress=False).fit()
    finally:
        registry.unregister_paradigm("toy")
        registry.unregister_paradigm("toy_det")
    fsdp = [*DET_OVERRIDES, "distributed.strategy=fsdp"]
    jobs = {
        "ddp": [
            "--sample-ckpt",
            str(one),
            "--sample-out",
            str(root / "samples2"),
            *DET_OVERRIDES,
        ],
        "fsdp_full": ["--resume-at", "4", *fsdp, "checkpoint.format=full"],
        "fsdp_dcp": ["--resume-at", "4", *fsdp, "checkpoint.format=dcp"],
        "ddp_accum": [*DET_OVERRIDES, "train.grad_accum_steps=4"],
        "wd_two": [*fsdp, *WEIGHT_DECAY_EXEMPT],
        **{f"units{i}": [*fsdp, *extra] for i, extra in enumerate(FSDP_UNIT_EXTRAS)},
    }
    argv = [[str(root / name), *args] for name, args in jobs.items()]
    for paradigm in paradigms:
        shared = [f"tokenizer.path={root / paradigm / 'one' / 'tokenizer'}"]
        overrides = [*PARADIGM_OVERRIDES[paradigm], *COMMON, *(shared * (paradigm == "masked"))]
        argv.append([str(root / paradigm / "two"), *overrides])
    argv.append(["--eval", str(one), str(root / "eval2")])
    (root / "jobs.json").write_text(json.dumps(argv))
    torchrun(["--jobs", str(root / "jobs.json")], timeout=900)
    return root


WEIGHT_DECAY_EXEMPT = [
    "optimizer.weight_decay=0.5",
    "optimizer.weight_decay_exempt=[bias,norm,embedding]",
]


def single_process_run(run_dir, *extra):
    cfg = load_config(None, [*DET_OVERRIDES, f"train.out_dir={run_dir}", *extra])
    Trainer(cfg, progress=False).fit()
    return read_log(run_dir)


def assert_same_training(one_dir, two_dir):
    one, two = read_log(one_dir), read_log(two_dir)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        assert a["student_loops"] == b["student_loops"] and a["lambda"] == b["lambda"]
        for key in ("loss", "teacher_gt", "student_gt", "distill"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
        assert b["samples_per_s"] > 0
    last = "checkpoints/step_0000008"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(Path(one_dir, last, name))), load_file(str(Path(two_dir, last, name)))
        assert a.keys() == b.keys()
        for key in a:
            # The key bias gets no gradient (softmax is shift-invariant), so Adam turns float
            # rounding noise into lr-sized steps there: qkv is compared through the model's outputs
            # below.
            if ".attn.qkv." not in key:
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{name}:{key}")
    for ema in (False, True):
        models = [elt.load(d, ema=ema) for d in (one_dir, two_dir)]
        labels = torch.arange(4)
        noise = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = [m._image(m.backbone(m._tokens(labels, noise)).final) for m in models]
        torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-5)


def test_sharded_sampler_deals_the_single_process_batches():
    size, batch = 23, 6
    for world in (2, 3):
        ranks = [ShardedSampler(size, r, world, seed=5) for r in range(world)]
        single = ShardedSampler(size, 0, 1, seed=5)
        for epoch in (0, 1):
            single.set_position(epoch)
            order = list(single)
            shards = []
            for sampler in ranks:
                sampler.set_position(epoch)
                shards.append(list(sampler))
            per_rank = batch // world
            for step in range(len(shards[0]) // per_rank):
                together = sorted(
                    i for s in shards for i in s[step * per_rank : (step + 1) * per_rank]
                )
                assert together == sorted(order[step * batch : (step + 1) * batch])
        # resuming mid-epoch skips the items already consumed
        ranks[1].set_position(1, skip=2)
        full = ShardedSampler(size, 1, world, seed=5)
        full.set_position(1)
        assert list(ranks[1]) == list(full)[2:] and len(ranks[1]) == len(full) - 2
    a, b = ShardedSampler(size, seed=5), ShardedSampler(size, seed=5)
    b.set_position(1)
    assert list(a) != list(b) and sorted(a) == sorted(b) == list(range(size))


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_ddp(gloo_runs, det_paradigm, tmp_path):
    one, two = gloo_runs / "one", gloo_runs / "ddp"
    assert_same_training(one, two)
    # one log line per step (rank 0 only), one checkpoint directory per save
    assert len(read_log(two)) == 8
    assert sorted(p.name for p in (two / "checkpoints").glob("step_*")) == ["step_0000008"]
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["initial_seed"] != ranks[1]["initial_seed"]  # per-rank seeds
    assert ranks[0]["per_rank_batch"] == ranks[1]["per_rank_batch"] == 8  # global batch 16 / 2
    assert not ranks[0]["sharded"]
    # sampling sharded over 2 ranks writes exactly what one process writes
    record = sample_to_disk(
        elt.load(one), [1, 3], 10, tmp_path / "samples1", batch_size=3, progress=False
    )
    assert record["processes"] == 1
    for loops in (1, 3):
        a = np.load(tmp_path / "samples1" / f"samples_L{loops}.npz")
        b = np.load(gloo_runs / "samples2" / f"samples_L{loops}.npz")
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert json.loads((gloo_runs / "samples2" / "samples.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_two_gloo_processes_fsdp_with_resume(gloo_runs, det_paradigm):
    """FSDP2 (fully_shard) on gloo: same curve as one process, and a checkpoint written at step 4 in
    the gathered format (checkpoint.format=full; the FSDP default, dcp, is tested below)
    resumes to the same end point."""
    one, two = gloo_runs / "one", gloo_runs / "fsdp_full"
    assert_same_training(one, two)
    for rank in (0, 1):
        info = json.loads((two / f"rank{rank}.json").read_text())
        assert (
            info["sharded"]
            and info["resumed_from"] == "step_0000004"
            and info["checkpoint_format"] == "full"
        )
        # per-block units (the default): each unique block, and the root
        assert info["fsdp_units"] == [
            "",
            "generator.backbone.blocks.0",
            "generator.backbone.blocks.1",
        ]


FSDP_UNIT_EXTRAS = [
    ["distributed.fsdp_reshard_after_forward=false", "train.grad_accum_steps=2"],
    ["distributed.fsdp_unit=backbone", "train.micro_batch_size=4"],
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(FSDP_UNIT_EXTRAS)))
def test_fsdp_units_with_gradient_accumulation_match_one_process(gloo_runs, det_paradigm, index):
    """FSDP2 per block with one gather reused across loops, and the one-unit wrap, each accumulating
    two micro-batches per rank without syncing the first: the 1-process curve (no accumulation),
    step by step."""
    one, two, extra = gloo_runs / "one", gloo_runs / f"units{index}", FSDP_UNIT_EXTRAS[index]
    assert_same_training(one, two)
    info = json.loads((two / "rank1.json").read_text())
    assert info["accum"] == 2 and info["per_rank_batch"] == 4
    units = 3 if "distributed.fsdp_unit=backbone" not in extra else 2
    assert len(info["fsdp_units"]) == units, info["fsdp_units"]


@pytest.mark.slow
def test_ddp_with_gradient_accumulation_matches_one_process(gloo_runs, det_paradigm):
    one, two = gloo_runs / "one", gloo_runs / "ddp_accum"
    assert_same_training(one, two)
    assert json.loads((two / "rank0.json").read_text())["accum"] == 4


@pytest.mark.slow
def test_sharded_dcp_checkpoint_from_two_processes_resumes_in_one(
    gloo_runs, det_paradigm, tmp_path
):
    """FSDP per block, checkpoint.format=dcp: 2 gloo processes write their shards at step 4
    (and resume from them); one process then resumes the same checkpoint (re-sharded on load) and
    ends where an uninterrupted 1-process run ends."""
    one, two = gloo_runs / "one", gloo_runs / "fsdp_dcp"
    assert_same_training(one, two)
    ckpt = two / "checkpoints" / "step_0000004"
    assert len(list((ckpt / "sharded").glob("*.distcp"))) == 2  # one shard file per rank
    three = tmp_path / "three"
    cfg = load_config(None, [*DET_OVERRIDES, f"train.out_dir={three}", "checkpoint.format=dcp"])
    trainer = Trainer(cfg, progress=False)
    trainer.resume_from(ckpt)
    assert trainer.step == 4
    trainer.fit()
    log_one, log_three = read_log(one), read_log(three)
    for a, b in zip(log_one[4:], log_three, strict=True):
        assert a["step"] == b["step"] and a["student_loops"] == b["student_loops"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
    final_one = load_file(str(one / "checkpoints/step_0000008/ema.safetensors"))
    final_three = load_file(str(three / "checkpoints/step_0000008/ema.safetensors"))
    for key in final_one:
        if ".attn.qkv." not in key:
            torch.testing.assert_close(final_three[key], final_one[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
def test_elt_eval_sharded_over_two_processes_matches_one(
    gloo_runs, det_paradigm, tmp_path, monkeypatch
):
    """`elt eval` under torchrun: the ranks generate their shares, rank 0 scores and writes the
    table one process writes (the same samples: batch b has seed seed + b on whichever rank draws
    it). The 1-process side runs here in-process on one thread (torchrun with one process
    initialises no group: the same code path)."""
    import elt.eval.run
    import eval_worker

    monkeypatch.setattr(elt.eval.run, "build_suite", elt.eval.run.build_suite)  # restored after
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eval_worker.evaluate(str(gloo_runs / "one"), str(tmp_path / "eval1"))
    finally:
        torch.set_num_threads(threads)
    runs = {
        n: json.loads((out / "eval.json").read_text())["rows"]
        for n, out in ((1, tmp_path / "eval1"), (2, gloo_runs / "eval2"))
    }
    assert [r["loops"] for r in runs[2]] == [r["loops"] for r in runs[1]] == [1, 3]
    for a, b in zip(runs[1], runs[2], strict=True):
        for key in ("fd_cls", "class_acc", "kid"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_weight_decay_groups_under_two_fsdp_processes_match_one_process(gloo_runs, det_paradigm):
    """MAGVIT's exemptions as optimizer groups over FSDP2-sharded parameters: 2 gloo processes train
    like 1. (Was in test_recipe_parity.py: here its 2-rank run shares the module's one launch.)"""
    assert_same_training(gloo_runs / "wd_one", gloo_runs / "wd_two")
    # and the exemption matters here: the same run with decay on everything ends elsewhere
    assert read_log(gloo_runs / "wd_all")[-1]["loss"] != read_log(gloo_runs / "wd_one")[-1]["loss"]


def test_keyed_draws_give_every_global_item_the_same_numbers_on_any_rank_count():
    from elt.core import batch_random

    global_batch, seed, step = 12, 3, 7
    with batch_random.keyed_draws(seed, step, torch.arange(global_batch), global_batch):
        single = (batch_random.rand(global_batch, 5), batch_random.randn(global_batch, 2, 3))
    for world in (2, 3, 4):
        for rank in range(world):
            rows = torch.arange(global_batch // world) * world + rank
            with batch_random.keyed_draws(seed, step, rows, global_batch):
                mine = (batch_random.rand(len(rows), 5), batch_random.randn(len(rows), 2, 3))
            for a, b in zip(single, mine, strict=True):
                assert torch.equal(a[rows], b)
    with batch_random.keyed_draws(seed, step + 1, torch.arange(global_batch), global_batch):
        assert not torch.equal(
            batch_random.rand(global_batch, 5), single[0]
        )  # a new step, new numbers
    assert not batch_random.active()


PARADIGM_OVERRIDES = {
    # the toy paradigm with its input noise (drawn per global item)
    "toy": [*TOY_OVERRIDES, "paradigm=toy"],
    # pixel-space diffusion on 64 Fashion-MNIST images: timesteps, noise and label dropout
    "diffusion": [
        "paradigm=diffusion",
        "model.width=32",
        "model.heads=2",
        "model.unique_layers=2",
        "model.loops=3",
        "diffusion.patch_size=8",
        "data.limit=64",
        "train.batch_size=16",
        "optimizer.lr=0.001",
        "lr_schedule.warmup_steps=2",
    ],
    # masked tokens (tokenizer trained once by the 1-process run and shared): masks and label
    # dropout
    "masked": [
        "paradigm=masked",
        "model.width=32",
        "model.heads=2",
        "model.unique_layers=2",
        "model.loops=3",
        "data.limit=64",
        "tokenizer.steps=20",
        "tokenizer.batch_size=16",
        "tokenizer.eval_items=0",
        "tokenizer.channels=16",
        "train.batch_size=16",
        "optimizer.lr=0.001",
        "lr_schedule.warmup_steps=2",
    ],
}
COMMON = [
    "train.steps=6",
    "logging.every=1",
    "train.device=cpu",
    "train.threads=1",
    "logging.tensorboard=false",
    "logging.samples_per_class=1",
    "logging.sample_loops=[1]",
    "model.class_dropout=0.25",
]


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", list(PARADIGM_OVERRIDES))
def test_two_gloo_processes_reproduce_one_process_with_real_randomness(paradigm, gloo_runs, capsys):
    """With noise, masks, timesteps and label dropout drawn per global sample index, 2 ranks follow
    the 1-process loss curve up to float reduction order (the figure is printed for
    docs/distributed.md)."""
    if not (gloo_runs / paradigm).exists():
        pytest.skip("needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    one, two = gloo_runs / paradigm / "one", gloo_runs / paradigm / "two"
    a, b = read_log(one), read_log(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        assert ra["student_loops"] == rb["student_loops"]
        for key in ("loss", "teacher_gt", "student_gt", "distill"):
            worst = max(worst, abs(rb[key] - ra[key]) / max(abs(ra[key]), 1e-12))
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (
                paradigm,
                ra["step"],
                key,
            )
    with capsys.disabled():
        print(
            f"\n{paradigm}: 2 gloo ranks vs 1 process, max relative loss difference over 6 steps: "
            f"{worst:.2e}"
        )
