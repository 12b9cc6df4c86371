"""Rows -> pandas frames -> CSV text and plain-text / Markdown tables."""
from __future__ import annotations

import csv
import io
import math
import re

import pandas as pd

from backprop_verify.reports.verification.compare import (COLUMNS, FAIL, FLOOR, NOT_JUDGED, PASS, STATUSES, TRIAGE_MEANING,
                                                          TRIAGES, WORST_COLUMNS)

FLOAT_FORMAT = "%.6e"
VALUE_FORMAT = "%.17g"  # value and reference_value: every digit, so the element's numbers read back exactly
# The headers an older discrepancies.csv may have: before ``triage``, before the worst element, and before ``status``.
BEFORE_TRIAGE = [c for c in COLUMNS if c != "triage"]
BEFORE_WORST = [c for c in BEFORE_TRIAGE if c not in WORST_COLUMNS]
BEFORE_STATUS = [c for c in BEFORE_WORST if c != "status"]
HEADERS = (list(COLUMNS), BEFORE_TRIAGE, BEFORE_WORST, BEFORE_STATUS)
_WORST_INDEX = re.compile(r"|\[[0-9]+(?:,[0-9]+)*\]")


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """The discrepancy rows, sorted so the same inputs give the same frame."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["scenario", "pair", "address"], kind="mergesort").reset_index(drop=True)


def csv_text(frame: pd.DataFrame) -> str:
    """``discrepancies.csv``: the rows sorted, floats as %.6e, NaN as ``nan``, ``\\n`` line ends.

    Written cell by cell, quoted as the csv module quotes: pandas' ``to_csv`` of the same table
    (``csv_text_plain``, the plain form) gives the same bytes (``tests/test_csv_text.py``), a hundred thousand
    rows in five times the time."""
    table = frame.reindex(columns=list(COLUMNS)).sort_values(["scenario", "pair", "address"], kind="mergesort")
    cells = [_column_text(name, table[name]) for name in COLUMNS]
    return "".join(",".join(row) + "\n" for row in [COLUMNS, *zip(*cells)])


def _column_text(name: str, column: pd.Series) -> list[str]:
    """One column's cells as ``csv_text`` writes them: numbers with ``FLOAT_FORMAT`` (``VALUE_FORMAT`` for the
    worst element's values; %-formatting writes NaN as ``nan``), missing text as ``nan`` (pandas' ``na_rep``)."""
    if name in ("max_abs", "max_rel", "tolerance", "value", "reference_value"):
        form = VALUE_FORMAT if name in ("value", "reference_value") else FLOAT_FORMAT
        if column.dtype.kind == "f":
            return [form % v for v in column.tolist()]
        return [form % float(v) if v is not None and v != "" else "nan" for v in column.tolist()]
    # Text repeats (a scenario's name on each of its rows): each distinct cell is written once.
    codes, distinct = pd.factorize(column)
    texts = [_quoted(str(v)) for v in distinct] + ["nan"]  # code −1: missing, written as pandas writes it
    return [texts[code] for code in codes.tolist()]


def _quoted(cell: str) -> str:
    """``cell`` as the csv module writes it (``QUOTE_MINIMAL``): in quotes, its quotes doubled, when it holds a
    comma, a quote or a line break."""
    if "," in cell or '"' in cell or "\n" in cell or "\r" in cell:
        return '"' + cell.replace('"', '""') + '"'
    return cell


def csv_text_plain(frame: pd.DataFrame) -> str:
    """``csv_text`` through pandas' ``to_csv``: the plain form the fast one is tested against."""
    table = rows_frame(frame.to_dict("records"))
    for column in ("value", "reference_value"):
        table[column] = [_value_text(v) for v in table[column]]
    return table.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="nan", lineterminator="\n")


def _value_text(value) -> str:
    """%.17g, NaN as ``nan`` (also for a value that is missing: a row with no element to name)."""
    if value is None or value == "":
        return "nan"
    return VALUE_FORMAT % float(value)


def read_csv_text(text: str) -> pd.DataFrame:
    """Parse ``discrepancies.csv`` back (``nan``/``inf`` as floats, empty notes as "").

    A table written before ``triage`` existed gets ``triage`` "".
    A table written before the ``status`` column existed reads without one
    (``--compare-to`` needs only ``passed``); a ``status`` outside
    ``STATUSES`` is an error. A table written before the worst element
    existed gets ``worst_index`` "" and ``value``/``reference_value`` NaN.
    """
    missing = ["nan", "NaN", ""]
    numbers = {c: missing for c in ("max_abs", "max_rel", "tolerance", "value", "reference_value")}
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=numbers,
                        dtype={"note": str, "scenario": str, "pair": str, "dtype": str, "address": str,
                               "max_abs": float, "max_rel": float, "tolerance": float, "status": str,
                               "worst_index": str, "value": float, "reference_value": float, "triage": str})
    if "worst_index" not in frame.columns:
        frame = frame.assign(worst_index="", value=float("nan"), reference_value=float("nan"))
    if "triage" not in frame.columns:
        frame = frame.assign(triage="")
    frame["passed"] = frame["passed"].astype(str).eq("True")
    if "status" in frame.columns:
        unknown = sorted(set(frame["status"]) - set(STATUSES))
        if unknown:
            raise ValueError(f"column status: {unknown[:3]}; expected one of {', '.join(STATUSES)}")
    return frame


