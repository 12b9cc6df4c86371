"""The engine protocol (``manual.protocol``), a user's engine verified in manual's place
(``runner.verify(s, engine=…)``, ``runner.conformance``), and the smallest failing network
(``reports.verification.shrink``).

Each new path has an injected bug the tests catch: an engine whose conv2d backward is wrong only for
stride 2 (the conformance run names the scenario families that show it, and only those); a residual block
that would build its inner layers from manual's registry instead of the engine's; a support check that
would not look inside blocks; random families that would ignore the engine's support; a scenario writer
that rounds; the toy engine of docs/engine.md with its planted bias-gradient bug, shrunk to a file that
reloads and still fails.
"""
import pathlib
import sys

import numpy as np
import pytest
from pytest_cases import parametrize_with_cases

from backprop_verify import manual
from backprop_verify.manual import ACTIVATIONS, LAYERS, LOSSES, MANUAL, OPTIMIZERS, Engine, EngineError, load_engine
from backprop_verify.manual.conv import Conv2d
from backprop_verify.manual.layers import Linear
from backprop_verify.manual.protocol import conformance_problems, missing_components
from backprop_verify.reports.verification import runner, shrink
from backprop_verify.reports.verification.compare import FAIL, MANUAL_ALONE
from backprop_verify.scenarios import load_scenario
from backprop_verify.scenarios import model
from backprop_verify.scenarios.catalog import ACTIVATIONS as ACTIVATION_SPECS, activation_params
from backprop_verify.scenarios.generator import (random_conv_scenario, random_conv_scenarios,
                                                 random_recurrent_scenarios, random_scenario, random_scenarios,
                                                 random_transformer_scenarios)
from backprop_verify.scenarios.layer_grids import layer_scenarios
from backprop_verify.scenarios.model import walk_layers

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOY = ROOT / "docs" / "examples" / "engine"


def copy_of_manual(name="copy", **replaced):
    """An engine of manual's classes under another name, ``replaced`` ({"layers": {...}, …}) merged in."""
    registries = {"layers": LAYERS, "activations": ACTIVATIONS, "losses": LOSSES, "optimizers": OPTIMIZERS}
    return Engine(name, **{key: {**value, **replaced.get(key, {})} for key, value in registries.items()})


class Stride2Conv(Conv2d):
    """The injected bug: ∂L/∂W 1 % too large, for stride 2 only."""

    def backward(self, delta, input_grad=True):
        grad = super().backward(delta, input_grad)
        if self.stride == (2, 2):
            self.weight_grad = self.weight_grad * 1.01
        return grad


class BiasMeanLinear(Linear):
    """The injected bug: ∂L/∂b averaged over the rows instead of summed."""

    def backward(self, delta, input_grad=True):
        grad = super().backward(delta, input_grad)
        if self.bias is not None:
            self.bias_grad = self.bias_grad / delta.reshape(-1, delta.shape[-1]).shape[0]
        return grad


# --------------------------------------------------------------------------- manual through the protocol

def test_manual_is_registered_through_the_protocol_and_complete():
    assert MANUAL.name == "manual" and conformance_problems(MANUAL) == []
    assert missing_components(MANUAL) == []
    assert (MANUAL.layers, MANUAL.activations, MANUAL.losses, MANUAL.optimizers) == (LAYERS, ACTIVATIONS, LOSSES,
                                                                                     OPTIMIZERS)


def test_a_component_missing_from_manual_is_named(monkeypatch):
    monkeypatch.delitem(LAYERS, "gru")
    monkeypatch.delitem(OPTIMIZERS, "ftrl")
    assert missing_components(MANUAL) == ["layer:gru", "optimizer:ftrl"]


class _NoInputGrad:
    @classmethod
    def from_spec(cls, spec, dtype):
        return cls()

    def forward(self, x):
        return x

    def backward(self, delta):
        return delta


def test_conformance_names_each_problem():
    engine = Engine("torch", layers={"linear": _NoInputGrad, "conv": Conv2d}, activations={"relu": object},
                    optimizers={"sgd": ACTIVATIONS["relu"]})
    problems = conformance_problems(engine)
    assert any(p.startswith("name: 'torch' names a side") for p in problems), problems
    assert any(p.startswith("layers['linear']: _NoInputGrad.backward takes no input_grad") for p in problems)
    assert any(p.startswith("layers['conv']: not a catalogue layer") for p in problems)
    assert any(p.startswith("activations['relu']: 'object' has no forward, backward") for p in problems)
    assert any(p.startswith("optimizers['sgd']: 'ReLU' has no step") for p in problems)
    assert conformance_problems("engine") == ["expected a backprop_verify Engine (backprop_verify.manual.Engine("
                                              "name, layers=…, …)), got str"]


