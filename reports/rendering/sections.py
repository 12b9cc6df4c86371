"""The per-scenario sections of ``report.html``.

A scenario gets a section when it has a row with status ``fail``, ``floor`` or
``not_judged``, or when its name matches ``report --detail REGEX``; failing
scenarios first, then floor passes, then not-judged rows, then ``--detail``
matches, each group by name — at most ``MAX_SECTIONS`` in all (the page says
how many were left out). A section holds

* the network as one line (``architecture``);
* the scenario's compared addresses with their status, non-passing rows and
  then the largest max_rel/tolerance first, at most ``MAX_SECTION_ROWS`` of
  them (the rest, all passing, are in ``discrepancies.csv``);
* for its ``HEATMAPS_PER_SECTION`` worst addresses a heatmap of |a − b| over
  the allowed difference tolerance · max|b| (``plots.heatmap_png``): one
  matrix for a vector or a matrix, one per leading index (``[n,c,:,:]``: per
  channel) for N-D tensors, at most ``MAX_TILES`` of them (those holding the
  largest differences).

The arrays are not computed here: they come from the traces each scenario was
verified with, taken right after it was verified and only for the scenarios
that will get a section (``keep_maps``: the first ``MAX_SECTIONS`` by
``section_key``, so memory stays bounded), in the report's process or — with
``report --workers N`` — in the pytest-xdist worker that verified the scenario,
which ships them to the report (``reports.verification.detail.KeptMaps``). No
engine runs again for a section.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backprop_verify.reports.rendering.io import checkpoint
from backprop_verify.reports.rendering.plots import heatmap_png, reduce_for_heatmap
from backprop_verify.reports.rendering.table import csv_text, read_csv_text, rows_frame
from backprop_verify.reports.verification.compare import FAIL, FLOOR, NOT_JUDGED, PASS
from backprop_verify.reports.verification.detail import KeptMaps, Maps, difference_maps
from backprop_verify.scenarios.model import Scenario

MAX_SECTIONS = 30
MAX_SECTION_ROWS = 100
HEATMAPS_PER_SECTION = 4
MAX_TILES = 12
_RANK = {FAIL: 0, FLOOR: 1, NOT_JUDGED: 2, PASS: 3}
SECTION_COLUMNS = ["pair", "address", "status", "max_abs", "max_rel", "tolerance", "worst_index", "value",
                   "reference_value", "note"]


def anchor(name: str) -> str:
    """The id of a scenario's section: ``scenario-`` and the name (characters outside [A-Za-z0-9_.-] as _)."""
    return "scenario-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class Tile:
    label: str            # "" for a vector or matrix, "[n,c,:,:]" for one channel of an N-D tensor
    png_base64: str
    width: int            # displayed size in CSS pixels
    height: int
    block: int = 1        # > 1: each pixel is the maximum of block × block elements


@dataclass
class Heatmap:
    pair: str
    address: str
    status: str
    shape: tuple
    worst_index: str
    allowed: float        # tolerance · max|b|: where blue turns red
    max_ratio: float
    tiles: list[Tile] = field(default_factory=list)
    tiles_left_out: int = 0


@dataclass
class Section:
    name: str
    anchor: str
    reason: str                     # "fail", "floor", "not_judged" or "detail"
    architecture: str
    counts: dict[str, int]
    rows: pd.DataFrame              # at most MAX_SECTION_ROWS rows, SECTION_COLUMNS
    rows_left_out: int
    heatmaps: list[Heatmap]


_REASONS = (FAIL, FLOOR, NOT_JUDGED)


def section_key(name: str, statuses, detail: str | None = None) -> tuple[int, str] | None:
    """Where a scenario's section stands on the page, (group, name) — failing scenarios first, then floor
    passes, then not-judged rows, then ``--detail`` matches — or None if it gets no section."""
    present = set(statuses)
    for group, status in enumerate(_REASONS):
        if status in present:
            return group, name
    if detail and re.search(detail, name):
        return len(_REASONS), name
    return None


def section_names(frame: pd.DataFrame, detail: str | None = None) -> tuple[list[str], int]:
    """(names of the scenarios that get a section, in page order; how many more would have had one)."""
    keys = [section_key(name, rows["status"], detail) for name, rows in frame.groupby("scenario", sort=False)]
    names = [name for _, name in sorted(key for key in keys if key is not None)]
    return names[:MAX_SECTIONS], max(0, len(names) - MAX_SECTIONS)


def heatmap_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of one scenario that get a heatmap: its ``HEATMAPS_PER_SECTION`` worst addresses
    (``_ordered``) that name one array (not ``step*``)."""
    ordered = _ordered(rows)
    return ordered[~ordered["address"].str.contains("*", regex=False)].head(HEATMAPS_PER_SECTION)


def keep_maps(kept: KeptMaps, verified, detail: str | None = None) -> None:
    """Offer one verified scenario (a ``runner.Verification``) to ``kept``: if it will get a section and
    is among the first ``kept.limit``, its heatmaps' |a − b| arrays are taken from its traces now.

    The worst addresses are chosen from the rows as ``discrepancies.csv`` holds them (rounded to its
    digits), exactly as ``build_sections`` orders them later."""
    name = verified.scenario.name
    key = section_key(name, [row["status"] for row in verified.rows], detail)
    if key is None or not kept.wants(name, key):
        return
    rows = read_csv_text(csv_text(rows_frame(verified.rows)))
    worst = heatmap_rows(rows)
    kept.keep(name, key, difference_maps(verified, list(zip(worst["pair"], worst["address"]))))


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Non-passing rows first (fail, floor, not_judged), then the largest max_rel / tolerance."""
    ratio = (rows["max_rel"] / rows["tolerance"]).fillna(np.inf)
    return rows.assign(rank=rows["status"].map(_RANK), ratio=-ratio).sort_values(
        ["rank", "ratio", "pair", "address"], kind="mergesort").drop(columns=["rank", "ratio"])


