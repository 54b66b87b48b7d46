"""The project's own imports form no cycle, module-level and function-local alike.

Every ``.py`` file of the project is parsed (``ast``, nothing is imported); each
``import``/``from ... import`` anywhere in it (inside functions too) is an edge to the
project module it names (``from utils import metrics`` names ``utils.metrics``; ``from
models import DepthNetHybrid`` names the package ``models``). The implicit import of a
module's parent packages is not an edge: Python runs a package's ``__init__`` before its
modules and that is never a cycle of ours.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {"data", "outputs", "build", "dist"}


def project_modules(root: Path = ROOT) -> dict:
    """``{dotted module name: file}`` of every project ``.py`` file."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """Every dotted name an import in ``tree`` may refer to (a module or ``module.attr``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                # names base.alias when it is a module, else resolves to base itself
                yield f"{base}.{alias.name}" if base else alias.name


def import_graph(modules: dict) -> dict:
    """``{module: set of project modules it imports}``."""
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            # the longest project module that the name starts with
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != module:
                        targets.add(candidate)
                    break
        graph[module] = targets
    return graph


def find_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_checker_sees_a_function_local_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (tmp_path / "pkg" / "c.py").write_text("from . import a\n")
    graph = import_graph(project_modules(tmp_path))
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_the_project():
    modules = project_modules()
    assert {"models.depthnet", "utils.evaluation", "utils.metrics"} <= set(modules)
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# What the model must never import: data readers, evaluation, metrics on saved runs, reports.
NOT_UNDER_THE_MODEL = ("datasets", "tools", "tests", "utils.evaluation", "utils.eval_scenes",
                       "utils.inference_loop", "utils.metrics", "utils.metrics_report",
                       "utils.protocols", "utils.run_files", "utils.run_metrics")


def test_the_model_imports_no_evaluation_code():
    """The model's imports (all of them, transitively) hold no reader, evaluation or
    metrics-of-saved-runs module; its mode="test" uses the pure utils.depth_metrics."""
    graph = import_graph(project_modules())
    seen, todo = set(), ["models.depthnet"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    assert "utils.depth_metrics" in seen
    forbidden = sorted(m for m in seen
                       if any(m == p or m.startswith(p + ".") for p in NOT_UNDER_THE_MODEL))
    assert not forbidden, f"models.depthnet imports {forbidden}"
