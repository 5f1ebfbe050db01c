"""The longest functions and the largest classes of the product code, in lines.

    python bench/shape.py [--top N]

Counts the lines of each ``def``/``class`` node (decorators excluded) of every product
module (the project's own Python files outside tests/, bench/ and sandbox/).
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"tests", "bench", "sandbox", ".venv", "build"}


def product_files() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.py")
        if not (set(p.relative_to(ROOT).parts[:-1]) & SKIP) and p.parent.name != ".venv"
        and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    )


def measure() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    functions: list[tuple[int, str]] = []
    classes: list[tuple[int, str]] = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                entry = (lines, f"{rel}:{node.lineno} {node.name}")
                (classes if isinstance(node, ast.ClassDef) else functions).append(entry)
    return sorted(functions, reverse=True), sorted(classes, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    functions, classes = measure()
    files = product_files()
    print(f"{len(files)} product modules, "
          f"{sum(len(p.read_text().splitlines()) for p in files)} lines")
    print("longest functions:")
    for lines, where in functions[: args.top]:
        print(f"  {lines:5d}  {where}")
    print("largest classes:")
    for lines, where in classes[: args.top]:
        print(f"  {lines:5d}  {where}")


if __name__ == "__main__":
    main()
