"""``[[claim]]``: a derivation stated as a formula, judged against autograd (reports/textbook/claims.py)."""
import dataclasses
import math
import time
import tracemalloc

import numpy as np
import pytest
from pytest_cases import parametrize_with_cases

from backprop_verify.reports.cli import main
from backprop_verify.reports.textbook import claims
from backprop_verify.reports.textbook.claims import HOLDS, WRONG, check_claims, data_set, draw_data, validate_claims
from backprop_verify.reports.textbook.derivations import claim_frame
from backprop_verify.scenarios import ScenarioError, formula, load_scenario
from backprop_verify.scenarios.builtin import worked_example_paths, worked_examples
from backprop_verify.scenarios.formula import FUNCTIONS
from tests.cases_claims import SIGMOID_NET, SOFTMAX_NET, claim


def _load(tmp_path, text, name="chapter.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


@parametrize_with_cases("text,verdict,broken_at,words", cases="tests.cases_claims", has_tag="verdict")
def test_a_claim_gets_the_verdict_of_a_hand_derivation(tmp_path, text, verdict, broken_at, words):
    [result] = check_claims(_load(tmp_path, text))
    assert (result.verdict, result.broken_at) == (verdict, broken_at), result
    assert words in result.note
    if verdict == HOLDS:
        assert result.worst_rel <= 1e-10


@parametrize_with_cases("text,field,words", cases="tests.cases_claims", has_tag="invalid")
def test_an_invalid_claim_is_refused_when_the_file_is_loaded(tmp_path, text, field, words):
    with pytest.raises(ScenarioError) as err:
        _load(tmp_path, text)
    assert err.value.file == "chapter.toml" and err.value.field == field, str(err.value)
    assert words in str(err.value)


@parametrize_with_cases("text,field,words", cases="tests.cases_claims", has_tag="hostile")
def test_a_hostile_formula_is_refused_fast_and_without_allocating(tmp_path, monkeypatch, text, field, words):
    """Work and memory are bounded here, not speed (speed is bench's): the tree nodes the language check
    visits, the array entries the evaluator computes, the peak allocation; the clock only catches a hang."""
    path = tmp_path / "chapter.toml"
    path.write_text(text, encoding="utf-8")
    checked, computed = [], []
    check_node, produce = formula._check_node, claims._Evaluator._produce
    monkeypatch.setattr(formula, "_check_node", lambda node, *rest: checked.append(node) or check_node(node, *rest))

    def counted_produce(evaluator, shape, what, work=None):
        produce(evaluator, shape, what, work)  # raises for a refused result: only what is computed counts
        computed.append(math.prod(shape) if work is None else work)

    monkeypatch.setattr(claims._Evaluator, "_produce", counted_produce)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ScenarioError) as err:
            validate_claims(load_scenario(path))  # the loader's parse, then the evaluation guards
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.file == "chapter.toml" and err.value.field == field, str(err.value)
    assert words in str(err.value)
    assert len(checked) <= 1_000, len(checked)  # a formula has at most 1,000 characters, so fewer nodes
    assert sum(computed) <= 10**5, sum(computed)  # the refused arrays would hold 10⁹ entries; x holds 31,623
    assert peak < 64 * 2**20, peak  # the refused arrays would be gigabytes; the file itself is ≤ 200 kB
    assert elapsed < 30, elapsed  # only against a hang: the unguarded formulas would take hours


def test_an_evaluation_guard_on_the_data_is_an_invalid_file(tmp_path):
    # The zero arrays of validate_claims give an exponent of 0; the file's weights one of 400.
    scenario = _load(tmp_path, SIGMOID_NET + claim("sum(2 ** (1000 * W[0]))", "loss"))
    validate_claims(scenario)
    with pytest.raises(ScenarioError, match=r"^chapter.toml: claim\[0\].formula: \*\* with an exponent of magnitude "
                                            r"400; expected \|p\| <= 100 \(on the file's data\)$"):
        check_claims(scenario)


def test_every_draw_keeps_the_shapes_and_valid_targets():
    seed004 = next(s for s in worked_examples() if s.name == "seed004-two_layer_sigmoid_softmax")
    seed001 = next(s for s in worked_examples() if s.name == "seed001-keras_mlp_784_10_10")
    for scenario in (seed004, seed001):
        for draw in (1, 2, 3):
            x, y = data_set(scenario, draw)
            assert x.shape == scenario.x.shape and y.shape == scenario.y.shape
            assert set(np.unique(y)) <= {0.0, 1.0} and np.all(y.sum(axis=-1) == 1)  # one-hot rows
            assert np.all((x >= 0) & (x < 1))  # the files' x are in [0, 1]
    assert np.array_equal(data_set(seed004, 2)[0], data_set(seed004, 2)[0])  # seeded
    assert not np.array_equal(data_set(seed004, 1)[0], data_set(seed004, 2)[0])
    x, y = data_set(seed004, 0)
    assert x is seed004.x and y is seed004.y


