"""The README's Python example runs as written, and the shipped models answer to their ``demo:``
names in the API and in every command that takes a checkpoint."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import elt
from elt.cli import main
from elt.inference.checkpoints import resolve_checkpoint
from elt.inference.demo_models import demo_models

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text: code blocks, tables, headings and lists left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if line.strip()]
        if lines and not lines[0].lstrip().startswith(("|", "#", "-", "*", "![", "<")):
            paragraphs.append(" ".join(lines))
    return paragraphs


def test_readme_is_short_with_short_paragraphs():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    longest = max(prose_paragraphs(text), key=lambda p: len(p.split()))
    assert len(longest.split()) <= 80, longest


def test_readme_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.read_text().splitlines()[:25])
    assert "make demo" in first_screen and "make test" in first_screen


def test_readme_links_point_to_files_that_exist():
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) + re.findall(
        r'<img src="([^"]+)"', text
    )
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local, "no local links found: the pattern is wrong"
    missing = [t for t in local if not (README.parent / t).exists()]
    assert not missing, missing


def test_the_paragraph_splitter_skips_code_and_tables():
    text = (
        "one two three\nfour\n\n```bash\nmake demo\n```\n\n"
        "| a | b |\n| --- | --- |\n\n# heading\n\nfive six"
    )
    assert prose_paragraphs(text) == ["one two three four", "five six"]


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no ```python example"
    monkeypatch.chdir(tmp_path)  # a fresh clone's working directory holds no runs/
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
        images = namespace.get("images")
        if images is not None:
            assert images.dtype == np.uint8 and images.ndim == 4


def test_every_shipped_model_loads_by_name():
    names = set(demo_models())
    assert {"masked", "diffusion"} <= names
    for name in names:
        generator = elt.load(f"demo:{name}")
        assert generator.trained_loops >= 1
        assert resolve_checkpoint(f"demo:{name}") == demo_models()[name]


def test_unknown_demo_name_is_one_line_listing_the_shipped_ones(capsys):
    assert main(["info", "demo:nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "demo:nope" in err and "demo:masked" in err


def test_demo_names_in_info_export_and_sample(tmp_path, capsys):
    assert main(["info", "demo:masked"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["paradigm"] == "masked" and info["trained_loops"] == 4
    assert main(["export", "--ckpt", "demo:diffusion", "--out", str(tmp_path / "export")]) == 0
    capsys.readouterr()
    exported = elt.load(tmp_path / "export").generate([3], loops=1, steps=2, seed=0)
    shipped = elt.load("demo:diffusion").generate([3], loops=1, steps=2, seed=0)
    assert np.array_equal(
        exported, shipped
    )  # the shipped weights are fp16 already: export is lossless
    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                "demo:masked",
                "--loops",
                "1",
                "--num",
                "2",
                "--steps",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "samples_L1.npz").is_file()


@pytest.mark.parametrize("bad", [2.5, [1, 2.5], "2.5", True])
def test_non_integer_loops_are_a_value_error_naming_them(bad):
    generator = elt.load("demo:masked")
    with pytest.raises(ValueError, match="loop"):
        generator.generate([0], loops=bad, steps=2)


def test_eval_samples_checks_files_and_counts_before_any_feature_work(
    tmp_path, monkeypatch, capsys
):
    from elt.eval import run as eval_run

    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                "demo:masked",
                "--loops",
                "1",
                "--num",
                "3",
                "--steps",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    monkeypatch.setattr(
        eval_run, "build_suite", lambda request: pytest.fail("feature work before the input checks")
    )
    for extra, message in (
        (["--num", "5", "--loops", "1"], "fewer than --num 5"),
        (["--num", "3", "--loops", "1,2"], "samples_L2.npz not found"),
    ):
        assert (
            main(
                [
                    "eval",
                    "--samples",
                    str(out),
                    "--ckpt",
                    "demo:masked",
                    "--out",
                    str(tmp_path / "e"),
                    *extra,
                ]
            )
            == 2
        )
        assert message in capsys.readouterr().err
