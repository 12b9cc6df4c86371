"""Textbook verdicts: every printed number of the seeds, judged as the documents' arithmetic says.

The table below was written from reading the documents and redoing their
arithmetic by hand (not from the code under test): a changed transcription,
a regression in either engine, or a changed verdict rule fails it.
"""
import math
from decimal import Decimal

import numpy as np
import pytest

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reports.textbook.errata import (ERRATUM, MATCH, NAMED_CHECKS, ROUNDING, check_scenario, resolution, verdict)
from backprop_verify.scenarios import ScenarioError, load_scenario
from backprop_verify.scenarios.builtin import worked_examples
from backprop_verify.scenarios.loader import printed_number
from backprop_verify.scenarios.builtin import worked_example_paths
from tests.cases_bad_files import GOOD

OWN_EXAMPLE = next(p for p in worked_example_paths() if p.name == "example_two_layer_sigmoid_mse.toml")

M, R, E = MATCH, ROUNDING, ERRATUM
S004 = "seed004-two_layer_sigmoid_softmax"

# (example, at) -> (printed, verdict)
EXPECTED = {
    # document 004, 2-2-2 sigmoid/softmax network, one SGD step with η = 0.01
    (S004, "layers.0.output[0,0]"): ("0.27", M),
    (S004, "layers.0.output[0,1]"): ("0.59", M),
    (S004, "layers.1.output[0,0]"): ("≈ 0.567", M),
    (S004, "layers.1.output[0,1]"): ("≈ 0.644", R),        # σ(0.59) = 0.64337
    (S004, "layers.2.output[0,0]"): ("1.012", M),
    (S004, "layers.2.output[0,1]"): ("1.354", M),
    (S004, "layers.3.output[0,0]"): ("≈ 0.415", M),
    (S004, "layers.3.output[0,1]"): ("≈ 0.585", M),
    (S004, "loss"): ("≈ 0.88", M),
    (S004, "layers.2.weight.grad[0,0]"): ("≈ -0.332", M),
    (S004, "layers.2.weight.grad[0,1]"): ("≈ -0.377", R),  # −0.58470 · 0.64337 = −0.37617
    (S004, "layers.2.weight.grad[1,0]"): ("≈ 0.332", M),
    (S004, "layers.2.weight.grad[1,1]"): ("≈ 0.377", R),
    (S004, "step1.layers.2.weight[0,0]"): ("≈ 0.703", M),
    (S004, "step1.layers.2.weight[0,1]"): ("≈ 0.804", M),
    (S004, "step1.layers.2.weight[1,0]"): ("≈ 0.897", M),
    (S004, "step1.layers.2.weight[1,1]"): ("≈ 0.996", M),
    (S004, "layers.1.output.grad[0,0]"): ("0.116", R),    # 0.2 · 0.58470 = 0.11694
    (S004, "layers.1.output.grad[0,1]"): ("0.117", M),
    (S004, "layers.0.weight.grad[0,0]"): ("≈ 0.014", M),
    (S004, "layers.0.weight.grad[0,1]"): ("≈ 0.017", M),
    (S004, "layers.0.weight.grad[1,0]"): ("≈ 0.013", M),
    (S004, "layers.0.weight.grad[1,1]"): ("≈ 0.016", M),
    (S004, "step1.layers.0.weight[0,0]"): ("0.09986", M),
    (S004, "step1.layers.0.weight[0,1]"): ("0.19983", M),
    (S004, "step1.layers.0.weight[1,0]"): ("0.29987", M),
    (S004, "step1.layers.0.weight[1,1]"): ("0.39984", M),
    (S004, "check.w1_11_x1"): ("0.05", M),
    (S004, "check.w1_12_x2"): ("0.12", M),
    (S004, "check.w1_21_x1"): ("0.15", M),
    (S004, "check.w1_22_x2"): ("0.24", M),
    (S004, "check.w2_11_a2_1"): ("0.397", M),
    (S004, "check.w2_12_a2_2"): ("0.515", M),
    (S004, "check.w2_21_a2_1"): ("0.51", M),
    (S004, "check.w2_22_a2_2"): ("0.644", R),
    (S004, "check.exp_z3_1"): ("2.75", M),
    (S004, "check.exp_z3_2"): ("3.87", M),
    (S004, "check.delta3_1_w2_11"): ("-0.41", M),
    (S004, "check.delta3_2_w2_21"): ("0.526", M),
    (S004, "check.sigmoid_prime_z2_1"): ("0.246", R),     # σ'(0.27) = 0.245499
    (S004, "check.sigmoid_prime_z2_2"): ("0.229", M),
    # document 003
    ("seed003-gradient_descent_quadratic", "loss"): ("25", M),
    ("seed003-gradient_descent_quadratic", "step1.layers.0.weight.grad[0,0]"): ("-10", M),
    ("seed003-gradient_descent_quadratic", "step1.layers.0.weight[0,0]"): ("-5", M),
    ("seed003-gradient_descent_quadratic", "step2.layers.0.weight.grad[0,0]"): ("-8", M),
    ("seed003-gradient_descent_quadratic", "step2.layers.0.weight[0,0]"): ("-4.2", M),
    ("seed003-gradient_descent_quadratic", "check.quadratic_minimiser"): ("-1", M),
    ("seed003-learning_guesses", "layers.0.output[0,0]"): ("1.5", M),
    ("seed003-learning_guesses", "layers.0.output[0,1]"): ("6.5", M),
    ("seed003-learning_guesses", "layers.0.output[0,2]"): ("4.5", M),
    ("seed003-learning_guesses", "check.y_minus_yhat_W0.5"): ("3.5", M),
    ("seed003-learning_guesses", "check.y_minus_yhat_W3"): ("-1.5", M),
    ("seed003-learning_guesses", "check.y_minus_yhat_W2"): ("0.5", M),
    ("seed003-learning_guesses", "check.abs_loss_W0.5"): ("3.5", M),
    ("seed003-learning_guesses", "check.abs_loss_W3"): ("1.5", M),
    ("seed003-learning_guesses", "check.abs_loss_W2"): ("0.5", M),
    ("seed003-vanishing_gradient_sigmoid", "layers.2.output.grad[0,0]"): ("0.25", M),
    ("seed003-vanishing_gradient_sigmoid", "layers.0.output.grad[0,0]"): ("0.0625", M),
    ("seed003-vanishing_gradient_sigmoid", "check.sigmoid_derivative_max"): ("0.25", M),
    ("seed003-minibatch_1000_by_100", "updates_per_epoch"): ("10", M),
    ("seed003-minibatch_1000_by_10", "updates_per_epoch"): ("100", M),
    # document 002: 784·16 + 16 + 16·16 + 16 + 16·10 + 10 = 13,002 parameters
    ("seed002-digit_network_784_16_16_10", "parameter_count"): ("13,001", E),
    # outside the seeds: the hand-computed 2-2-2 sigmoid MSE example (docs/textbook.md, "How to add your own worked example")
    ("example-two_layer_sigmoid_mse", "layers.0.output[0,0]"): ("0.25", M),
    ("example-two_layer_sigmoid_mse", "layers.0.output[0,1]"): ("0.35", M),
    ("example-two_layer_sigmoid_mse", "layers.1.output[0,0]"): ("0.5622", M),
    ("example-two_layer_sigmoid_mse", "layers.1.output[0,1]"): ("0.5866", M),
    ("example-two_layer_sigmoid_mse", "layers.2.output[0,0]"): ("-0.0709", M),
    ("example-two_layer_sigmoid_mse", "layers.2.output[0,1]"): ("0.7379", M),
    ("example-two_layer_sigmoid_mse", "layers.3.output[0,0]"): ("0.4823", M),
    ("example-two_layer_sigmoid_mse", "layers.3.output[0,1]"): ("0.6765", M),
    ("example-two_layer_sigmoid_mse", "loss"): ("0.3628", R),
    ("example-two_layer_sigmoid_mse", "layers.2.output.grad[0,0]"): ("-0.1293", M),
    ("example-two_layer_sigmoid_mse", "layers.2.output.grad[0,1]"): ("0.1481", R),
    ("example-two_layer_sigmoid_mse", "layers.2.weight.grad[0,0]"): ("-0.0727", M),
    ("example-two_layer_sigmoid_mse", "layers.2.weight.grad[1,1]"): ("0.0869", R),
    ("example-two_layer_sigmoid_mse", "step1.layers.2.weight[0,0]"): ("0.536", M),
    ("example-two_layer_sigmoid_mse", "layers.1.output.grad[0,0]"): ("-0.0202", M),
    ("example-two_layer_sigmoid_mse", "layers.0.output.grad[0,0]"): ("-0.0050", M),
    ("example-two_layer_sigmoid_mse", "step1.layers.0.weight[0,0]"): ("0.2025", M),
    # outside the seeds: a hand-computed convolution, max pool and linear unit (every number exact)
    ("example-conv_maxpool_linear", "layers.0.output[0,0,1,2]"): ("8.5", M),
    ("example-conv_maxpool_linear", "layers.2.output[0,0,0,0]"): ("5.5", M),
    ("example-conv_maxpool_linear", "layers.2.output[0,0,1,1]"): ("8.5", M),
    ("example-conv_maxpool_linear", "layers.4.output[0,0]"): ("3.4", M),
    ("example-conv_maxpool_linear", "loss"): ("2.88", M),
    ("example-conv_maxpool_linear", "layers.4.weight.grad[0,1]"): ("20.4", M),
    ("example-conv_maxpool_linear", "layers.2.output.grad[0,0,0,1]"): ("-0.48", M),
    ("example-conv_maxpool_linear", "layers.1.output.grad[0,0,1,2]"): ("0.48", M),
    ("example-conv_maxpool_linear", "layers.0.weight.grad[0,0,0,0]"): ("2.16", M),
    ("example-conv_maxpool_linear", "layers.0.weight.grad[0,0,1,1]"): ("2.64", M),
    ("example-conv_maxpool_linear", "layers.0.bias.grad[0]"): ("1.44", M),
    ("example-conv_maxpool_linear", "input.grad[0,0,2,2]"): ("-0.48", M),
    ("example-conv_maxpool_linear", "input.grad[0,0,3,2]"): ("1.44", M),
    ("example-conv_maxpool_linear", "step1.layers.0.weight[0,0,1,1]"): ("1.736", M),
    ("example-conv_maxpool_linear", "parameter_count"): ("10", M),
    # outside the seeds: BatchNorm on a batch of three, computed by hand to four decimals
    ("example-batch_norm_batch_of_three", "layers.0.output[0,0]"): ("-1.2247", M),
    ("example-batch_norm_batch_of_three", "layers.0.output[1,1]"): ("0.3876", M),
    ("example-batch_norm_batch_of_three", "layers.0.running_mean[0]"): ("0.3", M),
    ("example-batch_norm_batch_of_three", "layers.0.running_var[0]"): ("1.3", M),
    ("example-batch_norm_batch_of_three", "loss"): ("7.9874", M),
    ("example-batch_norm_batch_of_three", "layers.1.weight.grad[0,1]"): ("-7.5997", M),
    ("example-batch_norm_batch_of_three", "layers.0.weight.grad[1]"): ("3.1995", M),
    ("example-batch_norm_batch_of_three", "layers.0.bias.grad[0]"): ("-3", M),
    ("example-batch_norm_batch_of_three", "input.grad[1,0]"): ("0.4937", M),
    ("example-batch_norm_batch_of_three", "input.grad[0,1]"): ("0.1875", M),
    ("example-batch_norm_batch_of_three", "step1.layers.0.weight[1]"): ("0.1801", M),
    ("example-batch_norm_batch_of_three", "step1.layers.0.running_mean[1]"): ("0.2", M),
    # outside the seeds: two steps of a tanh RNN, backpropagation through time by hand
    ("example-rnn_two_steps", "layers.0.output[0,0,0]"): ("0.5370", M),
    ("example-rnn_two_steps", "layers.0.output[0,1,0]"): ("0.6525", M),
    ("example-rnn_two_steps", "loss"): ("0.0465", M),
    ("example-rnn_two_steps", "layers.0.output.grad[0,1,0]"): ("0.6100", M),
    ("example-rnn_two_steps", "layers.0.output.grad[0,0,0]"): ("0", M),
    ("example-rnn_two_steps", "layers.0.weight_hh.grad[0,0]"): ("0.1881", M),
    ("example-rnn_two_steps", "layers.0.weight_ih.grad[0,0]"): ("0.3746", M),
    ("example-rnn_two_steps", "layers.0.bias_ih.grad[0]"): ("0.5497", M),
    ("example-rnn_two_steps", "layers.0.bias_hh.grad[0]"): ("0.5497", M),
    ("example-rnn_two_steps", "input.grad[0,0,0]"): ("0.0997", M),
    ("example-rnn_two_steps", "step1.layers.0.weight_ih[0,0]"): ("0.4625", M),
    # example_attention_three_tokens.toml: single-head attention, hand-computed (docs/textbook.md)
    ("example-attention_three_tokens", "layers.0.attention[0,0,0,0]"): ("0.4011", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,0,1]"): ("0.1978", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,0,2]"): ("0.4011", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,1,0]"): ("0.1978", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,1,1]"): ("0.4011", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,1,2]"): ("0.4011", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,2,0]"): ("0.2483", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,2,1]"): ("0.2483", M),
    ("example-attention_three_tokens", "layers.0.attention[0,0,2,2]"): ("0.5035", M),
    ("example-attention_three_tokens", "layers.0.output[0,0,0]"): ("0.8022", M),
    ("example-attention_three_tokens", "layers.0.output[0,0,1]"): ("0.5989", M),
    ("example-attention_three_tokens", "layers.0.output[0,1,0]"): ("0.5989", M),
    ("example-attention_three_tokens", "layers.0.output[0,1,1]"): ("0.8022", M),
    ("example-attention_three_tokens", "layers.0.output[0,2,0]"): ("0.7517", M),
    ("example-attention_three_tokens", "layers.0.output[0,2,1]"): ("0.7517", M),
    ("example-attention_three_tokens", "loss"): ("1.0134", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,0,0]"): ("-0.1978", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,0,1]"): ("0.5989", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,0,2]"): ("0.4011", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,1,0]"): ("0.5989", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,1,1]"): ("0.8022", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,1,2]"): ("1.4011", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,2,0]"): ("0.7517", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,2,1]"): ("-0.2483", M),
    ("example-attention_three_tokens", "layers.0.attention.grad[0,0,2,2]"): ("0.5035", M),
    ("example-attention_three_tokens", "input.grad[0,0,0]"): ("0.1227", M),
    ("example-attention_three_tokens", "input.grad[0,0,1]"): ("0.4592", M),
    ("example-attention_three_tokens", "input.grad[0,1,0]"): ("0.3902", M),
    ("example-attention_three_tokens", "input.grad[0,1,1]"): ("0.2683", M),
    ("example-attention_three_tokens", "input.grad[0,2,0]"): ("0.7509", M),
    ("example-attention_three_tokens", "input.grad[0,2,1]"): ("0.5291", M),
    ("example-attention_three_tokens", "layers.0.out_proj.weight.grad[0,0]"): ("0.7651", M),
    ("example-attention_three_tokens", "layers.0.out_proj.weight.grad[0,1]"): ("0.9271", M),
    ("example-attention_three_tokens", "layers.0.out_proj.weight.grad[1,0]"): ("0.7743", M),
    ("example-attention_three_tokens", "layers.0.out_proj.weight.grad[1,1]"): ("0.8156", M),
}


