"""Video datasets: Moving Fashion-MNIST (determinism, bounds, labels, pixels, motion), the config
fields, and the UCF-101 loader on tiny synthetic videos written with PyAV (split files, labels, clip
windows, padding, resizing, corrupt files)."""

import warnings

import numpy as np
import pytest
import torch

from elt.config import ConfigError, load_config
from elt.data.fashion_mnist import load_arrays
from elt.data.moving_fmnist import MovingFashionMNIST, reflect
from elt.data.ucf101 import UCF101, UnreadableVideoWarning, clip_indices, read_class_index


@pytest.fixture(scope="module")
def fmnist_test():
    return load_arrays(None, "test")


def test_clips_are_deterministic_per_seed_split_and_index():
    a = MovingFashionMNIST(split="test", frames=8, image_size=48, limit=20)
    b = MovingFashionMNIST(split="test", frames=8, image_size=48, limit=20)
    for i in (0, 7, 19):
        assert torch.equal(a[i][0], b[i][0])
    # the clip does not depend on access order, and different seeds/items give different
    # trajectories
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
            assert torch.equal(video[0, t, row : row + 28, col : col + 28], source)
            outside = video[0, t].clone()
            outside[row : row + 28, col : col + 28] = 5.0
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
    assert np.allclose(
        reflect(np.array([0.0, 3.0, 10.0, 13.0, 20.0, 25.0, -2.0]), 10.0),
        [0.0, 3.0, 10.0, 7.0, 0.0, 5.0, 2.0],
    )
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
    assert torch.allclose(video[0, 0, row : row + 14, col : col + 14], data.sprite(0))
    assert data.sprite(0).shape == (14, 14)
    with pytest.raises(ValueError, match="motion"):
        MovingFashionMNIST(split="test", motion="spin", limit=1)
    with pytest.raises(ValueError, match="sprite_size"):
        MovingFashionMNIST(split="test", image_size=16, limit=1)
    with pytest.raises(ValueError, match="frames"):
        MovingFashionMNIST(split="test", frames=1, limit=1)


def test_config_fields_and_build_dataset():
    from elt.data.datasets import build_dataset

    cfg = load_config(
        None,
        [
            "data.name=moving_fmnist",
            "data.frames=8",
            "data.image_size=32",
            "data.limit=10",
            "data.motion=linear",
            "data.video_seed=3",
            "tokenizer.kind=fsq3d",
        ],
    )
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
        load_config(
            None,
            [
                "data.name=moving_fmnist",
                "data.frames=6",
                "data.image_size=64",
                "tokenizer.kind=fsq3d",
            ],
        )


# ---- UCF-101 -------------------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def grey_level(k: int) -> int:
    """Grey value of frame k: frames are told apart by brightness."""
    return 20 + 10 * k


