"""Bad inputs to every command: exit status 2, exactly one line on stderr, no traceback, and no new
files.

Each case prepares its inputs in a fresh folder (the working directory too), snapshots the folder,
runs ``elt ...`` in-process and checks the contract, and that the refusal came within
:data:`REFUSAL_SECONDS`. A shared tiny toy checkpoint (4 steps) serves the checkpoint cases; cases
that damage it work on a copy.

One table per class of hostile input: :data:`CASES` (ranges, outputs, damaged files),
:data:`SIZE_CASES` (unbounded sizes: loops, sample counts, widths, image sizes, steps),
:data:`CONFIG_CASES` (a bad value of every field of every config section, generated from the rules,
plus relations), :data:`ARG_CASES` (the shared argument checks in every command that takes the
argument). Legal-but-mistaken values are warnings, not refusals
(:func:`test_advice_is_one_warning_line_and_the_run_goes_on`)."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from conftest import TOY_OVERRIDES
from elt.cli import main

TOY_YAML = "paradigm: toy\n"
REFUSAL_SECONDS = 5.0  # every rejection within 5 s of the command's start


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 4-step toy run (checkpoint step_0000004)."""
    from elt import registry
    from elt.config import load_config
    from elt.train.trainer import train

    registry.register_paradigm("toy", "toy_task")
    run = tmp_path_factory.mktemp("toyrun") / "run"
    train(
        load_config(
            None,
            [*TOY_OVERRIDES, "train.steps=4", "logging.tensorboard=false", f"train.out_dir={run}"],
        ),
        progress=False,
    )
    yield run


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def checkpoint_copy(toy_run: Path, where: Path) -> Path:
    """A copy of the toy checkpoint without its manifest, so damaged files are found by loading."""
    ckpt = where / "ckpt"
    shutil.copytree(toy_run / "checkpoints" / "step_0000004", ckpt)
    (ckpt / "manifest.json").unlink()
    return ckpt


