"""Beyond chains: multi-head attention, residual blocks, positional embeddings and tied weights, end to end —
the file format, both engines against each other and against finite differences, the torch mirror against
PyTorch's own attention, the GPT-style block and its training trajectory, the random transformer family,
and the hand-computed attention example."""
from decimal import ROUND_HALF_EVEN, Decimal, getcontext
import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytest_cases import parametrize_with_cases

from backprop_verify import manual, reference
from backprop_verify.reference.fd_oracle import fd_oracle
from backprop_verify.reference.network import build_network
from backprop_verify.scenarios import load_scenario
from backprop_verify.scenarios.builtin import report_scenarios, worked_example_paths
from backprop_verify.scenarios.catalog import LAYERS
from backprop_verify.scenarios.generator import DEFAULT_RANDOM_TRANSFORMER_COUNT, random_transformer_scenario
from backprop_verify.scenarios.layer_grids import all_layer_scenarios
from backprop_verify.scenarios.loader import scenario_from_dict
from backprop_verify.scenarios.model import walk_layers
from backprop_verify.scenarios.trace import is_trace_address, split_address
from backprop_verify.scenarios.transformer import GPT_TRAJECTORY_STEPS, gpt_trajectory_scenario
from tests.cases_transformer import RANDOM_FD, RANDOM_TRANSFORMERS
from tests.cases_transformer_files import GPT_FILE
from tests.helpers import assert_close, assert_file_rejected, assert_traces_agree

ATTENTION_GRID = [s for s in all_layer_scenarios() if s.layers[0].type == "multihead_attention"]


# ----------------------------------------------------------------------------- both engines, the oracle