def write_video(av, path, frames: int, codec: str = "ffv1", size=(48, 40)):
    """A video whose frame k is uniformly grey at grey_level(k)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "1"}
        for k in range(frames):
            array = np.full((size[1], size[0], 3), grey_level(k), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
    av = pytest.importorskip("av")
    root = tmp_path_factory.mktemp("ucf")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(UCF_CLASSES))
    )
    videos = root / "UCF-101"
    # train: two readable videos per class; the second HandstandPushups one is spelled as in the
    # official lists (HandStand) while the list says Handstand, like the real archive's mismatch
    write_video(av, videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi", 20)
    write_video(av, videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g09_c01.mp4", 12, codec="mpeg4")
    write_video(av, videos / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi", 5)
    write_video(av, videos / "YoYo" / "v_YoYo_g08_c01.avi", 20)
    (videos / "YoYo" / "v_YoYo_g09_c01.avi").write_bytes(b"RIFF\x00\x00not a video" * 50)  # corrupt
    write_video(av, videos / "YoYo" / "v_YoYo_g01_c01.avi", 20)
    write_video(av, videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", 9)
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.mp4 1\n"
        "HandstandPushups/v_HandstandPushups_g08_c01.avi 2\n"
        "YoYo/v_YoYo_g09_c01.avi 3\n"
        "YoYo/v_YoYo_g08_c01.avi 3\n"
        "YoYo/v_YoYo_g42_c01.avi 3\n"
    )  # listed but missing
    (lists / "testlist01.txt").write_text(
        "YoYo/v_YoYo_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
    )
    return root


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """Which source frame each output frame shows, read back from its brightness."""
    grey = (clip.mean(dim=(0, 2, 3)) + 1) * 127.5
    return [int(round((g - 20) / 10)) for g in grey.tolist()]


def test_split_files_labels_and_missing_videos(ucf_root):
    with pytest.warns(UnreadableVideoWarning, match="1 videos listed"):
        train = UCF101(ucf_root, "train", frames=4, image_size=16)
    assert train.classes == UCF_CLASSES and train.num_classes == 3
    assert len(train) == 5 and train.labels.tolist() == [0, 0, 1, 2, 2]
    assert train.files[2][0].name == "v_HandStandPushups_g08_c01.avi"  # matched case-insensitively
    test = UCF101(ucf_root, "test", frames=4, image_size=16)
    assert test.labels.tolist() == [2, 0]  # test lists have no labels: taken from the class folder
    assert len(UCF101(ucf_root, "test", frames=4, image_size=16, limit=1)) == 1
    with pytest.raises(FileNotFoundError, match="testlist02"):
        UCF101(ucf_root, "test", fold=2)
    with pytest.raises(ValueError, match="fold"):
        UCF101(ucf_root, "test", fold=4)


def test_clip_window_stride_centre_and_padding(ucf_root):
    test = UCF101(ucf_root, "test", frames=4, image_size=16, frame_stride=3)
    clip, label = test[0]  # 20 frames, window spans 10: centred → starts at 5
    assert clip.shape == (3, 4, 16, 16) and clip.dtype == torch.float32 and label == 2
    assert clip.min() >= -1 and clip.max() <= 1
    assert frame_numbers(clip) == [5, 8, 11, 14]
    short, _ = UCF101(ucf_root, "test", frames=6, image_size=16, frame_stride=2)[1]  # 9 frames < 11
    assert frame_numbers(short) == [0, 2, 4, 6, 8, 8]  # the last frame repeats
    assert np.array_equal(clip_indices(5, 4, 2, 0), [0, 2, 4, 4])


def test_train_windows_are_seeded_and_mp4_decodes(ucf_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableVideoWarning)
        a = UCF101(ucf_root, "train", frames=3, image_size=16, frame_stride=2)
        b = UCF101(ucf_root, "train", frames=3, image_size=16, frame_stride=2)
        starts = {
            frame_numbers(
                UCF101(ucf_root, "train", frames=3, image_size=16, frame_stride=2, seed=s)[0][0]
            )[0]
            for s in range(8)
        }
    assert torch.equal(a[0][0], b[0][0])
    numbers = frame_numbers(a[0][0])
    assert numbers[1] - numbers[0] == 2 and numbers[2] - numbers[1] == 2 and 0 <= numbers[0] <= 15
    assert len(starts) > 2  # the start moves with the seed
    mp4, label = a[1]
    assert label == 0 and len(set(frame_numbers(mp4))) == 3


def test_corrupt_video_is_skipped_with_a_counted_warning(ucf_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableVideoWarning)
        train = UCF101(ucf_root, "train", frames=4, image_size=16)
    with pytest.warns(UnreadableVideoWarning, match="v_YoYo_g09_c01.avi .*1 skipped so far"):
        assert train.load(3) is None
    clip, label = train[3]  # the next readable video instead
    assert label == 2 and torch.equal(clip, train[4][0])
    assert train.skipped == {3}


def test_resize_centre_crop_and_build_dataset(ucf_root):
    from elt.config import load_config
    from elt.data.datasets import build_dataset

    cfg = load_config(
        None,
        [
            f"data.root={ucf_root}",
            "data.name=ucf101",
            "data.channels=3",
            "data.num_classes=3",
            "data.frames=4",
            "data.image_size=32",
            "data.frame_stride=2",
            "tokenizer.kind=fsq3d",
        ],
    )
    dataset = build_dataset(cfg.data, "test")
    clip, _ = dataset[0]
    assert isinstance(dataset, UCF101) and clip.shape == (3, 4, 32, 32)
    assert frame_numbers(clip) == [6, 8, 10, 12]
    with pytest.raises(ValueError, match="num_classes=3"):
        build_dataset(
            load_config(
                None,
                [
                    f"data.root={ucf_root}",
                    "data.name=ucf101",
                    "data.channels=3",
                    "data.frames=4",
                    "tokenizer.kind=fsq3d",
                ],
            ).data,
            "test",
        )
    with pytest.raises(ValueError, match="RGB"):
        build_dataset(
            load_config(
                None,
                [
                    f"data.root={ucf_root}",
                    "data.name=ucf101",
                    "data.frames=4",
                    "tokenizer.kind=fsq3d",
                ],
            ).data,
            "test",
        )
    assert read_class_index(ucf_root / "ucfTrainTestlist" / "classInd.txt") == UCF_CLASSES
