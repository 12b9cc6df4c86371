"""reports.layer_check (check_layer): a user's own NumPy layer against torch autograd and finite differences.

The demo folder docs/examples/layer/ runs through pytest (``pytester``); the
unit tests plant bugs — a missing factor in one element, a wrong row, a wrong
convention at a kink, a wrong forward — and check that the table names them.
"""
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_verify.reports.layer_check import LayerCheck, check_layer

pytest_plugins = ["pytester"]

DEMO = Path(__file__).resolve().parent.parent / "docs" / "examples" / "layer"


# --- small layers of a user's own ---------------------------------------------------------------------------------

class Linear:
    """z = x Wᵀ + b;  ∂L/∂x = δ W,  ∂L/∂W = δᵀ x,  ∂L/∂b = Σ_n δ."""

    def __init__(self, n_in=3, n_out=2, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"weight": rng.normal(size=(n_out, n_in)), "bias": rng.normal(size=n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, delta):
        self.grads = {"weight": delta.T @ self.x, "bias": delta.sum(axis=0)}
        return delta @ self.params["weight"]


class Injected:
    """A correct layer whose backward is edited afterwards: ``edit(input_grad, grads)`` plants the bug."""

    def __init__(self, layer, edit):
        self.layer, self.edit = layer, edit
        self.params = layer.params  # the same dict: check_layer's copies reach the inner layer

    @property
    def grads(self):
        return self.layer.grads

    def forward(self, *arrays):
        return self.layer.forward(*arrays)

    def backward(self, delta):
        input_grad = self.layer.backward(delta)
        self.edit(input_grad, self.layer.grads)
        return input_grad


class Relu:
    def __init__(self, derivative_at_zero=0.0):
        self.derivative_at_zero = derivative_at_zero

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0.0)

    def backward(self, delta):
        slope = np.where(self.x > 0, 1.0, np.where(self.x == 0, self.derivative_at_zero, 0.0))
        return delta * slope


class Softmax:
    """a = softmax(z) over the last axis;  ∂L/∂z = a ⊙ (δ − Σ_j δ_j a_j)."""

    def forward(self, z):
        shifted = np.exp(z - z.max(axis=-1, keepdims=True))
        self.a = shifted / shifted.sum(axis=-1, keepdims=True)
        return self.a

    def backward(self, delta):
        return self.a * (delta - (delta * self.a).sum(axis=-1, keepdims=True))


class MatMul:
    """z = a b;  ∂L/∂a = δ bᵀ,  ∂L/∂b = aᵀ δ."""

    def __init__(self, swap_bug=False):
        self.swap_bug = swap_bug

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, delta):
        grad_b = self.a.T @ delta
        if self.swap_bug:
            grad_b = grad_b[::-1]  # the rows of ∂L/∂b in reverse order
        return delta @ self.b.T, grad_b