@parametrize_with_cases("scenario", cases="tests.cases_transformer", has_tag="engines")
def test_manual_matches_torch(scenario):
    assert_traces_agree(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")


@parametrize_with_cases("scenario", cases="tests.cases_transformer", has_tag="fd")
def test_both_match_finite_differences(scenario):
    fd = fd_oracle(scenario)
    assert_traces_agree(manual.run(scenario), fd, scenario.dtype, "manual-fd")
    assert_traces_agree(reference.run(scenario), fd, scenario.dtype, "torch-fd")


def test_the_default_run_and_the_report_check_forty_random_transformers_some_against_fd():
    names = [s.name for s in RANDOM_TRANSFORMERS]
    assert len(names) == DEFAULT_RANDOM_TRANSFORMER_COUNT >= 40 and len(set(names)) == len(names)
    assert set(names) <= {s.name for s in report_scenarios(only="^random-transformer-")}
    assert len(RANDOM_FD) >= 10
    # the family varies what it says it varies
    for word in ("causal", "full", "tied", "tied_back", "padding", "relu", "gelu_tanh", "blocks2", "mse"):
        assert any(f"-{word}-" in name for name in names), word
    assert {name[-3:] for name in names} == {"f64", "f32"}
    assert any(s.layers[0].type != "embedding" for s in RANDOM_TRANSFORMERS)


def test_a_random_transformer_is_the_same_for_the_same_seed():
    first, again = random_transformer_scenario(17), random_transformer_scenario(17)
    assert first.name == again.name and np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    for (path, a), (_, b) in zip(walk_layers(first.layers), walk_layers(again.layers)):
        assert all(np.array_equal(a.parameters[name], b.parameters[name]) for name in a.parameters), path
    assert first.name != random_transformer_scenario(18).name


def test_every_address_of_a_transformer_trace_is_documented():
    scenario = load_scenario_text(GPT_FILE)
    trace = reference.run(dataclasses.replace(scenario, optimizer=None))
    assert all(is_trace_address(address) for address in trace), [a for a in trace if not is_trace_address(a)]
    for address in ("layers.2.layers.1.attention", "layers.2.layers.1.attention.grad", "layers.2.branch.grad",
                    "layers.2.layers.1.out_proj.weight.grad", "layers.3.layers.3.weight.grad", "layers.5.weight"):
        assert address in trace, address
    assert split_address("layers.2.layers.1.out_proj.weight") == ("layers.2.layers.1", "out_proj.weight")


# ----------------------------------------------------------------------------- the file format

def load_scenario_text(text: str):
    import tomllib
    return scenario_from_dict(tomllib.loads(text), file="gpt.toml")


def test_a_gpt_style_file_loads_with_nested_blocks_ties_and_a_padding_mask():
    scenario = load_scenario_text(GPT_FILE)
    kinds = [(path, layer.type) for path, layer in walk_layers(scenario.layers)]
    assert kinds[2:5] == [("layers.2", "residual"), ("layers.2.layers.0", "layer_norm"),
                          ("layers.2.layers.1", "multihead_attention")]
    attention = scenario.layers[2].layers[1]
    assert attention.masks["key_padding_mask"].tolist() == [[False, False, True], [False, True, False]]
    head, back = scenario.layers[5], scenario.layers[3].layers[3]
    assert head.tied == {"weight": "layers.0.weight"} and np.array_equal(head.weight, scenario.layers[0].weight)
    first = scenario.layers[3].layers[1].weight
    assert back.tied == {"weight": "layers.3.layers.1.weight"} and np.array_equal(back.weight, first.T)
    # a tied weight is counted once: 5·4 + 6·4 + 8 + (48 + 12 + 16 + 4) + 8 + (32 + 8 + 4) + 8
    assert scenario.parameter_count == 20 + 24 + 8 + 80 + 8 + 44 + 8


def test_attention_parameters_left_out_are_drawn_as_pytorch_draws_them():
    """torch.nn.MultiheadAttention: in_proj_weight Xavier-uniform over (3E, E) (bound √(6/(E + 3E))),
    out_proj.weight torch.nn.Linear's U(±1/√E), both biases 0; a given in_proj_weight leaves the draw of
    out_proj.weight as it was."""
    attention = load_scenario_text(GPT_FILE).layers[2].layers[1].tensors
    width = 4
    assert np.abs(attention["in_proj_weight"]).max() <= np.sqrt(6 / (width + 3 * width))
    assert np.abs(attention["in_proj_weight"]).max() > 0.8 * np.sqrt(6 / (width + 3 * width))
    assert np.abs(attention["out_proj.weight"]).max() <= 1 / np.sqrt(width)
    assert not attention["in_proj_bias"].any() and not attention["out_proj.bias"].any()
    given = load_scenario_text(GPT_FILE.replace("num_heads = 2\n", "num_heads = 2\n  in_proj_weight = "
                                                + str([[0.5] * 4] * 12) + "\n", 1)).layers[2].layers[1].tensors
    assert (given["in_proj_weight"] == 0.5).all()
    assert np.array_equal(given["out_proj.weight"], attention["out_proj.weight"])


def test_out_proj_may_be_written_as_toml_dotted_keys():
    text = GPT_FILE.replace("num_heads = 2\n", "num_heads = 2\n  out_proj.weight = " + str(np.eye(4).tolist())
                            + "\n  out_proj.bias = [1.0, 2.0, 3.0, 4.0]\n", 1)
    tensors = load_scenario_text(text).layers[2].layers[1].tensors
    assert np.array_equal(tensors["out_proj.weight"], np.eye(4)) and tensors["out_proj.bias"].tolist() == [1, 2, 3, 4]


@parametrize_with_cases("text,field,expected", cases="tests.cases_transformer_files")
def test_a_bad_transformer_file_is_rejected_with_file_and_field(tmp_path, text, field, expected):
    assert_file_rejected(tmp_path, text, field, expected)


# ----------------------------------------------------------------------------- the torch mirror

@pytest.mark.parametrize("scenario", [s for s in ATTENTION_GRID if s.dtype == "float64"], ids=lambda s: s.name)
def test_the_torch_mirror_is_pytorchs_own_multi_head_attention(scenario):
    """``reference.network``'s attention, written out so that P is a tensor of the graph, against
    ``F.multi_head_attention_forward`` (batch first through transposes): the output, the per-head
    probabilities (``average_attn_weights=False``) and the gradients of a loss through each."""
    layer = scenario.layers[0]
    x = torch.tensor(scenario.x, requires_grad=True)
    network = build_network(dataclasses.replace(scenario, layers=(layer,)))
    network.recording = True
    mirrored = network.apply_path("layers.0", x)
    probabilities = network.records["layers.0.attention"]
    tensors = network.parameters_of["layers.0"]
    options, mask = layer.params, layer.masks.get("key_padding_mask")
    width = options["embed_dim"]
    causal_mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1) if options["causal"] else None
    output, weights = F.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), width, options["num_heads"],
        tensors["in_proj_weight"], tensors.get("in_proj_bias"), None, None, False, 0.0, tensors["out_proj.weight"],
        tensors.get("out_proj.bias"), training=False,
        key_padding_mask=None if mask is None else torch.from_numpy(mask), need_weights=True,
        attn_mask=causal_mask, average_attn_weights=False)
    output = output.transpose(0, 1)
    assert_close(mirrored.detach().numpy(), output.detach().numpy(), "float64", "output")
    assert_close(probabilities.detach().numpy(), weights.detach().numpy(), "float64", "attention")
    weight = torch.from_numpy(np.random.default_rng(0).normal(size=output.shape))
    ours = torch.autograd.grad((mirrored * weight).sum(), [x, *tensors.values()])
    theirs = torch.autograd.grad((output * weight).sum(), [x, *tensors.values()])
    for a, b, name in zip(ours, theirs, ["input", *tensors]):
        assert_close(a.numpy(), b.numpy(), "float64", f"{name}.grad")