@parametrize_with_cases("scenario", cases="tests.cases_engine", has_tag="driver")
def test_the_driver_runs_any_engine_and_manual_unchanged(scenario):
    default, through, copy = manual.run(scenario), manual.run(scenario, MANUAL), manual.run(scenario, copy_of_manual())
    assert default.engine == through.engine == "manual" and copy.engine == "copy"
    for trace in (through, copy):
        assert list(trace) == list(default)
        assert all(trace[a].dtype == default[a].dtype and trace[a].tobytes() == default[a].tobytes() for a in default)


def test_a_block_builds_its_inner_layers_through_the_engine(monkeypatch):
    scenario = next(s for s in random_transformer_scenarios(10) if "tied" not in s.name)
    buggy = copy_of_manual("bias-mean", layers={"linear": BiasMeanLinear})
    inner = [p for p, layer in walk_layers(scenario.layers) if layer.type == "linear" and ".layers." in p]
    assert inner
    honest, tested = manual.run(scenario), manual.run(scenario, buggy)
    assert all(not np.array_equal(honest[f"{p}.bias.grad"], tested[f"{p}.bias.grad"]) for p in inner)
    # the mutant: a block that builds from manual's registry whatever engine builds the network
    monkeypatch.setattr("backprop_verify.manual.layers.building", _Unset())
    mutant = manual.run(scenario, buggy)
    assert all(np.array_equal(honest[f"{p}.bias.grad"], mutant[f"{p}.bias.grad"]) for p in inner)


class _Unset:
    @staticmethod
    def get():
        return None


# --------------------------------------------------------------------------- support

DENSE_ONLY = Engine("dense", layers={"linear": Linear}, activations={"tanh": ACTIVATIONS["tanh"]},
                    losses={"mse": LOSSES["mse"]})


def _support_reasons():
    transformer = random_transformer_scenarios(1)[0]
    conv = random_conv_scenario(0)
    return DENSE_ONLY.supports(transformer), DENSE_ONLY.supports(conv)


def _check_support_reasons():
    transformer_reason, conv_reason = _support_reasons()
    assert transformer_reason.startswith("engine 'dense' does not support ")
    assert "layer:layer_norm" in transformer_reason and "layer:multihead_attention" in transformer_reason
    assert "layer:conv2d" in conv_reason and "layer:flatten" in conv_reason


def test_support_is_declared_by_the_registries_and_looks_inside_blocks():
    _check_support_reasons()
    assert DENSE_ONLY.supports(random_scenario(0, allowed=DENSE_ONLY.supported_names())) is None


def test_a_support_check_blind_to_blocks_is_caught(monkeypatch):
    monkeypatch.setattr(model, "walk_layers", lambda layers, prefix="layers": (
        (f"{prefix}.{i}", layer) for i, layer in enumerate(layers)))
    with pytest.raises(AssertionError):
        _check_support_reasons()


def test_applicable_lists_every_scenario_it_does_not_run():
    scenarios = layer_scenarios("float64")[:30] + random_scenarios(5)
    run, not_applicable = manual.applicable(scenarios, DENSE_ONLY)
    assert len(run) + len(not_applicable) == len(scenarios)
    assert {s.name for s in run}.isdisjoint(name for name, _reason in not_applicable)
    assert all(reason.startswith("engine 'dense' does not support") for _name, reason in not_applicable)
    assert manual.applicable(scenarios, MANUAL) == (scenarios, [])


FAMILIES = (random_scenarios, random_conv_scenarios, random_recurrent_scenarios, random_transformer_scenarios)
SMALL = frozenset({"linear", "conv2d", "flatten", "max_pool2d", "gru", "last_step", "residual", "layer_norm",
                   "multihead_attention", "tanh", "relu", "mse", "bce_with_logits", "identity"})


