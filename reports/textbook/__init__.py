"""Textbook checks: the numbers a document printed and the formulas it states.

``errata``       every ``[[expect]]`` of a worked example and every named check,
                 judged match / rounding / erratum / disagree
``claims``       ``[[claim]]`` formulas of a scenario file against autograd,
                 judged holds / wrong over the file's data and seeded draws
``derivations``  the documents' gradient formulas against autograd
                 (``python -m reports.textbook.derivations`` prints them)
``examples_plugin``  the pytest11 plugin: a user's worked examples and claims as pytest items

The ``check`` command that runs them on users' files is
``reports.commands.check``.
"""
