"""The quality-vs-compute sweep and ``elt eval`` on a trained tiny checkpoint (the tests' toy
paradigm), with an injected metric suite for its 4×4 images."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import elt
from conftest import TOY_OVERRIDES
from elt.cli import main
from elt.config import load_config
from elt.eval import suites
from elt.eval.classifier import Features
from elt.eval.sweep import SweepModel, read_samples, run_sweep, write_outputs
from elt.sampling import sample_to_disk
from elt.train.trainer import train
from toy_task import ToyGenerator

NUM_CLASSES = 4


class TemplateExtractor:
    """Features = pixels; logits = minus the distance to each class template (a nearest-template
    classifier)."""

    name = "toy-templates"

    def __init__(self):
        from toy_task import template_uint8

        self.templates = template_uint8(NUM_CLASSES).reshape(NUM_CLASSES, -1).astype(np.float32)

    def __call__(self, images, progress=False):
        x = images.reshape(len(images), -1).astype(np.float32)
        d = ((x[:, None] - self.templates[None]) ** 2).sum(-1)
        return Features(x / 255.0, -d)

    def provenance(self):
        return {"extractor": self.name, "sha256": "0" * 64}


def toy_suite(seed=0):
    from toy_task import template_uint8

    rng = np.random.default_rng(seed)

    def noisy(n):
        labels = np.arange(n) % NUM_CLASSES
        images = template_uint8(NUM_CLASSES)[labels] + rng.normal(0, 6, (n, 4, 4, 1))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    ref_images, ref_labels = noisy(400)
    floor_images, _ = noisy(400)
    return suites.DomainSuite(
        TemplateExtractor(),
        suites.Reference("toy templates + noise", ref_images, ref_labels),
        floor_images=floor_images,
        k=3,
        kid_subsets=5,
        kid_subset_size=100,
    )


@pytest.fixture
def toy_runs(toy_runs_300):
    """An ILSD and a vanilla toy checkpoint (trained once per session, shared with
    test_trainer.py: conftest.toy_runs_300)."""
    return toy_runs_300


def test_sweep_writes_json_csv_png_with_provenance(toy_runs, toy_paradigm, tmp_path):
    models = [
        SweepModel("elt", elt.load(toy_runs / "ilsd"), checkpoint=str(toy_runs / "ilsd")),
        SweepModel("vanilla", elt.load(toy_runs / "vanilla"), checkpoint=str(toy_runs / "vanilla")),
    ]
    result = run_sweep(
        models,
        toy_suite(),
        loops=[1, 2, 3],
        num=64,
        batch_size=16,
        latency_repeats=2,
        progress=False,
    )
    paths = write_outputs(result, tmp_path / "out")

    data = json.loads(paths["json"].read_text())
    prov = data["provenance"]
    assert prov["extractor"] == "toy-templates" and prov["sha256"] == "0" * 64
    assert (
        prov["n"] == 64
        and prov["loops"] == [1, 2, 3]
        and prov["seed"] == 0
        and prov["steps"] == [None]
    )
    assert prov["steps_used"] == []  # the toy samples in one step and configures none
    assert "balanced" in prov["label_policy"] and prov["threads"] >= 1
    assert [(r["model"], r["loops"]) for r in data["rows"]] == [
        (m, k) for m in ("elt", "vanilla") for k in (1, 2, 3)
    ]
    for row in data["rows"]:
        assert (
            row["latency_ms"] > 0
            and row["ms_per_sample"] > 0
            and row["peak_mem_kind"] == "cpu_rss_growth"
        )
        assert row["peak_mem_mib"] is None or row["peak_mem_mib"] > 0  # not measured, never "0 MiB"
        assert {
            "fd_cls",
            "kid",
            "precision",
            "recall",
            "density",
            "coverage",
            "class_acc",
        } <= row.keys()
    gflops = [r["gflops"] for r in data["rows"][:3]]
    assert gflops[0] < gflops[1] < gflops[2] and gflops[2] == pytest.approx(3 * gflops[0], rel=0.05)
    assert data["floor"]["n"] == 64 and data["floor"]["fd_cls"] >= 0

    # ILSD makes every loop count usable; vanilla looping is worse at L=1 than at L=L_max
    by = {(r["model"], r["loops"]): r for r in data["rows"]}
    assert all(by[("elt", k)]["class_acc"] >= 0.8 for k in (1, 2, 3))
    assert by[("vanilla", 1)]["fd_cls"] > by[("vanilla", 3)]["fd_cls"]
    assert by[("elt", 1)]["fd_cls"] < by[("vanilla", 1)]["fd_cls"]

    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and float(rows[0]["fd_cls"]) == pytest.approx(data["rows"][0]["fd_cls"])
    image = Image.open(paths["png"])
    image.verify()
    assert image.size[0] > 600 and image.size[1] > 400


def test_provenance_says_which_steps_a_default_request_used(toy_runs, toy_paradigm):
    """``steps`` in the provenance is the request (null: each checkpoint's default); ``steps_used``
    is what the rows ran with, resolved from the checkpoint's ``sampling.steps``."""
    from omegaconf import OmegaConf

    gen = elt.load(toy_runs / "ilsd")
    OmegaConf.update(gen.config, "sampling.steps", 7, force_add=True)
    result = run_sweep(
        [SweepModel("elt", gen)],
        toy_suite(),
        loops=[1, 2],
        num=16,
        batch_size=16,
        measure=False,
        progress=False,
    )
    prov = result["provenance"]
    assert prov["steps"] == [None] and prov["steps_used"] == [7]
    assert [r["steps"] for r in result["rows"]] == [7, 7]
    explicit = run_sweep(
        [SweepModel("elt", gen)],
        toy_suite(),
        loops=[1],
        steps=[3],
        num=16,
        batch_size=16,
        measure=False,
        progress=False,
    )["provenance"]
    assert explicit["steps"] == [3] and explicit["steps_used"] == [3]


def test_sweep_reads_elt_sample_output_identically(toy_runs, toy_paradigm, tmp_path):
    generator = elt.load(toy_runs / "ilsd")
    sample_to_disk(
        generator, [1, 3], 40, tmp_path / "samples", seed=5, batch_size=16, progress=False
    )
    images, labels, meta = read_samples(tmp_path / "samples", 3)
    assert images.shape == (40, 4, 4, 1) and meta["seed"] == 5
    suite = toy_suite()
    from_files = run_sweep(
        [SweepModel("files", samples_dir=tmp_path / "samples")],
        suite,
        [1, 3],
        num=40,
        progress=False,
    )
    fresh = run_sweep(
        [SweepModel("fresh", generator)],
        suite,
        [1, 3],
        num=40,
        seed=5,
        batch_size=16,
        measure=False,
        progress=False,
    )
    for a, b in zip(from_files["rows"], fresh["rows"], strict=True):
        assert (
            a["fd_cls"] == pytest.approx(b["fd_cls"], rel=1e-12)
            and a["class_acc"] == b["class_acc"]
        )
        assert a.get("gflops") is None and b["gflops"] > 0
    with pytest.raises(FileNotFoundError, match="samples_L2.npz"):
        read_samples(tmp_path / "samples", 2)
    write_outputs(
        from_files, tmp_path / "quality_only"
    )  # no GFLOPs/latency: the plot still renders
    Image.open(tmp_path / "quality_only" / "eval.png").verify()


PEAK_SCRIPT = """
import torch
from elt.eval.sweep import PeakMemory
with PeakMemory(torch.device("cpu")) as memory:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    block.add_(1)
    del block
print(memory.peak_mib)
"""


def test_peak_memory_sees_a_large_allocation():
    # A fresh process: in a long pytest process the allocator may serve the block from pages it
    # already holds, and RSS (the CPU measure) then does not grow; the mechanism is what is tested
    # here.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) > 32


RESIDENT_SCRIPT = """
import torch
from elt.eval.sweep import PeakMemory
# 64 MiB, resident before the window (like a warm-up's working set)
block = torch.ones(64 * 2**20 // 4)
block.add_(1)  # the warm-up call (the first op sets up torch's CPU kernels)
with PeakMemory(torch.device("cpu")) as memory:
    block.add_(1)  # in place: the RSS cannot grow, so there is nothing to measure
print(memory.peak_mib)
"""


def test_cpu_peak_memory_is_none_not_zero_where_the_rss_did_not_grow():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", RESIDENT_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "None"


def test_unmeasured_peak_memory_is_n_a_in_the_table_and_null_in_json(tmp_path, capsys):
    from elt.cli.eval import print_table

    rows = [
        {
            "model": "a",
            "loops": 1,
            "fd_cls": 2.0,
            "peak_mem_mib": None,
            "peak_mem_kind": "cpu_rss_growth",
        },
        {
            "model": "a",
            "loops": 2,
            "fd_cls": 1.0,
            "peak_mem_mib": 12.5,
            "peak_mem_kind": "cpu_rss_growth",
        },
        {"model": "files", "loops": 1, "fd_cls": 3.0},
    ]  # read from samples: no memory measurement at all
    result = {
        "provenance": {"n": 8},
        "floor": None,
        "plot_metrics": [["fd_cls", "FD_cls"]],
        "rows": rows,
    }
    print_table(result)
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    column = table[0].index("peak_mem_mib")
    assert [line[column] for line in table[1:]] == ["n/a", "12.5", "-"]
    assert not any(cell in ("0", "0.0") for line in table for cell in line)
    write_outputs({**result, "floor": {}}, tmp_path)
    assert json.loads((tmp_path / "eval.json").read_text())["rows"][0]["peak_mem_mib"] is None


QUALITY_KEYS = ("fd_cls", "kid", "precision", "recall", "density", "coverage", "class_acc")


def test_the_python_api_sweep_is_what_the_cli_writes(toy_runs, toy_paradigm, tmp_path, monkeypatch):
    """elt.eval.run.evaluate called directly (no CLI) gives the rows ``elt eval`` writes for the
    same models, loops, seed and suite; the API also writes the same files."""
    from elt.eval.run import SweepRequest, evaluate

    ckpts = [str(toy_runs / "ilsd"), str(toy_runs / "vanilla")]
    request = SweepRequest(
        ckpts=ckpts, loops="1-3", num=32, batch_size=16, seed=3, latency=False, progress=False
    )
    result = evaluate(request, out=tmp_path / "api", suite=toy_suite())
    monkeypatch.setattr("elt.eval.run.build_suite", lambda request: toy_suite())
    argv = ["eval", "--ckpt", ckpts[0], "--ckpt", ckpts[1], "--loops", "1-3", "--num", "32"]
    argv += ["--batch-size", "16", "--seed", "3", "--no-latency", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    written = json.loads((tmp_path / "cli" / "eval.json").read_text())
    assert [(r["model"], r["loops"]) for r in result["rows"]] == [
        (r["model"], r["loops"]) for r in written["rows"]
    ] and len(result["rows"]) == 6
    for api_row, cli_row in zip(result["rows"], written["rows"], strict=True):
        for key in (*QUALITY_KEYS, "gflops"):
            assert api_row[key] == pytest.approx(cli_row[key], rel=1e-9, abs=1e-12), key
    on_disk = json.loads((tmp_path / "api" / "eval.json").read_text())
    assert [r["fd_cls"] for r in on_disk["rows"]] == [r["fd_cls"] for r in result["rows"]]
    assert (tmp_path / "api" / "eval.png").is_file() and (tmp_path / "api" / "eval.csv").is_file()


def test_elt_eval_cli_end_to_end(toy_runs, toy_paradigm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("elt.eval.run.build_suite", lambda request: toy_suite())
    code = main(
        [
            "eval",
            "--ckpt",
            str(toy_runs / "ilsd"),
            "--ckpt",
            str(toy_runs / "vanilla"),
            "--loops",
            "1-3",
            "--num",
            "32",
            "--out",
            str(tmp_path / "ev"),
            "--batch-size",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "real data" in out and "eval.png" in out
    data = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert {r["model"] for r in data["rows"]} == {"ilsd [ilsd]", "vanilla [vanilla]"}
    assert (tmp_path / "ev" / "eval.csv").is_file() and (tmp_path / "ev" / "eval.png").is_file()
    # existing 'elt sample' output, paired with its checkpoint for GFLOPs and latency
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(toy_runs / "ilsd"),
                "--loops",
                "1,3",
                "--num",
                "20",
                "--out",
                str(tmp_path / "s"),
                "--no-progress",
                "masked.temperature_base=0.6",
            ]
        )
        == 0
    )  # a sampling override
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(toy_runs / "ilsd"),
                "--num",
                "2",
                "--out",
                str(tmp_path / "bad"),
                "model.loops=2",
            ]
        )
        == 2
    )
    assert (
        "cannot set 'model.loops=2' when sampling" in capsys.readouterr().err
        and not (tmp_path / "bad").exists()
    )
    assert (
        main(
            [
                "eval",
                "--samples",
                str(tmp_path / "s"),
                "--ckpt",
                str(toy_runs / "ilsd"),
                "--loops",
                "1,3",
                "--num",
                "20",
                "--name",
                "from-files",
                "--out",
                str(tmp_path / "ev2"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "ev2" / "eval.json").read_text())["rows"]
    assert [(r["model"], r["loops"], r["n"]) for r in rows] == [
        ("from-files", 1, 20),
        ("from-files", 3, 20),
    ]
    assert all(
        r["samples"] == str(tmp_path / "s") and r["gflops"] > 0 and r["latency_ms"] > 0
        for r in rows
    )
    assert (
        main(["eval", "--samples", str(tmp_path / "s"), "--out", str(tmp_path / "ev3")]) == 2
    )  # no --loops
    assert "--loops is required" in capsys.readouterr().err

    # two sweeps at different loop counts → one table and plot; parameters counted per model
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(toy_runs / "ilsd"),
                "--loops",
                "5",
                "--num",
                "32",
                "--name",
                "beyond",
                "--out",
                str(tmp_path / "ev4"),
                "--batch-size",
                "16",
                "--no-latency",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "merge",
                str(tmp_path / "ev"),
                str(tmp_path / "ev4" / "eval.json"),
                "--out",
                str(tmp_path / "merged"),
                "--title",
                "toy study",
            ]
        )
        == 0
    )
    merged = json.loads((tmp_path / "merged" / "eval.json").read_text())
    assert [(r["model"], r["loops"]) for r in merged["rows"]] == [
        *[(m, k) for m in ("ilsd [ilsd]", "vanilla [vanilla]") for k in (1, 2, 3)],
        ("beyond", 5),
    ]
    assert (
        merged["provenance"]["loops"] == [1, 2, 3, 5]
        and len(merged["provenance"]["merged_from"]) == 2
    )
    n_params = sum(p.numel() for p in elt.load(toy_runs / "ilsd").trainable_parameters())
    assert merged["rows"][0]["params_m"] == pytest.approx(n_params / 1e6)
    table = (tmp_path / "merged" / "eval.md").read_text().splitlines()
    assert (
        table[0].startswith("| model | L |")
        and "params (M)" in table[0]
        and "class acc" in table[0]
    )
    assert len(table) == 2 + 7 + 1 and table[-1].startswith("| real data |")
    acc = merged["rows"][0]["class_acc"]
    assert f"{100 * acc:.1f}%" in table[2]
    Image.open(tmp_path / "merged" / "eval.png").verify()
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "merge",
                str(tmp_path / "ev"),
                str(tmp_path / "ev2"),
                "--out",
                str(tmp_path / "m2"),
            ]
        )
        == 2
    )
    assert (
        "different sample counts per point: [20, 32]" in capsys.readouterr().err
    )  # N=32 and N=20 don't mix
    assert main(["eval", "merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]) == 2
    assert "no eval.json" in capsys.readouterr().err and not (tmp_path / "m2").exists()


def test_elt_eval_cli_errors_are_one_line(toy_runs, toy_paradigm, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ELT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    code = main(
        [
            "eval",
            "--ckpt",
            str(toy_runs / "ilsd"),
            "--metrics",
            "inception",
            "--reference",
            str(tmp_path / "ref.npz"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and "weights-inception-2015-12-05-6726825d.pth" in err
        and len(err.splitlines()) == 1
    )
    assert (
        main(["eval", "--ckpt", str(toy_runs / "ilsd"), "--metrics", "inception", "--out", "x"])
        == 2
    )
    assert "--reference" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path / "x")]) == 2
    assert "--ckpt" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # a checkpoint of 64 px RGB images is refused by the Fashion-MNIST metrics before any sampling
    train(
        load_config(
            None,
            [
                *TOY_OVERRIDES,
                "train.steps=2",
                "data.image_size=64",
                "data.channels=3",
                f"train.out_dir={tmp_path / 'rgb'}",
            ],
        ),
        progress=False,
    )
    assert main(["eval", "--ckpt", str(tmp_path / "rgb"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "64×64×3" in err and "--metrics inception" in err


# -- a real end-to-end run: a tiny looped generator of 32×32 Fashion-MNIST images, the shipped class
class FMNISTPatchGenerator(ToyGenerator):
    """The toy generator at real Fashion-MNIST size: 32×32 images in 8×8 patches (blurry blobs after
    a few steps; enough to exercise the sweep with the shipped classifier)."""

    size = 32
    patch = 8


def build_generator(cfg):
    return FMNISTPatchGenerator(cfg)


def prepare_data(cfg, generator, run_dir, progress=True):
    from elt.data.fashion_mnist import FashionMNIST

    return FashionMNIST(cfg.data.root, "train", image_size=32, limit=cfg.data.limit)


@pytest.mark.slow
def test_elt_eval_on_a_fashion_mnist_checkpoint_with_the_shipped_classifier(
    tmp_path, monkeypatch, capsys
):
    from elt import registry
    from elt.data.fashion_mnist import DataNotFoundError, locate

    try:
        locate(None, "test")
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (make data)")
    monkeypatch.setattr(registry, "_PARADIGMS", {**registry.paradigms()})  # restored after the test
    registry.register_paradigm("fmnist_patch", "test_eval_sweep")
    cfg = load_config(
        None,
        [
            "paradigm=fmnist_patch",
            "model.width=64",
            "model.heads=2",
            "model.unique_layers=2",
            "model.loops=3",
            "data.limit=640",
            "train.steps=20",
            "train.batch_size=32",
            "optimizer.lr=0.002",
            "lr_schedule.warmup_steps=5",
            "train.ema_decay=0.95",
            "train.threads=1",
            f"train.out_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg, progress=False)
    code = main(
        [
            "eval",
            "--ckpt",
            str(tmp_path / "run"),
            "--loops",
            "1-3",
            "--num",
            "200",
            "--out",
            str(tmp_path / "ev"),
            "--no-progress",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "ev" / "eval.json").read_text())
    from elt.eval.classifier import shipped_record

    assert data["provenance"]["sha256"] == shipped_record()["sha256"]
    assert data["provenance"]["reference"].startswith("Fashion-MNIST test split")
    floor = data["floor"]
    assert floor["n"] == 200 and floor["class_acc"] > 0.9
    assert [r["loops"] for r in data["rows"]] == [1, 2, 3]
    for row in data[
        "rows"
    ]:  # 20 training steps: blurry blobs, far from real data in the classifier's eyes
        assert row["fd_cls"] > 10 * floor["fd_cls"] and row["coverage"] < floor["coverage"]
        assert 0 <= row["class_acc"] <= 1 and row["gflops"] > 0 and row["latency_ms"] > 0
    assert (tmp_path / "ev" / "eval.csv").is_file() and (tmp_path / "ev" / "eval.png").is_file()


def test_a_floor_worse_than_a_model_warns_with_the_n_it_would_need(tmp_path, capsys):
    import math

    from elt.eval.sweep import floor_warning

    rows = [
        {"model": "elt", "loops": 1, "fd_cls": 12.0},
        {"model": "elt", "loops": 3, "fd_cls": 6.0},
    ]
    line = floor_warning({"n": 64, "fd_cls": 9.0, "class_acc": 0.9}, rows)
    assert line is not None and "\n" not in line
    assert "floor at N=64 is unreliable" in line and "elt L=3" in line
    assert f"at least N={math.ceil(64 * 9.0 / 6.0)} samples" in line
    assert (
        floor_warning({"n": 64, "fd_cls": 5.0}, rows) is None
    )  # a floor below every model: no warning
    assert floor_warning(None, rows) is None

    # the command line prints it as one warning line (here through 'elt eval merge' of a saved
    # record)
    record = {
        "provenance": {"n": 64, "loops": [1, 3]},
        "floor": {"n": 64, "fd_cls": 9.0},
        "plot_metrics": [["fd_cls", "FD_cls"]],
        "rows": rows,
    }
    (tmp_path / "eval.json").write_text(json.dumps(record))
    assert (
        main(["eval", "merge", str(tmp_path / "eval.json"), "--out", str(tmp_path / "merged")]) == 0
    )
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("elt: warning:")]
    assert warnings == [f"elt: warning: {line}"]
    assert json.loads((tmp_path / "merged" / "eval.json").read_text())["floor_warning"] == line


def test_a_real_vs_real_frechet_floor_falls_as_one_over_n():
    """The premise of the warning's estimate: between two samples of one distribution the Fréchet
    distance is estimation bias, ∝ 1/N."""
    from elt.eval.frechet import frechet_distance_features

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((20000, 8))
    floors = {
        n: np.mean(
            [frechet_distance_features(rng.standard_normal((n, 8)), reference) for _ in range(5)]
        )
        for n in (250, 2000)
    }
    assert floors[250] / floors[2000] == pytest.approx(8, rel=0.35)
