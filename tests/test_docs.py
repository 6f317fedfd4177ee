"""The documentation builds and its tutorials run as written.

``mkdocs build --strict`` fails on a broken link, a missing anchor or an unresolved API reference.
Each tutorial's fenced ``bash`` and ``python`` blocks are run in order, in a fresh folder, as a
reader would paste them: ``elt …`` commands through ``elt.cli.main`` in this process, Python blocks
with ``exec``. Only sizes change, by *appending* arguments (a later ``key=value`` or flag wins),
listed per tutorial below; the paper-row tutorial's GPU commands also get CPU paths in place of
``/data`` and ``/models``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elt.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in page order."""
    return [(lang, body) for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)]


def shell_commands(body: str) -> list[list[str]]:
    """A bash block as argument lists: continuation lines joined, comments and blank lines
    dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line))
    return commands


def elt_argv(argv: list[str]) -> list[str]:
    """The ``elt`` arguments of a command: ``elt X …`` or ``torchrun … -m elt.cli X …``."""
    if argv[0] == "elt":
        return argv[1:]
    if argv[0] == "torchrun" and "-m" in argv and argv[argv.index("-m") + 1] == "elt.cli":
        return argv[argv.index("-m") + 2 :]
    raise AssertionError(f"not an elt command: {shlex.join(argv)}")


def run_tutorial(page: Path, extra_args, namespace: dict | None = None) -> list[list[str]]:
    """Run every block of ``page`` in the current directory; ``extra_args(argv)`` gives the
    arguments appended to an ``elt`` command. Returns the commands run (as elt argument lists)."""
    ran = []
    namespace = {} if namespace is None else namespace
    for lang, body in fenced_blocks(page.read_text()):
        if lang == "python":
            exec(compile(body, str(page), "exec"), namespace)  # noqa: S102 - the tutorial's own code
        elif lang == "bash":
            for argv in shell_commands(body):
                args = elt_argv(argv)
                full = [*args, *extra_args(args)]
                assert main(full) == 0, f"{page.name}: {shlex.join(argv)} failed"
                ran.append(full)
    return ran


# -- the site --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mkdocs_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs not installed (the docs extra: pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "api.html").read_text().count("generate") > 0


def test_docs_holds_only_what_the_pages_link_to():
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    files = [p for p in DOCS.rglob("*") if p.is_file() and p.suffix != ".md"]
    unlinked = [str(p.relative_to(DOCS)) for p in files if p.name not in text]
    assert not unlinked, f"files under docs/ that no page links to: {unlinked}"


def test_pages_narrate_no_history():
    words = [
        "same session",
        "slower vm",
        "earlier vm",
        "when the issue was filed",
        "the aim is",
        "this session",
    ]
    found = [
        f"{p.relative_to(DOCS)}: {w}"
        for p in DOCS.rglob("*.md")
        for w in words
        if w in p.read_text().lower()
    ]
    assert not found, found


def test_shell_commands_join_continuations_and_drop_comments():
    body = (
        "# a comment\nelt train cfg a=1 \\\n    b=2   # why\n\n"
        "torchrun --nproc_per_node 8 -m elt.cli prepare x\n"
    )
    assert shell_commands(body) == [
        ["elt", "train", "cfg", "a=1", "b=2"],
        ["torchrun", "--nproc_per_node", "8", "-m", "elt.cli", "prepare", "x"],
    ]
    assert elt_argv(shell_commands(body)[1]) == ["prepare", "x"]


# (the image-folder tutorial, docs/custom_data.md, runs in tests/test_tutorial_custom_data.py)


# -- tutorial: any-time inference in a service -------------------------------------------------
@pytest.mark.slow
def test_tutorial_anytime_service(tmp_path, monkeypatch):
    from elt.data.fashion_mnist import DataNotFoundError, locate

    try:
        locate(None, "test")
    except DataNotFoundError:
        pytest.skip(
            "Fashion-MNIST not installed (make data): elt calibrate scores against its test set"
        )
    monkeypatch.chdir(tmp_path)

    def extra(args):
        if (
            args[0] == "calibrate"
        ):  # four points, 20 samples, 2 steps: the same grid format, seconds not minutes
            return [
                "--loops",
                "1,2,4,exit:0.05",
                "--num",
                "20",
                "--steps",
                "2",
                "--latency-repeats",
                "1",
                "--no-progress",
            ]
        if args[0] == "sample":
            return ["--steps", "2", "--no-progress"]
        return []

    namespace: dict = {}
    ran = run_tutorial(TUTORIALS / "anytime-service.md", extra, namespace)
    assert [args[0] for args in ran] == ["calibrate", "sample", "sample"]
    assert (tmp_path / "calibration/diffusion/calibration.json").is_file()
    for folder in ("samples/budget", "samples/quality"):
        assert len(list((tmp_path / folder).glob("samples_L*.npz"))) == 1
    assert namespace["images"].shape == (2, 32, 32, 1)
    points = {"1", "2", "4", "exit:0.05"}
    assert namespace["fast"] in points and namespace["best"] in points


# -- tutorial: a paper row on a GPU node ----------------------------------------------------------
@pytest.mark.slow
def test_tutorial_paper_row_at_tiny_size_on_cpu(tmp_path, monkeypatch):
    """prepare, train and sample run on a CPU (paths to generated data, tiny sizes appended); the
    FID command is parsed only: it needs torch-fidelity, the Inception weights and ADM's reference
    batch."""
    from elt.cli import build_parser
    from test_maskgit_vq import tiny_maskgit_folder
    from test_prepare import write_images

    vq = tiny_maskgit_folder(tmp_path / "maskgit")
    write_images(tmp_path / "images", per_class=4, broken=0, size=40)
    monkeypatch.chdir(tmp_path)
    tiny = [
        "model.width=32",
        "model.heads=2",
        "train.steps=2",
        "train.batch_size=4",
        "lr_schedule.warmup_steps=1",
        "train.device=cpu",
        "train.precision=fp32",
        "train.threads=1",
        "logging.tensorboard=false",
        "logging.every=1",
        "logging.samples_per_class=1",
        "data.num_workers=0",
        "data.num_classes=2",
        "data.image_size=32",
        f"data.root={tmp_path / 'images'}",
        f"tokenizer.pretrained_path={vq}",
        "sampling.steps=2",
        "--no-progress",
    ]
    parsed = []

    def extra(args):
        if args[0] in ("prepare", "train"):
            return tiny
        if args[0] == "sample":
            return [
                "--num",
                "4",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--steps",
                "2",
                "--no-progress",
            ]
        return []

    page = TUTORIALS / "paper-row.md"
    blocks = [body for lang, body in fenced_blocks(page.read_text()) if lang == "bash"]
    for body in blocks:
        for argv in shell_commands(body):
            args = elt_argv(argv)
            if args[0] == "eval":
                namespace = build_parser().parse_args(args)
                assert namespace.metrics == "inception" and namespace.num == 50000
                parsed.append(args[0])
                continue
            assert main([*args, *extra(args)]) == 0, shlex.join(argv)
            parsed.append(args[0])
    assert parsed == ["prepare", "train", "sample", "eval"]
    run = tmp_path / "runs/imagenet256_masked_elt_l_8x3"
    assert (run / "checkpoints" / "step_0000002").is_dir()
    for loops in (1, 2, 3):
        assert np.load(tmp_path / "samples/elt_l_8x3" / f"samples_L{loops}.npz")["arr_0"].shape == (
            4,
            32,
            32,
            3,
        )


def test_docs_assets_map_names_pictures_the_pages_show():
    """scripts/docs_assets.sh copies regenerated pictures from results/ into docs/assets/: every
    target it names exists and is shown by a page, and every source lies under results/ (where the
    scripts write)."""
    script = (ROOT / "scripts" / "docs_assets.sh").read_text()
    mapping = re.search(r"<<'MAP'\n(.*?)\nMAP", script, flags=re.S).group(1).splitlines()
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    for line in mapping:
        source, target = line.split()
        assert source.startswith("results/") and source.endswith(".png"), source
        assert (DOCS / "assets" / target).is_file() and f"assets/{target}" in pages, target
