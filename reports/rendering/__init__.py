"""Rendering: the rows and tables of a report turned into files people read.

``table``      rows → frames, ``discrepancies.csv`` text, Markdown tables
``summary``    ``summary.md`` (and ``ReportData``, everything a report shows)
``html``       ``report.html`` from ``templates/report.html.j2``
``plots``      the PNG plots (matplotlib's Agg canvas, no pyplot state)
``diff``       ``--compare-to``: what changed since an earlier report
``io``         atomic writes: every file replaced, or none
"""
