"""The benchmark's measurements (``measure``): the manual engine against torch
autograd, the matmul peak, verification throughput and the suite's wall time.
The ``bench`` command that runs and prints them is ``reports.commands.bench``.
"""
