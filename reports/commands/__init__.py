"""The commands of ``backprop-verify``, one module each, each with
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code):
``report`` (the discrepancy report), ``check`` (printed numbers of worked
examples), ``bench`` (the benchmark). ``pytest_plugin`` and ``report_suite``
are the report's pytest front end: rows of a pytest run into
``discrepancies.csv`` (``report --workers``, ``--report-dir``) and the report's
scenario set as pytest tests."""
