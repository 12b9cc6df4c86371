"""The 2-D convolution z = W ⋆ x + b, with its hand-derived backward beside its forward.

Layouts are PyTorch's: x is (N, C, H, W), the kernel W is
(out_channels, in_channels / groups, kh, kw), b is (out_channels,), and
z is (N, out_channels, Ho, Wo). What deep learning calls convolution is a
cross-correlation (the kernel is not turned): with stride s, padding p and
dilation d, and x̃ the input with p zeros on every side,

    z[n, o, i, j] = b[o] + Σ_{c, u, v} W[o, c, u, v] · x̃[n, c, i·s + u·d, j·s + v·d]

where c runs over the input channels of o's group (``groups`` splits the C
input and the out_channels output channels into that many independent
convolutions), and

    Ho = ⌊(H + 2p − d·(kh − 1) − 1) / s⌋ + 1        (likewise Wo).

Forward (im2col, as in cs231n and numpy-ml): every receptive field
x̃[n, :, i·s + u·d, j·s + v·d] is laid out as one column of a matrix, so the
whole layer is one matrix product per group: W (out/groups,
C/groups·kh·kw) times the columns (C/groups·kh·kw, N·Ho·Wo). The columns are
built by a strided view on the padded input (no copy) and one copy into
contiguous memory; there is no Python loop over pixels, kernel offsets or
groups. The batch is processed a few samples at a time (``batch_chunks``) so
that the columns — kh·kw times the input — stay in the CPU cache between
being written and being multiplied.

Backward receives δ = ∂L/∂z (N, out, Ho, Wo). By the chain rule on the sum above:

    ∂L/∂b[o]          = Σ_{n,i,j} δ[n, o, i, j]
    ∂L/∂W[o, c, u, v] = Σ_{n,i,j} δ[n, o, i, j] · x̃[n, c, i·s + u·d, j·s + v·d]
                      = (δ as a matrix) · (the forward's columns)ᵀ — the textbook's
                        ∂L/∂k = conv(x, δ, 'valid'), summed over the batch
    ∂L/∂x̃[n, c, h, w] = Σ_{o, u, v, i, j : i·s + u·d = h, j·s + v·d = w} δ[n, o, i, j] · W[o, c, u, v]

The last line is the textbook rule δˡ = conv(δˡ⁺¹, rot180(W), 'full'), see
``Conv2d.backward`` for why and for what stride, dilation and padding change.

The layer keeps references to its parameter arrays (it never copies them), so an
optimizer that updates ``weight`` and ``bias`` in place updates the layer.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, copied, register_layer
from numpy.lib.stride_tricks import as_strided


def pair(value) -> tuple[int, int]:
    """PyTorch's int-or-pair argument: 2 → (2, 2), [1, 3] → (1, 3)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Ho = ⌊(H + 2p − d·(k − 1) − 1) / s⌋ + 1: the number of windows that fit in the padded input."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


COLUMN_BYTES = 2 ** 21
"""Size of the columns built at once (2 MiB, an L2-sized block). Measured on the
bench's 64×32×32×32 ⊛ 32×32×3×3 layer, one thread (median of 6, interleaved):
the forward took 17.6 ms in float32 (37.9 ms in float64) in 2 MiB chunks,
24.0 ms (55.4 ms) with the columns of the whole batch at once."""


