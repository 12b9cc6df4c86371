"""Dropout masks: plain scenario data, the same for both engines.

PyTorch's dropout draws its mask from torch's own generator, which NumPy cannot
reproduce; so the mask is part of the scenario instead. The mask of dropout
layer ``i`` in the forward pass of update ``t`` (t = 1 for the pass at the
initial parameters, which is also update 1's when update 1 takes the whole
batch in order) keeps each unit with probability 1 − p::

    m = (U < 1 − p),  U ~ uniform[0, 1) from default_rng([seed, 0xD809, i, t])

so a mask depends only on the scenario's seed, the layer, the update and the
shape of the layer's input — never on which engine asks.
"""
from __future__ import annotations

import numpy as np

_MASK_STREAM = 0xD809


def dropout_mask(seed: int, layer_index: int, update: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """The 0/1 mask (float64) of dropout layer ``layer_index`` in update ``update``'s forward pass."""
    uniform = np.random.default_rng([seed, _MASK_STREAM, layer_index, update]).random(shape)
    return (uniform < 1.0 - p).astype(np.float64)
