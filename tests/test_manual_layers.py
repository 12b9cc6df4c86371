"""Each hand-written layer against its torch.nn.functional op, one line per option set.

One helper (tinygrad's ``helper_test_op``) runs a manual layer and the torch op
on the same seeded data, in float64 and float32, with a random upstream
gradient δ, and compares — through the project's tolerance policy and
``compare`` — the output, ∂L/∂input, every parameter gradient and (BatchNorm)
the running statistics. The option tables below are the scenarios; the seed
is in every test id. The injected-bug tests at the end must see a failure.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backprop_verify.manual.conv
from backprop_verify import manual
from backprop_verify.manual.conv import Conv2d
from backprop_verify.manual.dropout import Dropout
from backprop_verify.manual.layers import Flatten
from backprop_verify.manual.normalization import BatchNorm, LayerNorm
from backprop_verify.manual.pooling import AvgPool2d, MaxPool2d
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.trace import Trace
from tests.helpers import layer_trace

SEED = 0
DTYPES = ("float64", "float32")


# ---------------------------------------------------------------------------
# The helper
# ---------------------------------------------------------------------------


def draw(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Input data (float64): ``normal``; ``constant`` (every window a tie); ``integers`` in {0, 1, 2} (repeated maxima)."""
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "constant":
        return np.full(shape, 0.75)
    if kind == "integers":
        return rng.integers(0, 3, shape).astype(np.float64)
    raise ValueError(kind)


def traces(make_layer, torch_op, x, parameters=None, buffers=None, dtype="float64", seed=SEED):
    """Run layer and torch op on the same data; return (manual Trace, torch Trace).

    ``make_layer(parameters, buffers)`` builds the manual layer from NumPy arrays,
    ``torch_op(x, parameters, buffers)`` computes the same output from tensors.
    Parameters are compared by their gradients, buffers by their values after the forward.
    """
    parameters, buffers = parameters or {}, buffers or {}
    x = x.astype(dtype)
    parameters = {name: value.astype(dtype) for name, value in parameters.items()}
    buffers = {name: value.astype(dtype) for name, value in buffers.items()}

    layer = make_layer({k: v.copy() for k, v in parameters.items()}, {k: v.copy() for k, v in buffers.items()})
    output = layer.forward(x.copy())
    delta = np.random.default_rng(seed + 1).standard_normal(output.shape).astype(dtype)
    input_gradient = layer.backward(delta.copy())
    ours = layer_trace(layer, output, delta, input_gradient)
    for name in buffers:
        ours.put(f"layers.0.{name}", getattr(layer, name))
    assert {a.dtype for a in (output, input_gradient, *layer.gradients)} == {np.dtype(dtype)}, "dtype not kept"

    x_t = torch.tensor(x, requires_grad=True)
    parameters_t = {name: torch.tensor(value, requires_grad=True) for name, value in parameters.items()}
    buffers_t = {name: torch.tensor(value) for name, value in buffers.items()}
    output_t = torch_op(x_t, parameters_t, buffers_t)
    output_t.backward(torch.tensor(delta))
    theirs = Trace("torch")
    theirs.put("layers.0.output", output_t.detach().numpy())
    theirs.put("layers.0.output.grad", delta)
    theirs.put("input.grad", x_t.grad.numpy())
    for name, value in parameters_t.items():
        theirs.put(f"layers.0.{name}.grad", value.grad.numpy())
    for name, value in buffers_t.items():
        theirs.put(f"layers.0.{name}", value.numpy())
    return ours, theirs


def failures(*args, **kwargs) -> dict[str, str]:
    """{address: row} for every address where the manual layer and torch disagree beyond the tolerance."""
    ours, theirs = traces(*args, **kwargs)
    dtype = kwargs.get("dtype", "float64")
    return {row.address: f"max_abs={row.max_abs:.2e} max_rel={row.max_rel:.2e} tol={row.tolerance:.0e}"
            for row in compare(ours, theirs, dtype, "manual-torch") if not row.passed}


def assert_matches_torch(*args, **kwargs) -> None:
    failed = failures(*args, **kwargs)
    assert not failed, f"manual vs torch: {failed}"