# ----------------------------------------------------------------------------- the GPT-style trajectory

def test_the_gpt_block_trains_for_a_hundred_adamw_updates_identically_in_both_engines():
    scenario = gpt_trajectory_scenario("float64")
    assert scenario.optimizer.steps == GPT_TRAJECTORY_STEPS >= 100
    assert scenario.optimizer.type == "adamw" and scenario.optimizer.options["weight_decay"] > 0
    assert scenario.optimizer.clip_grad_norm is not None
    torch_trace = reference.run(scenario)
    rows = assert_traces_agree(manual.run(scenario), torch_trace, "float64", "manual-torch")
    assert any(row.address == f"step{GPT_TRAJECTORY_STEPS}.layers.2.layers.1.in_proj_weight" for row in rows)
    assert any(row.address.startswith("step100.layers.0.weight") for row in rows)  # the tied embedding, once
    assert not any(row.address.startswith("step1.layers.7.weight") for row in rows)
    first, last = float(torch_trace["step1.loss"]), float(torch_trace[f"step{GPT_TRAJECTORY_STEPS}.loss"])
    assert last < 0.1 * first  # it learns the corpus


# ----------------------------------------------------------------------------- the hand-computed example

EXAMPLE = next(p for p in worked_example_paths() if p.name == "example_attention_three_tokens.toml")