def test_random_families_draw_only_what_the_engine_supports():
    for family in FAMILIES:
        for scenario in family(25, allowed=SMALL):
            used = {name.partition(":")[2] for name in scenario.component_names()}
            assert used <= SMALL, (scenario.name, used - SMALL)
        assert [s.name for s in family(8)] == [s.name for s in family(8, allowed=None)]


def test_a_family_that_cannot_be_drawn_is_listed_not_applicable():
    run, not_applicable = runner.engine_scenarios(DENSE_ONLY, random_count=3, conv_count=2, recurrent_count=2,
                                                  transformer_count=2, only="^random-")
    assert [s.name.split("-s")[0] for s in run] == ["random"] * 3
    assert all("tanh" in s.name and "mse" in s.name for s in run)
    families = [name.split("-s")[0] for name, _reason in not_applicable]
    assert families == ["random-conv"] * 2 + ["random-recurrent"] * 2 + ["random-transformer"] * 2


# --------------------------------------------------------------------------- verify and conformance

def test_a_user_engine_gets_the_engine_pairs_and_otherwise_the_same_rows():
    scenario = layer_scenarios("float64")[0]
    ours, theirs = runner.verify(scenario), runner.verify(scenario, engine=copy_of_manual("mine"))
    assert (ours.engine, theirs.engine) == ("manual", "mine")
    assert {r["pair"] for r in ours.rows} == set(runner.PAIRS)
    assert {r["pair"] for r in theirs.rows} == set(runner.ENGINE_PAIRS)
    renamed = {"manual-torch": "engine-torch", "manual-fd": "engine-fd", "torch-fd": "torch-fd"}
    assert [{**r, "pair": renamed[r["pair"]]} for r in ours.rows] == theirs.rows
    assert theirs.trace("engine") is theirs.manual


def test_a_wrong_engine_is_the_odd_one_out():
    scenario = next(s for s in layer_scenarios("float64") if s.name.startswith("layer-linear"))
    verified = runner.verify(scenario, engine=copy_of_manual("bias-mean", layers={"linear": BiasMeanLinear}))
    failing = {(r["pair"], r["address"]): r["triage"] for r in verified.rows if r["status"] == FAIL}
    assert failing == {(pair, f"layers.{i}.bias.grad"): MANUAL_ALONE  # the linear under test and the head
                       for pair in ("engine-torch", "engine-fd") for i in (0, 1)}


def test_conformance_names_the_scenario_families_of_a_stride_2_bug():
    engine = copy_of_manual("stride2-bug", layers={"conv2d": Stride2Conv})
    grids = [s for s in layer_scenarios("float64") if s.name.startswith(("layer-conv2d", "layer-max_pool2d"))]
    randoms = random_conv_scenarios(16)
    result = runner.conformance(engine, grids + randoms)
    strided = {s.name for s in grids + randoms
               if any(layer.type == "conv2d" and layer.params["stride"] == (2, 2) for layer in s.layers)}
    assert set(result.failed) == strided and strided & {s.name for s in randoms}
    assert "layer-conv2d-stride2-pad1-f64" in result.failed
    assert set(result.families()) == {"layer-conv2d", "random-conv"}
    assert all(address.endswith("weight.grad") for addresses in result.failed.values() for address in addresses)
    summary = result.summary()
    assert summary.startswith(f"engine 'stride2-bug': {len(strided)} of {len(grids) + 16} scenarios fail")
    assert "  layer-conv2d: " in summary and "  random-conv: " in summary
    assert runner.conformance(copy_of_manual(), grids[:6]).failed == {}


class _CrashingReLU:
    def forward(self, z):
        raise RuntimeError("relu is not finished")

    def backward(self, grad):
        return grad


def test_an_engine_that_raises_fails_that_scenario_and_the_run_goes_on():
    scenarios = [s for s in layer_scenarios("float64") if s.name.startswith("layer-linear")]
    scenarios += [next(s for s in random_scenarios(20) if "-relu-" in s.name)]
    result = runner.conformance(copy_of_manual("crash", activations={"relu": _CrashingReLU}), scenarios)
    assert list(result.failed) == [scenarios[-1].name] and result.verified == len(scenarios)
    assert result.failed[scenarios[-1].name] == ["raised RuntimeError: relu is not finished"]
    assert "  random: 1 failing, e.g. random-" in result.summary()
    assert result.summary().endswith(", which raised RuntimeError: relu is not finished")


# --------------------------------------------------------------------------- loading an engine

