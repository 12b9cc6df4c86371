"""The report's scenario set as pytest tests (``backprop-verify report --workers N``).

One test per scenario; its rows travel to the controlling process through
``reports.pytest_plugin``. Run it by path, with the plugin, e.g.

    pytest reports/report_suite.py -p reports.pytest_plugin -n 4 --report-dir reports/out
"""
from backprop_verify.reports.pytest_plugin import record_rows
from backprop_verify.reports.verification.compare import FAIL
from backprop_verify.reports.verification.runner import report_rows


def test_scenario(report_scenario, request):
    rows = report_rows(report_scenario)
    record_rows(request.node, rows)
    failed = [row for row in rows if row["status"] == FAIL]
    assert not failed, "\n".join(f"{r['pair']} {r['address']}: max_rel={r['max_rel']:.3e} > tol={r['tolerance']:.1e}"
                                 for r in failed[:20])
