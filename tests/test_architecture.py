"""The shape of the house: every trainer runs through models/engine.py, features/ stays a thin adapter
layer, and models/ never imports from the layers above it. Checked on the source, with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "synthleak"
#: packages / modules that sit above models/ (models/ must not import them)
ABOVE_MODELS = ("features", "methods", "attacks", "pipeline", "cli", "report", "bench", "decide", "demo", "config")
#: all that networks and trainers in models/ may import from the package: utilities, and image constants
MODELS_MAY_IMPORT = ("synthleak.models", "synthleak.errors", "synthleak.fsutil", "synthleak.runtime",
                     "synthleak.data.images")


def _sources(folder: Path | None = None):
    for path in sorted((folder or PACKAGE).rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, tree: ast.AST) -> set[str]:
    """Absolute names of every module imported by the file (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _training_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """`.backward(...)` calls, and `.step()` calls of optimisers / LR schedulers / grad scalers
    (`x.step()` with no argument, or `x.step(<optimiser>)`). A diffusion scheduler's sampling
    step (`scheduler.step(noise_pred, t, x)`) is not training and is not matched."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        args = node.args + [k.value for k in node.keywords]
        if node.func.attr == "backward":
            found.append((node.lineno, ast.unparse(node)))
        elif node.func.attr == "step" and (not args or (len(args) == 1 and "opt" in ast.unparse(args[0]).lower())):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_backward_and_optimiser_steps_only_in_models():
    offenders = []
    for path, tree in _sources():
        if path.relative_to(PACKAGE).parts[0] == "models":
            continue
        offenders += [f"{path.relative_to(PACKAGE)}:{line}: {code}" for line, code in _training_calls(tree)]
    assert not offenders, "training steps outside models/ (use models.engine.TrainingEngine):\n" + "\n".join(offenders)


def test_the_engine_is_where_the_update_happens():
    """Inside models/ too, only the engine calls backward / optimiser step: trainers call engine.optimize."""
    places = {str(path.relative_to(PACKAGE)) for path, tree in _sources(PACKAGE / "models") if _training_calls(tree)}
    assert places == {"models/engine.py"}


def test_the_matcher_sees_training_calls():
    tree = ast.parse("loss.backward()\nopt.step()\nscaler.step(optimizer)\nsched.step()\n"
                     "x = scheduler.step(noise_pred, t, x)\n")
    assert [line for line, _ in _training_calls(tree)] == [1, 2, 3, 4]


def test_feature_files_are_thin_adapters():
    too_long = {p.name: n for p in sorted((PACKAGE / "features").glob("*.py"))
                if (n := len(p.read_text().splitlines())) >= 300}
    assert not too_long, f"features/ files must stay under 300 lines: {too_long}"


def test_models_import_nothing_from_the_layers_above():
    offenders = []
    for path, tree in _sources(PACKAGE / "models"):
        for name in _imported_modules(path, tree):
            parts = name.split(".")
            if parts[0] == "synthleak" and len(parts) > 1 and parts[1] in ABOVE_MODELS:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_import_resolution_sees_relative_imports():
    path = PACKAGE / "models" / "example.py"
    tree = ast.parse("from ..features import base\nfrom .engine import TrainingEngine\nimport torch\n")
    assert {"synthleak.features", "synthleak.models.engine", "torch"} <= _imported_modules(path, tree)


def test_models_import_only_utilities():
    """Networks and trainers take plain settings objects: no run configuration, no application layer."""
    offenders = []
    for path, tree in _sources(PACKAGE / "models"):
        for name in _imported_modules(path, tree):
            if name.startswith("synthleak") and not any(name == m or name.startswith(m + ".")
                                                        for m in MODELS_MAY_IMPORT):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "\n".join(offenders)


def _module_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (at the top or inside functions: both run, sooner or later)."""
    sources = {_module_name(path): _imported_modules(path, tree) for path, tree in _sources()}
    graph = {}
    for module, imported in sources.items():
        edges = set()
        for name in imported:
            parts = name.split(".")
            # "pkg.mod.attr" names the module pkg.mod: the longest prefix that is a module
            target = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in sources),
                          None)
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_cycles_between_modules():
    """Imports inside functions count: they hide a loop from Python's import order, not from the reader."""
    graph = _module_graph()
    # a module importing its own package's __init__ is how a package re-exports, not a loop of layers
    graph = {m: {t for t in edges if not m.startswith(t + ".")} for m, edges in graph.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_between_packages():
    """The layers (data, models, features, attacks, methods, report, bench, engines, ...) form a hierarchy."""
    components: dict[str, set[str]] = {}
    for module, edges in _module_graph().items():
        source = _component(module)
        components.setdefault(source, set()).update(_component(t) for t in edges if _component(t) != source)
    cycle = _cycle(components)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from .ladder import build_ladder\n")
    assert "synthleak.bench.ladder" in _imported_modules(PACKAGE / "bench" / "build.py", tree)


def test_the_entry_points_stay_short():
    """The audit and the parser read as a table of contents: the steps live in named functions."""
    for module, name in (("pipeline.py", "run_audit"), ("cli.py", "build_parser")):
        tree = ast.parse((PACKAGE / module).read_text())
        fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
        assert fn.end_lineno - fn.lineno + 1 < 60, f"{module}:{name} is {fn.end_lineno - fn.lineno + 1} lines"
