"""The report's scenario set as pytest tests (``backprop-verify report --workers N``).

One test per scenario; its rows (and, with ``--report-maps``, its section's
difference maps) travel to the controlling process through
``reports.commands.pytest_plugin``. Run it by module name, with the plugin, e.g.

    pytest --pyargs backprop_verify.reports.commands.report_suite \
        -p backprop_verify.reports.commands.pytest_plugin -n 4 --report-dir reports/out
"""
from backprop_verify.reports.commands.pytest_plugin import record_verification
from backprop_verify.reports.verification.compare import FAIL
from backprop_verify.reports.verification.runner import report_verification


def test_scenario(report_scenario, request):
    verified = report_verification(report_scenario)
    record_verification(request.node, verified)
    failed = [row for row in verified.rows if row["status"] == FAIL]
    assert not failed, "\n".join(f"{r['pair']} {r['address']}: max_rel={r['max_rel']:.3e} > tol={r['tolerance']:.1e}"
                                 for r in failed[:20])
