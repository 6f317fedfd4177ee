"""ImageNet-style folder loader: labels, ADM centre crop, unreadable files skipped and counted."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from elt.config import load_config
from elt.data.datasets import build_dataset
from elt.data.folders import ImageFolder, UnreadableImageWarning, center_crop_adm


def write_tree(root, broken=True):
    rng = np.random.default_rng(0)
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            array = np.zeros((40, 60, 3), np.uint8) + np.array(color, np.uint8)
            array[:, :5] = rng.integers(0, 255, (40, 5, 3))
            Image.fromarray(array).save(root / cls / f"{i}.png")
    if broken:
        (root / "cat" / "not_an_image.jpg").write_bytes(b"definitely not a jpeg")
        data = (root / "dog" / "0.png").read_bytes()
        (root / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")


def test_adm_center_crop_keeps_the_middle():
    array = np.zeros((100, 300, 3), np.uint8)
    array[:, 100:200] = 255  # the middle third is white
    out = center_crop_adm(Image.fromarray(array), 32)
    assert out.size == (32, 32)
    assert np.asarray(out).min() > 200  # only the white middle survives the crop


def test_folder_labels_shapes_and_range(tmp_path):
    write_tree(tmp_path, broken=False)
    ds = ImageFolder(tmp_path, image_size=16, channels=3)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    image, label = ds[4]
    assert image.shape == (3, 16, 16) and label == 1
    assert image.min() >= -1 and image.max() <= 1
    assert image[2, 8, 8] == pytest.approx(1.0) and image[0, 8, 8] == pytest.approx(
        -1.0
    )  # blue dog
    grey = ImageFolder(tmp_path, image_size=16, channels=1)
    assert grey[0][0].shape == (1, 16, 16)


def test_unreadable_files_are_skipped_with_a_counted_warning(tmp_path):
    write_tree(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16, channels=3)
    assert len(ds) == 8  # both broken files are listed (they end in image extensions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]  # a full epoch never raises
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert (
        len(messages) == 2
        and "1 skipped so far" in messages[0]
        and "2 skipped so far" in messages[1]
    )
    assert len(ds.skipped) == 2
    assert all(img.shape == (3, 16, 16) for img, _ in items)
    broken = [
        i
        for i, (path, _) in enumerate(ds.files)
        if path.name in ("not_an_image.jpg", "truncated.png")
    ]
    for i in broken:
        assert ds.load(i) is None


def test_build_dataset_from_config(tmp_path):
    write_tree(tmp_path / "train", broken=False)
    write_tree(tmp_path / "val", broken=False)
    cfg = load_config(
        None,
        [
            "data.name=folder",
            f"data.root={tmp_path}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=16",
        ],
    )
    train = build_dataset(cfg.data, "train")
    test = build_dataset(cfg.data, "test")  # falls back to val/
    assert train.root == tmp_path / "train" and test.root == tmp_path / "val"
    bad = load_config(None, ["data.name=folder", f"data.root={tmp_path}", "data.num_classes=10"])
    with pytest.raises(ValueError, match="data.num_classes=2"):
        build_dataset(bad.data)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(
            load_config(None, ["data.name=folder", f"data.root={tmp_path / 'nope'}"]).data
        )
    single = tmp_path / "single"
    write_tree(single, broken=False)
    flat = load_config(None, ["data.name=folder", f"data.root={single}", "data.num_classes=2"])
    with pytest.raises(FileNotFoundError, match="no 'test' subfolder"):
        build_dataset(flat.data, "test")


def test_token_cache_drops_unreadable_images(tmp_path):
    """The encode-once path skips broken files for real (they are not replaced by a neighbour)."""
    from elt.masked.task import TokenDataset, encode_dataset
    from elt.tokenizers.fsq import FSQTokenizer

    write_tree(tmp_path / "data")
    cfg = load_config(
        None,
        [
            "data.name=folder",
            f"data.root={tmp_path / 'data'}",
            "data.num_classes=2",
            "data.channels=3",
            "data.image_size=16",
            "tokenizer.encode_batch_size=3",
            "data.hflip=true",
        ],
    )
    tok = FSQTokenizer(image_size=16, image_channels=3, levels=[4, 4], channels=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = encode_dataset(cfg, tok, tmp_path / "cache", progress=False)
        assert cache.shape == (8, 2, 4 * 4 + 1)
        dataset = TokenDataset(cache)
    assert len(dataset) == 6 and dataset.skipped == 2
    assert sorted(dataset.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    tokens, label = dataset[0]
    assert tokens.shape == (16,) and tokens.dtype == torch.long
    # the second variant is the mirror image's tokens
    image = ImageFolder(tmp_path / "data", 16, 3)[0][0]
    assert np.array_equal(cache[0, 1, :-1], tok.encode(image.flip(-1)[None]).flatten().numpy())
