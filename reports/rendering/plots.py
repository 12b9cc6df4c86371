"""The report's plots, as PNG bytes (matplotlib, Agg backend, no pyplot state).

* ``discrepancy_distribution``: histogram of the normwise relative discrepancy
  per dtype, log scale, manual-torch and against finite differences;
* ``optimizer_steps``: worst discrepancy vs optimizer step, one line per
  optimizer and dtype, with the step-dependent tolerance;
* ``vanishing_gradient``: ‖∂L/∂W⁽ˡ⁾‖ vs layer for sigmoid vs ReLU, both engines;
* ``recurrent_gradient``: ‖∂L/∂h_t‖ vs time step for RNNs of spectral radius 0.5, 1.0, 1.5 and an LSTM;
* ``digits_loss``: the digits loss curves, manual vs torch, and their difference.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from backprop_verify.reports.rendering.table import relative_pass
from backprop_verify.reports.verification.compare import step_of
from backprop_verify.reports.verification.tolerance import tolerance

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DTYPE_COLORS = {"float64": "#1f77b4", "float32": "#d62728"}
# The experiments' networks take these in their own order (``VanishingGradient.labels``).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
REL_LABEL = "max|a−b| / max|b| per address (normwise, dimensionless)"

PLOTS = {
    "discrepancy_distribution.png": "Distribution of the relative discrepancy per dtype",
    "optimizer_steps.png": "Discrepancy vs optimizer step",
    "vanishing_gradient.png": "Vanishing gradient: sigmoid vs ReLU (document 003)",
    "recurrent_gradient.png": "Gradients in time: RNNs of spectral radius 0.5, 1.0, 1.5 and an LSTM",
    "digits_loss.png": "Digits loss curves, manual vs torch",
}


def _figure(width: float = 10.0, height: float = 4.8) -> Figure:
    """A figure on the Agg canvas. matplotlib is imported here, on the first plot: a run without plots
    (``--no-plots``; the heatmaps below are written without it) never loads it (0.8 s of start-up)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _matplotlib():
    """matplotlib with its ``ticker`` loaded (see ``_figure``)."""
    import matplotlib.ticker

    return matplotlib


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _empty(axis, message: str) -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes, fontsize=12, color="#555")
    axis.set_xticks([])
    axis.set_yticks([])


def discrepancy_distribution(frame: pd.DataFrame) -> bytes:
    figure = _figure(11.0, 4.8)
    axes = figure.subplots(1, 2, sharey=False)
    groups = (("manual vs torch", frame["pair"] == "manual-torch"),
              ("manual / torch vs finite differences", frame["pair"].str.endswith("-fd")))
    bins = np.logspace(-20, 0, 41)
    for axis, (title, mask) in zip(axes, groups):
        subset = frame[mask & relative_pass(frame)]
        if subset.empty:
            _empty(axis, "no rows")
            axis.set_title(title)
            continue
        for dtype in ("float64", "float32"):
            values = subset.loc[subset["dtype"] == dtype, "max_rel"].astype(float).to_numpy()
            if values.size == 0:
                continue
            exact = int((values == 0).sum())
            nonzero = np.clip(values[values > 0], bins[0], 1.0)
            axis.hist(nonzero, bins=bins, histtype="stepfilled", alpha=0.35, color=DTYPE_COLORS[dtype],
                      edgecolor=DTYPE_COLORS[dtype], linewidth=1.2,
                      label=f"{dtype}: {values.size} addresses ({exact} identical, not drawn)")
            pair = "manual-torch" if title.startswith("manual vs") else "manual-fd"
            axis.axvline(tolerance(dtype, pair), color=DTYPE_COLORS[dtype], linestyle="--", linewidth=1.5,
                         label=f"{dtype} tolerance {tolerance(dtype, pair):.0e} (step 0)")
        axis.set_xscale("log")
        axis.set_xlim(bins[0], 1.0)
        axis.set_ylim(0, axis.get_ylim()[1] * 1.45)  # room for the legend above the bars
        axis.set_xlabel(REL_LABEL + ", log scale")
        axis.set_ylabel("addresses (count)")
        axis.set_title(title)
        axis.legend(fontsize=8, loc="upper left")
        axis.grid(True, which="major", alpha=0.3)
    figure.suptitle("Distribution of the relative discrepancy (addresses that passed on the relative criterion)")
    return _png(figure)


