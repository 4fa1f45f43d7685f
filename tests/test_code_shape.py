"""The package's shape: no import cycle, layers that import only downwards, short functions, short
parameter lists (issue 16's limits)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "agegender"
MAX_BODY_LINES = 50
MAX_PARAMETERS = 8
# Typer commands and FastAPI routes take one parameter per CLI option / request field.
FRAMEWORK_DECORATORS = ("app.command", "app.get", "app.post", "router.get", "router.post")


# Lowest first: a module may import its own layer and those below it, never one above (the CLI is on top).
LAYERS = (
    ("agegender", "agegender.errors", "agegender.atomic_write", "agegender.outputs", "agegender.config"),
    ("agegender.data",),
    ("agegender.models",),  # architectures, the model file, the runtimes that run one (backends)
    ("agegender.export",),  # files written from a checkpoint (ONNX, int8, float16)
    ("agegender.inference",),  # detection, crops, prediction; builds ONNX caches through export
    ("agegender.evaluation",),
    ("agegender.training",),
    ("agegender.serving",),
    ("agegender.cli", "agegender.cli_runs"),  # cli_runs: the `predict` verb's whole runs
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def runtime_nodes(node: ast.AST):
    """Every node of the tree but the bodies of `if TYPE_CHECKING:` (imports for type checkers only)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
            yield from (n for branch in child.orelse for n in runtime_nodes(branch))
            continue
        yield from runtime_nodes(child)


def imported_modules(name: str, tree: ast.Module) -> set[str]:
    """The package's modules `name` imports anywhere (in functions too), packages' __init__ files included
    (`from agegender.models import list_models` depends on everything that package's __init__ imports)."""
    found = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from package import module` needs that module; `from package import name`, the package's __init__
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else node.module for t in submodules]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def functions():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{name}.{node.name} (line {node.lineno})", node


def parameter_count(node: ast.FunctionDef) -> int:
    args = node.args
    named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
    return len(named) + (args.vararg is not None) + (args.kwarg is not None)


def is_framework_signature(node: ast.FunctionDef) -> bool:
    return any(ast.unparse(d).startswith(FRAMEWORK_DECORATORS) for d in node.decorator_list)


def test_the_package_is_found():
    assert len(MODULES) > 50 and "agegender.cli" in MODULES


def layer(name: str) -> int:
    """The layer of a module: its package's (the longest listed prefix wins)."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{name} is in no layer of LAYERS"
    return max(matches)[1]


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, ast.parse(path.read_text())) for name, path in MODULES.items()}


def test_every_import_points_down_the_layers():
    upward = [f"{name} -> {target}" for name, targets in import_graph().items() for target in sorted(targets)
              if layer(target) > layer(name)]  # fmt: skip
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_layer_check_sees_function_level_imports():
    # formats.py once imported the predictor inside a function; the graph must still see such edges
    tree = ast.parse("def f():\n    from agegender.inference.predictor import Predictor\n")
    assert imported_modules("agegender.export.formats", tree) == {"agegender.inference.predictor"}
    assert layer("agegender.inference.predictor") > layer("agegender.export.formats")


def test_no_import_cycle():
    graph = import_graph()
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_no_function_body_over_the_limit():
    long = [f"{where}: {node.end_lineno - node.body[0].lineno + 1} lines" for where, node in functions()
            if node.end_lineno - node.body[0].lineno + 1 > MAX_BODY_LINES]
    assert not long, long


def test_no_parameter_list_over_the_limit():
    wide = [f"{where}: {parameter_count(node)} parameters" for where, node in functions()
            if parameter_count(node) > MAX_PARAMETERS and not is_framework_signature(node)]
    assert not wide, wide
