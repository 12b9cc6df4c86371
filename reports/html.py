"""``report.html``: the summary's content for a browser, plots embedded, failures first.

One self-contained file (CSS inline, plots as base64 PNG ``data:`` URIs), so
it can be attached to a CI run or mailed. The template is a string here
(jinja2, autoescaped), so no package data is needed.
"""
from __future__ import annotations

import base64

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from reports.diff import REGRESSIONS, counts
from reports.plots import PLOTS
from reports.summary import DIGITS_SOURCE, ReportData, digits_table, vanishing_table
from reports.table import cell

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>backprop-verify report — seed {{ data.seed }}</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; color: #1d2330;
         background: #f5f6f8; line-height: 1.45; }
  main { max-width: 1300px; margin: 0 auto; padding: 24px 32px 64px; }
  h1 { font-size: 1.7em; margin: 0 0 4px; }
  h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 2px solid #d8dce3; padding-bottom: 4px; }
  .meta { color: #555; font-size: 0.9em; }
  .meta code { background: #e8eaef; padding: 1px 5px; border-radius: 3px; }
  .banner { padding: 14px 18px; border-radius: 6px; font-size: 1.1em; margin: 16px 0; }
  .banner.ok { background: #e3f4e6; border: 1px solid #7cc08a; }
  .banner.bad { background: #fde4e4; border: 1px solid #e08a8a; }
  .env { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; font-size: 0.9em; margin: 8px 0; }
  .env dt { color: #666; } .env dd { margin: 0; font-family: monospace; }
  table { border-collapse: collapse; background: white; font-size: 0.85em; margin: 8px 0 16px; }
  th, td { border: 1px solid #dde1e7; padding: 3px 8px; text-align: left; vertical-align: top; }
  td { max-width: 520px; overflow-wrap: anywhere; }
  th, td.num, td:first-child { white-space: nowrap; }
  th { background: #eef0f4; position: sticky; top: 0; }
  td.num { text-align: right; font-family: monospace; }
  tr.fail td { background: #fde4e4; }
  tr.warn td { background: #fff4d6; }
  .scroll { max-height: 480px; overflow: auto; display: inline-block; max-width: 100%; }
  figure { background: white; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px; margin: 12px 0;
           display: inline-block; max-width: 100%; }
  figure img { max-width: 100%; height: auto; display: block; }
  figcaption { font-weight: 600; margin-bottom: 6px; }
  .na { color: #777; font-style: italic; }
  p.note { font-size: 0.88em; color: #444; max-width: 1100px; }
</style>
</head>
<body><main>
<h1>backprop-verify discrepancy report</h1>
<div class="meta">{{ data.timestamp }} · reproduce with <code>{{ data.command }}</code></div>
<dl class="env">
  <dt>Seed</dt><dd>{{ data.seed }} ({{ data.random_count }} random architectures{% if data.only %}, scenarios matching {{ data.only }}{% endif %})</dd>
  {% for name, value in data.environment.items() %}<dt>{{ name }}</dt><dd>{{ value }}</dd>{% endfor %}
</dl>
<div class="banner {{ 'bad' if totals.failures or regressed else 'ok' }}">
  <strong>{{ totals.failures }} failure{{ '' if totals.failures == 1 else 's' }}</strong>{% if changes is not none %}, <strong>{{ change_counts['new failure'] }} new failures and {{ change_counts['grown >10x'] }} discrepancies grown &gt;10×</strong> since {{ data.compared_to }}{% endif %}
  — {{ totals.scenarios }} scenarios, {{ totals.rows }} addresses compared ({{ totals.fd_scenarios }} scenarios also against finite differences);
  {{ totals.relative_passes }} passed on the relative criterion, {{ totals.floor_passes }} only on the absolute floor,
  {{ totals.not_judged }} reported but not judged.
</div>

<h2>Failures</h2>
{% if failures %}{{ failures }}{% else %}<p>None.</p>{% endif %}

{% if changes is not none %}
<h2>Changes since {{ data.compared_to }}</h2>
<p>{{ change_counts['new failure'] }} new failures, {{ change_counts['grown >10x'] }} grown more than 10×,
{{ change_counts['fixed'] }} fixed, {{ change_counts['removed'] }} scenario × pair entries no longer present.</p>
{{ changes }}
{% endif %}

<h2>Per component</h2>
<p class="note"><b>worst_max_rel</b>: the largest normwise relative discrepancy max|a−b|/max|b| among addresses that
passed on the relative criterion; <b>worst_of_tolerance</b>: the largest max_rel/tolerance among them (1 = at the
limit). <b>floor_passes</b>: addresses that passed only thanks to the absolute floor — their max_rel can be large
(up to inf) because the reference values cancel to ~0 — counted here, not in the worst. <b>not_judged</b>: trajectory
steps after the precision horizon (float32 or float64) and optimizers without a torch.optim counterpart. Rows with failures come first.</p>
{{ components }}

<h2>Plots</h2>
{% for name, caption, image in plots %}
<figure><figcaption>{{ caption }}</figcaption><img alt="{{ caption }}" src="data:image/png;base64,{{ image }}"></figure>
{% endfor %}

<h2>Vanishing gradient (document 003)</h2>
<p class="note">‖∂L/∂W⁽ˡ⁾‖_F per linear layer (1 = next to the input); the same weights and data
with sigmoid and with ReLU, computed by both engines.</p>{{ vanishing }}

<h2>Digits loss curves</h2>
<p class="note">Curves from {{ digits_source }}.</p>{{ digits }}

<h2>Textbook errata</h2>
{{ errata }}

<h2>Derivation verdicts</h2>
{{ derivations }}
</main></body></html>
"""

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
        failed[["scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance", "note"]].assign(
            failed=True), fail_column="failed", scroll=True)
    changes = data.changes
    template = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    return template.render(
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