def damage(name: str, how: str):
    def prepare(toy_run, where):
        ckpt = checkpoint_copy(toy_run, where)
        path = ckpt / name
        data = path.read_bytes()
        path.write_bytes(
            {"empty": b"", "truncated": data[: len(data) // 2], "random": os.urandom(len(data))}[
                how
            ]
        )
        return ckpt

    return prepare


def config_text(text: str):
    def prepare(toy_run, where):
        ckpt = checkpoint_copy(toy_run, where)
        (ckpt / "config.yaml").write_text(text)
        return ckpt

    return prepare


def wrong_width(toy_run, where):
    ckpt = checkpoint_copy(toy_run, where)
    cfg = ckpt / "config.yaml"
    cfg.write_text(cfg.read_text().replace("width: 32", "width: 64"))
    return ckpt


def sample_damaged(name: str, how: str):
    return lambda r, w: [
        "sample",
        "--ckpt",
        str(damage(name, how)(r, w)),
        "--out",
        str(w / "o"),
        "--num",
        "2",
    ]


def train_args(where, *overrides):
    yaml = where / "toy.yaml"
    yaml.write_text(TOY_YAML)
    return [
        "train",
        str(yaml),
        "--no-progress",
        *TOY_OVERRIDES,
        "train.steps=2",
        "logging.tensorboard=false",
        *overrides,
    ]


def existing_file(where):
    (where / "taken").write_text("user data")
    return where / "taken"


# (id, argv builder (toy_run, where) -> argv, substring the one line must contain)
CASES = [
    # -- train: values out of range, checked when the config is built ------------------------------
    (
        "train-checkpoint-every-negative",
        lambda r, w: train_args(w, "checkpoint.every=-1"),
        "checkpoint.every",
    ),
    (
        "train-sample-every-negative",
        lambda r, w: train_args(w, "logging.sample_every=-5"),
        "logging.sample_every",
    ),
    ("train-data-limit-zero", lambda r, w: train_args(w, "data.limit=0"), "data.limit"),
    ("train-data-limit-negative", lambda r, w: train_args(w, "data.limit=-3"), "data.limit"),
    (
        "train-tokenizer-steps-zero",
        lambda r, w: train_args(w, "tokenizer.steps=0"),
        "tokenizer.steps",
    ),
    (
        "train-grad-clip-negative",
        lambda r, w: train_args(w, "optimizer.grad_clip=-1"),
        "optimizer.grad_clip",
    ),
    (
        "train-weight-decay-exempt-unknown",
        lambda r, w: train_args(w, "optimizer.weight_decay_exempt=[bias,oops]"),
        "optimizer.weight_decay_exempt",
    ),
    (
        "train-warmup-negative",
        lambda r, w: train_args(w, "lr_schedule.warmup_steps=-2"),
        "lr_schedule.warmup_steps",
    ),
    ("train-threads-negative", lambda r, w: train_args(w, "train.threads=-1"), "train.threads"),
    (
        "train-keep-negative",
        lambda r, w: train_args(w, "checkpoint.keep=-1"),
        "checkpoint.keep",
    ),
    ("train-log-every-zero", lambda r, w: train_args(w, "logging.every=0"), "logging.every"),
    ("train-lr-nan", lambda r, w: train_args(w, "optimizer.lr=nan"), "optimizer.lr"),
    (
        "train-guidance-nan",
        lambda r, w: train_args(w, "sampling.guidance=nan"),
        "sampling.guidance",
    ),
    (
        "train-guidance-inf",
        lambda r, w: train_args(w, "sampling.guidance=inf"),
        "sampling.guidance",
    ),
    (
        "train-sample-loops-zero",
        lambda r, w: train_args(w, "logging.sample_loops=[0,2]"),
        "logging.sample_loops",
    ),
    ("train-seed-too-large", lambda r, w: train_args(w, f"train.seed={2**64}"), "train.seed"),
    ("train-seed-negative", lambda r, w: train_args(w, "train.seed=-1"), "train.seed"),
    ("train-ema-decay-one", lambda r, w: train_args(w, "train.ema_decay=1.0"), "train.ema_decay"),
    ("train-wrong-type", lambda r, w: train_args(w, "model.width=wide"), "model.width"),
    # -- train: where it writes, checked before any work -------------------------------------------
    (
        "train-out-dir-is-a-file",
        lambda r, w: train_args(w, f"train.out_dir={existing_file(w)}"),
        "existing file",
    ),
    (
        "train-out-dir-under-a-file",
        lambda r, w: train_args(w, f"train.out_dir={existing_file(w) / 'run'}"),
        "which is a file",
    ),
    (
        "train-device-unknown",
        lambda r, w: train_args(w, f"train.out_dir={w / 'run'}", "train.device=tpu"),
        "unknown device 'tpu'",
    ),
    (
        "train-device-missing-gpu",
        lambda r, w: train_args(w, f"train.out_dir={w / 'run'}", "train.device=cuda:7"),
        "cuda:7",
    ),
    (
        "train-data-root-nowhere",
        lambda r, w: [
            "train",
            "fmnist_diffusion",
            "--no-progress",
            "model.width=32",
            "model.heads=2",
            f"train.out_dir={w / 'run'}",
            f"data.root={w / 'no_such_folder'}",
        ],
        "no_such_folder",
    ),
    (
        "train-resume-damaged-state",
        lambda r, w: [
            *train_args(w, f"train.out_dir={w / 'run'}"),
            "--resume",
            str(damage("state.pt", "random")(r, w)),
        ],
        "state.pt",
    ),
    (
        "train-resume-empty-state",
        lambda r, w: [
            *train_args(w, f"train.out_dir={w / 'run'}"),
            "--resume",
            str(damage("state.pt", "empty")(r, w)),
        ],
        "empty",
    ),
    # -- sample ------------------------------------------------------------------------------------
    (
        "sample-guidance-nan",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--guidance", "nan"],
        "guidance",
    ),
    (
        "sample-guidance-inf",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--guidance", "inf"],
        "guidance",
    ),
    (
        "sample-seed-too-large",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--seed", str(2**70)],
        "seed",
    ),
    (
        "sample-seed-negative",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--seed", "-4"],
        "seed",
    ),
    (
        "sample-num-zero",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--num", "0"],
        "--num",
    ),
    (
        "sample-loops-zero",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--loops", "0,1"],
        "--loops",
    ),
    (
        "sample-device-unknown",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--device", "quantum"],
        "unknown device",
    ),
    (
        "sample-device-missing-gpu",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--device", "cuda:7"],
        "cuda:7",
    ),
    (
        "sample-out-is-a-file",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(existing_file(w))],
        "existing file",
    ),
    (
        "sample-out-under-a-file",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(existing_file(w) / "x")],
        "which is a file",
    ),
    (
        "sample-no-checkpoint",
        lambda r, w: ["sample", "--ckpt", str(w), "--out", str(w / "o")],
        "no checkpoint",
    ),
    *[
        (f"sample-{how}-ema", sample_damaged("ema.safetensors", how), "damaged")
        for how in ("empty", "truncated", "random")
    ],
    (
        "sample-raw-weights-random",
        lambda r, w: [
            "sample",
            "--ckpt",
            str(damage("model.safetensors", "random")(r, w)),
            "--out",
            str(w / "o"),
            "--raw-weights",
        ],
        "damaged",
    ),
    (
        "sample-wrong-sizes",
        lambda r, w: ["sample", "--ckpt", str(wrong_width(r, w)), "--out", str(w / "o")],
        "does not match",
    ),
    (
        "sample-config-not-yaml",
        lambda r, w: [
            "sample",
            "--ckpt",
            str(config_text("model: [width: 3\n  - {")(r, w)),
            "--out",
            str(w / "o"),
        ],
        "YAML",
    ),
    (
        "sample-config-wrong-type",
        lambda r, w: [
            "sample",
            "--ckpt",
            str(config_text("paradigm: toy\nmodel:\n  width: abc\n")(r, w)),
            "--out",
            str(w / "o"),
        ],
        "model.width",
    ),
    (
        "sample-config-not-a-mapping",
        lambda r, w: [
            "sample",
            "--ckpt",
            str(config_text("- 1\n- 2\n")(r, w)),
            "--out",
            str(w / "o"),
        ],
        "config.yaml",
    ),
    (
        "sample-config-interpolation",
        lambda r, w: [
            "sample",
            "--ckpt",
            str(config_text("paradigm: toy\ntrain:\n  out_dir: ${oc.env:ELT_TEST_SECRET}\n")(r, w)),
            "--out",
            str(w / "o"),
        ],
        "interpolation",
    ),
    (
        "sample-override-wrong-type",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "sampling.guidance=lots"],
        "sampling override",
    ),
    (
        "sample-override-not-sampling",
        lambda r, w: ["sample", "--ckpt", str(r), "--out", str(w / "o"), "model.width=8"],
        "cannot set",
    ),
    # -- info / export -----------------------------------------------------------------------------
    (
        "info-truncated-ema",
        lambda r, w: ["info", str(damage("ema.safetensors", "truncated")(r, w))],
        "damaged",
    ),
    (
        "export-onto-its-source",
        lambda r, w: ["export", "--ckpt", str(checkpoint_copy(r, w)), "--out", str(w / "ckpt")],
        "being exported",
    ),
    (
        "export-into-its-run",
        lambda r, w: ["export", "--ckpt", str(r), "--out", str(r / "checkpoints" / "exported")],
        "being exported",
    ),
    (
        "export-onto-another-checkpoint",
        lambda r, w: ["export", "--ckpt", str(r), "--out", str(checkpoint_copy(r, w))],
        "checkpoint",
    ),
    (
        "export-onto-a-full-folder",
        lambda r, w: ["export", "--ckpt", str(r), "--out", str(existing_file(w).parent)],
        "not empty",
    ),
    (
        "export-out-is-a-file",
        lambda r, w: ["export", "--ckpt", str(r), "--out", str(existing_file(w))],
        "existing file",
    ),
    # -- eval --------------------------------------------------------------------------------------
    (
        "eval-merge-wrong-shape",
        lambda r, w: [
            "eval",
            "merge",
            str(json_file(w, {"rows": 5, "provenance": {}})),
            "--out",
            str(w / "m"),
        ],
        "'rows'",
    ),
    (
        "eval-merge-a-list",
        lambda r, w: ["eval", "merge", str(json_file(w, [1, 2])), "--out", str(w / "m")],
        "JSON object",
    ),
    (
        "eval-merge-bad-rows",
        lambda r, w: [
            "eval",
            "merge",
            str(json_file(w, {"rows": [1], "provenance": {}, "plot_metrics": []})),
            "--out",
            str(w / "m"),
        ],
        "rows",
    ),
    (
        "eval-merge-out-is-a-file",
        lambda r, w: ["eval", "merge", str(json_file(w, {})), "--out", str(existing_file(w))],
        "existing file",
    ),
    (
        "eval-out-is-a-file",
        lambda r, w: [
            "eval",
            "--ckpt",
            str(r),
            "--loops",
            "1",
            "--num",
            "4",
            "--out",
            str(existing_file(w)),
        ],
        "existing file",
    ),
    (
        "eval-seed-too-large",
        lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--seed", str(2**65)],
        "--seed",
    ),
    (
        "eval-threads-negative",
        lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--threads", "-2"],
        "--threads",
    ),
    (
        "eval-guidance-inf",
        lambda r, w: ["eval", "--ckpt", str(r), "--out", str(w / "e"), "--guidance", "-inf"],
        "--guidance",
    ),
    (
        "eval-floor-threads-negative",
        lambda r, w: [
            "eval",
            "floor",
            "--classifier",
            str(w / "none.safetensors"),
            "--threads",
            "-1",
        ],
        "--threads",
    ),
    # -- bench / demo / tokenizer ------------------------------------------------------------------
    (
        "bench-width-zero",
        lambda r, w: ["bench", "train", "--width", "0", "--out", str(w / "b")],
        "--width",
    ),
    (
        "bench-batch-negative",
        lambda r, w: ["bench", "sampling", "--batch", "-1", "--out", str(w / "b")],
        "--batch",
    ),
    (
        "bench-threads-negative",
        lambda r, w: ["bench", "memory", "--threads", "-1", "--out", str(w / "b")],
        "--threads",
    ),
    (
        "bench-repeats-zero",
        lambda r, w: ["bench", "train", "--repeats", "0", "--out", str(w / "b")],
        "--repeats",
    ),
    (
        "bench-device-unknown",
        lambda r, w: ["bench", "train", "--device", "gpu0", "--out", str(w / "b")],
        "unknown device",
    ),
    (
        "bench-out-is-a-file",
        lambda r, w: ["bench", "train", "--out", str(existing_file(w))],
        "existing file",
    ),
    (
        "demo-per-class-zero",
        lambda r, w: ["demo", "--per-class", "0", "--out", str(w / "d")],
        "--per-class",
    ),
    ("demo-seed-negative", lambda r, w: ["demo", "--seed", "-1", "--out", str(w / "d")], "--seed"),
    ("demo-out-is-a-file", lambda r, w: ["demo", "--out", str(existing_file(w))], "existing file"),
    (
        "tokenizer-steps-zero",
        lambda r, w: [
            "tokenizer",
            "train",
            "fmnist_masked",
            "tokenizer.steps=0",
            "--out",
            str(w / "t"),
        ],
        "tokenizer.steps",
    ),
    (
        "tokenizer-out-is-a-file",
        lambda r, w: ["tokenizer", "train", "fmnist_masked", "--out", str(existing_file(w))],
        "existing file",
    ),
]


