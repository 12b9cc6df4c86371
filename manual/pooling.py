"""2-D max and average pooling, with their hand-derived backward beside their forward.

Layouts are PyTorch's: x is (N, C, H, W) and the output (N, C, Ho, Wo); every
channel is pooled on its own. Window (i, j) of a kernel (kh, kw) with stride
s, padding p and dilation d reads x̃[i·s + u·d, j·s + v·d] for u < kh, v < kw,
where x̃ is x padded by p on every side (max pooling pads with −∞, average
pooling with 0).

Output size — PyTorch's rule (``pooling_output_shape`` in ATen), checked
against torch on H = 2…7, k = 2…3, s = 2…3, p = 0…1:

    Ho = ⌊(H + 2p − d·(kh − 1) − 1) / s⌋ + 1            (ceil_mode=False)
    Ho = ⌈(H + 2p − d·(kh − 1) − 1) / s⌉ + 1            (ceil_mode=True), then
         minus one if the last window would start in the right padding,
         (Ho − 1)·s ≥ H + p  (e.g. H=4, k=2, s=3, p=1: 3 → 2)

so with ceil_mode a last, partial window may hang over the end of x̃ — its
missing part counts as padding. PyTorch also requires p ≤ k/2 (kernel, not
dilated kernel) and raises otherwise; so do these classes.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, register_layer
from numpy.lib.stride_tricks import as_strided

from backprop_verify.manual.conv import pair


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Ho by PyTorch's rule (module docstring)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:  # the last window would start in the right padding: PyTorch drops it
        out -= 1
    return out


class _Pool2d(Learned):
    """Shared options, sizes and the window view of max and average pooling."""


    def __init__(self, kernel_size, stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode: bool = False):
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size
        self.padding, self.dilation, self.ceil_mode = pair(padding), pair(dilation), bool(ceil_mode)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"{self.name}: kernel_size, stride and dilation must be ≥ 1 and padding ≥ 0, got "
                             f"kernel_size {self.kernel_size}, stride {self.stride}, dilation {self.dilation}, "
                             f"padding {self.padding}")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{self.name}: padding {self.padding} must be at most half of kernel_size "
                             f"{self.kernel_size} (PyTorch's rule)")

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out = (pool_output_size(height, kh, sh, ph, dh, self.ceil_mode),
               pool_output_size(width, kw, sw, pw, dw, self.ceil_mode))
        if min(out) < 1:
            raise ValueError(f"{self.name}: kernel {self.kernel_size} (dilation {self.dilation}, padding "
                             f"{self.padding}) gives an output of size {out} on an input of size {(height, width)}")
        return out

    def padded(self, x: np.ndarray, out_size: tuple[int, int], fill: float) -> np.ndarray:
        """x̃: x with p on the left/top and, on the right/bottom, p plus whatever a ceil_mode window hangs over.

        x itself (no copy) when the windows need no padding."""
        _, _, height, width = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        bottom = max(ph, (out_size[0] - 1) * sh + dh * (kh - 1) + 1 - height - ph)
        right = max(pw, (out_size[1] - 1) * sw + dw * (kw - 1) + 1 - width - pw)
        if not (ph or pw or bottom or right):
            return x
        return np.pad(x, ((0, 0), (0, 0), (ph, bottom), (pw, right)), constant_values=fill)

    def offset_view(self, x_padded: np.ndarray, out_size: tuple[int, int], u: int, v: int) -> np.ndarray:
        """x̃[:, :, i·s + u·d, j·s + v·d] for every window (i, j): kernel offset (u, v) of all windows, a strided view (N, C, Ho, Wo)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        (out_h, out_w) = out_size
        return x_padded[:, :, u * dh:u * dh + sh * (out_h - 1) + 1:sh, v * dw:v * dw + sw * (out_w - 1) + 1:sw]

    def windows(self, x_padded: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
        """A view (N, C, Ho, Wo, kh, kw) with windows[n, c, i, j, u, v] = x̃[n, c, i·s + u·d, j·s + v·d] (no copy)."""
        n, c, _, _ = x_padded.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        sn, sc, sy, sx = x_padded.strides
        return as_strided(x_padded, shape=(n, c, *out_size, kh, kw),
                          strides=(sn, sc, sh * sy, sw * sx, dh * sy, dw * sx), writeable=False)


@register_layer("max_pool2d")
class MaxPool2d(_Pool2d):
    """a[i, j] = max over window (i, j) of x̃ (padding = −∞).  No parameters.

    Backward: the max is x̃[m] for one element m of the window, so
    ∂a[i, j]/∂x̃[m] = 1 and 0 for the rest — the whole δ[i, j] goes to that
    element. An element that is the max of several overlapping windows
    receives the sum of their δ (scatter-add).

    Ties — which element is "the" max. PyTorch's CPU kernel scans the window
    in row-major order (u, then v) and replaces its candidate only on a
    strictly greater value, so among equal maxima the **first in row-major
    window order** wins, alone; the others get 0. Measured with torch 2.13
    (``max_pool2d(..., return_indices=True)`` and ``.grad``):

    * a constant 4×4 input, kernel 3, stride 1: the four windows pick their own
      top-left elements (indices 0, 1, 4, 5), and x.grad is 1 there, 0 elsewhere;
    * [[1,3,3,0],[3,2,3,1],[0,3,1,3],[2,2,3,3]], kernel 2, stride 1: window
      (1, 1) = [[2,3],[3,1]] picks x[1, 2] (row-major first), not x[2, 1];
    * a constant input with padding 1: the first element inside the input wins
      (padding is never picked over a real element, even when the real
      elements are −∞ too — PyTorch starts from the first in-bounds element).

    NaN: PyTorch also replaces its candidate on every NaN, so the *last* NaN of
    a window wins (x = [[1, nan], [nan, 1]], kernel 2: index 2). Mirrored here.
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "MaxPool2d":
        """The layer for a scenario's ``max_pool2d`` entry, its arrays copied into ``dtype``."""
        options = spec.params
        return cls(options["kernel_size"], options["stride"], padding=options["padding"], dilation=options["dilation"],
                   ceil_mode=options["ceil_mode"])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) → a (N, C, Ho, Wo); caches, per kernel offset, which windows chose it.

        Computed one kernel offset (u, v) at a time over all windows at once,
        on the strided views x̃[:, :, i·s + u·d, j·s + v·d] (no window is
        copied out): first the maximum, then PyTorch's choice — the first
        offset in row-major order that equals it, among the elements inside x
        (or, in a window holding NaN, its last NaN). Every step is a
        branch-free whole-array operation: selecting with a data-dependent
        mask (np.where, np.copyto(where=)) runs about 10× slower on
        ReLU outputs, whose masks are random. (The bench's 64×32×32×32 input,
        kernel 2, float32, one thread: about 2.5 ms forward, where an argmax over
        a copied (…, kh·kw) window array took about 18 ms.)
        """
        _, _, height, width = x.shape
        out_size = self.output_shape(height, width)
        (kh, kw) = self.kernel_size
        offsets = [divmod(offset, kw) for offset in range(kh * kw)]              # (u, v) in row-major order
        x_padded = self.padded(x, out_size, -np.inf)
        candidates = [self.offset_view(x_padded, out_size, u, v) for u, v in offsets]
        maximum = candidates[0].copy()
        for candidate in candidates[1:]:
            np.maximum(maximum, candidate, out=maximum)                             # NaN if the window holds one
        chosen = np.empty((len(offsets), *maximum.shape), dtype=bool)
        taken = np.zeros(maximum.shape, dtype=bool)
        for offset, (candidate, (u, v)) in enumerate(zip(candidates, offsets)):
            first = candidate == maximum
            if x_padded is not x:                                                   # never the padding
                first &= self.in_bounds(out_size, u, v, height, width)
            first &= ~taken
            taken |= first
            chosen[offset] = first
        if np.isnan(maximum).any():                                                 # PyTorch: the last NaN wins
            later_nan = np.zeros(maximum.shape, dtype=bool)
            for offset in reversed(range(len(offsets))):
                is_nan = np.isnan(candidates[offset])
                chosen[offset] |= is_nan & ~later_nan
                later_nan |= is_nan
        self.chosen, self.out_size = chosen, out_size
        self.padded_shape, self.input_shape = x_padded.shape, x.shape
        return maximum

    def in_bounds(self, out_size: tuple[int, int], u: int, v: int, height: int, width: int) -> np.ndarray:
        """(Ho, Wo): whether offset (u, v) of window (i, j), x̃[i·s + u·d, j·s + v·d], lies inside x."""
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        row = np.arange(out_size[0]) * sh + u * dh
        column = np.arange(out_size[1]) * sw + v * dw
        return ((row >= ph) & (row < ph + height))[:, None] & ((column >= pw) & (column < pw + width))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂a (N, C, Ho, Wo) → ∂L/∂x: δ[i, j] added to the chosen element of window (i, j), 0 elsewhere.

        One add per kernel offset (u, v): δ ⊙ 1[window chose (u, v)] lands at
        x̃[i·s + u·d, j·s + v·d]. Within one offset every window lands on a
        different element, so overlapping windows sum correctly. The product
        with the 0/1 mask is branch-free (fast); where δ is ±inf or NaN it
        would give 0·δ = NaN for the windows that did not choose (u, v), so
        there the mask selects instead (PyTorch gives them 0).
        """
        if not input_grad:
            return None
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        _, _, height, width = self.input_shape
        grad_padded = np.zeros(self.padded_shape, dtype=grad_output.dtype)
        finite = np.isfinite(grad_output).all()
        for offset in range(kh * kw):
            target = self.offset_view(grad_padded, self.out_size, *divmod(offset, kw))
            target += grad_output * self.chosen[offset] if finite else np.where(self.chosen[offset], grad_output, 0.0)
        if self.padded_shape == self.input_shape:
            return grad_padded
        return grad_padded[:, :, ph:ph + height, pw:pw + width].copy()

    def __repr__(self) -> str:
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode})")


