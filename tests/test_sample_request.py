"""One sampling request: checked when made, resolved once against the model (request, then the
config's ``sampling:`` section, then the paradigm's defaults), passed down unchanged."""

import dataclasses
import json

import numpy as np
import pytest

import elt
from elt.cli import main
from elt.core import request as request_lib
from elt.core.request import ResolvedRequest, SampleRequest
from elt.errors import ConfigError, UserError
from elt.sampling import balanced_labels


@pytest.fixture
def resolutions(monkeypatch):
    """Every call of the one resolver, with the request it resolved."""
    calls = []
    real = request_lib.resolve_request

    def counting(request, *args, **kwargs):
        calls.append(request)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(request_lib, "resolve_request", counting)
    return calls


@pytest.mark.parametrize(
    "model, extra",
    [
        ("demo:masked", ["--loops", "1,3", "--guidance", "1.5"]),
        ("demo:diffusion", ["--loops", "2"]),
    ],
)
def test_one_elt_sample_resolves_its_request_once(model, extra, resolutions, tmp_path):
    """Several operating points, several batches (batch size 1), the GFLOPs and the record: one
    resolution. The files hold what the convenience call ``generate(labels, loops, steps, seed)``
    gives for the same batch and seed (batch b: seed + b)."""
    out = tmp_path / "out"
    argv = ["sample", "--ckpt", model, "--num", "3", "--steps", "2", "--batch-size", "1"]
    assert main([*argv, *extra, "--seed", "5", "--out", str(out), "--no-progress"]) == 0
    assert len(resolutions) == 1, f"{len(resolutions)} resolutions: {resolutions}"
    record = json.loads((out / "samples.json").read_text())
    generator = elt.load(model)
    guidance = 1.5 if model == "demo:masked" else generator.config.sampling.guidance
    assert (record["steps"], record["guidance"], record["seed"]) == (2, guidance, 5)
    labels = balanced_labels(3, generator.num_classes)
    for label, name in record["files"].items():
        saved = np.load(out / name)["arr_0"]
        expected = np.concatenate(
            [
                generator.generate(
                    labels[b : b + 1], loops=int(label), steps=2, guidance=guidance, seed=5 + b
                )
                for b in range(3)
            ]
        )
        np.testing.assert_array_equal(saved, expected)
        gflops = generator.gflops_per_sample(loops=int(label), steps=2, guidance=guidance)
        assert record["gflops"][label] == pytest.approx(gflops)


def test_a_convenience_call_resolves_once_and_a_resolved_request_not_again(resolutions):
    generator = elt.load("demo:masked")
    labels = [0, 1]
    direct = generator.generate(labels, loops=2, steps=2, seed=3)
    assert len(resolutions) == 1
    resolved = generator.resolve_request(SampleRequest.one(2, steps=2, seed=3))
    assert len(resolutions) == 2
    again = generator.generate(labels, request=resolved)
    assert generator.gflops_per_sample(request=resolved) == generator.gflops_per_sample(2, 2)
    assert len(resolutions) == 3  # the last gflops_per_sample(2, 2) only
    np.testing.assert_array_equal(direct, again)


def test_resolution_order_request_then_config_then_paradigm(monkeypatch):
    masked = elt.load("demo:masked")
    assert masked.config.sampling.guidance == 2.0 and masked.config.sampling.precision == "bf16"
    resolved = masked.resolve_request(SampleRequest(points=(None, 2, "exit:0.1")))
    assert (resolved.steps, resolved.guidance, resolved.precision) == (12, 2.0, "bf16")
    assert resolved.plans[0] == [masked.trained_loops] * 12 and resolved.plans[1] == [2] * 12
    assert resolved.plans[2].max_loops == masked.trained_loops
    assert resolved.batch_size == request_lib.DEFAULT_BATCH_SIZE and resolved.compile is False
    asked = masked.resolve_request(SampleRequest(steps=3, guidance=1.0, precision="fp32"))
    assert (asked.steps, asked.guidance, asked.precision) == (3, 1.0, "fp32")
    masked.config.sampling.guidance = None  # the config leaves it: the paradigm's default (s = 1)
    masked.config.sampling.precision = None
    resolved = masked.resolve_request(SampleRequest())
    assert (resolved.guidance, resolved.precision) == (1.0, "fp32")

    diffusion = elt.load("demo:diffusion")
    diffusion.config.sampling.steps = None
    diffusion.config.sampling.precision = None
    resolved = diffusion.resolve_request(SampleRequest())
    assert resolved.steps == 50  # diffusion.config.SAMPLING_DEFAULTS
    assert resolved.precision == diffusion.config.train.precision  # trained precision
    assert resolved.sampler == diffusion.config.diffusion.sampler
    assert diffusion.resolve_request(SampleRequest(sampler="ddpm")).sampler == "ddpm"


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=0), "steps must be >= 1, got 0"),
        (dict(guidance=float("nan")), "guidance=nan is not allowed"),
        (dict(seed=-1), "seed=-1 is out of range"),
        (dict(precision="fp16"), "precision='fp16' is not allowed; allowed: fp32, bf16, auto"),
        (dict(batch_size=0), "batch size must be >= 1, got 0"),
        (dict(points=()), "no loop counts given"),
        (dict(points=(0,)), "loop"),
    ],
)
def test_a_bad_request_is_one_line_when_made(settings, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SampleRequest(**settings)


def test_a_request_names_only_the_settings_the_model_has():
    masked = elt.load("demo:masked")
    with pytest.raises(ConfigError, match="sampler='ddpm': this model has no sampler option"):
        masked.resolve_request(SampleRequest(sampler="ddpm"))
    resolved = masked.resolve_request(SampleRequest(points=(1, 2), steps=2))
    with pytest.raises(ValueError, match="holds 2 operating points"):
        masked.generate([0], request=resolved)
    with pytest.raises(ValueError, match="not both"):
        masked.generate([0], loops=1, request=resolved.at(0))
    assert isinstance(resolved.at(1), ResolvedRequest) and resolved.at(1).plan == [2, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.steps = 3