# -- unbounded sizes: one line naming the value and the limit (a memory estimate where one applies)
def sample_args(r, w, *extra):
    return ["sample", "--ckpt", str(r), "--out", str(w / "o"), "--no-progress", *extra]


def claims_width(width: int):
    def prepare(toy_run, where):
        ckpt = checkpoint_copy(toy_run, where)
        cfg = ckpt / "config.yaml"
        cfg.write_text(cfg.read_text().replace("width: 32", f"width: {width}"))
        return ckpt

    return prepare


def calibration(where: Path, obj) -> Path:
    path = where / "calibration.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def calibrated(loops) -> dict:
    return {"points": [{"loops": loops, "fd_cls": 1.0, "latency_ms": 5.0, "gflops": 1.0}]}


SIZE_CASES = [
    ("sample-num-1e12", lambda r, w: sample_args(r, w, "--num", str(10**12)), "more than the"),
    (
        "sample-loops-range-1e5",
        lambda r, w: sample_args(r, w, "--loops", "1-100000"),
        "at most 1024",
    ),
    ("sample-loops-1e8", lambda r, w: sample_args(r, w, "--loops", "100000000"), "at most 1024"),
    (
        "sample-loops-exit-max-1e8",
        lambda r, w: sample_args(r, w, "--loops", "exit:0:2-100000000"),
        "at most 1024",
    ),
    (
        "sample-loops-exit-min-1e8",
        lambda r, w: sample_args(r, w, "--loops", "exit:0:100000000-"),
        "at most 1024",
    ),
    ("sample-loops-past-ceiling", lambda r, w: sample_args(r, w, "--loops", "13"), "at most 12"),
    ("sample-ramp-past-ceiling", lambda r, w: sample_args(r, w, "--loops", "1:40"), "at most 12"),
    (
        "sample-exit-past-ceiling",
        lambda r, w: sample_args(r, w, "--loops", "exit:0.1:2-99"),
        "at most 12",
    ),
    (
        "sample-segment-steps-1e9",
        lambda r, w: sample_args(r, w, "--loops", "1x1000000000"),
        "at most 10000",
    ),
    (
        "sample-many-points",
        lambda r, w: sample_args(r, w, "--loops", ",".join(f"exit:0.{i}" for i in range(300))),
        "more than 256",
    ),
    ("sample-steps-1e8", lambda r, w: sample_args(r, w, "--steps", "100000000"), "--steps"),
    (
        "sample-batch-1e9",
        lambda r, w: sample_args(r, w, "--batch-size", "1000000000"),
        "--batch-size",
    ),
    (
        "sample-calibration-1e8-loops",
        lambda r, w: sample_args(
            r, w, "--quality", "5", "--calibration", str(calibration(w, calibrated("100000000")))
        ),
        "at most 1024",
    ),
    (
        "sample-calibration-past-ceiling",
        lambda r, w: sample_args(
            r, w, "--quality", "5", "--calibration", str(calibration(w, calibrated(40)))
        ),
        "at most 12",
    ),
    (
        "sample-claims-width",
        lambda r, w: sample_args(claims_width(3_200_000)(r, w), w),
        "model.width=3200000",
    ),
    ("info-claims-width", lambda r, w: ["info", str(claims_width(3_200_000)(r, w))], "needs about"),
    (
        "export-claims-width",
        lambda r, w: [
            "export",
            "--ckpt",
            str(claims_width(3_200_000)(r, w)),
            "--out",
            str(w / "x"),
        ],
        "model.width",
    ),
    (
        "calibrate-num-1e12",
        lambda r, w: ["calibrate", "--ckpt", str(r), "--out", str(w / "c"), "--num", str(10**12)],
        "--num",
    ),
    (
        "calibrate-loops-1e8",
        lambda r, w: ["calibrate", "--ckpt", str(r), "--out", str(w / "c"), "--loops", "100000000"],
        "at most 1024",
    ),
    (
        "calibrate-loops-past-ceiling",
        lambda r, w: ["calibrate", "--ckpt", str(r), "--out", str(w / "c"), "--loops", "2,50"],
        "at most 12",
    ),
    (
        "eval-num-1e12",
        lambda r, w: [
            "eval",
            "--ckpt",
            str(r),
            "--loops",
            "1",
            "--num",
            str(10**12),
            "--out",
            str(w / "e"),
        ],
        "--num",
    ),
    (
        "eval-loops-past-ceiling",
        lambda r, w: ["eval", "--ckpt", str(r), "--loops", "1,50", "--out", str(w / "e")],
        "at most 12",
    ),
    (
        "eval-steps-1e8",
        lambda r, w: ["eval", "--ckpt", str(r), "--steps", "4,100000000", "--out", str(w / "e")],
        "--steps",
    ),
    ("eval-floor-num-1e8", lambda r, w: ["eval", "floor", "--num", "100000000"], "at most 60000"),
    (
        "eval-train-classifier-floor-1e8",
        lambda r, w: [
            "eval",
            "train-classifier",
            "--out",
            str(w / "k"),
            "--floor-num",
            "100000000",
        ],
        "--floor-num",
    ),
    (
        "demo-per-class-1e9",
        lambda r, w: ["demo", "--per-class", "1000000000", "--out", str(w / "d")],
        "at most 1000",
    ),
    ("demo-jobs-1e6", lambda r, w: ["demo", "--jobs", "1000000", "--out", str(w / "d")], "--jobs"),
    (
        "bench-batches-range-1e5",
        lambda r, w: ["bench", "sampling", "--batches", "1-100000", "--out", str(w / "b")],
        "--batches",
    ),
    (
        "bench-batches-huge",
        lambda r, w: ["bench", "sampling", "--batches", "1,100000000", "--out", str(w / "b")],
        "--batches",
    ),
    (
        "bench-width-2e6",
        lambda r, w: ["bench", "train", "--width", "2000000", "--out", str(w / "b")],
        "needs about",
    ),
    (
        "bench-memory-width-2e6",
        lambda r, w: [
            "bench",
            "memory",
            "--width",
            "2000000",
            "--heads",
            "1000",
            "--out",
            str(w / "b"),
        ],
        "needs about",
    ),
    (
        "bench-tokens-1e9",
        lambda r, w: ["bench", "train", "--tokens", "1000000000", "--out", str(w / "b")],
        "--tokens",
    ),
    (
        "bench-max-loops-1e8",
        lambda r, w: ["bench", "train", "--max-loops", "100000000", "--out", str(w / "b")],
        "--max-loops",
    ),
    (
        "bench-repeats-1e9",
        lambda r, w: ["bench", "train", "--repeats", "1000000000", "--out", str(w / "b")],
        "--repeats",
    ),
    (
        "threads-1e9",
        lambda r, w: ["--threads", "1000000000", "demo", "--out", str(w / "d")],
        "--threads",
    ),
    (
        "train-width-2e6",
        lambda r, w: train_args(w, "model.width=2000000", "model.heads=2000"),
        "needs about",
    ),
    (
        "train-width-65536",
        lambda r, w: train_args(w, "model.width=65536", "model.heads=64"),
        "needs about",
    ),
    (
        "train-image-size-1e6",
        lambda r, w: train_args(w, "data.image_size=1000000"),
        "data.image_size",
    ),
    ("train-steps-past-int64", lambda r, w: train_args(w, f"train.steps={2**70}"), "train.steps"),
    ("train-loops-1e5", lambda r, w: train_args(w, "model.loops=100000"), "model.loops"),
    (
        "train-sampling-loops-past-ceiling",
        lambda r, w: train_args(w, "sampling.loops=100"),
        "sampling.loops",
    ),
    (
        "train-sample-loops-past-ceiling",
        lambda r, w: train_args(w, "logging.sample_loops=[1,100]"),
        "logging.sample_loops",
    ),
    (
        "train-batch-2e30",
        lambda r, w: train_args(w, f"train.batch_size={2**30}"),
        "train.batch_size",
    ),
    ("train-frames-1e6", lambda r, w: train_args(w, "data.frames=1000000"), "data.frames"),
    (
        "tokenizer-levels-huge",
        lambda r, w: train_args(w, "tokenizer.levels=[100000000]"),
        "tokenizer.levels",
    ),
]


