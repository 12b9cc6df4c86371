"""The manual engine's faster forms against their plain forms.

``manual/conv.py`` computes z = W ⋆ x + b, ∂L/∂W and ∂L/∂x one tile of output
pixels at a time (whole samples, rows of one sample or pixels of one row), with
the samples innermost for short rows, the padding laid out per tile, and its
buffers reused. The plain form here is the formula of the module docstring
written the obvious way, on the whole batch at once: a sum over the kernel
offsets (u, v) of strided views of the padded input — no tiles, no im2col. Every
tiling (the bounds forced so that each kind of tile occurs) must agree with it
within the one tolerance policy, and with the default tiling.

``workspace_bytes`` is checked against what NumPy actually allocates
(tracemalloc), and the tiles against their bound. Each check has a mutant below
(an injected bug) that it must catch.
"""
from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import backprop_verify.manual.conv as conv
from backprop_verify.manual.conv import Conv2d, pair
from tests.helpers import assert_close
from tests.layer_harness import DTYPES, grid_variants

SEED = 0

# (label, x shape, options) beyond the catalogue's grid: LeNet's two layers (short rows, several samples
# per tile), a padded layer larger than its kernel's reach, a 1×1 kernel with stride, a strided layer
# whose windows stop before the input's end.
EXTRA = [
    ("lenet1", (6, 1, 12, 12), {"out_channels": 3, "kernel_size": (5, 5)}),
    ("lenet2", (6, 3, 12, 12), {"out_channels": 4, "kernel_size": (5, 5)}),
    ("pad-beyond-reach", (3, 2, 6, 6), {"out_channels": 3, "kernel_size": (3, 3), "padding": (2, 3)}),
    ("k1-stride2", (3, 3, 7, 7), {"out_channels": 2, "kernel_size": (1, 1), "stride": (2, 2)}),
    ("stride-beyond-kernel", (2, 2, 11, 10), {"out_channels": 3, "kernel_size": (2, 3), "stride": (4, 3),
                                              "padding": (1, 1)}),
]
VARIANTS = grid_variants("conv2d") + EXTRA


