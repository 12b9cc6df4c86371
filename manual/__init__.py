"""The hand-written engine: NumPy only, every derivative written beside its forward.

``run(scenario) -> Trace`` is the entry point. The registries ``LAYERS``,
``ACTIVATIONS``, ``LOSSES`` and ``OPTIMIZERS`` are keyed by the catalogue's
names (``scenarios.catalog``).
"""
from manual.activations import ACTIVATIONS
from manual.engine import LAYERS, run
from manual.layers import Linear
from manual.losses import LOSSES
from manual.optimizers import OPTIMIZERS

__all__ = ["ACTIVATIONS", "LAYERS", "LOSSES", "OPTIMIZERS", "Linear", "run"]