@pytest.mark.parametrize("loss, targets, check", [
    ("bce", "[[1.0, 0.0], [0.0, 1.0]]", lambda y: set(np.unique(y)) <= {0.0, 1.0}),
    ("bce", "[[0.3, 0.9], [0.5, 0.1]]", lambda y: np.all((y >= 0) & (y < 1)) and not np.all(y == np.round(y))),
    ("cross_entropy", "[[0.3, 0.7], [0.5, 0.5]]", lambda y: np.allclose(y.sum(axis=-1), 1) and np.all(y > 0)),
    ("mse", "[[-3.0, 2.0], [0.5, 1.0]]", lambda y: np.any(y < 0)),
])
def test_targets_are_drawn_like_the_files(tmp_path, loss, targets, check):
    text = SIGMOID_NET.replace('type = "mse"\nreduction = "half_sum"', f'type = "{loss}"\nreduction = "sum"')
    text = text.replace("y = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]", f"y = {targets}").replace(
        "x = [[1.0, 0.5], [0.25, 0.75], [0.5, 0.5]]", "x = [[1.0, 0.5], [0.25, 0.75]]")
    scenario = _load(tmp_path, text)
    for draw in range(1, 4):
        assert check(data_set(scenario, draw)[1])
    assert claims.draw_data is draw_data


def test_the_evaluator_offers_exactly_the_language_s_functions():
    evaluator = claims._Evaluator({}, {}, 10)
    assert set(evaluator.functions) == set(FUNCTIONS)


# ----------------------------------------------------------------------------- the seeds' claims

# (example, claim index) -> (verdict, first breaking draw): from the hand derivations in docs/textbook.md.
SEED_CLAIMS = {
    ("seed001-keras_mlp_784_10_10", 0): (HOLDS, None),   # (a − t)/n, mean cross-entropy, one-hot t
    ("seed001-keras_mlp_784_10_10", 1): (HOLDS, None),
    ("seed001-keras_mlp_784_10_10", 2): (HOLDS, None),
    ("seed001-keras_mlp_784_10_10", 3): (HOLDS, None),   # relu'(z) = [z > 0]; no z is exactly 0
    ("seed001-keras_mlp_784_10_10", 4): (HOLDS, None),
    ("seed002-digit_network_784_16_16_10", 0): (HOLDS, None),  # the three-factor chain rule
    ("seed002-digit_network_784_16_16_10", 1): (HOLDS, None),
    ("seed002-digit_network_784_16_16_10", 2): (HOLDS, None),
    ("seed003-gradient_descent_quadratic", 0): (HOLDS, None),  # f'(w) = 2(w + 1), on the file's data only
    ("seed003-gradient_descent_quadratic", 1): (HOLDS, None),
    ("seed003-learning_guesses", 0): (HOLDS, None),
    ("seed003-vanishing_gradient_sigmoid", 0): (HOLDS, None),  # σ' = σ(1 − σ)
    ("seed003-vanishing_gradient_sigmoid", 1): (HOLDS, None),  # σ' = e⁻ᶻ/(1 + e⁻ᶻ)²
    ("seed003-vanishing_gradient_sigmoid", 2): (HOLDS, None),
    # σ'(z¹) for σ'(z²): equal at the file's x = 0 (z¹ = z² = 0), wrong on the first random x
    ("seed003-vanishing_gradient_sigmoid", 3): (WRONG, 1),
    ("seed004-two_layer_sigmoid_softmax", 0): (HOLDS, None),   # a³ − t with one-hot t
    ("seed004-two_layer_sigmoid_softmax", 1): (HOLDS, None),
    ("seed004-two_layer_sigmoid_softmax", 2): (HOLDS, None),
    ("seed004-two_layer_sigmoid_softmax", 3): (HOLDS, None),
    ("seed004-two_layer_sigmoid_softmax", 4): (HOLDS, None),
    ("example-attention_three_tokens", 0): (HOLDS, None),   # a = softmax(X Xᵀ/√d) X
    ("example-attention_three_tokens", 1): (HOLDS, None),   # ∂E/∂W_o = δᵀ (P V)
    ("example-attention_three_tokens", 2): (HOLDS, None),   # the softmax's whole Jacobian
    ("example-attention_three_tokens", 3): (WRONG, 0),      # its diagonal only: wrong on the file's data
}


@pytest.fixture(scope="module")
def seed_claims():
    return {(s.name, k): r for s in worked_examples() for k, r in enumerate(check_claims(s))}


def test_the_seeds_claims_have_the_verdicts_of_the_hand_derivations(seed_claims):
    assert {key: (r.verdict, r.broken_at) for key, r in seed_claims.items()} == SEED_CLAIMS


