"""Each hand-written layer against its torch.nn.functional op, one line per option set.

One harness (tinygrad's ``helper_test_op``), ``tests.layer_harness.check_manual``,
runs a manual layer through check_layer's core (``reports.layer_check.check``):
the forward against the torch op, ∂L/∂input and every parameter gradient against
autograd and (float64) against finite differences of the layer's own forward, on
seeded random draws and at kinks (exact zeros, ties), in float64 or float32, with
BatchNorm's running statistics after the pass — judged by the one tolerance
policy, failing with the per-element table. ``test_layer_grid`` runs every variant
of the layer grids (``grid_variants``); the option tables below add the variants
the grids lack. The seed is in every test id. The injected-bug tests at the end
must see a failure.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backprop_verify.manual.conv
from backprop_verify import manual
from backprop_verify.manual.conv import Conv2d
from backprop_verify.manual.normalization import BatchNorm
from backprop_verify.manual.pooling import MaxPool2d
from tests.layer_harness import DTYPES, SEED, check_manual, grid_variants, variant_ids

GRID_KINDS = ("linear", "conv2d", "max_pool2d", "avg_pool2d", "flatten", "batch_norm", "layer_norm", "dropout")
GRID = [(kind, *variant) for kind in GRID_KINDS for variant in grid_variants(kind)]


def case_ids(cases) -> list[str]:
    return [f"{case[0]}-s{SEED}" for case in cases]


def failing(kind, shape, options, dtype, **kwargs) -> set[str]:
    """The quantities (``output``, ``input.grad``, ``weight.grad``, …) that fail on some draw."""
    return {row.quantity for row in check_manual(kind, shape, options, dtype, raises=False, **kwargs).failures}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, label, shape, options", GRID, ids=[f"{c[0]}-{c[1]}-s{SEED}" for c in GRID])
def test_layer_grid(kind, label, shape, options, dtype):
    check_manual(kind, shape, options, dtype)


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

CONV_CASES = [  # (id, x shape, options): weight (out_channels, C / groups, kernel_size)
    ("3x3", (2, 3, 7, 7), {"out_channels": 4, "kernel_size": (3, 3)}),
    ("1x1", (2, 3, 4, 4), {"out_channels": 5, "kernel_size": (1, 1)}),
    ("stride3-gt-kernel2-uncovered-pixels", (2, 2, 9, 7), {"out_channels": 3, "kernel_size": (2, 2), "stride": 3}),
    ("padding-kernel-minus-1", (2, 2, 5, 5), {"out_channels": 3, "kernel_size": (3, 3), "padding": 2}),
    ("dilation2", (2, 2, 9, 8), {"out_channels": 3, "kernel_size": (3, 3), "dilation": 2, "padding": 1}),
    ("depthwise-groups-channels", (2, 4, 6, 6), {"out_channels": 4, "kernel_size": (3, 3), "groups": 4}),
    ("depthwise-multiplier2", (2, 3, 6, 6), {"out_channels": 6, "kernel_size": (3, 3), "groups": 3, "padding": 1}),
    ("groups2-stride2", (2, 4, 7, 7), {"out_channels": 6, "kernel_size": (3, 3), "groups": 2, "stride": 2}),
    ("no-bias-rectangular", (2, 3, 6, 6), {"out_channels": 2, "kernel_size": (3, 2), "bias": False,
                                           "stride": (2, 1), "padding": (1, 0)}),
    ("everything", (1, 4, 9, 10), {"out_channels": 4, "kernel_size": (3, 2), "stride": (2, 3), "padding": (2, 1),
                                   "dilation": (2, 1), "groups": 2}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, options", CONV_CASES, ids=case_ids(CONV_CASES))
def test_conv2d(name, shape, options, dtype):
    check_manual("conv2d", shape, options, dtype)


# ---------------------------------------------------------------------------
# Pooling: ties are the kink draws' (integers in −2…2, a pool of three values)
# ---------------------------------------------------------------------------

MAX_POOL_CASES = [  # (id, x shape, options)
    ("k2s2", (2, 3, 6, 6), {"kernel_size": 2}),
    ("k3s2p1", (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("stride3-gt-kernel2", (2, 2, 8, 8), {"kernel_size": 2, "stride": 3}),
    ("dilation2", (2, 2, 7, 7), {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 2}),
    ("ceil-mode-partial-window", (2, 2, 5, 5), {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ("ceil-mode-window-dropped", (1, 2, 4, 4), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-false-same-sizes", (1, 2, 4, 4), {"kernel_size": 2, "stride": 3, "padding": 1}),
    ("ties-overlapping", (2, 2, 5, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("ties-ceil-mode", (1, 2, 5, 5), {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ("ties-overlapping-unpadded", (2, 3, 6, 6), {"kernel_size": 3, "stride": 1}),
    ("ties-dilation2", (2, 2, 7, 7), {"kernel_size": 2, "stride": 1, "dilation": 2}),
]

AVG_POOL_CASES = [  # (id, x shape, options)
    ("k2s2", (2, 3, 6, 6), {"kernel_size": 2}),
    ("k3s2p1", (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("k3s1p1-overlapping", (2, 2, 5, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("stride3-gt-kernel2", (2, 2, 8, 8), {"kernel_size": 2, "stride": 3}),
    ("ceil-mode-window-past-padding", (2, 2, 6, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-window-dropped", (1, 2, 4, 4), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-no-padding", (2, 2, 5, 5), {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, options", MAX_POOL_CASES, ids=case_ids(MAX_POOL_CASES))
def test_max_pool2d(name, shape, options, dtype):
    check_manual("max_pool2d", shape, options, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", (True, False), ids=("include-pad", "exclude-pad"))
@pytest.mark.parametrize("name, shape, options", AVG_POOL_CASES, ids=case_ids(AVG_POOL_CASES))
def test_avg_pool2d(name, shape, options, count_include_pad, dtype):
    check_manual("avg_pool2d", shape, {**options, "count_include_pad": count_include_pad}, dtype)


def test_pool_padding_over_half_the_kernel_is_refused_like_torch():
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(3, 1, padding=2)
    with pytest.raises(RuntimeError, match="half"):
        F.max_pool2d(torch.zeros(1, 1, 5, 5), 3, 1, padding=2)


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

BATCH_NORM_CASES = [  # (id, x shape, options)
    ("nchw-train", (4, 3, 3, 3), {}),
    ("nchw-train-not-affine", (4, 3, 3, 3), {"affine": False}),
    ("nf-train", (6, 4), {}),
    ("nf-train-not-affine-momentum0.3-eps1e-3", (5, 3), {"affine": False, "momentum": 0.3, "eps": 1e-3}),
    ("batch2-nf", (2, 4), {}),
    ("batch2-nchw", (2, 3, 2, 2), {}),
    ("batch1-eval-nchw", (1, 3, 4, 4), {"training": False}),
    ("batch1-eval-nf", (1, 4), {"training": False}),
    ("eval-not-affine", (3, 2, 3, 3), {"affine": False, "training": False}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, options", BATCH_NORM_CASES, ids=case_ids(BATCH_NORM_CASES))
def test_batch_norm(name, shape, options, dtype):
    check_manual("batch_norm", shape, options, dtype)


def test_batch_norm_one_value_per_channel_in_training_is_refused_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(training=True).forward(np.ones((1, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(torch.ones(1, 3), torch.zeros(3), torch.ones(3), training=True)


def test_layers_keep_their_arrays():
    """Parameters and running statistics are the caller's arrays, updated in place, never copies."""
    weight, bias, running_mean, running_var = np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)
    layer = BatchNorm(weight, bias, running_mean=running_mean, running_var=running_var)
    layer.forward(np.random.default_rng(SEED).standard_normal((4, 3)))
    assert layer.parameters[0] is weight and layer.parameters[1] is bias
    assert layer.running_mean is running_mean and layer.running_var is running_var and running_mean.any()
    kernel = np.ones((2, 1, 3, 3))
    assert Conv2d(kernel, None).parameters[0] is kernel and Conv2d(kernel, None).parameter_names == ("weight",)


