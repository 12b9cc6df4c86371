"""Batch, layer and group normalisation, with their hand-derived backward beside their forward.

All three normalise a group of m numbers x₁ … x_m to zero mean and unit variance
and then scale and shift them:

    μ = (1/m) Σ x_k,   σ² = (1/m) Σ (x_k − μ)²   (the biased variance),   σ = √(σ² + ε)
    x̂_k = (x_k − μ) / σ,   y_k = γ x̂_k + β

BatchNorm's group is one feature (channel) across the batch: m = N for
(N, F) input, m = N·H·W for (N, C, H, W); γ and β have one entry per
channel. LayerNorm's group is one sample's trailing ``dims`` dimensions;
γ and β have the shape of those dimensions. GroupNorm's group is one
sample's C/G consecutive channels with all their positions; γ and β have one
entry per channel.

Backward (Ioffe & Szegedy 2015, §3). With δ = ∂L/∂y and δx̂ = ∂L/∂x̂ = γ δ:

    ∂L/∂γ = Σ δ · x̂,     ∂L/∂β = Σ δ          (summed over everything γ is shared by)

x_k reaches the loss three ways — through x̂_k directly, through μ, and
through σ² — and

    ∂x̂_j/∂x_k = (1/σ) (1[j = k] − 1/m − x̂_j x̂_k / m)

because ∂μ/∂x_k = 1/m and ∂σ/∂x_k = x̂_k / m. Summing δx̂_j times that over j:

    ∂L/∂x_k = 1/(m σ) · ( m δx̂_k − Σ_j δx̂_j − x̂_k Σ_j δx̂_j x̂_j )

— the three terms: the direct path, the mean's (every x moves μ equally)
and the variance's (x_k moves σ in proportion to x̂_k). All three use this
formula (GroupNorm writes it with means: (1/σ)(δx̂ − mean(δx̂) − x̂ mean(δx̂ x̂))); for BatchNorm γ is constant over the group and factors out:
γ/(m σ) · (m δ − Σ δ − x̂ Σ δ x̂).

Evaluation-mode BatchNorm normalises with fixed running statistics instead,
so μ and σ do not depend on x and only the direct term remains:
∂L/∂x = γ δ / √(running_var + ε).

dtype: every array keeps the input's dtype (constants are Python floats).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, copied, register_layer


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float):
    """(x̂, 1/σ, μ, σ²_biased) over ``axes``, each statistic kept with size-1 axes for broadcasting."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=axes, keepdims=True)
    inverse_std = 1.0 / np.sqrt(variance + eps)
    return centred * inverse_std, inverse_std, mean, variance


def per_channel_sum(a: np.ndarray) -> np.ndarray:
    """Σ over every axis but the channel axis 1 of (N, C) or (N, C, H, W): (C,).

    Each sample's contiguous H·W plane is summed first (NumPy's pairwise sum),
    then the N partial sums: one pass over a, where a reduction over axes
    (0, 2, 3) at once walks the array in a strided order."""
    return a.reshape(a.shape[0], a.shape[1], -1).sum(axis=2).sum(axis=0)