def case_ids(cases) -> list[str]:
    return [f"{case[0]}-s{SEED}" for case in cases]


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

CONV_CASES = [  # (id, x shape, weight shape, bias, options)
    ("3x3", (2, 3, 7, 7), (4, 3, 3, 3), True, {}),
    ("1x1", (2, 3, 4, 4), (5, 3, 1, 1), True, {}),
    ("stride3-gt-kernel2-uncovered-pixels", (2, 2, 9, 7), (3, 2, 2, 2), True, {"stride": 3}),
    ("padding-kernel-minus-1", (2, 2, 5, 5), (3, 2, 3, 3), True, {"padding": 2}),
    ("dilation2", (2, 2, 9, 8), (3, 2, 3, 3), True, {"dilation": 2, "padding": 1}),
    ("depthwise-groups-channels", (2, 4, 6, 6), (4, 1, 3, 3), True, {"groups": 4}),
    ("depthwise-multiplier2", (2, 3, 6, 6), (6, 1, 3, 3), True, {"groups": 3, "padding": 1}),
    ("groups2-stride2", (2, 4, 7, 7), (6, 2, 3, 3), True, {"groups": 2, "stride": 2}),
    ("no-bias-rectangular", (2, 3, 6, 6), (2, 3, 3, 2), False, {"stride": (2, 1), "padding": (1, 0)}),
    ("everything", (1, 4, 9, 10), (4, 2, 3, 2), True,
     {"stride": (2, 3), "padding": (2, 1), "dilation": (2, 1), "groups": 2}),
]


