"""The multi-GPU path's fixes that a CPU can check (issue 29): auxiliary models follow the
generator's device without entering its state dict or optimizer; the tokenizer is on the device
before the data is encoded; training grids are bounded and split over ranks; a missing cache is
refused (not built by rank 0 alone) under torchrun; every rank must see the run directory; the
process-group timeout is configurable."""

import datetime
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from elt import registry
from elt.config import load_config
from elt.data.cache import SoloBuildRefused, build_cache, cached_encode, refuse_solo_builds
from elt.errors import ConfigError, UserError
from elt.runtime import dist_timeout_seconds
from elt.sampling import grid_classes, sample_grid_rows
from elt.train.distributed import DistEnv, check_shared_paths

TINY_PIXEL = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=1",
    "model.loops=2",
    "sampling.steps=2",
    "train.device=cpu",
    "data.num_classes=10",
]


def latent_generator(vae_folder):
    cfg = load_config(
        "imagenet256_diffusion_elt_8x4",
        [
            "model.width=32",
            "model.heads=2",
            "data.num_classes=2",
            "data.image_size=32",
            f"diffusion.vae_path={vae_folder}",
            "sampling.steps=2",
            "train.device=cpu",
        ],
    )
    return registry.build_generator(cfg)


def test_the_vae_follows_the_generator_device_outside_state_dict_and_optimizer(tmp_path):
    pytest.importorskip("diffusers")
    from test_vae import save_random_vae

    generator = latent_generator(save_random_vae(tmp_path / "vae"))
    keys = set(generator.state_dict())
    trainable = sum(p.numel() for p in generator.trainable_parameters())
    named = [n for n, p in generator.named_parameters() if p.requires_grad]
    generator.to(
        "meta"
    )  # any device move: the VAE must come along (it used to stay behind on the CPU)
    assert generator.vae.device.type == "meta"
    assert all(p.device.type == "meta" for p in generator.vae.model.parameters())
    assert set(generator.state_dict()) == keys and not any(k.startswith("vae") for k in keys)
    assert sum(p.numel() for p in generator.trainable_parameters()) == trainable
    assert [n for n, p in generator.named_parameters() if p.requires_grad] == named
    assert not {id(p) for p in generator.vae.model.parameters()} & {
        id(p) for p in generator.parameters()
    }
    assert (
        generator.vae.model.dtype == torch.float32
    )  # a dtype cast of the generator leaves the VAE's own


def test_the_trainer_moves_the_tokenizer_to_its_device_before_encoding(tmp_path, monkeypatch):
    """The cache is encoded by ``prepare_data``: the generator (with its tokenizer) must already be
    on the trainer's device then (it was moved only afterwards, so the encode ran on the CPU)."""
    from conftest import TOY_OVERRIDES
    from elt.train import trainer as trainer_lib

    registry.register_paradigm("toy", "toy_task")
    try:
        cfg = load_config(
            None, [*TOY_OVERRIDES, f"train.out_dir={tmp_path / 'run'}", "train.device=cpu"]
        )
        moved = []
        real_build, real_prepare = registry.build_generator, registry.prepare_data

        def build(cfg):
            generator = real_build(cfg)
            original = generator.to
            generator.to = lambda *a, **k: (moved.append(a), original(*a, **k))[1]
            return generator

        seen = []
        monkeypatch.setattr(trainer_lib.registry, "build_generator", build)
        monkeypatch.setattr(
            trainer_lib.registry,
            "prepare_data",
            lambda *a, **k: (seen.append(list(moved)), real_prepare(*a, **k))[1],
        )
        trainer_lib.Trainer(cfg, progress=False)
        assert seen == [[(torch.device("cpu"),)]]
    finally:
        registry.unregister_paradigm("toy")


def test_grid_classes_are_bounded_and_evenly_spaced():
    assert list(grid_classes(10, 16)) == list(range(10)) and list(grid_classes(10, 0)) == list(
        range(10)
    )
    chosen = grid_classes(1000, 16)
    assert (
        len(chosen) == 16 and chosen[0] == 0 and chosen[-1] == 999 and np.all(np.diff(chosen) > 0)
    )


