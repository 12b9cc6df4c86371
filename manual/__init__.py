"""The hand-written engine: NumPy only, every derivative written beside its forward.

``run(scenario) -> Trace`` is the entry point; ``run(scenario, engine)`` runs any
engine that follows the protocol of ``manual.protocol`` (``Engine``: registries of
layer, activation, loss and optimizer classes), and ``MANUAL`` is this engine
declared through it. The registries ``LAYERS``, ``ACTIVATIONS``, ``LOSSES`` and
``OPTIMIZERS`` are keyed by the catalogue's names (``scenarios.catalog``); every
class registers itself with a decorator (``@register_layer(name)`` in
``manual.layers``, ``@register(name)`` for the others) beside its forward and
backward.
"""
from backprop_verify.manual.activations import ACTIVATIONS
from backprop_verify.manual.engine import MANUAL, run
from backprop_verify.manual.layers import LAYERS, Learned, Linear
from backprop_verify.manual.losses import LOSSES
from backprop_verify.manual.optimizers import OPTIMIZERS
from backprop_verify.manual.protocol import Engine, EngineError, applicable, load_engine

__all__ = ["ACTIVATIONS", "Engine", "EngineError", "LAYERS", "LOSSES", "Learned", "Linear", "MANUAL", "OPTIMIZERS",
           "applicable", "load_engine", "run"]
