"""The layer rule of docs/architecture.md, read from the source: every ``import`` in every module
under src/elt (module level and inside functions) points to the same layer or one below, the two
paradigms never import each other, and the module graph has no cycle."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "elt"

# (layer name, module prefixes), bottom first. A module belongs to the layer of its longest
# matching prefix; ``elt`` itself (the api layer) is matched exactly, so a new module under src/elt
# that is not listed here belongs to no layer and fails test_every_module_has_a_layer.
# docs/architecture.md draws the same table.
LAYERS = [
    (
        "foundation",
        [
            "elt.errors",
            "elt.runtime",
            "elt.version",
            "elt.presets",
            "elt.visual",
            "elt.fileio",
            "elt.limits",
            "elt.signals",
            "elt.progress",
        ],
    ),
    ("core", ["elt.core"]),
    ("config", ["elt.config", "elt.registry"]),
    ("data", ["elt.data"]),
    ("tokenizers", ["elt.tokenizers"]),
    ("paradigms", ["elt.masked", "elt.diffusion"]),
    ("inference", ["elt.inference"]),
    (
        "application",
        [
            "elt.sampling",
            "elt.train",
            "elt.eval",
            "elt.bench",
            "elt.demo",
            "elt.recipes",
            "elt.anytime",
            "elt.app",
            "elt.pipelines",
        ],
    ),
    ("api", ["elt"]),  # the package itself: elt.load
    ("cli", ["elt.cli"]),
]
EXACT = {"elt"}  # prefixes that name one module only (not the modules under it)
PARADIGMS = ("elt.masked", "elt.diffusion")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    if module.split(".")[-1] == "__main__":
        return len(LAYERS) - 1  # an entry point (python -m ...): nothing imports it
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix not in EXACT
            if (module == prefix or below) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise AssertionError(
            f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py"
        )
    return rank


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported elt module, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # ``from elt import registry`` imports the module elt.registry
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in known else base, node.lineno))
    return [(name, line) for name, line in found if name == "elt" or name.startswith("elt.")]


def resolve(name: str, known: dict[str, Path]) -> str:
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, list[tuple[str, int]]]:
    known = all_modules()
    return {
        module: [(resolve(name, known), line) for name, line in imports_of(module, path, known)]
        for module, path in known.items()
    }


def upward_imports(graph) -> list[str]:
    problems = []
    for module, targets in graph.items():
        for target, line in targets:
            if layer_of(target) > layer_of(module):
                problems.append(
                    f"{module}:{line} imports {target} (layer {LAYERS[layer_of(module)][0]} may "
                    "not "
                    f"import layer {LAYERS[layer_of(target)][0]})"
                )
            own = next((p for p in PARADIGMS if module == p or module.startswith(p + ".")), None)
            other = next((p for p in PARADIGMS if target == p or target.startswith(p + ".")), None)
            if own and other and own != other:
                problems.append(
                    f"{module}:{line} imports {target} (the paradigms never import each other)"
                )
    return problems


def find_cycle(graph) -> list[str] | None:
    edges = {m: sorted({t for t, _ in targets if t != m}) for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_a_module_missing_from_the_table_has_no_layer():
    """The package's own layer (api) is ``elt`` alone: a module nobody placed is not silently put
    there."""
    assert LAYERS[layer_of("elt")][0] == "api"
    assert LAYERS[layer_of("elt.inference.checkpoints")][0] == "inference"
    with pytest.raises(AssertionError, match="elt.newthing belongs to no layer"):
        layer_of("elt.newthing")
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("elt.newpackage.module")


def test_the_architecture_page_lists_every_layer_and_top_level_module():
    """docs/architecture.md's layer diagram names every layer of the table and every module or
    package directly under src/elt."""
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    diagram = page.split("## Layers", 1)[1].split("```")[1]
    for name, _ in LAYERS:
        assert f" {name} " in f" {diagram} ".replace("\n", " "), f"layer {name} not in the diagram"
    top = {m.split(".")[1] for m in all_modules() if m.count(".") >= 1}
    for name in sorted(top - {"__main__"}):
        assert f"elt.{name}" in diagram, (
            f"elt.{name} is not in the layer diagram of architecture.md"
        )


def test_no_module_imports_a_layer_above_it():
    problems = upward_imports(import_graph())
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_upward_imports_and_cycles():
    """The checks themselves catch what they are for (on a made-up graph)."""
    graph = {
        "elt.config": [("elt.train.trainer", 3)],
        "elt.train.trainer": [("elt.config", 1)],
        "elt.masked.model": [("elt.diffusion.process", 9)],
        "elt.diffusion.process": [],
    }
    problems = upward_imports(graph)
    assert any("elt.config:3 imports elt.train.trainer" in p for p in problems)
    assert any("never import each other" in p for p in problems)
    assert find_cycle(graph) == ["elt.config", "elt.train.trainer", "elt.config"]


@pytest.mark.parametrize("module", ["elt.errors", "elt.version"])
def test_the_foundation_imports_nothing_from_elt(module):
    graph = import_graph()
    assert graph[module] == []