@pytest.fixture(scope="module")
def rows():
    return [row for scenario in worked_examples() for row in check_scenario(scenario)]


def test_every_printed_number_has_its_expected_verdict(rows):
    got = {(r["example"], r["at"]): (r["printed"], r["verdict"]) for r in rows}
    assert len(got) == len(rows), "an (example, at) pair is checked twice"
    assert set(got) == set(EXPECTED), (
        f"not in the table: {sorted(set(got) - set(EXPECTED))}; missing: {sorted(set(EXPECTED) - set(got))}")
    wrong = {key: (got[key], EXPECTED[key]) for key in EXPECTED if got[key] != EXPECTED[key]}
    assert not wrong, "\n".join(f"{k}: got {g}, expected {e}" for k, (g, e) in wrong.items())


def test_both_engines_are_reported_and_agree(rows):
    for r in rows:
        assert np.isfinite(r["manual"]) and np.isfinite(r["reference"]), r
        assert abs(r["manual"] - r["reference"]) <= 1e-9 * max(1.0, abs(r["reference"])), r


def test_every_named_check_belongs_to_a_worked_example():
    names = {s.name for s in worked_examples()}
    orphans = [c.name for c in NAMED_CHECKS if c.example not in names]
    assert not orphans, orphans


def test_parameter_counts_of_the_documents_models():
    by_name = {s.name: s for s in worked_examples()}
    assert by_name["seed002-digit_network_784_16_16_10"].parameter_count == 784 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10 == 13002
    assert by_name["seed001-keras_mlp_784_10_10"].parameter_count == 784 * 10 + 10 + 10 * 10 + 10 == 7960