# -- every field of every config section: a bad value of each, from the rules ----------------------
def _bad_values(rule) -> list:
    from elt.limits import Choice, Flag, Floats, Ints, Range, Text

    if isinstance(rule, Range):
        values = []
        if rule.lo is not None:
            values.append(
                rule.lo - 1 if rule.integer else (rule.lo if rule.lo_open else rule.lo - 0.5)
            )
        if rule.hi is not None:
            values.append(
                rule.hi + 1 if rule.integer else (rule.hi if rule.hi_open else rule.hi + 0.5)
            )
        return values + ([] if rule.integer else [float("nan")])
    if isinstance(rule, Choice):
        return ["bogus-choice"]
    if isinstance(rule, Text):
        return ["", "  "]
    if isinstance(rule, Flag):
        return ["maybe"]
    if isinstance(rule, Ints):
        return [[0], [rule.hi + 1]] + ([[]] if rule.min_len else [])
    if isinstance(rule, Floats):
        return [[0.5] * (rule.length - 1), [2.0] * rule.length]
    return []  # Any_: fields checked elsewhere, with cases of their own below


def field_yaml(key: str, value):
    def build(toy_run, where):
        import yaml

        section, name = key.split(".")
        path = where / "bad.yaml"
        path.write_text(yaml.safe_dump({"paradigm": "toy", section: {name: value}}))
        toy = [o for o in TOY_OVERRIDES if not o.startswith(f"{key}=")]
        out = [] if key == "train.out_dir" else [f"train.out_dir={where / 'run'}"]
        steps = [] if key == "train.steps" else ["train.steps=2"]
        return [
            "train",
            str(path),
            "--no-progress",
            *toy,
            *steps,
            "logging.tensorboard=false",
            *out,
        ]

    return build


