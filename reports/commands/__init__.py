"""The commands of ``backprop-verify``, one module each, each with
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code):
``report`` (the discrepancy report), ``check`` (printed numbers of worked
examples), ``bench`` (the benchmark)."""
