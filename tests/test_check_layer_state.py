"""check_layer on layers that keep state: a factory, a reset hook, train / eval, and state that accumulates.

Finite differences call forward hundreds of times; a layer whose second
identical call differs (gradients accumulated with +=, a random mask) must be
reported as such, and a factory or a reset hook must make it checkable.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_verify.reports.layer_check import check_layer


class AccumulatingLinear:
    """z = x Wᵀ + b, whose backward adds into grads (``+=``) — right once, wrong from the second call:
    a training loop calls ``zero_grad()`` between steps."""

    def __init__(self, n_in=3, n_out=2, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"weight": rng.normal(size=(n_out, n_in)), "bias": rng.normal(size=n_out)}
        self.zero_grad()

    def zero_grad(self):
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}

    def forward(self, x):
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, delta):
        self.grads["weight"] = self.grads["weight"] + delta.T @ self.x
        self.grads["bias"] = self.grads["bias"] + delta.sum(axis=0)
        return delta @ self.params["weight"]


def test_accumulated_gradients_are_reported_with_what_to_do():
    with pytest.raises(AssertionError) as caught:
        check_layer(AccumulatingLinear(), F.linear, inputs=[(4, 3)])
    message = str(caught.value)
    assert message.startswith("check_layer: AccumulatingLinear keeps state between calls: a second forward and "
                              "backward on the same inputs, parameters and upstream gradient gives another weight.grad")
    assert "gradients accumulated with +=" in message
    assert 'reset="zero_grad"' in message and "a factory for a fresh layer per call" in message


def test_a_reset_hook_or_a_factory_makes_the_same_layer_checkable():
    assert check_layer(AccumulatingLinear(), F.linear, inputs=[(4, 3)], reset="zero_grad", kinks=0).passed
    assert check_layer(AccumulatingLinear(), F.linear, inputs=[(4, 3)], reset=lambda layer: layer.zero_grad(),
                       kinks=0).passed
    made = []

    def factory():
        made.append(AccumulatingLinear(seed=len(made)))  # every fresh layer draws other parameters …
        return made[-1]

    result = check_layer(factory, F.linear, inputs=[(4, 3)], kinks=0)
    assert result.passed and result.layer == "AccumulatingLinear"
    # … but check_layer installs its own copies (the first layer's) into each: one layer per forward call.
    state_check, read_check, draws, fd = 2, 1 + 2, 3, 3 * 2 * (4 * 3 + 2 * 3 + 2)  # fd: ± each entry, each draw
    assert len(made) == 1 + state_check + read_check + draws + fd  # 1: the layer params are read from
    assert check_layer(AccumulatingLinear, F.linear, inputs=[(4, 3)], kinks=0).passed  # a class is a factory


def test_reset_and_factory_mistakes_are_named():
    with pytest.raises(TypeError, match=r"reset='clear', but AccumulatingLinear has no method clear\(\)"):
        check_layer(AccumulatingLinear(), F.linear, inputs=[(4, 3)], reset="clear")
    with pytest.raises(TypeError, match="returned a int, which has no forward method"):
        check_layer(lambda: 3, F.linear, inputs=[(4, 3)])


class Dropout:
    """Inverted dropout: a = x ⊙ m / (1 − p) with a fresh random mask m in training; a = x in eval."""

    def __init__(self, p=0.5, seed=0):
        self.p, self.training, self.rng = p, True, np.random.default_rng(seed)

    def forward(self, x):
        self.mask = (self.rng.uniform(size=x.shape) >= self.p) / (1 - self.p) if self.training else np.ones_like(x)
        return x * self.mask

    def backward(self, delta):
        return delta * self.mask


def test_a_random_forward_is_reported_and_mode_eval_checks_it():
    with pytest.raises(AssertionError, match=r"gives another output .* forward itself gives another value .*"
                                             r'mode="eval"'):
        check_layer(Dropout(), lambda x: x * 1.0, inputs=[(3, 4)])
    layer = Dropout()
    assert check_layer(layer, lambda x: F.dropout(x, 0.5, training=False), inputs=[(3, 4)], mode="eval").passed
    assert layer.training  # put back as it was
    switched = []
    assert check_layer(layer, lambda x: x * 1.0, inputs=[(3, 4)], kinks=0,
                       mode=lambda layer: switched.append(setattr(layer, "training", False))).passed
    assert switched and layer.training  # a hook switches before every call; the attribute is put back


def test_mode_on_a_layer_without_a_switch_is_refused():
    class Plain:
        def forward(self, x):
            return x

        def backward(self, delta):
            return delta

    with pytest.raises(TypeError, match=r"mode='eval', but Plain has neither an eval\(\) method nor a training"):
        check_layer(Plain(), lambda x: x * 1.0, inputs=[(2, 2)], mode="eval")
    with pytest.raises(ValueError, match="mode must be 'train', 'eval' or a function"):
        check_layer(Plain(), lambda x: x * 1.0, inputs=[(2, 2)], mode="inference")
    assert torch.is_grad_enabled()
