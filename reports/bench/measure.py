"""Measurements behind ``backprop-verify bench``: the manual engine against torch autograd.

Five kinds of figure, all taken in one run on one machine:

* forward+backward time of the manual engine and of torch autograd on the same
  network with the same weights (``manual_step``, ``torch_step``), repetitions
  interleaved so both engines see the same machine load (``time_interleaved``),
  median and interquartile range reported;
* the matmul FLOPs that forward+backward executes (``matmul_flops``) and the
  matmul peak of NumPy on the same machine (``matmul_step``: one 4096×4096
  matmul, timed interleaved with the large network), hence the fraction of the
  physical limit each engine reaches;
* random-architecture verifications per second (``verification_throughput``):
  build a seeded scenario, run both engines, compare every address — timed
  interleaved with building the same scenarios alone and with the bare engines
  (one forward+backward of each, nothing recorded or compared) on them, so the
  share of the Trace and comparison machinery is a fraction that the
  machine's load does not move;
* the wall time of the default test suite (``suite_wall_time``);
* the convolutional layers alone (``conv_layer_steps``): the manual engine's
  conv2d forward and backward against torch's ``F.conv2d`` and autograd on the
  same inputs and δ, with their fraction of the matmul peak — the fraction of
  NumPy's own peak is the measure of the im2col engine, whatever kernels torch
  has (``kernel_description`` names both sides').

The timed step is what training does: forward, loss, backward to every
parameter — without ∂L/∂x (torch's input does not require a gradient; the
manual engine is told ``input_grad=False``), so both engines compute the same
products. The manual side uses only the engine's public building blocks
(``manual.engine.build_network`` / ``forward`` / ``backward`` and the loss
classes); the torch side is plain autograd with ``torch.nn.functional``, the
reference's network builder, and ``grad = None`` between steps.

Threads: both engines run with the same number of BLAS / intra-op threads
(``threads``): NumPy's BLAS through threadpoolctl, torch through
``torch.set_num_threads``. The default is 1 — the test suite's setting, and the
only one that gives repeatable numbers on a shared machine.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info, threadpool_limits

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.manual.engine import backward, build_loss, build_network, forward, loss_input, network_input
from backprop_verify.reference.network import build_network as build_torch_network
from backprop_verify.reference.network import TORCH_DTYPES, loss_function
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.generator import random_scenario
from backprop_verify.scenarios.catalog import LAYERS, LOSSES, layer_options, recurrent_parameters
from backprop_verify.scenarios.init import initialise_shape
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.shapes import output_shape


# --------------------------------------------------------------------------- the networks


@dataclass(frozen=True)
class BenchCase:
    """A network to time: widths (in, hidden..., out), a batch, a hidden activation and a loss."""

    name: str
    widths: tuple[int, ...]
    batch: int
    hidden: str
    output: str
    loss: tuple[str, str]  # (type, reduction)
    seed: int = 0

    @property
    def label(self) -> str:
        return "-".join(str(w) for w in self.widths)

    @property
    def case_id(self) -> str:
        return f"{self.name}-{self.label}"

    @property
    def description(self) -> str:
        return f"{self.hidden} hidden, {self.output} output, {self.loss[0]} ({self.loss[1]})"

    def scenario(self, dtype: str) -> Scenario:
        return case_scenario(self, dtype)

    def flops(self) -> int:
        return matmul_flops(self.widths, self.batch)


@dataclass(frozen=True)
class ConvBenchCase:
    """A convolutional network to time: ``blocks`` of (out_channels, kernel, padding,
    batch_norm, pool) on an (C, H, W) input, then linear layers of ``widths`` to the classes."""

    name: str
    image: tuple[int, int, int]
    batch: int
    blocks: tuple[tuple[int, int, int, bool, int], ...]
    widths: tuple[int, ...]
    seed: int = 0

    @property
    def case_id(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        return "x".join(str(size) for size in self.image)

    @property
    def description(self) -> str:
        return (f"{self.label} images; " + ", ".join(
            f"conv {o}@{k}×{k}" + (f" pad {p}" if p else "") + (" → BatchNorm" if bn else "") + " → ReLU"
            + (f" → max pool {pool}" if pool else "") for o, k, p, bn, pool in self.blocks)
            + " → " + " → ".join(str(w) for w in self.widths) + "; softmax_cross_entropy (mean)")

    def scenario(self, dtype: str) -> Scenario:
        rng = np.random.default_rng(self.seed)
        shape: tuple[int, ...] = (self.batch, *self.image)
        layers: list[Layer] = []
        for out_channels, kernel, padding, batch_norm, pool in self.blocks:
            weight = initialise_shape("he_normal", (out_channels, shape[1], kernel, kernel), rng)
            layers.append(Layer("conv2d", weight=weight, bias=rng.normal(0.0, 0.1, out_channels),
                                params=layer_options("conv2d", {"out_channels": out_channels,
                                                                "kernel_size": (kernel, kernel),
                                                                "padding": (padding, padding)})))
            if batch_norm:
                layers.append(Layer("batch_norm", weight=np.ones(out_channels), bias=np.zeros(out_channels),
                                    params=layer_options("batch_norm", {}),
                                    buffers={"running_mean": np.zeros(out_channels),
                                             "running_var": np.ones(out_channels)}))
            layers.append(Layer("relu"))
            if pool:
                layers.append(Layer("max_pool2d", params=layer_options("max_pool2d", {
                    "kernel_size": (pool, pool), "stride": (pool, pool)})))
            shape = _shape_after(layers, (self.batch, *self.image))
        layers.append(Layer("flatten"))
        features = math.prod(shape[1:])
        for index, (n_in, n_out) in enumerate(zip((features,) + self.widths[:-1], self.widths)):
            layers.append(Layer("linear", weight=initialise_shape("he_normal", (n_out, n_in), rng),
                                bias=rng.normal(0.0, 0.1, n_out)))
            layers.append(Layer("relu" if index < len(self.widths) - 1 else "identity"))
        x = rng.normal(0.0, 1.0, (self.batch, *self.image))
        y = np.eye(self.widths[-1])[rng.integers(0, self.widths[-1], size=self.batch)]
        return Scenario(name=f"bench-{self.name}-b{self.batch}", layers=tuple(layers),
                        loss=Loss("softmax_cross_entropy", "mean"), x=x, y=y, seed=self.seed).astype(dtype)

    def flops(self) -> int:
        return training_flops(self.scenario("float64"))


@dataclass(frozen=True)
class RecurrentBenchCase:
    """A recurrent network to time: ``cell`` over ``steps`` steps of ``features``, hidden
    ``hidden``, the last step into a linear layer to ``classes``."""

    name: str
    cell: str
    batch: int
    steps: int
    features: int
    hidden: int
    classes: int = 10
    seed: int = 0
    torch_fused: bool = False  # the torch side: torch.nn.LSTM's fused kernel instead of the reference's network

    @property
    def case_id(self) -> str:
        return self.name

    @property
    def description(self) -> str:
        against = "; torch: torch.nn.LSTM (fused)" if self.torch_fused else ""
        return (f"{self.cell}, {self.steps} steps of {self.features} features, hidden {self.hidden}, last step → "
                f"{self.classes}; softmax_cross_entropy (mean){against}")

    def scenario(self, dtype: str) -> Scenario:
        rng = np.random.default_rng(self.seed)
        params = layer_options(self.cell, {"hidden_size": self.hidden})
        tensors = recurrent_parameters(self.cell, params, (self.batch, self.steps, self.features), rng)
        layers = (Layer(self.cell, params=params, tensors=tensors),
                  Layer("last_step"),
                  Layer("linear", weight=initialise_shape("xavier_normal", (self.classes, self.hidden), rng),
                        bias=np.zeros(self.classes)),
                  Layer("identity"))
        x = rng.normal(0.0, 1.0, (self.batch, self.steps, self.features))
        y = np.eye(self.classes)[rng.integers(0, self.classes, size=self.batch)]
        return Scenario(name=f"bench-{self.name}-b{self.batch}", layers=layers,
                        loss=Loss("softmax_cross_entropy", "mean"), x=x, y=y, seed=self.seed).astype(dtype)

    def flops(self) -> int:
        """2·N·T·G·H·(F + H) per product (the input and hidden projections of every step), ×3 less
        the input gradient of the first layer — the matmul work, gate arithmetic not counted."""
        gates = LAYERS[self.cell].gates
        per_product = 2 * self.batch * self.steps * gates * self.hidden * (self.features + self.hidden)
        return 3 * per_product + 3 * 2 * self.batch * self.classes * self.hidden


@dataclass(frozen=True)
class TransformerBenchCase:
    """gpt-mini (``scenarios.transformer``): token embedding + positions, ``blocks`` GPT blocks (LayerNorm →
    causal multi-head attention → residual; LayerNorm → linear → GELU → linear → residual), LayerNorm and
    the tied head; softmax cross-entropy on the next byte."""

    name: str = "gpt-mini"
    batch: int = 16
    note: str = ("vocabulary 256, T = 64, E = 128, 4 heads, 2 blocks; torch: the reference's network (explicit "
                 "projections and softmax, as F.multi_head_attention_forward computes them)")

    @property
    def case_id(self) -> str:
        return self.name

    @property
    def description(self) -> str:
        return self.note

    def scenario(self, dtype: str) -> Scenario:
        from backprop_verify.scenarios.transformer import gpt_mini_scenario  # the corpus: only when benched

        return gpt_mini_scenario(dtype)

    def flops(self) -> int:
        from backprop_verify.scenarios.transformer import gpt_mini_flops

        return gpt_mini_flops()


def _shape_after(layers: list[Layer], shape: tuple[int, ...]) -> tuple[int, ...]:
    for layer in layers:
        shape = output_shape(layer, shape)
    return shape


def training_flops(scenario: Scenario) -> int:
    """Matmul-equivalent FLOPs of one training step (forward + backward without ∂L/∂x) of any network.

    A linear layer in → out: 2·N·in·out per product; a convolution: 2·N·Hₒ·Wₒ·O·(C/g)·kh·kw
    per product (each output value is a dot product over a window). Forward, the weight
    gradient and — on every layer but the first with parameters — the input gradient:
    three products, as ``matmul_flops`` counts them for dense networks.
    """
    flops, shape, first = 0, scenario.x.shape, True
    for layer in scenario.layers:
        out = output_shape(layer, shape)
        per_product = 0
        if layer.type == "linear":
            per_product = 2 * shape[0] * layer.weight.shape[0] * layer.weight.shape[1]
        elif layer.type == "conv2d":
            per_product = 2 * math.prod(out) * math.prod(layer.weight.shape[1:])
        if per_product:
            flops += (2 if first else 3) * per_product
            first = False
        shape = out
    return flops


CASES: tuple[BenchCase, ...] = (
    # the worked example of the textbooks: 2-2-2 sigmoid network, ½Σ squared error
    BenchCase("textbook", (2, 2, 2), 1, "sigmoid", "sigmoid", ("mse", "half_sum")),
    BenchCase("small", (4, 8, 3), 4, "tanh", "softmax", ("cross_entropy", "mean")),
    BenchCase("medium", (784, 128, 10), 64, "relu", "identity", ("softmax_cross_entropy", "mean")),
    BenchCase("medium", (784, 256, 256, 10), 256, "relu", "identity", ("softmax_cross_entropy", "mean")),
    BenchCase("large", (2048, 2048, 2048, 10), 512, "relu", "identity", ("softmax_cross_entropy", "mean")),
)
CONV_CASES: tuple[ConvBenchCase, ...] = (
    # LeNet: conv 6@5×5 → ReLU → max pool 2 → conv 16@5×5 → ReLU → max pool 2 → 120 → 84 → 10
    ConvBenchCase("cnn-lenet", (1, 28, 28), 64, ((6, 5, 0, False, 2), (16, 5, 0, False, 2)), (120, 84, 10)),
    # two conv 32@3×3 (padding 1) with BatchNorm and ReLU, max pool 2, → 10
    ConvBenchCase("cnn-bn-32", (3, 32, 32), 64, ((32, 3, 1, True, 0), (32, 3, 1, True, 2)), (10,)),
)
RECURRENT_CASES: tuple[RecurrentBenchCase, ...] = (
    RecurrentBenchCase("rnn-tanh-t32", "rnn", 64, 32, 64, 128),
    RecurrentBenchCase("lstm-t32", "lstm", 64, 32, 64, 128),
    # the same network, torch side torch.nn.LSTM: its fused kernel (the reference steps LSTMCell to record every c_t)
    RecurrentBenchCase("lstm-t32-fused", "lstm", 64, 32, 64, 128, torch_fused=True),
)
TRANSFORMER_CASES: tuple[TransformerBenchCase, ...] = (TransformerBenchCase(),)
CASES = CASES + CONV_CASES + RECURRENT_CASES + TRANSFORMER_CASES
QUICK_CASES: tuple[BenchCase, ...] = CASES[:3]
DTYPES = ("float64", "float32")


def case_scenario(case: BenchCase, dtype: str) -> Scenario:
    """The case as a Scenario (He-normal weights, small biases), so both engines build it the usual way."""
    rng = np.random.default_rng(case.seed)
    layers: list[Layer] = []
    pairs = list(zip(case.widths[:-1], case.widths[1:]))
    for index, (n_in, n_out) in enumerate(pairs):
        weight = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
        bias = rng.normal(0.0, 0.1, n_out)
        layers.append(Layer("linear", weight=weight, bias=bias))
        layers.append(Layer(case.hidden if index < len(pairs) - 1 else case.output))
    x = rng.normal(0.0, 1.0, (case.batch, case.widths[0]))
    if LOSSES[case.loss[0]].target_domain == "distribution":  # one-hot rows; real targets otherwise
        y = np.eye(case.widths[-1])[rng.integers(0, case.widths[-1], size=case.batch)]
    else:
        y = rng.normal(0.0, 1.0, (case.batch, case.widths[-1]))
    return Scenario(name=f"bench-{case.label}-b{case.batch}", layers=tuple(layers), loss=Loss(*case.loss),
                    x=x, y=y, seed=case.seed).astype(dtype)


def matmul_flops(widths: tuple[int, ...], batch: int) -> int:
    """Matmul FLOPs of one training step (forward + backward without ∂L/∂x).

    Per linear layer (in → out): forward 2·B·in·out (Z = X Wᵀ); backward
    2·B·in·out for ∂L/∂W = δᵀX, and 2·B·in·out for ∂L/∂X = δW on every layer
    but the first.
    """
    flops = 0
    for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        products = 2 if index == 0 else 3  # forward, weight gradient[, input gradient]
        flops += products * 2 * batch * n_in * n_out
    return flops


# --------------------------------------------------------------------------- the two steps


def manual_step(scenario: Scenario) -> Callable[[], None]:
    """One forward + loss + backward of the manual engine, as a closure over its network."""
    network = build_network(scenario)
    loss = build_loss(scenario)
    x = network_input(network, np.asarray(scenario.x, dtype=scenario.np_dtype))  # token ids as integers
    target = loss_input(np.asarray(scenario.y, dtype=scenario.np_dtype))

    def step() -> None:
        outputs = forward(network, x)
        loss.forward(loss_input(outputs[-1]), target)
        backward(network, loss.backward().reshape(outputs[-1].shape), input_grad=False)

    return step


def torch_step(scenario: Scenario) -> Callable[[], None]:
    """One forward + loss + backward by torch autograd on the same weights
    (``reference.network``, the builder the reference run uses)."""
    network = build_torch_network(scenario)
    x, target = network.inputs(scenario.x), network.tensor(scenario.y)

    def step() -> None:
        network.zero_grad()
        network.loss(x, target).backward()

    return step


def torch_step_for(case, scenario: Scenario) -> Callable[[], None]:
    """The case's torch side: ``fused_lstm_step`` for a ``torch_fused`` case, else ``torch_step``."""
    return fused_lstm_step(scenario) if getattr(case, "torch_fused", False) else torch_step(scenario)


