"""``report.html``: the summary's content for a browser, plots embedded, failures first.

One self-contained file (CSS inline, plots as base64 PNG ``data:`` URIs), so
it can be attached to a CI run or mailed. The page is the Jinja2 template
``templates/report.html.j2`` (package data, autoescaped); this module turns
the report's frames into the HTML tables it places.
"""
from __future__ import annotations

import base64

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from reports.rendering.diff import REGRESSIONS, counts
from reports.rendering.plots import PLOTS
from reports.rendering.summary import DIGITS_SOURCE, ReportData, digits_table, vanishing_table
from reports.rendering.table import cell

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("reports.rendering", "templates"), autoescape=True)

_BAD_WORDS = ("erratum", "disagree", "wrong", "fail", "new failure", "grown")


def table_html(frame: pd.DataFrame, floatfmt: str = ".2e", fail_column: str | None = None,
               scroll: bool = False) -> str:
    """A plain HTML table; rows where ``fail_column`` is truthy (or names a bad verdict) are red."""
    esc = escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in frame.columns)
    body = []
    for record in frame.itertuples(index=False):
        values = dict(zip(frame.columns, record))
        css = ""
        if fail_column is not None and fail_column in values:
            flag = values[fail_column]
            bad = (isinstance(flag, str) and any(word in flag.lower() for word in _BAD_WORDS)) or \
                  (not isinstance(flag, str) and bool(flag) and flag == flag)
            css = ' class="fail"' if bad else ""
        cells = []
        for value in record:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(cell(value, floatfmt))}</td>' if numeric
                         else f"<td>{esc(cell(value, floatfmt))}</td>")
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def _bad_first(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    bad = frame[column].astype(str).str.lower().map(lambda v: any(w in v for w in _BAD_WORDS))
    return pd.concat([frame[bad], frame[~bad]]).reset_index(drop=True)


def render_html(data: ReportData, plots: dict[str, bytes]) -> str:
    totals = data.totals()
    by_component = data.by_component
    by_component = by_component.sort_values("failures", ascending=False, kind="mergesort")
    failed = data.failures
    failures_html = "" if failed.empty else table_html(
        failed[["scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance", "status", "note"]],
        fail_column="status", scroll=True)
    changes = data.changes
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data, totals=totals,
        regressed=changes is not None and bool(changes["change"].isin(REGRESSIONS).any()),
        change_counts=counts(changes) if changes is not None else {},
        failures=Markup(failures_html),
        changes=None if changes is None else Markup(
            table_html(changes, fail_column="change", scroll=True) if not changes.empty else "<p>No changes.</p>"),
        components=Markup(table_html(by_component, fail_column="failures")),
        plots=[(name, caption, base64.b64encode(plots[name]).decode("ascii"))
               for name, caption in PLOTS.items() if name in plots],
        vanishing=Markup(table_html(vanishing_table(data.vanishing), floatfmt=".3e")),
        digits=Markup(table_html(digits_table(data.digits), floatfmt=".6g")), digits_source=DIGITS_SOURCE,
        errata=Markup(table_html(_bad_first(data.errata, "verdict"), floatfmt=".6g", fail_column="verdict",
                                 scroll=True)),
        derivations=Markup(table_html(_bad_first(data.derivations, "verdict"), floatfmt=".6g",
                                      fail_column="verdict", scroll=True)),
    )
