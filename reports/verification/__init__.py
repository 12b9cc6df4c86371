"""Verification: the tolerance policy, the comparison of two Traces (each row
with a status), the runner that gives every report row, and the trajectory
judgement (precision horizons).

``tolerance``  the one tolerance policy, keyed by dtype, engine pair and step
``compare``    Trace against Trace, address by address: ``Row`` with ``status``
``runner``     ``verify`` / ``report_verification`` / ``report_rows``: a scenario through every
               engine, once; the rows with the traces (``Verification``)
``detail``     the |a − b| arrays of report.html's sections, from those traces
``horizon``    trajectories against torch.optim; the precision horizons
``digits``     the digits network trained by both engines
``vanishing``  document 003's vanishing gradient by both engines

Nothing is imported here: ``compare`` and ``tolerance`` stay free of torch
(the pytest-xdist controller merges rows without loading the engines).
"""
