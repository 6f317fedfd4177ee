"""The FSDP scale path on gloo (CPU): mixed precision never casts the regression targets or the
loss, and bf16 under FSDP follows bf16 under DDP; the model is built on the meta device and
materialised shard by shard with the weights one process starts from; the EMA is sharded like its
parameters; checkpoints are DCP by default under FSDP and their safetensors are streamed from the
shards."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from elt import registry
from elt.config import load_config, resolved_checkpoint_format
from elt.runtime import seed_everything
from elt.train.dcp import stream_safetensors
from elt.train.ema import EMA
from test_distributed import DET_OVERRIDES, read_log, torchrun
from test_distributed import det_paradigm as det_paradigm  # noqa: F401  (the fixture)

BF16 = ["train.precision=bf16", "train.steps=20", "logging.sample_every=0"]
META = [*DET_OVERRIDES, "distributed.strategy=fsdp", "train.steps=2", "logging.sample_every=0"]


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """The module's three 2-rank runs (bf16 DDP, bf16 FSDP, the meta-init FSDP run with its initial
    weights dumped) in ONE torchrun launch, one after another in one process group
    (dist_worker.py --jobs): one torch import per rank instead of three."""
    root = tmp_path_factory.mktemp("fsdp")
    (root / "dump").mkdir()
    jobs = [
        [str(root / "ddp"), *DET_OVERRIDES, *BF16],
        [str(root / "fsdp"), *DET_OVERRIDES, *BF16, "distributed.strategy=fsdp"],
        [str(root / "meta"), "--dump-init", str(root / "dump"), *META],
    ]
    (root / "jobs.json").write_text(json.dumps(jobs))
    torchrun(["--jobs", str(root / "jobs.json")], timeout=600)
    return root


def rank_info(run_dir, rank):
    return json.loads((Path(run_dir) / f"rank{rank}.json").read_text())


@pytest.mark.slow
def test_bf16_fsdp_follows_bf16_ddp_and_keeps_targets_and_loss_fp32(fsdp_runs):
    """Same seed, 20 steps of bf16 autocast on 2 gloo processes: FSDP (bf16 block gathers) against
    DDP.
    Fails before the fix: FSDP's root unit cast the batch, so the target reached the loss in
        bf16."""
    ddp, fsdp = fsdp_runs / "ddp", fsdp_runs / "fsdp"
    for run in (ddp, fsdp):
        for rank in (0, 1):
            info = rank_info(run, rank)
            assert info["target_dtypes"] == ["torch.float32"], (run.name, info["target_dtypes"])
            assert info["loss_dtypes"] == ["torch.float32"], (run.name, info["loss_dtypes"])
    assert rank_info(fsdp, 0)["sharded"] and not rank_info(ddp, 0)["sharded"]
    a, b = read_log(ddp), read_log(fsdp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 21))
    worst = max(abs(y["loss"] - x["loss"]) / abs(x["loss"]) for x, y in zip(a, b, strict=True))
    assert worst <= 1e-2, worst
    assert (
        a[-1]["loss"] < 0.5 * a[0]["loss"]
    )  # it trained: the comparison is not between two flat curves


@pytest.mark.slow
def test_fsdp_meta_init_matches_one_process_build_and_shards_the_ema(
    fsdp_runs, det_paradigm, tmp_path
):
    """Rank 1 builds the looped core on the meta device; after materialisation the gathered weights
    equal a normal 1-process build with the same seed, bit for bit; the EMA holds only this rank's
    shards."""
    run, dump = fsdp_runs / "meta", fsdp_runs / "dump"
    cfg = load_config(None, [*META, f"train.out_dir={tmp_path / 'one'}"])
    seed_everything(cfg.train.seed)
    reference = registry.build_generator(cfg).state_dict()
    for name in ("model", "ema"):
        gathered = load_file(str(dump / f"{name}.safetensors"))
        assert gathered.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(gathered[key], value), (name, key)
    infos = [rank_info(run, r) for r in (0, 1)]
    assert infos[0]["init"]["built_on"] == "cpu" and infos[1]["init"]["built_on"] == "meta"
    for info in infos:
        init = info["init"]
        assert init["ema_sharded"] and not init["ema_shadow"]
        assert (
            init["ema_local"] <= 0.6 * init["ema_full"]
        )  # about a half: dim-0 chunks of uneven tensors
        assert info["checkpoint_format"] == "dcp"  # the default under FSDP
    assert (
        sum(info["init"]["ema_local"] for info in infos) == infos[0]["init"]["ema_full"]
    )  # a partition
    ckpt = run / "checkpoints" / "step_0000002"
    assert len(list((ckpt / "sharded").glob("*.distcp"))) == 2
    final = load_file(str(ckpt / "ema.safetensors"))
    assert final.keys() == reference.keys()


def test_streamed_safetensors_equal_a_whole_save_and_stop_at_the_first_non_finite(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "w": torch.randn(3, 5, generator=g),
        "half": torch.randn(7, generator=g).bfloat16(),
        "count": torch.tensor(4),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 2),
        "ids": torch.arange(6, dtype=torch.int32).view(2, 3),
    }
    stream_safetensors(tmp_path / "streamed.safetensors", state, {"step": "3"})
    save_file(state, str(tmp_path / "whole.safetensors"))
    streamed, whole = (
        load_file(str(tmp_path / "streamed.safetensors")),
        load_file(str(tmp_path / "whole.safetensors")),
    )
    assert streamed.keys() == whole.keys() == state.keys()
    for key in state:
        assert streamed[key].dtype == state[key].dtype and torch.equal(streamed[key], whole[key]), (
            key
        )
    from safetensors import safe_open

    with safe_open(str(tmp_path / "streamed.safetensors"), "pt") as handle:
        assert handle.metadata() == {"step": "3"}
    state["half"][2] = float("nan")
    assert stream_safetensors(tmp_path / "bad.safetensors", state) == "half"
    assert (
        stream_safetensors(None, state) == "half"
    )  # ranks that do not write reach the same verdict


def test_ema_without_a_shadow_materialises_what_the_full_shadow_holds():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    model.register_buffer("table", torch.arange(3.0), persistent=False)
    full, lean = EMA(model, 0.9), EMA(model, 0.9, keep_shadow=False)
    lean.track_sharded(model)
    assert lean.shadow is None and all(t.is_meta for t in lean._skeleton.state_dict().values())
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        full.update(model)
        lean.update(model)
    shadow = lean.materialize()
    for key, value in full.shadow.state_dict().items():
        assert torch.equal(shadow.state_dict()[key], value), key
    assert torch.equal(shadow.table, model.table) and not any(
        p.requires_grad for p in shadow.parameters()
    )
    lean.update(model)  # a gathered shadow is stale after the next update and is dropped
    assert lean.shadow is None and full.shadow is not None


def test_checkpoint_format_auto_is_dcp_under_fsdp_only():
    cfg = load_config(None, ["paradigm=masked"])
    assert cfg.checkpoint.format == "auto"
    assert resolved_checkpoint_format(cfg, sharded=True) == "dcp"
    assert resolved_checkpoint_format(cfg, sharded=False) == "full"
    for explicit in ("full", "dcp"):
        cfg = load_config(None, ["paradigm=masked", f"checkpoint.format={explicit}"])
        assert (
            resolved_checkpoint_format(cfg, sharded=True)
            == resolved_checkpoint_format(cfg, False)
            == explicit
        )