PAIRS = ("manual-torch", "manual-fd", "torch-fd", "engine-torch", "engine-fd")  # engine-…: --engine's
DTYPES = ("float64", "float32")
_FLOAT = re.compile(r"|[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|nan|NaN)")


def validate_csv_text(text: str) -> None:
    """Raise ``ValueError("line N: PROBLEM; expected WHAT")`` unless ``text`` is a
    complete ``discrepancies.csv``.

    Complete means: the header is exactly ``COLUMNS`` (or ``COLUMNS`` without
    the trailing ``triage``, or without ``worst_index,value,reference_value`` too,
    or without those and ``status``, as written before those columns existed); every row
    has that many fields; ``max_abs``, ``max_rel``, ``tolerance``, ``value``
    and ``reference_value`` are numbers (``nan``/``inf`` allowed),
    ``worst_index`` is empty or ``[i,j,…]``, ``passed`` is ``True``/``False``,
    ``pair``, ``dtype`` and ``status`` are known values, ``passed`` agrees with
    ``status``, ``scenario`` and ``address`` are not empty; no (scenario, pair,
    address) appears twice; and the text ends with a line end (a file cut off
    mid-row is refused, not read as one row fewer).
    """
    if not text:
        raise ValueError("line 1: the file is empty; expected the header " + ",".join(COLUMNS))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as err:
        raise ValueError(f"line 1: {err}; expected the header " + ",".join(COLUMNS)) from None
    if header not in HEADERS:
        raise ValueError(f"line 1: header {','.join(header)[:200]!r}; expected {','.join(COLUMNS)} "
                         f"(or the same without triage, without {','.join(WORST_COLUMNS)} too, or without status too)")
    width = len(header)
    keys: dict[tuple[str, str, str], int] = {}
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if len(row) != width:
                raise ValueError(f"line {line}: {len(row)} fields; expected {width} ({','.join(header)})")
            record = dict(zip(header, row))
            for column in ("scenario", "address"):
                if not record[column]:
                    raise ValueError(f"line {line}: {column} is empty; expected a {column} name")
            if record["pair"] not in PAIRS:
                raise ValueError(f"line {line}: pair {record['pair'][:40]!r}; expected one of {', '.join(PAIRS)}")
            if record["dtype"] not in DTYPES:
                raise ValueError(f"line {line}: dtype {record['dtype'][:40]!r}; expected one of {', '.join(DTYPES)}")
            for column in ("max_abs", "max_rel", "tolerance", "value", "reference_value"):
                if column in record and not _FLOAT.fullmatch(record[column]):
                    raise ValueError(f"line {line}: {column} {record[column][:40]!r}; expected a number "
                                     "(nan, inf or empty allowed)")
            if "worst_index" in record and not _WORST_INDEX.fullmatch(record["worst_index"]):
                raise ValueError(f"line {line}: worst_index {record['worst_index'][:40]!r}; expected [i,j,…] "
                                 "(non-negative integers) or empty")
            if record.get("triage", "") not in ("", *TRIAGES):
                raise ValueError(f"line {line}: triage {record['triage'][:40]!r}; expected empty or one of "
                                 f"{', '.join(TRIAGES)}")
            if record["passed"] not in ("True", "False"):
                raise ValueError(f"line {line}: passed {record['passed'][:40]!r}; expected True or False")
            if "status" in record:
                if record["status"] not in STATUSES:
                    raise ValueError(f"line {line}: status {record['status'][:40]!r}; expected one of "
                                     f"{', '.join(STATUSES)}")
                if (record["passed"] == "True") != (record["status"] != FAIL):
                    raise ValueError(f"line {line}: passed {record['passed']} with status {record['status']}; "
                                     "expected passed to be True exactly when status is not fail")
            key = (record["scenario"], record["pair"], record["address"])
            if key in keys:
                raise ValueError(f"line {line}: {', '.join(key)} appears again (first on line {keys[key]}); "
                                 "expected each (scenario, pair, address) once")
            keys[key] = line
    except csv.Error as err:
        raise ValueError(f"line {reader.line_num}: {err}; expected a CSV row of {width} fields") from None
    if not text.endswith("\n"):
        raise ValueError(f"line {max(line, reader.line_num)}: the file ends in the middle of a row (no line end); "
                         "expected a complete file ending with a line end")


def floor_pass(frame: pd.DataFrame) -> pd.Series:
    """Rows that passed only thanks to the absolute floor (status ``floor``)."""
    return frame["status"].eq(FLOOR)


def unjudged(frame: pd.DataFrame) -> pd.Series:
    """Rows reported but not judged (status ``not_judged``): trajectory steps
    after the precision horizon, optimizers without a torch.optim counterpart, fd rows that are all blind spots."""
    return frame["status"].eq(NOT_JUDGED)


