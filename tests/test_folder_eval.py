"""Offline evaluation of a model trained on the user's own image folder: a domain classifier
trained on the folder (``elt eval train-classifier --data DIR``), ``elt eval`` / ``elt calibrate``
with it, latency-only calibration and ``elt sample --budget-ms`` finding a calibration written
elsewhere (issue 34, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from elt.cli import main

CLASSES = ("circle", "square", "triangle")


def draw_shapes(root: Path, per_class: int = 30, size: int = 32, seed: int = 0) -> Path:
    """Coloured circles, squares and triangles on dark backgrounds, one folder per class."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            fill = tuple(int(v) for v in rng.integers(120, 256, 3))
            r = rng.uniform(0.22, 0.38) * size
            cx, cy = rng.uniform(r, size - r, 2)
            draw = ImageDraw.Draw(image)
            if name == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            elif name == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
            image.save(root / name / f"{i:03d}.png")
    return root


def read_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(root.rglob("*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    return images, labels


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return draw_shapes(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def classifier_dir(shapes, tmp_path_factory) -> Path:
    from elt.eval.run import train_folder_classifier

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cls") / "shapes-classifier"
    train_folder_classifier(shapes, out, epochs=10, progress=False)
    return out


@pytest.fixture(scope="module")
def folder_run(shapes, tmp_path_factory) -> Path:
    """A tiny class-conditional diffusion model trained for 5 steps on the folder."""
    out = tmp_path_factory.mktemp("run") / "shapes_diffusion"
    argv = [
        "train",
        "fmnist_diffusion",
        "--no-progress",
        "data.name=folder",
        f"data.root={shapes}",
        "data.channels=3",
        "data.image_size=32",
        "data.num_classes=3",
        "model.width=32",
        "model.heads=2",
        "model.unique_layers=1",
        "sampling.steps=3",
        "train.steps=5",
        "train.batch_size=8",
        "lr_schedule.warmup_steps=1",
        "logging.tensorboard=false",
        f"train.out_dir={out}",
    ]
    assert main(argv) == 0
    return out


def one_line_exit_2(capsys, argv, *words) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("elt: error:"), err
    for word in words:
        assert word in err, (word, err)
    return err


# -- the classifier --------------------------------------------------------------------------------
def test_folder_classifier_learns_and_writes_its_record(classifier_dir, shapes):
    from elt.eval.classifier import file_sha256
    from elt.eval.folder_classifier import FolderClassifierFeatures
    from elt.eval.inputs import load_classifier

    record = json.loads((classifier_dir / "classifier.json").read_text())
    # an easy task: far above chance (1/3) on the 12 held-out images (4 per class)
    assert record["heldout_accuracy"] >= 0.75
    assert record["heldout_images"] == 12 and record["train_images"] == 78
    assert record["class_names"] == list(CLASSES) and record["num_classes"] == 3
    assert (record["image_size"], record["channels"]) == (32, 3)  # inferred from the folder
    assert record["data_root"] == str(shapes.resolve())
    assert record["sha256"] == file_sha256(classifier_dir / "classifier.safetensors")
    assert record["floor"]["class_acc"] == pytest.approx(record["heldout_accuracy"])
    with np.load(classifier_dir / "reference.npz") as ref:
        assert ref["features"].shape == (90, 128) and ref["heldout"].sum() == 12
        for label in range(3):  # stratified: as many held out of every class
            assert ref["heldout"][ref["labels"] == label].sum() == 4
    extractor = load_classifier(classifier_dir)  # a folder: that folder's classifier
    assert isinstance(extractor, FolderClassifierFeatures) and extractor.digest == record["sha256"]
    # the stored reference features are what the loaded classifier computes from the image files
    images, _ = read_folder(shapes)
    with np.load(classifier_dir / "reference.npz") as ref:
        np.testing.assert_allclose(extractor(images).features, ref["features"], atol=1e-4)


def test_folder_shape_is_inferred(tmp_path):
    from elt.eval.folder_classifier import infer_folder_shape

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (24, 40), 30 * i).save(tmp_path / name / f"{i}.png")
    assert infer_folder_shape(tmp_path) == (1, 24)  # grey; the short side
    Image.new("RGB", (24, 40)).save(tmp_path / "a" / "rgb.png")
    assert infer_folder_shape(tmp_path)[0] == 3


def test_fd_in_the_folder_classifier_space_separates_real_from_noise(classifier_dir, shapes):
    from elt.eval.inputs import load_classifier
    from elt.eval.suites import DomainSuite

    suite = DomainSuite.from_folder_classifier(load_classifier(classifier_dir))
    images, labels = read_folder(shapes)
    real = suite.evaluate(images, labels)
    noise = suite.evaluate(
        np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8), labels
    )
    floor = suite.floor(100)
    assert floor["n"] == 12  # the held-out images against the training split
    assert real["fd_cls"] < noise["fd_cls"] / 5 and floor["fd_cls"] < noise["fd_cls"] / 5
    assert real["class_acc"] > 0.9 and noise["coverage"] < real["coverage"]


# -- elt eval / floor with it ----------------------------------------------------------------------
@pytest.mark.slow
def test_eval_and_floor_with_a_folder_classifier(folder_run, classifier_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--ckpt", str(folder_run), "--classifier", str(classifier_dir)]
    argv += ["--num", "9", "--loops", "1,2", "--batch-size", "9", "--no-latency"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert [row["loops"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        for key in ("fd_cls", "kid", "precision", "recall", "density", "coverage"):
            assert np.isfinite(row[key]), key
        assert 0 <= row["class_acc"] <= 1
    assert result["provenance"]["extractor"] == "folder-classifier"
    assert result["provenance"]["classifier_dir"] == str(classifier_dir)
    assert result["floor"]["n"] == 9 and result["floor"]["class_acc"] >= 0.75
    assert all((out / f"eval.{ext}").is_file() for ext in ("csv", "md", "png"))
    capsys.readouterr()
    assert main(["eval", "floor", "--classifier", str(classifier_dir), "--no-progress"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["n"] == 12 and "held-out" in floor["description"]


@pytest.mark.slow
def test_mismatched_classifier_is_refused_before_sampling(
    folder_run, shapes, tmp_path, capsys, monkeypatch
):
    from elt.eval import run
    from elt.inference import checkpoints

    small = tmp_path / "cls16"
    assert (
        main(
            ["eval", "train-classifier", "--data", str(shapes), "--out", str(small)]
            + ["--image-size", "16", "--epochs", "1", "--no-progress"]
        )
        == 0
    )

    def no_load(*args, **kwargs):
        raise AssertionError("loaded the model before refusing")

    monkeypatch.setattr(run, "load_generator", no_load)
    monkeypatch.setattr(checkpoints, "load_generator", no_load)
    out = tmp_path / "eval"
    one_line_exit_2(
        capsys,
        ["eval", "--ckpt", str(folder_run), "--classifier", str(small), "--out", str(out)],
        "16×16×3",
        "32×32×3",
        "--image-size 32",
    )
    assert not out.exists()
    cal = tmp_path / "cal"
    base = ["calibrate", "--ckpt", str(folder_run), "--out", str(cal)]
    one_line_exit_2(capsys, [*base, "--classifier", str(small)], "16×16×3")
    # not Fashion-MNIST-shaped and no classifier: say what to pass
    one_line_exit_2(capsys, base, "32×32×3", "--classifier CLS_DIR", "--latency-only")
    one_line_exit_2(capsys, [*base, "--classifier", str(small), "--latency-only"], "not both")
    assert not cal.exists()
    one_line_exit_2(
        capsys,
        ["eval", "train-classifier", "--data", str(tmp_path / "nowhere"), "--out", str(out)],
        "--data",
    )


def test_class_names_must_match_when_both_have_them():
    from omegaconf import OmegaConf

    from elt.errors import UserError
    from elt.eval.inputs import check_fits_classifier

    record = {"image_size": 32, "channels": 3, "num_classes": 3, "class_names": list(CLASSES)}
    cfg = {"image_size": 32, "channels": 3, "num_classes": 3}
    check_fits_classifier(OmegaConf.create({"data": cfg}), record, "run")
    named = {**cfg, "class_names": list(CLASSES)}
    check_fits_classifier(OmegaConf.create({"data": named}), record, "run")
    other = {**cfg, "class_names": ["a", "b", "c"]}
    with pytest.raises(UserError, match="circle, square, triangle.*run makes .*a, b, c"):
        check_fits_classifier(OmegaConf.create({"data": other}), record, "run")
    with pytest.raises(UserError, match="in 3 classes.*in 10 classes"):
        check_fits_classifier(OmegaConf.create({"data": {**cfg, "num_classes": 10}}), record, "r")


# -- calibrate and --budget-ms ---------------------------------------------------------------------
@pytest.mark.slow
def test_latency_only_calibration_feeds_budget_ms(folder_run, tmp_path, capsys):
    cal = tmp_path / "cal"
    argv = ["calibrate", "--ckpt", str(folder_run), "--latency-only", "--out", str(cal)]
    assert main([*argv, "--loops", "1-3", "--num", "4", "--no-progress"]) == 0
    record = json.loads((cal / "calibration.json").read_text())
    points = record["points"]
    assert [p["loops"] for p in points] == ["1", "2", "3"] and record["provenance"]["latency_only"]
    for p in points:
        assert p["fd_cls"] is None and p["class_acc"] is None
        assert p["latency_ms"] > 0 and p["gflops"] > 0
    # each fixed L buys more loops for more GFLOPs: all on the GFLOPs front
    assert [p["pareto_gflops"] for p in points] == [True, True, True]
    assert all((cal / name).is_file() for name in ("pareto.json", "pareto.csv", "pareto.png"))
    pointer = json.loads((folder_run / "calibration.pointer.json").read_text())
    assert pointer["calibration"] == str((cal / "calibration.json").resolve())
    # the run finds it (no --calibration): the most loops within the budget
    budget = sorted(p["latency_ms"] for p in points)[1] + 1e-6
    expected = max((p for p in points if p["latency_ms"] <= budget), key=lambda p: p["mean_loops"])
    capsys.readouterr()
    sample = ["sample", "--ckpt", str(folder_run), "--num", "2", "--no-progress"]
    assert main([*sample, "--budget-ms", str(budget), "--out", str(tmp_path / "s")]) == 0
    assert f"picked {expected['loops']}:" in capsys.readouterr().out
    one_line_exit_2(
        capsys, [*sample, "--quality", "5", "--out", str(tmp_path / "q")], "latency-only"
    )


@pytest.mark.slow
def test_calibrate_with_a_folder_classifier(folder_run, classifier_dir, tmp_path):
    cal = tmp_path / "cal"
    argv = ["calibrate", "--ckpt", str(folder_run), "--classifier", str(classifier_dir)]
    argv += ["--out", str(cal), "--loops", "1,2", "--num", "9", "--batch-size", "9"]
    assert main([*argv, "--no-latency", "--no-progress"]) == 0
    record = json.loads((cal / "calibration.json").read_text())
    assert record["provenance"]["extractor"] == "folder-classifier"
    for p in record["points"]:
        assert p["fd_cls"] > 0 and 0 <= p["class_acc"] <= 1


def test_budget_on_latency_only_record_and_pointer_errors(tmp_path):
    from elt.anytime import TargetError, choose_point

    record = {
        "points": [
            {"loops": "1", "mean_loops": 1.0, "latency_ms": 10.0, "fd_cls": None},
            {"loops": "3", "mean_loops": 3.0, "latency_ms": 30.0, "fd_cls": None},
            {"loops": "exit:0.1", "mean_loops": 2.5, "latency_ms": 20.0, "fd_cls": None},
            {"loops": "2", "mean_loops": 2.0, "latency_ms": 18.0, "fd_cls": None},
        ]
    }
    assert choose_point(record, budget_ms=25)["loops"] == "exit:0.1"
    assert choose_point(record, budget_ms=100)["loops"] == "3"
    with pytest.raises(TargetError, match="fastest is loops 1"):
        choose_point(record, budget_ms=5)
    with pytest.raises(TargetError, match="latency-only"):
        choose_point(record, fd_cls=3.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "calibration.json").write_text(json.dumps({"points": [{"loops": "1", "fd_cls": 1.0}]}))
    elsewhere = tmp_path / "cal" / "calibration.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps(record))
    (run / "calibration.pointer.json").write_text(json.dumps({"calibration": str(elsewhere)}))
    assert choose_point(run, budget_ms=25)["calibration"] == str(elsewhere)  # the pointer wins
    elsewhere.unlink()
    with pytest.raises(TargetError, match="which is gone"):
        choose_point(run, budget_ms=25)


def test_fashion_mnist_classifier_is_unchanged_at_32_px():
    """The adaptive pool that lets the folder classifiers take 64 px is the identity at 32 px: the
    shipped weights load with the same keys and give the features of the three stages as before."""
    from elt.eval.classifier import ASSETS, WEIGHTS_NAME, FMNISTClassifier
    from elt.fileio import load_safetensors

    model = FMNISTClassifier()
    model.load_state_dict(load_safetensors(ASSETS / WEIGHTS_NAME))
    model.eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), model.embed(model.body(x)), rtol=0, atol=0)
    wide = FMNISTClassifier(num_classes=3, channels=3)
    with torch.no_grad():
        for size in (32, 64):
            h, z = wide(torch.zeros(2, 3, size, size))
            assert h.shape == (2, 128) and z.shape == (2, 3)
