"""Package layout (docs/layout.md): no import cycles, and the certification stages never import Airflow.

Read from the source with ``ast`` (nothing is imported), like ``../shared/tools/import_cycles.py``,
which a CI clone may not have. Every import counts for cycles, at module level or inside a function
or ``if TYPE_CHECKING``: a lazy import hides a cycle, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "greencert"

# Bundle reading, validation, computation and grading: pure functions of the evidence, which
# `greencert verify` re-runs on an auditor's machine without Airflow. Carbon accounting too, except
# the two modules that fetch grid data through Airflow connections (carbon.attach, carbon.grid_sources).
STAGE_PACKAGES = ("greencert.bundle", "greencert.validation", "greencert.compute")
STAGE_MODULES = (
    "greencert.grading",
    "greencert.units",
    "greencert.times",
    "greencert.errors",
    "greencert.names",
    "greencert.yamlio",
    "greencert.fleet_day",
    "greencert.carbon.embodied",
    "greencert.carbon.factors",
    "greencert.carbon.market",
    "greencert.carbon.models",
    "greencert.carbon.report",
)


def modules_of(package: Path) -> dict[str, Path]:
    out = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` — runs only when the file is a script, never on import."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)
    )


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_names(module: str, path: Path, *, runtime_only: bool = False) -> set[str]:
    """Dotted names a module imports anywhere (``runtime_only``: not under TYPE_CHECKING or __main__)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and (_is_main_block(node) or _is_type_checking_block(node)):
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def import_graph(package: Path, *, runtime_only: bool = False) -> dict[str, set[str]]:
    modules = modules_of(package)
    graph = {}
    for name, path in modules.items():
        targets = {t for t in imported_names(name, path, runtime_only=runtime_only) if t in modules}
        # Importing a submodule runs its package's __init__: that is not an edge of the design.
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    # The check itself, on a package made for it: a <-> b, b importing a only inside a function.
    pkg = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from pkg.a import f\n",
            "a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "b.py": "def g():\n    from pkg import a\n    return a\n",
            "c.py": "import pkg.a\n",
            # A submodule importing its own package (which re-exports it) is not a cycle of the design.
            "sub/__init__.py": "from pkg.sub.x import y\n",
            "sub/x.py": "import pkg.sub\ny = 1\n",
        },
    )
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]
    _write(pkg, {"b.py": "def g():\n    return 1\n"})
    assert cycles(import_graph(pkg)) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the whole package was read
    assert cycles(graph) == []


def _imports_airflow(names: set[str]) -> set[str]:
    return {n for n in names if n == "airflow" or n.startswith("airflow.")}


def test_certification_stages_never_import_airflow() -> None:
    """Nothing a stage module imports, directly or through other greencert modules, is Airflow."""
    modules = modules_of(PACKAGE)
    graph = import_graph(PACKAGE, runtime_only=True)
    stages = [
        m for m in modules if m in STAGE_MODULES or m.startswith(tuple(p + "." for p in STAGE_PACKAGES))
    ]
    stages += [p for p in STAGE_PACKAGES if p in modules]
    assert set(STAGE_MODULES) <= set(modules), set(STAGE_MODULES) - set(modules)
    assert len(stages) > 30
    offenders = {}
    for stage in stages:
        # Every greencert module the stage can reach (module level or in a function).
        reached, todo, via = {stage}, [stage], {stage: [stage]}
        while todo:
            module = todo.pop()
            for target in graph[module]:
                if target not in reached:
                    reached.add(target)
                    via[target] = via[module] + [target]
                    todo.append(target)
        for module in sorted(reached):
            airflow = _imports_airflow(imported_names(module, modules[module], runtime_only=True))
            if airflow:
                offenders[stage] = f"{' -> '.join(via[module])} imports {sorted(airflow)[0]}"
                break
    assert offenders == {}


def test_the_airflow_check_sees_an_indirect_import(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "compute.py": "def f():\n    from pkg.helper import h\n    return h()\n",
            "helper.py": "def h():\n    from airflow.sdk import BaseHook\n    return BaseHook\n",
            "script.py": "if __name__ == '__main__':\n    import airflow\n",
        },
    )
    graph = import_graph(pkg, runtime_only=True)
    assert graph["pkg.compute"] == {"pkg.helper"}
    assert _imports_airflow(imported_names("pkg.helper", pkg / "helper.py", runtime_only=True)) == {
        "airflow.sdk",
        "airflow.sdk.BaseHook",
    }
    assert _imports_airflow(imported_names("pkg.script", pkg / "script.py", runtime_only=True)) == set()
