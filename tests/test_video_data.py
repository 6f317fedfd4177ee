"""Video datasets: Moving Fashion-MNIST (determinism, bounds, labels, pixels, motion) and the config fields."""

import numpy as np
import pytest
import torch

from elt.config import ConfigError, load_config
from elt.data.fashion_mnist import load_arrays
from elt.data.moving_fmnist import MovingFashionMNIST, reflect


@pytest.fixture(scope="module")
def fmnist_test():
    return load_arrays(None, "test")


def test_clips_are_deterministic_per_seed_split_and_index():
    a = MovingFashionMNIST(split="test", frames=8, image_size=48, limit=20)
    b = MovingFashionMNIST(split="test", frames=8, image_size=48, limit=20)
    for i in (0, 7, 19):
        assert torch.equal(a[i][0], b[i][0])
    # the clip does not depend on access order, and different seeds/items give different trajectories
    assert torch.equal(a[7][0], MovingFashionMNIST(split="test", frames=8, image_size=48)[7][0])
    other = MovingFashionMNIST(split="test", frames=8, image_size=48, seed=1, limit=20)
    assert sum(np.array_equal(a.trajectory(i), other.trajectory(i)) for i in range(20)) < 3
    assert len({tuple(a.trajectory(i)[0]) for i in range(20)}) > 10


def test_shape_range_label_and_pixels_equal_the_source_sprite(fmnist_test):
    images, labels = fmnist_test
    data = MovingFashionMNIST(split="test", frames=16, image_size=64, limit=50)
    assert len(data) == 50
    for i in (0, 3, 49):
        video, label = data[i]
        assert video.shape == (1, 16, 64, 64) and video.dtype == torch.float32
        assert int(label) == int(labels[i])
        source = torch.from_numpy(images[i].astype(np.float32)) / 127.5 - 1
        traj = data.trajectory(i)
        for t, (row, col) in enumerate(traj):
            assert torch.equal(video[0, t, row:row + 28, col:col + 28], source)
            outside = video[0, t].clone()
            outside[row:row + 28, col:col + 28] = 5.0
            assert (outside[outside != 5.0] == -1.0).all()  # background is black everywhere else


@pytest.mark.parametrize("motion", ["bounce", "linear"])
@pytest.mark.parametrize("size", [32, 64])
def test_sprite_stays_within_the_canvas_and_moves_at_the_drawn_speed(motion, size):
    data = MovingFashionMNIST(split="test", frames=16, image_size=size, motion=motion, limit=200)
    high = size - 28
    moved = 0
    for i in range(200):
        traj = data.trajectory(i)
        assert traj.shape == (16, 2) and traj.min() >= 0 and traj.max() <= high
        step = np.abs(np.diff(traj, axis=0))
        assert step.max() <= 4  # speed <= 3 px/frame, plus rounding
        moved += int(step.sum() > 0)
    assert moved >= 190  # clips move


def test_bounce_reflects_and_linear_keeps_constant_velocity():
    assert np.allclose(reflect(np.array([0.0, 3.0, 10.0, 13.0, 20.0, 25.0, -2.0]), 10.0),
                       [0.0, 3.0, 10.0, 7.0, 0.0, 5.0, 2.0])
    data = MovingFashionMNIST(split="test", frames=16, image_size=64, motion="bounce", limit=300)
    high, reflections = 64 - 28, 0
    for i in range(300):
        traj = data.trajectory(i)
        for x in traj.T:
            d = np.diff(x)
            turns = np.nonzero(d[1:] * d[:-1] < 0)[0] + 1  # direction reverses at frame t
            reflections += len(turns)
            assert all(x[t] <= 3 or x[t] >= high - 3 for t in turns)  # ... only next to a wall
    assert reflections > 50  # 16 frames at 1..3 px/frame on a 36 px track: many clips hit a wall
    linear = MovingFashionMNIST(split="test", frames=16, image_size=64, motion="linear", limit=100)
    for i in range(100):
        for x in linear.trajectory(i).T:
            d = np.diff(x)  # a rounded straight line: steps of floor(v) or ceil(v), never reversing
            assert np.ptp(d) <= 1 and not (d.min() < 0 < d.max())


def test_resized_sprite_and_errors():
    data = MovingFashionMNIST(split="test", frames=4, image_size=32, sprite_size=14, limit=5)
    video, _ = data[0]
    row, col = data.trajectory(0)[0]
    assert torch.allclose(video[0, 0, row:row + 14, col:col + 14], data.sprite(0))
    assert data.sprite(0).shape == (14, 14)
    with pytest.raises(ValueError, match="motion"):
        MovingFashionMNIST(split="test", motion="spin", limit=1)
    with pytest.raises(ValueError, match="sprite_size"):
        MovingFashionMNIST(split="test", image_size=16, limit=1)
    with pytest.raises(ValueError, match="frames"):
        MovingFashionMNIST(split="test", frames=1, limit=1)


def test_config_fields_and_build_dataset():
    from elt.data.folders import build_dataset

    cfg = load_config(None, ["data.name=moving_fmnist", "data.frames=8", "data.image_size=32", "data.limit=10",
                             "data.motion=linear", "data.video_seed=3", "tokenizer.kind=fsq3d"])
    train = build_dataset(cfg.data, "train")
    assert isinstance(train, MovingFashionMNIST) and len(train) == 10
    assert train.motion == "linear" and train.seed == 3 and train[0][0].shape == (1, 8, 32, 32)
    test = build_dataset(cfg.data, "test")
    assert len(test) == 10000 and test.split == "test"
    with pytest.raises(ConfigError, match="data.frames >= 2"):
        load_config(None, ["data.name=moving_fmnist"])
    with pytest.raises(ConfigError, match="needs a video dataset"):
        load_config(None, ["data.frames=16"])
    with pytest.raises(ConfigError, match="data.motion"):
        load_config(None, ["data.name=moving_fmnist", "data.frames=8", "data.motion=spin"])
    with pytest.raises(ConfigError, match="data.fold"):
        load_config(None, ["data.fold=4"])
    with pytest.raises(ConfigError, match="sprite_size"):
        load_config(None, ["data.name=moving_fmnist", "data.frames=8", "data.image_size=16"])
    with pytest.raises(ConfigError, match="fsq3d"):
        load_config(None, ["data.name=moving_fmnist", "data.frames=8", "data.image_size=64"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["data.name=moving_fmnist", "data.frames=6", "data.image_size=64", "tokenizer.kind=fsq3d"])