LAYER_NORM_CASES = [  # (id, x shape, options)
    ("nf-dims1", (4, 5), {"dims": 1}),
    ("nf-dims1-not-affine", (3, 6), {"dims": 1, "elementwise_affine": False}),
    ("nchw-dims1", (2, 3, 4, 5), {"dims": 1}),
    ("nchw-dims2", (2, 3, 4, 5), {"dims": 2}),
    ("nchw-dims3", (2, 3, 4, 5), {"dims": 3}),
    ("nchw-dims2-not-affine", (2, 3, 4, 5), {"dims": 2, "elementwise_affine": False}),
    ("ntf-dims1", (2, 3, 4), {"dims": 1}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, options", LAYER_NORM_CASES, ids=case_ids(LAYER_NORM_CASES))
def test_layer_norm(name, shape, options, dtype):
    check_manual("layer_norm", shape, options, dtype)


# ---------------------------------------------------------------------------
# Dropout and flatten
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 3, 3)], ids=("nf", "nchw"))
@pytest.mark.parametrize("p", (0.0, 0.5, 1.0), ids=lambda p: f"p{p}-s{SEED}")
def test_dropout(p, shape, dtype):
    check_manual("dropout", shape, {"p": p}, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 5), (2, 3, 4)], ids=("nchw", "nf", "ntf"))
