"""diffusers pipelines over elt's generators: images equal ``elt.load(...).generate`` bit for bit on
every shipped model at several loop operating points, the seed rule of ``generator=``, the output's
loops and GFLOPs, save_pretrained/from_pretrained round trips (a latent model with its
AutoencoderKL too), elt's solver behind the scheduler interface, and one-line errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import elt  # noqa: E402
from elt.core import rng  # noqa: E402
from elt.core.generator import to_uint8  # noqa: E402
from elt.core.request import SampleRequest  # noqa: E402
from elt.errors import UserError  # noqa: E402
from elt.inference.demo_models import demo_models  # noqa: E402
from elt.pipelines import (  # noqa: E402
    ELTDiffusionPipeline,
    ELTMaskedPipeline,
    ELTPipelineOutput,
    ELTScheduler,
    load_pipeline,
)
from elt.runtime import autocast_context  # noqa: E402

STEPS = 4


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_uint8(images) -> np.ndarray:
    """PIL images (or lists of frames) → uint8 N×H×W×C (N×T×H×W×C), exactly."""
    if isinstance(images, np.ndarray):
        return np.round(images * 255).astype(np.uint8)
    if isinstance(images, torch.Tensor):
        return np.round(images.movedim(-3, -1).numpy() * 255).astype(np.uint8)

    def one(image):
        array = np.asarray(image)
        return array[..., None] if array.ndim == 2 else array

    if isinstance(images[0], list):
        return np.stack([np.stack([one(f) for f in clip]) for clip in images])
    return np.stack([one(i) for i in images])


def operating_points(trained_loops: int) -> list:
    return [1, trained_loops, f"{trained_loops}:1", "2x2+1x2", [1, 2, 2, 1], "exit:0.1"]


@pytest.mark.parametrize("name", sorted(demo_models()))
def test_pipeline_images_equal_elt_load_on_every_shipped_model(name):
    """The target of issue 30: max abs difference 0, several loop operating points, every shipped
    model (masked, diffusion, vanilla variants, video)."""
    reference = elt.load(f"demo:{name}")
    pipe = quiet(load_pipeline(f"demo:{name}"))
    assert isinstance(
        pipe, ELTMaskedPipeline if reference.config.paradigm == "masked" else ELTDiffusionPipeline
    )
    assert pipe.elt_generator is not reference  # an independent load
    labels = [0, 7]
    for i, point in enumerate(operating_points(reference.trained_loops)):
        output_type = ("pil", "np", "pt")[i % 3]
        out = pipe(
            class_labels=labels,
            num_inference_steps=STEPS,
            generator=11 + i,
            loops=point,
            output_type=output_type,
        )
        want, used = reference.generate(labels, point, STEPS, seed=11 + i, return_loops=True)
        got = as_uint8(out.images)
        assert got.shape == want.shape, (point, output_type)
        assert np.abs(got.astype(int) - want.astype(int)).max() == 0, (name, point, output_type)
        np.testing.assert_array_equal(out.loops, used)
        assert out.gflops == pytest.approx(
            reference.gflops_per_sample(point, STEPS, loops_used=used)
        )
        assert out.seed == 11 + i and out.steps == STEPS


def test_output_types_hold_the_same_image_and_video_plays_as_frame_lists():
    pipe = quiet(ELTMaskedPipeline.from_pretrained("demo:video"))
    runs = {
        t: pipe([1, 2], STEPS, generator=3, output_type=t, loops=2).images
        for t in ("pil", "np", "pt")
    }
    frames = elt.load("demo:video").generate([1, 2], 2, STEPS, seed=3)  # N×T×H×W×C
    assert isinstance(runs["pil"], list) and len(runs["pil"][0]) == frames.shape[1]
    assert runs["np"].dtype == np.float32 and runs["np"].shape == frames.shape
    assert tuple(runs["pt"].shape) == (2, frames.shape[1], frames.shape[-1], *frames.shape[2:4])
    for images in runs.values():
        np.testing.assert_array_equal(as_uint8(images), frames)


def test_generator_maps_to_elt_seed_rule():
    pipe = quiet(ELTMaskedPipeline.from_pretrained("demo:masked"))
    reference = elt.load("demo:masked")
    labels = [3, 4, 5]
    fresh = torch.Generator().manual_seed(21)
    got = as_uint8(pipe(labels, STEPS, generator=fresh, output_type="np").images)
    np.testing.assert_array_equal(got, reference.generate(labels, steps=STEPS, seed=21))
    # the call drew from the generator: reusing it gives new images, the seed drawn from it
    state = fresh.get_state()
    expected_seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().set_state(state)))
    again = pipe(labels, STEPS, generator=fresh, output_type="np")
    assert again.seed == expected_seed
    np.testing.assert_array_equal(
        as_uint8(again.images), reference.generate(labels, steps=STEPS, seed=expected_seed)
    )
    assert not np.array_equal(as_uint8(again.images), got)
    # one generator per image = elt's per-sample streams (seeds=[...])
    per_image = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    out = pipe(labels, STEPS, generator=per_image, output_type="np")
    np.testing.assert_array_equal(
        as_uint8(out.images), reference.generate(labels, steps=STEPS, seeds=[5, 6, 7])
    )
    assert out.seed == [5, 6, 7]
    # None: a fresh seed, recorded and reproducible
    drawn = pipe(labels[:1], STEPS, output_type="np")
    np.testing.assert_array_equal(
        as_uint8(drawn.images), reference.generate(labels[:1], steps=STEPS, seed=drawn.seed)
    )


def test_gflops_follow_the_loops_actually_used():
    pipe = quiet(ELTDiffusionPipeline.from_pretrained("demo:diffusion"))
    cheap = pipe([1], STEPS, generator=0, loops=1, output_type="np")
    full = pipe([1], STEPS, generator=0, loops=4, output_type="np")
    assert (cheap.loops == 1).all() and (full.loops == 4).all()
    assert cheap.gflops < full.gflops
    gen = pipe.elt_generator
    assert full.gflops == pytest.approx(gen.gflops_per_sample(4, STEPS))
    assert pipe([1], STEPS, guidance_scale=1.0, generator=0, loops=4).gflops == pytest.approx(
        full.gflops / 2
    )


@pytest.mark.parametrize("name", ["masked", "diffusion"])
def test_save_pretrained_from_pretrained_round_trip(tmp_path, name):
    cls = ELTMaskedPipeline if name == "masked" else ELTDiffusionPipeline
    pipe = quiet(cls.from_pretrained(f"demo:{name}"))
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    assert (tmp_path / "pipe" / "transformer" / "config.json").is_file()
    loaded = quiet(cls.from_pretrained(tmp_path / "pipe"))
    before = pipe.transformer.state_dict()
    after = loaded.transformer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    want = elt.load(f"demo:{name}").generate([2, 9], "exit:0.1", STEPS, seed=4)
    got = loaded([2, 9], STEPS, generator=4, loops="exit:0.1", output_type="np").images
    np.testing.assert_array_equal(as_uint8(got), want)
    # the generic loader picks the class from model_index.json
    assert type(load_pipeline(tmp_path / "pipe")) is cls


def test_elt_sources_take_elts_load_options_only():
    pipe = ELTMaskedPipeline.from_pretrained("demo:masked", overrides=["sampling.steps=3"])
    assert pipe([0], generator=0).steps == 3
    with pytest.raises(UserError, match="torch_dtype not allowed; allowed: device, ema, overrides"):
        ELTMaskedPipeline.from_pretrained("demo:masked", torch_dtype=torch.float16)


def test_wrong_pipeline_class_is_one_line(tmp_path):
    with pytest.raises(UserError, match="masked model.*ELTMaskedPipeline"):
        ELTDiffusionPipeline.from_pretrained("demo:masked")
    quiet(ELTDiffusionPipeline.from_pretrained("demo:diffusion")).save_pretrained(tmp_path / "d")
    with pytest.raises(UserError, match="diffusion model.*ELTDiffusionPipeline"):
        ELTMaskedPipeline.from_pretrained(tmp_path / "d")


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"loops": "sometimes"}, "invalid loops 'sometimes'; allowed"),
        ({"loops": 0}, "loop counts must be >= 1"),
        ({"loops": "3x1+1x1"}, "covers 2 steps but sampling uses 4"),
        ({"class_labels": [0, 10]}, "class_labels holds 10; allowed: integers 0..9"),
        ({"class_labels": [1.5]}, "class_labels holds 1.5; allowed"),
        ({"class_labels": []}, "class_labels is empty"),
        ({"output_type": "jpg"}, "output_type='jpg' is not known; allowed: pil, np, pt"),
        ({"generator": "seven"}, "generator='seven' is not allowed; allowed: a torch.Generator"),
        ({"generator": [1, 2, 3]}, "generator is a list of 3 for 2 images"),
        ({"num_inference_steps": 0}, "num_inference_steps=0 is not allowed"),
        ({"guidance_scale": float("nan")}, "guidance_scale=nan is not allowed"),
    ],
)
def test_bad_arguments_are_one_line_user_errors(kwargs, fragment):
    pipe = quiet(ELTMaskedPipeline.from_pretrained("demo:masked"))
    call = {"class_labels": [0, 1], "num_inference_steps": STEPS, **kwargs}
    with pytest.raises(UserError) as info:
        pipe(**call)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_bad_scheduler_settings_are_one_line():
    with pytest.raises(UserError, match="sampler='heun' is not known; allowed: ddim, ddpm"):
        ELTScheduler(sampler="heun")
    with pytest.raises(UserError, match="eta=2"):
        ELTScheduler(eta=2)
    pipe = ELTDiffusionPipeline.from_pretrained("demo:diffusion")
    pipe.scheduler = ELTScheduler(process="flow")
    with pytest.raises(UserError, match="process='flow' does not match the model's 'ddpm'"):
        pipe([0], STEPS)


def test_the_scheduler_interface_reproduces_elt_sampling():
    """elt's solver wrapped as a diffusers scheduler: a hand-written diffusers loop (set_timesteps,
    the network, scheduler.step) gives elt's images exactly."""
    pipe = ELTDiffusionPipeline.from_pretrained("demo:diffusion")
    gen = pipe.elt_generator
    labels = torch.tensor([1, 5])
    seed, loops, guidance = 8, 2, 2.0
    streams = rng.make_streams(seed, None, len(labels), gen.device)
    z = rng.randn((len(labels), *gen.data_shape), streams, gen.device)
    pipe.scheduler.set_timesteps(STEPS)
    assert len(pipe.scheduler.timesteps) == STEPS and float(pipe.scheduler.timesteps[0]) == 1.0
    precision = gen.resolve_request(SampleRequest()).precision  # the model's sampling precision
    with torch.no_grad(), autocast_context(gen.device, precision):
        for t in pipe.scheduler.timesteps:
            out = gen.guided(z, t.repeat(len(labels)), labels, loops, guidance).float()
            z = pipe.scheduler.step(out, t, z, generator=streams).prev_sample
    want = elt.load("demo:diffusion").generate(labels, loops, STEPS, guidance, seed=seed)
    np.testing.assert_array_equal(to_uint8(z), want)


