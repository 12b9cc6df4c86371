"""The backward passes people derive by hand for a transformer — and get wrong — each put into the manual
engine on purpose, and caught by the default scenarios: attention's softmax Jacobian with its diagonal only,
the 1/√d left out of the backward, the causal mask applied after the softmax, a tied weight's gradient
overwritten by its second use instead of summed, a residual block whose backward drops the skip path.

Each test first runs the correct engine on the same scenarios (nothing fails), then the mutant, and names
where it is caught."""
import numpy as np
import pytest

from backprop_verify import manual, reference
from backprop_verify.manual import engine
from backprop_verify.manual.attention import MultiheadAttention
from backprop_verify.manual.residual import Residual
from backprop_verify.reports.textbook.claims import HOLDS, check_claims
from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.scenarios import load_scenario
from backprop_verify.scenarios.builtin import worked_example_paths
from backprop_verify.scenarios.layer_grids import all_layer_scenarios
from backprop_verify.scenarios.model import walk_layers
from tests.cases_transformer import GPT_BLOCKS, RANDOM_TRANSFORMERS

GRID = all_layer_scenarios()
ATTENTION_GRID = [s for s in GRID if s.layers[0].type == "multihead_attention"]
RESIDUAL_GRID = [s for s in GRID if s.layers[0].type == "residual"]
EXAMPLE = load_scenario(next(p for p in worked_example_paths() if p.name == "example_attention_three_tokens.toml"))
TIED = [s for s in RANDOM_TRANSFORMERS + GPT_BLOCKS if any(layer.tied for _path, layer in walk_layers(s.layers))]


def _failures(scenario) -> set[str]:
    rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
    return {row.address for row in rows if not row.passed}


def _caught(scenarios) -> dict[str, set[str]]:
    return {s.name: failed for s in scenarios if (failed := _failures(s))}


def test_the_correct_engine_passes_every_scenario_the_mutants_are_tried_on():
    assert not _caught(ATTENTION_GRID + RESIDUAL_GRID + TIED + [EXAMPLE])
    assert all(verdict.verdict == HOLDS for verdict in check_claims(EXAMPLE)[:3])


def test_the_softmax_jacobian_with_its_diagonal_only_is_caught(monkeypatch):
    """dS = P ⊙ (1 − P) ⊙ dP: the forward pass is untouched; every gradient upstream of the softmax —
    Q's and K's share of in_proj, the input — is wrong, in every grid variant with more than one key
    (a single key has P = 1 and a Jacobian of 0 either way); dP and out_proj's gradient stay right."""
    monkeypatch.setattr(MultiheadAttention, "softmax_backward",
                        staticmethod(lambda probabilities, grad: probabilities * (1 - probabilities) * grad))
    caught = _caught(ATTENTION_GRID)
    assert set(caught) == {s.name for s in ATTENTION_GRID if s.x.shape[1] > 1}
    for failed in caught.values():
        assert {"layers.0.in_proj_weight.grad", "input.grad"} <= failed
        assert not failed & {"loss", "layers.0.output", "layers.0.attention", "layers.0.attention.grad",
                             "layers.0.out_proj.weight.grad"}
    assert "input.grad" in _failures(EXAMPLE)