def batch_chunks(n: int, bytes_per_sample: int):
    """Slices of the batch whose columns take about ``COLUMN_BYTES`` (at least one sample each)."""
    step = max(1, COLUMN_BYTES // max(1, bytes_per_sample))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def im2col(x_padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """The receptive fields of every output pixel, as columns.

    x̃ (N, C, H̃, W̃) → columns (C, kh, kw, N, Ho, Wo), contiguous, with
    columns[c, u, v, n, i, j] = x̃[n, c, i·s + u·d, j·s + v·d]:
    reshaped to (groups, C/groups·kh·kw, N·Ho·Wo), each group's columns are
    one matrix, and the layer one matrix product per group for all N samples.
    """
    n, c, _, _ = x_padded.shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    sn, sc, sy, sx = x_padded.strides
    windows = as_strided(x_padded, shape=(c, kh, kw, n, ho, wo),
                         strides=(sc, dh * sy, dw * sx, sn, sh * sy, sw * sx), writeable=False)
    return np.ascontiguousarray(windows)


def full_convolution(delta: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...], stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> np.ndarray:
    """∂L/∂x = conv(δ spread by the stride, rot180(W), 'full'), with the padding cropped.

    Why. An input pixel x̃[h, w] was read by every window that covered it,
    each time multiplied by the kernel entry that lay on it: window (i, j)
    puts W[o, c, u, v] on x̃[n, c, i·s + u·d, j·s + v·d]. So it receives

        ∂L/∂x̃[n, c, h, w] = Σ_{o, u, v} W[o, c, u, v] · δ̂[n, o, h − u·d, w − v·d]

    where δ̂ is δ spread by the stride: δ̂[i·s, j·s] = δ[i, j] and zero in
    between (s − 1 zeros inserted between neighbouring entries, because
    window i starts at pixel i·s), and zero outside. Seen from the pixel, the
    kernel index runs backwards (h − u·d): that is a convolution in the
    mathematical sense, which is the forward's cross-correlation with the
    kernel turned by 180° (and, per group, with in and out channels swapped:
    W[o, c] is now read as mapping o to c). Every detail of the options is in
    that one line:

    * stride: only the positions h − u·d that are multiples of s carry δ;
    * dilation: the turned kernel is dilated like the forward one (steps of d);
    * full: h runs over every pixel of x̃, also those near the border covered
      by fewer than kh·kw windows — the convolution of δ̂ zero-padded by the
      kernel's reach d·(k − 1) on both sides. Pixels after the last window
      (when the windows stop before the end of x̃, e.g. stride > kernel) were
      read by no window and get 0;
    * padding: this is the gradient for the padded input x̃; x's is x̃'s with
      the p-wide border cropped away (the padding zeros are constants).

    How (as fast as the forward). Two evaluation orders of that sum, chosen by
    which lays out fewer numbers (both are one matrix product per group):

    * ``spread_weighted_delta`` (any stride): first the channel sum
      Σ_o W[o, c, u, v] · δ[n, o, i, j] for every kernel offset, on the
      compact δ — C·kh·kw·N·Ho·Wo numbers; then, for each of the kh·kw kernel
      offsets (u, v), those terms are added at h = i·s + u·d, w = j·s + v·d —
      the shifted, stride-spread copy of δ that the convolution sums. It never
      multiplies the inserted zeros.
    * ``correlate_with_turned_kernel`` (stride 1, p ≤ d·(k − 1)): the line
      above literally — im2col of δ zero-padded by d·(k − 1) − p, one matrix
      product with the turned kernel, giving x's gradient without the crop:
      out·kh·kw·N·H·W numbers. Its product has the forward's inner dimension
      (out·kh·kw instead of out), which BLAS runs faster, and no strided adds
      follow.

    Measured (one thread, min of 9, batch 64): on the bench's 32×32×32 ⊛
    32×32×3×3, padding 1 (equal counts), the correlation took 18 ms in float32
    (39 ms in float64) against 24 ms (50 ms) for the spread; on LeNet's second
    layer (6×12×12 → 16@5×5, 6× more numbers laid out by the correlation) the
    spread is 2.2–2.5× faster.
    """
    n, channels, height, width = input_shape
    out_channels, _, kh, kw = weight.shape
    _, _, out_h, out_w = delta.shape
    (ph, pw), (dh, dw) = padding, dilation
    correlation_fits = stride == (1, 1) and ph <= dh * (kh - 1) and pw <= dw * (kw - 1)
    if correlation_fits and out_channels * height * width <= channels * out_h * out_w:
        return correlate_with_turned_kernel(delta, weight, input_shape, padding, dilation, groups)
    return spread_weighted_delta(delta, weight, input_shape, stride, padding, dilation, groups)


def correlate_with_turned_kernel(delta: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...],
                                 padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> np.ndarray:
    """∂L/∂x for stride 1: δ̂ (δ zero-padded by d·(k − 1) − p) correlated with the turned kernel.

    ∂L/∂x[n, c, h, w] = Σ_{o, u, v} W[o, c, kh − 1 − u, kw − 1 − v] · δ̂[n, o, h + u·d, w + v·d]
    (substitute u → kh − 1 − u in ``full_convolution``'s sum): the forward's
    im2col and matrix product, on δ̂ instead of x̃, with W[o, c] read as mapping o to c.
    """
    n, channels, height, width = input_shape
    out_channels, in_per_group, kh, kw = weight.shape
    (ph, pw), (dh, dw) = padding, dilation
    reach_h, reach_w = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    delta_padded = np.pad(delta, ((0, 0), (0, 0), (reach_h, reach_h), (reach_w, reach_w)))
    # turned[g, c, (o, u, v)] = W[o, c, kh − 1 − u, kw − 1 − v] for o and c in group g: (G, C/G, out/G·kh·kw)
    turned = (weight[:, :, ::-1, ::-1].reshape(groups, out_channels // groups, in_per_group, kh, kw)
              .transpose(0, 2, 1, 3, 4).reshape(groups, in_per_group, -1))
    input_gradient = np.empty(input_shape, dtype=delta.dtype)
    for batch in batch_chunks(n, delta.itemsize * out_channels * kh * kw * height * width):
        columns = im2col(delta_padded[batch], (kh, kw), (1, 1), dilation, (height, width))  # (out, kh, kw, n, H, W)
        product = np.matmul(turned, columns.reshape(groups, -1, columns.shape[3] * height * width))
        input_gradient[batch] = product.reshape(channels, -1, height, width).transpose(1, 0, 2, 3)
    return input_gradient


def spread_weighted_delta(delta: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...],
                          stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                          groups: int) -> np.ndarray:
    """∂L/∂x for any stride: Σ_o W[o, c, u, v] · δ[n, o, i, j] per kernel offset, added at x̃[i·s + u·d, j·s + v·d].

    (Written as an im2col correlation of the stride-spread and padded δ with
    the turned kernel, LeNet's two layers took 2.5–3× as long, float64, one
    thread: it multiplies the inserted zeros.)
    """
    n, channels, height, width = input_shape
    out_channels, in_per_group, kh, kw = weight.shape
    _, _, out_h, out_w = delta.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kernel_columns = weight.reshape(groups, out_channels // groups, in_per_group * kh * kw).transpose(0, 2, 1)
    input_gradient_padded = np.zeros((n, channels, height + 2 * ph, width + 2 * pw), dtype=delta.dtype)
    for batch in batch_chunks(n, delta.itemsize * channels * kh * kw * out_h * out_w):
        delta_rows = delta[batch].transpose(1, 0, 2, 3).reshape(groups, out_channels // groups, -1)
        # Σ_o W[o, c, u, v] · δ[n, o, i, j], per group: (G, C/G·kh·kw, out/G) @ (G, out/G, n·Ho·Wo)
        weighted = np.matmul(kernel_columns, delta_rows).reshape(channels, kh, kw, -1, out_h, out_w)
        # Σ_{u,v}: term (u, v) lands at x̃[i·s + u·d, j·s + v·d] — δ spread by the stride, shifted by the offset.
        gradient = input_gradient_padded[batch].transpose(1, 0, 2, 3)  # (C, n, H̃, W̃), a view
        for u in range(kh):
            for v in range(kw):
                gradient[:, :, u * dh:u * dh + sh * (out_h - 1) + 1:sh,
                         v * dw:v * dw + sw * (out_w - 1) + 1:sw] += weighted[:, u, v]
    # Crop the padding.
    return input_gradient_padded[:, :, ph:ph + height, pw:pw + width].copy()


@register_layer("conv2d")
class Conv2d(Learned):
    """z = W ⋆ x + b over (N, C, H, W) images.  Parameters ``weight`` (out, C/groups, kh, kw) and ``bias`` (out,) or None."""

    @classmethod
    def from_spec(cls, spec, dtype) -> "Conv2d":
        """The layer for a scenario's ``conv2d`` entry, its arrays copied into ``dtype``."""
        options = spec.params
        return cls(copied(spec.weight, dtype), copied(spec.bias, dtype), stride=options["stride"],
                   padding=options["padding"], dilation=options["dilation"], groups=options["groups"])

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups: int = 1):
        if weight.ndim != 4:
            raise ValueError(f"conv2d weight must be (out_channels, in_channels / groups, kh, kw), got shape {weight.shape}")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"conv2d out_channels {weight.shape[0]} is not divisible by groups {groups}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"conv2d bias must have shape ({weight.shape[0]},), got {bias.shape}")
        self.weight = weight
        self.bias = bias
        self.stride, self.padding, self.dilation = pair(stride), pair(padding), pair(dilation)
        self.groups = int(groups)
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"conv2d needs stride ≥ 1, dilation ≥ 1, padding ≥ 0; got stride {self.stride}, "
                             f"dilation {self.dilation}, padding {self.padding}")
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) → z = W ⋆ x + b (N, out, Ho, Wo); caches x̃ (backward rebuilds its columns for ∂L/∂W)."""
        n, channels, height, width = x.shape
        if channels != self.weight.shape[1] * self.groups:
            raise ValueError(f"conv2d expects {self.weight.shape[1] * self.groups} input channels "
                             f"(in_channels / groups = {self.weight.shape[1]}, groups = {self.groups}), got {channels}")
        ph, pw = self.padding
        self.x_padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        self.input_shape = x.shape
        out_channels, _, kh, kw = self.weight.shape
        self.out_size = (output_size(height, kh, self.stride[0], ph, self.dilation[0]),
                         output_size(width, kw, self.stride[1], pw, self.dilation[1]))
        if min(self.out_size) < 1:
            raise ValueError(f"conv2d kernel {(kh, kw)} (dilation {self.dilation}) does not fit the padded input "
                             f"{self.x_padded.shape[2:]}")
        groups = self.groups
        kernel_rows = self.weight.reshape(groups, out_channels // groups, -1)  # (G, out/G, C/G·kh·kw)
        z = np.empty((n, out_channels, *self.out_size), dtype=x.dtype)
        for batch in self.batches():
            z_batch = np.matmul(kernel_rows, self.columns(batch))             # (G, out/G, n·Ho·Wo)
            z[batch] = z_batch.reshape(out_channels, -1, *self.out_size).transpose(1, 0, 2, 3)
        if self.bias is not None:
            z += self.bias[:, None, None]
        return z

    def batches(self) -> list[slice]:
        _, channels, _, _ = self.input_shape
        _, _, kh, kw = self.weight.shape
        return batch_chunks(self.input_shape[0],
                            self.x_padded.itemsize * channels * kh * kw * self.out_size[0] * self.out_size[1])

    def columns(self, batch: slice) -> np.ndarray:
        """The im2col columns of samples ``batch``: (G, C/G·kh·kw, n·Ho·Wo)."""
        _, _, kh, kw = self.weight.shape
        columns = im2col(self.x_padded[batch], (kh, kw), self.stride, self.dilation, self.out_size)
        return columns.reshape(self.groups, -1, columns.shape[3] * self.out_size[0] * self.out_size[1])

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂z (N, out, Ho, Wo) → ∂L/∂x (N, C, H, W); stores weight_grad and bias_grad.

        Parameters (module docstring): ∂L/∂b = Σ_{n,i,j} δ, and ∂L/∂W = Σ_n δ_n · columns_nᵀ,
        one matrix product per group.

        The input (``input_grad=False`` skips it and returns None): the
        textbook rule δˡ = conv(δˡ⁺¹ spread by the stride, rot180(W), 'full'),
        cropped by the padding — ``full_convolution`` says why.
        """
        self.bias_grad = delta.sum(axis=(0, 2, 3)) if self.bias is not None else None
        out_channels = self.weight.shape[0]
        # ∂L/∂W[o, c, u, v] = Σ_{n,i,j} δ[n, o, i, j] · x̃[n, c, i·s + u·d, j·s + v·d], the columns rebuilt
        # chunk by chunk (cheaper than keeping kh·kw copies of the input between forward and backward).
        weight_grad = np.zeros((self.groups, out_channels // self.groups, self.weight[0].size), dtype=delta.dtype)
        for batch in self.batches():
            delta_rows = delta[batch].transpose(1, 0, 2, 3).reshape(self.groups, out_channels // self.groups, -1)
            weight_grad += np.matmul(delta_rows, self.columns(batch).transpose(0, 2, 1))   # (G, out/G, C/G·kh·kw)
        self.weight_grad = weight_grad.reshape(self.weight.shape)
        if not input_grad:
            return None
        return full_convolution(delta, self.weight, self.input_shape, self.stride, self.padding, self.dilation,
                                self.groups)

    def __repr__(self) -> str:
        out_channels, in_per_group, kh, kw = self.weight.shape
        return (f"Conv2d(in={in_per_group * self.groups}, out={out_channels}, kernel=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None})")


__all__ = ["Conv2d", "batch_chunks", "correlate_with_turned_kernel", "full_convolution", "im2col", "output_size",
           "pair", "spread_weighted_delta"]