def _config_field_cases() -> list:
    from elt.config import config_rules

    return [
        (f"config-{key}-{value!r}", field_yaml(key, value), key)
        for key, rule in sorted(config_rules().items())
        for value in _bad_values(rule)
    ]


def yaml_text(text: str):
    def build(toy_run, where):
        (where / "bad.yaml").write_text(text)
        return ["train", str(where / "bad.yaml"), "--no-progress", f"train.out_dir={where / 'run'}"]

    return build


CONFIG_CASES = [
    *_config_field_cases(),
    ("config-top-level-list", yaml_text("- 1\n- 2\n"), "mapping of sections"),
    ("config-top-level-scalar", yaml_text("hello\n"), "unknown config key"),
    (
        "config-betas-one-value",
        lambda r, w: train_args(w, "optimizer.betas=[0.9]"),
        "optimizer.betas",
    ),
    (
        "config-betas-three-values",
        lambda r, w: train_args(w, "optimizer.betas=[0.9,0.9,0.9]"),
        "optimizer.betas",
    ),
    ("config-betas-text", lambda r, w: train_args(w, "optimizer.betas=[a,b]"), "optimizer.betas"),
    (
        "config-lambda-start-negative",
        lambda r, w: train_args(w, "ilsd.lambda_start=-0.5"),
        "ilsd.lambda_start",
    ),
    ("config-mlp-ratio-zero", lambda r, w: train_args(w, "model.mlp_ratio=0"), "model.mlp_ratio"),
    (
        "config-mlp-ratio-negative",
        lambda r, w: train_args(w, "model.mlp_ratio=-2"),
        "model.mlp_ratio",
    ),
    ("config-one-class", lambda r, w: train_args(w, "data.num_classes=1"), "data.num_classes"),
    (
        "config-class-names-repeated",
        lambda r, w: train_args(w, "data.num_classes=2", "data.class_names=[cat,cat]"),
        "data.class_names",
    ),
    (
        "config-class-names-count",
        lambda r, w: train_args(w, "data.class_names=[cat,dog]"),
        "data.class_names has 2 names but data.num_classes=",
    ),
    (
        "config-tokenizer-kind-unknown",
        lambda r, w: train_args(w, "tokenizer.kind=vqgan"),
        "tokenizer.kind",
    ),
    ("config-out-dir-empty", lambda r, w: train_args(w, "train.out_dir="), "train.out_dir"),
    ("config-out-dir-blank", lambda r, w: train_args(w, "train.out_dir=' '"), "train.out_dir"),
    ("config-device-garbage", lambda r, w: train_args(w, "train.device=cuda:x"), "train.device"),
    ("config-seed-text", lambda r, w: train_args(w, "train.seed=abc"), "train.seed"),
    (
        "config-video-seed-negative",
        lambda r, w: train_args(w, "data.video_seed=-1"),
        "data.video_seed",
    ),
    ("config-preset-unknown", lambda r, w: train_args(w, "model.preset=ELT-Q-1x1"), "ELT-Q-1x1"),
    ("config-paradigm-unknown", lambda r, w: train_args(w, "paradigm=gan"), "paradigm"),
    (
        "config-sampling-loops-garbage",
        lambda r, w: train_args(w, "sampling.loops=fast"),
        "sampling.loops",
    ),
    (
        "config-micro-batch-over-batch",
        lambda r, w: train_args(w, "train.micro_batch_size=64"),
        "train.micro_batch_size",
    ),
    (
        "config-accum-over-batch",
        lambda r, w: train_args(w, "train.grad_accum_steps=64"),
        "train.grad_accum_steps",
    ),
    ("config-heads-not-dividing", lambda r, w: train_args(w, "model.heads=3"), "divisible"),
]


