"""The documents' gradient formulas, each checked against torch autograd.

Each ``Derivation`` encodes one formula a document states, as a function of
forward values (NumPy on the detached forward pass), and compares it with the
gradient autograd computes for the same network, over seeded random inputs
(``DRAWS`` per setting, ``default_rng([DERIVATION_SEED, k, s])``) and a few
settings (which activation, which targets, how many samples) chosen to cover
what the document's statement claims to cover. Agreement is the float64
manual-torch tolerance of ``reports.verification.tolerance``, normwise over the gradient:
max|formula − autograd| ≤ (rtol + floor) · max|autograd|.

Verdicts:

``holds``            agrees in every setting
``holds when …``     agrees exactly in the settings the stated condition
                     selects (the condition is checked, not assumed: if the
                     settings where the formula agrees are not exactly those,
                     the result is marked inconsistent)
``wrong``            agrees in no setting

A derivation that does not hold everywhere carries its corrected formula,
which must itself agree with autograd in every setting (else: inconsistent).

The seeds' derivations are also stated as ``[[claim]]`` tables in the worked
examples (``scenarios/worked_examples``), wherever the claim language can state
them over the example's network; those go through the same machinery as a
user's claims (``reports.textbook.claims``). ``derivation_verdicts`` — the
report's table — lists this registry's verdicts and then every built-in claim
(``claim_frame``). The registry stays: its settings vary what a claim cannot
(the activation, the stride, the mode), and its conditions are checked.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from backprop_verify.reports.textbook.claims import HOLDS as CLAIM_HOLDS, check_claims
from backprop_verify.reports.verification.tolerance import absolute_floor, tolerance
from backprop_verify.scenarios.builtin import worked_examples

DERIVATION_SEED = 0
DRAWS = 12

HOLDS, WRONG = "holds", "wrong"


def _t(array, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(array, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().copy()


_TORCH_ACT = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softmax": lambda z: torch.softmax(z, dim=-1),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _jacobian_t_times(activation: str, z: np.ndarray, a: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """J_f(z)ᵀ · upstream for one sample (vector z), f the named activation."""
    if activation == "softmax":
        return a * upstream - a * np.dot(a, upstream)  # (diag(a) − a aᵀ) upstream
    derivative = {
        "identity": np.ones_like(z),
        "sigmoid": a * (1 - a),
        "tanh": 1 - a**2,
        "relu": (z > 0).astype(np.float64),
    }[activation]
    return derivative * upstream


@dataclass(frozen=True)
class Derivation:
    """One formula of one document.

    ``sample(setting, rng)`` returns ``(formula, autograd, corrected)`` arrays
    for one random draw (``corrected`` None when the derivation has none).
    ``condition`` is (text, predicate over settings) for ``holds when``.
    """

    id: str
    document: str
    statement: str
    settings: tuple[dict, ...]
    sample: Callable[[dict, np.random.Generator], tuple]
    condition: tuple[str, Callable[[dict], bool]] | None = None
    corrected: str = ""


@dataclass
class DerivationResult:
    id: str
    document: str
    statement: str
    verdict: str
    corrected: str
    holds_in: list[str]
    fails_in: list[str]
    worst: dict[str, float] = field(default_factory=dict)  # setting -> worst max|diff| / max|autograd|
    inconsistent: str = ""


def _agrees(formula: np.ndarray, truth: np.ndarray) -> tuple[bool, float]:
    formula, truth = np.asarray(formula, np.float64), np.asarray(truth, np.float64)
    if formula.shape != truth.shape:
        return False, float("inf")
    scale = float(np.max(np.abs(truth))) if truth.size else 0.0
    diff = float(np.max(np.abs(formula - truth))) if truth.size else 0.0
    bound = (tolerance("float64", "manual-torch") + absolute_floor("float64", "manual-torch")) * scale
    return diff <= bound, (diff / scale if scale else (0.0 if diff == 0 else float("inf")))


def evaluate(derivation: Derivation, index: int = 0, draws: int = DRAWS) -> DerivationResult:
    holds_in, fails_in, worst = [], [], {}
    corrected_fails = []
    for s, setting in enumerate(derivation.settings):
        rng = np.random.default_rng([DERIVATION_SEED, index, s])
        ok, corrected_ok, rel = True, True, 0.0
        for _ in range(draws):
            formula, truth, corrected = derivation.sample(setting, rng)
            agree, r = _agrees(formula, truth)
            ok, rel = ok and agree, max(rel, r)
            if corrected is not None:
                corrected_ok = corrected_ok and _agrees(corrected, truth)[0]
        (holds_in if ok else fails_in).append(setting["label"])
        worst[setting["label"]] = rel
        if not corrected_ok:
            corrected_fails.append(setting["label"])
    labels = [s["label"] for s in derivation.settings]
    inconsistent = ""
    if not fails_in:
        verdict = HOLDS
    elif not holds_in:
        verdict = WRONG
    elif derivation.condition is not None:
        text, predicate = derivation.condition
        expected = [s["label"] for s in derivation.settings if predicate(s)]
        verdict = f"holds when {text}"
        if expected != holds_in:
            inconsistent = f"agrees in {holds_in}, but the stated condition selects {expected}"
    else:
        verdict = f"holds only in: {', '.join(holds_in)}"
        inconsistent = "holds in some settings and no condition is stated"
    if fails_in and not derivation.corrected:
        inconsistent = inconsistent or "does not hold everywhere and has no corrected formula"
    if corrected_fails:
        inconsistent = inconsistent or f"the corrected formula disagrees with autograd in {corrected_fails}"
    assert set(holds_in) | set(fails_in) == set(labels)
    return DerivationResult(derivation.id, derivation.document, derivation.statement, verdict,
                            derivation.corrected if fails_in else "", holds_in, fails_in, worst, inconsistent)


# --------------------------------------------------------------------------- document 000


def _d000_output(setting: dict, rng: np.random.Generator):
    """y = f(Wx + b), L = ½Σ(y − t)²; the document: ∂L/∂W = ∂L/∂y · x (outer product ∂L/∂y xᵀ)."""
    act = setting["activation"]
    x, t = rng.normal(size=3), rng.uniform(size=2)
    W, b = _t(rng.normal(size=(2, 3)), True), _t(rng.normal(size=2), True)
    z = W @ _t(x) + b
    y = _TORCH_ACT[act](z)
    (0.5 * ((y - _t(t)) ** 2).sum()).backward()
    dL_dy = _np(y) - t
    formula = np.outer(dL_dy, x)
    delta = _jacobian_t_times(act, _np(z), _np(y), dL_dy)
    return formula, _np(W.grad), np.outer(delta, x)


def _d000_hidden(setting: dict, rng: np.random.Generator, read_exactly: bool):
    """x¹ = f(W¹x⁰ + b¹), y² = σ(W²x¹ + b²), L = ½Σ(y² − t)²."""
    act = setting["activation"]
    x0, t = rng.normal(size=3), rng.uniform(size=2)
    W1, b1 = _t(rng.normal(size=(3, 3)), True), _t(rng.normal(size=3), True)
    W2, b2 = _t(rng.normal(size=(2, 3))), _t(rng.normal(size=2))
    z1 = W1 @ _t(x0) + b1
    x1 = _TORCH_ACT[act](z1)
    z2 = W2 @ x1 + b2
    y2 = torch.sigmoid(z2)
    (0.5 * ((y2 - _t(t)) ** 2).sum()).backward()
    a2 = _np(y2)
    # (∂L/∂y⁽ˡ⁺¹⁾ · ∂y⁽ˡ⁺¹⁾/∂x⁽ˡ⁾) = ∂L/∂x⁽ˡ⁾, the Jacobian of layer l+1 taken exactly
    dL_dx1 = _np(W2).T @ ((a2 - t) * a2 * (1 - a2))
    delta1 = _jacobian_t_times(act, _np(z1), _np(x1), dL_dx1)
    if read_exactly:  # ∂x⁽ˡ⁾_j/∂W⁽ˡ⁾_jk = f'(z_j) x⁽ˡ⁻¹⁾_k
        formula = np.outer(delta1, x0)
    else:  # the document's own substitution for the output layer: ∂x⁽ˡ⁾/∂W⁽ˡ⁾ = x⁽ˡ⁻¹⁾
        formula = np.outer(dL_dx1, x0)
    return formula, _np(W1.grad), np.outer(delta1, x0)


_ACTS_000 = tuple({"label": f"f = {a}", "activation": a} for a in ("identity", "sigmoid", "tanh", "relu", "softmax"))
_HIDDEN_000 = tuple({"label": f"f⁽ˡ⁾ = {a}", "activation": a} for a in ("identity", "sigmoid", "tanh", "relu"))

# --------------------------------------------------------------------------- document 001


def _d001_neuron(setting: dict, rng: np.random.Generator):
    """y = σ(Wx + b), Loss = ½Σ(y − t)² over n samples; the rule per sample, summed."""
    n = setting["n"]
    x, t = rng.normal(size=(n, 3)), rng.uniform(size=n)
    W, b = _t(rng.normal(size=3), True), _t(rng.normal(size=()), True)
    y = torch.sigmoid(_t(x) @ W + b)
    (0.5 * ((y - _t(t)) ** 2).sum()).backward()
    yv = _np(y)
    sigma_prime = yv * (1 - yv)
    if setting["parameter"] == "W":
        return ((yv - t) * sigma_prime) @ x, _np(W.grad), None
    return np.sum((yv - t) * sigma_prime), _np(b.grad), None


def _d001_mse(setting: dict, rng: np.random.Generator):
    """Loss = ½Σ(y_i − t_i)²: ∂Loss/∂y_i = y_i − t_i."""
    y, t = _t(rng.normal(size=setting["n"]), True), rng.normal(size=setting["n"])
    (0.5 * ((y - _t(t)) ** 2).sum()).backward()
    return _np(y) - t, _np(y.grad), None


# --------------------------------------------------------------------------- document 002


def _d002_chain(setting: dict, rng: np.random.Generator):
    """C₀ = (a − y)², a = σ(w a⁽ᴸ⁻¹⁾ + b): ∂C₀/∂w = a⁽ᴸ⁻¹⁾ · σ'(z) · 2(a − y)."""
    a_prev, y = rng.uniform(), rng.uniform()
    w, b = _t(rng.normal(), True), _t(rng.normal(), True)
    z = w * a_prev + b
    a = torch.sigmoid(z)
    ((a - y) ** 2).backward()
    av = float(a.detach())
    return np.array(a_prev * av * (1 - av) * 2 * (av - y)), _np(w.grad), None