@pytest.mark.parametrize("value,printed,exact,expected", [
    (0.5670929, "0.567", False, MATCH),
    (0.5670929, "≈ 0.567", False, MATCH),      # ≈ does not change the verdict
    (0.6433651, "0.644", False, ROUNDING),     # 0.00063 from the printed number: within one unit of 0.001
    (0.6433651, "0.645", False, ERRATUM),      # 0.0016 away
    (0.0625, "0.0625", False, MATCH),
    (0.0625, "0.063", False, MATCH),           # half away from zero
    (-0.0625, "-0.063", False, MATCH),
    (-0.376175, "-0.377", False, ROUNDING),
    (-0.376175, "0.376", False, ERRATUM),      # sign error
    (25.0, "25", False, MATCH),
    (25.9, "25", False, ROUNDING),             # an integer has 0 decimals: one unit is 1
    (27.0, "25", False, ERRATUM),
    (13002.0, "13,001", False, ROUNDING),
    (13002.0, "13,001", True, ERRATUM),        # a count has no rounded intermediates
    (13001.0, "13,001", True, MATCH),
    (-4.2, "−4.2", False, MATCH),              # the minus sign −
    (float("nan"), "0.5", False, ERRATUM),
])
def test_verdict_rule(value, printed, exact, expected):
    assert verdict(value, printed, exact) == expected