def per_channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ a·b over every axis but the channel axis 1: (C,), without building the product array."""
    rows_a, rows_b = a.reshape(a.shape[0], a.shape[1], -1), b.reshape(b.shape[0], b.shape[1], -1)
    return np.einsum("ncm,ncm->nc", rows_a, rows_b).sum(axis=0)


@register_layer("batch_norm")
class BatchNorm(Learned):
    """y = γ (x − μ)/√(σ² + ε) + β per channel over (N, F) or (N, C, H, W).

    Parameters ``weight`` γ and ``bias`` β, shape (C,), or both None (not
    affine). Buffers ``running_mean`` and ``running_var`` (C,), updated in
    place by every training-mode forward (PyTorch's rule, momentum m):

        running_mean ← (1 − m)·running_mean + m·μ
        running_var  ← (1 − m)·running_var  + m·σ²·M/(M − 1)   (the unbiased variance, M values per channel)

    while the biased σ² normalises. Given as None they start as 0 and 1
    (PyTorch's defaults), created at the first forward with the input's dtype.
    ``training=False`` normalises with the running statistics and leaves them alone.
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "BatchNorm":
        """The layer for a scenario's ``batch_norm`` entry, its arrays copied into ``dtype``."""
        options = spec.params
        return cls(copied(spec.weight, dtype), copied(spec.bias, dtype), eps=options["eps"], momentum=options["momentum"],
                   training=options["training"], running_mean=copied(spec.buffers["running_mean"], dtype),
                   running_var=copied(spec.buffers["running_var"], dtype))

    def __init__(self, weight: np.ndarray | None = None, bias: np.ndarray | None = None, eps: float = 1e-5,
                 momentum: float = 0.1, training: bool = True, running_mean: np.ndarray | None = None,
                 running_var: np.ndarray | None = None):
        if (weight is None) != (bias is None):
            raise ValueError("batch_norm: give both weight (γ) and bias (β), or neither (affine = false)")
        if weight is not None and (weight.ndim != 1 or bias.shape != weight.shape):
            raise ValueError(f"batch_norm: weight and bias must both be (C,), got {weight.shape} and {bias.shape}")
        self.weight, self.bias = weight, bias
        self.eps, self.momentum, self.training = float(eps), float(momentum), bool(training)
        self.running_mean, self.running_var = running_mean, running_var
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C) or (N, C, H, W) → y, same shape; caches x̂ and 1/σ for backward."""
        if x.ndim not in (2, 4):
            raise ValueError(f"batch_norm expects (N, F) or (N, C, H, W) input, got shape {x.shape}")
        channels = x.shape[1]
        if self.weight is not None and self.weight.shape != (channels,):
            raise ValueError(f"batch_norm: weight has shape {self.weight.shape}, the input has {channels} channels")
        if self.running_mean is None:
            self.running_mean = np.zeros(channels, dtype=x.dtype)
        if self.running_var is None:
            self.running_var = np.ones(channels, dtype=x.dtype)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)         # everything but the channel
        per_channel = (1, channels) + (1,) * (x.ndim - 2)  # a (C,) vector broadcast against x
        count = x.size // channels                         # M values per channel
        if self.training:
            if count == 1:
                raise ValueError(f"batch_norm in training mode needs more than 1 value per channel (PyTorch raises "
                                 f"too): input of shape {x.shape}")
            # μ, σ² and x̂ in four passes over the data; x − μ is normalised in its own buffer. With the
            # affine output, on the bench's 64×32×32×32 input, one thread: 2.4 ms in float32 (5.7 ms in
            # float64), against 3.0 ms (7.3 ms) for the textbook's separate centred, squared and divided arrays.
            mean = per_channel_sum(x) / count
            normalised = x - mean.reshape(per_channel)
            variance = per_channel_dot(normalised, normalised) / count
            self.inverse_std = (1.0 / np.sqrt(variance + self.eps)).reshape(per_channel)
            normalised *= self.inverse_std
            self.normalised = normalised
            momentum = self.momentum
            self.running_mean[...] = momentum * mean + (1.0 - momentum) * self.running_mean
            unbiased = variance * (count / (count - 1))
            self.running_var[...] = momentum * unbiased + (1.0 - momentum) * self.running_var
        else:
            self.inverse_std = (1.0 / np.sqrt(self.running_var + self.eps)).reshape(per_channel)
            self.normalised = (x - self.running_mean.reshape(per_channel)) * self.inverse_std
        self.axes, self.per_channel, self.count = axes, per_channel, count
        if self.weight is None:
            return self.normalised
        output = self.normalised * self.weight.reshape(per_channel)
        output += self.bias.reshape(per_channel)
        return output

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂y → ∂L/∂x; stores ∂L/∂γ = Σ δ·x̂ and ∂L/∂β = Σ δ (per channel).

        Training: ∂L/∂x = γ/(M σ) · (M δ − Σ δ − x̂ Σ δ x̂), sums over the M values of
        each channel (module docstring). Eval: ∂L/∂x = γ δ / √(running_var + ε).
        """
        per_channel, count = self.per_channel, self.count
        delta_sum = per_channel_sum(delta)                                      # Σ δ
        delta_dot_normalised = per_channel_dot(delta, self.normalised)          # Σ δ x̂
        if self.weight is not None:
            self.weight_grad = delta_dot_normalised
            self.bias_grad = delta_sum
        if not input_grad:
            return None
        scale = self.inverse_std if self.weight is None else self.weight.reshape(per_channel) * self.inverse_std
        if not self.training:
            return delta * scale
        # γ/(M σ) · (M δ − Σ δ − x̂ Σ δ x̂), expanded per channel so that the big arrays take four passes:
        # scale·δ − x̂ · (scale·Σ δ x̂ / M) − scale·Σ δ / M. Same input as the forward: the whole backward
        # takes 2.5 ms in float32 (5.6 ms in float64), against 3.2 ms (6.9 ms) written as the line above.
        input_gradient = delta * scale
        input_gradient -= self.normalised * (scale * delta_dot_normalised.reshape(per_channel) / count)
        input_gradient -= scale * delta_sum.reshape(per_channel) / count
        return input_gradient

    def __repr__(self) -> str:
        return (f"BatchNorm(eps={self.eps}, momentum={self.momentum}, training={self.training}, "
                f"affine={self.weight is not None})")


@register_layer("layer_norm")
class LayerNorm(Learned):
    """y = γ (x − μ)/√(σ² + ε) + β, statistics of each sample over its trailing ``dims`` dimensions.

    Parameters ``weight`` γ and ``bias`` β of shape x.shape[-dims:], or both
    None (elementwise_affine = false).
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "LayerNorm":
        """The layer for a scenario's ``layer_norm`` entry, its arrays copied into ``dtype``."""
        return cls(spec.params["dims"], copied(spec.weight, dtype), copied(spec.bias, dtype), eps=spec.params["eps"])

    def __init__(self, dims: int = 1, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                 eps: float = 1e-5):
        if (weight is None) != (bias is None):
            raise ValueError("layer_norm: give both weight (γ) and bias (β), or neither (elementwise_affine = false)")
        if weight is not None and (weight.ndim != dims or bias.shape != weight.shape):
            raise ValueError(f"layer_norm: weight and bias must both have the {dims} normalised dimensions, "
                             f"got {weight.shape} and {bias.shape}")
        if dims < 1:
            raise ValueError(f"layer_norm: dims must be ≥ 1, got {dims}")
        self.dims, self.weight, self.bias, self.eps = int(dims), weight, bias, float(eps)
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (…, *normalised shape) → y, same shape; caches x̂ and 1/σ for backward."""
        if x.ndim <= self.dims:
            raise ValueError(f"layer_norm over {self.dims} trailing dimensions needs a batch dimension in front, "
                             f"got input of shape {x.shape}")
        if self.weight is not None and self.weight.shape != x.shape[-self.dims:]:
            raise ValueError(f"layer_norm: weight has shape {self.weight.shape}, the input's last {self.dims} "
                             f"dimensions are {x.shape[-self.dims:]}")
        self.axes = tuple(range(x.ndim - self.dims, x.ndim))
        self.normalised, self.inverse_std, _, _ = _normalise(x, self.axes, self.eps)
        if self.weight is None:
            return self.normalised
        return self.normalised * self.weight + self.bias

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂y → ∂L/∂x = 1/(m σ) · (m δx̂ − Σ δx̂ − x̂ Σ δx̂ x̂) with δx̂ = γ δ, sums over each
        sample's m normalised values; stores ∂L/∂γ = Σ_batch δ·x̂ and ∂L/∂β = Σ_batch δ."""
        batch_axes = tuple(range(delta.ndim - self.dims))
        if self.weight is not None:
            self.weight_grad = (delta * self.normalised).sum(axis=batch_axes)
            self.bias_grad = delta.sum(axis=batch_axes)
        if not input_grad:
            return None
        delta_normalised = delta if self.weight is None else delta * self.weight   # δx̂ = ∂L/∂x̂
        count = self.normalised[(0,) * len(batch_axes)].size                       # m
        delta_sum = delta_normalised.sum(axis=self.axes, keepdims=True)
        delta_dot_normalised = (delta_normalised * self.normalised).sum(axis=self.axes, keepdims=True)
        return (self.inverse_std / count) * (count * delta_normalised - delta_sum
                                             - self.normalised * delta_dot_normalised)

    def __repr__(self) -> str:
        return f"LayerNorm(dims={self.dims}, eps={self.eps}, elementwise_affine={self.weight is not None})"


@register_layer("group_norm")
class GroupNorm(Learned):
    """y = γ_c (x − μ_g)/√(σ²_g + ε) + β_c: statistics of each sample's group of C/G channels.

    x is (N, C, …) — (N, C) features or (N, C, H, W) images — and its C channels
    split into G = ``num_groups`` consecutive groups; group g of sample n holds
    the m = (C/G)·(positions) numbers of its channels (torch.nn.functional.group_norm):

        μ_g = (1/m) Σ x,   σ²_g = (1/m) Σ (x − μ_g)²   (biased),   σ = √(σ²_g + ε)
        x̂ = (x − μ_g) / σ,   y = γ_c x̂ + β_c   (γ, β of shape (C,), or both None: affine = false)

    Backward, with δ = ∂L/∂y and δx̂ = ∂L/∂x̂ = γ_c δ (the module docstring's
    derivation, over each group instead of each channel):

        ∂L/∂γ_c = Σ_(n, positions) δ x̂,    ∂L/∂β_c = Σ_(n, positions) δ
        δx = (1/σ) (δx̂ − mean_g(δx̂) − x̂ · mean_g(δx̂ · x̂))

    — the direct path, the group mean's and the group variance's.
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "GroupNorm":
        """The layer for a scenario's ``group_norm`` entry, its arrays copied into ``dtype``."""
        return cls(spec.params["num_groups"], copied(spec.weight, dtype), copied(spec.bias, dtype),
                   eps=spec.params["eps"])

    def __init__(self, num_groups: int, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                 eps: float = 1e-5):
        if (weight is None) != (bias is None):
            raise ValueError("group_norm: give both weight (γ) and bias (β), or neither (affine = false)")
        if weight is not None and (weight.ndim != 1 or bias.shape != weight.shape):
            raise ValueError(f"group_norm: weight and bias must both be (C,), got {weight.shape} and {bias.shape}")
        self.num_groups, self.weight, self.bias, self.eps = int(num_groups), weight, bias, float(eps)
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, …) → y, same shape; caches x̂ (N, G, m) and 1/σ (N, G, 1) for backward."""
        if x.ndim < 2 or x.shape[1] % self.num_groups:
            raise ValueError(f"group_norm: {self.num_groups} groups must divide the channels of (N, C, …), "
                             f"got input of shape {x.shape}")
        batch, channels = x.shape[:2]
        self.per_channel = (1, channels) + (1,) * (x.ndim - 2)   # a (C,) vector broadcast against x
        grouped = x.reshape(batch, self.num_groups, -1)         # (N, G, m)
        self.normalised, self.inverse_std, _, _ = _normalise(grouped, (2,), self.eps)
        normalised = self.normalised.reshape(x.shape)
        if self.weight is None:
            return normalised
        return normalised * self.weight.reshape(self.per_channel) + self.bias.reshape(self.per_channel)

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂y → δx = (1/σ)(δx̂ − mean_g(δx̂) − x̂·mean_g(δx̂·x̂)) per group, δx̂ = γ_c δ;
        stores ∂L/∂γ = Σ δ·x̂ and ∂L/∂β = Σ δ per channel."""
        normalised = self.normalised.reshape(delta.shape)                              # x̂
        if self.weight is not None:
            self.weight_grad = per_channel_dot(delta, normalised)                     # Σ δ x̂
            self.bias_grad = per_channel_sum(delta)                                   # Σ δ
        if not input_grad:
            return None
        delta_normalised = delta if self.weight is None else delta * self.weight.reshape(self.per_channel)
        grouped = delta_normalised.reshape(self.normalised.shape)                     # δx̂ (N, G, m)
        mean_delta = grouped.mean(axis=2, keepdims=True)                              # mean_g(δx̂)
        mean_delta_normalised = (grouped * self.normalised).mean(axis=2, keepdims=True)  # mean_g(δx̂ · x̂)
        input_gradient = self.inverse_std * (grouped - mean_delta - self.normalised * mean_delta_normalised)
        return input_gradient.reshape(delta.shape)

    def __repr__(self) -> str:
        return f"GroupNorm(num_groups={self.num_groups}, eps={self.eps}, affine={self.weight is not None})"


__all__ = ["BatchNorm", "GroupNorm", "LayerNorm"]
