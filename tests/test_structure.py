"""The code's shape, as docs/architecture.md promises it: small functions, small classes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("models", "server", "client", "benchmarks", "protos/generate.py")
MAX_FUNCTION_LINES = 60
MAX_METHODS = 12


def _modules() -> list[Path]:
    paths = []
    for source in SOURCES:
        path = ROOT / source
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        paths += [p for p in found if "_pb2" not in p.name]
    return paths


def _trees():
    for path in _modules():
        yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


def test_no_function_is_longer_than_sixty_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_no_class_has_more_than_twelve_methods():
    big = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = [
                    n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                ]
                if len(methods) > MAX_METHODS:
                    big.append(f"{path}:{node.lineno} {node.name} ({len(methods)} methods)")
    assert not big, big