# A float64 whose exact binary value is 0.56495270208821790625108860695036128163337707519531250…:
# shortest form 0.5649527020882179 (16 significant digits), 17 digits 0.56495270208821791, one ulp 2⁻⁵³ ≈ 1.11e-16.
LOSS = 0.56495270208821791


@pytest.mark.parametrize("printed,expected", [
    ("0.564952702088217900", MATCH),     # the float64 value padded with zeros: 18 decimals, reads as LOSS
    ("0.56495270208821791", MATCH),      # its 17 significant digits
    ("0.5649527020882179", MATCH),       # its shortest form: 16 decimals, still finer than one ulp
    ("0.56495270208821790625108860695036128163337707519531250000", MATCH),  # its every decimal, and more
    ("0.564952702088217800", ROUNDING),  # 16th digit one lower: 1.06e-16 away, the neighbouring float
    ("0.564952702088216900", ERRATUM),   # 15th digit wrong: 1.0e-15 = 9 ulps, a digit float64 resolves
    ("0.564952702088227900", ERRATUM),   # 14th digit wrong: 90 ulps
])
def test_a_number_printed_beyond_float64_s_resolution_is_judged_at_it(printed, expected):
    assert resolution(LOSS, printed) == 2.0**-53  # the spacing of float64 in [0.5, 1)
    assert verdict(LOSS, printed) == expected


