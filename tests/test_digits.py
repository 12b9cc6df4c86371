"""The digits run (scikit-learn load_digits, 64-32-10): manual and torch train alike.

The default run trains one epoch per optimizer; ``python -m reports.verification.digits``
runs the full ten epochs (numbers and timings in docs/optimizers.md).
"""
import numpy as np
import pytest

from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.reports.verification.digits import digits_curves
from backprop_verify.scenarios.digits import TEST_SAMPLES, digits_data, digits_scenario


def test_digits_data_is_the_bundled_set():
    x_train, y_train, x_test, labels_test = digits_data()
    assert x_train.shape == (1797 - TEST_SAMPLES, 64) and x_test.shape == (TEST_SAMPLES, 64)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.all(y_train.sum(axis=1) == 1.0) and set(labels_test) == set(range(10))


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_digits_loss_curves_and_accuracy_agree(optimizer):
    run = digits_curves(optimizer, epochs=1)
    assert run["steps"] == run["updates_per_epoch"] == 23  # ceil(1437 / 64)
    assert run["failures"] == 0
    steps = np.arange(1, run["steps"] + 1)
    gap = np.abs(run["manual_loss"] - run["torch_loss"]) / np.abs(run["torch_loss"])
    assert np.all(gap <= [tolerance("float64", steps=t) for t in steps])
    assert run["manual_accuracy"] == run["torch_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert run["manual_loss"][-5:].mean() < 0.75 * run["manual_loss"][:5].mean()  # it learns


def test_digits_scenario_counts_epochs():
    scenario = digits_scenario("adam", epochs=3, batch_size=100)
    assert scenario.updates_per_epoch == 15 and scenario.optimizer.steps == 45