def test_a_missing_cache_is_refused_inside_the_guard_and_built_outside(tmp_path):
    calls = []

    def encode(start, stop):
        calls.append((start, stop))
        return np.arange(start, stop, dtype=np.int32)[:, None]

    with (
        refuse_solo_builds("build it first with elt prepare"),
        pytest.raises(SoloBuildRefused) as info,
    ):
        cached_encode(tmp_path / "c", {"k": 1}, 5, (1,), np.int32, encode, progress=False)
    assert "missing" in str(info.value) and "elt prepare" in str(info.value) and not calls
    assert not list(tmp_path.iterdir())  # nothing half-written
    built = cached_encode(tmp_path / "c", {"k": 1}, 5, (1,), np.int32, encode, progress=False)
    assert built[:, 0].tolist() == [0, 1, 2, 3, 4]
    with refuse_solo_builds("never used"):  # an existing cache is read as before
        from elt.data.cache import CacheSpec

        again = build_cache(
            CacheSpec(tmp_path / "c", {"k": 1}, 5, (1,), np.int32, encode), progress=False
        )
    assert again[:, 0].tolist() == [0, 1, 2, 3, 4] and len(calls) == 1


def test_the_process_group_timeout_is_configurable(monkeypatch):
    monkeypatch.delenv("ELT_DIST_TIMEOUT_S", raising=False)
    assert dist_timeout_seconds(None) == 600 and dist_timeout_seconds(30) == 30
    monkeypatch.setenv("ELT_DIST_TIMEOUT_S", "12.5")
    assert dist_timeout_seconds(30) == 12.5
    monkeypatch.setenv("ELT_DIST_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="ELT_DIST_TIMEOUT_S='soon'|ELT_DIST_TIMEOUT_S=soon"):
        dist_timeout_seconds(None)
    monkeypatch.delenv("ELT_DIST_TIMEOUT_S")
    with pytest.raises(ConfigError, match="distributed.timeout_s"):
        load_config("fmnist_masked", ["distributed.timeout_s=0"])


# -- two gloo processes ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank, port, tmp, results):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=3))
    env = DistEnv(rank, 2)
    out = {}
    # grids: each rank draws its share with per-sample seeds; rank 0 gets what one process draws
    torch.manual_seed(0)
    generator = registry.build_generator(load_config("fmnist_diffusion", TINY_PIXEL)).eval()
    rows = sample_grid_rows(generator, [1, 2], per_class=1, seed=3, classes=grid_classes(10, 5))
    out["rows"] = rows
    # the shared-filesystem check: rank 1 looks at a folder rank 0 never wrote to (another node's
    # disk)
    shared = tmp / "shared"
    check_shared_paths(env, {"train.out_dir": shared})  # the same folder on both ranks: passes
    out["shared_ok"] = True
    try:
        check_shared_paths(env, {"train.out_dir": shared if rank == 0 else tmp / f"node{rank}"})
        out["unshared"] = None
    except UserError as exc:
        out["unshared"] = str(exc)
    # the timeout: rank 1 never arrives at a barrier; rank 0 must fail after ~3 s, not wait for
    # PyTorch's default
    if rank == 0:
        start = time.perf_counter()
        try:
            dist.barrier()
            out["barrier"] = "returned"
        except Exception as exc:  # gloo reports the timeout as a RuntimeError/DistBackendError
            out["barrier"] = type(exc).__name__
        out["waited"] = time.perf_counter() - start
    else:
        time.sleep(6)
    results[rank] = out


def _refuse_then_two_ranks(rank, ports, tmp, overrides, results):
    """The module's two spawned checks in one pair of processes (one spawn's imports, not two): the
    refused cache build first (where diffusers is installed; its own process group), then the grid,
    shared-folder and timeout checks (the timeout leaves the group broken, so it comes last)."""
    if overrides is not None:
        refused = {}
        _train_without_cache(rank, ports[0], tmp / "refuse", overrides, refused)
        results[("refuse", rank)] = refused[rank]
    _two_ranks(rank, ports[1], tmp / "ranks", results)


def _refuse_overrides(tmp):
    """The tiny latent-diffusion run whose missing cache the ranks must refuse to build (None
    without diffusers)."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return None
    from test_prepare import write_images
    from test_vae import save_random_vae

    write_images(tmp / "images", per_class=4, size=32)
    return [
        "model.width=32",
        "model.heads=2",
        "data.num_classes=2",
        "data.image_size=32",
        f"data.root={tmp / 'images'}",
        f"diffusion.vae_path={save_random_vae(tmp / 'vae')}",
        f"diffusion.latent_cache={tmp / 'latents'}",
        "train.batch_size=4",
        "train.device=cpu",
        f"train.out_dir={tmp / 'run'}",
        "data.num_workers=0",
    ]


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """One mp.spawn of 2 gloo ranks for both tests below: (folder, refuse overrides, results)."""
    tmp = tmp_path_factory.mktemp("spawned")
    (tmp / "ranks").mkdir()
    overrides = _refuse_overrides(tmp / "refuse")
    ports = [_free_port()]
    while len(ports) < 2:
        ports += [p for p in [_free_port()] if p != ports[0]]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_refuse_then_two_ranks, args=(ports, tmp, overrides, results), nprocs=2, join=True)
    results = dict(results)
    manager.shutdown()
    return tmp, overrides, results


@pytest.mark.slow
def test_two_gloo_ranks_grid_shared_check_and_timeout(spawned):
    tmp, _, results = spawned
    tmp_path = tmp / "ranks"
    torch.manual_seed(0)
    generator = registry.build_generator(load_config("fmnist_diffusion", TINY_PIXEL)).eval()
    alone = sample_grid_rows(generator, [1, 2], per_class=1, seed=3, classes=grid_classes(10, 5))
    zero, one = results[0], results[1]
    assert one["rows"] is None and len(zero["rows"]) == 2
    for got, want in zip(zero["rows"], alone, strict=True):
        assert got.shape[0] == 5 and np.array_equal(got, want)
    assert (
        zero["shared_ok"]
        and one["shared_ok"]
        and not (tmp_path / "shared" / ".elt_shared_fs_check").exists()
    )
    for out in (zero, one):
        assert (
            out["unshared"]
            and "rank 1 on" in out["unshared"]
            and "shared by every node" in out["unshared"]
        )
    assert zero["barrier"] != "returned" and zero["waited"] < 5.5


def test_every_rank_resolves_its_own_gpu_without_being_told(monkeypatch):
    """``elt eval``/``elt sample`` under torchrun load the model with
    ``resolve_device(args.device)``: every rank must take cuda:LOCAL_RANK, not cuda:0 (8 processes
    on one GPU)."""
    from elt.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resolve_device("auto") == torch.device("cuda", 5) and resolve_device(
        "cuda"
    ) == torch.device("cuda", 5)
    assert resolve_device("cuda", 2) == torch.device("cuda", 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda") == torch.device("cuda")


def _train_without_cache(rank, port, tmp, overrides, results):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    from elt.train.trainer import Trainer

    try:
        Trainer(
            load_config("imagenet256_diffusion_elt_8x4", overrides),
            progress=False,
            env=DistEnv(rank, 2),
        )
        results[rank] = "trained"
    except UserError as exc:
        results[rank] = f"{type(exc).__name__}: {exc}"
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_refuse_to_build_a_missing_cache_and_one_process_builds_it(spawned):
    """Under torchrun a missing latent cache used to be encoded by rank 0 alone while the other
    ranks waited in a
    barrier (at ImageNet size far past any timeout): now every rank stops with the same line naming
    elt prepare, and nothing is written; a single process still builds the cache itself."""
    tmp, overrides, spawned_results = spawned
    if overrides is None:
        pytest.skip("needs diffusers")
    tmp_path = tmp / "refuse"
    results = {rank: spawned_results[("refuse", rank)] for rank in (0, 1)}
    for rank in (0, 1):
        assert (
            results[rank].startswith("SoloBuildRefused") and "elt.cli prepare" in results[rank]
        ), results[rank]
        assert "latents" in results[rank] and "--nproc_per_node 2" in results[rank]
    assert (
        not list((tmp_path / "latents").glob("*.npy")) if (tmp_path / "latents").exists() else True
    )
    from elt.train.trainer import Trainer

    trainer = Trainer(
        load_config("imagenet256_diffusion_elt_8x4", overrides), progress=False
    )  # one process
    assert len(trainer.dataset) == 8 and list((tmp_path / "latents").glob("*.npy"))
