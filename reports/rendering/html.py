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

from backprop_verify.reports.rendering.diff import REGRESSIONS, counts
from backprop_verify.reports.rendering.plots import PLOTS
from backprop_verify.reports.rendering.summary import ReportData, recurrent_sentence
from backprop_verify.reports.rendering.plots import heatmap_legend_svg
from backprop_verify.reports.rendering.sections import MAX_SECTIONS, MAX_SECTION_ROWS, SECTION_COLUMNS
from backprop_verify.reports.rendering.table import cell
from backprop_verify.reports.verification.compare import FAIL, FLOOR, NOT_JUDGED

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("backprop_verify.reports.rendering", "templates"), autoescape=True)

_BAD_WORDS = ("erratum", "disagree", "wrong", "fail", "new failure", "grown")


def table_html(frame: pd.DataFrame, floatfmt: str = ".2e", fail_column: str | None = None,
               scroll: bool = False, status_column: str | None = None, table_id: str | None = None) -> str:
    """An HTML table, sortable and filterable in the page (``sortable``: the page's script);
    rows where ``fail_column`` is truthy (or names a bad verdict) are red; with ``status_column``,
    ``fail`` rows are red and ``floor`` / ``not_judged`` rows yellow. A ``Markup`` value (a link) is
    placed as it is."""
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
        if status_column is not None and status_column in values:
            css = {FAIL: ' class="fail"', FLOOR: ' class="warn"', NOT_JUDGED: ' class="warn"'}.get(
                str(values[status_column]), "")
        cells = []
        for value in record:
            if isinstance(value, Markup):
                cells.append(f"<td>{value}</td>")
                continue
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(cell(value, floatfmt))}</td>' if numeric
                         else f"<td>{esc(cell(value, floatfmt))}</td>")
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    table = f'<table class="sortable"{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{table}</div>' if scroll else table


def _values_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """value and reference_value with every digit (%.17g), as in discrepancies.csv."""
    out = frame.copy()
    for column in ("value", "reference_value"):
        if column in out.columns:
            out[column] = [("—" if v != v else "%.17g" % v) if isinstance(v, float) else v for v in out[column]]
    return out


def _linked(frame: pd.DataFrame, anchors: dict[str, str]) -> pd.DataFrame:
    """The scenario column as links to the scenario's section, where it has one."""
    out = frame.copy()
    out["scenario"] = [Markup(f'<a href="#{escape(anchors[n])}">{escape(n)}</a>') if n in anchors else n
                       for n in out["scenario"]]
    return out


def _bad_first(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    bad = frame[column].astype(str).str.lower().map(lambda v: any(w in v for w in _BAD_WORDS))
    return pd.concat([frame[bad], frame[~bad]]).reset_index(drop=True)


ROW_COLUMNS = ["scenario", "pair", "dtype", "address", "status", "triage", "max_abs", "max_rel", "tolerance", "worst_index",
               "value", "reference_value", "note"]


def render_html(data: ReportData, plots: dict[str, bytes]) -> str:
    totals = data.totals()
    by_component = data.by_component
    by_component = by_component.sort_values("failures", ascending=False, kind="mergesort")
    anchors = {section.name: section.anchor for section in data.sections}
    failed = data.failures
    failures_html = "" if failed.empty else table_html(
        _linked(_values_as_text(failed[ROW_COLUMNS]), anchors), fail_column="status", scroll=True,
        table_id="failures")
    frame = data.frame
    attention = frame[frame["status"].isin([FLOOR, NOT_JUDGED])]
    attention = attention.assign(rank=attention["status"].map({FLOOR: 0, NOT_JUDGED: 1})).sort_values(
        ["rank", "scenario", "pair", "address"], kind="mergesort")
    attention_html = "" if attention.empty else table_html(
        _linked(_values_as_text(attention[ROW_COLUMNS]), anchors), status_column="status", scroll=True,
        table_id="floor-and-not-judged")
    sections = [{
        "section": section,
        "rows": Markup(table_html(_values_as_text(section.rows[SECTION_COLUMNS]), status_column="status",
                                  scroll=True)),
    } for section in data.sections]
    changes = data.changes
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data, totals=totals,
        regressed=changes is not None and bool(changes["change"].isin(REGRESSIONS).any()),
        change_counts=counts(changes) if changes is not None else {},
        failures=Markup(failures_html), attention=Markup(attention_html), attention_count=len(attention),
        sections=sections, sections_left_out=data.sections_left_out, max_sections=MAX_SECTIONS,
        max_section_rows=MAX_SECTION_ROWS, legend=Markup(heatmap_legend_svg()),
        changes=None if changes is None else Markup(
            table_html(changes, fail_column="change", scroll=True) if not changes.empty else "<p>No changes.</p>"),
        components=Markup(table_html(by_component, fail_column="failures", table_id="components")),
        plots=[(name, caption, base64.b64encode(plots[name]).decode("ascii"))
               for name, caption in PLOTS.items() if name in plots],
        vanishing=Markup(table_html(data.vanishing.table, floatfmt=".3e", scroll=True)),  # wider than the page
        recurrent=Markup(table_html(data.recurrent.table, floatfmt=".3e")),
        recurrent_sentence=recurrent_sentence(data.recurrent),
        attention_blocks=Markup("" if data.attention is None else table_html(data.attention, floatfmt=".4e")),
        digits=Markup(table_html(data.digits.table, floatfmt=".6g")), digits_source=data.digits.source,
        errata=Markup(table_html(_bad_first(data.errata, "verdict"), floatfmt=".6g", fail_column="verdict",
                                 scroll=True)),
        derivations=Markup(table_html(_bad_first(data.derivations, "verdict"), floatfmt=".6g",
                                      fail_column="verdict", scroll=True)),
    )
