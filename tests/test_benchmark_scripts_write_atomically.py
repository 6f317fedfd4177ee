"""Benchmark scripts write their JSON through elt.fileio's atomic writer (a temporary file renamed
into place: a killed run leaves no half-written file under the result's name), read from their
source: no ``Path.write_text`` / ``json.dump`` to an open file, and a ``write_json`` call."""

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
ATOMIC = ("adaptive_overhead.py", "adaptive_vs_fixed.py", "eval_speed.py", "prepare_scaling.py")


def calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


@pytest.mark.parametrize("script", ATOMIC)
def test_benchmark_writes_its_json_atomically(script):
    source = (BENCHMARKS / script).read_text()
    tree = ast.parse(source)
    names = calls(tree)
    assert "write_text" not in names and "dump" not in names, f"{script} writes non-atomically"
    assert "write_json" in names
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "elt.fileio"
        for alias in node.names
    }
    assert "write_json" in imported
    assert "mkdir" in names  # the output's folder is created first (write_json does not)
