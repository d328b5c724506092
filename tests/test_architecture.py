"""The shape of the house: every trainer runs through models/engine.py, features/ stays a thin adapter
layer, and models/ never imports from the layers above it. Checked on the source, with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "synthleak"
#: packages / modules that sit above models/ (models/ must not import them)
ABOVE_MODELS = ("features", "methods", "attacks", "pipeline", "cli", "report", "bench", "decide", "demo")


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