def draw(shape, options, dtype):
    """x, W, b (or None), δ for the variant, seeded."""
    rng = np.random.default_rng(SEED)
    groups = options.get("groups", 1)
    kh, kw = pair(options["kernel_size"])
    weight = rng.normal(0.0, 0.5, (options["out_channels"], shape[1] // groups, kh, kw)).astype(dtype)
    bias = rng.normal(0.0, 0.5, options["out_channels"]).astype(dtype) if options.get("bias", True) else None
    x = rng.normal(0.0, 1.0, shape).astype(dtype)
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, k, s, p, d in
           zip(shape[2:], (kh, kw), pair(options.get("stride", 1)), pair(options.get("padding", 0)),
               pair(options.get("dilation", 1)))]
    delta = rng.normal(0.0, 1.0, (shape[0], options["out_channels"], *out)).astype(dtype)
    return x, weight, bias, delta


def layer_for(weight, bias, options) -> Conv2d:
    return Conv2d(weight, bias, stride=options.get("stride", 1), padding=options.get("padding", 0),
                  dilation=options.get("dilation", 1), groups=options.get("groups", 1))


# --- the plain form ----------------------------------------------------------------------------------------


def plain_offset_views(x_padded, kernel, stride, dilation, out_size):
    """For every kernel offset (u, v): x̃[:, :, i·s + u·d, j·s + v·d] over all (i, j), a view (N, C, Ho, Wo)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    return {(u, v): x_padded[:, :, u * dh:u * dh + sh * (ho - 1) + 1:sh, v * dw:v * dw + sw * (wo - 1) + 1:sw]
            for u in range(kh) for v in range(kw)}


def plain_convolution(x, weight, bias, delta, options):
    """(z, ∂L/∂W, ∂L/∂b, ∂L/∂x) by the module docstring's sums, whole batch, one kernel offset at a time:

        z[n, o, i, j]     = b[o] + Σ_{c,u,v} W[o, c, u, v] · x̃[n, c, i·s + u·d, j·s + v·d]
        ∂L/∂W[o, c, u, v] = Σ_{n,i,j} δ[n, o, i, j] · x̃[n, c, i·s + u·d, j·s + v·d]
        ∂L/∂x̃[n, c, i·s + u·d, j·s + v·d] += Σ_o δ[n, o, i, j] · W[o, c, u, v]      (then x̃'s border cropped)
    """
    groups = options.get("groups", 1)
    stride, padding, dilation = (pair(options.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    n, channels, height, width = x.shape
    out_channels, per_group, kh, kw = weight.shape
    (ph, pw) = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    views = plain_offset_views(x_padded, (kh, kw), stride, dilation, delta.shape[2:])
    by_group = weight.reshape(groups, out_channels // groups, per_group, kh, kw)
    delta_by_group = delta.reshape(n, groups, out_channels // groups, *delta.shape[2:])
    z = np.zeros(delta.shape, dtype=x.dtype)
    weight_grad = np.zeros(weight.shape, dtype=x.dtype)
    gradient_padded = np.zeros(x_padded.shape, dtype=x.dtype)
    gradient_views = plain_offset_views(gradient_padded, (kh, kw), stride, dilation, delta.shape[2:])
    for (u, v), window in views.items():
        window_by_group = window.reshape(n, groups, per_group, *window.shape[2:])
        z += np.einsum("gop,ngpij->ngoij", by_group[..., u, v], window_by_group).reshape(z.shape)
        weight_grad[:, :, u, v] = np.einsum("ngoij,ngpij->gop", delta_by_group, window_by_group).reshape(
            out_channels, per_group)
        gradient_views[u, v] += np.einsum("ngoij,gop->ngpij", delta_by_group, by_group[..., u, v]).reshape(
            window.shape)
    if bias is not None:
        z += bias[:, None, None]
    bias_grad = delta.sum(axis=(0, 2, 3)) if bias is not None else None
    return z, weight_grad, bias_grad, gradient_padded[:, :, ph:ph + height, pw:pw + width]


def engine_convolution(x, weight, bias, delta, options):
    """(z, ∂L/∂W, ∂L/∂b, ∂L/∂x) of ``manual.conv.Conv2d``."""
    layer = layer_for(weight, bias, options)
    z = layer.forward(x)
    input_gradient = layer.backward(delta)
    return z, layer.weight_grad, layer.bias_grad, input_gradient


def assert_matches_plain(label, shape, options, dtype):
    x, weight, bias, delta = draw(shape, options, dtype)
    found = engine_convolution(x, weight, bias, delta, options)
    expected = plain_convolution(x, weight, bias, delta, options)
    for name, a, b in zip(("z", "weight.grad", "bias.grad", "input.grad"), found, expected):
        if b is None:
            assert a is None
        else:
            assert_close(a, b, dtype, f"{label} {name}")


# --- tilings: every kind of tile -----------------------------------------------------------------------------


def pixel_bytes(shape, options, dtype) -> int:
    """The largest buffer per output pixel of the forward tiles (``conv.image_tiles``' argument)."""
    kh, kw = pair(options["kernel_size"])
    return np.dtype(dtype).itemsize * max(shape[1] * kh * kw, options["out_channels"])


def tiling(monkeypatch, kind, shape, options, dtype):
    """Force ``kind`` of tile: TILE_BYTES, MAX_TILE_BYTES and SHORT_ROWS set so that the forward's
    tiles are the whole batch (samples innermost or not), one sample, two output rows, or one pixel."""
    out_w = (shape[3] + 2 * pair(options.get("padding", 0))[1]
             - pair(options.get("dilation", 1))[1] * (pair(options["kernel_size"])[1] - 1) - 1) \
        // pair(options.get("stride", 1))[1] + 1
    whole = 2 ** 40
    settings = {
        "batch": (whole, whole, 0),
        "batch-samples-innermost": (whole, whole, 10 ** 9),
        "sample": (1, whole, 0),
        "rows": (1, 2 * out_w * pixel_bytes(shape, options, dtype), 0),
        "pixels": (1, 1, 0),
    }
    tile_bytes, max_tile_bytes, short_rows = settings[kind]
    monkeypatch.setattr(conv, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(conv, "MAX_TILE_BYTES", max_tile_bytes)
    monkeypatch.setattr(conv, "SHORT_ROWS", short_rows)


TILINGS = ("default", "batch", "batch-samples-innermost", "sample", "rows", "pixels")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label, shape, options", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_conv2d_matches_the_plain_form_at_every_tiling(monkeypatch, label, shape, options, dtype):
    for kind in TILINGS:
        with monkeypatch.context() as patch:
            if kind != "default":
                tiling(patch, kind, shape, options, dtype)
            assert_matches_plain(f"{label} [{kind} tiles]", shape, options, dtype)


@pytest.mark.parametrize("kind", TILINGS[1:])
def test_the_forced_tilings_give_the_tiles_they_name(monkeypatch, kind):
    """The control for the test above: each setting yields its kind of tile on a LeNet-like layer."""
    label, shape, options = EXTRA[1]
    tiling(monkeypatch, kind, shape, options, "float64")
    windows = conv.Windows(pair(options["kernel_size"]), (1, 1), (0, 0), (1, 1))
    found = conv.image_tiles(shape, options["out_channels"], windows, 8)
    sizes = {(t.samples.stop - t.samples.start, t.rows.stop - t.rows.start, t.columns.stop - t.columns.start)
             for t in found}
    expected = {"batch": {(6, 8, 8)}, "batch-samples-innermost": {(6, 8, 8)}, "sample": {(1, 8, 8)},
                "rows": {(1, 2, 8)}, "pixels": {(1, 1, 1)}}[kind]
    assert sizes == expected
    assert {t.samples_innermost for t in found} == {kind == "batch-samples-innermost"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_and_one_pixel_tiles_agree(monkeypatch, dtype):
    """Tiles change only the order of the sums: the default tiling and one pixel per tile agree
    within the tolerance (the forward bit for bit where each output's dot product is one BLAS call)."""
    label, shape, options = EXTRA[1]
    x, weight, bias, delta = draw(shape, options, dtype)
    default = engine_convolution(x, weight, bias, delta, options)
    tiling(monkeypatch, "pixels", shape, options, dtype)
    one_pixel = engine_convolution(x, weight, bias, delta, options)
    for name, a, b in zip(("z", "weight.grad", "bias.grad", "input.grad"), one_pixel, default):
        assert_close(a, b, dtype, name)


# --- the tiles' bound ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples, out_size, pixel, source, tile_bytes, max_tile_bytes", [
    (64, (8, 8), 1200, 1152, 2 ** 21, 2 ** 23),      # LeNet's second layer: several samples per tile
    (64, (32, 32), 2304, 9248, 2 ** 21, 2 ** 23),    # cnn-bn-32's second layer: one sample per tile
    (3, (257, 257), 2 ** 19, 2 ** 21, 2 ** 21, 2 ** 23),  # a 256×256 kernel on 512×512: pixels of one row
    (5, (9, 7), 40, 500, 700, 900),                  # rows of one sample
    (5, (9, 7), 1000, 500, 1, 1),                    # one pixel's column beyond the bound
])
def test_tiles_cover_every_output_pixel_once_within_the_bound(monkeypatch, samples, out_size, pixel, source,
                                                               tile_bytes, max_tile_bytes):
    monkeypatch.setattr(conv, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(conv, "MAX_TILE_BYTES", max_tile_bytes)
    covered = np.zeros((samples, *out_size), dtype=int)
    for tile in conv.tiles(samples, out_size, pixel, source):
        covered[tile.samples, tile.rows, tile.columns] += 1
        count = tile.samples.stop - tile.samples.start
        pixels = count * (tile.rows.stop - tile.rows.start) * (tile.columns.stop - tile.columns.start)
        assert pixel * pixels <= max(max_tile_bytes, pixel), "a tile over the bound"  # (or one pixel)
        if count > 1:                                                          # several samples: within TILE_BYTES
            assert count * max(pixel * out_size[0] * out_size[1], source) <= tile_bytes, "samples over TILE_BYTES"
    assert (covered == 1).all(), "pixels not covered exactly once"


def test_the_example_of_a_huge_kernel_needs_megabytes_not_gigabytes():
    """A 256×256 kernel on one 1×512×512 image: its im2col columns would take 32.3 GiB
    (65,536 numbers for each of 257² pixels); the tiles take at most MAX_TILE_BYTES each."""
    unchunked = 8 * 256 * 256 * 257 * 257
    assert unchunked / 2 ** 30 > 32
    needed = conv.workspace_bytes((1, 1, 512, 512), {"out_channels": 1, "kernel_size": 256}, "float64")
    assert needed <= 4 * conv.MAX_TILE_BYTES < unchunked / 1000


# --- workspace_bytes against what is allocated -----------------------------------------------------------------

MEMORY_CASES = [
    ("lenet1", (40, 1, 28, 28), {"out_channels": 6, "kernel_size": 5}),
    ("lenet2", (64, 6, 12, 12), {"out_channels": 16, "kernel_size": 5}),
    ("bn-32", (3, 32, 32, 32), {"out_channels": 32, "kernel_size": 3, "padding": 1}),
    ("kernel-64", (1, 1, 128, 128), {"out_channels": 1, "kernel_size": 64}),                 # rows of one sample
    ("groups-stride", (4, 4, 20, 19), {"out_channels": 6, "kernel_size": (3, 3), "stride": (2, 1),
                                        "padding": (0, 1), "dilation": (1, 2), "groups": 2}),
]


def allocated_beyond_the_arrays(shape, options, dtype) -> tuple[int, int]:
    """(bytes NumPy allocated at the peak of a forward + backward beyond x, z, δ and the gradients
    returned, ``workspace_bytes``): the scratch buffers start empty."""
    x, weight, bias, delta = draw(shape, options, dtype)
    layer = layer_for(weight, bias, options)
    conv._scratch = threading.local()
    tracemalloc.start()
    try:
        z = layer.forward(x)
        input_gradient = layer.backward(delta)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    given_back = z.nbytes + input_gradient.nbytes + layer.weight_grad.nbytes + layer.bias_grad.nbytes
    return peak - given_back, conv.workspace_bytes(shape, options, dtype)


def assert_workspace_bounds_the_allocations(shape, options, dtype):
    allocated, stated = allocated_beyond_the_arrays(shape, options, dtype)
    assert allocated <= stated, f"allocated {allocated} bytes, workspace_bytes says {stated}"
    assert stated <= 1.5 * allocated + 3 * np.getbufsize() * np.dtype(dtype).itemsize, (allocated, stated)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label, shape, options", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_workspace_bytes_bounds_what_a_forward_and_backward_allocate(monkeypatch, label, shape, options, dtype):
    monkeypatch.setattr(conv, "_scratch", threading.local())
    assert_workspace_bounds_the_allocations(shape, options, dtype)


def test_a_large_kernel_runs_in_tiles_far_smaller_than_its_columns(monkeypatch):
    """A 64×64 kernel on a 128×128 image: 132 MiB of im2col columns unchunked; what runs allocates
    a few MiB, and agrees with one pixel per tile."""
    monkeypatch.setattr(conv, "_scratch", threading.local())
    label, shape, options = MEMORY_CASES[3]
    allocated, _ = allocated_beyond_the_arrays(shape, options, "float64")
    assert allocated < 8 * 64 * 64 * 65 * 65 / 10
    x, weight, bias, delta = draw(shape, options, "float64")
    default = engine_convolution(x, weight, bias, delta, options)
    monkeypatch.setattr(conv, "MAX_TILE_BYTES", 2 ** 22)
    smaller = engine_convolution(x, weight, bias, delta, options)
    for name, a, b in zip(("z", "weight.grad", "bias.grad", "input.grad"), smaller, default):
        assert_close(a, b, "float64", name)


# --- injected bugs: each check above must catch its mutant ------------------------------------------------------


def _drop_the_last_tile(monkeypatch):
    tiles = conv.tiles
    monkeypatch.setattr(conv, "tiles", lambda *args: tiles(*args)[:-1] if len(tiles(*args)) > 1 else tiles(*args))


def _reach_one_stride_late(monkeypatch):
    """The windows of a tile read from one stride below where they start (a tile's first row off by one)."""
    reach = conv.Windows.reach

    def late(self, tile):
        top, bottom, left, right = reach(self, tile)
        return (top + self.stride[0], bottom + self.stride[0], left, right) if tile.rows.start else (top, bottom,
                                                                                                     left, right)

    monkeypatch.setattr(conv.Windows, "reach", late)


def _samples_innermost_read_back_transposed(monkeypatch):
    """Tile.images reading (rows, columns, samples) back as if the samples came first."""
    monkeypatch.setattr(conv.Tile, "images", lambda self, matrix: matrix.transpose(1, 0, 2, 3) if not
                        self.samples_innermost else matrix.reshape(matrix.shape[0], *self.pixels[::-1]
                                                                   ).transpose(1, 0, 2, 3))


def _one_buffer_for_every_role(monkeypatch):
    scratch = conv.scratch
    monkeypatch.setattr(conv, "scratch", lambda role, shape, dtype: scratch("shared", shape, dtype))


def _padding_not_zeroed(monkeypatch):
    """The per-tile padding copied without zeroing the border: whatever the buffer held before."""
    source = conv.window_source

    def dirty(images, tile, windows):
        region = source(images, tile, windows)
        if windows.padding != (0, 0) and region.base is not None:
            region[:, :, :windows.padding[0]] += 1.0
        return region

    monkeypatch.setattr(conv, "window_source", dirty)


MUTANTS = {
    "drop-the-last-tile": (_drop_the_last_tile, "sample"),
    "reach-one-stride-late": (_reach_one_stride_late, "rows"),
    "samples-innermost-transposed": (_samples_innermost_read_back_transposed, "batch-samples-innermost"),
    "one-buffer-for-every-role": (_one_buffer_for_every_role, "sample"),
    "padding-not-zeroed": (_padding_not_zeroed, "rows"),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_the_plain_form_comparison_catches(monkeypatch, mutant):
    inject, kind = MUTANTS[mutant]
    caught = []
    for label, shape, options in (EXTRA[1], VARIANTS[1]):                    # lenet2, stride2-pad1
        with monkeypatch.context() as patch:
            tiling(patch, kind, shape, options, "float64")
            assert_matches_plain(label, shape, options, "float64")           # the correct engine passes
            inject(patch)
            try:
                assert_matches_plain(label, shape, options, "float64")
            except AssertionError:
                caught.append(label)
    assert caught, f"{mutant} not caught"


def test_the_allocation_check_catches_an_understated_workspace(monkeypatch):
    label, shape, options = MEMORY_CASES[1]
    monkeypatch.setattr(conv, "_scratch", threading.local())
    stated = conv.workspace_bytes
    monkeypatch.setattr(conv, "workspace_bytes", lambda *args: stated(*args) // 2)
    with pytest.raises(AssertionError, match="workspace_bytes says"):
        assert_workspace_bounds_the_allocations(shape, options, "float64")


def test_the_bound_check_catches_tiles_over_the_bound(monkeypatch):
    """tiles() that takes the rows of a sample too large by one: the bound assertion fires."""
    tiles = conv.tiles

    def greedy(samples, out_size, pixel, source):
        return [conv.Tile(t.samples, slice(t.rows.start, min(out_size[0], t.rows.stop + 1)), t.columns)
                for t in tiles(samples, out_size, pixel, source)]

    monkeypatch.setattr(conv, "tiles", greedy)
    with pytest.raises(AssertionError, match="a tile over the bound"):
        test_tiles_cover_every_output_pixel_once_within_the_bound(monkeypatch, 5, (9, 7), 40, 500, 700, 900)
