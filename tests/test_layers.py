"""The import rule of docs/architecture.md: no package imports one in a higher layer.

Every ``import crlib.x`` and ``from crlib.x import ...`` in ``crlib/``, ``dags/`` and ``plugins/`` is
read with :mod:`ast`, lazy imports inside functions and ``TYPE_CHECKING`` blocks included: a lazy
import is still a dependency, it only hides a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: crlib's layers, lowest first. A module may import its own package and any package of a lower
#: layer; packages of one layer are independent of each other. Top-level modules count as packages.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "errors",
            "profiles",
            "float16",
            "records",
            "provenance",
            "database_url",
            "jsonvalues",
            "interpolation",
            "file_digest",
        }
    ),
    frozenset({"config"}),
    frozenset({"formats", "simulate"}),
    frozenset({"classify", "screening", "metrics"}),
    frozenset({"archive", "align"}),
    frozenset({"truth"}),
    frozenset({"model"}),
    frozenset({"db"}),
    frozenset({"training"}),
    frozenset({"registry"}),
    frozenset({"pipeline"}),
    frozenset({"harness"}),
    frozenset({"bench"}),
    frozenset({"cli"}),
    frozenset({"__main__", "__init__"}),
)

#: The simulator is a tool: only the harness, the benches and the CLI may use it, never the product.
SIMULATOR_USERS = frozenset({"simulate", "harness", "bench", "cli"})

#: Layers the Airflow side (dags/, plugins/) may reach: the product, never the harness or benches.
AIRFLOW_REACH = frozenset().union(*LAYERS[: LAYERS.index(frozenset({"pipeline"})) + 1]) - {"simulate"}

#: Allowed exceptions, each with its reason.
EXCEPTIONS = {
    # The inference benchmark's child process runs `crlib infer` in-process to time its phases.
    ("crlib/bench/inference.py", "cli"),
}


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(
        f"crlib.{package} is in no layer of tests/test_layers.py: add it (and to docs/architecture.md)"
    )


def crlib_imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, top-level crlib package)`` of every crlib import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "crlib":
                names = [f"crlib.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "crlib" and len(parts) > 1:
                yield node.lineno, parts[1]


def package_of(path: Path, root: Path) -> str:
    """``align`` for ``crlib/align/fit.py``, ``config`` for ``crlib/config.py``."""
    return path.relative_to(root / "crlib").with_suffix("").parts[0]


def violations(root: Path) -> list[str]:
    """Every import in ``root``'s ``crlib/``, ``dags/`` and ``plugins/`` that breaks the rule."""
    found: list[str] = []
    for path in sorted((root / "crlib").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(root).as_posix()
        own = package_of(path, root)
        for line, target in crlib_imports(path):
            if target == own or (rel, target) in EXCEPTIONS:
                continue
            if target == "simulate" and own not in SIMULATOR_USERS:
                found.append(f"{rel}:{line}: crlib.{own} imports the simulator (crlib.simulate)")
            elif layer_of(target) >= layer_of(own):
                where, what = (
                    f"crlib.{own} (layer {layer_of(own)})",
                    f"crlib.{target} (layer {layer_of(target)})",
                )
                found.append(f"{rel}:{line}: {where} imports {what}")
    for folder in ("dags", "plugins"):
        for path in sorted((root / folder).rglob("*.py")):
            for line, target in crlib_imports(path):
                if target not in AIRFLOW_REACH:
                    found.append(
                        f"{path.relative_to(root).as_posix()}:{line}: Airflow code imports crlib.{target}"
                    )
    return found


def test_no_package_imports_a_higher_layer() -> None:
    assert violations(REPO) == []


def test_every_package_is_in_a_layer_and_says_what_it_owns() -> None:
    for entry in sorted((REPO / "crlib").iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            layer_of(entry.name)
            doc = ast.get_docstring(ast.parse((entry / "__init__.py").read_text()))
            assert doc, f"crlib/{entry.name}/__init__.py has no docstring saying what the package owns"
        elif entry.suffix == ".py":
            layer_of(entry.stem)


@pytest.mark.parametrize(
    ("where", "planted", "expected"),
    [
        (
            "crlib/align/planted.py",
            "from crlib.truth.visit import build_visit_truth\n",
            "crlib.align (layer 4) imports crlib.truth",
        ),
        (
            "crlib/metrics/planted.py",
            "def f():\n    import crlib.model.inference\n",
            "crlib.metrics (layer 3) imports crlib.model",
        ),
        ("crlib/truth/planted.py", "from crlib.simulate import psf\n", "imports the simulator"),
        (
            "crlib/classify/planted.py",
            "from crlib import screening\n",
            "crlib.classify (layer 3) imports crlib.screening",
        ),
        (
            "dags/planted.py",
            "from crlib.harness.demo import run_demo\n",
            "Airflow code imports crlib.harness",
        ),
    ],
)
def test_a_planted_upward_import_is_caught(tmp_path: Path, where: str, planted: str, expected: str) -> None:
    # A copy of the tree made of links to the real files, plus the planted one.
    for folder in ("crlib", "dags", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            dest = tmp_path / path.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(path)
    planted_path = tmp_path / where
    planted_path.parent.mkdir(parents=True, exist_ok=True)
    planted_path.write_text(planted)
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0] and where in found[0], found
