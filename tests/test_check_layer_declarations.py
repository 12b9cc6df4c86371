"""check_layer's declarations: buffers and frozen parameters, integer inputs, the inputs that get a gradient.

BatchNorm exposes its running statistics (``buffers=``) and is checked in
train and eval mode; a parameter forward does not read is still a contract
error; an embedding takes integer ids, passed as they are and not differentiated.
"""
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_verify.reports.layer_check import check_layer


class BatchNorm1d:
    """x̂ = (x − μ) / √(σ² + ε), z = γ x̂ + β, μ and σ² the batch's (training) or the running ones (eval).

    Training updates running_mean ← (1 − m)·running_mean + m·μ and running_var likewise with the
    unbiased variance σ²·N/(N − 1) (PyTorch's convention); ``biased_running_var`` plants the textbook slip.
    ∂L/∂x = (1/√(σ² + ε)) (δx̂ − mean(δx̂) − x̂·mean(δx̂ ⊙ x̂)) in training, δx̂/√(σ² + ε) in eval.
    """

    def __init__(self, features=3, momentum=0.1, eps=1e-5, biased_running_var=False):
        rng = np.random.default_rng(1)
        self.params = {"weight": rng.uniform(0.5, 1.5, features), "bias": rng.normal(size=features),
                       "running_mean": rng.normal(size=features), "running_var": rng.uniform(0.5, 2.0, features)}
        self.momentum, self.eps, self.training, self.grads = momentum, eps, True, {}
        self.biased_running_var = biased_running_var

    def forward(self, x):
        p = self.params
        if self.training:
            mean, var = x.mean(axis=0), x.var(axis=0)
            n = x.shape[0]
            unbiased = var if self.biased_running_var else var * n / (n - 1)
            p["running_mean"] = (1 - self.momentum) * p["running_mean"] + self.momentum * mean
            p["running_var"] = (1 - self.momentum) * p["running_var"] + self.momentum * unbiased
        else:
            mean, var = p["running_mean"], p["running_var"]
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.x_hat = (x - mean) * self.inv_std
        return p["weight"] * self.x_hat + p["bias"]

    def backward(self, delta):
        self.grads = {"weight": (delta * self.x_hat).sum(axis=0), "bias": delta.sum(axis=0)}
        delta_hat = delta * self.params["weight"]
        if not self.training:
            return delta_hat * self.inv_std
        return self.inv_std * (delta_hat - delta_hat.mean(axis=0)
                               - self.x_hat * (delta_hat * self.x_hat).mean(axis=0))


RUNNING = ("running_mean", "running_var")


def test_buffers_are_installed_afresh_passed_to_torch_and_compared_in_both_modes():
    train = functools.partial(F.batch_norm, training=True)
    result = check_layer(BatchNorm1d(), train, inputs=[(5, 3)], buffers=RUNNING, mode="train", dtype="float32")
    assert result.passed
    assert {row.quantity for row in result} == {"output", "input.grad", "weight.grad", "bias.grad", *RUNNING}
    assert {row.pair for row in result if row.quantity in RUNNING} == {"layer-torch"}
    layer = BatchNorm1d()
    before = {key: layer.params[key] for key in RUNNING}
    assert check_layer(layer, functools.partial(F.batch_norm, training=False), inputs=[(5, 3)], buffers=RUNNING,
                       mode="eval").passed
    assert all(layer.params[key] is before[key] for key in RUNNING) and layer.training


def test_a_wrong_running_statistic_is_named():
    result = check_layer(BatchNorm1d(biased_running_var=True), functools.partial(F.batch_norm, training=True),
                         inputs=[(5, 3)], buffers=RUNNING, kinks=0, raises=False)
    assert {row.quantity for row in result.failures} == {"running_var"}
    assert "running_var: the layer's value after the call differs from torch_fn's" in result.message()


def test_undeclared_buffers_and_unknown_names_say_what_to_write():
    with pytest.raises(AssertionError, match="grads has no 'running_mean'.*buffers= and frozen= name those"):
        check_layer(BatchNorm1d(), functools.partial(F.batch_norm, training=True), inputs=[(5, 3)])
    with pytest.raises(ValueError, match=r"buffers= names \['running_std'\], not in BatchNorm1d.params"):
        check_layer(BatchNorm1d(), F.batch_norm, inputs=[(5, 3)], buffers=("running_mean", "running_std"))
    with pytest.raises(ValueError, match="named both in buffers= and in frozen="):
        check_layer(BatchNorm1d(), F.batch_norm, inputs=[(5, 3)], buffers=RUNNING, frozen="running_var")


class Linear:
    """z = x Wᵀ + b;  ∂L/∂x = δ W,  ∂L/∂W = δᵀ x (the bias is not trained: backward leaves it out)."""

    def __init__(self, seed=0, weight_in_init=False):
        rng = np.random.default_rng(seed)
        self.params = {"weight": rng.normal(size=(2, 3)), "bias": rng.normal(size=2)}
        self.bound_weight = self.params["weight"] if weight_in_init else None

    def forward(self, x):
        self.x = x
        weight = self.params["weight"] if self.bound_weight is None else self.bound_weight
        return x @ weight.T + self.params["bias"]

    def backward(self, delta):
        self.grads = {"weight": delta.T @ self.x}
        return delta @ self.params["weight"]


