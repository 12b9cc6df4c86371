"""The rules that keep the two sides honest, and the registries complete."""
import ast
from pathlib import Path

import numpy as np
import pytest

import backprop_verify.manual.activations
import backprop_verify.manual.losses
import backprop_verify.manual.optimizers
import backprop_verify.reference.torch_engine
from backprop_verify import manual, reference
from backprop_verify.scenarios import ACTIVATIONS, LOSSES, OPTIMIZERS, random_scenario

ROOT = Path(__file__).resolve().parent.parent
AUTODIFF = {"torch", "jax", "autograd", "tensorflow", "mxnet", "tinygrad"}


PROJECT = ("scenarios", "manual", "reference", "reports")


def _top(module: str) -> str:
    """The top-level name a module path imports, ``backprop_verify.`` taken off the project's own."""
    parts = module.split(".")
    return parts[1] if parts[0] == "backprop_verify" and len(parts) > 1 else parts[0]


def _imports(folder):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                yield path, [_top(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, [a.name for a in node.names] if node.module == "backprop_verify" else [_top(node.module)]


def _bare_imports(folder):
    """Imports of the project's packages by their bare names (``import manual``), not through ``backprop_verify``."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            yield from ((path.relative_to(ROOT), name) for name in names if name.split(".")[0] in PROJECT)


@pytest.mark.parametrize("folder", PROJECT + ("tests",))
def test_the_project_is_imported_through_its_one_namespace(folder):
    """Installed, the project adds one import name, backprop_verify: a bare ``import reports`` would
    find a user's own ``reports`` package first."""
    bare = list(_bare_imports(folder))
    assert not bare, f"import these through backprop_verify: {bare[:10]}"


def test_manual_imports_no_autodiff_library():
    bad = [(p.name, m) for p, mods in _imports("manual") for m in mods if m in AUTODIFF]
    assert not bad, f"manual/ must be hand-written NumPy: {bad}"


def test_reference_never_imports_manual():
    bad = [(p.name, m) for p, mods in _imports("reference") for m in mods if m == "manual"]
    assert not bad, f"reference/ must be built from the scenario alone: {bad}"


def test_registries_cover_the_catalogue():
    assert set(manual.activations.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(reference.torch_engine.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(manual.losses.LOSSES) == set(LOSSES)
    assert set(reference.torch_engine.LOSSES) == set(LOSSES)
    assert set(manual.optimizers.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(reference.torch_engine.OPTIMIZERS) == set(OPTIMIZERS)


def test_random_scenarios_are_reproducible_and_varied():
    a, b = random_scenario(123), random_scenario(123)
    assert a.name == b.name
    for la, lb in zip(a.layers, b.layers):
        assert la.type == lb.type
        if la.is_linear:
            np.testing.assert_array_equal(la.weight, lb.weight)
    np.testing.assert_array_equal(a.x, b.x)
    names = {random_scenario(s).name.split("-")[2] for s in range(60)}
    assert len(names) == 6, names  # depths 1..6 all drawn


@pytest.mark.subprocess
def test_random_scenarios_are_identical_in_a_fresh_process():
    import subprocess
    import sys

    code = ("from scenarios import random_scenario; import hashlib;"
            "s = random_scenario(99); h = hashlib.sha256(s.x.tobytes());"
            "[h.update(l.weight.tobytes()) for l in s.layers if l.is_linear]; print(s.name, h.hexdigest())")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONHASHSEED": str(k), "PATH": ""}, check=True).stdout for k in (1, 2)]
    assert out[0] == out[1] and out[0].startswith("random-s99-")
