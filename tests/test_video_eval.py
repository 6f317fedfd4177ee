"""Video metrics on uint8 N×T×H×W×C arrays: sprite-centred crops, the motion check (static and
shuffled clips score worse than real ones), class consistency, FVD wiring, and `elt eval video`."""

import json

import numpy as np
import pytest

from elt.cli import main
from elt.eval.classifier import Features, ImageFormatError, load_classifier
from elt.eval.video import (
    VideoFormatError,
    VideoSuite,
    crop_frames,
    real_data_geometry,
    shuffled_videos,
    sprite_centres,
    static_videos,
    trajectory_descriptors,
)
from video_stub import moving_garments, moving_squares


@pytest.fixture(scope="module")
def fmnist():
    from elt.data.fashion_mnist import load_arrays

    images, labels = load_arrays(None, "test")
    return images[:600], labels[:600]


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_centres_follow_the_sprite():
    videos, _, positions = moving_squares(5, frames=10, size=32, sides=(6,), seed=1)
    centres = sprite_centres(videos)
    assert np.allclose(
        centres, np.round(positions) + 2.5
    )  # a 6-px square's centre is 2.5 px from its corner
    empty = np.zeros((1, 3, 16, 16, 1), np.uint8)
    assert np.allclose(
        sprite_centres(empty), 7.5
    )  # no sprite: the canvas centre (reads as no motion)


def test_crop_reproduces_the_classifier_input_and_keeps_the_sprite(fmnist):
    images, _ = fmnist
    videos, positions = moving_garments(images[:20], frames=6, size=64, seed=2)
    crops = crop_frames(videos)
    assert crops.shape == (20, 6, 32, 32) and crops.dtype == np.uint8
    # the garment is inside its crop: a lopsided one (centre of mass > 2 px off its box centre) may
    # lose a faint edge, never more than a few per cent of its ink
    kept = crops.reshape(120, -1).sum(1) / videos.reshape(120, -1).sum(1)
    assert kept.min() > 0.97 and np.median(kept) == 1.0
    # a sprite whose centre of mass is its box centre comes out as Fashion-MNIST's 28→32 padding
    square = np.zeros((1, 1, 64, 64, 1), np.uint8)
    square[0, 0, 10:38, 20:48] = 200
    expected = np.zeros((32, 32), np.uint8)
    expected[2:30, 2:30] = 200
    assert np.array_equal(crop_frames(square)[0, 0], expected)
    # near a wall the crop is padded with background, never wrapped
    corner = np.zeros((1, 1, 64, 64, 1), np.uint8)
    corner[0, 0, :4, :4] = 255
    assert crop_frames(corner).sum() == corner.sum()


def test_crops_classify_like_the_native_images(fmnist, classifier):
    images, labels = fmnist
    videos, _ = moving_garments(images[:300], frames=4, size=64, seed=3)
    crops = crop_frames(videos).reshape(-1, 32, 32)
    crop_acc = (classifier(crops).logits.argmax(1) == np.repeat(labels[:300], 4)).mean()
    native_acc = (
        classifier(images[:300]).logits.argmax(1) == labels[:300]
    ).mean()  # 28 px, padded to 32
    assert crop_acc >= native_acc - 0.02 and crop_acc > 0.85


def test_motion_check_ranks_real_above_static_and_shuffled():
    real, _, _ = moving_squares(200, frames=16, size=64, sides=(10, 14), seed=0)
    other, _, _ = moving_squares(200, frames=16, size=64, sides=(10, 14), seed=1)
    suite = VideoSuite(real)  # motion only (no classifier)
    scores = {
        name: suite.evaluate(v)["motion_fd"]
        for name, v in [
            ("real", other),
            ("static", static_videos(other)),
            ("shuffled", shuffled_videos(other, seed=4)),
        ]
    }
    floor = suite.floor()["motion_fd"]
    assert scores["real"] < 1.0 and floor < 1.0
    assert scores["static"] > 10 * max(scores["real"], floor)
    assert scores["shuffled"] > 10 * max(scores["real"], floor)
    # what the descriptors see: no speed when static, erratic acceleration when shuffled
    static = trajectory_descriptors(sprite_centres(static_videos(other)))
    shuffled = trajectory_descriptors(sprite_centres(shuffled_videos(other)))
    steady = trajectory_descriptors(sprite_centres(other))
    assert static[:, 0].max() == 0
    assert np.median(shuffled[:, 2]) > 3 * np.median(steady[:, 2])


def test_shuffling_changes_every_clip_but_keeps_its_frames():
    videos, _, _ = moving_squares(6, frames=5, size=16, sides=(4,), seed=0, speed=(2.0, 3.0))
    shuffled = shuffled_videos(videos, seed=0)
    for a, b in zip(videos, shuffled, strict=True):
        assert not np.array_equal(a, b)
        assert sorted(map(bytes, a)) == sorted(map(bytes, b))


