"""Checking a layer of your own from a plain pytest test (docs/check_layer.md).

    pytest docs/examples/layer               # 2 passed, 1 xfailed
    pytest docs/examples/layer --runxfail    # the planted bug fails, with the table

``check_layer`` runs the layer against ``torch_fn`` under autograd and against
finite differences, on seeded random inputs and at kinks, and raises an
AssertionError whose message is a table: per draw and quantity, max_abs,
max_rel (normwise), the tolerance, the worst element's index and both values.
"""
import pytest
import torch.nn.functional as F

from my_layers import Conv1dNaive, Conv1dNaiveBuggy
from backprop_verify import check_layer


def test_conv1d_naive():
    # torch_fn(*inputs, **params): the parameters are called weight and bias, so F.conv1d is the reference.
    check_layer(Conv1dNaive(3, 4, 3), F.conv1d, inputs=[(2, 3, 8)])


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="planted bug: = for += in the input gradient")
def test_conv1d_naive_buggy():
    # What your own test looks like; run with --runxfail to see the failure it gives.
    check_layer(Conv1dNaiveBuggy(3, 4, 3), F.conv1d, inputs=[(2, 3, 8)])


def test_the_planted_bug_is_found_where_it_is():
    with pytest.raises(AssertionError) as caught:
        check_layer(Conv1dNaiveBuggy(3, 4, 3), F.conv1d, inputs=[(2, 3, 8)])
    table = str(caught.value)
    print(table)
    # Only the input gradient is wrong; finite differences side with torch.
    assert "input.grad: finite differences side with torch" in table
    assert "weight.grad" not in table and "bias.grad" not in table
