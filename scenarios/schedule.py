"""The mini-batch schedule: which samples each parameter update sees.

Both engines take their batches from :func:`batch_schedule`, so they train on
exactly the same rows in the same order; the schedule is data, not math.

For epoch e = 0, 1, 2, … the sample order is ``arange(n)``, or with
``shuffle`` the permutation ``numpy.random.default_rng([scenario.seed, e])
.permutation(n)``. The order is cut into consecutive batches of
``batch_size`` rows (0 = all n rows: gradient descent); an incomplete last
batch is kept, or dropped with ``drop_last``. So one epoch is ceil(n / b)
updates, or floor(n / b) with drop_last — document 003's 1,000 samples give
10 updates per epoch at b = 100 and 100 updates at b = 10. Updates continue
into the next epoch until ``optimizer.steps`` updates are scheduled (the last
epoch may be partial).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.scenarios.model import Scenario


def epoch_order(seed: int, epoch: int, samples: int, shuffle: bool) -> np.ndarray:
    """The sample indices of one epoch, in the order they are visited."""
    if not shuffle:
        return np.arange(samples)
    return np.random.default_rng([seed, epoch]).permutation(samples)


def batch_schedule(scenario: Scenario) -> list[np.ndarray]:
    """One array of sample indices per update, ``scenario.optimizer.steps`` of them."""
    spec = scenario.optimizer
    if spec is None:
        return []
    samples = scenario.x.shape[0]
    size = spec.batch_size or samples
    per_epoch = spec.updates_per_epoch(samples)
    if per_epoch < 1:
        raise ValueError(f"scenario {scenario.name!r}: batch_size {spec.batch_size} with drop_last leaves "
                         f"no full batch of {samples} samples")
    schedule: list[np.ndarray] = []
    epoch = 0
    while len(schedule) < spec.steps:
        order = epoch_order(scenario.seed, epoch, samples, spec.shuffle)
        for update in range(per_epoch):
            if len(schedule) == spec.steps:
                break
            schedule.append(order[update * size:(update + 1) * size])
        epoch += 1
    return schedule


def is_full_batch_in_order(indices: np.ndarray, samples: int) -> bool:
    """Whether a batch is every sample in file order (the initial pass can be reused)."""
    return indices.shape[0] == samples and bool(np.array_equal(indices, np.arange(samples)))


__all__ = ["batch_schedule", "epoch_order", "is_full_batch_in_order"]
