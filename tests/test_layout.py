"""The house: which floor may import which, no import cycle, small files and functions.

Every ``.py`` file of the project is parsed (``ast``, nothing is imported); each
``import``/``from ... import`` anywhere in it (inside functions too) is an edge to the
project module it names (``from evaluation import metrics`` names ``evaluation.metrics``;
``from models import precision`` names ``models.precision``) and to every package face
(``__init__``) above that module, which Python runs first.
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
            parts = name.split(".")
            found = [".".join(parts[:end]) for end in range(1, len(parts) + 1)
                     if ".".join(parts[:end]) in modules]
            if found:  # the longest project module the name starts with, and its faces
                longest = max(found, key=len)
                targets.update(m for m in found if longest.startswith(m))
        graph[module] = targets - {module}
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
    assert graph["pkg.c"] == {"pkg", "pkg.a"}  # the face too
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_the_project():
    modules = project_modules()
    assert {"models.depthnet", "evaluation.run", "evaluation.metrics"} <= set(modules)
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# Who may not import whom: utils is the ground floor; models and datasets stand on it; the
# training and the evaluation on those; developer diagnostics (dev) on everything.
FORBIDDEN = {
    "utils": ("models", "datasets", "training", "evaluation", "dev"),
    "models": ("datasets", "training", "evaluation", "dev"),
    "datasets": ("models", "training", "evaluation", "dev"),
    "training": ("evaluation", "dev"),
    "evaluation": ("training", "dev"),
}
SCRIPTS = ("benchmark", "demo", "export", "predict", "train_hybrid", "eval_hybrid", "eval_hybrid_seq")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _climbing_imports(graph: dict) -> list:
    """``(importer, imported)`` pairs that break :data:`FORBIDDEN` or import a script."""
    bad = []
    for module, targets in graph.items():
        for target in sorted(targets):
            floor = module.split(".")[0]
            if any(_under(target, p) for p in FORBIDDEN.get(floor, ())):
                bad.append((module, target))
            elif target in SCRIPTS and floor not in ("tests",):
                bad.append((module, target))
    return bad


def test_the_checker_sees_a_climbing_import_and_a_script_import(tmp_path):
    for package in ("utils", "models"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "models" / "net.py").write_text("def f():\n    import demo\n")
    (tmp_path / "utils" / "geo.py").write_text("from models.net import f\n")
    (tmp_path / "demo.py").write_text("")
    graph = import_graph(project_modules(tmp_path))
    assert graph["utils.geo"] == {"models", "models.net"}
    assert _climbing_imports(graph) == [("models.net", "demo"), ("utils.geo", "models"),
                                        ("utils.geo", "models.net")]


def test_no_import_climbs_a_floor_and_no_module_imports_a_script():
    bad = _climbing_imports(import_graph(project_modules()))
    assert not bad, "imports against the layout: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def _long_functions(path: Path) -> list:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_files_and_functions_stay_small():
    too_long, long_functions = [], []
    for path in project_modules().values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
        long_functions += _long_functions(path)
    assert not too_long, f"files over {MAX_FILE_LINES} lines: {too_long}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
