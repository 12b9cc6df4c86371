"""Hostile and oversized scenario files: each case is (file content, field named,
words expected in the message). Every one must be refused by the loader with
a ScenarioError — before anything large is allocated — never a traceback."""
from pytest_cases import case

from tests.cases_bad_files import GOOD

CONV = '''
[[layers]]
type = "conv2d"
out_channels = 2
kernel_size = 2

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
init = "xavier_uniform"
out = 1

[loss]
type = "mse"
reduction = "half_sum"

[data]
x = {generate = "normal", shape = [2, 1, 4, 4]}
y = [[1.0], [0.0]]
'''


def _edit(old, new, text=GOOD):
    assert old in text, old
    return text.replace(old, new, 1)


# --------------------------------------------------------------------------- encodings and syntax

@case(id="not_utf8")
def case_not_utf8():
    return GOOD.encode("utf-8") + b'\nname = "caf\xe9"\n', "", "not UTF-8"


@case(id="latin1")
def case_latin1():
    return ('# café\n' + GOOD).encode("latin-1"), "", "byte 0xe9 on line 1"


@case(id="utf16")
def case_utf16():
    return GOOD.encode("utf-16"), "", "UTF-16"


@case(id="byte_order_mark")
def case_bom():
    return b"\xef\xbb\xbf" + GOOD.encode("utf-8"), "", "byte-order mark"


@case(id="random_bytes")
def case_random_bytes():
    return bytes(range(256)) * 4, "", "not UTF-8"


# The TOML reader gives up without saying where: the message names the field and the line.
@case(id="nested_arrays_500_deep")
def case_deep_arrays():
    return GOOD + "\n[junk]\nv = " + "[" * 500 + "]" * 500 + "\n", "junk.v", "nested more than 100 deep on line 27"


@case(id="nested_inline_tables_500_deep")
def case_deep_tables():
    return (GOOD + "\n[junk]\nv = " + "{a = " * 500 + "1" + "}" * 500 + "\n", "junk.v",
            "nested more than 100 deep on line 27")


@case(id="nested_arrays_20000_deep_in_a_layer")
def case_deep_arrays_in_a_layer():
    deep = "[" * 20_000 + "]" * 20_000
    return _edit('type = "sigmoid"', f'type = "sigmoid"\nnote = {deep}'), "layers[1].note", "on line 12"


@case(id="integer_beyond_float_range")
def case_integer_beyond_float_range():
    return _edit("learning_rate = 0.01", "learning_rate = 1" + "0" * 400), "optimizer.learning_rate", \
        "401 digits is beyond the range of a float"


@case(id="integer_beyond_float_range_in_data")
def case_integer_beyond_float_range_in_data():
    return _edit("x = [[0.5, 0.6]]", "x = [[0.5, -1" + "0" * 309 + "]]"), "data.x[0][1]", "beyond the range of a float"


@case(id="integer_of_5000_digits")
def case_integer_of_5000_digits():
    return _edit("learning_rate = 0.01", "learning_rate = 1" + "0" * 5000), "optimizer.learning_rate", \
        "more than 4,300 digits on line 23"


@case(id="integer_field_beyond_int64")
def case_integer_field_beyond_int64():
    return _edit("steps = 1", "steps = " + str(2**70)), "optimizer.steps", "expected an integer below 2**63"


@case(id="name_of_1000_characters")
def case_long_name():
    return 'name = "' + "a" * 1000 + '"\n' + GOOD, "name", "expected at most 200"


@case(id="data_nested_deeper_than_the_rank_limit")
def case_deep_data():
    return _edit("x = [[0.5, 0.6]]", "x = " + "[" * 9 + "0.5" + "]" * 9), "data.x", "limit rank"


# --------------------------------------------------------------------------- sizes

@case(id="huge_layer_with_init")
def case_huge_out():
    return (_edit("weight = [[0.1, 0.2], [0.3, 0.4]]", 'init = "xavier_uniform"\nout = 1000000000'),
            "layers[0].weight", "limit elements")


@case(id="out_2_to_the_62")
def case_out_2_62():
    return (_edit("weight = [[0.1, 0.2], [0.3, 0.4]]", 'init = "xavier_uniform"\nout = 4611686018427387904'),
            "layers[0].weight", "limit elements")


@case(id="generated_rows_1e10")
def case_huge_rows():
    return (_edit("x = [[0.5, 0.6]]", 'x = {generate = "normal", rows = 10000000000, cols = 2}'),
            "data.x", "limit elements")


@case(id="generated_shape_huge")
def case_huge_shape():
    return (_edit("x = [[0.5, 0.6]]", 'x = {generate = "normal", shape = [100000, 3, 1000, 1000]}'),
            "data.x", "limit elements")


@case(id="steps_1e12")
def case_huge_steps():
    return _edit("steps = 1", "steps = 1000000000000"), "optimizer.steps", "limit steps"


@case(id="epochs_1e12")
def case_huge_epochs():
    return _edit("steps = 1", "epochs = 1000000000000"), "optimizer.epochs", "limit steps"


@case(id="printed_with_40_digits")
def case_long_printed():
    return (GOOD + '\n[[expect]]\nat = "loss"\nprinted = "0.' + "1" * 40 + '"\n', "expect[0].printed",
            "limit printed_digits")


# --------------------------------------------------------------------------- numbers and addresses

@case(id="element_index_with_an_empty_part")
def case_empty_index():
    return GOOD + '\n[[expect]]\nat = "layers.0.output[0,,1]"\nprinted = "0.5"\n', "expect[0].at", "not a Trace address"


