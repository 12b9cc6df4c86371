"""Rows -> pandas frames -> plain-text / Markdown tables."""
from __future__ import annotations

import math

import pandas as pd

from reports.runner import COLUMNS


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """The discrepancy rows, sorted so the same inputs give the same frame."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["scenario", "pair", "address"], kind="mergesort").reset_index(drop=True)


def component_summary(frame: pd.DataFrame, components: dict[str, list[str]]) -> pd.DataFrame:
    """Per component and dtype: scenarios, addresses compared, worst max_rel, failures.

    ``components`` maps scenario name -> the components it exercises.
    """
    records = []
    for scenario, group in frame.groupby("scenario", sort=True):
        for component in components.get(scenario, ["(unknown)"]):
            for (dtype, pair), g in group.groupby(["dtype", "pair"], sort=True):
                records.append({"component": component, "dtype": dtype, "pair": pair, "scenario": scenario,
                                "addresses": len(g), "worst": g["max_rel"].max(), "failures": int((~g["passed"]).sum())})
    detail = pd.DataFrame(records, columns=["component", "dtype", "pair", "scenario", "addresses", "worst", "failures"])
    summary = detail.groupby(["component", "dtype", "pair"], sort=True).agg(
        scenarios=("scenario", "nunique"), addresses=("addresses", "sum"),
        worst_max_rel=("worst", "max"), failures=("failures", "sum")).reset_index()
    return summary


def markdown(frame: pd.DataFrame, floatfmt: str = ".2e") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    headers = [str(c) for c in frame.columns]
    cells = [[_cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _cell(value, floatfmt: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return format(value, floatfmt)
    return str(value)