def test_flatten(shape, dtype):
    check_manual("flatten", shape, {}, dtype)


# ---------------------------------------------------------------------------
# Injected bugs: each must make the comparison with torch fail
# ---------------------------------------------------------------------------

CONV_PADDED = ((2, 3, 7, 7), {"out_channels": 4, "kernel_size": (3, 3), "padding": 1})


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_without_the_kernel_flip_is_caught(monkeypatch, dtype):
    assert not failing("conv2d", *CONV_PADDED, dtype)
    correct = manual.conv.full_convolution

    def without_flip(delta, weight, *options):  # correlate δ with W instead of convolving: rot180 forgotten
        return correct(delta, weight[:, :, ::-1, ::-1], *options)

    monkeypatch.setattr(manual.conv, "full_convolution", without_flip)
    assert failing("conv2d", *CONV_PADDED, dtype) == {"input.grad"}


class BatchNormWithoutMeanTerm(BatchNorm):
    """∂L/∂x = γ/(Mσ) · (M δ − x̂ Σ δ x̂): the path through μ (−Σ δ) forgotten."""

    def backward(self, delta, input_grad=True):
        correct = super().backward(delta, input_grad)  # parameter gradients stay right
        scale = self.weight.reshape(self.per_channel) * self.inverse_std
        delta_dot_normalised = (delta * self.normalised).sum(axis=self.axes, keepdims=True)
        wrong = (scale / self.count) * (self.count * delta - self.normalised * delta_dot_normalised)
        return wrong if correct is not None else None


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_without_the_mean_term_is_caught(dtype):
    assert not failing("batch_norm", (4, 3, 3, 3), {}, dtype)
    assert failing("batch_norm", (4, 3, 3, 3), {}, dtype, layer_class=BatchNormWithoutMeanTerm) == {"input.grad"}


class MaxPoolToEveryTie(MaxPool2d):
    """δ[i, j] to every element of window (i, j) equal to its maximum, not to PyTorch's one."""

    def forward(self, x):
        self.x_padded = self.padded(x, self.output_shape(*x.shape[2:]), -np.inf)
        self.maximum = super().forward(x)
        return self.maximum

    def backward(self, grad_output, input_grad=True):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        windows = self.windows(self.x_padded, self.maximum.shape[2:])
        grad_padded = np.zeros_like(self.x_padded)
        out_h, out_w = self.maximum.shape[2:]
        for u in range(kh):
            for v in range(kw):
                grad_padded[:, :, u * dh:u * dh + sh * (out_h - 1) + 1:sh, v * dw:v * dw + sw * (out_w - 1) + 1:sw] \
                    += grad_output * (windows[..., u, v] == self.maximum)
        height, width = self.input_shape[2:]
        return grad_padded[:, :, ph:ph + height, pw:pw + width]


TIES = {  # ties in every window: all equal, or integers in {0, 1, 2} (repeated maxima)
    "constant": lambda shape: np.full(shape, 0.75),
    "integers": lambda shape: np.random.default_rng(SEED).integers(0, 3, shape).astype(np.float64),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data", ("constant", "integers"))
def test_max_pool_routing_to_every_tie_is_caught(data, dtype):
    """On the tied data as given (against torch only: finite differences mean nothing at a tie) and at kinks."""
    options, x = {"kernel_size": 3, "stride": 1, "padding": 1}, TIES[data]((2, 2, 5, 5))
    at_ties = dict(inputs=[x], draws=0, kinks=2, fd=False)
    assert not failing("max_pool2d", x.shape, options, dtype, **at_ties)
    wrong = check_manual("max_pool2d", x.shape, options, dtype, layer_class=MaxPoolToEveryTie, raises=False,
                         **at_ties)
    assert {row.quantity for row in wrong.failures} == {"input.grad"}
    assert {row.draw for row in wrong.failures} == {"given", "kink-0", "kink-1"}
