"""The sub-packages of pipeline/ are layers: imports point down, never up or sideways.

Read from the source (every ``import`` and ``from ... import``, including those inside
functions and under ``TYPE_CHECKING``), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
# a package may import those of a lower rank; equal ranks never import each other
RANK = {
    "core": 0,
    "codec": 1,
    "model": 1,
    "data": 2,
    "ledger": 3,
    "train": 4,
    "workers": 4,
    "loaders": 4,
    "run": 4,
}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every pipeline module ``path`` imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names] if base == "pipeline" else []
            out.append((node.lineno, base))
    return [(n, m) for n, m in out if m.startswith("pipeline.")]


def _violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) == 1:  # pipeline/__init__.py: the map, imports nothing
            continue
        here = rel.parts[0]
        for line, module in _imports(path):
            there = _package(module)
            if there is None or there == here:
                continue
            if there not in RANK or RANK[there] >= RANK[here]:
                bad.append(f"pipeline/{rel}:{line} ({here}) imports {module} ({there})")
    return bad


def test_every_sub_package_has_a_rank_and_a_map():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages == set(RANK)
    for name in packages:
        doc = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text()))
        assert doc and ".py" in doc, f"pipeline/{name}/__init__.py has no map"


def test_imports_point_down_the_layers():
    assert _violations() == []


def test_data_and_codec_never_import_run_or_workers():
    for layer in ("data", "codec", "core", "model"):
        for path in (ROOT / layer).rglob("*.py"):
            for line, module in _imports(path):
                assert _package(module) not in {"run", "workers", "ledger"}, f"{path}:{line}: {module}"


@pytest.mark.parametrize(
    "bad", ["from pipeline.workers.encode import EncodeWorker", "import pipeline.run.runner"]
)
def test_the_check_catches_an_upward_import(tmp_path, bad):
    """The checker itself: an upward import planted in a copy of the codec layer is reported."""
    copy = tmp_path / "pipeline"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "codec" / "planted.py").write_text(bad + "\n")
    assert _violations(ROOT) == []
    assert [v for v in _violations(copy) if "planted" in v] == [
        f"pipeline/codec/planted.py:1 (codec) imports {bad.split()[1]} ({bad.split()[1].split('.')[1]})"
    ]


def test_the_ledger_has_no_import_circle():
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "ledger").glob("*.py"):
        name = f"pipeline.ledger.{path.stem}"
        graph[name] = {m for _, m in _imports(path) if m.startswith("pipeline.ledger.")}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join([*stack, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])