def test_the_scale_left_out_of_the_backward_is_caught(monkeypatch):
    """dQ = dS K, dK = dSᵀ Q without 1/√d: right only where d = 1 (the e4-h4-d1 variant)."""
    monkeypatch.setattr(MultiheadAttention, "query_key_gradients",
                        lambda self, grad_scores, queries, keys: (grad_scores @ keys, grad_scores.swapaxes(-1, -2) @ queries))
    caught = _caught(ATTENTION_GRID)
    assert set(caught) == {s.name for s in ATTENTION_GRID if s.layers[0].params["embed_dim"]
                           // s.layers[0].params["num_heads"] > 1 and s.x.shape[1] > 1}
    assert all("layers.0.in_proj_weight.grad" in failed and "layers.0.output" not in failed
               for failed in caught.values())
    assert "input.grad" in _failures(EXAMPLE)


def test_the_causal_mask_applied_after_the_softmax_is_caught(monkeypatch):
    """softmax over every key, then the future keys' probabilities set to 0: the rows no longer sum to 1.
    Caught in the forward pass itself (the probabilities, the output, the loss) of every causal variant
    with more than one step, and nowhere else."""
    def probabilities(scores, mask):
        exponentials = np.exp(scores - scores.max(axis=-1, keepdims=True))
        unmasked = exponentials / exponentials.sum(axis=-1, keepdims=True)
        return unmasked if mask is None else np.where(mask, 0.0, unmasked)

    monkeypatch.setattr(MultiheadAttention, "probabilities", staticmethod(probabilities))
    variants = [s for s in ATTENTION_GRID if s.layers[0].params["causal"] or s.layers[0].masks]
    caught = _caught(ATTENTION_GRID)
    assert set(caught) == {s.name for s in variants if s.x.shape[1] > 1}
    assert all({"loss", "layers.0.attention", "layers.0.output"} <= failed for failed in caught.values())
    gpt = [s for s in GPT_BLOCKS]
    assert set(_caught(gpt)) == {s.name for s in gpt}  # the GPT block's attention is causal


def _owners_own_share(scenario) -> dict[str, float]:
    """owner address -> max|the owner's own use's gradient| / max|the sum over its uses|, from torch: the
    total minus every tied use's share (laid out as the owner's)."""
    trace = reference.run(scenario)
    totals = {}
    for path, layer in walk_layers(scenario.layers):
        for name, owner in layer.tied.items():
            use = trace[f"{path}.{name}.grad"]
            own = totals.get(owner, trace[f"{owner}.grad"])
            totals[owner] = own - (use if use.shape == own.shape else use.T)
    return {owner: float(np.abs(own).max() / np.abs(trace[f"{owner}.grad"]).max()) for owner, own in totals.items()}


def test_a_tied_gradient_overwritten_by_its_second_use_is_caught(monkeypatch):
    """The owner's gradient replaced by the tied use's instead of the sum of both: wrong at the owner's
    ``.grad`` in every scenario with a tie (the embedding and the output head; the MLP's two weights)
    where the owner's own use contributes — not where it gives (nearly) nothing: a layer_norm over one
    feature (or two) makes the embedding's own gradient 0 (or ε-small); each use's own share, at the tied
    layer's address, stays right."""
    shares = {s.name: _owners_own_share(s) for s in TIED}
    monkeypatch.setattr(engine, "tied_gradient",
                        lambda owner_gradient, use_gradient, transposed: use_gradient.T if transposed else use_gradient)
    caught = _caught(TIED)
    assert len(caught) >= len(TIED) - 3
    for scenario in TIED:
        limit = tolerance(scenario.dtype)  # the mutant is off by exactly the owner's own share
        for owner, share in shares[scenario.name].items():
            if share > 2 * limit or share < limit / 2:
                assert (f"{owner}.grad" in caught.get(scenario.name, ())) == (share > limit), (scenario.name, owner)
        assert not {address for address in caught.get(scenario.name, ()) if not address.endswith(".grad")
                    or address.startswith("step")}


def test_a_residual_backward_that_drops_the_skip_path_is_caught(monkeypatch):
    """δ_x = (∂f/∂x)ᵀ δ alone, without δ: every gradient before the block is wrong (the input's), the
    block's own ``output.grad`` and its branch's share stay right — in every residual grid variant,
    and in the GPT block."""
    monkeypatch.setattr(Residual, "backward",
                        lambda self, delta, input_grad=True: self.branch_backward(delta) if input_grad else None)
    caught = _caught(RESIDUAL_GRID + GPT_BLOCKS)
    assert set(caught) == {s.name for s in RESIDUAL_GRID + GPT_BLOCKS}
    for name, failed in caught.items():
        assert "loss" not in failed and "layers.0.output" not in failed
    assert all("input.grad" in caught[s.name] and "layers.0.output.grad" not in caught[s.name]
               for s in RESIDUAL_GRID)
    assert all("layers.0.weight.grad" in caught[s.name] for s in GPT_BLOCKS)  # the embedding, before every block