def test_swapping_the_scheduler_changes_the_solver_as_elt_would():
    pipe = quiet(ELTDiffusionPipeline.from_pretrained("demo:diffusion"))
    pipe.scheduler = ELTScheduler.from_config(pipe.scheduler.config, sampler="ddpm")
    got = as_uint8(pipe([4, 6], STEPS, generator=2, loops=3, output_type="np").images)
    want = elt.load("demo:diffusion", overrides=["diffusion.sampler=ddpm"]).generate(
        [4, 6], 3, STEPS, seed=2
    )
    np.testing.assert_array_equal(got, want)
    ddim = elt.load("demo:diffusion").generate([4, 6], 3, STEPS, seed=2)
    assert not np.array_equal(got, ddim)


def test_return_dict_false_and_the_output_class():
    pipe = quiet(ELTMaskedPipeline.from_pretrained("demo:masked"))
    (images,) = pipe([0], STEPS, generator=1, return_dict=False)
    out = pipe([0], STEPS, generator=1)
    assert isinstance(out, ELTPipelineOutput)
    np.testing.assert_array_equal(np.asarray(images[0]), np.asarray(out.images[0]))


# -- a latent-space model: the VAE is a diffusers AutoencoderKL component ------------------------
def latent_checkpoint(tmp_path):
    from diffusers import AutoencoderKL

    from elt.config import load_config
    from elt.diffusion.task import build_generator
    from elt.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        scaling_factor=0.5,
    ).save_pretrained(tmp_path / "vae")
    cfg = load_config(
        None,
        [
            "paradigm=diffusion",
            "model.width=32",
            "model.heads=2",
            "model.unique_layers=2",
            "model.loops=3",
            "data.num_classes=4",
            "data.image_size=16",
            "data.channels=3",
            "diffusion.patch_size=2",
            "diffusion.space=latent",
            f"diffusion.vae_path={tmp_path / 'vae'}",
            "sampling.steps=3",
            "optimizer.lr=1e-5",  # (a float JSON writes in exponent form: the Hub config reads it)
        ],
    )
    generator = build_generator(cfg)
    with torch.no_grad():  # zero-initialised layers would make the comparison trivial
        for index, (_, p) in enumerate(generator.named_parameters()):
            p.normal_(std=0.05, generator=torch.Generator().manual_seed(index))
    return save_checkpoint(tmp_path / "run", 1, cfg, generator)


