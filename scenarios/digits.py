"""A real-data trajectory: scikit-learn's bundled handwritten digits.

``load_digits`` reads a file shipped inside scikit-learn (1,797 images of
8×8 pixels, values 0..16; no download); ``bundled_digits`` reads that file. Pixels are scaled to [0, 1]; a seeded
permutation (``default_rng(seed)``) puts ``TEST_SAMPLES`` images aside for
the final accuracy and trains on the rest.

The network is 64 → 32 ReLU → 10 with softmax cross-entropy on the logits
(``softmax_cross_entropy``, mean over the mini-batch), He-normal weights for
the ReLU layer, Xavier-normal for the output, zero biases; mini-batches of
``batch_size`` reshuffled every epoch (``scenarios.schedule``).

``OPTIMIZER_SETTINGS`` holds the two runs the issue asks for: SGD with
momentum 0.9 (torch's form) and Adam.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from backprop_verify.scenarios.init import initialise, layer_rng
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.trajectories import make_optimizer

DIGITS_SEED = 0
TEST_SAMPLES = 360
OPTIMIZER_SETTINGS: dict[str, tuple[str, float, dict]] = {
    "sgd_momentum": ("sgd", 0.05, {"momentum": 0.9}),
    "adam": ("adam", 0.005, {}),
}


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels (1797,)): the file ``sklearn.datasets.load_digits``
    reads, ``sklearn/datasets/data/digits.csv.gz`` (64 pixels then the label per row).

    It is read directly, without importing scikit-learn (whose import alone
    takes ~1.8 s); ``python -m reports.verification.digits`` checks it is identical to ``load_digits()``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the digits scenario needs scikit-learn installed (it ships the data file)")
    table = np.loadtxt(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def digits_data(seed: int = DIGITS_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train one-hot, x_test, labels_test); pixels in [0, 1]."""
    pixels, labels = bundled_digits()
    x = pixels / 16.0
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:TEST_SAMPLES], order[TEST_SAMPLES:]
    return x[train], np.eye(10)[labels[train]], x[test], labels[test]


def digits_scenario(optimizer: str = "adam", epochs: int = 10, batch_size: int = 64, seed: int = DIGITS_SEED,
                    dtype: str = "float64") -> Scenario:
    """The training half of the digits as a Scenario, ``epochs`` passes of shuffled mini-batches."""
    if optimizer not in OPTIMIZER_SETTINGS:
        raise ValueError(f"digits: unknown optimizer setting {optimizer!r}; expected one of {sorted(OPTIMIZER_SETTINGS)}")
    kind, learning_rate, options = OPTIMIZER_SETTINGS[optimizer]
    x, y, _, _ = digits_data(seed)
    layers = (
        Layer("linear", weight=initialise("he_normal", 32, 64, layer_rng(seed, 0)), bias=np.zeros(32)),
        Layer("relu"),
        Layer("linear", weight=initialise("xavier_normal", 10, 32, layer_rng(seed, 2)), bias=np.zeros(10)),
    )
    spec = make_optimizer(kind, learning_rate, options, {"batch_size": batch_size, "shuffle": True}, 1)
    spec = dataclasses.replace(spec, steps=epochs * spec.updates_per_epoch(x.shape[0]), epochs=epochs)
    return Scenario(
        name=f"digits-64-32relu-10-{optimizer}-{epochs}epochs-batch{batch_size}-{'f64' if dtype == 'float64' else 'f32'}",
        layers=layers, loss=Loss("softmax_cross_entropy", "mean"), x=x, y=y, seed=seed, optimizer=spec,
        source={"title": "scikit-learn load_digits, 64-32-10, mini-batch training"},
    ).astype(dtype)


def accuracy(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``x`` whose argmax logit is the label, for the 64-32-10 ReLU network ``weights``."""
    (w1, b1), (w2, b2) = weights
    hidden = np.maximum(x @ np.asarray(w1, np.float64).T + b1, 0.0)
    logits = hidden @ np.asarray(w2, np.float64).T + b2
    return float(np.mean(np.argmax(logits, axis=1) == labels))


__all__ = ["bundled_digits", "digits_data", "digits_scenario", "accuracy", "OPTIMIZER_SETTINGS", "TEST_SAMPLES", "DIGITS_SEED"]