# -- the shared argument checks, in every command that takes the argument --------------------------
def garbage_file(where: Path, name: str = "garbage.safetensors") -> Path:
    path = where / name
    path.write_bytes(os.urandom(2000))
    return path


def cal_sample(obj):
    return lambda r, w: sample_args(
        r, w, "--quality", "5", "--calibration", str(calibration(w, obj))
    )


def calibrate_args(r, w, *extra):
    return ["calibrate", "--ckpt", str(r), "--out", str(w / "c"), "--no-progress", *extra]


def eval_args(r, w, *extra):
    return [
        "eval",
        "--ckpt",
        str(r),
        "--loops",
        "1",
        "--out",
        str(w / "e"),
        "--no-progress",
        "--no-latency",
        *extra,
    ]


ARG_CASES = [
    *[
        (f"{cmd}-guidance-{v}", build, "--guidance")
        for v in ("nan", "inf", "-inf", "lots")
        for cmd, build in (
            ("calibrate", lambda r, w, v=v: calibrate_args(r, w, "--guidance", v)),
            ("sample", lambda r, w, v=v: sample_args(r, w, "--guidance", v)),
            ("eval", lambda r, w, v=v: eval_args(r, w, "--guidance", v)),
        )
    ],
    *[
        (f"{cmd}-seed-{v}", build, "--seed")
        for v in ("-5", str(2**64), "1.5")
        for cmd, build in (
            ("calibrate", lambda r, w, v=v: calibrate_args(r, w, "--seed", v)),
            ("sample", lambda r, w, v=v: sample_args(r, w, "--seed", v)),
            ("eval", lambda r, w, v=v: eval_args(r, w, "--seed", v)),
            ("demo", lambda r, w, v=v: ["demo", "--out", str(w / "d"), "--seed", v]),
            (
                "train-classifier",
                lambda r, w, v=v: ["eval", "train-classifier", "--out", str(w / "k"), "--seed", v],
            ),
        )
    ],
    *[
        (f"{cmd}-num-{v}", build, "--num")
        for v in ("0", "-3", "ten")
        for cmd, build in (
            ("calibrate", lambda r, w, v=v: calibrate_args(r, w, "--num", v)),
            ("sample", lambda r, w, v=v: sample_args(r, w, "--num", v)),
            ("eval", lambda r, w, v=v: eval_args(r, w, "--num", v)),
        )
    ],
    *[
        (f"{cmd}-batch-size-0", build, "--batch-size")
        for cmd, build in (
            ("calibrate", lambda r, w: calibrate_args(r, w, "--batch-size", "0")),
            ("sample", lambda r, w: sample_args(r, w, "--batch-size", "0")),
            ("eval", lambda r, w: eval_args(r, w, "--batch-size", "0")),
        )
    ],
    *[
        (f"{cmd}-steps-0", build, "--steps")
        for cmd, build in (
            ("calibrate", lambda r, w: calibrate_args(r, w, "--steps", "0")),
            ("sample", lambda r, w: sample_args(r, w, "--steps", "0")),
            ("eval", lambda r, w: eval_args(r, w, "--steps", "4,0")),
        )
    ],
    *[
        (f"{cmd}-out-{label}", build, expected)
        for label, out, expected in (
            ("empty", "", "empty path"),
            ("blank", "   ", "empty path"),
            ("proc", "/proc/elt-test", "/proc"),
            ("sys", "/sys/elt-test", "/sys"),
            ("dev", "/dev/elt-test", "/dev"),
        )
        for cmd, build in (
            ("sample", lambda r, w, o=out: ["sample", "--ckpt", str(r), "--out", o]),
            ("export", lambda r, w, o=out: ["export", "--ckpt", str(r), "--out", o]),
            ("calibrate", lambda r, w, o=out: ["calibrate", "--ckpt", str(r), "--out", o]),
            ("eval", lambda r, w, o=out: ["eval", "--ckpt", str(r), "--out", o]),
            (
                "eval-merge",
                lambda r, w, o=out: ["eval", "merge", str(json_file(w, {})), "--out", o],
            ),
            ("bench", lambda r, w, o=out: ["bench", "train", "--out", o]),
            ("demo", lambda r, w, o=out: ["demo", "--out", o]),
            ("tokenizer", lambda r, w, o=out: ["tokenizer", "train", "fmnist_masked", "--out", o]),
        )
    ],
    ("export-out-dot", lambda r, w: ["export", "--ckpt", str(r), "--out", "."], "current folder"),
    ("export-out-parent", lambda r, w: ["export", "--ckpt", str(r), "--out", ".."], "not empty"),
    ("sample-budget-nan", lambda r, w: sample_args(r, w, "--budget-ms", "nan"), "--budget-ms"),
    ("sample-quality-inf", lambda r, w: sample_args(r, w, "--quality", "inf"), "--quality"),
    ("eval-too-few-for-knn", lambda r, w: eval_args(r, w, "--num", "3"), "too few"),
    ("eval-floor-too-few-for-knn", lambda r, w: ["eval", "floor", "--num", "2"], "too few"),
    (
        "eval-floor-garbage-classifier",
        lambda r, w: ["eval", "floor", "--num", "10", "--classifier", str(garbage_file(w))],
        "--classifier",
    ),
    (
        "eval-floor-json-classifier",
        lambda r, w: ["eval", "floor", "--num", "10", "--classifier", str(json_file(w, {"a": 1}))],
        "--classifier",
    ),
    (
        "eval-latency-batch-0",
        lambda r, w: eval_args(r, w, "--latency-batch", "0"),
        "--latency-batch",
    ),
    (
        "eval-latency-repeats-0",
        lambda r, w: eval_args(r, w, "--latency-repeats", "0"),
        "--latency-repeats",
    ),
    (
        "calibrate-latency-repeats-0",
        lambda r, w: calibrate_args(r, w, "--latency-repeats", "0"),
        "--latency-repeats",
    ),
    (
        "train-classifier-epochs-0",
        lambda r, w: ["eval", "train-classifier", "--out", str(w / "k"), "--epochs", "0"],
        "--epochs",
    ),
    (
        "video-real-num-0",
        lambda r, w: ["eval", "video", "--samples", str(w), "--real-num", "0"],
        "--real-num",
    ),
    ("demo-jobs-0", lambda r, w: ["demo", "--jobs", "0", "--out", str(w / "d")], "--jobs"),
    (
        "demo-per-class-text",
        lambda r, w: ["demo", "--per-class", "many", "--out", str(w / "d")],
        "--per-class",
    ),
    ("app-concurrency-0", lambda r, w: ["app", "--concurrency", "0"], "--concurrency"),
    (
        "bench-warmup-negative",
        lambda r, w: ["bench", "train", "--warmup", "-1", "--out", str(w / "b")],
        "--warmup",
    ),
    (
        "bench-sample-steps-negative",
        lambda r, w: ["bench", "sampling", "--sample-steps", "-1", "--out", str(w / "b")],
        "--sample-steps",
    ),
    (
        "bench-batches-zero",
        lambda r, w: ["bench", "sampling", "--batches", "0,4", "--out", str(w / "b")],
        "--batches",
    ),
    ("sample-calibration-a-list", cal_sample([1, 2]), "not a calibration"),
    ("sample-calibration-points-not-list", cal_sample({"points": 5}), "points"),
    ("sample-calibration-no-loops", cal_sample({"points": [{"fd_cls": 1}]}), "loops"),
    ("sample-calibration-bad-loops", cal_sample(calibrated("fast")), "invalid loops"),
    (
        "sample-calibration-text-figure",
        cal_sample({"points": [{"loops": 2, "fd_cls": "x"}]}),
        "fd_cls",
    ),
    ("sample-calibration-no-fd", cal_sample({"points": [{"loops": 2}]}), "FD_cls"),
    ("sample-calibration-not-json", cal_sample("{not json"), "cannot read"),
    (
        "sample-calibration-binary",
        lambda r, w: sample_args(
            r, w, "--quality", "5", "--calibration", str(garbage_file(w, "calibration.json"))
        ),
        "cannot read",
    ),
]