def fused_lstm_step(scenario: Scenario) -> Callable[[], torch.Tensor]:
    """One forward + loss + backward of a scenario lstm → last_step → linear → identity network, the
    LSTM as one ``torch.nn.LSTM`` (its fused kernel), on the scenario's weights. Returns the loss;
    ``step.parameters`` maps the scenario's names (weight_ih, …, linear.weight) to the tensors."""
    recurrent, last, linear, identity = scenario.layers
    if (recurrent.type, last.type, linear.type, identity.type) != ("lstm", "last_step", "linear", "identity"):
        raise ValueError(f"{scenario.name}: fused_lstm_step takes lstm → last_step → linear → identity")
    dtype = TORCH_DTYPES[scenario.dtype]
    features, hidden = recurrent.tensors["weight_ih"].shape[1], recurrent.params["hidden_size"]
    module = torch.nn.LSTM(features, hidden, bias=recurrent.params["bias"], batch_first=True, dtype=dtype)
    with torch.no_grad():
        for name, tensor in recurrent.tensors.items():
            getattr(module, f"{name}_l0").copy_(torch.from_numpy(np.asarray(tensor)))
    weight = torch.tensor(np.asarray(linear.weight), dtype=dtype, requires_grad=True)
    bias = torch.tensor(np.asarray(linear.bias), dtype=dtype, requires_grad=True)
    x = torch.tensor(np.asarray(scenario.x), dtype=dtype)
    target = torch.tensor(np.asarray(scenario.y), dtype=dtype)
    loss_of = loss_function(scenario.loss)

    def step() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        weight.grad = bias.grad = None
        outputs, _ = module(x)
        loss = loss_of(F.linear(outputs[:, -1], weight, bias), target)
        loss.backward()
        return loss

    step.parameters = {**{name: getattr(module, f"{name}_l0") for name in recurrent.tensors},
                       "linear.weight": weight, "linear.bias": bias}
    return step