@pytest.mark.parametrize("spec, expected", [
    ("toy_engine.adapter", "expected MODULE:ATTRIBUTE, e.g. mypackage.adapter:engine"),
    (":engine", "expected MODULE:ATTRIBUTE"),
    ("no_such_package_xyz.adapter:engine", "cannot import module 'no_such_package_xyz.adapter'"),
    ("toy_engine.adapter:nothing", "module 'toy_engine.adapter' has no attribute 'nothing'; expected the Engine"),
    ("toy_engine.layers:Linear", "expected a backprop_verify Engine"),
    ("toy_engine.layers:np", "expected a backprop_verify Engine"),
])
def test_load_engine_names_the_spec_and_what_was_expected(monkeypatch, spec, expected):
    monkeypatch.syspath_prepend(str(TOY))
    with pytest.raises(EngineError) as caught:
        load_engine(spec)
    message = str(caught.value)
    assert message.startswith(f"engine {spec!r}: ") and expected in message, message


def test_load_engine_finds_a_package_in_the_current_folder(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(TOY))])
    monkeypatch.chdir(TOY)
    for name in [m for m in sys.modules if m.startswith("toy_engine")]:
        monkeypatch.delitem(sys.modules, name)
    engine = load_engine("toy_engine.adapter:engine")
    assert engine.name == "toy" and sorted(engine.components()) == [
        "activation:identity", "activation:relu", "activation:sigmoid", "layer:linear", "loss:mse"]


# --------------------------------------------------------------------------- the scenario file

def differences(a, b) -> list[str]:
    """Where two scenarios differ (options compared with their defaults filled in, a tied array by its owner)."""
    found = [f for f in ("name", "dtype", "seed", "loss", "optimizer", "tags", "expects", "claims")
             if getattr(a, f) != getattr(b, f)]
    found += ["source"] if dict(a.source) != dict(b.source) else []
    for f in ("x", "y"):
        u, v = getattr(a, f), getattr(b, f)
        if u.shape != v.shape or u.dtype != v.dtype or not np.array_equal(u, v):
            found.append(f)
    ours, theirs = list(walk_layers(a.layers)), list(walk_layers(b.layers))
    if [p for p, _ in ours] != [p for p, _ in theirs]:
        return found + ["layers"]
    for (path, x), (_, y) in zip(ours, theirs):
        params = activation_params(x.type, x.params) if x.type in ACTIVATION_SPECS else x.params
        if (x.type, params, x.tied) != (y.type, y.params, y.tied):
            found.append(f"{path}: type, options or ties")
        for name in ("weight", "bias"):
            u, v = getattr(x, name), getattr(y, name)
            if name not in x.tied and ((u is None) != (v is None) or (u is not None and not np.array_equal(u, v))):
                found.append(f"{path}.{name}")
        for group in ("tensors", "buffers", "states", "masks"):
            u, v = getattr(x, group), getattr(y, group)
            if set(u) != set(v) or any(not np.array_equal(u[k], v[k]) for k in u):
                found.append(f"{path}.{group}")
    return found


@parametrize_with_cases("scenario", cases="tests.cases_engine", has_tag="file")
def test_a_scenario_file_reads_back_to_the_same_scenario(scenario):
    assert differences(scenario, shrink.read_back(shrink.scenario_to_toml(scenario))) == []


def test_a_rounding_writer_is_caught(monkeypatch):
    monkeypatch.setattr(shrink, "_number", lambda number: f"{number:.12g}" if number == number else "nan")
    scenario = random_scenarios(1)[0]
    assert "x" in differences(scenario, shrink.read_back(shrink.scenario_to_toml(scenario)))


def test_address_kinds():
    scenario = random_transformer_scenarios(1)[0]
    assert shrink.address_kind(scenario, "layers.2.layers.1.out_proj.weight.grad") == \
        "multihead_attention.out_proj.weight.grad"
    assert shrink.address_kind(scenario, "step3.layers.0.weight") == "step.embedding.weight"
    assert shrink.address_kind(scenario, "input.grad") == "input.grad"
    assert shrink.address_kind(scenario, "step2.loss") == "step.loss"


# --------------------------------------------------------------------------- the smallest failing network

