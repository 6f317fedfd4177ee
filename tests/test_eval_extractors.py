"""Feature extractors: the shipped Fashion-MNIST classifier, Inception (torch-fidelity) and I3D
(TorchScript), all offline; the pretrained-weights paths run on random weights of the real
layout."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from elt.eval import classifier as cls_mod
from elt.eval import inception, suites
from elt.eval.classifier import (
    FMNISTClassifier,
    file_sha256,
    load_classifier,
    to_model_input,
    train_classifier,
)
from elt.eval.i3d import I3DFeatures
from elt.eval.inception import (
    INCEPTION_FILE,
    INCEPTION_URL,
    InceptionFeatures,
    WeightsHashError,
    WeightsNotFoundError,
    check_sha256,
    resolve_inception_weights,
)


def fmnist_or_skip(split="test"):
    from elt.data.fashion_mnist import DataNotFoundError, load_arrays

    try:
        return load_arrays(None, split)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (make data)")


# -- the domain classifier -------------------------------------------------------------------------
def test_model_input_pads_28_to_32_with_background():
    images = np.full((2, 28, 28), 255, np.uint8)
    x = to_model_input(images)
    assert x.shape == (2, 1, 32, 32)
    assert (
        torch.all(x[:, :, 2:30, 2:30] == 1.0)
        and x[:, :, :2].eq(-1).all()
        and x[:, :, :, 30:].eq(-1).all()
    )
    same = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    assert torch.equal(
        to_model_input(same)[:, 0], torch.from_numpy(same[..., 0]).float() / 127.5 - 1
    )
    with pytest.raises(ValueError, match="28×28 or 32×32"):
        to_model_input(np.zeros((1, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="grey"):
        to_model_input(np.zeros((1, 32, 32, 3), np.uint8))


def test_shipped_classifier_is_small_recorded_and_matches_its_hash():
    record = cls_mod.shipped_record()
    weights = cls_mod.ASSETS / cls_mod.WEIGHTS_NAME
    assert record is not None and weights.is_file()
    assert weights.stat().st_size < 2 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]
    assert record["test_accuracy"] >= 0.90
    floor = record["floor"]
    assert floor["n"] == 10000 and floor["class_acc"] == pytest.approx(record["test_accuracy"])
    assert 0 < floor["fd_cls"] and 0.9 < floor["precision"] <= 1 and 0.9 < floor["coverage"] <= 1
    extractor = load_classifier()
    assert extractor.digest == record["sha256"]


def test_shipped_classifier_classifies_real_test_images():
    images, labels = fmnist_or_skip("test")
    out = load_classifier()(images[:2000])
    assert out.features.shape == (2000, 128) and out.logits.shape == (2000, 10)
    assert (out.logits.argmax(1) == labels[:2000]).mean() > 0.88
    # 28×28 input and the generators' padded 32×32 layout give the same features
    padded = np.pad(images[:50], ((0, 0), (2, 2), (2, 2)))[..., None]
    np.testing.assert_allclose(
        load_classifier()(padded).features, out.features[:50], rtol=1e-5, atol=1e-5
    )


def test_real_vs_real_floor_is_far_below_a_corrupted_set():
    images, labels = fmnist_or_skip("test")
    train_images, _ = fmnist_or_skip("train")
    ref = suites.Reference("test[:2000]", images=images[:2000], labels=labels[:2000])
    suite = suites.DomainSuite(
        load_classifier(), ref, floor_images=train_images[:4000], kid_subsets=10
    )
    floor = suite.floor(1000)
    noisy = np.clip(
        train_images[:1000].astype(int)
        + np.random.default_rng(0).integers(-80, 80, (1000, 28, 28)),
        0,
        255,
    ).astype(np.uint8)
    shuffled_labels = np.random.default_rng(1).permutation(10)[np.arange(1000) % 10]
    bad = suite.evaluate(noisy, shuffled_labels)
    assert floor["fd_cls"] * 3 < bad["fd_cls"]
    assert floor["kid"] < bad["kid"] and floor["precision"] > bad["precision"]
    assert floor["class_acc"] > 0.88 and bad["class_acc"] < 0.3


@pytest.mark.slow
def test_classifier_training_is_reproducible_and_learns(tmp_path):
    fmnist_or_skip("train")
    a = train_classifier(
        tmp_path / "a", epochs=1, batch_size=50, limit=2000, test_limit=1000, progress=False
    )
    b = train_classifier(
        tmp_path / "b", epochs=1, batch_size=50, limit=2000, test_limit=1000, progress=False
    )
    assert a["sha256"] == b["sha256"]
    assert a["test_accuracy"] > 0.6  # 2000 images, 40 steps: far above chance (0.1)
    assert (
        json.loads((tmp_path / "a" / cls_mod.RECORD_NAME).read_text())["test_accuracy"]
        == a["test_accuracy"]
    )
    assert load_classifier(tmp_path / "a" / cls_mod.WEIGHTS_NAME).digest == a["sha256"]


def test_missing_classifier_weights_name_the_command(tmp_path):
    with pytest.raises(cls_mod.ClassifierMissingError, match="elt eval train-classifier"):
        load_classifier(tmp_path / "nope.safetensors")


def test_classifier_parameter_budget():
    assert sum(p.numel() for p in FMNISTClassifier().parameters()) < 500_000  # < 2 MB as float32


# -- Inception (torch-fidelity) --------------------------------------------------------------------
@pytest.fixture
def no_inception_weights(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def test_missing_inception_weights_give_one_clear_error(no_inception_weights):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_inception_weights()
    message = str(info.value)
    assert (
        INCEPTION_FILE in message
        and INCEPTION_URL in message
        and inception.INCEPTION_ENV in message
    )
    assert "\n" not in message
    with pytest.raises(WeightsNotFoundError, match="--inception-weights"):
        InceptionFeatures(
            no_inception_weights / "missing.pth"
        )  # fails before touching torch-fidelity


def test_inception_weights_resolution_order(no_inception_weights, monkeypatch):
    tmp = no_inception_weights
    cached = tmp / "hub" / "checkpoints" / INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cache")
    assert resolve_inception_weights() == cached
    env_file = tmp / "env.pth"
    env_file.write_bytes(b"env")
    monkeypatch.setenv(inception.INCEPTION_ENV, str(env_file))
    assert resolve_inception_weights() == env_file
    explicit = tmp / "explicit.pth"
    explicit.write_bytes(b"explicit")
    assert resolve_inception_weights(explicit) == explicit
    monkeypatch.setenv(inception.INCEPTION_ENV, str(tmp / "gone.pth"))
    with pytest.raises(WeightsNotFoundError, match=inception.INCEPTION_ENV):
        resolve_inception_weights()


def test_full_sha256_check(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"some weights")
    digest = hashlib.sha256(b"some weights").hexdigest()
    assert check_sha256(path, digest) == digest
    with pytest.raises(WeightsHashError, match="6726825d"):
        check_sha256(path, inception.INCEPTION_SHA256)
    with pytest.raises(ValueError, match="full SHA-256"):  # a prefix is not enough
        check_sha256(path, digest[:8])


def random_inception_file(path, monkeypatch):
    """torch-fidelity's Inception with random weights, saved like the real .pth (same keys and
    shapes)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as patch:  # build without loading (the real loader would download)
        patch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("random", ["2048"])
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.inception
def test_inception_features_on_random_weights(tmp_path, monkeypatch):
    pytest.importorskip(
        "torch_fidelity",
        reason="torch-fidelity needs torchvision, which has no build for the CPU "
        "torch wheel: run 'make test-inception' (the torch + torchvision pair)",
    )
    weights = random_inception_file(tmp_path / INCEPTION_FILE, monkeypatch)
    with pytest.raises(WeightsHashError):  # random weights are not the real file
        InceptionFeatures(weights)
    extractor = InceptionFeatures(weights, sha256=None, batch_size=2)
    grey = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    rgb = np.repeat(grey, 3, axis=-1)
    suite = suites.InceptionSuite(extractor, suites.Reference("rgb", images=rgb), k=1)
    values = suite.evaluate(
        grey
    )  # grey images are fed as repeated RGB: the same features as the reference
    out = suite.reference_features()
    assert out.features.shape == (3, 2048) and out.logits.shape == (3, 1008)
    assert np.isfinite(out.features).all() and out.features.std() > 0
    assert (
        values["fid"] == pytest.approx(0.0, abs=1e-3)
        and values["precision"] == values["recall"] == 1.0
    )
    assert values["is"] >= 1.0 and values["is_std"] == 0.0


