"""The draws check_layer runs: the given arrays, seeded random draws, and draws at kinks (exact zeros, ties).

An input that gets no gradient and is given as an array — indices, class
targets, masks — keeps that array on every draw; only the others are drawn.
"""
from __future__ import annotations

import numpy as np


def draw_plan(names, given, seed, draws, kinks, sample, fixed=()):
    """[(draw name, arrays, at kinks?, the draw's generator for its upstream gradient)]; the inputs
    named in ``fixed`` (arrays) are the same on every draw."""
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"check_layer: seed must be an integer >= 0, got {seed!r}")
    shapes = [spec.shape if isinstance(spec, np.ndarray) else spec for spec in given]

    def drawn(rng, shape, key):
        value = np.array(sample(rng, shape), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"check_layer: sample(rng, {shape}) returned shape {value.shape} for input {key!r}")
        return value

    def held_or(draw):
        return [spec if key in fixed else draw(key, shape) for key, spec, shape in zip(names, given, shapes)]

    plan = []
    if any(isinstance(spec, np.ndarray) and key not in fixed for key, spec in zip(names, given)):
        rng = np.random.default_rng([int(seed), 0, 0])
        arrays = [spec if isinstance(spec, np.ndarray) else drawn(rng, spec, key) for key, spec in zip(names, given)]
        plan.append(("given", arrays, False, rng))
    for index in range(draws):
        rng = np.random.default_rng([int(seed), 1, index])
        plan.append((f"random-{index}", held_or(lambda key, shape: drawn(rng, shape, key)), False, rng))
    for index in range(kinks):
        rng = np.random.default_rng([int(seed), 2, index])
        plan.append((f"kink-{index}", held_or(lambda key, shape: kinked(rng, shape, index)), True, rng))
    return plan


def kinked(rng: np.random.Generator, shape: tuple[int, ...], index: int) -> np.ndarray:
    """Inputs at non-differentiable points: integers in −2…2 (even draws), or a third exact
    zeros among values drawn from a pool of three (odd draws): exact zeros and ties."""
    if index % 2 == 0:
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    values = rng.choice(rng.standard_normal(3), size=shape)
    values[rng.random(shape) < 1 / 3] = 0.0
    return values