def relative_pass(frame: pd.DataFrame) -> pd.Series:
    """Rows that passed on the relative criterion max|a−b| ≤ rtol·max|b| (status ``pass``)."""
    return frame["status"].eq(PASS)


def failed(frame: pd.DataFrame) -> pd.Series:
    """Rows that failed (status ``fail``)."""
    return frame["status"].eq(FAIL)


SUMMARY_COLUMNS = ["component", "dtype", "pair", "scenarios", "addresses", "worst_max_rel", "worst_of_tolerance",
                   "floor_passes", "not_judged", "failures"]


def component_summary(frame: pd.DataFrame, components: dict[str, list[str]]) -> pd.DataFrame:
    """Per component, dtype and engine pair: scenarios, addresses compared, the
    worst ``max_rel`` among rows that passed on the relative criterion (and that
    worst as a fraction of its tolerance), rows that passed only on the absolute
    floor (counted, not in the worst), rows reported but not judged (after the
    float32 horizon; no torch reference — counted, not in the worst), failures.

    ``components`` maps scenario name -> the components it exercises.
    """
    work = frame.assign(relative=relative_pass(frame), floor=floor_pass(frame), unjudged=unjudged(frame),
                        failed=failed(frame))
    work = work.assign(rel_value=work["max_rel"].where(work["relative"]),
                       ratio=(work["max_rel"] / work["tolerance"]).where(work["relative"]))
    per_scenario = work.groupby(["scenario", "dtype", "pair"], sort=True).agg(
        addresses=("address", "size"), worst=("rel_value", "max"), ratio=("ratio", "max"),
        floor_passes=("floor", "sum"), not_judged=("unjudged", "sum"),
        failures=("failed", "sum")).reset_index()
    exploded = per_scenario.assign(component=per_scenario["scenario"].map(
        lambda name: components.get(name, ["(unknown)"]))).explode("component")
    summary = exploded.groupby(["component", "dtype", "pair"], sort=True).agg(
        scenarios=("scenario", "nunique"), addresses=("addresses", "sum"),
        worst_max_rel=("worst", "max"), worst_of_tolerance=("ratio", "max"),
        floor_passes=("floor_passes", "sum"), not_judged=("not_judged", "sum"),
        failures=("failures", "sum")).reset_index()
    for column in ("scenarios", "addresses", "floor_passes", "not_judged", "failures"):
        summary[column] = summary[column].astype(int)
    return summary[SUMMARY_COLUMNS]


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """The failing rows, worst relative discrepancy first."""
    return frame[failed(frame)].sort_values(["max_rel", "scenario", "pair", "address"], ascending=[False, True, True, True],
                              kind="mergesort").reset_index(drop=True)


def markdown(frame: pd.DataFrame, floatfmt: str = ".2e") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    headers = [str(c) for c in frame.columns]
    cells = [[cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def cell(value, floatfmt: str = ".2e") -> str:
    """One table cell as text: floats in ``floatfmt``, NaN as an em dash."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return format(value, floatfmt)
    if value is None:
        return "—"
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


MAX_FAILURE_LINES = 100
_SIDES = {"manual-torch": ("manual", "torch"), "manual-fd": ("manual", "fd"), "torch-fd": ("torch", "fd"),
          "engine-torch": ("engine", "torch"), "engine-fd": ("engine", "fd")}


def failure_line(row) -> str:
    """``FAIL scenario pair address[i,j]: manual V, torch R (|a−b| D, max_rel M, tolerance T) — triage: meaning``,
    values %.17g; the triage (which side is the odd one out) when the row has one."""
    side, reference_side = _SIDES.get(row["pair"], ("a", "b"))
    element = f"{row['address']}{row['worst_index']}" if isinstance(row["worst_index"], str) else row["address"]
    if row["value"] == row["value"] or row["reference_value"] == row["reference_value"]:  # not both NaN
        values = f"{side} {row['value']:.17g}, {reference_side} {row['reference_value']:.17g}"
    else:
        values = "no element to compare"
    note = f"; {row['note']}" if row["note"] else ""
    triage = row.get("triage") or ""
    odd_one_out = f" — {triage}: {TRIAGE_MEANING[triage]}" if triage in TRIAGE_MEANING else ""
    if side == "engine":  # the triage's "manual" is the engine under test (the column keeps its values)
        odd_one_out = odd_one_out.replace("manual", "engine").replace("the hand derivation", "the engine")
    return (f"FAIL {row['scenario']} {row['pair']} {element}: {values} (|a−b| {row['max_abs']:.3e}, "
            f"max_rel {row['max_rel']:.3e}, tolerance {row['tolerance']:.1e}{note}){odd_one_out}")


def failure_lines(frame, limit: int = MAX_FAILURE_LINES) -> list[str]:
    """One line per failing row, worst max_rel first, at most ``limit`` (then one line saying how many more)."""
    failed = failures(frame)
    lines = [failure_line(row) for row in failed.head(limit).to_dict("records")]
    if len(failed) > limit:
        lines.append(f"… and {len(failed) - limit} more failures in discrepancies.csv")
    return lines