def conv_layer_steps(scenario: Scenario) -> tuple[Callable[[], None], Callable[[], None], int]:
    """(manual, torch, FLOPs): forward and backward of the scenario's conv2d layers alone, each on
    the input and δ it sees in one training step of the manual engine.

    Manual: ``Conv2d.forward`` then ``backward`` (∂L/∂x skipped for a first layer, as in the step);
    torch: ``F.conv2d`` and ``torch.autograd.grad`` for the same gradients. FLOPs as
    ``training_flops`` counts them. Each closure keeps its last gradients in ``step.gradients``
    (layer index → [∂L/∂W, ∂L/∂b, ∂L/∂x or None]), for checking that both compute the same.
    """
    network = build_network(scenario)
    loss = build_loss(scenario)
    x = np.asarray(scenario.x, dtype=scenario.np_dtype)
    outputs = forward(network, x)
    loss.forward(outputs[-1], np.asarray(scenario.y, dtype=scenario.np_dtype))
    deltas, _ = backward(network, loss.backward(), input_grad=False)
    inputs = [x] + outputs[:-1]
    first_learned = next(index for index, spec in enumerate(scenario.layers) if spec.weight is not None)
    convs = [(index, network[index], inputs[index], deltas[index], index != first_learned)
             for index, spec in enumerate(scenario.layers) if spec.type == "conv2d"]
    dtype = TORCH_DTYPES[scenario.dtype]
    flops = sum((3 if input_grad else 2) * 2 * delta.size * math.prod(layer.weight.shape[1:])
                for _, layer, _, delta, input_grad in convs)

    def manual() -> None:
        for index, layer, signal, delta, input_grad in convs:
            layer.forward(signal)
            input_gradient = layer.backward(delta, input_grad=input_grad)
            manual.gradients[index] = [layer.weight_grad, layer.bias_grad, input_gradient]

    def tensor(array, requires_grad=False):
        return None if array is None else torch.tensor(array, dtype=dtype, requires_grad=requires_grad)

    tensors = [(index, tensor(signal, input_grad), tensor(layer.weight, True), tensor(layer.bias, True),
                tensor(delta), layer) for index, layer, signal, delta, input_grad in convs]

    def with_torch() -> None:
        for index, signal, weight, bias, delta, layer in tensors:
            z = F.conv2d(signal, weight, bias, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                         groups=layer.groups)
            wanted = [t for t in (weight, bias, signal) if t is not None and t.requires_grad]
            found = iter(torch.autograd.grad(z, wanted, delta))
            with_torch.gradients[index] = [next(found) if t is not None and t.requires_grad else None
                                           for t in (weight, bias, signal)]

    manual.gradients, with_torch.gradients = {}, {}
    return manual, with_torch, flops


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds per call: the samples, their median and interquartile range."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        quartiles = statistics.quantiles(self.samples, n=4, method="inclusive")
        return quartiles[2] - quartiles[0]


