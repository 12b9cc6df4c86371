"""The import graph of the whole project, read from the source: no cycle, no
arrow that runs upward, function-local imports included.

The layers, lowest first (a module may import its own layer or lower ones):
scenarios → manual, reference → verification → textbook → rendering → bench →
commands (and the pytest front end) → cli. ``manual`` and ``reference`` sit on
one layer and must never import each other: the two engines stay independent.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("scenarios", "manual", "reference", "reports")
NAMESPACE = "backprop_verify"  # the one import name installed; its packages are PACKAGES

LAYERS = (
    ("scenarios",),
    ("manual", "reference"),
    ("reports.verification",),
    ("reports.textbook",),
    ("reports.rendering",),
    ("reports.bench",),
    ("reports.commands", "reports.layer_check"),
    ("reports.cli",),
)
INDEPENDENT = (("manual", "reference"), ("reference", "manual"))
# Modules that are namespaces only (``import reports`` to find the package folder).
NAMESPACES = ("reports",)


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (relative imports resolved)."""
    names = set(sources)
    edges: dict[str, set[str]] = {name: set() for name in sources}
    for name, text in sources.items():
        is_package = any(other.startswith(name + ".") for other in names)
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # The installed namespace: backprop_verify.reports.cli is the module reports.cli here.
                target = "" if target == NAMESPACE else target.removeprefix(NAMESPACE + ".")
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def layer_of(module: str) -> int | None:
    best, rank = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def problems(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if target in NAMESPACES:
                continue
            if any(module.startswith(a) and target.startswith(b) for a, b in INDEPENDENT):
                found.append(f"{module} imports {target}: the two engines must stay independent")
            low, high = layer_of(target), layer_of(module)
            if low is None or high is None:
                found.append(f"{module} -> {target}: a module outside the layers {LAYERS}")
            elif low > high:
                found.append(f"{module} imports {target}: an arrow upward ({LAYERS[high]} below {LAYERS[low]})")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, done, stack = [], set(), []

    def visit(module):
        if module in stack:
            found.append(stack[stack.index(module):] + [module])
            return
        if module in done:
            return
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            visit(target)
        stack.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    return found


@pytest.fixture(scope="module")
def project_graph():
    return import_graph({name: path.read_text(encoding="utf-8") for name, path in modules().items()})


def test_every_module_sits_in_a_layer(project_graph):
    outside = [m for m in project_graph if layer_of(m) is None and m not in NAMESPACES]
    assert not outside, f"modules in no layer of tests/test_architecture.py: {outside}"


def test_imports_run_one_way_with_no_cycle(project_graph):
    found = problems(project_graph)
    assert not found, "\n".join(found)


def test_the_check_sees_function_local_imports_and_cycles():
    """Injected bugs: an upward import hidden in a function, a cycle, manual importing reference."""
    sources = {
        "scenarios": "", "scenarios.model": "def f():\n    from reports.rendering import table\n",
        "reports": "", "reports.rendering": "", "reports.rendering.table": "import reports.verification.compare\n",
        "reports.verification": "", "reports.verification.compare": "from reports.verification import runner\n",
        "reports.verification.runner": "from . import compare\n",
        "manual": "", "manual.engine": "import reference.torch_engine\n",
        "reference": "", "reference.torch_engine": "",
    }
    found = "\n".join(problems(import_graph(sources)))
    assert "scenarios.model imports reports.rendering" in found
    assert "import cycle: reports.verification.compare -> reports.verification.runner" in found
    assert "manual.engine imports reference.torch_engine: the two engines must stay independent" in found
    assert "reports.rendering.table imports" not in found  # downward: allowed