def step_table(frame: pd.DataFrame, components: dict[str, list[str]]) -> pd.DataFrame:
    """Worst max_rel per (optimizer, dtype, step) over manual-torch rows of optimizer scenarios
    that passed on the relative criterion (floor passes and unjudged steps left out)."""
    optimizer_of = {name: [c.split(":", 1)[1] for c in comps if c.startswith("optimizer:")]
                    for name, comps in components.items()}
    rows = frame[(frame["pair"] == "manual-torch") & frame["scenario"].map(lambda s: bool(optimizer_of.get(s)))]
    if rows.empty:
        return pd.DataFrame(columns=["optimizer", "dtype", "step", "worst_max_rel"])
    rows = rows.assign(step=rows["address"].map(step_of),
                       optimizer=rows["scenario"].map(lambda s: optimizer_of[s][0]),
                       value=rows["max_rel"].where(relative_pass(rows)))
    table = rows.groupby(["optimizer", "dtype", "step"], sort=True)["value"].max().reset_index()
    return table.rename(columns={"value": "worst_max_rel"})


def optimizer_steps(frame: pd.DataFrame, components: dict[str, list[str]]) -> bytes:
    figure = _figure(12.5, 5.2)
    axis = figure.subplots()
    table = step_table(frame, components)
    if table.empty or table["step"].max() < 1:
        _empty(axis, "no optimizer trajectories in this run")
        axis.set_title("Discrepancy vs optimizer step")
        return _png(figure)
    styles = {"float64": "-", "float32": "--"}
    colors = _matplotlib().colormaps["tab10"]
    optimizers = sorted(table["optimizer"].unique())
    for index, optimizer in enumerate(optimizers):
        for dtype in ("float64", "float32"):
            part = table[(table["optimizer"] == optimizer) & (table["dtype"] == dtype)]
            if part.empty:
                continue
            values = part["worst_max_rel"].astype(float).fillna(0.0).to_numpy()
            axis.plot(part["step"], np.where(values > 0, values, np.nan), styles[dtype], marker="o", markersize=3,
                      color=colors(index % 10), label=f"{optimizer} ({dtype})")
    steps = np.arange(0, int(table["step"].max()) + 1)
    for dtype in sorted(table["dtype"].unique()):
        axis.plot(steps, [tolerance(dtype, "manual-torch", int(t)) for t in steps], ":", color="black",
                  linewidth=1.2, label=f"tolerance {dtype}: rtol·(1+t)")
    axis.set_yscale("log")
    axis.xaxis.set_major_locator(_matplotlib().ticker.MaxNLocator(integer=True))
    axis.set_xlabel("optimizer step t (updates applied; 0 = initial forward/backward)")
    axis.set_ylabel("worst max|a−b| / max|b| over addresses\n(dimensionless, log scale)")
    axis.set_title("manual vs torch along optimizer trajectories (steps with identical values leave gaps)")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=8, ncol=2 if len(optimizers) > 6 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                borderaxespad=0.0)
    return _png(figure)


def _color(labels: tuple[str, ...], label: str) -> str:
    return PALETTE[labels.index(label) % len(PALETTE)] if label in labels else PALETTE[2]


def vanishing_gradient(vanishing) -> bytes:
    """``VanishingGradient``: each network's norms against the layer, torch's as crosses, and its bound."""
    figure = _figure(10.0, 5.0)
    axis = figure.subplots()
    curves = vanishing.curves
    for activation in sorted(curves["activation"].unique(), reverse=True):
        color = _color(vanishing.labels, activation)
        part = curves[curves["activation"] == activation]
        manual_part = part[part["engine"] == "manual"].sort_values("layer")
        torch_part = part[part["engine"] == "torch"].sort_values("layer")
        axis.plot(manual_part["layer"], manual_part["grad_norm"], "-o", color=color, linewidth=2, markersize=6,
                  label=f"{activation}, manual engine")
        axis.plot(torch_part["layer"], torch_part["grad_norm"], "x", color="black", markersize=9,
                  markeredgewidth=1.5, label=f"{activation}, torch autograd")
    depth = vanishing.depth
    if vanishing.bound_of is not None:
        axis.plot(vanishing.bound["layer"].to_numpy(), vanishing.bound["grad_norm"].to_numpy(), ":",
                  color=_color(vanishing.labels, vanishing.bound_of), linewidth=1.2, label=vanishing.bound_label)
    axis.set_yscale("log")
    axis.set_xticks(range(1, depth + 1))
    axis.set_xlabel(f"linear layer l (1 = next to the input, {depth} = output)")
    axis.set_ylabel("‖∂L/∂W⁽ˡ⁾‖_F  (Frobenius norm, log scale)")
    axis.set_title(f"Vanishing gradient (document 003): same weights, {depth} layers, sigmoid, ReLU, "
                   "sigmoid with BatchNorm")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=9, loc="lower right")
    return _png(figure)


