"""``elt prepare``: the sharded, resumable cache build gives the cache training reads, skips and
counts unreadable images, resumes after a kill from the finished shards, and agrees across process
counts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elt.cli import main as cli_main
from elt.config import load_config
from elt.data.prepare import encode_shards, prepare, shards_dir, start_shards
from elt.masked.task import build_generator, cache_spec, prepare_data
from elt.tokenizers import fsq
from elt.tokenizers.factory import build_tokenizer as build_fsq

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def write_images(root: Path, per_class: int, broken: int = 0, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for label in range(2):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                folder / f"{i:05d}.png"
            )
    for i in range(broken):
        (root / "class0" / f"broken{i}.jpg").write_bytes(b"not a jpeg at all")


def overrides(tmp_path, *extra):
    return [
        "data.name=folder",
        f"data.root={tmp_path / 'images'}",
        "data.num_classes=2",
        "data.channels=3",
        "data.image_size=16",
        "data.hflip=true",
        "tokenizer.levels=[4,4]",
        "tokenizer.downsample=4",
        "tokenizer.channels=8",
        "tokenizer.encode_batch_size=4",
        f"tokenizer.path={tmp_path / 'tok'}",
        f"train.out_dir={tmp_path / 'run'}",
        "train.device=cpu",
        "model.width=32",
        "model.heads=2",
        "model.unique_layers=1",
        "model.loops=2",
        *extra,
    ]


@pytest.fixture
def tiny(tmp_path):
    """A tiny generated image folder (2 unreadable files) and a saved random-weight FSQ
    tokenizer."""
    write_images(tmp_path / "images", per_class=15, broken=2)
    cfg = load_config("fmnist_masked", overrides(tmp_path))
    torch.manual_seed(0)
    fsq.save_tokenizer(build_fsq(cfg), tmp_path / "tok")
    return cfg


def reference_cache(cfg, tmp_path):
    """The cache one process builds the way training always did (sequentially), in its own
    folder."""
    generator = build_generator(cfg)
    spec = cache_spec(cfg, generator, tmp_path / "run", progress=False)
    spec.path = tmp_path / "reference" / spec.path.name
    from elt.data.cache import build_cache

    return np.asarray(build_cache(spec, progress=False))


def test_prepare_builds_the_cache_training_reads(tiny, tmp_path):
    result = prepare(tiny, shard_size=8, progress=False)
    assert result["count"] == 32 and result["skipped"] == 2 and result["encoded"] == 32
    assert result["created_by"] == "elt prepare" and result["item_shape"] == [2, 17]
    assert len(result["key"]["tokenizer"]) == 16  # the tokenizer's weight hash
    cache = np.load(result["path"])
    np.testing.assert_array_equal(cache, reference_cache(tiny, tmp_path))
    assert not shards_dir_of(result).exists()
    # training finds the prepared cache and uses it as it is (no re-encoding)
    stamp = os.stat(result["path"]).st_mtime_ns
    dataset = prepare_data(tiny, build_generator(tiny), tmp_path / "run", progress=False)
    assert len(dataset) == 30 and dataset.skipped == 2
    assert os.stat(result["path"]).st_mtime_ns == stamp
    # a manifest from another tokenizer is never used: named, then rebuilt
    manifest = Path(result["path"]).with_suffix(".json")
    meta = json.loads(manifest.read_text())
    meta["key"]["tokenizer"] = "0" * 16
    manifest.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="other settings"):
        prepare_data(tiny, build_generator(tiny), tmp_path / "run", progress=False)


def shards_dir_of(result):
    path = Path(result["path"])
    return path.with_name(path.stem + ".shards")


def test_prepare_resumes_from_finished_shards(tiny, tmp_path):
    generator = build_generator(tiny)
    spec = cache_spec(tiny, generator, tmp_path / "run", progress=False)
    start_shards(spec, is_main=True)
    first = encode_shards(
        spec, rank=0, world=2, shard_size=8, progress=False
    )  # shards 0 and 2, then "killed"
    assert first["encoded"] == 16
    folder = shards_dir(spec)
    (folder / ".shard_000001.999.tmp.npy").write_bytes(
        b"half a shard"
    )  # the shard in progress at the kill
    result = prepare(tiny, shard_size=8, progress=False)
    assert result["encoded"] == 16  # only shards 1 and 3
    np.testing.assert_array_equal(np.load(result["path"]), reference_cache(tiny, tmp_path))
    # shards from another tokenizer are discarded, not mixed in
    start_shards(spec, is_main=True)
    encode_shards(spec, rank=0, world=1, shard_size=8, progress=False)
    spec.key = {**spec.key, "tokenizer": "f" * 16}
    start_shards(spec, is_main=True)
    assert sorted(p.name for p in shards_dir(spec).iterdir()) == ["key.json"]


def test_a_shard_without_a_readable_skip_count_is_encoded_again(tiny, tmp_path):
    """A kill while the unreadable-item count was written once left a complete shard beside an empty
    marker; resume must re-encode that shard, not count it finished and then fail to read the
    marker."""
    generator = build_generator(tiny)
    spec = cache_spec(tiny, generator, tmp_path / "run", progress=False)
    start_shards(spec, is_main=True)
    encode_shards(
        spec, rank=0, world=1, shard_size=8, progress=False
    )  # all 4 shards, then "killed" before join
    folder = shards_dir(spec)
    # shards 1 and 2 hold one broken file each: their counts come back only if they are encoded
    # again
    assert [(folder / f"shard_00000{i}.skipped").read_text() for i in range(4)] == [
        "0",
        "1",
        "1",
        "0",
    ]
    (folder / "shard_000001.skipped").write_text("")
    (folder / "shard_000002.skipped").unlink()
    result = prepare(tiny, shard_size=8, progress=False)
    assert (
        result["encoded"] == 16 and result["skipped"] == 2
    )  # shards 1 and 2 again, counts from the markers
    np.testing.assert_array_equal(np.load(result["path"]), reference_cache(tiny, tmp_path))


def test_prepare_command_line(tiny, tmp_path, capsys):
    assert (
        cli_main(
            ["prepare", "fmnist_masked", *overrides(tmp_path), "--shard-size", "8", "--no-progress"]
        )
        == 0
    )
    assert "32 items, 2 unreadable skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # argparse's usage error, before any work
        cli_main(["prepare", "fmnist_masked", *overrides(tmp_path), "--shard-size", "0"])
    assert exc.value.code == 2
    assert "--shard-size: 0 must be >= 1" in capsys.readouterr().err


def run_cli(args, nproc=1, **kwargs):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
        "OMP_NUM_THREADS": "1",
    }
    launcher = (
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "elt.cli",
        ]
        if nproc > 1
        else ["-m", "elt.cli"]
    )
    return subprocess.Popen(
        [sys.executable, *launcher, "prepare", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_two_processes_and_a_real_kill(tiny, tmp_path):
    """torchrun with 2 gloo processes writes the 1-process cache; SIGKILL mid-run, then a rerun,
    too."""
    write_images(
        tmp_path / "images", per_class=150
    )  # 302 files: enough shards to be killed mid-run
    args = [
        "fmnist_masked",
        *overrides(tmp_path),
        "tokenizer.encode_batch_size=2",
        "--shard-size",
        "2",
        "--no-progress",
    ]
    reference = reference_cache(tiny, tmp_path)
    assert len(reference) == 302
    proc = run_cli(args, nproc=2)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[:3000]
    manifest = json.loads(next((tmp_path / "tok" / "cache").glob("*.json")).read_text())
    assert manifest["processes"] == 2 and manifest["skipped"] == 2
    np.testing.assert_array_equal(
        np.load(next((tmp_path / "tok" / "cache").glob("*.npy"))), reference
    )
    for path in (tmp_path / "tok" / "cache").iterdir():
        (path.unlink() if path.is_file() else None)
    proc = run_cli(args)
    folder = tmp_path / "tok" / "cache"
    deadline = time.time() + 120
    while time.time() < deadline and not list(folder.glob("*.shards/shard_000003.npy")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(folder.glob("*.shards/shard_*.npy")))
    assert finished >= 4
    proc = run_cli(args)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    encoded = int(out.split(" encoded now")[0].rsplit(" ", 1)[1])
    assert 0 < encoded <= 302 - 2 * finished  # finished shards were kept
    np.testing.assert_array_equal(np.load(next(folder.glob("*.npy"))), reference)


def test_prepare_latents_for_diffusion(tmp_path):
    """Latent space: the SD-VAE-layout cache that diffusion training reads, built by elt prepare."""
    pytest.importorskip("diffusers")
    from elt.diffusion.task import build_generator as build_diffusion
    from elt.diffusion.task import prepare_data as prepare_diffusion
    from test_vae import save_random_vae

    write_images(tmp_path / "images", per_class=5, broken=1)
    cfg = load_config(
        "fmnist_latent_diffusion",
        [
            "data.name=folder",
            f"data.root={tmp_path / 'images'}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=16",
            f"diffusion.vae_path={save_random_vae(tmp_path / 'vae')}",
            f"diffusion.latent_cache={tmp_path / 'latents'}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.device=cpu",
            "model.width=32",
            "model.heads=2",
        ],
    )
    result = prepare(cfg, shard_size=4, progress=False)
    assert result["count"] == 11 and result["item_shape"] == [4, 4, 4] and result["skipped"] == 1
    stamp = os.stat(result["path"]).st_mtime_ns
    dataset = prepare_diffusion(cfg, build_diffusion(cfg), tmp_path / "run", progress=False)
    assert (
        len(dataset) == 11 and os.stat(result["path"]).st_mtime_ns == stamp
    )  # read, not re-encoded
    np.testing.assert_array_equal(dataset.latents, np.load(result["path"]))


# -- issue 29 item 8: workers, only the encoder, bf16, the parallel join ---------------------------
def no_backbone(monkeypatch):
    """The transformer (the looped backbone) must never be built by elt prepare."""
    from elt.core.looped import LoopedTransformer

    def refuse(*args, **kwargs):
        raise AssertionError("elt prepare built the transformer")

    monkeypatch.setattr(LoopedTransformer, "__init__", refuse)


def test_prepare_builds_only_the_tokenizer_and_workers_give_the_same_cache(
    tiny, tmp_path, monkeypatch
):
    reference = reference_cache(
        tiny, tmp_path
    )  # the generator is built here, before the refusal below
    no_backbone(monkeypatch)
    serial = prepare(tiny, shard_size=8, progress=False, workers=0)
    assert (
        serial["workers"] == 0 and serial["encode_precision"] == "fp32" and serial["skipped"] == 2
    )
    np.testing.assert_array_equal(np.load(serial["path"]), reference)
    for path in Path(serial["path"]).parent.iterdir():
        path.unlink()
    parallel = prepare(
        tiny, shard_size=8, progress=False, workers=2
    )  # 2 DataLoader worker processes
    assert parallel["workers"] == 2 and parallel["skipped"] == 2 and parallel["encoded"] == 32
    np.testing.assert_array_equal(np.load(parallel["path"]), reference)


def diffusion_cfg(tmp_path, *extra):
    from test_vae import save_random_vae

    return load_config(
        "fmnist_latent_diffusion",
        [
            "data.name=folder",
            f"data.root={tmp_path / 'images'}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=16",
            f"diffusion.vae_path={save_random_vae(tmp_path / 'vae')}",
            f"diffusion.latent_cache={tmp_path / 'latents'}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.device=cpu",
            "model.width=32",
            "model.heads=2",
            *extra,
        ],
    )


def test_prepare_latents_builds_only_the_vae_with_workers_and_bf16(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from elt.data.cache import build_cache
    from elt.diffusion.task import build_generator as build_diffusion
    from elt.diffusion.task import cache_spec as diffusion_spec

    write_images(tmp_path / "images", per_class=5, broken=1)
    cfg = diffusion_cfg(tmp_path)
    spec = diffusion_spec(
        cfg, build_diffusion(cfg), tmp_path / "run"
    )  # the serial path training takes
    spec.path = tmp_path / "reference" / spec.path.name
    reference = np.asarray(build_cache(spec, progress=False))
    no_backbone(monkeypatch)
    fp32 = prepare(cfg, shard_size=4, progress=False, workers=2)
    assert (
        fp32["skipped"] == 1 and fp32["encode_precision"] == "fp32"
    )  # counted across worker processes
    np.testing.assert_array_equal(np.load(fp32["path"]), reference)
    for path in (tmp_path / "latents").iterdir():
        path.unlink()
    bf16 = prepare(cfg, shard_size=4, progress=False, workers=0, precision="bf16")
    assert (
        bf16["encode_precision"] == "bf16" and bf16["key"] == fp32["key"]
    )  # one cache, either precision
    latents = np.load(bf16["path"])
    assert latents.dtype == np.float32 and not np.array_equal(latents, reference)  # bf16 did run
    np.testing.assert_allclose(latents, reference, rtol=0, atol=0.05 * np.abs(reference).max())
    assert np.linalg.norm(latents - reference) / np.linalg.norm(reference) < 0.02


def test_each_rank_joins_only_its_own_shards(tiny, tmp_path, monkeypatch):
    """The join is split over the ranks: rank r copies shards r, r+W, ... into the joined file; the
    file is complete only when every rank has copied its part."""
    from elt.data import prepare as prep

    generator = build_generator(tiny)
    spec = cache_spec(tiny, generator, tmp_path / "run", progress=False)
    start_shards(spec, is_main=True)
    for rank in (0, 1):
        encode_shards(spec, rank=rank, world=2, shard_size=8, progress=False)
    read = []
    real_load = np.load

    def recording_load(path, *args, **kwargs):
        read.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", recording_load)
    prep.start_join(spec, shard_size=8)
    read.clear()
    assert prep.fill_join(spec, rank=0, world=2, shard_size=8) == 16
    assert [name for name in read if name.startswith("shard_")] == [
        "shard_000000.npy",
        "shard_000002.npy",
    ]
    partial = real_load(prep._joining_path(spec))
    assert not partial[8:16].any() and partial[:8].any()  # rank 1's shards are not there yet
    read.clear()
    assert prep.fill_join(spec, rank=1, world=2, shard_size=8) == 16
    assert [name for name in read if name.startswith("shard_")] == [
        "shard_000001.npy",
        "shard_000003.npy",
    ]
    joined = prep.finish_join(spec, shard_size=8, processes=2, seconds=1.0)
    np.testing.assert_array_equal(joined, reference_cache(tiny, tmp_path))
    assert json.loads(spec.path.with_suffix(".json").read_text())["skipped"] == 2
    assert not shards_dir(spec).exists() and not prep._joining_path(spec).exists()


def test_default_workers_and_bad_options(tiny, tmp_path, capsys):
    from elt.data.prepare import default_workers

    assert [default_workers(p, cpus=2) for p in (1, 2)] == [1, 0]
    assert default_workers(8, cpus=128) == 15 and default_workers(1, cpus=64) == 16
    with pytest.raises(SystemExit) as exc:
        cli_main(["prepare", "fmnist_masked", *overrides(tmp_path), "--workers", "-1"])
    assert exc.value.code == 2 and "--workers: -1 must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["prepare", "fmnist_masked", *overrides(tmp_path), "--precision", "fp16"])
    assert exc.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_bf16_tokenizer_rounds_in_fp32_and_keeps_the_cache_key(tiny, tmp_path):
    """--precision bf16 (the CUDA default): the FSQ encoder runs under bf16 autocast, its rounding
    in fp32, so nearly every token matches fp32; the key (weight hash) is the same and the manifest
    says which ran."""
    fp32 = prepare(tiny, shard_size=8, progress=False, workers=0, precision="fp32")
    tokens = np.load(fp32["path"])
    for path in Path(fp32["path"]).parent.iterdir():
        path.unlink()
    bf16 = prepare(tiny, shard_size=8, progress=False, workers=0, precision="bf16")
    assert bf16["encode_precision"] == "bf16" and bf16["key"] == fp32["key"]
    other = np.load(bf16["path"])
    np.testing.assert_array_equal(
        other[:, :, -1], tokens[:, :, -1]
    )  # labels and skipped items alike
    assert (other[:, :, :-1] == tokens[:, :, :-1]).mean() > 0.97
    tokenizer = build_generator(tiny).tokenizer
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = tokenizer.encode(x)
        latent = tokenizer.encoder(x)
    expected = tokenizer.quantizer.codes_to_indices(tokenizer.quantizer.quantize(latent.float()))
    assert torch.equal(
        under_autocast, expected
    )  # the rounding saw fp32 values, not bf16 arithmetic


def test_only_a_missing_tokenizer_makes_rank_zero_build_first(tmp_path):
    """elt prepare serialises the ranks (rank 0 first, the others waiting in a barrier) only where
    something is built once: a missing FSQ tokenizer. A pretrained VQ, a saved FSQ tokenizer or a
    VAE: every rank at once."""
    from types import SimpleNamespace

    from elt.config import load_config
    from elt.data.prepare import _builds_first
    from elt.diffusion import task as diffusion_task
    from elt.masked import task as masked_task
    from elt.tokenizers import fsq

    one = SimpleNamespace(world=1, rank=0, is_main=True)
    cfg = load_config("fmnist_masked", [f"tokenizer.path={tmp_path / 'tok'}"])
    assert _builds_first(
        cfg, masked_task, tmp_path, one
    )  # no tokenizer saved: rank 0 trains it first
    (tmp_path / "tok").mkdir()  # a saved tokenizer: its weights and meta files
    (tmp_path / "tok" / fsq.WEIGHTS_FILE).write_bytes(b"")
    (tmp_path / "tok" / fsq.META_FILE).write_text("{}")
    assert not _builds_first(cfg, masked_task, tmp_path, one)
    vq = load_config(
        "fmnist_masked", ["tokenizer.kind=pretrained_vq", f"tokenizer.pretrained_path={tmp_path}"]
    )
    assert not _builds_first(vq, masked_task, tmp_path, one)
    latent = load_config("fmnist_latent_diffusion", [])
    assert not _builds_first(latent, diffusion_task, tmp_path, one)
    plugin = SimpleNamespace(
        cache_spec=lambda *a, **k: None
    )  # a task without the hook: rank 0 first, as before
    assert _builds_first(latent, plugin, tmp_path, one)
