"""Every module imports on its own, and no two of the project's modules import each other.

A cycle works or breaks with the order of first imports (a module seen half-initialised, or an
import hidden in a function to dodge that); these tests make it fail here instead: each package's
modules imported in sorted order in a fresh interpreter, and the graph of imports between the
project's modules (inside functions too) checked acyclic.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "cutout_cli", "matting_core", "tasks", "web")


def modules(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the program when imported
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports_in_a_fresh_interpreter_in_sorted_order(package):
    names = modules(package)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _imported(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project's modules that `module` imports, at the top or inside a function (a cycle through
    a function's import is still an ordering trap), but not under `if TYPE_CHECKING:`."""
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import module` imports that module (its package runs first anyway).
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    """{module: the project's modules it imports} over every package."""
    known = {name for package in PACKAGES for name in modules(package)}
    graph = {}
    for name in known:
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        graph[name] = _imported(name, ast.parse(path.read_text()), known)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_no_two_modules_import_each_other():
    graph = import_graph()
    in_cycles = {name: sorted(other for other in reachable(graph, name) if name in reachable(graph, other))
                 for name in sorted(graph) if name in reachable(graph, name)}
    assert not in_cycles, f"modules importing each other (module: every module of its cycle): {in_cycles}"


def test_the_service_never_imports_the_test_and_bench_cluster():
    # tasks/local_cluster.py starts Redis and workers for the tests and `make bench`; `cutout serve` starts
    # its own Redis from tasks/redis_server.py, as the two share only the binary and the config.
    graph = import_graph()
    service = [name for name in graph if name.split(".")[0] != "bench" and name != "tasks.local_cluster"]
    assert "tasks.local_cluster" in reachable(graph, "bench.served")  # the probe sees an import where one is
    assert [name for name in service if "tasks.local_cluster" in reachable(graph, name)] == []
