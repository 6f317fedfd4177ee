"""Folder data: shape inferred from the images (null keys), one warning line per conversion made,
one-line errors (exit 2) for contradictions, class names stored in the run and used by ``elt
info``, ``generate`` and ``elt sample --classes``."""

import json

import numpy as np
import pytest
from PIL import Image

from elt.cli import main
from elt.config import load_config
from elt.data import shape as shape_lib
from elt.data.shape import inspect_folder, resolve_data_config
from elt.errors import ConfigError

CLASSES = ("circle", "square", "triangle")


def write_folder(root, size=(64, 64), mode="RGB", per_class=3, classes=CLASSES, sizes=None):
    """``root/<class>/<i>.png`` of random pixels; ``sizes`` (one per image, cycled) overrides
    ``size``."""
    rng = np.random.default_rng(0)
    index = 0
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            width, height = sizes[index % len(sizes)] if sizes else size
            index += 1
            bands = {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 1}[mode]
            if mode == "I;16":
                pixels = rng.integers(0, 65535, (height, width), dtype=np.uint16)
                image = Image.fromarray(pixels)  # I;16
            else:
                pixels = rng.integers(0, 255, (height, width, bands), dtype=np.uint8)
                image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)
            image.save(root / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def fresh_warnings():
    shape_lib._shown.clear()
    shape_lib._resolved.clear()
    yield
    shape_lib._shown.clear()
    shape_lib._resolved.clear()


def inferred_folder(root) -> list[str]:
    """Overrides for a folder dataset whose shape keys are all left to inference."""
    return [
        "data.name=folder",
        f"data.root={root}",
        "data.image_size=null",
        "data.channels=null",
        "data.num_classes=null",
    ]


def folder_cfg(root, *overrides):
    return load_config(None, [*inferred_folder(root), *overrides])


def warnings_of(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("elt: warning:")]


def test_inspect_folder_counts_and_headers(tmp_path):
    root = write_folder(tmp_path / "d", sizes=[(64, 64), (48, 64)], mode="RGBA")
    found = inspect_folder(root)
    assert found.classes == list(CLASSES) and found.images == 9
    assert found.class_counts == {name: 3 for name in CLASSES}
    assert found.headers == 9 and found.sizes == {(64, 64): 5, (48, 64): 4}
    assert found.has_alpha and found.has_colour
    sampled = inspect_folder(root, max_headers=4)
    assert sampled.images == 9 and sampled.headers == 4


def test_rgb_64_folder_is_inferred_without_warnings(tmp_path, capsys):
    cfg = resolve_data_config(folder_cfg(write_folder(tmp_path / "d")))
    assert (cfg.data.image_size, cfg.data.channels, cfg.data.num_classes) == (64, 3, 3)
    assert list(cfg.data.class_names) == list(CLASSES)
    assert warnings_of(capsys) == []


def test_grey_folder_is_one_channel(tmp_path, capsys):
    cfg = resolve_data_config(folder_cfg(write_folder(tmp_path / "d", mode="L", size=(32, 32))))
    assert (cfg.data.image_size, cfg.data.channels) == (32, 1)
    assert warnings_of(capsys) == []


@pytest.mark.parametrize(
    "overrides, kwargs, expected",
    [
        (
            ["data.channels=1"],
            {},
            "data.channels=1 but the images in {root}/ are RGB: training on greyscale "
            "(set data.channels=3 to keep colour)",
        ),
        (
            ["data.channels=3"],
            {"mode": "L"},
            "data.channels=3 but the images in {root}/ are greyscale: each is repeated in 3 "
            "channels (set data.channels=1 to train on 1 channel)",
        ),
        (
            ["data.image_size=32"],
            {},
            "data.image_size=32 but all images in {root}/ are larger (up to 64 px): training on "
            "32 px downscaled images (set data.image_size=64 or leave it null to keep their size)",
        ),
        (
            [],
            {"sizes": [(64, 64), (64, 64), (32, 32)]},
            "the images in {root}/ have 2 sizes: data.image_size=64 (the most common short side); "
            "3 of 9 have another size and are resized to it (set data.image_size to choose)",
        ),
        (
            [],
            {"sizes": [(64, 64), (64, 64), (80, 64)]},
            "3 of 9 images in {root}/ are not square (e.g. 80x64): centre-cropped to squares "
            "(crop them yourself to keep other parts)",
        ),
        (
            [],
            {"mode": "RGBA"},
            "all images in {root}/ have an alpha channel: it is dropped, transparent pixels keep "
            "the colour stored under them (often black; flatten them onto a background yourself "
            "to choose it)",
        ),
        (
            [],
            {"mode": "I;16"},
            "all images in {root}/ have more than 8 bits (I;16): scaled to 8 bits (save them as "
            "8-bit images to choose the scaling)",
        ),
    ],
    ids=["rgb-to-grey", "grey-to-rgb", "downscale", "mixed-sizes", "non-square", "alpha", "16bit"],
)
def test_each_conversion_is_one_warning_line(tmp_path, capsys, overrides, kwargs, expected):
    root = write_folder(tmp_path / "d", **kwargs)
    cfg = resolve_data_config(folder_cfg(root, *overrides))
    assert warnings_of(capsys) == [f"elt: warning: {expected.format(root=root)}"]
    resolve_data_config(cfg)  # a second entry point in the same command: not repeated
    assert warnings_of(capsys) == []


@pytest.mark.parametrize(
    "make, overrides, message",
    [
        (
            lambda root: write_folder(root),
            ["data.num_classes=10"],
            "data.num_classes=10 but {root}/ has 3 class folders (circle, square, triangle); "
            "set data.num_classes=3 or leave it null",
        ),
        (
            lambda root: write_folder(root),
            ["data.class_names=[circle,square,star]"],
            "data.class_names ['circle', 'square', 'star'] do not match the class folders of "
            "{root}/ ['circle', 'square', 'triangle']",
        ),
        (
            lambda root: (write_folder(root), (root / "empty").mkdir()),
            [],
            "class folder '{root}/empty' holds no image files",
        ),
        (
            lambda root: root.mkdir(),
            [],
            "data.root '{root}' has no class subfolders; put each class's images in "
            "ROOT/<class name>/",
        ),
    ],
    ids=["num-classes", "class-names", "empty-class", "no-classes"],
)
def test_contradictions_are_one_line_exit_2(tmp_path, capsys, make, overrides, message):
    root = tmp_path / "d"
    make(root)
    args = [
        "prepare",
        "fmnist_masked",
        *inferred_folder(root),
        f"train.out_dir={tmp_path / 'run'}",
        *overrides,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message.format(root=root) in err
    assert not (tmp_path / "run").exists()


def test_num_classes_mismatch_in_build_dataset_is_a_config_error(tmp_path):
    from elt.data.datasets import build_dataset

    root = write_folder(tmp_path / "d")
    cfg = load_config(None, ["data.name=folder", f"data.root={root}", "data.num_classes=10"])
    with pytest.raises(ConfigError, match="has 3 class folders but data.num_classes=10; set"):
        build_dataset(cfg.data)


def test_other_datasets_fill_what_they_know(tmp_path):
    cfg = resolve_data_config(load_config(None, ["data.channels=null", "data.num_classes=null"]))
    assert (cfg.data.channels, cfg.data.num_classes) == (1, 10)
    assert cfg.data.class_names[0] == "T-shirt/top" and cfg.data.class_names[9] == "Ankle boot"
    with pytest.raises(ConfigError, match="data.image_size=null is inferred only for"):
        resolve_data_config(
            load_config(
                None,
                [
                    "paradigm=masked",
                    "data.name=moving_fmnist",
                    "data.frames=4",
                    "tokenizer.kind=fsq3d",
                    "data.image_size=null",
                ],
            )
        )
    lists = tmp_path / "ucf" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    lists.joinpath("classInd.txt").write_text("".join(f"{i} Action{i}\n" for i in range(1, 102)))
    video = ["paradigm=masked", "data.frames=4", "tokenizer.kind=fsq3d", "data.channels=3"]
    ucf = resolve_data_config(
        load_config(
            None,
            [*video, "data.name=ucf101", f"data.root={tmp_path / 'ucf'}", "data.num_classes=null"],
        )
    )
    assert ucf.data.num_classes == 101 and ucf.data.class_names[100] == "Action101"
    with pytest.raises(ConfigError, match="data.class_names has 2 names but data.num_classes=10"):
        load_config(None, ["data.class_names=[a,b]"])


TINY = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=1",
    "model.loops=2",
    "train.batch_size=4",
    "train.steps=2",
    "lr_schedule.warmup_steps=0",
    "logging.sample_loops=[1]",
    "train.threads=1",
    "sampling.steps=2",
    "diffusion.patch_size=4",
]


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A 2-step diffusion run on a 16 px RGB folder of 3 classes, shape keys left null."""
    tmp = tmp_path_factory.mktemp("named")
    root = write_folder(tmp / "shapes", size=(16, 16))
    run = tmp / "run"
    args = [
        "train",
        "fmnist_diffusion",
        "--no-progress",
        *inferred_folder(root),
        *TINY,
        f"train.out_dir={run}",
    ]
    assert main(args) == 0
    return run


@pytest.mark.slow
def test_class_names_round_trip_to_info_and_generate(named_run, capsys):
    import elt

    saved = load_config(named_run / "config.yaml")
    assert (saved.data.image_size, saved.data.channels, saved.data.num_classes) == (16, 3, 3)
    capsys.readouterr()
    assert main(["info", str(named_run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data"]["class_names"] == list(CLASSES)
    assert info["data"]["image_size"] == 16 and info["data"]["channels"] == 3
    assert info["train_steps"] == {"done": 2, "total": 2}
    # the trainer's grid: title, a line of class names above the columns, one row of 16 px tiles
    from PIL import Image as PILImage

    grid = PILImage.open(named_run / "samples" / "step_0000002.png")
    assert grid.size[1] == 14 + 12 + (16 * 4 + 2) + 2
    generator = elt.load(named_run)
    assert generator.class_names == list(CLASSES)
    by_name = generator.generate(["circle", "triangle"], seed=3, steps=2)
    by_number = generator.generate([0, 2], seed=3, steps=2)
    assert np.array_equal(by_name, by_number)
    from elt.errors import UserError

    with pytest.raises(UserError, match="unknown class name 'star'; allowed: circle, square"):
        generator.generate(["star"], seed=0, steps=2)


@pytest.mark.slow
def test_sample_classes_by_name(named_run, tmp_path, capsys):
    out = tmp_path / "samples"
    args = ["sample", "--ckpt", str(named_run), "--loops", "1", "--num", "4", "--steps", "2"]
    assert main([*args, "--classes", "square,triangle", "--out", str(out), "--no-progress"]) == 0
    labels = np.load(out / "samples_L1.npz")["arr_1"]
    assert labels.tolist() == [1, 2, 1, 2]
    capsys.readouterr()
    assert main([*args, "--classes", "star", "--out", str(tmp_path / "s2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'star'" in err and "circle, square, triangle" in err


def test_old_generators_have_no_class_names():
    from omegaconf import OmegaConf

    from elt.core.generator import LoopedGenerator, labels_tensor

    class Old:
        config = OmegaConf.create({"data": {"num_classes": 3}})

    assert LoopedGenerator.class_names.fget(Old()) is None
    assert labels_tensor([0, 2], 3, "cpu").tolist() == [0, 2]
    from elt.errors import UserError

    with pytest.raises(UserError, match="this model has no class names"):
        labels_tensor(["circle"], 3, "cpu")


@pytest.mark.slow
def test_exports_and_pipelines_carry_class_names(named_run, tmp_path):
    import elt

    pytest.importorskip("diffusers")
    from elt.errors import UserError
    from elt.pipelines import ELTDiffusionPipeline

    for fmt in ("elt", "hub"):
        out = tmp_path / fmt
        elt.export(named_run, out, format=fmt, half=False)
        assert elt.load(out).class_names == list(CLASSES)
    pipe = ELTDiffusionPipeline.from_pretrained(str(tmp_path / "hub"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.id2label == dict(enumerate(CLASSES))
    assert pipe.labels == {"circle": 0, "square": 1, "triangle": 2}
    assert pipe.get_label_ids(["triangle", "circle"]) == [2, 0]
    by_name = pipe(["triangle", "circle"], num_inference_steps=2, generator=5, output_type="np")
    by_id = pipe([2, 0], num_inference_steps=2, generator=5, output_type="np")
    assert np.array_equal(by_name.images, by_id.images)
    with pytest.raises(UserError, match="unknown class name 'star'; allowed: circle, square"):
        pipe(["star"], num_inference_steps=2)
    pipe.save_pretrained(tmp_path / "pipe")
    again = ELTDiffusionPipeline.from_pretrained(str(tmp_path / "pipe"))
    assert again.id2label == dict(enumerate(CLASSES))


def test_grid_columns_carry_class_names():
    from elt.visual import grid_image

    rows = [np.zeros((3, 16, 16, 3), dtype=np.uint8)]
    plain = np.asarray(grid_image(rows, ["L=1"], scale=4))
    named = np.asarray(grid_image(rows, ["L=1"], scale=4, col_labels=list(CLASSES)))
    assert named.shape[0] == plain.shape[0] + 12 and named.shape[1] == plain.shape[1]
    header = named[:12]
    assert (header < 128).any()  # the names are drawn above the columns
    assert np.array_equal(named[12:], plain)  # the images themselves are unchanged


@pytest.mark.slow
def test_sample_grid_labels_columns_with_names(named_run, tmp_path):
    import json as json_lib

    from PIL import Image as PILImage

    out = tmp_path / "s"
    args = ["sample", "--ckpt", str(named_run), "--loops", "1", "--num", "6", "--steps", "2"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    grid = np.asarray(PILImage.open(out / "grid.png"))
    assert json_lib.loads((out / "samples.json").read_text())["label_policy"] == "balanced"
    # title (14 px), the class-name line (12 px), one row of 16 px tiles at scale 4, padding
    assert grid.shape[0] == 14 + 12 + (16 * 4 + 2) + 2
    assert (grid[14:26] < 128).any()


def test_tokenizer_train_infers_the_folder_shape(tmp_path, capsys):
    root = write_folder(tmp_path / "d", size=(16, 16))
    args = [
        "tokenizer",
        "train",
        "fmnist_masked",
        *inferred_folder(root),
        "tokenizer.levels=[4,4]",
        "tokenizer.channels=8",
        "tokenizer.steps=2",
        "tokenizer.batch_size=4",
        "tokenizer.eval_items=0",
        "--out",
        str(tmp_path / "tok"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert warnings_of(capsys) == []
    info = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert info["data"]["image_size"] == 16 and info["data"]["name"] == "folder"
    assert (info["architecture"]["image_size"], info["architecture"]["image_channels"]) == (16, 3)


def test_warnings_only_on_rank_0(tmp_path, capsys, monkeypatch):
    root = write_folder(tmp_path / "d")
    monkeypatch.setenv("RANK", "1")
    resolve_data_config(folder_cfg(root, "data.channels=1"))
    assert warnings_of(capsys) == []
    monkeypatch.setenv("RANK", "0")
    shape_lib._resolved.clear()
    resolve_data_config(folder_cfg(root, "data.channels=1"))
    assert len(warnings_of(capsys)) == 1


def test_building_a_model_with_null_shape_keys_is_one_line(tmp_path):
    from elt.registry import build_generator

    cfg = folder_cfg(write_folder(tmp_path / "d"), "paradigm=diffusion")
    with pytest.raises(ConfigError, match="data.image_size is null .*; set data.image_size"):
        build_generator(cfg)
    assert build_generator(resolve_data_config(cfg)).class_names == list(CLASSES)


def test_a_folder_of_images_given_as_the_config_names_the_folder_configs(tmp_path, capsys):
    """``elt train shapes/``: one line saying it is a folder and how to train on it (it said
    'config file not found')."""
    root = write_folder(tmp_path / "shapes")
    assert main(["train", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder, not a config" in err[0], err
    assert f"elt train folder_diffusion data.root={root}" in err[0]