@register_layer("avg_pool2d")
class AvgPool2d(_Pool2d):
    """a[i, j] = (Σ over window (i, j) of x̃) / divisor[i, j]  (padding = 0).  No parameters.

    The divisor — PyTorch's rule (``avg_pool2d`` CPU kernel), measured on
    ones inputs with torch 2.13 (e.g. H = 6, k = 3, s = 2, p = 1, ceil_mode:
    corner divisor 4 with count_include_pad, 1 without):

        start = i·s − p,  end = min(start + k, H + p)      (the window clipped to the padded input)
        count_include_pad=True:   divisor = (end − start) rows × (…) columns
        count_include_pad=False:  divisor = the same after clipping to x itself, [max(start, 0), min(end, H))

    so the padding counts, but the part of a ceil_mode window that hangs
    beyond the padded input never does.

    Backward: a[i, j] = Σ x̃[m] / divisor[i, j] over the window, so
    ∂a[i, j]/∂x̃[m] = 1/divisor[i, j] for every m in the window: each element
    receives Σ over the windows covering it of δ[i, j] / divisor[i, j].
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "AvgPool2d":
        """The layer for a scenario's ``avg_pool2d`` entry, its arrays copied into ``dtype``."""
        options = spec.params
        return cls(options["kernel_size"], options["stride"], padding=options["padding"], ceil_mode=options["ceil_mode"],
                   count_include_pad=options["count_include_pad"])

    def __init__(self, kernel_size, stride=None, padding=(0, 0), ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, (1, 1), ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def divisor(self, height: int, width: int, out_size: tuple[int, int]) -> np.ndarray:
        """(Ho, Wo) divisors by PyTorch's rule (class docstring)."""

        def extent(size, out, kernel, stride, padding):
            start = np.arange(out) * stride - padding
            end = np.minimum(start + kernel, size + padding)
            if self.count_include_pad:
                return end - start
            return np.minimum(end, size) - np.maximum(start, 0)

        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return np.outer(extent(height, out_size[0], kh, sh, ph), extent(width, out_size[1], kw, sw, pw))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) → a (N, C, Ho, Wo); caches the divisors."""
        _, _, height, width = x.shape
        out_size = self.output_shape(height, width)
        x_padded = self.padded(x, out_size, 0.0)
        self.divisors = self.divisor(height, width, out_size).astype(x.dtype)
        self.padded_shape, self.input_shape = x_padded.shape, x.shape
        return self.windows(x_padded, out_size).sum(axis=(4, 5)) / self.divisors

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂a (N, C, Ho, Wo) → ∂L/∂x: δ[i, j]/divisor[i, j] added to every element of window (i, j)."""
        if not input_grad:
            return None
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, _, out_h, out_w = grad_output.shape
        _, _, height, width = self.input_shape
        share = grad_output / self.divisors
        grad_padded = np.zeros(self.padded_shape, dtype=share.dtype)
        for u in range(kh):          # window (i, j) covers x̃[i·s + u, j·s + v]: a strided add per kernel offset
            for v in range(kw):
                grad_padded[:, :, u:u + sh * (out_h - 1) + 1:sh, v:v + sw * (out_w - 1) + 1:sw] += share
        return grad_padded[:, :, ph:ph + height, pw:pw + width].copy()

    def __repr__(self) -> str:
        return (f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad})")


__all__ = ["AvgPool2d", "MaxPool2d", "pool_output_size"]