def calls_per_sample(step: Callable[[], None], min_sample_s: float) -> int:
    """How many calls make one sample last at least ``min_sample_s`` (timeit's autorange).

    With ``min_sample_s`` 0 every sample is one call, and the step is not run here.
    """
    if min_sample_s <= 0.0:
        return 1
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        if time.perf_counter() - start >= min_sample_s or calls >= 1 << 20:
            return calls
        calls *= 2


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, min_sample_s: float,
                     warmup: int = 2) -> dict[str, Timing]:
    """Time every step ``repeats`` times, alternating between them so each sees the same load.

    Each step first runs ``warmup`` times untimed (caches, BLAS kernels, torch's allocator).
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    calls = {name: calls_per_sample(step, min_sample_s) for name, step in steps.items()}
    timings = {name: Timing() for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            n = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                step()
            timings[name].samples.append((time.perf_counter() - start) / n)
    return timings


def matmul_step(dtype: str, size: int = 4096) -> tuple[Callable[[], None], int]:
    """(step, FLOPs): NumPy's ``A @ B`` on two size×size matrices of ``dtype`` — the matmul peak.

    Timed like the networks (``time_interleaved``), so that on a shared machine
    the peak and the networks it is compared with see the same load.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    product = np.empty((size, size), dtype=dtype)

    def step() -> None:
        np.matmul(a, b, out=product)

    return step, 2 * size ** 3


