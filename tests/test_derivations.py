"""The documents' gradient formulas against autograd: the verdicts a careful reader reaches by hand."""
import numpy as np
import pytest
import torch

from backprop_verify.reports.textbook.derivations import DERIVATIONS, HOLDS, WRONG, Derivation, evaluate, evaluate_all

# id -> verdict, from redoing each derivation by hand:
# 000's output rule drops f'(z) (∂y/∂W is not x unless f is the identity), and its
# hidden rule with the same substitution drops f'⁽ˡ⁾; read as the exact chain rule it
# holds. 003 writes σ(z¹₁)(1 − σ(z¹₁)) for the output weight where the chain above it
# needs σ'(z²₁); its 3-layer chain follows one path through a²₁ of the two, and
# its 3-layer sum has no factor for a sigmoid output unit.
# 004's a − t needs Σt = 1.
# The CNN chapter's rules are the stride-1, unpadded case (a stride spreads δ out,
# padding is cropped); the BatchNorm three-term rule needs the batch statistics
# (in evaluation mode they are constants), and without its variance term it is wrong.
EXPECTED = {
    "000-output-layer": "holds when the output activation is the identity (f' ≡ 1; ReLU only if every z > 0)",
    "000-hidden-layer": "holds when the hidden activation f⁽ˡ⁾ is the identity",
    "000-hidden-layer-chain": HOLDS,
    "001-single-neuron-W": HOLDS,
    "001-single-neuron-b": HOLDS,
    "001-mse-half-sum": HOLDS,
    "002-three-factor-chain": HOLDS,
    "003-quadratic": HOLDS,
    "003-sigmoid-derivative": HOLDS,
    "003-mse-derivative": HOLDS,
    "003-one-layer": HOLDS,
    "003-two-layer-output-weight": WRONG,
    "003-two-layer-hidden-weight": HOLDS,
    "003-three-layer-chain": "holds when the second hidden layer has a single unit (one path from a¹₁ to ŷ)",
    "003-three-layer-sum": "holds when the output unit is linear, ŷ = z³₁",
    "004-softmax-cross-entropy": "holds when each sample's targets sum to 1 (one-hot labels, as in the example, or any distribution)",
    "004-output-weights": HOLDS,
    "004-hidden-weights": HOLDS,
    "cnn-input-gradient": "holds when stride 1 and no padding",
    "cnn-kernel-gradient": "holds when stride 1 and no padding",
    "batchnorm-backward": "holds when the layer normalises with the batch's statistics (training mode)",
    "batchnorm-backward-without-variance-term": WRONG,
    "rnn-bptt": HOLDS,
    "rnn-last-step-only": "holds when the sequence has a single step, T = 1",
    "rnn-truncated-bptt": HOLDS,
}


@pytest.fixture(scope="module")
def results():
    return {r.id: r for r in evaluate_all()}


def test_every_derivation_has_the_verdict_of_a_hand_check(results):
    assert set(results) == set(EXPECTED)
    wrong = {k: (results[k].verdict, v) for k, v in EXPECTED.items() if results[k].verdict != v}
    assert not wrong, wrong


def test_results_are_consistent_and_corrections_hold(results):
    for r in results.values():
        assert not r.inconsistent, (r.id, r.inconsistent)
        assert bool(r.corrected) == bool(r.fails_in), r.id


def test_every_document_is_covered():
    assert {d.document for d in DERIVATIONS} == {"000", "001", "002", "003", "004", "textbook"}


def _sigmoid_rule(formula):
    def sample(setting, rng):
        z = torch.tensor(rng.normal(size=5), requires_grad=True)
        torch.sigmoid(z).sum().backward()
        s = 1 / (1 + np.exp(-z.detach().numpy()))
        return formula(s), z.grad.numpy(), s * (1 - s)
    return sample


def test_a_wrong_formula_is_found_wrong_and_a_wrong_condition_is_flagged():
    settings = ({"label": "a"}, {"label": "b"})
    wrong = Derivation("t-wrong", "x", "σ' = σ", settings, _sigmoid_rule(lambda s: s), corrected="σ(1 − σ)")
    assert evaluate(wrong, 99).verdict == WRONG and not evaluate(wrong, 99).inconsistent
    right = Derivation("t-right", "x", "σ' = σ(1 − σ)", settings, _sigmoid_rule(lambda s: s * (1 - s)))
    assert evaluate(right, 99).verdict == HOLDS
    slightly_off = Derivation("t-off", "x", "σ' ≈", settings, _sigmoid_rule(lambda s: s * (1 - s) * (1 + 1e-8)))
    assert evaluate(slightly_off, 99).verdict == WRONG  # 1e-8 relative is far beyond the float64 tolerance

    def depends(setting, rng):
        z = torch.tensor(rng.normal(size=5), requires_grad=True)
        torch.sigmoid(z).sum().backward()
        s = 1 / (1 + np.exp(-z.detach().numpy()))
        return (s * (1 - s) if setting["label"] == "a" else s), z.grad.numpy(), s * (1 - s)

    claimed_b = Derivation("t-cond", "x", "", settings, depends,
                           condition=("label b", lambda s: s["label"] == "b"), corrected="σ(1 − σ)")
    result = evaluate(claimed_b, 99)
    assert result.verdict == "holds when label b" and "selects ['b']" in result.inconsistent