def test_the_resolution_widens_to_the_engines_spread():
    # two correct engines 10 ulps apart (2⁻⁵⁷ ≈ 6.9e-18 in [2⁻⁵, 2⁻⁴)): example-rnn_two_steps's loss
    numpy_value, torch_value = 0.04651239499677694, 0.04651239499677701
    spread = torch_value - numpy_value
    assert spread == 10 * 2.0**-57
    assert resolution(torch_value, "0.04651239499677694", numpy_value) == spread
    assert verdict(torch_value, "0.04651239499677694", other=numpy_value) == MATCH   # NumPy's value, as printed
    assert verdict(torch_value, "0.046512394996776975", other=numpy_value) == MATCH  # between the two
    assert verdict(torch_value, "0.04651239499677687", other=numpy_value) == ROUNDING  # 7e-17 below NumPy's
    assert verdict(torch_value, "0.04651239499677680", other=numpy_value) == ERRATUM   # 14e-17 below
    # against torch's value alone the 17 decimals are within float64's resolution: 7e-17 off is an erratum
    assert resolution(torch_value, "0.04651239499677694") is None
    assert verdict(torch_value, "0.04651239499677694") == ERRATUM


@pytest.mark.parametrize("value,printed", [
    (0.5670929, "0.567"), (LOSS, "0.564952702088218"), (25.0, "25"), (1.5, "1.500000000000000"),  # 1e-15 > 2.2e-16
])
def test_a_number_float64_resolves_is_judged_at_its_own_last_digit(value, printed):
    assert resolution(value, printed) is None