def architecture(scenario: Scenario) -> str:
    """The network on one line: input, each layer with its sizes and options, the loss, the optimizer."""
    shape = "×".join(str(n) for n in np.shape(scenario.x))
    parts = [f"x {shape} {scenario.dtype}"]
    parts += [_layer_text(layer) for layer in scenario.layers]
    parts.append(f"{scenario.loss.type}({scenario.loss.reduction})")
    line = " → ".join(parts)
    if scenario.optimizer is not None:
        line += f"; {scenario.optimizer.label()} lr={scenario.optimizer.learning_rate:g}, " \
                f"{scenario.optimizer.steps} update{'s' * (scenario.optimizer.steps != 1)}"
    return line


def _layer_text(layer) -> str:
    """One layer with its sizes and options; a residual block as ``residual[its layers]``; a tie as
    ``tied_to …``."""
    if layer.layers:
        return f"{layer.type}[" + " → ".join(_layer_text(inner) for inner in layer.layers) + "]"
    text = layer.type
    if layer.weight is not None and np.ndim(layer.weight) == 2 and layer.type == "linear":
        out, inputs = np.shape(layer.weight)
        text += f" {inputs}→{out}"
    elif layer.weight is not None and np.ndim(layer.weight) == 4:
        out, inputs, kh, kw = np.shape(layer.weight)
        text += f" {inputs}→{out} {kh}×{kw}"
    options = [f"{k}={_short(v)}" for k, v in sorted(layer.params.items())
               if k not in ("in_features", "out_features")]
    options += [f"{name} tied_to {owner}" for name, owner in layer.tied.items()]
    options += [f"{name} given" for name in layer.masks]
    if options:
        text += "(" + ", ".join(options) + ")"
    return text


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_short(v) for v in value) + ")"
    return str(value)


def _tiles(ratio: np.ndarray) -> tuple[list[tuple[str, np.ndarray]], int]:
    """The 2-D pieces of an array of ratios: a vector as one row, a matrix as itself, an N-D tensor
    one matrix per leading index (its channels), at most MAX_TILES of them (the largest first chosen,
    shown in index order)."""
    if ratio.ndim == 0:
        return [], 0
    if ratio.ndim <= 2:
        return [("", np.atleast_2d(ratio))], 0
    lead = ratio.shape[:-2]
    flat = ratio.reshape((-1,) + ratio.shape[-2:])
    largest = np.nan_to_num(flat.reshape(len(flat), -1).max(axis=1), nan=np.inf)
    chosen = sorted(np.argsort(-largest, kind="stable")[:MAX_TILES].tolist())
    tiles = [("[" + ",".join(map(str, np.unravel_index(i, lead))) + ",:,:]", flat[i]) for i in chosen]
    return tiles, len(flat) - len(chosen)


def heatmap(pair: str, address: str, status: str, worst_index: str, tolerance: float,
            difference: np.ndarray, reference_max: float) -> Heatmap:
    allowed = tolerance * reference_max if np.isfinite(tolerance) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = difference / allowed if allowed > 0 else np.where(difference > 0, np.inf, 0.0)
    pieces, left_out = _tiles(ratio)
    tiles = []
    for label, matrix in pieces:
        reduced, block = reduce_for_heatmap(matrix)
        rows, columns = reduced.shape
        pixels = int(max(3, min(32, 200 // max(rows, columns))))
        tiles.append(Tile(label, base64.b64encode(heatmap_png(reduced)).decode("ascii"),
                          columns * pixels, rows * pixels, block))
    max_ratio = float(np.max(ratio)) if ratio.size else 0.0
    return Heatmap(pair, address, status, tuple(difference.shape), worst_index, allowed, max_ratio, tiles, left_out)


def build_sections(frame: pd.DataFrame, scenarios: dict[str, Scenario], detail: str | None = None,
                   maps: dict[str, Maps] | None = None) -> tuple[list[Section], int]:
    """(the sections, how many scenarios were left out by ``MAX_SECTIONS``).

    ``maps``: {scenario name: its |a − b| arrays} (``KeptMaps.maps()``, filled by ``keep_maps`` while
    the scenarios were verified); a section without them has no heatmaps.
    """
    maps = maps or {}
    names, left_out = section_names(frame, detail)
    by_scenario = dict(tuple(frame.groupby("scenario", sort=False)))
    sections = []
    for name in names:
        checkpoint()  # a Ctrl-C or SIGTERM between scenarios, never inside torch
        rows = _ordered(by_scenario[name])
        statuses = rows["status"].value_counts()
        counts = {s: int(statuses.get(s, 0)) for s in (FAIL, FLOOR, NOT_JUDGED, PASS)}
        reason = next((s for s in (FAIL, FLOOR, NOT_JUDGED) if counts[s]), "detail")
        scenario = scenarios.get(name)
        heatmaps = []
        if scenario is not None:
            arrays = maps.get(name, {})
            for row in heatmap_rows(rows).itertuples(index=False):
                found = arrays.get((row.pair, row.address))
                if found is not None and np.ndim(found[0]) > 0:
                    heatmaps.append(heatmap(row.pair, row.address, row.status, row.worst_index, row.tolerance,
                                            *found))
        sections.append(Section(
            name=name, anchor=anchor(name), reason=reason,
            architecture=architecture(scenario) if scenario is not None else "(scenario not in this run)",
            counts=counts, rows=rows[SECTION_COLUMNS].head(MAX_SECTION_ROWS).reset_index(drop=True),
            rows_left_out=max(0, len(rows) - MAX_SECTION_ROWS), heatmaps=heatmaps))
    return sections, left_out