def json_file(where: Path, obj) -> Path:
    path = where / "in.json"
    path.write_text(json.dumps(obj))
    return path


ALL_CASES = CASES + SIZE_CASES + CONFIG_CASES + ARG_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case, toy_run, tmp_path, capsys, monkeypatch
):
    name, build, expected = case
    if "cuda:7" in name or "missing-gpu" in name:
        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    monkeypatch.setenv("ELT_TEST_SECRET", "hunter2-secret-value")
    where = tmp_path / "case"
    where.mkdir()
    monkeypatch.chdir(where)
    argv = build(toy_run, where)
    before = snapshot(where)
    run_before = snapshot(toy_run)
    capsys.readouterr()
    start = time.perf_counter()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only" not in err and "hunter2" not in err
    assert expected in lines[0], lines[0]
    assert snapshot(where) == before, "files were written"
    assert snapshot(toy_run) == run_before
    assert seconds < REFUSAL_SECONDS, f"refused after {seconds:.1f} s"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_out_dir_is_refused_before_work(toy_run, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["sample", "--ckpt", str(toy_run), "--out", str(locked / "o")]) == 2
        train_status = main(train_args(tmp_path, f"train.out_dir={locked / 'run'}"))
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert train_status == 2 and len(err) == 2 and all("not writable" in line for line in err)
    assert list(locked.iterdir()) == []