def test_a_row_judged_at_float64_s_resolution_says_so(tmp_path):
    text = OWN_EXAMPLE.read_text()
    path = tmp_path / "padded.toml"
    path.write_text(text + '\n[[expect]]\nat = "layers.3.output[0,0]"\nprinted = "PADDED"\n')
    value = reference.run(load_scenario(OWN_EXAMPLE).astype("float64")).element("layers.3.output[0,0]")
    digits = repr(value)  # the shortest decimal that reads as torch's value
    padded = digits + "0" * (20 - len(digits.partition(".")[2]))  # 20 decimals
    path.write_text(path.read_text().replace("PADDED", padded))
    row = check_scenario(load_scenario(path))[-1]
    assert row["printed"] == padded and row["decimals"] == 20
    assert row["verdict"] == MATCH and row["resolution"] >= math.ulp(value), row
    assert "20 decimals printed, finer than float64 resolves here" in row["note"]
    assert row["note"].startswith("[")  # the file's expectation has no note of its own


def test_printed_number_grammar():
    assert printed_number("≈ -0.332") == (Decimal("-0.332"), 3, True)
    assert printed_number("13,001") == (Decimal("13001"), 0, False)
    assert printed_number("0.0050") == (Decimal("0.0050"), 4, False)
    for bad in ("", "abc", "1e-3", "1,00", "0.5.1", "≈"):
        assert printed_number(bad) is None, bad


def _load(tmp_path, text):
    path = tmp_path / "my_example.toml"
    path.write_text(text)
    return load_scenario(path)


@pytest.mark.parametrize("expect,field,words", [
    ('at = "layers.7.output[0,0]"\nprinted = "0.5"', "expect[0].at", "layer index from 0 to 1"),
    ('at = "layers.1.weight[0,0]"\nprinted = "0.5"', "expect[0].at", "has no parameters"),
    ('at = "step2.layers.0.weight[0,0]"\nprinted = "0.5"', "expect[0].at", "step from 1 to 1"),
    ('at = "layers.0.weight[2,0]"\nprinted = "0.5"', "expect[0].at", "out of range"),
    ('at = "layers.0.weight"\nprinted = "0.5"', "expect[0].at", "element index"),
    ('at = "loss"\nprinted = "0.5e-3"', "expect[0].printed", "decimal number as printed"),
    ('at = "loss"', "expect[0].printed", "missing"),
    ('at = "loss"\nprinted = "0.5"\nsource = "p. 3"', "expect[0].source", "unknown field"),
])
def test_bad_expectations_name_file_and_field(tmp_path, expect, field, words):
    with pytest.raises(ScenarioError) as info:
        _load(tmp_path, GOOD + "\n[[expect]]\n" + expect + "\n")
    message = str(info.value)
    assert message.startswith("my_example.toml: ") and f": {field}: " in message and words in message, message


def test_generated_data_is_seeded_and_validated(tmp_path):
    text = GOOD.replace("x = [[0.5, 0.6]]", 'x = {generate = "uniform", rows = 5, cols = 2}').replace(
        "y = [[1.0, 0.0]]", 'y = {generate = "one_hot", rows = 5, cols = 2}')
    a, b = _load(tmp_path, text), _load(tmp_path, text)
    assert a.x.shape == (5, 2) and np.all((a.x >= 0) & (a.x < 1))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y.sum(axis=1), np.ones(5))
    assert not np.array_equal(a.x, _load(tmp_path, "seed = 9\n" + text).x)
    with pytest.raises(ScenarioError, match=r"my_example.toml: data.x.generate: unknown value 'gauss'"):
        _load(tmp_path, text.replace('generate = "uniform"', 'generate = "gauss"'))
    with pytest.raises(ScenarioError, match=r"my_example.toml: data.x.rows: expected an integer >= 1"):
        _load(tmp_path, text.replace("rows = 5, cols = 2}", "rows = 0, cols = 2}", 1))


def test_engines_that_disagree_get_no_verdict(monkeypatch):
    scenario = next(s for s in worked_examples() if s.name == S004)
    honest = manual.run

    def off_by_a_little(s):
        trace = honest(s)
        trace["layers.2.weight.grad"] = trace["layers.2.weight.grad"] * (1 + 1e-3)
        return trace

    monkeypatch.setattr(manual, "run", off_by_a_little)
    verdicts = {r["at"]: r["verdict"] for r in check_scenario(scenario)}
    assert verdicts["layers.2.weight.grad[0,0]"] == "disagree"
    assert verdicts["layers.1.output[0,0]"] == MATCH
    notes = {r["at"]: r["note"] for r in check_scenario(scenario)}
    assert notes["layers.2.weight.grad[0,0]"].endswith("[finite differences side with torch]")