def test_the_seeds_claims_are_in_the_report_s_derivation_table(seed_claims):
    frame = claim_frame()
    assert list(frame["id"]) == [f"{name}:claim[{k}]" for name, k in seed_claims]
    wrong = frame[frame["verdict"] == WRONG].set_index("id")
    assert list(wrong.index) == ["example-attention_three_tokens:claim[3]", "seed003-vanishing_gradient_sigmoid:claim[3]"]
    seed003 = wrong.loc["seed003-vanishing_gradient_sigmoid:claim[3]"]
    assert seed003["document"] == "003" and seed003["fails_in"].startswith("draw 1:")
    assert wrong.loc["example-attention_three_tokens:claim[3]"]["document"] == "example"  # not a seed's number


# ----------------------------------------------------------------------------- the check command

def test_check_prints_claims_writes_claims_csv_and_exits_1_on_a_wrong_claim(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(SOFTMAX_NET + claim("a[3] - t", "layers.2.output.grad", statement="∂L/∂z³ = a³ − t"))
    assert main(["check", str(good), "--out", str(tmp_path / "a")]) == 0
    lines = (tmp_path / "a" / "claims.csv").read_text().splitlines()
    assert lines[0] == "example,statement,at,verdict,worst_rel,draws"
    assert lines[1].startswith("claims-softmax,∂L/∂z³ = a³ − t,layers.2.output.grad,holds,") and lines[1].endswith(",12")
    assert (tmp_path / "a" / "textbook.csv").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text(SIGMOID_NET + claim("a[1] - y", "layers.0.output.grad", statement="δ = a − t"))
    capsys.readouterr()
    assert main(["check", str(good), str(bad), "--out", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "1 holds, 1 wrong" in out
    # the table's number is named as the worst over all draws, the line under it as the first breaking draw's
    assert "  verdict  worst_rel (all draws)" in out
    assert "      first breaking draw 0 (the file's data): max|formula − autograd| / max|autograd| = " in out
    assert "first breaking draw 0 (the file's data): " in out.split("Wrong claims")[1]
    assert "worst_rel" in out.split("Wrong claims")[1] and "(all draws, 0–12)" in out
    assert "claims-sigmoid,δ = a − t,layers.0.output.grad,wrong," in (tmp_path / "b" / "claims.csv").read_text()


def test_the_claims_table_names_the_worst_over_all_draws_and_the_first_breaking_draw_apart():
    # wrong on the file's data (draw 0) by 3, and by 3.86 on a later draw: two numbers, each named
    result = claims.ClaimResult(example="e", statement="δ = a − t", at="layers.0.output.grad", formula="a[1] - y",
                                verdict=WRONG, worst_rel=3.86, draws=12, broken_at=0,
                                note="max|formula − autograd| / max|autograd| = 3")
    header, rule, row, breaking = claims.claims_text([result]).splitlines()
    assert header.split("  ")[-1] == "worst_rel (all draws)" and row.endswith("wrong    3.86e+00")
    assert breaking.strip() == ("first breaking draw 0 (the file's data): max|formula − autograd| / max|autograd| "
                                "= 3; formula a[1] - y")
    later = dataclasses.replace(result, broken_at=4)
    assert claims.claims_text([later]).splitlines()[3].strip().startswith("first breaking draw 4: max|")


def test_check_refuses_a_formula_the_guards_refuse_and_writes_nothing(tmp_path, capsys):
    good = worked_example_paths()[0]
    bad = tmp_path / "teacher.toml"
    bad.write_text(SIGMOID_NET + claim("2**2**2**2**2**2", "loss"))
    out = tmp_path / "out"
    assert main(["check", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "teacher.toml: claim[0].formula: ** with an exponent of magnitude 65536" in err
    assert not out.exists()


def test_a_claim_refused_on_the_data_is_its_own_result_and_the_engines_run_once_per_draw(tmp_path, monkeypatch):
    """``check_claims(each=True)`` (the pytest plugin's): the refused claim's result is its error, named by
    its place; the claim beside it is judged on the same runs of the engines."""
    from backprop_verify import manual

    scenario = _load(tmp_path, SIGMOID_NET + claim("sum(2 ** (1000 * W[0]))", "loss", draws=2)
                     + claim("a[1]", "layers.1.output", draws=2))
    runs = []
    run = manual.run
    monkeypatch.setattr(manual, "run", lambda *args, **kwargs: runs.append(1) or run(*args, **kwargs))
    refused, held = check_claims(scenario, each=True)
    assert isinstance(refused, ScenarioError) and refused.field == "claim[0].formula", refused
    assert held.verdict == HOLDS
    assert len(runs) == 3  # draws 0, 1, 2: once each for both claims
    with pytest.raises(ScenarioError, match=r"claim\[0\]\.formula"):
        check_claims(scenario)