# --------------------------------------------------------------------------- threads


@contextlib.contextmanager
def thread_limit(threads: int):
    """Run NumPy's BLAS and torch with ``threads`` threads each; restore both afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def kernel_description() -> str:
    """What the two engines' products run on: NumPy's BLAS and its kernel set (threadpoolctl),
    torch's CPU capability (ATen's vector kernels) and libraries, the CPU's vector extensions."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            flags = next((set(line.split(":", 1)[1].split()) for line in handle if line.startswith("flags")), set())
    vector = [flag for flag in ("avx512f", "avx2", "fma") if flag in flags]
    libraries = [name for name, present in (("oneDNN", torch.backends.mkldnn.is_available()),
                                            ("MKL", torch.backends.mkl.is_available())) if present]
    cpu = (f"; CPU {' '.join(vector)}" + ("" if "avx512f" in flags else " (no AVX-512)")) if flags else ""
    return (f"NumPy {blas_description(threads=False)}; torch {torch.backends.cpu.get_cpu_capability()} kernels"
            + (f", {', '.join(libraries)}" if libraries else "") + cpu)


def blas_description(threads: bool = True) -> str:
    """NumPy's BLAS, its kernel set and thread count, e.g. 'openblas 0.3.31 (Haswell kernels), 1 thread(s)'."""
    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
            arch = pool.get("architecture")
            return (f"{pool.get('internal_api')} {pool.get('version')}" + (f" ({arch} kernels)" if arch else "")
                    + (f", {pool.get('num_threads')} thread(s)" if threads else ""))
    return "unknown BLAS"


