"""``elt app`` without a browser: what it loads, how it checks typed values, what it generates and
encodes, and that nothing outside the command imports Gradio. The page in a real browser:
test_app_browser.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from elt.app.models import (
    EXTRA_LOOPS,
    InputError,
    check_request,
    encode,
    generate,
    load_models,
    shipped_checkpoints,
    strip,
    write_media,
)
from elt.cli import main
from elt.core.schedule import AdaptiveExit, Ramp, resolve

SRC = str(Path(__file__).resolve().parents[1] / "src")


class FakeGenerator:
    """The public surface ``elt app`` uses, with a video or image output."""

    def __init__(self, num_classes=3, loops=2, video=False):
        self.num_classes, self.trained_loops, self.video = num_classes, loops, video
        self.config = SimpleNamespace(
            paradigm="diffusion",
            data=SimpleNamespace(name="folder"),
            sampling=SimpleNamespace(steps=5, guidance=2.0),
        )

    def gflops_per_sample(self, loops=None, steps=None, guidance=None, loops_used=None):
        return 0.5 * float(np.mean(loops_used))

    def generate(
        self,
        labels,
        loops=None,
        steps=None,
        guidance=None,
        seed=None,
        progress=False,
        return_loops=False,
    ):
        plan = resolve(loops, steps or 5, self.trained_loops)
        rng = np.random.default_rng([seed, *plan, *labels])
        shape = (len(labels), 4, 8, 6, 3) if self.video else (len(labels), 8, 6, 1)
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        return (images, np.tile(plan, (len(labels), 1))) if return_loops else images


def fake_models(tmp_path, **kwargs):
    return load_models([str(tmp_path)], loader=lambda path, device: FakeGenerator(**kwargs))


def test_typed_values_are_checked_with_readable_messages(tmp_path):
    models = fake_models(tmp_path)
    name = str(tmp_path)
    request = check_request(models, name, "class 2", " 17 ", 3.0, "", None)
    assert (request.label, request.seed, request.loops, request.steps, request.guidance) == (
        2,
        17,
        3,
        None,
        None,
    )
    assert (
        check_request(models, name, None, "", None, "40", "1.5").loops == 2
    )  # empty → defaults (L_max)
    cases = [
        (dict(seed="twelve"), "seed must be a whole number, got 'twelve'"),
        (dict(seed="1.5"), "seed must be a whole number, got '1.5'"),
        (dict(seed="-1"), "seed must be between 0 and"),
        (
            dict(loops=2 + EXTRA_LOOPS + 1),
            f"loop count L must be between 1 and {2 + EXTRA_LOOPS}, got 5",
        ),
        (dict(loops=0), "loop count L must be between 1"),
        (dict(steps="100000"), "sampling steps must be between 1 and 1000, got 100000"),
        (dict(steps="ten"), "sampling steps must be a whole number, got 'ten'"),
        (dict(guidance="nan"), "guidance must be between 0 and 50, got nan"),
        (dict(guidance="strong"), "guidance must be a number, got 'strong'"),
        (dict(class_choice="7"), "class must be between 0 and 2, got 7"),
        (dict(model="other"), "unknown model 'other'"),
    ]
    for change, message in cases:
        values = (
            dict(model=name, class_choice="class 0", seed="0", loops=1, steps="", guidance="")
            | change
        )
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
            check_request(
                models,
                values["model"],
                values["class_choice"],
                values["seed"],
                values["loops"],
                values["steps"],
                values["guidance"],
            )


def test_loop_modes_are_read_by_the_core_parser(tmp_path):
    models = fake_models(
        tmp_path
    )  # L_max 2, the page allows up to 4 loops; 5 sampling steps by default
    name = str(tmp_path)

    def check(mode, loops=2, schedule="", threshold="0.1", low=2, high=3, steps=""):
        return check_request(
            models, name, None, "0", loops, steps, "", mode, schedule, threshold, low, high
        )

    assert check("fixed L", loops=3).loops == 3
    assert check("schedule", schedule=" 4:1 ").loops == Ramp(4, 1)
    assert check("schedule", schedule="exit:0.2").loops == AdaptiveExit(
        0.2, 2, 2
    )  # MAX filled in: L_max
    assert check("adaptive exit", threshold="inf", low=3, high=4).loops == AdaptiveExit(
        float("inf"), 3, 4
    )
    assert check("schedule", schedule="1x2+2x8", steps="10").loops.parts == ((1, 2), (2, 8))
    cases = [
        (
            dict(mode="schedule", schedule="1x2+2x2"),
            "loop schedule '1x2+2x2' covers 4 steps but sampling uses 5 "
            "steps; make the step counts add up to 5",
        ),
        (
            dict(mode="schedule", schedule="fast"),
            "invalid loops 'fast'; allowed: L (fixed loop count",
        ),
        (dict(mode="schedule", schedule="1,2"), "invalid loops '1,2'"),
        (dict(mode="schedule", schedule=""), "loop schedule is empty"),
        (
            dict(mode="schedule", schedule="9:1"),
            "loop schedule '9:1' runs 9 loops at a step; this page allows at most 4",
        ),
        (
            dict(mode="adaptive exit", threshold="soon"),
            "bad exit threshold 'soon' in 'exit:soon:2-3'",
        ),
        (dict(mode="adaptive exit", threshold="-1"), "exit threshold must be >= 0"),
        (dict(mode="adaptive exit", threshold=""), "exit threshold is empty"),
        (
            dict(mode="adaptive exit", low=4, high=3),
            "adaptive exit max loops 3 is below min loops 4",
        ),
        (dict(mode="adaptive exit", high=5), "exit max loops must be between 2 and 4, got 5"),
        (dict(mode="sometimes"), "unknown loops mode 'sometimes'"),
    ]
    for change, message in cases:
        with pytest.raises(InputError) as caught:
            check(**change)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)

    # a schedule's cost line: the loops each step ran, their mean, GFLOPs from them
    result = generate(check("schedule", schedule="3:1"))
    assert result.loops_used.tolist() == [[3, 3, 2, 2, 1]]
    assert result.caption().startswith(
        "loops 3:1: mean 2.20 loops per step (per step: 3×2 2×2 1) · 1.1 GFLOPs"
    )


def test_adaptive_exit_on_the_shipped_model_reports_the_loops_it_ran():
    models = load_models(["demo:masked"])
    generator = models["demo:masked"].generator

    def run(mode, loops=None, threshold="0.2", low=2, high=4, count=2):
        request = check_request(
            models, "demo:masked", "7: Sneaker", "5", loops, "", "", mode, "", threshold, low, high
        )
        return generate(request, count=count)

    adaptive = run("adaptive exit")
    used = adaptive.loops_used
    assert (
        used.shape == (2, 12) and used.min() >= 2 and used.max() <= 4 and 2 < used.mean() < 4
    )  # exits vary
    assert adaptive.gflops_per_sample == pytest.approx(
        generator.gflops_per_sample(AdaptiveExit(0.2, 2, 4), loops_used=used)
    )
    assert (
        run("fixed L", 2).gflops_per_sample
        < adaptive.gflops_per_sample
        < run("fixed L", 4).gflops_per_sample
    )
    assert f"mean {used.mean():.2f} loops per step" in adaptive.caption()
    # threshold 0 never exits early: the images of fixed L = max, every step at max loops
    never = run("adaptive exit", threshold="0", high=3, count=1)
    np.testing.assert_array_equal(never.samples, run("fixed L", 3, count=1).samples)
    assert (never.loops_used == 3).all()


def test_missing_or_broken_checkpoint_is_one_line_before_serving(tmp_path, capsys):
    assert main(["app", "--ckpt", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and err.startswith("elt: error:")

    broken = tmp_path / "broken"
    shutil.copytree(shipped_checkpoints()["demo:masked"], broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert main(["app", "--ckpt", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken" in err

    assert main(["app", "--ckpt", "demo:nothing"]) == 2
    assert "demo:masked" in capsys.readouterr().err  # names what is available
    with pytest.raises(SystemExit):
        main(["app", "--port", "70000"])


def test_images_are_png_and_videos_animated_gif(tmp_path):
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (8, 6, 1), dtype=np.uint8)
    data, suffix = encode(image)
    decoded = Image.open(io.BytesIO(data))
    assert suffix == ".png" and decoded.format == "PNG" and decoded.size == (6, 8)
    np.testing.assert_array_equal(np.asarray(decoded), image[..., 0])

    video = np.random.default_rng(1).integers(0, 256, (2, 5, 8, 6, 3), dtype=np.uint8)
    row = strip(video)
    assert row.shape == (5, 8, 2 * 6 + 1, 3)
    np.testing.assert_array_equal(row[:, :, 7:], video[1])
    path = write_media(row, tmp_path / "media", "clip")
    gif = Image.open(path)
    assert path.suffix == ".gif" and gif.is_animated and gif.n_frames == 5 and gif.size == (13, 8)
    assert not list((tmp_path / "media").glob(".*partial"))


def test_video_models_generate_animations(tmp_path):
    models = fake_models(tmp_path, video=True)
    result = generate(check_request(models, str(tmp_path), "class 1", "3", 2, "", ""), count=2)
    assert result.is_video and result.samples.shape == (2, 4, 8, 6, 3)
    assert encode(result.samples[0])[1] == ".gif"


def test_shipped_model_same_seed_same_image_other_loops_other_image():
    models = load_models(["demo:masked"])
    model = models["demo:masked"]
    assert (
        model.class_names[7] == "7: Sneaker"
        and model.max_loops == model.trained_loops + EXTRA_LOOPS
    )

    def run(loops, seed="5"):
        return generate(check_request(models, "demo:masked", "7: Sneaker", seed, loops, "", ""))

    first, again, deeper = run(1), run(1), run(model.trained_loops)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, deeper.samples)
    assert deeper.gflops_per_sample > 2 * first.gflops_per_sample
    assert first.samples.shape[0] == 1 and first.seconds > 0
    assert first.caption().startswith(f"L = 1 loops at each of {model.default_steps} steps · ")


@pytest.mark.slow
def test_core_and_demo_do_not_import_the_app_dependencies(tmp_path):
    code = (
        "import sys, elt, elt.cli\n"
        "elt.cli.build_parser()\n"
        "import elt.demo\n"
        f"elt.cli.main(['demo', '--out', {str(tmp_path)!r}, '--paradigm', 'masked', '--per-class', "
        "'1',"
        " '--no-progress'])\n"
        "loaded = sorted(m for m in ('gradio', 'fastapi', 'uvicorn', 'elt.app.page') if m in "
        "sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "demo.json").is_file()


def test_without_gradio_the_command_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio → ImportError
    monkeypatch.delitem(sys.modules, "elt.app.page", raising=False)
    assert main(["app", "--ckpt", "demo:masked"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'elt-looped[app]'" in err and err.count("elt: error:") == 1


def test_class_picker_shows_the_stored_class_names(tmp_path):
    class Named(FakeGenerator):
        class_names = ["circle", "square", "triangle"]

    models = load_models([str(tmp_path)], loader=lambda path, device: Named())
    model = models[str(tmp_path)]
    assert model.class_names == ["0: circle", "1: square", "2: triangle"]
    for choice in ("2: triangle", "triangle", "2"):
        assert check_request(models, str(tmp_path), choice, "0", 1, "", "").label == 2
    # a model without names (checkpoints from before they were stored) keeps "class N"
    assert fake_models(tmp_path)[str(tmp_path)].class_names == ["class 0", "class 1", "class 2"]