# -- I3D (TorchScript) -----------------------------------------------------------------------------
class TinyI3D(nn.Module):
    """The StyleGAN-V i3d_torchscript.pt contract at toy size: N×3×T×H×W in [0, 255] → N×400."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 400)

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = nn.functional.interpolate(
                x, size=(x.shape[2], 16, 16), mode="trilinear", align_corners=False
            )
        h = self.conv(x).mean(dim=(2, 3, 4))
        logits = self.fc(h)
        return logits if return_features else logits.softmax(-1)


class PlainI3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3, 4)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_i3d_torchscript_contracts(tmp_path):
    torch.manual_seed(0)
    videos = np.random.default_rng(0).integers(0, 256, (5, 4, 12, 12, 1), dtype=np.uint8)
    x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float().expand(-1, 3, -1, -1, -1)
    tiny = torch.jit.script(TinyI3D())
    tiny.save(str(tmp_path / "i3d.pt"))
    with pytest.raises(WeightsHashError):  # not StyleGAN-V's file: refused before loading
        I3DFeatures(tmp_path / "i3d.pt")
    out = I3DFeatures(tmp_path / "i3d.pt", batch_size=2, sha256=file_sha256(tmp_path / "i3d.pt"))(
        videos
    )
    assert out.features.shape == (5, 400)
    np.testing.assert_allclose(
        out.features,
        tiny(x, rescale=True, resize=True, return_features=True).detach(),
        rtol=1e-5,
        atol=1e-6,
    )
    plain = torch.jit.script(PlainI3D())
    plain.save(str(tmp_path / "plain.pt"))
    extractor = I3DFeatures(tmp_path / "plain.pt", sha256=file_sha256(tmp_path / "plain.pt"))
    assert not extractor.stylegan_v_contract
    np.testing.assert_allclose(
        extractor(videos).features, plain(x / 127.5 - 1).detach(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_fvd_suite_and_missing_i3d(tmp_path, monkeypatch):
    torch.jit.script(TinyI3D()).save(str(tmp_path / "i3d.pt"))
    monkeypatch.setenv("ELT_I3D_WEIGHTS", str(tmp_path / "i3d.pt"))
    monkeypatch.setenv(
        "ELT_I3D_SHA256", file_sha256(tmp_path / "i3d.pt")
    )  # a deliberately pinned other file
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (40, 4, 12, 12, 3), dtype=np.uint8)
    suite = suites.FVDSuite(I3DFeatures(), suites.Reference("real", images=real))
    assert suite.evaluate(real)["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert suite.evaluate(real // 4)["fvd"] > 1e-3
    monkeypatch.delenv("ELT_I3D_WEIGHTS")
    with pytest.raises(WeightsNotFoundError, match="ELT_I3D_WEIGHTS"):
        I3DFeatures()
    with pytest.raises(WeightsNotFoundError, match="not found"):
        I3DFeatures(tmp_path / "none.pt")


# -- references ------------------------------------------------------------------------------------
def test_reference_npz_stats_and_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    mu, sigma = rng.normal(size=4), np.eye(4)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    ref = suites.load_reference(tmp_path / "stats.npz")
    assert ref.images is None and np.array_equal(ref.mu, mu)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "batch.npz", images, mu=mu, sigma=sigma
    )  # ADM reference batch: arr_0 + stats
    assert suites.load_reference(tmp_path / "batch.npz").images.shape == (3, 8, 8, 3)
    folder = tmp_path / "real"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i}.png")
    assert np.array_equal(suites.load_reference(folder).images, images)
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="neither mu/sigma nor arr_0"):
        suites.load_reference(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        suites.load_reference(tmp_path / os.sep.join(["no", "where.npz"]))