def test_latent_model_pipeline_has_an_autoencoderkl_and_round_trips(tmp_path):
    from diffusers import AutoencoderKL

    ckpt = latent_checkpoint(tmp_path)
    pipe = quiet(ELTDiffusionPipeline.from_pretrained(str(ckpt)))
    assert isinstance(pipe.vae, AutoencoderKL)
    assert pipe.scheduler.config.clip_denoised is False  # elt clamps x̂0 in pixel space only
    reference = elt.load(ckpt)
    for point in (1, 3, "exit:0.2"):
        want = reference.generate([0, 3], point, seed=6)
        got = pipe([0, 3], generator=6, loops=point, output_type="np").images
        np.testing.assert_array_equal(as_uint8(got), want)
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "vae" / "config.json").is_file()
    loaded = quiet(ELTDiffusionPipeline.from_pretrained(tmp_path / "pipe"))
    got = loaded([0, 3], generator=6, loops=3, output_type="np").images
    np.testing.assert_array_equal(as_uint8(got), reference.generate([0, 3], 3, seed=6))
    loaded.vae = None
    with pytest.raises(UserError, match="needs its vae component"):
        loaded([0])


@pytest.mark.slow
def test_the_docs_page_python_snippets_run(tmp_path, monkeypatch):
    """docs/pipelines.md's ```python blocks run as written, in order (the push example is a ```py
    block: it needs the network)."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "pipelines.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) >= 5 and not any("push_to_hub(" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs_pipelines"})
    assert (tmp_path / "masked_L2.png").is_file() and (tmp_path / "clip.gif").is_file()
    assert (tmp_path / "elt-diffusion" / "README.md").is_file()
