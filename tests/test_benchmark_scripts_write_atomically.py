"""Benchmark scripts write their JSON through elt.fileio's atomic writer (a temporary file renamed
into place: a killed run leaves no half-written file under the result's name), read from their
source: no ``Path.write_text`` / ``json.dump`` to an open file, and a ``write_json`` call. Every
script under benchmarks/ that writes JSON itself is checked."""

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# every script that writes JSON itself (the thin wrappers of `elt bench` write through the CLI)
ATOMIC = sorted(
    path.name
    for path in BENCHMARKS.glob("*.py")
    if "json" in path.read_text() and "from elt.cli.bench import main" not in path.read_text()
)


def calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def method_calls(tree: ast.AST) -> list[str]:
    return [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]


def test_the_list_covers_the_scripts_that_write_json():
    assert len(ATOMIC) >= 15 and "compiled_sampling.py" in ATOMIC and "demo_time.py" in ATOMIC


@pytest.mark.parametrize("script", ATOMIC)
def test_benchmark_writes_its_json_atomically(script):
    source = (BENCHMARKS / script).read_text()
    tree = ast.parse(source)
    names = calls(tree)
    assert "write_text" not in method_calls(tree) and "dump" not in names, (
        f"{script} writes non-atomically"
    )
    assert "write_json" in names
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "elt.fileio"
        for alias in node.names
    }
    assert "write_json" in imported
    assert "mkdir" in names  # the output's folder is created first (write_json does not)