# --------------------------------------------------------------------------- document 003


def _d003_quadratic(setting: dict, rng: np.random.Generator):
    """f(w) = w² + 2w + 1: f'(w) = 2w + 2 = 2(w + 1)."""
    w = _t(rng.normal(scale=5.0, size=4), True)
    (w**2 + 2 * w + 1).sum().backward()
    wv = _np(w)
    return 2 * (wv + 1), _np(w.grad), None


def _d003_sigmoid_prime(setting: dict, rng: np.random.Generator):
    """σ'(z) = 1/(1 + e⁻ᶻ) · e⁻ᶻ/(1 + e⁻ᶻ) = σ(z)(1 − σ(z))."""
    z = _t(rng.normal(scale=3.0, size=8), True)
    torch.sigmoid(z).sum().backward()
    zv = _np(z)
    if setting["form"] == "product":
        formula = _sigmoid(zv) * (1 - _sigmoid(zv))
    else:
        formula = 1 / (1 + np.exp(-zv)) * np.exp(-zv) / (1 + np.exp(-zv))
    return formula, _np(z.grad), None


def _half_batch_mse(y_hat: torch.Tensor, y: np.ndarray) -> torch.Tensor:
    return ((y_hat - _t(y)) ** 2).sum() / (2 * y.shape[0])


def _d003_mse_derivative(setting: dict, rng: np.random.Generator):
    """L = 1/(2n) Σ(ŷ − y)²: L' = ∂L/∂ŷ_i = (1/n)(ŷ_i − y_i)."""
    n = setting["n"]
    y_hat, y = _t(rng.normal(size=n), True), rng.normal(size=n)
    _half_batch_mse(y_hat, y).backward()
    return (_np(y_hat) - y) / n, _np(y_hat.grad), None


