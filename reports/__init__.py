"""What reads the results: verification, textbook checks, rendering, the
benchmark and the command line, one subpackage each; imports run one way.

``cli``            the ``backprop-verify`` command line (dispatch only)
``commands``       ``report``, ``check``, ``bench``; ``pytest_plugin`` and ``report_suite``, the report's
                   pytest front end (``report --workers``, ``--report-dir``)
``rendering``      tables, ``summary.md``, ``report.html``, plots, ``--compare-to``, atomic writes
``bench``          the benchmark's measurements
``textbook``       printed numbers (errata) and stated formulas (derivations)
``verification``   tolerance policy, comparison, runner, precision horizons

Nothing is imported here, so ``import reports`` costs nothing.
"""
