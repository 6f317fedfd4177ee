"""Source rules a linter does not check: a class body defines each name once (a decorated method
defined twice is not flagged by ruff's F811, and the first definition is dead code that readers take
for the live one)."""

import ast
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "elt"


def class_redefinitions(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names = Counter(
                item.name
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not any(
                    isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
                    for d in item.decorator_list
                )
            )
            found += [f"{node.name}.{name}" for name, count in names.items() if count > 1]
    return found


def test_no_class_defines_a_method_twice():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        offenders += [
            f"{path.relative_to(SRC)}: {name}"
            for name in class_redefinitions(ast.parse(path.read_text()))
        ]
    assert not offenders, f"methods defined twice (the first is dead): {offenders}"


def test_the_check_sees_a_decorated_redefinition():
    source = (
        "class A:\n    @staticmethod\n    def f():\n        return 1\n\n"
        "    @staticmethod\n    def f():\n        return 2\n"
    )
    assert class_redefinitions(ast.parse(source)) == ["A.f"]