def _d003_one_layer(setting: dict, rng: np.random.Generator):
    """ŷ = σ(w¹₁x₁), L = 1/(2n)Σ(ŷ − y)²: ∂L/∂w¹₁ = Σ_i (1/n)(ŷ − y)·1·σ(z)(1 − σ(z))·x₁."""
    n = setting["n"]
    x1, y = rng.normal(size=n), rng.uniform(size=n)
    w = _t(rng.normal(), True)
    z = w * _t(x1)
    y_hat = torch.sigmoid(z)
    _half_batch_mse(y_hat, y).backward()
    s = _sigmoid(_np(z))
    return np.sum((_np(y_hat) - y) / n * 1 * s * (1 - s) * x1), _np(w.grad), None


def _two_layer_003(rng: np.random.Generator, n: int):
    x, y = rng.normal(size=(n, 2)), rng.uniform(size=n)
    w1 = _t(rng.normal(size=2), True)  # w¹₁, w¹₂
    w2 = _t(rng.normal(), True)  # w²₁
    z1 = _t(x) @ w1
    a1 = torch.sigmoid(z1)
    z2 = w2 * a1
    y_hat = torch.sigmoid(z2)
    _half_batch_mse(y_hat, y).backward()
    return x, y, w1, w2, _np(z1), _np(a1), _np(z2), _np(y_hat)


def _d003_two_layer_output(setting: dict, rng: np.random.Generator):
    """The slide's substitution: ∂L/∂w²₁ = (1/n)(ŷ − y)·σ(z¹₁)(1 − σ(z¹₁))·a¹₁."""
    n = setting["n"]
    x, y, w1, w2, z1, a1, z2, y_hat = _two_layer_003(rng, n)
    s1, s2 = _sigmoid(z1), _sigmoid(z2)
    formula = np.sum((y_hat - y) / n * s1 * (1 - s1) * a1)
    corrected = np.sum((y_hat - y) / n * s2 * (1 - s2) * a1)
    return formula, _np(w2.grad), corrected


def _d003_two_layer_hidden(setting: dict, rng: np.random.Generator):
    """∂L/∂w¹₁ = (1/n)(ŷ − y)·σ(z²₁)(1 − σ(z²₁))·w²₁·σ(z¹₁)(1 − σ(z¹₁))·x₁."""
    n = setting["n"]
    x, y, w1, w2, z1, a1, z2, y_hat = _two_layer_003(rng, n)
    s1, s2 = _sigmoid(z1), _sigmoid(z2)
    formula = np.sum((y_hat - y) / n * s2 * (1 - s2) * float(w2.detach()) * s1 * (1 - s1) * x[:, 0])
    return formula, _np(w1.grad)[0], None


def _three_layer_003(setting: dict, rng: np.random.Generator):
    """x (2) → W¹ → σ (2) → W² → σ (m) → W³ → output unit (1), no biases, L = 1/(2n)Σ(ŷ − y)²."""
    n, m = setting["n"], setting.get("width2", 2)
    x, y = rng.normal(size=(n, 2)), rng.uniform(size=n)
    W1, W2, W3 = _t(rng.normal(size=(2, 2)), True), _t(rng.normal(size=(m, 2))), _t(rng.normal(size=(1, m)))
    z1 = _t(x) @ W1.T
    a1 = torch.sigmoid(z1)
    z2 = a1 @ W2.T
    a2 = torch.sigmoid(z2)
    z3 = (a2 @ W3.T)[:, 0]
    y_hat = _TORCH_ACT[setting["output"]](z3)
    _half_batch_mse(y_hat, y).backward()
    s1, s2 = _sigmoid(_np(z1)), _sigmoid(_np(z2))
    output_derivative = _jacobian_t_times(setting["output"], _np(z3), _np(y_hat), np.ones(n))
    return dict(x=x, y=y, n=n, m=m, s1=s1, s2=s2, w2=_np(W2), w3=_np(W3), y_hat=_np(y_hat),
                output_derivative=output_derivative, truth=_np(W1.grad)[0, 0])


def _d003_three_layer(setting: dict, rng: np.random.Generator):
    """∂L/∂w¹₁₁ = (1/n)(ŷ − y)[Σᵢ w³₁ᵢ σ'(z²ᵢ) w²ᵢ₁] σ'(z¹₁) x₁, 2 → 2 → 2 → 1, sigmoid hidden units."""
    v = _three_layer_003(setting, rng)
    s1, s2, w2, w3 = v["s1"], v["s2"], v["w2"], v["w3"]
    path = sum(w3[0, i] * s2[:, i] * (1 - s2[:, i]) * w2[i, 0] for i in range(v["m"]))
    common = (v["y_hat"] - v["y"]) / v["n"] * path * s1[:, 0] * (1 - s1[:, 0]) * v["x"][:, 0]
    return np.sum(common), v["truth"], np.sum(common * v["output_derivative"])


def _d003_three_layer_chain(setting: dict, rng: np.random.Generator):
    """The slide's chain ∂L/∂ŷ ∂ŷ/∂z³₁ (∂z³₁/∂a²₁ ∂a²₁/∂z²₁ ∂z²₁/∂a¹₁) ∂a¹₁/∂w¹₁₁, every factor exact."""
    v = _three_layer_003(setting, rng)
    s1, s2, w2, w3 = v["s1"], v["s2"], v["w2"], v["w3"]
    head = (v["y_hat"] - v["y"]) / v["n"] * v["output_derivative"]
    tail = s1[:, 0] * (1 - s1[:, 0]) * v["x"][:, 0]
    one_path = head * (w3[0, 0] * s2[:, 0] * (1 - s2[:, 0]) * w2[0, 0]) * tail
    every_path = head * sum(w3[0, i] * s2[:, i] * (1 - s2[:, i]) * w2[i, 0] for i in range(v["m"])) * tail
    return np.sum(one_path), v["truth"], np.sum(every_path)


# --------------------------------------------------------------------------- document 004


