"""The hand-written engine: NumPy only, every derivative written beside its forward.

``run(scenario) -> Trace`` is the entry point. The registries ``LAYERS``,
``ACTIVATIONS``, ``LOSSES`` and ``OPTIMIZERS`` are keyed by the catalogue's
names (``scenarios.catalog``); every class registers itself with a decorator
(``@register_layer(name)`` in ``manual.layers``, ``@register(name)`` for the
others) beside its forward and backward.
"""
from backprop_verify.manual.activations import ACTIVATIONS
from backprop_verify.manual.engine import run
from backprop_verify.manual.layers import LAYERS, Linear
from backprop_verify.manual.losses import LOSSES
from backprop_verify.manual.optimizers import OPTIMIZERS

__all__ = ["ACTIVATIONS", "LAYERS", "LOSSES", "OPTIMIZERS", "Linear", "run"]