NETWORK_COLORS = {"tanh ρ=0.5": "#1f77b4", "tanh ρ=1.0": "#2ca02c", "tanh ρ=1.5": "#d62728", "lstm": "#9467bd"}


def recurrent_gradient(experiment) -> bytes:
    """``RecurrentGradient``: ‖∂L/∂h_t‖ against t, one line per network by the manual engine, torch's
    values as crosses."""
    figure = _figure(10.0, 5.0)
    axis = figure.subplots()
    recurrent = experiment.curves
    for network in dict.fromkeys(recurrent["network"]):
        color = NETWORK_COLORS.get(network, "#555555")
        part = recurrent[recurrent["network"] == network]
        manual_part = part[part["engine"] == "manual"].sort_values("step")
        torch_part = part[part["engine"] == "torch"].sort_values("step")
        axis.plot(manual_part["step"], manual_part["grad_norm"], "-o", color=color, linewidth=2, markersize=5,
                  label=f"{network}, manual engine")
        axis.plot(torch_part["step"], torch_part["grad_norm"], "x", color="black", markersize=8, markeredgewidth=1.2,
                  label="torch autograd" if network == recurrent["network"].iloc[0] else None)
    steps = experiment.steps
    axis.set_yscale("log")
    axis.set_xticks(range(1, steps + 1))
    axis.set_xlabel(f"time step t (the loss is on step {steps})")
    axis.set_ylabel("‖∂L/∂h_t‖ (log scale)")
    axis.set_title("Exploding and vanishing gradients in time: tanh RNNs of spectral radius ρ, and an LSTM")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=9, loc="lower right")
    return _png(figure)


def digits_loss(digits) -> bytes:
    """``DigitsCurves``: both engines' loss curves, and their relative difference (``differences``)."""
    figure = _figure(11.0, 4.8)
    left, right = figure.subplots(1, 2)
    colors = _matplotlib().colormaps["tab10"]
    differences = dict(tuple(digits.differences.groupby("optimizer", sort=False)))
    for index, (optimizer, group) in enumerate(digits.curves.groupby("optimizer", sort=True)):
        label = optimizer or "run"
        wide = group.pivot_table(index="step", columns="engine", values="loss", aggfunc="first")
        if "manual" in wide:
            left.plot(wide.index, wide["manual"], "-", color=colors(index % 10), linewidth=2.5, alpha=0.6,
                      label=f"{label}, manual engine")
        if "torch" in wide:
            left.plot(wide.index, wide["torch"], "--", color="black", linewidth=1.0, label=f"{label}, torch")
        if optimizer in differences:
            part = differences[optimizer]
            nonzero = part[part["rel_diff"] > 0]
            right.plot(nonzero["step"].to_numpy(), nonzero["rel_diff"].to_numpy(), "o", markersize=4,
                       color=colors(index % 10),
                       label=f"{label} ({int((part['rel_diff'] == 0).sum())} of {len(part)} updates identical, "
                             "not drawn)")
    left.set_xlabel("update t (one optimizer step)")
    left.set_ylabel("cross-entropy loss (nats per sample)")
    left.set_title("Digits 64→32→10: loss at each update")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=9)
    right.set_yscale("log")
    low, high = right.get_ylim()
    right.set_ylim(min(low, 1e-18), max(high, 1e-14))
    right.set_xlabel("update t (one optimizer step)")
    right.set_ylabel("|loss_manual − loss_torch| / |loss_torch|\n(dimensionless, log scale)")
    right.set_title("Relative difference of the two curves")
    right.grid(True, which="major", alpha=0.3)
    right.legend(fontsize=9)
    figure.suptitle(f"scikit-learn's bundled 8×8 digits; curves from {digits.source}", fontsize=10)
    return _png(figure)


def all_plots(data) -> dict[str, bytes]:
    """file name -> PNG bytes for a ``reports.rendering.summary.ReportData``."""
    return {
        "discrepancy_distribution.png": discrepancy_distribution(data.frame),
        "optimizer_steps.png": optimizer_steps(data.frame, data.components),
        "vanishing_gradient.png": vanishing_gradient(data.vanishing),
        "recurrent_gradient.png": recurrent_gradient(data.recurrent),
        "digits_loss.png": digits_loss(data.digits),
    }


__all__ = ["PLOTS", "all_plots", "digits_loss", "discrepancy_distribution", "optimizer_steps", "recurrent_gradient",
           "step_table", "vanishing_gradient"]


# ---------------------------------------------------------------------------
# Heatmaps of |a − b| for the per-scenario sections of report.html: tiny PNGs
# written directly (zlib, no matplotlib figure), one pixel per element, scaled
# up by the browser (CSS ``image-rendering: pixelated``).
# ---------------------------------------------------------------------------