@case(id="arabic_indic_digit_printed")
def case_arabic_digit():
    return GOOD + '\n[[expect]]\nat = "loss"\nprinted = "٣"\n', "expect[0].printed", "expected a decimal number"


@case(id="fullwidth_digits_printed")
def case_fullwidth():
    return GOOD + '\n[[expect]]\nat = "loss"\nprinted = "０.５"\n', "expect[0].printed", "expected a decimal number"


@case(id="bce_after_linear")
def case_bce_after_linear():
    text = _edit('[[layers]]\ntype = "sigmoid"\n', "")
    return _edit('type = "mse"\nreduction = "half_sum"', 'type = "bce"\nreduction = "sum"', text), "loss.type", \
        "takes probabilities in (0, 1)"


@case(id="cross_entropy_after_sigmoid_then_linear")
def case_ce_after_linear():
    text = GOOD.replace('[[layers]]\ntype = "sigmoid"\n',
                        '[[layers]]\ntype = "sigmoid"\n\n[[layers]]\ntype = "linear"\nweight = [[1.0, 0.0], [0.0, 1.0]]\n')
    return (_edit('type = "mse"\nreduction = "half_sum"', 'type = "cross_entropy"\nreduction = "sum"', text),
            "loss.type", "softmax_cross_entropy")


# --------------------------------------------------------------------------- layers and shapes

@case(id="conv_kernel_larger_than_input")
def case_kernel_too_big():
    return _edit("kernel_size = 2", "kernel_size = 5", CONV), "layers[0]", "does not fit the input of 4×4"


@case(id="conv_groups_not_dividing_channels")
def case_groups():
    return _edit("kernel_size = 2", "kernel_size = 2\ngroups = 2", CONV), "layers[0].groups", "divisor of the input channels"


@case(id="conv_weight_of_wrong_shape")
def case_conv_weight():
    return (_edit("kernel_size = 2", "kernel_size = 2\nweight = [[[[1.0, 2.0]]], [[[1.0, 2.0]]]]", CONV),
            "layers[0].weight", "expected shape (2, 1, 2, 2)")


@case(id="conv_stride_zero")
def case_stride_zero():
    return _edit("kernel_size = 2", "kernel_size = 2\nstride = 0", CONV), "layers[0].stride", "expected an integer >= 1"


@case(id="conv_kernel_triple")
def case_kernel_triple():
    return _edit("kernel_size = 2", "kernel_size = [2, 2, 2]", CONV), "layers[0].kernel_size", "a pair [h, w]"


@case(id="conv_on_rows")
def case_conv_on_rows():
    return _edit('[[layers]]\ntype = "linear"', '[[layers]]\ntype = "conv2d"\nout_channels = 1\nkernel_size = 1\n\n'
                 '[[layers]]\ntype = "linear"'), "layers[0].type", "conv2d takes (N, C, H, W)"


@case(id="linear_on_images")
def case_linear_on_images():
    return _edit('[[layers]]\ntype = "flatten"\n', "", CONV), "layers[1].type", "add a flatten layer"


@case(id="loss_on_images")
def case_loss_on_images():
    text = CONV.replace('[[layers]]\ntype = "flatten"\n\n[[layers]]\ntype = "linear"\ninit = "xavier_uniform"\nout = 1\n', "")
    return text, "layers", "losses take (N, features)"


@case(id="max_pool_padding_over_half_the_kernel")
def case_pool_padding():
    return (_edit('[[layers]]\ntype = "flatten"', '[[layers]]\ntype = "max_pool2d"\nkernel_size = 2\npadding = 2\n\n'
                  '[[layers]]\ntype = "flatten"', CONV), "layers[1]", "at most half of kernel_size")


@case(id="batch_norm_training_on_one_value_per_channel")
def case_bn_one_value():
    text = _edit('[[layers]]\ntype = "sigmoid"', '[[layers]]\ntype = "batch_norm"\n\n[[layers]]\ntype = "sigmoid"')
    return text, "layers[1].training", "more than one value per channel"


@case(id="batch_norm_negative_running_var")
def case_bn_negative_var():
    text = _edit('[[layers]]\ntype = "sigmoid"', '[[layers]]\ntype = "batch_norm"\ntraining = false\n'
                 'running_var = [1.0, -1.0]\n\n[[layers]]\ntype = "sigmoid"')
    return text, "layers[1].running_var", "variances >= 0"


@case(id="layer_norm_dims_beyond_the_input")
def case_ln_dims():
    text = _edit('[[layers]]\ntype = "sigmoid"', '[[layers]]\ntype = "layer_norm"\ndims = 2\n\n[[layers]]\ntype = "sigmoid"')
    return text, "layers[1].dims", "expected at most 1"


@case(id="dropout_p_above_1")
def case_dropout_p():
    text = _edit('[[layers]]\ntype = "sigmoid"', '[[layers]]\ntype = "dropout"\np = 1.5\n\n[[layers]]\ntype = "sigmoid"')
    return text, "layers[1].p", "[0, 1]"


@case(id="expect_running_mean_of_a_linear_layer")
def case_expect_missing_buffer():
    return GOOD + '\n[[expect]]\nat = "layers.0.running_mean[0]"\nprinted = "0"\n', "expect[0].at", "does not exist"


@case(id="expect_step_beyond_the_last")
def case_expect_late_step():
    return GOOD + '\n[[expect]]\nat = "step2.loss"\nprinted = "0"\n', "expect[0].at", "expected a step from 1 to 1"