def test_empty_elt_data_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    from elt.data import fashion_mnist
    from elt.data.fashion_mnist import DataNotFoundError, load_arrays

    monkeypatch.setattr(fashion_mnist, "_torchvision_download", lambda root: None)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ELT_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="empty"):
        load_arrays()
    monkeypatch.setenv("ELT_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="ELT_DATA=.*missing.*is not a directory"):
        load_arrays()
    monkeypatch.delenv("ELT_DATA")
    with pytest.raises(DataNotFoundError, match="data.root=.*missing"):
        load_arrays(tmp_path / "missing")


def test_every_config_field_has_a_rule_and_a_bad_value_case():
    """A field added to any section (shared or a paradigm's) without a check fails here."""
    from elt.config import _all_keys, config_rules, config_schema
    from elt.limits import Any_

    rules = config_rules()
    assert set(_all_keys(config_schema(), "")) == set(rules)
    checked_elsewhere = {key for key, rule in rules.items() if isinstance(rule, Any_)}
    assert checked_elsewhere == {
        "paradigm",
        "model.preset",
        "train.seed",
        "train.device",
        "logging.sample_loops",
        "sampling.loops",
        "optimizer.weight_decay_exempt",
        "data.class_names",
    }
    generated = {
        case[2] for case in CONFIG_CASES if case[0].startswith("config-") and case[2] in rules
    }
    assert generated | checked_elsewhere == set(rules)


def toy_train(where: Path, *overrides) -> list[str]:
    return train_args(where, f"train.out_dir={where / 'run'}", *overrides)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["lr_schedule.warmup_steps=50"], "lr_schedule.warmup_steps=50 is longer than the run"),
        (
            ["data.limit=8", "lr_schedule.warmup_steps=0"],
            "train.batch_size=16 is larger than the data (8 items)",
        ),
        (
            ["data.limit=1", "train.batch_size=1", "lr_schedule.warmup_steps=0"],
            "data.limit=1 keeps fewer training items",
        ),
    ],
)
def test_advice_is_one_warning_line_and_the_run_goes_on(overrides, expected, tmp_path, capsys):
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    capsys.readouterr()
    assert main(toy_train(tmp_path, *overrides)) == 0
    warnings = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("elt: warning:")
    ]
    assert len(warnings) == 1 and warnings[0].startswith(f"elt: warning: {expected}"), warnings
    assert (tmp_path / "run" / "checkpoints" / "step_0000002").is_dir()


def test_a_sound_run_gets_no_advice(tmp_path, capsys):
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    capsys.readouterr()
    assert main(toy_train(tmp_path, "lr_schedule.warmup_steps=1", "train.steps=6")) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_diverging_run_is_warned_once_naming_the_step(tmp_path, capsys):
    """optimizer.lr=30 on the toy task: the loss jumps from 1.4 to ~1e7 at step 2 and stays there
    (no NaN, exit 0 before): one warning naming that step, and the run goes on."""
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    capsys.readouterr()
    status = main(
        toy_train(
            tmp_path,
            "optimizer.lr=30",
            "lr_schedule.warmup_steps=0",
            "optimizer.grad_clip=0",
            "train.steps=6",
            "logging.every=1",
        )
    )
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("elt: warning:") and "diverging" in line  # not the summary's run path
    ]
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert status == 0
    first_past = next(i for i, loss in enumerate(losses, start=1) if loss > 100 * losses[0])
    assert len(err) == 1 and f"at step {first_past} " in err[0] and "optimizer.lr" in err[0], err


def test_divergence_watch_bound_and_once():
    from elt.train.advice import DivergenceWatch

    watch = DivergenceWatch()
    assert watch.update(1, 1.4) is None  # the reference
    assert watch.update(2, 139.0) is None  # below 100 x 1.4
    assert (
        watch.update(3, float("nan")) is None
    )  # non-finite losses are the trainer's error, not a warning
    message = watch.update(4, 2e21, lr=1e9)
    assert "at step 4" in message and "140" in message
    assert watch.update(5, 3e21) is None  # once
    tiny = DivergenceWatch()
    tiny.update(1, 1e-6)
    assert (
        tiny.update(2, 0.5) is None and tiny.update(3, 1.5) is not None
    )  # a tiny first loss counts as 0.01


@pytest.mark.parametrize("loops", [10**8, "exit:0:2-99", "1:50", [1, 2, 40]])
def test_the_api_refuses_loops_past_the_ceiling_before_sampling(loops):
    """elt.load(...).generate: the loop ceiling (4·L_max, at least 8) holds for every caller, not
    only the CLI."""
    import elt
    from elt.errors import UserError

    generator = elt.load("demo:masked")
    ceiling = (
        1024 if loops == 10**8 else max(4 * generator.trained_loops, 8)
    )  # any model's, then this one's
    with pytest.raises(UserError, match=f"at most {ceiling} "):
        generator.generate([0], loops=loops, steps=3)
