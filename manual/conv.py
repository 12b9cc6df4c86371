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
C/groups·kh·kw) times the columns (C/groups·kh·kw, pixels). The columns are
built by a strided view on the padded input (no copy) and one copy into
contiguous memory; there is no Python loop over pixels, kernel offsets or
groups.

Tiles. The columns hold kh·kw numbers for every input number — 32.3 GiB for
a 256×256 kernel on one 1×512×512 image — so every product is taken one tile
of output pixels at a time (``tiles``): as many whole samples as fit in
``TILE_BYTES``, else rows of one sample, else pixels of one row, so that no
buffer of a tile exceeds ``MAX_TILE_BYTES`` (unless one output pixel's column
alone does: C·kh·kw numbers, never more than the weight). The zero padding is
laid out per tile too (``window_source``): x̃ is never built whole. Small
tiles also stay in the CPU cache between being written and being multiplied.
For several samples with short output rows the samples are the tile's
innermost axis (``Tile``), so that at stride 1 the im2col copies whole rows of
all of them at once. ``workspace_bytes`` states the memory all this takes for
given shapes.

Backward receives δ = ∂L/∂z (N, out, Ho, Wo). By the chain rule on the sum above:

    ∂L/∂b[o]          = Σ_{n,i,j} δ[n, o, i, j]
    ∂L/∂W[o, c, u, v] = Σ_{n,i,j} δ[n, o, i, j] · x̃[n, c, i·s + u·d, j·s + v·d]
                      = (δ as a matrix) · (the forward's columns)ᵀ — the textbook's
                        ∂L/∂k = conv(x, δ, 'valid'), summed over the batch
    ∂L/∂x̃[n, c, h, w] = Σ_{o, u, v, i, j : i·s + u·d = h, j·s + v·d = w} δ[n, o, i, j] · W[o, c, u, v]

The last line is the textbook rule δˡ = conv(δˡ⁺¹, rot180(W), 'full'), see
``full_convolution`` for why and for what stride, dilation and padding change.

The layer keeps references to its parameter arrays (it never copies them), so an
optimizer that updates ``weight`` and ``bias`` in place updates the layer; it
also keeps its input x, not a copy, from forward to backward.
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from backprop_verify.manual.layers import Learned, copied, register_layer


def pair(value) -> tuple[int, int]:
    """PyTorch's int-or-pair argument: 2 → (2, 2), [1, 3] → (1, 3)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Ho = ⌊(H + 2p − d·(k − 1) − 1) / s⌋ + 1: the number of windows that fit in the padded input."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------- tiles

TILE_BYTES = 2 ** 21
"""The most a tile of several samples takes (2 MiB): as many whole samples as fit. On the bench's
layers (one thread) 1, 2 and 4 MiB differ by less than the machine's noise, except LeNet's second
layer: 15 % slower in 4 MiB tiles (float64)."""

MAX_TILE_BYTES = 2 ** 23
"""The largest buffer a convolution lays out for one tile of output pixels (8 MiB): its im2col
columns, their product, its δ rows, its copy of the input. A sample larger than that is cut into
rows, a row into pixels; one output pixel's column (C·kh·kw numbers) is the exception, when it
alone is larger. (Cut at 2 MiB, cnn-bn-32's second layer in float64, 2.3 MiB of columns per
sample, ran 10 % slower in rows than whole.)"""

SHORT_ROWS = 16
"""Output rows shorter than this (in numbers) are copied with the samples innermost (``Tile``).
Measured forward per sample, float32, one thread: LeNet's second layer (8-wide rows) 8 µs with
the samples innermost against 13 µs; its first (24-wide) the same either way; cnn-bn-32's first
(32-wide) 56–69 µs against 48–53 µs (transposing z and δ costs more than the copies save)."""


class Windows(NamedTuple):
    """Where a convolution's windows lie: window (i, j) reads x̃[i·s + u·d, j·s + v·d], u < kh, v < kw,
    with x̃ the input zero-padded by ``padding`` (all four pairs, (height, width))."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input."""
        return tuple(output_size(size, k, s, p, d) for size, k, s, p, d
                     in zip((height, width), self.kernel, self.stride, self.padding, self.dilation))

    def reach(self, tile: "Tile") -> tuple[int, int, int, int]:
        """(top, bottom, left, right): the rows and columns of x̃ that the tile's windows read."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        return (tile.rows.start * sh, (tile.rows.stop - 1) * sh + dh * (kh - 1) + 1,
                tile.columns.start * sw, (tile.columns.stop - 1) * sw + dw * (kw - 1) + 1)

    def inside(self, reach: tuple[int, int, int, int], height: int, width: int):
        """The part of x̃[top:bottom, left:right] that is x, not padding: ((rows, columns) as slices of x,
        (rows, columns) as slices of that region of x̃)."""
        top, bottom, left, right = reach
        ph, pw = self.padding
        (first_row, end_row) = max(top, ph), min(bottom, ph + height)
        (first_column, end_column) = max(left, pw), min(right, pw + width)
        return ((slice(first_row - ph, end_row - ph), slice(first_column - pw, end_column - pw)),
                (slice(first_row - top, end_row - top), slice(first_column - left, end_column - left)))


class Tile(NamedTuple):
    """A block of output pixels: ``samples`` × output ``rows`` i × output ``columns`` j (three slices).

    Its buffers hold one number per channel and pixel, (channels, *pixels), with the pixels in
    the order ``pixels`` gives: (samples, rows, columns), each sample's output one block as in z —
    or, for several samples with short rows, (rows, columns, samples), so that at stride 1 the
    im2col copies whole output rows of all the tile's samples at once (cols·samples numbers, 512
    on LeNet's 8×8 outputs, instead of 8) at the price of transposing z and δ.
    """

    samples: slice
    rows: slice
    columns: slice
    samples_innermost: bool = False

    @property
    def pixels(self) -> tuple[int, int, int]:
        """The tile's pixel axes, in their order in its buffers."""
        count = self.samples.stop - self.samples.start
        rows, columns = self.rows.stop - self.rows.start, self.columns.stop - self.columns.start
        return (rows, columns, count) if self.samples_innermost else (count, rows, columns)

    def of(self, images: np.ndarray) -> np.ndarray:
        """images[samples, :, rows, columns] of an (N, C, Ho, Wo) array: a view."""
        return images[self.samples, :, self.rows, self.columns]

    def images(self, matrix: np.ndarray) -> np.ndarray:
        """(C, *pixels) → the view (samples, C, rows, columns), the layout of x, z and δ."""
        return matrix.transpose(3, 0, 1, 2) if self.samples_innermost else matrix.transpose(1, 0, 2, 3)

    def matrix(self, images: np.ndarray) -> np.ndarray:
        """The tile of (N, C, Ho, Wo) ``images`` as a contiguous (C, *pixels) array (δ's rows, one per channel)."""
        tile = self.of(images)
        tile = tile.transpose(1, 2, 3, 0) if self.samples_innermost else tile.transpose(1, 0, 2, 3)
        if tile.flags.c_contiguous:                                             # one whole sample: a view
            return tile
        matrix = scratch("delta rows", tile.shape, tile.dtype)
        np.copyto(matrix, tile)
        return matrix

    def buffer(self, role: str, channels: int, height: int, width: int, dtype) -> np.ndarray:
        """A ``scratch`` buffer (samples, channels, height, width) laid out as the tile's pixels."""
        count = self.samples.stop - self.samples.start
        if self.samples_innermost:
            return scratch(role, (channels, height, width, count), dtype).transpose(3, 0, 1, 2)
        return scratch(role, (count, channels, height, width), dtype)


def even_slices(total: int, most: int) -> list[slice]:
    """0 … total in ⌈total / most⌉ consecutive slices of (nearly) equal length, none longer than
    ``most``, the longer ones first (so that the first tile sizes the ``scratch`` buffers)."""
    count = -(-total // max(1, most))
    short, longer = divmod(total, count)
    lengths = [short + 1] * longer + [short] * (count - longer)
    bounds = np.cumsum([0] + lengths).tolist()
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def tiles(samples: int, out_size: tuple[int, int], pixel_bytes: int, source_bytes: int) -> list[Tile]:
    """The output (samples, Ho, Wo) cut into tiles whose buffers take at most ``MAX_TILE_BYTES`` each.

    ``pixel_bytes``: the largest buffer per output pixel (its column, its product, its δ);
    ``source_bytes``: the part of x̃ one sample's windows read (copied in a tile of several samples).
    Whole samples when one sample fits (as many as fit in ``TILE_BYTES``), else rows of one
    sample, else pixels of one row (at least one pixel); the pieces are of nearly equal size.
    """
    out_h, out_w = out_size
    every_row, every_column = slice(0, out_h), slice(0, out_w)
    if pixel_bytes * out_h * out_w <= MAX_TILE_BYTES:
        sample_bytes = max(pixel_bytes * out_h * out_w, source_bytes)
        return [Tile(batch, every_row, every_column, batch.stop - batch.start > 1 and out_w < SHORT_ROWS)
                for batch in even_slices(samples, TILE_BYTES // sample_bytes)]
    one_sample = [slice(n, n + 1) for n in range(samples)]
    if pixel_bytes * out_w <= MAX_TILE_BYTES:
        return [Tile(sample, rows, every_column) for sample in one_sample
                for rows in even_slices(out_h, MAX_TILE_BYTES // (pixel_bytes * out_w))]
    return [Tile(sample, slice(i, i + 1), columns) for sample in one_sample for i in range(out_h)
            for columns in even_slices(out_w, MAX_TILE_BYTES // pixel_bytes)]


def image_tiles(images_shape: tuple[int, ...], out_channels: int, windows: Windows, itemsize: int) -> list[Tile]:
    """``tiles`` for the convolution of (N, C, H, W) images with ``out_channels`` kernels."""
    n, channels, height, width = images_shape
    (kh, kw), (ph, pw) = windows.kernel, windows.padding
    return tiles(n, windows.out_size(height, width), itemsize * max(channels * kh * kw, out_channels),
                 itemsize * channels * (height + 2 * ph) * (width + 2 * pw))


_scratch = threading.local()


def scratch(role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised buffer for one ``role`` of a tile (its columns, its product, …): the same
    memory for every tile and every call (per thread, grown to the largest tile up to
    ``MAX_TILE_BYTES``; a larger one is fresh).

    Why: a fresh multi-megabyte array costs its page faults again on every call. cnn-lenet's
    training step (float64, one thread, CPU time, best of 15) took 14.9 ms with these buffers,
    21.0 ms with fresh ones (float32: 7.1 ms against 9.1 ms); cnn-bn-32's, the same either way.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > MAX_TILE_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers = _scratch.__dict__
    if role not in buffers or buffers[role].size < size:
        buffers.pop(role, None)                                                 # freed before the larger one
        buffers[role] = np.empty(size, dtype=np.uint8)
    return buffers[role][:size].view(dtype).reshape(shape)


def window_source(images: np.ndarray, tile: Tile, windows: Windows) -> np.ndarray:
    """x̃[samples, :, top:bottom, left:right], the part of the zero-padded images that the tile's
    windows read, (samples, C, rows, columns): a view of ``images`` when those windows stay inside
    it and the tile takes its samples as they are; else a copy into the tile's ``scratch`` buffer,
    zeros around (x̃ is never built whole)."""
    _, channels, height, width = images.shape
    reach = top, bottom, left, right = windows.reach(tile)
    (rows, columns), (region_rows, region_columns) = windows.inside(reach, height, width)
    no_padding = rows.stop - rows.start == bottom - top and columns.stop - columns.start == right - left
    if no_padding and not tile.samples_innermost:
        return images[tile.samples, :, rows, columns]
    source = tile.buffer("source", channels, bottom - top, right - left, images.dtype)
    if not no_padding:
        source.fill(0.0)
    source[:, :, region_rows, region_columns] = images[tile.samples, :, rows, columns]
    return source


def im2col(source: np.ndarray, windows: Windows, out_size: tuple[int, int], samples_innermost: bool = False,
           out: np.ndarray | None = None) -> np.ndarray:
    """The receptive fields of every output pixel, as columns.

    x̃ (n, C, H̃, W̃) → columns (C, kh, kw, n, Ho, Wo), contiguous, with
    columns[c, u, v, m, i, j] = x̃[m, c, i·s + u·d, j·s + v·d] — or (C, kh, kw, Ho, Wo, n)
    with ``samples_innermost``: reshaped to (groups, C/groups·kh·kw, pixels), each group's
    columns are one matrix, and the layer one matrix product per group. ``out``: where to write them.
    """
    n, channels, _, _ = source.shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = windows.kernel, windows.stride, windows.dilation, out_size
    sn, sc, sy, sx = source.strides
    windows_view = as_strided(source, shape=(channels, kh, kw, ho, wo, n),
                              strides=(sc, dh * sy, dw * sx, sh * sy, sw * sx, sn), writeable=False)
    if not samples_innermost:
        windows_view = windows_view.transpose(0, 1, 2, 5, 3, 4)                # (C, kh, kw, n, Ho, Wo)
    if out is None:
        return np.ascontiguousarray(windows_view)
    np.copyto(out, windows_view)
    return out


def tile_columns(images: np.ndarray, tile: Tile, windows: Windows) -> np.ndarray:
    """The im2col columns of one tile, (C, kh, kw, *tile.pixels), in the tile's ``scratch`` buffer."""
    kh, kw = windows.kernel
    out = scratch("columns", (images.shape[1], kh, kw, *tile.pixels), images.dtype)
    rows, columns = tile.rows.stop - tile.rows.start, tile.columns.stop - tile.columns.start
    return im2col(window_source(images, tile, windows), windows, (rows, columns), tile.samples_innermost, out)


# --------------------------------------------------------------------------- the three products


def correlate(images: np.ndarray, weight: np.ndarray, windows: Windows, groups: int,
              bias: np.ndarray | None = None) -> np.ndarray:
    """z[n, o, i, j] = b[o] + Σ_{c,u,v} W[o, c, u, v] · x̃[n, c, i·s + u·d, j·s + v·d], x̃ = ``images`` padded.

    Per tile and group, one matrix product: W (out/G, C/G·kh·kw) @ columns (C/G·kh·kw, pixels).
    """
    n, _, height, width = images.shape
    out_channels, in_per_group, kh, kw = weight.shape
    kernel_rows = weight.reshape(groups, out_channels // groups, in_per_group * kh * kw)
    z = np.empty((n, out_channels, *windows.out_size(height, width)), dtype=images.dtype)
    for tile in image_tiles(images.shape, out_channels, windows, images.itemsize):
        columns = tile_columns(images, tile, windows)                          # (C, kh, kw, *pixels)
        product = np.matmul(kernel_rows, columns.reshape(groups, in_per_group * kh * kw, -1),
                            out=scratch("product", (groups, out_channels // groups, math.prod(tile.pixels)), z.dtype))
        values = tile.images(product.reshape(out_channels, *tile.pixels))     # (m, out, rows, cols), a view
        if bias is None:
            tile.of(z)[...] = values
        else:
            np.add(values, bias[:, None, None], out=tile.of(z))
    return z


def weight_gradient(images: np.ndarray, delta: np.ndarray, windows: Windows, groups: int) -> np.ndarray:
    """∂L/∂W[o, c, u, v] = Σ_{n,i,j} δ[n, o, i, j] · x̃[n, c, i·s + u·d, j·s + v·d], (out, C/G, kh, kw).

    Per tile and group: δ (out/G, pixels) @ columnsᵀ (pixels, C/G·kh·kw), summed over the tiles (the
    columns are rebuilt: cheaper than keeping kh·kw copies of the input between forward and backward).
    """
    _, channels, _, _ = images.shape
    out_channels = delta.shape[1]
    kh, kw = windows.kernel
    per_group = channels // groups * kh * kw
    gradient = np.zeros((groups, out_channels // groups, per_group), dtype=delta.dtype)
    for tile in image_tiles(images.shape, out_channels, windows, images.itemsize):
        columns = tile_columns(images, tile, windows)
        delta_rows = tile.matrix(delta).reshape(groups, out_channels // groups, -1)
        gradient += np.matmul(delta_rows, columns.reshape(groups, per_group, -1).transpose(0, 2, 1))
    return gradient.reshape(out_channels, channels // groups, kh, kw)


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
    which lays out fewer numbers (both are one matrix product per tile and group):

    * ``spread_weighted_delta`` (any stride): first the channel sum
      Σ_o W[o, c, u, v] · δ[n, o, i, j] for every kernel offset, on the
      compact δ — C·kh·kw·N·Ho·Wo numbers; then, for each of the kh·kw kernel
      offsets (u, v), those terms are added at h = i·s + u·d, w = j·s + v·d —
      the shifted, stride-spread copy of δ that the convolution sums. It never
      multiplies the inserted zeros.
    * ``correlate_with_turned_kernel`` (stride 1, p ≤ d·(k − 1)): the line
      above literally — the forward's ``correlate`` on δ zero-padded by
      d·(k − 1) − p, with the turned kernel, giving x's gradient without the
      crop: out·kh·kw·N·H·W numbers. Its product has the forward's inner
      dimension (out·kh·kw instead of out), which BLAS runs faster, and no
      strided adds follow.

    Measured (one thread, CPU time, best of 9, batch 64): on the bench's
    32×32×32 ⊛ 32×32×3×3, padding 1 (equal counts), the correlation took 25 ms
    in float32 (49 ms in float64) against 36 ms (77 ms) for the spread; on
    LeNet's second layer (6×12×12 → 16@5×5, 6× more numbers laid out by the
    correlation) the spread is 2.2–2.8× faster.
    """
    windows = Windows(weight.shape[2:], stride, padding, dilation)
    if takes_the_correlation(input_shape, weight.shape[0], windows):
        return correlate_with_turned_kernel(delta, weight, input_shape, padding, dilation, groups)
    return spread_weighted_delta(delta, weight, input_shape, stride, padding, dilation, groups)


def takes_the_correlation(input_shape: tuple[int, ...], out_channels: int, windows: Windows) -> bool:
    """Whether ``full_convolution`` takes ``correlate_with_turned_kernel``: stride 1, p ≤ d·(k − 1), and
    it lays out no more numbers than the spread (out·H·W ≤ C·Ho·Wo)."""
    _, channels, height, width = input_shape
    out_h, out_w = windows.out_size(height, width)
    within_reach = all(p <= d * (k - 1) for p, d, k in zip(windows.padding, windows.dilation, windows.kernel))
    return windows.stride == (1, 1) and within_reach and out_channels * height * width <= channels * out_h * out_w


def turned_kernel(weight: np.ndarray, groups: int) -> np.ndarray:
    """turned[c, o, u, v] = W[o, c, kh − 1 − u, kw − 1 − v] for o and c in the same group:
    (C, out/G, kh, kw), a kernel from the out channels to the C channels (rot180, in and out swapped)."""
    out_channels, in_per_group, kh, kw = weight.shape
    return (weight[:, :, ::-1, ::-1].reshape(groups, out_channels // groups, in_per_group, kh, kw)
            .transpose(0, 2, 1, 3, 4).reshape(groups * in_per_group, out_channels // groups, kh, kw))


def correlate_with_turned_kernel(delta: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...],
                                 padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> np.ndarray:
    """∂L/∂x for stride 1: δ̂ (δ zero-padded by d·(k − 1) − p) correlated with the turned kernel.

    ∂L/∂x[n, c, h, w] = Σ_{o, u, v} W[o, c, kh − 1 − u, kw − 1 − v] · δ̂[n, o, h + u·d, w + v·d]
    (substitute u → kh − 1 − u in ``full_convolution``'s sum): the forward's ``correlate``,
    on δ̂ instead of x̃, with ``turned_kernel``.
    """
    _, _, kh, kw = weight.shape
    (ph, pw), (dh, dw) = padding, dilation
    reach = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    input_gradient = correlate(delta, turned_kernel(weight, groups), Windows((kh, kw), (1, 1), reach, dilation), groups)
    assert input_gradient.shape == tuple(input_shape)
    return input_gradient


def spread_weighted_delta(delta: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...],
                          stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                          groups: int) -> np.ndarray:
    """∂L/∂x for any stride: Σ_o W[o, c, u, v] · δ[n, o, i, j] per kernel offset, added at x̃[i·s + u·d, j·s + v·d].

    (Written as an im2col correlation of the stride-spread and padded δ with
    the turned kernel, LeNet's two layers took 2.5–3× as long, float64, one
    thread: it multiplies the inserted zeros.)
    """
    _, channels, height, width = input_shape
    out_channels, in_per_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    windows = Windows((kh, kw), stride, padding, dilation)
    kernel_columns = weight.reshape(groups, out_channels // groups, in_per_group * kh * kw).transpose(0, 2, 1)
    input_gradient = np.zeros(input_shape, dtype=delta.dtype)
    for tile in image_tiles(input_shape, out_channels, windows, delta.itemsize):
        rows, columns = tile.rows.stop - tile.rows.start, tile.columns.stop - tile.columns.start
        delta_rows = tile.matrix(delta).reshape(groups, out_channels // groups, -1)
        # Σ_o W[o, c, u, v] · δ[n, o, i, j], per group: (G, C/G·kh·kw, out/G) @ (G, out/G, pixels)
        weighted = np.matmul(kernel_columns, delta_rows,
                             out=scratch("columns", (groups, in_per_group * kh * kw, delta_rows.shape[2]), delta.dtype))
        weighted = tile.images(weighted.reshape(channels * kh * kw, *tile.pixels))
        weighted = weighted.reshape(-1, channels, kh, kw, rows, columns)           # (m, C, kh, kw, rows, cols)
        # ∂L/∂x̃ of the part of x̃ the tile's windows read, laid out like the tile
        reach = top, bottom, left, right = windows.reach(tile)
        region = tile.buffer("source", channels, bottom - top, right - left, delta.dtype)
        region.fill(0.0)
        # Σ_{u,v,i,j}: term (u, v, i, j) lands at x̃[i·s + u·d, j·s + v·d] — for each kernel offset, δ spread
        # by the stride and shifted by the offset; or, when the tile has fewer pixels than the kernel has
        # offsets (a large kernel), for each pixel the kernel's window: the same adds, fewer operations.
        if kh * kw <= rows * columns:
            for u in range(kh):
                for v in range(kw):
                    region[:, :, u * dh:u * dh + sh * (rows - 1) + 1:sh,
                           v * dw:v * dw + sw * (columns - 1) + 1:sw] += weighted[:, :, u, v]
        else:
            for i in range(rows):
                for j in range(columns):
                    region[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw] += weighted[:, :, :, :, i, j]
        # x's gradient is x̃'s without the padding (constants): the region's part inside x
        (rows_of_x, columns_of_x), (region_rows, region_columns) = windows.inside(reach, height, width)
        input_gradient[tile.samples, :, rows_of_x, columns_of_x] += region[:, :, region_rows, region_columns]
    return input_gradient


# --------------------------------------------------------------------------- memory


def workspace_bytes(input_shape: tuple[int, ...], options: dict, dtype) -> int:
    """Bytes a ``Conv2d`` lays out for one forward + backward (∂L/∂x included) beyond the arrays it is
    given or gives back — x, z, δ, ∂L/∂x, ∂L/∂W, ∂L/∂b: an upper bound of what is alive at once.

    ``input_shape`` is x's (N, C, H, W); ``options`` the catalogue's conv2d options
    (``out_channels``, ``kernel_size``; ``stride``, ``padding``, ``dilation``, ``groups`` default
    to PyTorch's). What it counts: the tiles' ``scratch`` buffers (copied input, columns, product,
    δ rows; each at most ``MAX_TILE_BYTES`` unless one pixel's column alone is larger), the
    weight-sized temporaries and NumPy's iteration buffers. The scratch buffers stay allocated
    after the call and are shared by every convolution of the thread: a network needs the
    largest of its layers', not their sum.
    """
    n, channels, height, width = input_shape
    out_channels, kernel = int(options["out_channels"]), pair(options["kernel_size"])
    stride, padding = pair(options.get("stride", 1)), pair(options.get("padding", 0))
    dilation, groups = pair(options.get("dilation", 1)), int(options.get("groups", 1))
    itemsize = np.dtype(dtype).itemsize
    windows = Windows(kernel, stride, padding, dilation)
    out_h, out_w = windows.out_size(height, width)
    weight_numbers = out_channels * channels // groups * kernel[0] * kernel[1]

    def buffers(images_shape, products, windows, rows_role):
        """The largest (copied input, columns, products or δ rows) of any tile, in numbers."""
        found = image_tiles(images_shape, products, windows, itemsize)
        in_channels = images_shape[1] * windows.kernel[0] * windows.kernel[1]
        largest = {"source": 0, "columns": 0, rows_role: 0}
        for tile in found:
            top, bottom, left, right = windows.reach(tile)
            pixels = math.prod(tile.pixels)
            count = tile.samples.stop - tile.samples.start
            for role, numbers in (("source", count * images_shape[1] * (bottom - top) * (right - left)),
                                  ("columns", in_channels * pixels), (rows_role, products * pixels)):
                largest[role] = max(largest[role], numbers)
        return largest

    forward = buffers(input_shape, out_channels, windows, "product")
    backward = buffers(input_shape, out_channels, windows, "delta rows")             # ∂L/∂W, and the spread
    temporaries = weight_numbers                                                       # each tile's ∂L/∂W term
    if takes_the_correlation(input_shape, out_channels, windows):
        reach = tuple(d * (k - 1) - p for p, d, k in zip(padding, dilation, kernel))
        turned = buffers((n, out_channels, out_h, out_w), channels, Windows(kernel, (1, 1), reach, dilation), "product")
        forward = {role: max(forward.get(role, 0), turned[role]) for role in set(forward) | set(turned)}
        temporaries += weight_numbers                                                  # the turned kernel
    roles = {role: max(forward.get(role, 0), backward.get(role, 0)) for role in set(forward) | set(backward)}
    iteration_buffers = 3 * np.getbufsize()                                            # NumPy's, for strided adds
    return itemsize * (sum(roles.values()) + temporaries + iteration_buffers)


# --------------------------------------------------------------------------- the layer


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
        """x (N, C, H, W) → z = W ⋆ x + b (N, out, Ho, Wo); keeps x (backward rebuilds its columns for ∂L/∂W)."""
        _, channels, height, width = x.shape
        if channels != self.weight.shape[1] * self.groups:
            raise ValueError(f"conv2d expects {self.weight.shape[1] * self.groups} input channels "
                             f"(in_channels / groups = {self.weight.shape[1]}, groups = {self.groups}), got {channels}")
        _, _, kh, kw = self.weight.shape
        self.windows = Windows((kh, kw), self.stride, self.padding, self.dilation)
        if min(self.windows.out_size(height, width)) < 1:
            raise ValueError(f"conv2d kernel {(kh, kw)} (dilation {self.dilation}) does not fit the padded input "
                             f"{(height + 2 * self.padding[0], width + 2 * self.padding[1])}")
        self.input = x
        return correlate(x, self.weight, self.windows, self.groups, self.bias)

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂z (N, out, Ho, Wo) → ∂L/∂x (N, C, H, W); stores weight_grad and bias_grad.

        Parameters (module docstring): ∂L/∂b = Σ_{n,i,j} δ, and ∂L/∂W = Σ δ · columnsᵀ
        (``weight_gradient``), one matrix product per tile and group.

        The input (``input_grad=False`` skips it and returns None): the
        textbook rule δˡ = conv(δˡ⁺¹ spread by the stride, rot180(W), 'full'),
        cropped by the padding — ``full_convolution`` says why.
        """
        self.bias_grad = delta.sum(axis=(0, 2, 3)) if self.bias is not None else None
        self.weight_grad = weight_gradient(self.input, delta, self.windows, self.groups)
        if not input_grad:
            return None
        return full_convolution(delta, self.weight, self.input.shape, self.stride, self.padding, self.dilation,
                                self.groups)

    def __repr__(self) -> str:
        out_channels, in_per_group, kh, kw = self.weight.shape
        return (f"Conv2d(in={in_per_group * self.groups}, out={out_channels}, kernel=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None})")


__all__ = ["Conv2d", "MAX_TILE_BYTES", "SHORT_ROWS", "TILE_BYTES", "Tile", "Windows", "correlate", "correlate_with_turned_kernel", "full_convolution", "im2col",
           "output_size", "pair", "spread_weighted_delta", "takes_the_correlation", "tiles", "weight_gradient",
           "workspace_bytes"]
