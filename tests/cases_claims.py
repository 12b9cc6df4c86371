"""``[[claim]]`` cases: claims with the verdict a hand derivation gives, formulas the loader refuses,
and hostile formulas that must be refused fast and without allocating."""
from pytest_cases import case

# x (2) → linear → sigmoid → linear → softmax, L = −Σ t log a (document 004's network).
SOFTMAX_NET = '''
name = "claims-softmax"

[[layers]]
type = "linear"
weight = [[0.1, 0.2], [0.3, 0.4]]
bias = [0.1, 0.2]

[[layers]]
type = "sigmoid"

[[layers]]
type = "linear"
weight = [[0.7, 0.8], [0.9, 1.0]]
bias = [0.1, 0.2]

[[layers]]
type = "softmax"

[loss]
type = "cross_entropy"
reduction = "sum"

[data]
x = [[0.5, 0.6], [0.1, -0.3]]
y = [[1.0, 0.0], [0.0, 1.0]]
'''

# x (2) → linear → sigmoid, E = ½Σ(a − t)² (document 001's single neuron, two of them).
SIGMOID_NET = '''
name = "claims-sigmoid"

[[layers]]
type = "linear"
weight = [[0.2, -0.1], [0.4, 0.3]]
bias = [0.1, -0.2]

[[layers]]
type = "sigmoid"

[loss]
type = "mse"
reduction = "half_sum"

[data]
x = [[1.0, 0.5], [0.25, 0.75], [0.5, 0.5]]
y = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
'''


def claim(formula: str, at: str, draws: int | None = 12, statement: str = "a claim") -> str:
    text = f'\n[[claim]]\nstatement = "{statement}"\nat = "{at}"\nformula = """{formula}"""\n'
    return text + (f"draws = {draws}\n" if draws is not None else "")


# ----------------------------------------------------------------------------- verdicts
# Each: (file text, verdict, first breaking draw or None, words in the note)

@case(id="seed004-a_minus_t-one_hot-holds", tags="verdict")
def case_softmax_shortcut_holds():
    return SOFTMAX_NET + claim("a[3] - t", "layers.2.output.grad", statement="∂L/∂z³ = a³ − t"), "holds", None, ""


@case(id="seed004-output_weights-holds", tags="verdict")
def case_output_weights_hold():
    return SOFTMAX_NET + claim("delta[2].T @ a[1]", "layers.2.weight.grad"), "holds", None, ""


@case(id="seed004-hidden_weights-element-holds", tags="verdict")
def case_hidden_weight_element_holds():
    formula = "(((a[3] - t) @ W[2] * a[1] * (1 - a[1])).T @ x)[0, 1]"
    return SOFTMAX_NET + claim(formula, "layers.0.weight.grad[0,1]"), "holds", None, ""


@case(id="seed004-a_minus_t-unnormalised_targets-wrong", tags="verdict")
def case_softmax_shortcut_needs_normalised_targets():
    text = SOFTMAX_NET.replace("y = [[1.0, 0.0], [0.0, 1.0]]", "y = [[1.0, 1.0], [0.0, 0.5]]")
    return text + claim("a[3] - t", "layers.2.output.grad"), "wrong", 0, "max|formula − autograd|"


@case(id="seed001-delta_missing_sigmoid_prime-wrong", tags="verdict")
def case_delta_without_sigmoid_prime_is_wrong():
    return SIGMOID_NET + claim("a[1] - y", "layers.0.output.grad", statement="δ = a − t"), "wrong", 0, ""


@case(id="seed001-delta_with_sigmoid_prime-holds", tags="verdict")
def case_delta_with_sigmoid_prime_holds():
    return SIGMOID_NET + claim("(a[1] - y) * a[1] * (1 - a[1])", "layers.0.output.grad"), "holds", None, ""


@case(id="seed001-bias_rule-holds", tags="verdict")
def case_bias_rule_holds():
    return SIGMOID_NET + claim("sum((a[1] - t) * a[1] * (1 - a[1]), axis=0)", "layers.0.bias.grad"), "holds", None, ""


@case(id="wrong_shape-is_wrong", tags="verdict")
def case_wrong_shape():
    return SIGMOID_NET + claim("delta[0]", "layers.0.weight.grad"), "wrong", 0, "shape (3, 2)"


@case(id="non_finite-is_wrong", tags="verdict")
def case_non_finite():
    return SIGMOID_NET + claim("log(0 * x)", "input.grad"), "wrong", 0, "non-finite"


@case(id="holds_on_the_file_breaks_on_draw_1", tags="verdict")
def case_breaks_on_a_draw():
    # At x = 0 both pre-activations are 0 and σ'(z¹) = σ'(z²): the document's slip shows only on other data.
    text = '''
[[layers]]
type = "linear"
weight = [[1.0]]
bias = [0.0]
[[layers]]
type = "sigmoid"
[[layers]]
type = "linear"
weight = [[1.0]]
bias = [-0.5]
[[layers]]
type = "sigmoid"
[loss]
type = "mse"
reduction = "sum"
[data]
x = [[0.0]]
y = [[0.0]]
'''
    return text + claim("(2 * (a[3] - y) * a[1] * (1 - a[1])).T @ a[1]", "layers.2.weight.grad"), "wrong", 1, ""


