"""No function in jobs/ or launcher/ is longer than pyproject's ``[tool.snapmover.function-length]``."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def long_functions(limit: int) -> set[str]:
    found = set()
    for package in ("jobs", "launcher"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_function and (node.end_lineno or node.lineno) - node.lineno + 1 > limit:
                    found.add(f"{path.relative_to(ROOT).as_posix()}::{node.name}")
    return found


def test_no_function_is_longer_than_the_limit_except_the_named_ones() -> None:
    rules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["snapmover"]["function-length"]
    too_long = long_functions(int(rules["max-lines"]))
    assert too_long - set(rules["exceptions"]) == set(), "split these functions (or name a justified exception)"


def test_the_check_finds_a_long_function() -> None:
    assert long_functions(3)  # the walk really sees functions
