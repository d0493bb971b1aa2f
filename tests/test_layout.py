"""The package's layout: no import cycle inside ``encnet``, and the folders' data flow is the import direction.

Imports are read with ``ast`` from the source files (nothing is imported), at any depth: an import inside a
function is still a dependency, and a cycle hidden that way breaks as soon as someone moves it to the top.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "encnet"

# Lower layers never import higher ones. Blocks know nothing of configs or run folders; the engine turns a
# config into a run folder; the report and the analysis read run folders; the experiments drive all of them;
# the two command modules only re-export the engine's. The package itself (``encnet/__init__.py``) is the public
# API: it re-exports names of the blocks and of the engine (``load_published``), and nothing inside imports it.
LAYERS = [
    ("blocks", ("encnet", "encnet.nn", "encnet.models", "encnet.data", "encnet.losses", "encnet.metrics")),
    ("engine", ("encnet.engine",)),
    ("report", ("encnet.report",)),
    ("analysis", ("encnet.analysis",)),
    ("experiments", ("encnet.experiments",)),
    ("commands", ("encnet.train", "encnet.evaluate")),
    ("api", ()),  # the module "encnet" alone (its submodules are blocks unless listed above)
]
API = "encnet"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: {modules of the package it imports}}`` for every ``.py`` under ``root`` (a package folder)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name

    def resolve(name: str) -> str | None:
        # `from pkg import sub` names the submodule when there is one, else the package.
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target == top or target.startswith(top + "."):
                    resolved = resolve(target)
                    if resolved and resolved != name:
                        deps.add(resolved)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def layer_of(module: str) -> int:
    if module == API:
        return [name for name, _ in LAYERS].index("api")
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer of tests/test_layout.py; add it to LAYERS"
    return best[0]


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_the_graph_sees_relative_absolute_and_function_level_imports(graph):
    assert "encnet.engine.eval_loop" in graph["encnet.engine.train"]  # `from .eval_loop import ...`
    assert "encnet.engine.evaluate_published" in graph["encnet.engine.evaluate"]  # inside a function
    assert "encnet.metrics" in graph["encnet.engine.build"]  # `from encnet import metrics`
    assert graph["encnet.train"] == {"encnet.engine.train"}


def test_no_import_cycle_inside_encnet(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_relative_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("import pkg.a as a\n")
    cycle = find_cycle(import_graph(package))
    assert cycle is not None and set(cycle) == {"pkg.a", "pkg.sub.b", "pkg.c"} and cycle[0] == cycle[-1]
    (package / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(package)) is None


def test_imports_follow_the_layers(graph):
    upward = sorted(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
                    for module, deps in graph.items() for dep in deps if layer_of(dep) > layer_of(module))
    assert upward == [], "imports against the data flow:\n" + "\n".join(upward)


def test_nothing_inside_encnet_imports_the_command_modules(graph):
    commands = {"encnet.train", "encnet.evaluate"}
    users = sorted(m for m, deps in graph.items() if deps & commands and m not in commands)
    assert users == [], f"{users} import a command module; import encnet.engine.train / .evaluate instead"


def test_nothing_inside_encnet_imports_the_package_root(graph):
    # The root's names are imported on first use from the modules below it; a module importing the root would
    # make that a cycle waiting for someone to turn the lazy imports into eager ones.
    assert {"encnet.models.segmentation", "encnet.engine.published_weights"} <= graph[API]
    users = sorted(m for m, deps in graph.items() if API in deps)
    assert users == [], f"{users} import the package root `encnet`; import the submodule that defines the name"


def test_the_commands_and_their_names_still_import():
    import encnet.evaluate
    import encnet.train
    from encnet.engine import evaluate as engine_evaluate
    from encnet.engine import train as engine_train

    assert encnet.train.train is engine_train.train and encnet.train.main is engine_train.main
    assert encnet.evaluate.evaluate is engine_evaluate.evaluate and encnet.evaluate.main is engine_evaluate.main