def test_frame_metrics_consistency_and_accuracy(fmnist, classifier):
    images, labels = fmnist
    real, _ = moving_garments(images[:200], frames=6, seed=0)
    fake, _ = moving_garments(images[200:400], frames=6, seed=1)
    suite = VideoSuite(real, classifier)
    good = suite.evaluate(fake, labels[200:400])
    assert good["consistency"] == 1.0  # the same garment in every frame
    assert good["video_acc"] > 0.85 and good["frame_acc"] == pytest.approx(good["video_acc"])
    # a clip whose garment switches class halfway is inconsistent
    other = np.array([np.flatnonzero(labels[400:600] != y)[0] + 400 for y in labels[200:400]])
    switch, _ = moving_garments(images[other], frames=6, seed=1)
    morph = fake.copy()
    morph[:, 3:] = switch[:, 3:]
    bad = suite.evaluate(morph, labels[200:400])
    assert bad["consistency"] < 0.75 < good["consistency"]
    # wrong labels: accuracy falls, distribution metrics do not move
    wrong = suite.evaluate(fake, (labels[200:400] + 1) % 10)
    assert wrong["video_acc"] < 0.1 and wrong["fd_cls"] == pytest.approx(good["fd_cls"])
    # per-frame FD sees content: noise instead of garments is far from real
    noise = np.random.default_rng(0).integers(0, 256, fake.shape, dtype=np.uint8)
    assert suite.evaluate(noise)["fd_cls"] > 5 * good["fd_cls"]
    assert suite.floor(labels[:200])["video_acc"] > 0.85


def test_fvd_uses_the_i3d_extractor():
    class ToyI3D:
        def __call__(self, videos, progress=False):
            x = videos.astype(np.float64)
            return Features(
                np.stack([x.mean((1, 2, 3, 4)), x.std((1, 2, 3, 4)), x[:, 0].mean((1, 2, 3))], 1)
            )

    real, _, _ = moving_squares(40, frames=6, size=16, sides=(4, 6), seed=0)
    suite = VideoSuite(real, i3d=ToyI3D())
    assert suite.evaluate(real)["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert suite.evaluate(255 - real)["fvd"] > 100


def test_bad_inputs_fail_with_clear_errors(classifier):
    real, _, _ = moving_squares(8, frames=4, size=32, seed=0)
    with pytest.raises(VideoFormatError, match="uint8 videos"):
        VideoSuite(real.astype(np.float32))
    with pytest.raises(VideoFormatError, match="uint8 videos"):
        VideoSuite(real[:, 0])
    with pytest.raises(ImageFormatError, match="C=3"):
        VideoSuite(np.repeat(real, 3, axis=-1), classifier)
    suite = VideoSuite(real)
    with pytest.raises(VideoFormatError, match="real ones"):
        suite.evaluate(real[:, :3])
    with pytest.raises(VideoFormatError, match="3 labels for 8"):
        VideoSuite(real, classifier).evaluate(real, np.zeros(3))


def test_cli_writes_json_and_plot(fmnist, tmp_path, capsys):
    images, labels = fmnist
    real, _ = moving_garments(images[:60], frames=6, seed=0)
    np.savez(tmp_path / "real.npz", real, labels[:60])
    samples = tmp_path / "samples"
    samples.mkdir()
    fake, _ = moving_garments(images[60:100], frames=6, seed=1)
    np.savez(samples / "samples_L1.npz", static_videos(fake), labels[60:100])
    np.savez(samples / "samples_L3.npz", fake, labels[60:100])
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "video",
                "--samples",
                str(samples),
                "--real",
                str(tmp_path / "real.npz"),
                "--out",
                str(out),
                "--controls",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "video_eval.json").read_text())
    rows = {r["loops"]: r for r in result["rows"]}
    assert sorted(rows) == [1, 3]
    assert rows[1]["motion_fd"] > 10 * rows[3]["motion_fd"]  # the static "L=1" samples are caught
    assert rows[3]["video_acc"] > 0.8 and result["floor"]["consistency"] == 1.0
    controls = result[
        "controls"
    ]  # held-out real clips, made static / shuffled: right frames, wrong motion
    assert controls["shuffled"]["motion_fd"] > 10 * result["floor"]["motion_fd"]
    assert controls["static"]["motion_fd"] > 10 * result["floor"]["motion_fd"]
    assert controls["static"]["fd_cls"] < 2 * result["floor"]["fd_cls"]
    assert (out / "video_eval.png").stat().st_size > 0
    assert "motion_fd" in capsys.readouterr().out
    assert main(["eval", "video", "--samples", str(samples), "--out", str(out)]) == 2
    assert (
        main(
            [
                "eval",
                "video",
                "--samples",
                str(samples),
                "--real",
                str(tmp_path / "real.npz"),
                "--loops",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )


def test_real_data_geometry_follows_the_samples_training_data(tmp_path):
    def geometry(**flags):
        return real_data_geometry(tmp_path, **flags)

    assert geometry() == ("bounce", 28)  # no samples.json: the defaults
    (tmp_path / "samples.json").write_text(
        json.dumps({"data": {"name": "moving_fmnist", "sprite_size": 20, "motion": "linear"}})
    )
    assert geometry() == ("linear", 20)
    assert geometry(sprite_size=14, motion="bounce") == ("bounce", 14)  # flags win
    (tmp_path / "samples.json").write_text(
        json.dumps({"data": {"name": "ucf101", "sprite_size": 20}})
    )
    assert geometry() == ("bounce", 28)  # other data sets say nothing about sprites
