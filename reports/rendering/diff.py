"""``--compare-to``: what changed since an earlier report.

Rows are matched on (scenario, pair, address). A change is one of

* ``new failure``  — fails now; passed before, or did not exist before;
* ``grown >10x``   — still passes, but max_rel grew by more than ``GROWTH``
  (10×) over max(old max_rel, unit roundoff of the dtype): a discrepancy
  that went from 0 to a few ulps is rounding, not a regression;
* ``fixed``        — passed now, failed before;
* ``removed``      — in the old report only (a scenario renamed or dropped, or
  a smaller ``--random``); listed once per scenario and pair, with the
  number of addresses.

The first two are regressions: ``backprop-verify report --compare-to`` exits
with 1 when there is any.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from backprop_verify.reports.rendering.table import read_csv_text, validate_csv_text
from backprop_verify.reports.verification.compare import FAIL
from backprop_verify.reports.verification.tolerance import UNIT_ROUNDOFF

GROWTH = 10.0
KEY = ["scenario", "pair", "address"]
REGRESSIONS = ("new failure", "grown >10x")
CHANGE_COLUMNS = ["change", "scenario", "pair", "dtype", "address", "old_max_rel", "new_max_rel", "tolerance"]
_ORDER = {"new failure": 0, "grown >10x": 1, "fixed": 2, "removed": 3}


class CompareError(ValueError):
    """The old report cannot be read."""


def read_old(folder: str | Path) -> pd.DataFrame:
    """The ``discrepancies.csv`` of an earlier report, validated in full
    (``table.validate_csv_text``) before anything runs: a damaged or cut-off
    file is refused with its line number, never read as a smaller table. If
    the folder's ``summary.md`` records how many addresses it compared, the
    table must have that many rows."""
    path = Path(folder) / "discrepancies.csv"
    if not path.is_file():
        problem = "not a regular file" if path.exists() else "no such file"
        raise CompareError(f"--compare-to: {path}: {problem}; expected a folder written by backprop-verify report")
    try:
        size = path.stat().st_size
        if size > MAX_OLD_BYTES:
            raise CompareError(f"--compare-to: {path}: {size} bytes; expected at most {MAX_OLD_BYTES} "
                               "(a discrepancies.csv of the default run is ~13 MB)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CompareError(f"--compare-to: {path}: byte {err.start} is not UTF-8; expected a CSV file written by "
                           "backprop-verify report") from None
    except OSError as err:
        raise CompareError(f"--compare-to: {path}: cannot be read ({err.strerror}); expected a readable file") from None
    try:
        validate_csv_text(text)
    except ValueError as err:
        raise CompareError(f"--compare-to: {path}: {err}") from None
    frame = read_csv_text(text)
    recorded = _recorded_row_count(Path(folder) / "summary.md")
    if recorded is not None and recorded != len(frame):
        raise CompareError(f"--compare-to: {path}: {len(frame)} rows, but {Path(folder) / 'summary.md'} records "
                           f"{recorded} addresses compared; expected the table the summary was written from")
    return frame


MAX_OLD_BYTES = 1 << 30
_RECORDED = re.compile(r"^[0-9]+ scenarios, ([0-9]+) addresses compared", re.MULTILINE)


def _recorded_row_count(summary: Path) -> int | None:
    """The number of addresses (rows) a report's summary.md says it compared, if it says so."""
    try:
        text = summary.read_text(encoding="utf-8", errors="replace") if summary.is_file() else ""
    except OSError:
        return None
    found = _RECORDED.search(text)
    return int(found.group(1)) if found else None


def changes(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per changed (scenario, pair, address), regressions first."""
    merged = new.merge(old[KEY + ["max_rel", "passed", "dtype"]], on=KEY, how="outer", suffixes=("", "_old"),
                       indicator=True)
    # The new side is judged by its status; the old by ``passed`` (a table
    # written before the status column existed has no status).
    merged["dtype"] = merged["dtype"].fillna(merged["dtype_old"])
    is_new = merged["_merge"] != "right_only"
    was_there = merged["_merge"] != "left_only"
    passed = merged["status"].notna() & merged["status"].ne(FAIL)
    passed_old = merged["passed_old"].astype("boolean").fillna(False).astype(bool)
    roundoff = merged["dtype"].map(UNIT_ROUNDOFF).fillna(UNIT_ROUNDOFF["float64"]).astype(float)
    baseline = np.maximum(merged["max_rel_old"].astype(float).fillna(0.0), roundoff)
    grown = is_new & was_there & passed & (merged["max_rel"].astype(float) > GROWTH * baseline)

    change = pd.Series("", index=merged.index, dtype=object)
    change[is_new & ~passed & (~was_there | passed_old)] = "new failure"
    change[grown] = "grown >10x"
    change[is_new & was_there & passed & ~passed_old] = "fixed"
    change[~is_new] = "removed"
    out = merged.assign(change=change, old_max_rel=merged["max_rel_old"], new_max_rel=merged["max_rel"])
    out = out[out["change"] != ""]
    removed = out[out["change"] == "removed"]
    if not removed.empty:
        collapsed = removed.groupby(["scenario", "pair"], sort=True).agg(
            dtype=("dtype", "first"), address=("address", "size"), old_max_rel=("old_max_rel", "max")).reset_index()
        collapsed = collapsed.assign(change="removed", new_max_rel=float("nan"), tolerance=float("nan"),
                                     address=collapsed["address"].map(lambda n: f"({n} addresses)"))
        out = pd.concat([out[out["change"] != "removed"], collapsed], ignore_index=True)
    out = out.assign(order=out["change"].map(_ORDER))
    out = out.sort_values(["order"] + KEY, kind="mergesort")
    return out[CHANGE_COLUMNS].reset_index(drop=True)


def regressed(table: pd.DataFrame) -> bool:
    return bool(table["change"].isin(REGRESSIONS).any())


def counts(table: pd.DataFrame) -> dict[str, int]:
    """Changes per kind; ``removed`` counts scenario × pair entries."""
    return {name: int((table["change"] == name).sum()) for name in _ORDER}
