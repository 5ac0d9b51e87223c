"""The package's architecture, read from its source: the lab apart from the product, no import circles, and every
private Ultralytics name in ``ultralytics_internals.py`` only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from yolo_tsd.ultralytics_internals import PRIVATE_ATTRIBUTES, PRIVATE_KEYS, PUBLIC_IMPORTS

PACKAGE = Path(__file__).resolve().parents[1] / "yolo_tsd"
TORCH_PRIVATE = {
    "_schema"
}  # torch's (the scale check reads an op's schema), not Ultralytics': the check is about those
INTERNALS = PACKAGE / "ultralytics_internals.py"
LAB = PACKAGE / "bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in a file, module-level and inside functions."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def internal_edges() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` counts as importing ``x``)."""
    known, edges = modules(), {}
    for name, path in known.items():
        targets = set()
        for module, names in imports(path):
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                if candidate in known and candidate != name:
                    targets.add(candidate)
                    break
        edges[name] = targets
    return edges


def is_lab(module: str) -> bool:
    return module == "yolo_tsd.bench" or module.startswith("yolo_tsd.bench.")


def test_the_product_never_imports_the_lab():
    product = [m for m in modules() if not is_lab(m)]
    assert "yolo_tsd.training.trainer" in product and "yolo_tsd.bench.runner" in modules()
    offending = {m: sorted(t for t in internal_edges()[m] if is_lab(t)) for m in product}
    assert not {m: t for m, t in offending.items() if t}, offending


def test_no_import_circles():
    edges = internal_edges()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            assert (cycle := visit(start, [])) is None, " -> ".join(cycle)


def private_uses(source: str) -> list[str]:
    """What a module uses of Ultralytics' private behaviour (outside ``ultralytics_internals``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ultralytics" and not node.level:
            allowed = PUBLIC_IMPORTS.get(node.module, set())
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name not in allowed]
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("ultralytics.")]
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            private = node.attr.startswith("_") and not node.attr.startswith("__") and owner not in {"self", "cls"}
            if node.attr in PRIVATE_ATTRIBUTES or (private and node.attr not in TORCH_PRIVATE):
                found.append(f".{node.attr}")
        found += [repr(key) for key in looked_up_keys(node) if key in PRIVATE_KEYS]
    return found


def looked_up_keys(node: ast.AST) -> list[str]:
    """String keys a node looks up: ``x["k"]``, ``x.get("k")``/``pop``, ``"k" in x``, ``getattr(x, "k")``."""

    def text(n):
        return [n.value] if isinstance(n, ast.Constant) and isinstance(n.value, str) else []

    if isinstance(node, ast.Subscript):
        return text(node.slice)
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        return text(node.left)
    if isinstance(node, ast.Call) and node.args:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in {"get", "pop", "setdefault"}:
            return text(node.args[0])
        if name in {"getattr", "hasattr", "setattr", "delattr"} and len(node.args) > 1:
            return text(node.args[1])
    return []


def test_private_ultralytics_names_are_used_in_the_internals_module_only():
    offending = {}
    for name, path in modules().items():
        if path != INTERNALS and (uses := private_uses(path.read_text())):
            offending[name] = uses
    assert not offending, offending
    assert private_uses(INTERNALS.read_text()), "the internals module holds them (else the check reads nothing)"


@pytest.mark.parametrize(
    "snippet",
    [
        "from ultralytics.utils.tal import TaskAlignedAssigner",
        "import ultralytics.nn.tasks",
        "fg = criterion.assigner(a, b)[3]",
        "scores = preds['scores']",
        "trainer._setup_train()",
        "ckpt.get('train_args')",
    ],
)
def test_the_private_name_check_can_fail(snippet):
    assert private_uses(snippet), snippet


def test_the_public_api_passes_the_check():
    ok = "from ultralytics.utils import LOGGER, RANK\nfrom ultralytics import YOLO\nself._cache = 1\nx = {'img': 1}"
    assert private_uses(ok) == []