def _targets(kind: str, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    if kind == "one-hot":
        return np.eye(k)[rng.integers(0, k, size=n)]
    if kind == "distribution":
        return rng.dirichlet(np.ones(k), size=n)
    return rng.uniform(0.1, 1.0, size=(n, k))  # non-negative, rows not summing to 1


def _d004_shortcut(setting: dict, rng: np.random.Generator):
    """a = softmax(z), L = −Σ t log a: ∂L/∂z = a − t."""
    z = _t(rng.normal(size=(3, 4)), True)
    t = _targets(setting["targets"], rng, 3, 4)
    a = torch.softmax(z, dim=-1)
    (-(_t(t) * torch.log(a)).sum()).backward()
    av = _np(a)
    return av - t, _np(z.grad), av * t.sum(axis=1, keepdims=True) - t


def _d004_network(rng: np.random.Generator):
    """x (3) → W¹, b¹ → sigmoid (4) → W², b² → softmax (3), L = −Σ t log a³, one-hot t."""
    x, t = rng.normal(size=3), np.eye(3)[rng.integers(0, 3)]
    W1, b1 = _t(rng.normal(size=(4, 3)), True), _t(rng.normal(size=4), True)
    W2, b2 = _t(rng.normal(size=(3, 4)), True), _t(rng.normal(size=3), True)
    a2 = torch.sigmoid(W1 @ _t(x) + b1)
    a3 = torch.softmax(W2 @ a2 + b2, dim=-1)
    (-(_t(t) * torch.log(a3)).sum()).backward()
    return x, t, W1, W2, _np(a2), _np(a3)


def _d004_output_weights(setting: dict, rng: np.random.Generator):
    """∂L/∂w²_jk = (a³_j − t_j) · a²_k."""
    x, t, W1, W2, a2, a3 = _d004_network(rng)
    return np.outer(a3 - t, a2), _np(W2.grad), None


def _d004_hidden_weights(setting: dict, rng: np.random.Generator):
    """∂L/∂a²_k = Σ_j (a³_j − t_j) w²_jk; ∂L/∂w¹_kl = ∂L/∂a²_k · a²_k(1 − a²_k) · x_l."""
    x, t, W1, W2, a2, a3 = _d004_network(rng)
    dL_da2 = (a3 - t) @ _np(W2)
    return np.outer(dL_da2 * a2 * (1 - a2), x), _np(W1.grad), None


_N = ({"label": "n = 1", "n": 1}, {"label": "n = 5", "n": 5})

# --------------------------------------------------------------------------- textbook: convolution and BatchNorm
#
# Rules a CNN chapter states for one convolution layer z = conv(x, K) + b
# (cross-correlation, as PyTorch computes it): the input gradient is a "full"
# convolution of δ = ∂L/∂z with the kernel turned by 180°, and the kernel
# gradient a "valid" convolution of the input with δ. Written here with
# a NumPy 2-D cross-correlation (correlate2d), channel by channel, against autograd through
# torch.nn.functional.conv2d; the settings vary stride and padding.


def correlate2d(signal: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """2-D cross-correlation, Σ_pq signal[i + p, j + q] kernel[p, q] — 'valid' (the kernel inside
    the signal) or 'full' (every overlap: the signal padded by the kernel's size − 1)."""
    if mode == "full":
        kh, kw = kernel.shape
        signal = np.pad(signal, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    windows = np.lib.stride_tricks.sliding_window_view(signal, kernel.shape)
    return np.einsum("ijpq,pq->ij", windows, kernel)


def _conv_setting(rng: np.random.Generator, setting: dict):
    stride, padding = setting["stride"], setting["padding"]
    x = rng.normal(size=(1, 2, 7, 7))
    kernel = rng.normal(size=(3, 2, 3, 3))
    xt, kt = _t(x, True), _t(kernel, True)
    z = torch.nn.functional.conv2d(xt, kt, stride=stride, padding=padding)
    delta = rng.normal(size=tuple(z.shape))
    (z * _t(delta)).sum().backward()
    return x, kernel, delta[0], _np(xt.grad)[0], _np(kt.grad)


def _dilate(delta: np.ndarray, stride: int) -> np.ndarray:
    """δ with stride − 1 zeros between its entries (the outputs a stride skipped)."""
    if stride == 1:
        return delta
    out = np.zeros((delta.shape[0], (delta.shape[1] - 1) * stride + 1, (delta.shape[2] - 1) * stride + 1))
    out[:, ::stride, ::stride] = delta
    return out


def _conv_input_rule(setting: dict, rng: np.random.Generator):
    """δˡ⁻¹ = conv(δˡ, rot180(K), 'full'), summed over the output channels."""
    x, kernel, delta, truth, _ = _conv_setting(rng, setting)
    stride, padding = setting["stride"], setting["padding"]
    size = x.shape[2]

    def full(spread):
        return np.stack([sum(correlate2d(spread[o], np.rot90(kernel[o, c], 2), mode="full")
                             for o in range(kernel.shape[0])) for c in range(kernel.shape[1])])

    formula = full(delta)
    corrected = full(_dilate(delta, stride))  # the gradient with respect to the padded input
    padded = np.zeros((kernel.shape[1], size + 2 * padding, size + 2 * padding))
    padded[:, :corrected.shape[1], :corrected.shape[2]] = corrected  # rows the last window never reached: 0
    corrected = padded[:, padding:padding + size, padding:padding + size]
    return formula, truth, corrected


def _conv_kernel_rule(setting: dict, rng: np.random.Generator):
    """∂L/∂K = conv(x, δ, 'valid'): each output channel's δ slid over each input channel."""
    x, kernel, delta, _, truth = _conv_setting(rng, setting)
    stride, padding = setting["stride"], setting["padding"]
    k = kernel.shape[-1]
    formula = np.stack([np.stack([correlate2d(x[0, c], delta[o], mode="valid") for c in range(x.shape[1])])
                        for o in range(delta.shape[0])])
    padded = np.pad(x[0], ((0, 0), (padding, padding), (padding, padding)))
    spread = _dilate(delta, stride)
    corrected = np.stack([np.stack([correlate2d(padded[c], spread[o], mode="valid")[:k, :k]
                                    for c in range(x.shape[1])]) for o in range(delta.shape[0])])
    return formula, truth, corrected


_CONV_SETTINGS = tuple({"label": f"stride {s}, padding {p}", "stride": s, "padding": p} for s in (1, 2) for p in (0, 1))


def _batch_norm_rule(setting: dict, rng: np.random.Generator, variance_term: bool = True):
    """∂L/∂x = γ/(mσ) · (m δ − Σδ − x̂ Σ(δ x̂)) over the m values of each channel."""
    shape = setting["shape"]
    x = rng.normal(1.0, 2.0, shape)
    channels = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(size=channels)
    running_mean, running_var = rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)
    xt = _t(x, True)
    y = torch.nn.functional.batch_norm(xt, _t(running_mean), _t(running_var), _t(gamma), _t(beta),
                                       training=setting["training"], eps=1e-5)
    delta = rng.normal(size=shape)
    (y * _t(delta)).sum().backward()
    axes = (0,) + tuple(range(2, len(shape)))
    view = (1, channels) + (1,) * (len(shape) - 2)
    m = x.size // channels
    mean, variance = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    sigma = np.sqrt(variance + 1e-5)
    x_hat = (x - mean) / sigma
    g = gamma.reshape(view)
    sum_delta = delta.sum(axis=axes, keepdims=True)
    sum_delta_x_hat = (delta * x_hat).sum(axis=axes, keepdims=True)
    if variance_term:
        formula = g / (m * sigma) * (m * delta - sum_delta - x_hat * sum_delta_x_hat)
    else:
        formula = g / sigma * (delta - sum_delta / m)
    if setting["training"]:
        corrected = g / (m * sigma) * (m * delta - sum_delta - x_hat * sum_delta_x_hat)
    else:
        corrected = g * delta / np.sqrt(running_var.reshape(view) + 1e-5)
    return formula, _np(xt.grad), corrected


_BATCH_NORM_SETTINGS = (
    {"label": "training, (N, F) = (6, 3)", "shape": (6, 3), "training": True},
    {"label": "training, (N, C, H, W) = (2, 2, 3, 3)", "shape": (2, 2, 3, 3), "training": True},
    {"label": "evaluation, (N, F) = (4, 3)", "shape": (4, 3), "training": False},
)


# --------------------------------------------------------------------------- textbook: backpropagation through time
#
# A tanh RNN h_t = tanh(W_ih x_t + W_hh h_(t−1) + b) over T steps, L = Σ_t ⟨h_t, g_t⟩
# (a loss term at every step), h_0 random: the chapter's ∂L/∂W_hh as a sum over
# time, the shortcut that keeps only the last step's term, and the sum a
# truncated backpropagation computes (the state detached every k steps).


def _bptt_setting(setting: dict, rng: np.random.Generator):
    steps, hidden, features, chunk = setting["steps"], 3, 2, setting.get("chunk", 0)
    x, h0 = rng.normal(size=(steps, features)), rng.normal(size=hidden)
    w_ih, w_hh, b = rng.normal(0, 0.6, (hidden, features)), rng.normal(0, 0.6, (hidden, hidden)), rng.normal(size=hidden)
    upstream = rng.normal(size=(steps, hidden))
    w_hh_t = _t(w_hh, True)
    h, states = _t(h0), []
    for t in range(steps):
        if chunk and t and t % chunk == 0:
            h = h.detach()
        h = torch.tanh(_t(w_ih) @ _t(x[t]) + w_hh_t @ h + _t(b))
        states.append(h)
    (torch.stack(states) * _t(upstream)).sum().backward()
    hs = [h0] + [_np(s) for s in states]
    return hs, w_hh, upstream, _np(w_hh_t.grad)


def _bptt_deltas(hs, w_hh, upstream, chunk: int = 0) -> list[np.ndarray]:
    """δ_t = (∂L/∂h_t + W_hhᵀ δ_(t+1)) ⊙ (1 − h_t²), the recurrence cut between chunks."""
    steps = len(upstream)
    deltas = [None] * steps
    carried = np.zeros_like(upstream[0])
    for t in range(steps - 1, -1, -1):
        if chunk and (t + 1) % chunk == 0:
            carried = np.zeros_like(carried)  # no gradient flows back across the chunk boundary
        deltas[t] = (upstream[t] + carried) * (1 - hs[t + 1] ** 2)
        carried = w_hh.T @ deltas[t]
    return deltas


def _bptt_sum(setting: dict, rng: np.random.Generator):
    """∂L/∂W_hh = Σ_t δ_t h_(t−1)ᵀ."""
    hs, w_hh, upstream, truth = _bptt_setting(setting, rng)
    deltas = _bptt_deltas(hs, w_hh, upstream)
    return sum(np.outer(d, hs[t]) for t, d in enumerate(deltas)), truth, None


def _bptt_last_term(setting: dict, rng: np.random.Generator):
    """∂L/∂W_hh = δ_T h_(T−1)ᵀ, the last step's term alone."""
    hs, w_hh, upstream, truth = _bptt_setting(setting, rng)
    deltas = _bptt_deltas(hs, w_hh, upstream)
    return np.outer(deltas[-1], hs[-2]), truth, sum(np.outer(d, hs[t]) for t, d in enumerate(deltas))


def _bptt_truncated(setting: dict, rng: np.random.Generator):
    """The truncated gradient: Σ_t δ̃_t h_(t−1)ᵀ with δ̃ cut at every chunk boundary."""
    hs, w_hh, upstream, truth = _bptt_setting(setting, rng)
    deltas = _bptt_deltas(hs, w_hh, upstream, setting["chunk"])
    return sum(np.outer(d, hs[t]) for t, d in enumerate(deltas)), truth, None


_BPTT_STEPS = tuple({"label": f"T = {steps}", "steps": steps} for steps in (1, 2, 6))
_BPTT_CHUNKS = tuple({"label": f"T = 6, chunks of {chunk}", "steps": 6, "chunk": chunk} for chunk in (1, 2, 4))


DERIVATIONS: tuple[Derivation, ...] = (
    Derivation(
        "000-output-layer", "000",
        "∂L/∂W⁽ᴸ⁾ = ∂L/∂y⁽ᴸ⁾ · x⁽ᴸ⁻¹⁾ (with ∂y⁽ᴸ⁾/∂W⁽ᴸ⁾ = x⁽ᴸ⁻¹⁾), y⁽ᴸ⁾ = f(W⁽ᴸ⁾x⁽ᴸ⁻¹⁾ + b⁽ᴸ⁾)",
        # read as: outer product ∂L/∂y⁽ᴸ⁾ x⁽ᴸ⁻¹⁾ᵀ, L = ½Σ(y − t)², one sample; f varied
        _ACTS_000, _d000_output,
        condition=("the output activation is the identity (f' ≡ 1; ReLU only if every z > 0)",
                   lambda s: s["activation"] == "identity"),
        corrected="∂L/∂W⁽ᴸ⁾ = δ⁽ᴸ⁾ x⁽ᴸ⁻¹⁾ᵀ with δ⁽ᴸ⁾ = ∂L/∂z⁽ᴸ⁾ = f'(z⁽ᴸ⁾) ⊙ ∂L/∂y⁽ᴸ⁾ (Jᵀ∂L/∂y⁽ᴸ⁾ for softmax)",
    ),
    Derivation(
        "000-hidden-layer", "000",
        "∂L/∂W⁽ˡ⁾ = (∂L/∂y⁽ˡ⁺¹⁾ · ∂y⁽ˡ⁺¹⁾/∂x⁽ˡ⁾) · ∂x⁽ˡ⁾/∂W⁽ˡ⁾, with the document's ∂x⁽ˡ⁾/∂W⁽ˡ⁾ = x⁽ˡ⁻¹⁾",
        # read as: bracket = ∂L/∂x⁽ˡ⁾ exactly (through layer l+1, sigmoid); ∂x⁽ˡ⁾/∂W⁽ˡ⁾ read as the document defines it
        #   for the output layer; hidden activation f⁽ˡ⁾ varied
        _HIDDEN_000, lambda s, r: _d000_hidden(s, r, read_exactly=False),
        condition=("the hidden activation f⁽ˡ⁾ is the identity", lambda s: s["activation"] == "identity"),
        corrected="∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾ x⁽ˡ⁻¹⁾ᵀ with δ⁽ˡ⁾ = f'⁽ˡ⁾(z⁽ˡ⁾) ⊙ (W⁽ˡ⁺¹⁾ᵀ δ⁽ˡ⁺¹⁾)",
    ),
    Derivation(
        "000-hidden-layer-chain", "000",
        "∂L/∂W⁽ˡ⁾ = (∂L/∂y⁽ˡ⁺¹⁾ · ∂y⁽ˡ⁺¹⁾/∂x⁽ˡ⁾) · ∂x⁽ˡ⁾/∂W⁽ˡ⁾, every factor the exact Jacobian",
        # read as: as the generic chain rule: ∂x⁽ˡ⁾_j/∂W⁽ˡ⁾_jk = f'(z_j) x⁽ˡ⁻¹⁾_k, so the f' the output-layer rule
        #   drops is kept
        _HIDDEN_000, lambda s, r: _d000_hidden(s, r, read_exactly=True),
    ),
    Derivation(
        "001-single-neuron-W", "001",
        "∂Loss/∂W = (y − t) · σ'(Wx + b) · x, y = σ(Wx + b), Loss = ½Σ(y − t)²",
        # read as: per sample, summed over the n samples of ½Σ
        _N, lambda s, r: _d001_neuron({**s, "parameter": "W"}, r),
    ),
    Derivation(
        "001-single-neuron-b", "001",
        "∂Loss/∂b = (y − t) · σ'(Wx + b)",
        # read as: per sample, summed over the n samples of ½Σ
        _N, lambda s, r: _d001_neuron({**s, "parameter": "b"}, r),
    ),
    Derivation(
        "001-mse-half-sum", "001",
        "Loss = ½ Σᵢ (yᵢ − tᵢ)², so ∂Loss/∂yᵢ = yᵢ − tᵢ (the factor (y − t) of the rule above)",
        # read as: derivative of the ½Σ loss with respect to each output
        _N, _d001_mse,
    ),
    Derivation(
        "002-three-factor-chain", "002",
        "∂C₀/∂w⁽ᴸ⁾ = ∂z⁽ᴸ⁾/∂w⁽ᴸ⁾ · ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ · ∂C₀/∂a⁽ᴸ⁾ = a⁽ᴸ⁻¹⁾ · σ'(z⁽ᴸ⁾) · 2(a⁽ᴸ⁾ − y), C₀ = (a⁽ᴸ⁾ − y)²",
        # read as: one neuron per layer, a⁽ᴸ⁻¹⁾ and y in [0, 1)
        ({"label": "one neuron"},), _d002_chain,
    ),
    Derivation(
        "003-quadratic", "003",
        "f(w) = w² + 2w + 1: f'(w) = 2w + 2 = 2(w + 1)",
        # read as: at random w
        ({"label": "w ~ N(0, 25)"},), _d003_quadratic,
    ),
    Derivation(
        "003-sigmoid-derivative", "003",
        "σ'(z) = 1/(1 + e⁻ᶻ) · e⁻ᶻ/(1 + e⁻ᶻ) = σ(z)(1 − σ(z))",
        # read as: both printed forms
        ({"label": "quotient form", "form": "quotient"}, {"label": "σ(1 − σ) form", "form": "product"}),
        _d003_sigmoid_prime,
    ),
    Derivation(
        "003-mse-derivative", "003",
        "L = 1/(2n) (ŷ − y)², L' = 1/n (ŷ − y)",
        # read as: L = 1/(2n) Σᵢ (ŷᵢ − yᵢ)²; L' = ∂L/∂ŷᵢ
        _N, _d003_mse_derivative,
    ),
    Derivation(
        "003-one-layer", "003",
        "∂L/∂w¹₁ = 1/n (ŷ − y) · 1 · σ(z¹₁)(1 − σ(z¹₁)) · x₁, z¹₁ = w¹₁ · x₁, ŷ = σ(z¹₁)",
        # read as: per sample, summed over the n samples of 1/(2n)Σ
        _N, _d003_one_layer,
    ),
    Derivation(
        "003-two-layer-output-weight", "003",
        "ŵ²₁ = w²₁ − η · 1/n (ŷ − y) · σ(z¹₁)(1 − σ(z¹₁)) · a¹₁, i.e. ∂L/∂w²₁ = 1/n (ŷ − y) σ(z¹₁)(1 − σ(z¹₁)) a¹₁",
        # read as: x (2) → w¹ → σ → w²₁ → σ = ŷ, no biases, L = 1/(2n)Σ(ŷ − y)²
        _N, _d003_two_layer_output,
        corrected="∂L/∂w²₁ = 1/n (ŷ − y) · σ(z²₁)(1 − σ(z²₁)) · a¹₁ (σ' at the output's own z²₁, as the chain "
                  "∂L/∂ŷ ∂ŷ/∂a²₁ ∂a²₁/∂z²₁ ∂z²₁/∂w²₁ written above it says)",
    ),
    Derivation(
        "003-two-layer-hidden-weight", "003",
        "∂L/∂w¹₁ = 1/n (ŷ − y) · σ(z²₁)(1 − σ(z²₁)) w²₁ · σ(z¹₁)(1 − σ(z¹₁)) x₁",
        # read as: x (2) → w¹ → σ → w²₁ → σ = ŷ, no biases, L = 1/(2n)Σ(ŷ − y)²
        _N, _d003_two_layer_hidden,
    ),
    Derivation(
        "003-three-layer-chain", "003",
        "∂L/∂w¹₁₁ = ∂L/∂ŷ · ∂ŷ/∂z³₁ · (∂z³₁/∂a²₁ · ∂a²₁/∂z²₁ · ∂z²₁/∂a¹₁) · ∂a¹₁/∂w¹₁₁",
        # read as: each factor exact (sigmoid units, ŷ = σ(z³₁), L = 1/(2n)Σ(ŷ − y)², n = 4); the width of the second
        #   hidden layer varied: the chain follows the one path through a²₁
        ({"label": "one unit in layer 2", "n": 4, "output": "sigmoid", "width2": 1},
         {"label": "two units in layer 2", "n": 4, "output": "sigmoid", "width2": 2}),
        _d003_three_layer_chain,
        condition=("the second hidden layer has a single unit (one path from a¹₁ to ŷ)", lambda s: s["width2"] == 1),
        corrected="sum the product over every unit i of the second hidden layer: ∂L/∂ŷ ∂ŷ/∂z³₁ "
                  "[Σᵢ ∂z³₁/∂a²ᵢ ∂a²ᵢ/∂z²ᵢ ∂z²ᵢ/∂a¹₁] ∂a¹₁/∂w¹₁₁ (as the document's vanishing-gradient slide does)",
    ),
    Derivation(
        "003-three-layer-sum", "003",
        "∂L/∂w¹₁₁ = 1/n (ŷ − y) [Σᵢ₌₁² w³₁ᵢ σ'(z²ᵢ) w²ᵢ₁] σ'(z¹₁) x₁",
        # read as: 2 → 2 → 2 → 1, sigmoid hidden layers, no biases, L = 1/(2n)Σ(ŷ − y)²; output unit varied, n = 4
        ({"label": "ŷ = z³₁ (linear output)", "n": 4, "output": "identity"},
         {"label": "ŷ = σ(z³₁)", "n": 4, "output": "sigmoid"}),
        _d003_three_layer,
        condition=("the output unit is linear, ŷ = z³₁", lambda s: s["output"] == "identity"),
        corrected="with ŷ = σ(z³₁) (as in the document's one- and two-layer slides), multiply by the output factor "
                  "∂ŷ/∂z³₁ = σ'(z³₁): 1/n (ŷ − y) σ'(z³₁) [Σᵢ w³₁ᵢ σ'(z²ᵢ) w²ᵢ₁] σ'(z¹₁) x₁",
    ),
    Derivation(
        "004-softmax-cross-entropy", "004",
        "∂L/∂z³ = a³ − t for a³ = softmax(z³), L = −Σ t log a³",
        # read as: 3 samples × 4 classes, summed loss; targets varied
        ({"label": "one-hot t", "targets": "one-hot"}, {"label": "t a distribution", "targets": "distribution"},
         {"label": "t not summing to 1", "targets": "unnormalised"}),
        _d004_shortcut,
        condition=("each sample's targets sum to 1 (one-hot labels, as in the example, or any distribution)",
                   lambda s: s["targets"] != "unnormalised"),
        corrected="∂L/∂z³_j = a³_j Σₖ tₖ − t_j",
    ),
    Derivation(
        "004-output-weights", "004",
        "∂L/∂w²_jk = (a³_j − t_j) · a²_k",
        # read as: x (3) → sigmoid (4) → softmax (3), biases, one-hot t
        ({"label": "one-hot t"},), _d004_output_weights,
    ),
    Derivation(
        "004-hidden-weights", "004",
        "∂L/∂a²_k = Σ_j (a³_j − t_j) w²_jk;  ∂L/∂w¹_kl = ∂L/∂a²_k · a²_k(1 − a²_k) · x_l",
        # read as: x (3) → sigmoid (4) → softmax (3), biases, one-hot t
        ({"label": "one-hot t"},), _d004_hidden_weights,
    ),
    Derivation(
        "cnn-input-gradient", "textbook",
        "δˡ⁻¹ = conv(δˡ, rot180(K), 'full')  (per channel pair, summed over the output channels)",
        # read as: x (1, 2, 7, 7) → conv2d with 3 kernels of 3×3, L = Σ z·δ; stride and padding varied
        _CONV_SETTINGS, _conv_input_rule,
        condition=("stride 1 and no padding", lambda s: s["stride"] == 1 and s["padding"] == 0),
        corrected="spread δ by the stride (s − 1 zeros between entries), take conv(·, rot180(K), 'full'), pad "
                  "with zeros to the padded input's size (rows the last window never reached), then crop the "
                  "padding p from every side",
    ),
    Derivation(
        "cnn-kernel-gradient", "textbook",
        "∂L/∂K = conv(x, δ, 'valid')  (per channel pair)",
        # read as: x (1, 2, 7, 7) → conv2d with 3 kernels of 3×3, L = Σ z·δ; stride and padding varied
        _CONV_SETTINGS, _conv_kernel_rule,
        condition=("stride 1 and no padding", lambda s: s["stride"] == 1 and s["padding"] == 0),
        corrected="conv(x padded by p, δ spread by the stride, 'valid'), keeping the first kh × kw entries",
    ),
    Derivation(
        "batchnorm-backward", "textbook",
        "∂L/∂x = γ/(mσ) · (m δ − Σδ − x̂ Σ(δ x̂)),  σ = √(σ²_B + ε), over the m values of each channel "
        "(Ioffe & Szegedy, 2015)",
        # read as: batch_norm with γ, β, ε = 1e-5; the batch's shape and the mode varied
        _BATCH_NORM_SETTINGS, _batch_norm_rule,
        condition=("the layer normalises with the batch's statistics (training mode)", lambda s: s["training"]),
        corrected="in evaluation mode the statistics are constants: ∂L/∂x = γ δ / √(running_var + ε)",
    ),
    Derivation(
        "rnn-bptt", "textbook",
        "∂L/∂W_hh = Σ_t δ_t h_(t−1)ᵀ,  δ_t = (∂L/∂h_t + W_hhᵀ δ_(t+1)) ⊙ f'(z_t)",
        # read as: tanh RNN, 3 hidden units, a loss term at every step, h_0 random; the number of steps varied
        _BPTT_STEPS, _bptt_sum,
    ),
    Derivation(
        "rnn-last-step-only", "textbook",
        "∂L/∂W_hh = δ_T h_(T−1)ᵀ  (the last step's term only)",
        # read as: tanh RNN, 3 hidden units, a loss term at every step, h_0 random; the number of steps varied
        _BPTT_STEPS, _bptt_last_term,
        condition=("the sequence has a single step, T = 1", lambda s: s["steps"] == 1),
        corrected="sum over every step: Σ_t δ_t h_(t−1)ᵀ, δ_t carrying W_hhᵀ δ_(t+1) back through the hidden state",
    ),
    Derivation(
        "rnn-truncated-bptt", "textbook",
        "truncated: ∂L̃/∂W_hh = Σ_t δ̃_t h_(t−1)ᵀ with the W_hhᵀ δ̃_(t+1) term dropped at every chunk boundary",
        # read as: tanh RNN, T = 6, the state detached every k steps (as torch's detach() between chunks)
        _BPTT_CHUNKS, _bptt_truncated,
    ),
    Derivation(
        "batchnorm-backward-without-variance-term", "textbook",
        "∂L/∂x = γ/σ · (δ − mean(δ))  (the mean's path only, as if σ_B did not depend on x)",
        # read as: batch_norm with γ, β, ε = 1e-5; the batch's shape and the mode varied
        _BATCH_NORM_SETTINGS, lambda setting, rng: _batch_norm_rule(setting, rng, variance_term=False),
        corrected="add the variance's path: γ/(mσ) · (m δ − Σδ − x̂ Σ(δ x̂)) in training mode; "
                  "γ δ / √(running_var + ε) in evaluation mode",
    ),
)


def evaluate_all(draws: int = DRAWS) -> list[DerivationResult]:
    return [evaluate(d, k, draws) for k, d in enumerate(DERIVATIONS)]


def frame_of(results: list[DerivationResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"id": r.id, "document": r.document, "statement": r.statement, "verdict": r.verdict,
          "corrected": r.corrected, "holds_in": "; ".join(r.holds_in), "fails_in": "; ".join(r.fails_in),
          "worst_rel": max(r.worst.values()) if r.worst else 0.0} for r in results],
        columns=["id", "document", "statement", "verdict", "corrected", "holds_in", "fails_in", "worst_rel"])


def claim_frame(scenarios=None) -> pd.DataFrame:
    """The claims of ``scenarios`` (default: the built-in worked examples), judged by
    ``reports.textbook.claims``, as rows of ``frame_of``'s columns: id ``<example>:claim[k]``, the document's
    number from the file's ``[source] document`` ("example" for a source other than a seed document), ``holds_in`` the data sets, ``fails_in`` the first draw
    that breaks it."""
    rows = []
    for scenario in worked_examples() if scenarios is None else scenarios:
        document = str(scenario.source.get("document", ""))[:3]
        if not document.isdigit():  # a seed document's number ("003"); any other source is the project's own
            document = "example"
        for k, result in enumerate(check_claims(scenario)):
            data = "the file's data" + (f" and {result.draws} seeded draws" if result.draws else "")
            broken = "" if result.verdict == CLAIM_HOLDS else \
                ("the file's data" if result.broken_at == 0 else f"draw {result.broken_at}") + f": {result.note}"
            rows.append({"id": f"{scenario.name}:claim[{k}]", "document": document, "statement": result.statement,
                         "verdict": result.verdict, "corrected": "",
                         "holds_in": data if result.verdict == CLAIM_HOLDS else "", "fails_in": broken,
                         "worst_rel": result.worst_rel})
    return pd.DataFrame(rows, columns=["id", "document", "statement", "verdict", "corrected", "holds_in",
                                       "fails_in", "worst_rel"])


def derivation_verdicts() -> pd.DataFrame:
    """``frame_of(evaluate_all())`` followed by the built-in claims (``claim_frame``): deterministic, so
    computed once per process; each caller gets a copy."""
    return _derivation_verdicts().copy()


@functools.lru_cache(maxsize=1)
def _derivation_verdicts() -> pd.DataFrame:
    return pd.concat([frame_of(evaluate_all()), claim_frame()], ignore_index=True)


def derivation_text(results: list[DerivationResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"  {r.id:30} {r.verdict}")
        lines.append(f"      {r.statement}")
        if r.corrected:
            lines.append(f"      corrected: {r.corrected}")
        if r.inconsistent:
            lines.append(f"      INCONSISTENT: {r.inconsistent}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(derivation_text(evaluate_all()))
