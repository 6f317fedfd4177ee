"""The toy folder generator: deterministic bytes, the promised layout, shapes that are what their
class says, and a one-line refusal of a non-empty output folder."""

import numpy as np
import pytest
from PIL import Image

from elt.data.folders import ImageFolder
from elt.data.shapes import CLASSES, main, write_shapes


def tree_bytes(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = tree_bytes(write_shapes(tmp_path / "a", per_class=4, size=32, seed=3))
    b = tree_bytes(write_shapes(tmp_path / "b", per_class=4, size=32, seed=3))
    c = tree_bytes(write_shapes(tmp_path / "c", per_class=4, size=32, seed=4))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_a_bigger_folder_extends_a_smaller_one(tmp_path):
    small = tree_bytes(write_shapes(tmp_path / "small", per_class=2, size=32))
    big = tree_bytes(write_shapes(tmp_path / "big", per_class=5, size=32))
    assert all(big[name] == data for name, data in small.items())


def test_layout_counts_and_format_load_as_an_image_folder(tmp_path):
    root = write_shapes(tmp_path / "shapes", per_class=6, size=48)
    assert sorted(p.name for p in root.iterdir()) == sorted(CLASSES)
    for name in CLASSES:
        files = sorted((root / name).iterdir())
        assert [f.name for f in files] == [f"{i:04d}.png" for i in range(6)]
        for f in files:
            with Image.open(f) as image:
                assert image.mode == "RGB" and image.size == (48, 48)
    folder = ImageFolder(root, image_size=48, channels=3)
    assert folder.classes == sorted(CLASSES) and len(folder) == 18
    assert folder.labels.bincount().tolist() == [6, 6, 6]
    assert not list(tmp_path.glob(".*"))  # no temporary left beside it


def fill_fraction(path):
    """The shape's area over its bounding box's (pixels that differ from the corner colour)."""
    array = np.asarray(Image.open(path)).astype(int)
    mask = np.abs(array - array[0, 0]).sum(-1) > 60
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return mask.sum() / box


def test_each_class_draws_its_shape(tmp_path):
    root = write_shapes(tmp_path / "shapes", per_class=20, size=64)
    fractions = {c: [fill_fraction(p) for p in sorted((root / c).iterdir())] for c in CLASSES}
    # a disc fills pi/4 of its box; a square at any angle at least half; a triangle at most half
    assert all(0.72 < f < 0.85 for f in fractions["circle"]), fractions["circle"]
    assert all(f > 0.5 for f in fractions["square"]), fractions["square"]
    assert all(f < 0.56 for f in fractions["triangle"]), fractions["triangle"]
    colours = {tuple(np.asarray(Image.open(p))[32, 32]) for p in sorted(root.rglob("*.png"))}
    assert len(colours) > 30  # random fills (and backgrounds), not one colour per class


def test_non_empty_output_is_refused_in_one_line_and_left_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main([str(out), "--per-class", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    "args, word", [(["--per-class", "0"], "--per-class 0"), (["--size", "8"], "--size 8")]
)
def test_bad_numbers_are_one_line_errors_writing_nothing(tmp_path, capsys, args, word):
    out = tmp_path / "out"
    assert main([str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err
    assert not out.exists()


def test_main_writes_the_folder_and_says_so(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main([str(out), "--per-class", "3", "--size", "32", "--seed", "1"]) == 0
    assert "wrote 9 images" in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(write_shapes(tmp_path / "again", 3, 32, 1))