HEATMAP_DECADES_BELOW = 6   # the lightest blue: |a − b| = 10⁻⁶ × the allowed difference
HEATMAP_DECADES_ABOVE = 3   # the darkest red: 10³ × the allowed difference and beyond
HEATMAP_MAX_SIDE = 128      # larger matrices are reduced by block maxima to at most this many rows / columns


def heatmap_colors(ratio: np.ndarray) -> np.ndarray:
    """RGB (uint8) for ratio = |a − b| / (tolerance · max|b|): white at 0, blues up to 1 (within the
    tolerance, darker the closer), reds above it (darker the further), black for inf."""
    ratio = np.asarray(ratio, np.float64)
    rgb = np.full(ratio.shape + (3,), 255.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.log10(ratio)
    below = (ratio > 0) & (ratio <= 1)
    t = np.clip((level + HEATMAP_DECADES_BELOW) / HEATMAP_DECADES_BELOW, 0.0, 1.0)  # 0 lightest .. 1 at tolerance
    blue_light, blue_dark = np.array([232.0, 240, 252]), np.array([33.0, 90, 180])
    rgb[below] = blue_light + (blue_dark - blue_light) * t[below][:, None]
    above = ratio > 1
    u = np.clip(level / HEATMAP_DECADES_ABOVE, 0.0, 1.0)
    red_light, red_dark = np.array([250.0, 160, 140]), np.array([140.0, 0, 10])
    rgb[above] = red_light + (red_dark - red_light) * u[above][:, None]
    rgb[np.isinf(ratio)] = (0.0, 0.0, 0.0)
    return np.round(rgb).astype(np.uint8)


def reduce_for_heatmap(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """(matrix, block side): a matrix larger than ``HEATMAP_MAX_SIDE`` on a side as the maxima of
    square blocks (so a single bad element still shows), block side 1 when unchanged."""
    rows, columns = matrix.shape
    block = max(1, -(-max(rows, columns) // HEATMAP_MAX_SIDE))
    if block == 1:
        return matrix, 1
    padded = np.zeros((-(-rows // block) * block, -(-columns // block) * block))
    padded[:rows, :columns] = matrix
    return padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).max(axis=(1, 3)), block


def png_rgb(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` (height, width, 3), deterministic bytes."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(pixels, np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def heatmap_png(ratio: np.ndarray) -> bytes:
    """The PNG of a 2-D array of ratios |a − b| / allowed (``heatmap_colors``)."""
    return png_rgb(heatmap_colors(np.atleast_2d(ratio)))


def heatmap_legend_svg() -> str:
    """The colour scale as a small inline SVG, the tolerance marked where blue turns to red."""
    steps = 45
    width, height, top = 300, 12, 4
    levels = np.linspace(-HEATMAP_DECADES_BELOW, HEATMAP_DECADES_ABOVE, steps)
    colors = heatmap_colors(10.0 ** levels)
    cell = width / steps
    rects = "".join(f'<rect x="{i * cell:.1f}" y="{top}" width="{cell + 0.5:.1f}" height="{height}" '
                    f'fill="rgb({r},{g},{b})"/>' for i, (r, g, b) in enumerate(colors.tolist()))
    span = HEATMAP_DECADES_BELOW + HEATMAP_DECADES_ABOVE
    at = width * HEATMAP_DECADES_BELOW / span
    ticks = "".join(f'<text x="{width * (d + HEATMAP_DECADES_BELOW) / span:.0f}" y="{top + height + 12}" '
                    f'font-size="10" text-anchor="middle">1e{d}</text>' for d in (-6, -3, 3))
    margin = 12  # room for the first tick's label, centred on the scale's left end
    return (f'<svg class="legend" width="{width + 120 + margin}" height="{top + height + 16}" role="img" '
            f'aria-label="colour scale of |a − b| over the allowed difference"><g transform="translate({margin},0)">'
            f'<rect x="0" y="{top}" width="14" height="{height}" fill="#fff" stroke="#bbb"/>{rects}'
            f'<line x1="{at:.1f}" y1="0" x2="{at:.1f}" y2="{top + height + 2}" stroke="#000" stroke-width="2"/>'
            f'<text x="{at:.1f}" y="{top + height + 12}" font-size="10" text-anchor="middle" font-weight="bold">'
            f'tolerance</text>{ticks}<rect x="{width + 8}" y="{top}" width="{height}" height="{height}" fill="#000"/>'
            f'<text x="{width + 24}" y="{top + height - 2}" font-size="10">inf / NaN</text></g></svg>')