# --- the demo folder through pytest ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_imports():
    """Run the demo's checks once before ``pytester`` takes its snapshot of sys.modules.

    pytester drops the modules first imported while it is active; torch imports
    some of its modules lazily (on the first autograd or dynamo call), and those
    register native operators once per process, so a later re-import in this
    worker would fail. Imported here, they are in the snapshot and stay.
    """
    spec = importlib.util.spec_from_file_location("check_layer_demo_layers", DEMO / "my_layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    check_layer(layers.Conv1dNaive(3, 4, 3), F.conv1d, inputs=[(2, 3, 8)])
    check_layer(layers.Conv1dNaiveBuggy(3, 4, 3), F.conv1d, inputs=[(2, 3, 8)], raises=False)


@pytest.fixture
def demo(demo_imports, pytester):
    for name in ("my_layers.py", "test_my_layers.py"):
        shutil.copy(DEMO / name, pytester.path / name)
    return pytester


class ModulesAtExit:
    """An in-process plugin: the modules loaded when the inner pytest run ends (before pytester drops them)."""

    modules: set = set()

    def pytest_unconfigure(self):
        self.modules = set(sys.modules)


def test_the_demo_passes_and_its_planted_bug_fails_with_the_table(demo):
    before, at_exit = set(sys.modules), ModulesAtExit()
    marked = demo.runpytest("-p", "no:cacheprovider", plugins=[at_exit])
    marked.assert_outcomes(passed=2, xfailed=1)
    # The inner run imported no torch module of its own (``demo_imports``): none is dropped and re-imported.
    assert not {m for m in at_exit.modules - before if m.split(".")[0] in ("torch", "sympy")}
    failing = demo.runpytest("-p", "no:cacheprovider", "--runxfail")
    failing.assert_outcomes(passed=2, failed=1)
    failing.stdout.fnmatch_lines([
        "*check_layer(Conv1dNaiveBuggy(3, 4, 3), F.conv1d, inputs=[[](2, 3, 8)[]])",
        "E*AssertionError: check_layer: Conv1dNaiveBuggy fails 8 of 38 comparisons on 5 of 5 draws (seed 0;*",
        "E*draw*dtype*pair*quantity*max_abs*max_rel*tolerance*worst*value*reference*fd sides with",
        "E*random-0*float64*layer-torch*input.grad*1.0e-10*[[]1,0,6[]]*-0.2054764049*-1.440423054*torch",
        "E*random-0*float64*layer-fd*input.grad*1.0e-06*[[]1,0,6[]]*",
        "E*kink-0*float64*layer-torch*input.grad*",
        "E*input.grad: finite differences side with torch: the layer's backward is wrong there*",
        "FAILED test_my_layers.py::test_conv1d_naive_buggy - AssertionError*",
    ])
    assert "weight.grad" not in failing.stdout.str()  # only the planted bug's quantity is named


# --- check_layer itself ----------------------------------------------------------------------------------------------

def test_a_correct_layer_with_parameters_passes_every_pair_and_gets_its_parameters_back():
    layer = Linear()
    originals = dict(layer.params)
    result = check_layer(layer, F.linear, inputs=[(4, 3)])
    assert isinstance(result, LayerCheck) and result.passed and not result.failures
    assert result.draws == ["random-0", "random-1", "random-2", "kink-0", "kink-1"]
    seen = {(row.pair, row.quantity) for row in result}
    assert seen == {("layer-torch", q) for q in ("output", "input.grad", "weight.grad", "bias.grad")} | {
        (pair, q) for pair in ("layer-fd", "torch-fd") for q in ("input.grad", "weight.grad", "bias.grad")}
    assert not any(row.pair != "layer-torch" for row in result if row.draw.startswith("kink-"))
    assert all(layer.params[key] is value for key, value in originals.items())
    assert "passes 38 comparisons" in str(result)


def test_a_missing_factor_in_one_element_is_found_at_that_element():
    def halve(input_grad, grads):
        grads["weight"][1, 2] *= 0.5

    with pytest.raises(AssertionError) as caught:
        check_layer(Injected(Linear(), halve), F.linear, inputs=[(4, 3)], kinks=0)
    message = str(caught.value)
    assert "weight.grad: finite differences side with torch" in message
    result = check_layer(Injected(Linear(), halve), F.linear, inputs=[(4, 3)], kinks=0, raises=False)
    failures = result.failures
    assert {(row.pair, row.quantity) for row in failures} == {("layer-torch", "weight.grad"),
                                                            ("layer-fd", "weight.grad")}
    assert {row.worst_index for row in failures} == {"[1,2]"}
    for row in failures:
        assert row.value == pytest.approx(0.5 * row.reference_value, rel=1e-5)
        assert f"{row.value:.10g}" in message and f"{row.reference_value:.10g}" in message
    table_lines = [line for line in message.splitlines() if "weight.grad" in line and "[1,2]" in line]
    assert len(table_lines) == 6  # 3 draws × (layer-torch, layer-fd)
    assert {row.fd_sides for row in failures if row.pair == "layer-torch"} == {"torch"}


def test_a_wrong_row_is_found_in_that_row():
    def wrong_row(input_grad, grads):
        input_grad[2] = 0.0

    result = check_layer(Injected(Linear(), wrong_row), F.linear, inputs=[(4, 3)], raises=False)
    failures = result.failures
    assert failures and {row.quantity for row in failures} == {"input.grad"}
    for row in failures:
        assert row.worst_index.startswith("[2,") and row.value == 0.0
        assert abs(row.reference_value) == pytest.approx(row.max_abs)


def test_several_inputs_by_name_and_a_bug_in_the_second():
    inputs = {"a": (3, 4), "b": (4, 2)}
    result = check_layer(MatMul(), torch.matmul, inputs=inputs)
    assert result.passed and {row.quantity for row in result} == {"output", "a.grad", "b.grad"}
    with pytest.raises(AssertionError) as caught:
        check_layer(MatMul(swap_bug=True), torch.matmul, inputs=inputs)
    message = str(caught.value)
    assert "b.grad: finite differences side with torch" in message and "a.grad" not in message
    unnamed = check_layer(MatMul(swap_bug=True), torch.matmul, inputs=[(3, 4), (4, 2)], raises=False)
    assert {row.quantity for row in unnamed.failures} == {"input1.grad"}


def test_float32_is_judged_by_the_float32_policy():
    result = check_layer(Softmax(), lambda z: torch.softmax(z, dim=-1), inputs=[(4, 5)], dtype="float32")
    assert result.dtypes == ("float64", "float32")
    float32 = [row for row in result if row.dtype == "float32"]
    assert float32 and {row.tolerance for row in float32} == {2e-4} and {row.pair for row in float32} == {"layer-torch"}
    only = check_layer(Softmax(), lambda z: torch.softmax(z, dim=-1), inputs=[(4, 5)], dtype=("float32",))
    assert {row.dtype for row in only} == {"float32"} and "Finite differences were not run" in only.notes[0]


def test_kinks_are_judged_against_torch_only():
    """relu'(0) = 1 is the right derivative: torch's convention is the left one (tests/test_check_layer_kinks.py
    has the verdict ``convention``); strict_kinks=True asks for torch's, and then it fails only at kinks."""
    assert check_layer(Relu(), torch.relu, inputs=[(5, 4)]).passed
    with pytest.raises(AssertionError) as caught:
        check_layer(Relu(derivative_at_zero=1.0), torch.relu, inputs=[(5, 4)], strict_kinks=True)
    message = str(caught.value)
    assert "input.grad: fails only at kinks" in message
    result = check_layer(Relu(derivative_at_zero=1.0), torch.relu, inputs=[(5, 4)], raises=False, strict_kinks=True)
    assert {row.draw for row in result.failures} == {"kink-0", "kink-1"}
    assert {row.pair for row in result.failures} == {"layer-torch"}
    at = result.failures[0]
    index = tuple(int(i) for i in at.worst_index[1:-1].split(","))
    assert at.value != at.reference_value and at.reference_value == 0.0 and len(index) == 2


def test_a_wrong_forward_with_a_consistent_backward_has_finite_differences_side_with_the_layer():
    class Doubled:
        def forward(self, x):
            return 2.0 * x

        def backward(self, delta):
            return 2.0 * delta

    with pytest.raises(AssertionError) as caught:
        check_layer(Doubled(), lambda x: x * 1.0, inputs=[(2, 3)], kinks=0)
    message = str(caught.value)
    assert "output: the layer's forward differs from torch_fn" in message
    assert "input.grad: finite differences of the layer's forward agree with its backward" in message


def test_given_arrays_are_the_first_draw():
    x = np.array([[0.5, -1.0, 2.0]])
    result = check_layer(Linear(), F.linear, inputs=[x], draws=1, kinks=0)
    assert result.draws == ["given", "random-0"]


def test_errors_in_use_say_what_is_wrong():
    class NoBackward:
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="NoBackward has no backward method"):
        check_layer(NoBackward(), lambda x: x, inputs=[(2, 3)])
    with pytest.raises(TypeError, match=r"inputs=\[\(4, 3\)\]"):
        check_layer(Linear(), F.linear, inputs=(4, 3))

    class Transposed(Relu):
        def backward(self, delta):
            return super().backward(delta).T

    with pytest.raises(AssertionError, match=r"the gradient of input 'input' of shape \(3, 2\).*shape \(2, 3\)"):
        check_layer(Transposed(), torch.relu, inputs=[(2, 3)])

    class OneGradient(MatMul):
        def backward(self, delta):
            return super().backward(delta)[0]

    with pytest.raises(AssertionError, match="returned 1 gradient for 2 inputs.*a tuple of 2 arrays"):
        check_layer(OneGradient(), torch.matmul, inputs=[(3, 4), (4, 2)])

    class ForgetsBias(Linear):
        def backward(self, delta):
            input_grad = super().backward(delta)
            del self.grads["bias"]
            return input_grad

    layer = ForgetsBias()
    originals = dict(layer.params)
    with pytest.raises(AssertionError, match="grads has no 'bias'"):
        check_layer(layer, F.linear, inputs=[(4, 3)])
    assert all(layer.params[key] is value for key, value in originals.items())

    class BoundInInit(Linear):
        def __init__(self):
            super().__init__()
            self.weight = self.params["weight"]

        def forward(self, x):
            self.x = x
            return x @ self.weight.T + self.params["bias"]

    with pytest.raises(TypeError, match=r"changing BoundInInit.params\['weight'\] does not change"):
        check_layer(BoundInInit(), F.linear, inputs=[(4, 3)])

    def raising(x, weight, bias):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="mat1 and mat2") as caught:
        check_layer(Linear(), raising, inputs=[(4, 3)])
    assert any("check_layer: raised by torch_fn(input, weight=, bias=)" in note for note in caught.value.__notes__)
    with pytest.raises(AssertionError, match=r"forward gives shape \(4, 2\), torch_fn gives \(4, 3\)"):
        check_layer(Linear(), lambda x, weight, bias: x, inputs=[(4, 3)])