def test_a_frozen_parameter_is_passed_but_not_differentiated():
    with pytest.raises(AssertionError, match="grads has no 'bias'"):
        check_layer(Linear(), F.linear, inputs=[(4, 3)])
    result = check_layer(Linear(), F.linear, inputs=[(4, 3)], frozen=("bias",), kinks=0)
    assert result.passed and {row.quantity for row in result} == {"output", "input.grad", "weight.grad"}


def test_a_parameter_forward_does_not_read_is_still_a_contract_error():
    """Its change leaves the output unchanged and backward gives it a non-zero gradient: not a parameter
    without effect (tests/test_check_layer_outputs.py has one) but one read from an attribute."""
    with pytest.raises(TypeError, match=r"changing Linear.params\['weight'\] does not change forward's output: "
                                        r"forward must read .* non-zero gradient"):
        check_layer(Linear(weight_in_init=True), F.linear, inputs=[(4, 3)], frozen=("bias",))


# --- integer inputs --------------------------------------------------------------------------------------------------

class Embedding:
    """z[n, t] = W[ids[n, t]];  ∂L/∂W[v] = Σ over positions with ids = v of δ (np.add.at: repeated ids add up).
    ``overwrite`` plants the slip W_grad[ids] = δ, where a repeated id keeps only its last position."""

    def __init__(self, vocabulary=5, width=3, overwrite=False):
        self.params = {"weight": np.random.default_rng(0).normal(size=(vocabulary, width))}
        self.overwrite, self.seen = overwrite, set()

    def forward(self, ids):
        self.ids = ids
        self.seen.add(ids.dtype)
        return self.params["weight"][ids]

    def backward(self, delta):
        weight_grad = np.zeros_like(self.params["weight"])
        if self.overwrite:
            weight_grad[self.ids] = delta
        else:
            np.add.at(weight_grad, self.ids, delta)
        self.grads = {"weight": weight_grad}
        return None


IDS = np.array([[0, 2, 2], [4, 1, 2]])  # id 2 three times


def test_integer_ids_are_passed_as_they_are_and_not_differentiated():
    layer = Embedding()
    result = check_layer(layer, lambda ids, weight: F.embedding(ids, weight), inputs={"ids": IDS}, dtype="float32")
    assert result.passed and layer.seen == {IDS.dtype}
    assert {row.quantity for row in result} == {"output", "weight.grad"}
    assert result.draws == ["random-0", "random-1", "random-2", "kink-0", "kink-1"]  # no float input: no "given"


def test_a_repeated_id_overwritten_is_found_at_that_id():
    result = check_layer(Embedding(overwrite=True), lambda ids, weight: F.embedding(ids, weight),
                         inputs={"ids": IDS}, kinks=0, raises=False)
    assert {(row.quantity, row.worst_index[:3]) for row in result.failures} == {("weight.grad", "[2,")}
    assert "weight.grad: finite differences side with torch" in result.message()


def test_declaring_an_integer_input_differentiable_is_refused():
    with pytest.raises(ValueError, match=r"differentiable names \['ids'\], arrays of ids: int64: integer and "
                                         "boolean inputs"):
        check_layer(Embedding(), lambda ids, weight: F.embedding(ids, weight), inputs={"ids": IDS},
                    differentiable=("ids",))
    with pytest.raises(ValueError, match=r"differentiable names \['x'\], which are not inputs"):
        check_layer(Embedding(), lambda ids, weight: F.embedding(ids, weight), inputs={"ids": IDS},
                    differentiable="x")


class CrossEntropy:
    """L_n = −log softmax(z_n)[t_n], mean over n;  ∂L/∂z = (softmax(z) − onehot(t)) / N. Takes the
    logits and the integer targets; backward returns (∂L/∂z, None), one entry per input."""

    def forward(self, logits, targets):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        self.targets = targets
        rows = np.arange(len(targets))
        return -np.log(self.probabilities[rows, targets]).mean()

    def backward(self, delta):
        onehot = np.zeros_like(self.probabilities)
        onehot[np.arange(len(self.targets)), self.targets] = 1.0
        return delta * (self.probabilities - onehot) / len(self.targets), None


def test_class_targets_and_boolean_masks_next_to_float_inputs():
    targets = np.array([2, 0, 1, 2])
    result = check_layer(CrossEntropy(), F.cross_entropy, inputs={"logits": (4, 3), "targets": targets}, kinks=0)
    assert result.passed and {row.quantity for row in result} == {"output", "logits.grad"}

    class Masked:
        def forward(self, x, mask):
            self.mask = mask
            return np.where(mask, x, 0.0)

        def backward(self, delta):
            return np.where(self.mask, delta, 0.0)

    mask = np.array([[True, False, True], [False, True, True]])
    assert check_layer(Masked(), lambda x, mask: torch.where(mask, x, 0.0), inputs=[(2, 3), mask]).passed