# --------------------------------------------------------------------------- suite throughput


@dataclass
class Throughput:
    """Seconds per random architecture, timed interleaved: the whole verification,
    building the scenario alone, and the bare engines alone."""

    verify: Timing
    build: Timing
    bare: Timing
    failures: int

    @property
    def machinery(self) -> float:
        """Median verification time / median bare forward+backward time."""
        return self.verify.median / self.bare.median

    @property
    def machinery_share(self) -> float:
        """The fraction of a verification spent in the Traces and the comparison:
        what is left of it after building the scenario and the bare engines'
        forward+backward — per repetition (the three loops of one repetition
        see the same load), median over the repetitions."""
        return statistics.median(
            (verify - build - bare) / verify
            for verify, build, bare in zip(self.verify.samples, self.build.samples, self.bare.samples)
        )


def verification_throughput(count: int, seed: int = 0, repeats: int = 3, warmup: int = 10) -> Throughput:
    """Seconds per verification of the random architectures ``seed … seed+count−1``
    in one process, ``repeats`` times, interleaved with building the same
    scenarios alone and with the bare engines on them.

    A verification is ``random_scenario``, ``manual.run``, ``reference.run`` and
    ``compare`` of every address. The build loop is ``random_scenario`` alone.
    The bare loop runs ``manual_step`` and ``torch_step`` (forward, loss,
    backward; built beforehand, untimed) of each architecture once. ``warmup``
    verifications run first, untimed (lazy imports, first calls).
    """
    seeds = range(seed, seed + count)
    failures = []

    def verify(scenario_seed: int) -> int:
        scenario = random_scenario(scenario_seed)
        rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
        return sum(not row.passed for row in rows)

    def verify_all() -> None:
        failures.append(sum(verify(s) for s in seeds))

    def build_all() -> None:
        for s in seeds:
            random_scenario(s)

    scenarios = [random_scenario(s) for s in seeds]
    bare_steps = [step for scenario in scenarios for step in (manual_step(scenario), torch_step(scenario))]

    def bare_all() -> None:
        for step in bare_steps:
            step()

    for k in range(warmup):
        verify(seed + k)
    timings = time_interleaved({"verify": verify_all, "build": build_all, "bare": bare_all}, repeats, 0.0,
                               warmup=0)
    per_architecture = {name: Timing([t / count for t in timing.samples]) for name, timing in timings.items()}
    return Throughput(per_architecture["verify"], per_architecture["build"], per_architecture["bare"],
                      max(failures))


STARTUP_EXAMPLE = "example_two_layer_sigmoid_mse.toml"  # a small worked example with one optimizer step


def startup_times(repeats: int, scratch: str) -> tuple[Timing, int]:
    """Wall seconds of ``backprop-verify check`` of one small worked example (``STARTUP_EXAMPLE``), as a
    user runs it — a fresh process each time, from start to exit — ``repeats`` times; and the last exit
    code. What the edit-check loop of a teacher fixing a printed number costs."""
    from importlib import resources

    example = resources.files("backprop_verify.scenarios.worked_examples") / STARTUP_EXAMPLE
    command = [sys.executable, "-m", "backprop_verify.reports.cli", "check", str(example), "--quiet",
               "--out", os.path.join(scratch, "startup")]
    samples, code = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        samples.append(time.perf_counter() - start)
    return Timing(samples), code


def suite_wall_time(workers: int | None, cwd: str) -> tuple[float, int]:
    """(seconds, exit code) of ``python -m pytest -q`` (``-n workers`` when given) in a subprocess."""
    command = [sys.executable, "-m", "pytest", "-q"]
    if workers is not None:
        command += ["-n", str(workers)]
    env = dict(os.environ)
    env["PYTHONPATH"] = cwd + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, done.returncode