def test_a_random_network_with_a_planted_bug_shrinks_to_a_file_that_still_fails(tmp_path):
    engine = copy_of_manual("stride2-bug", layers={"conv2d": Stride2Conv})
    scenario = next(s for s in random_conv_scenarios(40) if len(s.layers) >= 7 and any(
        layer.type == "conv2d" and layer.params["stride"] == (2, 2) for layer in s.layers))
    kind = shrink.failure_kind(scenario, runner.verify(scenario, with_fd=False, engine=engine).rows)
    assert kind == "conv2d.weight.grad"
    failing = shrink.failing_like(kind, engine)
    smallest = shrink.shrink(scenario, failing)
    assert shrink.size(smallest) < shrink.size(scenario)
    assert [layer.type for layer in smallest.layers][0] == "conv2d" and len(smallest.layers) <= 3
    path = tmp_path / f"{smallest.name}.toml"
    path.write_text(shrink.scenario_to_toml(smallest), encoding="utf-8")
    loaded = load_scenario(path)
    assert differences(smallest, loaded) == []
    assert failing(loaded) and loaded.source["shrunk_from"] == scenario.name
    assert not [r for r in runner.verify(loaded, with_fd=False).rows if r["status"] == FAIL]  # manual passes it


def test_shrinking_keeps_the_kind_of_failure():
    engine = copy_of_manual("bias-mean", layers={"linear": BiasMeanLinear})
    scenario = next(s for s in random_scenarios(20) if s.x.shape[0] > 3 and len(s.layers) > 4
                    and all(layer.bias is not None for layer in s.layers if layer.type == "linear"))
    assert scenario.loss.type == "bce"  # its network must end with a sigmoid
    smallest = shrink.shrink(scenario, shrink.failing_like("linear.bias.grad", engine))
    # one sample cannot show a mean for a sum: the smallest batch that does is two
    assert smallest.x.shape[0] == 2 and [layer.type for layer in smallest.layers] == ["linear", "sigmoid"]
    assert smallest.layers[0].weight.shape == (1, 1)
    with pytest.raises(ValueError, match="the predicate is false on it"):
        shrink.shrink(smallest, lambda candidate: False)


def _tied_uses(scenario) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(address, the tied layer's weight, its owner's array) of every tied weight."""
    learned = {f"{path}.{name}": value for path, layer in walk_layers(scenario.layers)
               for name, value in layer.parameters.items()}
    return [(f"{path}.weight", layer.weight, learned[layer.tied["weight"]])
            for path, layer in walk_layers(scenario.layers) if "weight" in layer.tied]


def test_a_shrunk_network_keeps_its_tied_weight_its_owner_s_array(tmp_path):
    """Shrinking rebuilds every layer for its new input: a tied weight is taken again from its refitted
    owner, itself or transposed as the loader takes it, and the file reads back the same."""
    scenario = next(s for s in random_transformer_scenarios(40) if "-tied" in s.name)
    smallest = shrink.shrink(scenario, lambda candidate: bool(_tied_uses(candidate)), max_candidates=40)
    assert shrink.size(smallest) < shrink.size(scenario)
    ties = _tied_uses(smallest)
    assert ties and all(np.array_equal(weight, owner) or np.array_equal(weight, owner.T) for _, weight, owner in ties)
    path = tmp_path / f"{smallest.name}.toml"
    path.write_text(shrink.scenario_to_toml(smallest), encoding="utf-8")
    assert differences(smallest, load_scenario(path)) == []


def test_the_toy_engine_of_the_docs_fails_only_where_its_bug_is(monkeypatch):
    monkeypatch.syspath_prepend(str(TOY))
    engine = load_engine("toy_engine.adapter:engine")
    scenarios, _ = runner.engine_scenarios(engine, random_count=6, only="^(random|layer-linear|loss-mse|activation)")
    result = runner.conformance(engine, scenarios)
    failing = {address.split(".", 2)[-1] for addresses in result.failed.values() for address in addresses}
    assert result.failed and failing == {"bias.grad"}, failing
    assert all(s.x.shape[0] > 1 for s in scenarios if s.name in result.failed)
    layers = sys.modules["toy_engine.layers"]
    backward = layers.Linear.backward

    def fixed(self, delta, input_grad=True):
        grad = backward(self, delta, input_grad)
        if self.bias is not None:
            self.bias_grad = delta.sum(axis=0)
        return grad

    monkeypatch.setattr(layers.Linear, "backward", fixed)
    assert runner.conformance(engine, scenarios).failed == {}