def conv_traces(x_shape, weight_shape, bias, options, dtype, seed=SEED):
    rng = np.random.default_rng(seed)
    parameters = {"weight": rng.standard_normal(weight_shape)}
    if bias:
        parameters["bias"] = rng.standard_normal(weight_shape[0])
    return dict(make_layer=lambda p, b: Conv2d(p["weight"], p.get("bias"), **options),
                torch_op=lambda x, p, b: F.conv2d(x, p["weight"], p.get("bias"), **options),
                x=rng.standard_normal(x_shape), parameters=parameters, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, weight_shape, bias, options", CONV_CASES, ids=case_ids(CONV_CASES))
def test_conv2d(name, x_shape, weight_shape, bias, options, dtype):
    assert_matches_torch(**conv_traces(x_shape, weight_shape, bias, options, dtype))


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

MAX_POOL_CASES = [  # (id, x shape, data, options)
    ("k2s2", (2, 3, 6, 6), "normal", {"kernel_size": 2}),
    ("k3s2p1", (2, 2, 7, 6), "normal", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("stride3-gt-kernel2", (2, 2, 8, 8), "normal", {"kernel_size": 2, "stride": 3}),
    ("dilation2", (2, 2, 7, 7), "normal", {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 2}),
    ("ceil-mode-partial-window", (2, 2, 5, 5), "normal", {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ("ceil-mode-window-dropped", (1, 2, 4, 4), "normal", {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-false-same-sizes", (1, 2, 4, 4), "normal", {"kernel_size": 2, "stride": 3, "padding": 1}),
    ("ties-constant-overlapping", (2, 2, 5, 5), "constant", {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("ties-constant-ceil-mode", (1, 2, 5, 5), "constant", {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ("ties-integers-overlapping", (2, 3, 6, 6), "integers", {"kernel_size": 3, "stride": 1}),
    ("ties-integers-k2s2", (2, 3, 6, 6), "integers", {"kernel_size": 2}),
    ("ties-integers-dilation2", (2, 2, 7, 7), "integers", {"kernel_size": 2, "stride": 1, "dilation": 2}),
]

AVG_POOL_CASES = [  # (id, x shape, data, options)
    ("k2s2", (2, 3, 6, 6), "normal", {"kernel_size": 2}),
    ("k3s2p1", (2, 2, 7, 6), "normal", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("k3s1p1-overlapping", (2, 2, 5, 5), "normal", {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("stride3-gt-kernel2", (2, 2, 8, 8), "normal", {"kernel_size": 2, "stride": 3}),
    ("ceil-mode-window-past-padding", (2, 2, 6, 6), "normal",
     {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-window-dropped", (1, 2, 4, 4), "normal", {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}),
    ("ceil-mode-no-padding", (2, 2, 5, 5), "normal", {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
]


def pool_traces(layer_class, torch_op, x_shape, data, options, dtype, seed=SEED):
    return dict(make_layer=lambda p, b: layer_class(**options), torch_op=lambda x, p, b: torch_op(x, **options),
                x=draw(data, x_shape, np.random.default_rng(seed)), dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, data, options", MAX_POOL_CASES, ids=case_ids(MAX_POOL_CASES))
def test_max_pool2d(name, x_shape, data, options, dtype):
    assert_matches_torch(**pool_traces(MaxPool2d, F.max_pool2d, x_shape, data, options, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", (True, False), ids=("include-pad", "exclude-pad"))
@pytest.mark.parametrize("name, x_shape, data, options", AVG_POOL_CASES, ids=case_ids(AVG_POOL_CASES))
def test_avg_pool2d(name, x_shape, data, options, count_include_pad, dtype):
    options = {**options, "count_include_pad": count_include_pad}
    assert_matches_torch(**pool_traces(AvgPool2d, F.avg_pool2d, x_shape, data, options, dtype))


def test_pool_padding_over_half_the_kernel_is_refused_like_torch():
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(3, 1, padding=2)
    with pytest.raises(RuntimeError, match="half"):
        F.max_pool2d(torch.zeros(1, 1, 5, 5), 3, 1, padding=2)


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

BATCH_NORM_CASES = [  # (id, x shape, affine, training, options)
    ("nchw-train", (4, 3, 3, 3), True, True, {}),
    ("nchw-train-not-affine", (4, 3, 3, 3), False, True, {}),
    ("nf-train", (6, 4), True, True, {}),
    ("nf-train-not-affine-momentum0.3-eps1e-3", (5, 3), False, True, {"momentum": 0.3, "eps": 1e-3}),
    ("batch2-nf", (2, 4), True, True, {}),
    ("batch2-nchw", (2, 3, 2, 2), True, True, {}),
    ("batch1-eval-nchw", (1, 3, 4, 4), True, False, {}),
    ("batch1-eval-nf", (1, 4), True, False, {}),
    ("eval-not-affine", (3, 2, 3, 3), False, False, {}),
]


def batch_norm_traces(x_shape, affine, training, options, dtype, layer_class=BatchNorm, seed=SEED):
    rng = np.random.default_rng(seed)
    channels = x_shape[1]
    x = 2.0 + 3.0 * rng.standard_normal(x_shape)   # a mean and variance far from the running 0 and 1
    parameters = {"weight": 1.0 + 0.5 * rng.standard_normal(channels), "bias": rng.standard_normal(channels)} \
        if affine else {}
    buffers = {"running_mean": rng.standard_normal(channels), "running_var": rng.uniform(0.5, 2.0, channels)}
    eps, momentum = options.get("eps", 1e-5), options.get("momentum", 0.1)

    def make_layer(p, b):
        return layer_class(p.get("weight"), p.get("bias"), eps=eps, momentum=momentum, training=training,
                           running_mean=b["running_mean"], running_var=b["running_var"])

    def torch_op(x, p, b):
        return F.batch_norm(x, b["running_mean"], b["running_var"], p.get("weight"), p.get("bias"),
                            training=training, momentum=momentum, eps=eps)

    return dict(make_layer=make_layer, torch_op=torch_op, x=x, parameters=parameters, buffers=buffers,
                dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, affine, training, options", BATCH_NORM_CASES,
                         ids=case_ids(BATCH_NORM_CASES))
def test_batch_norm(name, x_shape, affine, training, options, dtype):
    assert_matches_torch(**batch_norm_traces(x_shape, affine, training, options, dtype))


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


LAYER_NORM_CASES = [  # (id, x shape, dims, affine)
    ("nf-dims1", (4, 5), 1, True),
    ("nf-dims1-not-affine", (3, 6), 1, False),
    ("nchw-dims1", (2, 3, 4, 5), 1, True),
    ("nchw-dims2", (2, 3, 4, 5), 2, True),
    ("nchw-dims3", (2, 3, 4, 5), 3, True),
    ("nchw-dims2-not-affine", (2, 3, 4, 5), 2, False),
    ("ntf-dims1", (2, 3, 4), 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, dims, affine", LAYER_NORM_CASES, ids=case_ids(LAYER_NORM_CASES))
def test_layer_norm(name, x_shape, dims, affine, dtype):
    rng = np.random.default_rng(SEED)
    shape = x_shape[-dims:]
    parameters = {"weight": 1.0 + 0.5 * rng.standard_normal(shape), "bias": rng.standard_normal(shape)} \
        if affine else {}
    assert_matches_torch(make_layer=lambda p, b: LayerNorm(dims, p.get("weight"), p.get("bias")),
                         torch_op=lambda x, p, b: F.layer_norm(x, shape, p.get("weight"), p.get("bias")),
                         x=1.0 + 2.0 * rng.standard_normal(x_shape), parameters=parameters, dtype=dtype)


# ---------------------------------------------------------------------------
# Dropout and flatten
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(4, 6), (3, 2, 3, 3)], ids=("nf", "nchw"))
@pytest.mark.parametrize("p", (0.0, 0.5, 1.0), ids=lambda p: f"p{p}-s{SEED}")
def test_dropout(p, x_shape, dtype):
    rng = np.random.default_rng(SEED)
    mask = (rng.uniform(size=x_shape) >= p).astype(np.float64)

    def make_layer(parameters, buffers):
        layer = Dropout(p)
        layer.mask = mask
        return layer

    def torch_op(x, parameters, buffers):  # PyTorch's dropout with this mask: zeros when p = 1
        mask_t = torch.tensor(mask, dtype=x.dtype)
        return x * mask_t * 0.0 if p == 1.0 else x * mask_t / (1 - p)

    assert_matches_torch(make_layer=make_layer, torch_op=torch_op, x=rng.standard_normal(x_shape), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(2, 3, 4, 4), (3, 5), (2, 3, 4)], ids=("nchw", "nf", "ntf"))
def test_flatten(x_shape, dtype):
    assert_matches_torch(make_layer=lambda p, b: Flatten(), torch_op=lambda x, p, b: torch.flatten(x, 1),
                         x=np.random.default_rng(SEED).standard_normal(x_shape), dtype=dtype)


# ---------------------------------------------------------------------------
# Injected bugs: each must make the comparison with torch fail
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_without_the_kernel_flip_is_caught(monkeypatch, dtype):
    case = conv_traces((2, 3, 7, 7), (4, 3, 3, 3), True, {"padding": 1}, dtype)
    assert not failures(**case)
    correct = manual.conv.full_convolution

    def without_flip(delta, weight, *options):  # correlate δ with W instead of convolving: rot180 forgotten
        return correct(delta, weight[:, :, ::-1, ::-1], *options)

    monkeypatch.setattr(manual.conv, "full_convolution", without_flip)
    assert set(failures(**case)) == {"input.grad"}


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
    case = batch_norm_traces((4, 3, 3, 3), True, True, {}, dtype)
    assert not failures(**case)
    assert set(failures(**{**case, **batch_norm_traces((4, 3, 3, 3), True, True, {}, dtype,
                                                       layer_class=BatchNormWithoutMeanTerm)})) == {"input.grad"}


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data", ("constant", "integers"))
def test_max_pool_routing_to_every_tie_is_caught(data, dtype):
    options = {"kernel_size": 3, "stride": 1, "padding": 1}
    assert not failures(**pool_traces(MaxPool2d, F.max_pool2d, (2, 2, 5, 5), data, options, dtype))
    wrong = failures(**pool_traces(MaxPoolToEveryTie, F.max_pool2d, (2, 2, 5, 5), data, options, dtype))
    assert set(wrong) == {"input.grad"}
