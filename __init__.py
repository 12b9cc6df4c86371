"""backprop-verify: backpropagation verified — a hand-written NumPy engine against PyTorch
autograd and finite differences, with textbook errata.

The one import name the distribution installs. Its packages are the repository's
top-level folders:

``backprop_verify.scenarios``   plain-data scenarios, the catalogue, the TOML loader, the generators
``backprop_verify.manual``      the hand-written NumPy engine (``manual.run(scenario)``)
``backprop_verify.reference``   the PyTorch mirror and the finite-difference oracle
``backprop_verify.reports``     verification, textbook checks, rendering, bench, the command line

``backprop_verify.check_layer`` (a user's NumPy layer against torch autograd and finite
differences) is loaded on first use, so ``import backprop_verify`` imports neither torch nor pandas.
"""
from __future__ import annotations

__all__ = ["check_layer"]


def __getattr__(name: str):
    if name == "check_layer":  # loaded on first use: it imports torch
        from backprop_verify.reports.layer_check import check_layer

        return check_layer
    raise AttributeError(f"module 'backprop_verify' has no attribute {name!r}")
