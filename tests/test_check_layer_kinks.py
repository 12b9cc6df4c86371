"""check_layer at kinks: a one-sided derivative is a ``convention``, anything else is a failure.

LeakyReLU′(0) = 1 (the right derivative; torch takes the slope, the left one)
passes with the status ``convention`` and a note naming the point and both
values; ½ at 0 is neither side and fails; a smooth layer that is wrong at 0 is
not at a kink at all, and its message says so instead of listing torch's kink
conventions.
"""
import numpy as np
import pytest
import torch.nn.functional as F

from backprop_verify.reports.layer_check import check_layer

GENERIC = "relu'(0) = 0, ties of max"  # the kink conventions listed when nothing more is known


class LeakyRelu:
    """a = z (z > 0), slope·z (z < 0);  ∂a/∂z = 1, slope — and ``at_zero`` at z = 0, a choice."""

    def __init__(self, slope=0.01, at_zero=1.0):
        self.slope, self.at_zero = slope, at_zero

    def forward(self, z):
        self.z = z
        return np.where(z > 0, z, self.slope * z)

    def backward(self, delta):
        derivative = np.where(self.z > 0, 1.0, np.where(self.z == 0, self.at_zero, self.slope))
        return delta * derivative.astype(self.z.dtype)


def leaky_relu(z):
    return F.leaky_relu(z, 0.01)


def test_the_other_one_sided_derivative_at_a_kink_is_a_convention():
    result = check_layer(LeakyRelu(), leaky_relu, inputs=[(5, 4)], dtype="float32")
    assert result.passed
    conventions = result.conventions
    assert {(row.draw, row.dtype) for row in conventions} == {(d, t) for d in ("kink-0", "kink-1")
                                                              for t in ("float64", "float32")}
    for row in conventions:
        assert row.quantity == "input.grad" and row.kink == "convention" and row.passed
        assert row.value == pytest.approx(100 * row.reference_value, rel=1e-5)  # 1 against the slope 0.01
        assert row.note.startswith(f"convention at {row.worst_index} (input = 0): the layer gives "
                                   f"{row.value:.10g}, the right derivative; torch {row.reference_value:.10g} "
                                   "(the left derivative)")
    summary = str(result)
    assert "4 of them at kinks by another convention than torch's:" in summary
    assert check_layer(LeakyRelu(at_zero=0.01), leaky_relu, inputs=[(5, 4)]).conventions == []  # torch's own


def test_strict_kinks_asks_for_torchs_convention():
    with pytest.raises(AssertionError) as caught:
        check_layer(LeakyRelu(), leaky_relu, inputs=[(5, 4)], strict_kinks=True)
    message = str(caught.value)
    assert "input.grad: fails only at kinks (exact zeros and ties, draws kink-0, kink-1)" in message
    assert "a one-sided derivative" in message and GENERIC not in message


def test_a_value_that_is_neither_side_of_the_kink_fails():
    result = check_layer(LeakyRelu(at_zero=0.5), leaky_relu, inputs=[(5, 4)], raises=False)
    assert {(row.draw, row.kink) for row in result.failures} == {("kink-0", "not one-sided"),
                                                                 ("kink-1", "not one-sided")}
    assert all("a kink (left derivative" in row.note and "neither side" in row.note for row in result.failures)
    message = result.message()
    assert "neither the left nor the right derivative" in message and GENERIC not in message


def test_ties_of_max_routed_to_the_last_element_are_a_convention():
    """Max over pairs, ties to the last element (torch: the first): at a tie each element's value is the
    left or the right derivative — the other element's share goes to the side that wins."""
    class MaxPairs:
        def forward(self, x):
            self.x = x
            return x.reshape(x.shape[0], -1, 2).max(axis=2)

        def backward(self, delta):
            pairs = self.x.reshape(self.x.shape[0], -1, 2)
            last = pairs[..., 1] >= pairs[..., 0]
            return np.stack([np.where(last, 0.0, delta), np.where(last, delta, 0.0)], axis=2).reshape(self.x.shape)

    result = check_layer(MaxPairs(), lambda x: F.max_pool1d(x[:, None], 2)[:, 0], inputs=[(3, 8)])
    assert result.passed and result.conventions
    assert all(row.draw.startswith("kink-") for row in result.conventions)


def test_a_smooth_layer_wrong_at_zero_is_not_sent_to_the_kink_conventions():
    """z² has no kink: a backward that says 1 at z = 0 is wrong there, and the message says so."""
    class Square:
        def forward(self, z):
            self.z = z
            return z * z

        def backward(self, delta):
            return delta * np.where(self.z == 0, 1.0, 2 * self.z)

    result = check_layer(Square(), lambda z: z * z, inputs=[(5, 4)], raises=False)
    assert {row.kink for row in result.failures} == {"no kink"} and result.failures
    message = result.message()
    assert "input.grad: fails on the kink draws (draws kink-0, kink-1), but the forward has no kink" in message
    assert GENERIC not in message
    unanalysed = check_layer(Square(), lambda z: z * z, inputs=[(5, 4)], raises=False, fd=False)
    assert GENERIC in unanalysed.message()  # fd=False: no one-sided differences either


def test_the_documented_convention_output_is_what_a_run_prints():
    """docs/check_layer.md shows a LeakyReLU with a′(0) = 1 and what check_layer prints for it: the class
    and the call are read from the document, run, and the printed summary compared line by line."""
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "check_layer.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(class LeakyRelu:.*?)```", doc, re.S).group(1)
    code, _, session = block.partition(">>> ")
    call, _, printed = session.partition("\n")
    namespace = {"np": np, "F": F, "check_layer": check_layer}
    exec(code, namespace)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(call, namespace)
    assert output.getvalue().splitlines() == printed.strip("\n").splitlines()