@case(id="draws_0-only_the_file", tags="verdict")
def case_draws_zero():
    text = '''
[[layers]]
type = "linear"
weight = [[-6.0]]
[loss]
type = "mse"
reduction = "sum"
[data]
x = [[1.0]]
y = [[-1.0]]
'''
    return text + claim("2 * (W[0] + 1)", "layers.0.weight.grad", draws=0), "holds", None, ""


@case(id="loss_itself", tags="verdict")
def case_loss():
    return SIGMOID_NET + claim("sum((a[1] - y)**2) / 2", "loss"), "holds", None, ""


# ----------------------------------------------------------------------------- invalid files
# Each: (file text, field, words in the message) — refused when the file is loaded.

def _bad(formula, words, at="layers.0.weight.grad", field="claim[0].formula", **extra):
    return SIGMOID_NET + claim(formula, at, **extra), field, words


@case(id="unknown_name", tags="invalid")
def case_unknown_name():
    return _bad("delta[0].T @ inputs", "unknown name 'inputs'")


@case(id="unknown_function", tags="invalid")
def case_unknown_function():
    return _bad("relu(z[0])", "unknown function 'relu'")


@case(id="family_without_index", tags="invalid")
def case_family_without_index():
    return _bad("W @ x", "W needs a layer number")


@case(id="layer_out_of_range", tags="invalid")
def case_layer_out_of_range():
    return _bad("delta[5].T @ x", "no layer 5")


@case(id="weight_of_an_activation", tags="invalid")
def case_weight_of_an_activation():
    return _bad("W[1]", "layer 1 is 'sigmoid', which has no weight")


@case(id="computed_layer_index", tags="invalid")
def case_computed_layer_index():
    return _bad("W[n - 3]", "literal layer number")


@case(id="attribute", tags="invalid")
def case_attribute():
    return _bad("x.sum()", "attribute access (.sum) is not allowed")


@case(id="comprehension", tags="invalid")
def case_comprehension():
    return _bad("sum([v for v in x])", "comprehension is not allowed")


@case(id="string", tags="invalid")
def case_string():
    return _bad("'x' * 3", "a string is not allowed")


@case(id="keyword", tags="invalid")
def case_keyword():
    return _bad("sum(x, dtype=1)", "keyword dtype= is not allowed")


@case(id="not_an_expression", tags="invalid")
def case_syntax():
    return _bad("delta[0].T @", "is not an expression")


@case(id="two_statements", tags="invalid")
def case_statements():
    return _bad("x; x", "is not an expression")


@case(id="at_a_step_address", tags="invalid")
def case_step_address():
    return _bad("x", "at the initial parameters", at="step1.layers.0.weight.grad", field="claim[0].at")


@case(id="at_missing_address", tags="invalid")
def case_missing_address():
    return _bad("x", "does not exist", at="layers.1.weight.grad", field="claim[0].at")


@case(id="too_many_draws", tags="invalid")
def case_too_many_draws():
    return _bad("x", "expected at most 100", field="claim[0].draws", draws=10**9)


@case(id="missing_formula", tags="invalid")
def case_missing_formula():
    text = SIGMOID_NET + '\n[[claim]]\nstatement = "s"\nat = "loss"\n'
    return text, "claim[0].formula", "missing"


# ----------------------------------------------------------------------------- hostile formulas
# Each: (file text, field, words in the message) — refused at load or by the evaluation guards
# (``validate_claims``: zero arrays of the file's shapes), in well under a second, without allocating.

@case(id="import", tags="hostile")
def case_import():
    return _bad("__import__('os')", "unknown function '__import__'")


@case(id="dunder_attribute", tags="hostile")
def case_dunder_attribute():
    return _bad("x.__class__", "attribute access (.__class__) is not allowed")


@case(id="attribute_chain_from_a_tuple", tags="hostile")
def case_attribute_chain():
    return _bad("().__class__.__bases__", "is not allowed")


@case(id="tower_of_powers", tags="hostile")
def case_tower():
    return _bad("2**2**2**2**2**2", "exponent of magnitude 65536")


@case(id="huge_exponent", tags="hostile")
def case_huge_exponent():
    return _bad("9**999999999", "exponent of magnitude 1e+09")


# 31,623 inputs: a product of x with itself would hold 31,623² ≈ 10⁹ float64 entries (8 GB).
WIDE_INPUT = '''
[[layers]]
type = "linear"
init = "zeros"
out = 1
[loss]
type = "mse"
reduction = "sum"
[data]
x = {generate = "uniform", rows = 1, cols = 31623}
y = [[0.0]]
'''


@case(id="outer_of_1e9_entries", tags="hostile")
def case_outer_huge():
    return WIDE_INPUT + claim("outer(x, x)", "layers.0.weight.grad"), "claim[0].formula", "1,000,014,129 entries"


@case(id="matmul_of_1e9_entries", tags="hostile")
def case_matmul_huge():
    return WIDE_INPUT + claim("x.T @ x", "layers.0.weight.grad"), "claim[0].formula", "limit elements"


@case(id="formula_of_100kB", tags="hostile")
def case_long_formula():
    return _bad("x" + " + x" * 25_000, "characters long; expected at most 1,000")


@case(id="parentheses_1e5_deep", tags="hostile")
def case_deep_parentheses():
    return _bad("(" * 100_000 + "x" + ")" * 100_000, "characters long")


@case(id="deep_unary_chain", tags="hostile")
def case_deep_unary():
    return _bad("-" * 900 + "x", "nested more than 100 levels")


@case(id="lambda", tags="hostile")
def case_lambda():
    return _bad("(lambda: 0)()", "only the listed functions can be called")
