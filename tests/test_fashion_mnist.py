"""Fashion-MNIST loading: real files from the Debian package, IDX parsing, and the not-found
error."""

import gzip
import struct

import numpy as np
import pytest

from elt.data import fashion_mnist
from elt.data.fashion_mnist import DataNotFoundError, FashionMNIST, read_idx


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "b").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "b")


def test_folder_given_by_root_padding_and_range(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 9]))
    data = FashionMNIST(tmp_path, image_size=32)
    x, y = data[4]
    assert x.shape == (1, 32, 32) and int(y) == 9
    assert x.min() >= -1 and x.max() <= 1
    assert np.allclose(x[0, 2:30, 2:30].numpy(), images[4] / 127.5 - 1, atol=1e-6)
    assert (x[0, :2] == -1).all()  # padded with black


def test_missing_files_error_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_PATH", tmp_path / "nowhere")
    monkeypatch.setattr(fashion_mnist, "_torchvision_download", lambda root: None)
    monkeypatch.delenv("ELT_DATA", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        FashionMNIST(tmp_path / "empty")
    message = str(info.value)
    assert (
        "dataset-fashion-mnist" in message
        and str(tmp_path / "empty") in message
        and "ELT_DATA" in message
    )


@pytest.mark.skipif(
    not fashion_mnist.DEBIAN_PATH.is_dir(), reason="needs apt-get install dataset-fashion-mnist"
)
def test_real_debian_files():
    train = FashionMNIST(split="train", image_size=28)
    test = FashionMNIST(split="test", image_size=28)
    assert len(train) == 60000 and len(test) == 10000
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
