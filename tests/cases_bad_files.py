"""Broken scenario files: each case is (file text, field named, words expected in the message)."""
from pytest_cases import case

GOOD = '''
[source]
title = "good"

[[layers]]
type = "linear"
weight = [[0.1, 0.2], [0.3, 0.4]]
bias = [0.1, 0.2]

[[layers]]
type = "sigmoid"

[loss]
type = "mse"
reduction = "half_sum"

[data]
x = [[0.5, 0.6]]
y = [[1.0, 0.0]]

[optimizer]
type = "sgd"
learning_rate = 0.01
steps = 1
'''


def _edit(old, new):
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


@case(id="unknown_layer_type")
def case_unknown_layer_type():
    return _edit('type = "sigmoid"', 'type = "sigmod"'), "layers[1].type", "unknown value 'sigmod'"


@case(id="unknown_loss_type")
def case_unknown_loss():
    return _edit('type = "mse"', 'type = "hinge"'), "loss.type", "expected one of"


@case(id="unknown_reduction")
def case_unknown_reduction():
    return _edit('reduction = "half_sum"', 'reduction = "avg"'), "loss.reduction", "half_batch_mean"


@case(id="wrong_weight_shape")
def case_wrong_weight_shape():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", "weight = [[0.1, 0.2, 0.3]]"), "layers[0].weight", "(out, 2)"


@case(id="ragged_weight")
def case_ragged_weight():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", "weight = [[0.1, 0.2], [0.3]]"), "layers[0].weight", "rectangular"


@case(id="wrong_bias_length")
def case_wrong_bias_length():
    return _edit("bias = [0.1, 0.2]", "bias = [0.1]"), "layers[0].bias", "expected 2 entries"


@case(id="non_finite_weight")
def case_non_finite_weight():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", "weight = [[0.1, nan], [0.3, 0.4]]"), "layers[0].weight[0][1]", "finite"


@case(id="infinite_input")
def case_infinite_input():
    return _edit("x = [[0.5, 0.6]]", "x = [[0.5, inf]]"), "data.x[0][1]", "finite"


@case(id="string_weight")
def case_string_weight():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", 'weight = [[0.1, "0.2"], [0.3, 0.4]]'), "layers[0].weight[0][1]", "expected a number"


@case(id="missing_loss")
def case_missing_loss():
    return _edit('[loss]\ntype = "mse"\nreduction = "half_sum"\n', ""), "loss", "missing"


@case(id="missing_data_y")
def case_missing_y():
    return _edit("y = [[1.0, 0.0]]", ""), "data.y", "missing"


@case(id="missing_weight")
def case_missing_weight():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]\n", ""), "layers[0].weight", "missing"


@case(id="negative_learning_rate")
def case_negative_learning_rate():
    return _edit("learning_rate = 0.01", "learning_rate = -0.01"), "optimizer.learning_rate", "> 0"


@case(id="zero_steps")
def case_zero_steps():
    return _edit("steps = 1", "steps = 0"), "optimizer.steps", ">= 1"


@case(id="batch_mismatch")
def case_batch_mismatch():
    return _edit("y = [[1.0, 0.0]]", "y = [[1.0, 0.0], [0.0, 1.0]]"), "data.y", "has 2 rows but data.x has 1"


@case(id="target_width_mismatch")
def case_target_width():
    return _edit("y = [[1.0, 0.0]]", "y = [[1.0, 0.0, 0.0]]"), "data.y", "network outputs 2"


@case(id="unknown_field")
def case_unknown_field():
    return _edit('type = "sigmoid"', 'type = "sigmoid"\nslope = 0.1'), "layers[1].slope", "unknown field"


@case(id="unknown_init")
def case_unknown_init():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", 'init = "glorot"\nout = 2'), "layers[0].init", "xavier_uniform"


@case(id="init_wrong_in")
def case_init_wrong_in():
    return _edit("weight = [[0.1, 0.2], [0.3, 0.4]]", 'init = "he_normal"\nin = 3\nout = 2'), "layers[0].in", "expected 2"


@case(id="bad_activation_param")
def case_bad_param():
    return _edit('type = "sigmoid"', 'type = "gelu"\napproximate = "fast"'), "layers[1].approximate", "none, tanh"


@case(id="unknown_optimizer")
def case_unknown_optimizer():
    return _edit('type = "sgd"', 'type = "sgdd"'), "optimizer.type", "unknown value"


@case(id="not_toml")
def case_not_toml():
    return GOOD + "\n[[layers\n", "", "not valid TOML"


@case(id="printed_not_a_string")
def case_printed_number():
    return GOOD + '\n[[expect]]\nat = "loss"\nprinted = 0.88\n', "expect[0].printed", "expected a string exactly as printed"


@case(id="expect_bad_address")
def case_expect_bad_address():
    return GOOD + '\n[[expect]]\nat = "layer.1.out"\nprinted = "0.88"\n', "expect[0].at", "not a Trace address"