def _by_hand() -> dict[str, Decimal]:
    """The example's numbers from its formulas, in 40-digit decimal arithmetic — no engine, no NumPy:
    S = X Xᵀ/√2, P = softmax(S), a = P X, E = ½Σ(a − t)², dP = δ Xᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
    ∂E/∂X = dS X/√2 + dSᵀ X/√2 + Pᵀ δ, ∂E/∂W_o = δᵀ a."""
    getcontext().prec = 40
    x = [[Decimal(1), Decimal(0)], [Decimal(0), Decimal(1)], [Decimal(1), Decimal(1)]]
    t = [[Decimal(1), Decimal(0)], [Decimal(0), Decimal(0)], [Decimal(0), Decimal(1)]]
    root = Decimal(2).sqrt()
    rows, cols = range(3), range(2)
    scores = [[sum(x[i][k] * x[j][k] for k in cols) / root for j in rows] for i in rows]
    p = [[e / sum(row) for e in row] for row in ([(s - max(r)).exp() for s in r] for r in scores)]
    a = [[sum(p[i][j] * x[j][k] for j in rows) for k in cols] for i in rows]
    delta = [[a[i][k] - t[i][k] for k in cols] for i in rows]
    dp = [[sum(delta[i][k] * x[j][k] for k in cols) for j in rows] for i in rows]
    ds = [[p[i][j] * (dp[i][j] - sum(dp[i][m] * p[i][m] for m in rows)) for j in rows] for i in rows]
    dx = [[sum((ds[i][j] + ds[j][i]) * x[j][k] for j in rows) / root + sum(p[j][i] * delta[j][k] for j in rows)
           for k in cols] for i in rows]
    numbers = {"loss": sum(d * d for row in delta for d in row) / 2}
    numbers |= {f"layers.0.attention[0,0,{i},{j}]": p[i][j] for i in rows for j in rows}
    numbers |= {f"layers.0.attention.grad[0,0,{i},{j}]": dp[i][j] for i in rows for j in rows}
    numbers |= {f"layers.0.output[0,{i},{k}]": a[i][k] for i in rows for k in cols}
    numbers |= {f"input.grad[0,{i},{k}]": dx[i][k] for i in rows for k in cols}
    numbers |= {f"layers.0.out_proj.weight.grad[{j},{k}]": sum(delta[i][j] * a[i][k] for i in rows)
                for j in cols for k in cols}
    return numbers


def test_every_number_the_attention_example_prints_is_its_hand_computation_to_four_decimals():
    printed = dict(re.findall(r'at = "([^"]+)"\nprinted = "([^"]+)"', EXAMPLE.read_text(encoding="utf-8")))
    hand = {at: str(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)) for at, value in _by_hand().items()}
    assert printed == hand


def test_the_attention_example_states_the_softmax_jacobian_and_the_diagonal_only_shortcut():
    scenario = load_scenario(EXAMPLE)
    statements = [claim.statement for claim in scenario.claims]
    assert any("rowsum(dP ⊙ P)" in s for s in statements) and any("diagonal-only" in s for s in statements)
    assert LAYERS["multihead_attention"].records == ("attention", "attention.grad")


# ----------------------------------------------------------------------------- the report's "attention" section

def test_the_attention_section_has_every_block_s_skip_and_branch_gradient_by_both_engines():
    from backprop_verify.reports.verification.attention import ATTENTION_COLUMNS, attention_table
    table = attention_table()
    assert list(table.columns) == ATTENTION_COLUMNS
    assert list(table["branch"]) == ["attention", "mlp"] * 6  # two blocks, then four
    assert (table["engines_agree"] == "yes").all()
    assert_close(table["skip_manual"].to_numpy(), table["skip_torch"].to_numpy(), "float64", "skip")
    assert ((table["branch_over_skip"] > 0) & (table["branch_over_skip"] < 1)).all()


def test_the_attention_section_sees_a_residual_backward_without_its_skip_path(monkeypatch):
    """Every block's input gradient is wrong once the skip path is dropped: the rows of all blocks but
    each network's last (whose δ comes straight from the head) say the engines disagree."""
    from backprop_verify.manual.residual import Residual
    from backprop_verify.reports.verification.attention import _attention_table
    from backprop_verify.scenarios.transformer import gpt_gradient_flow_scenarios
    monkeypatch.setattr(Residual, "backward",
                        lambda self, delta, input_grad=True: self.branch_backward(delta) if input_grad else None)
    table = _attention_table(gpt_gradient_flow_scenarios())
    last = table.groupby("scenario")["block"].transform("last") == table["block"]
    assert (table.loc[~last, "engines_agree"] == "NO").all() and (table.loc[last, "engines_agree"] == "yes").all()
