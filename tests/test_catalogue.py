"""The catalogue is the single source: every entry reaches both registries, the
random generator's pool (or says why not) and the component grids, and no
constructor keeps defaults of its own. Every layer spec is complete (shapes,
output shape, grid, draw or skeleton, kink, gates), and every member of a
random pool is drawn — both by its spec and by the generator; the injected-bug
tests below break one spec at a time and show the check fails."""
import dataclasses
import inspect

import numpy as np
import pytest

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.scenarios import catalog, generator
from backprop_verify.scenarios.catalog import ActivationInfo, LossGridCase, LossInfo, ParamSpec
from backprop_verify.scenarios.components import activation_scenarios, loss_scenarios
from backprop_verify.manual import engine as manual_engine
from backprop_verify.reference.fd_oracle import KINK_CODES
from backprop_verify.scenarios.layer_grids import all_layer_scenarios, grid_layer
from backprop_verify.scenarios.shapes import output_shape


def catalogue_gaps() -> list[str]:
    """Every place a catalogue entry should reach and does not, one line each (empty: none)."""
    gaps = []
    registries = [
        ("layer", catalog.LAYERS, manual.LAYERS, reference.LAYERS),
        ("activation", catalog.ACTIVATIONS, manual.ACTIVATIONS, reference.ACTIVATIONS),
        ("loss", catalog.LOSSES, manual.LOSSES, reference.LOSSES),
        ("optimizer", catalog.OPTIMIZERS, manual.OPTIMIZERS, reference.OPTIMIZERS),
    ]
    for kind, entries, manual_registry, torch_registry in registries:
        for side, registry in (("manual", manual_registry), ("reference", torch_registry)):
            gaps += [f"{kind} {name}: missing from the {side} registry" for name in entries if name not in registry]
            gaps += [f"{kind} {name}: in the {side} registry, not in the catalogue" for name in registry
                     if name not in entries]
        # Only an optimizer may lack a torch counterpart (None: "no torch reference").
        if kind != "optimizer":
            gaps += [f"{kind} {name}: no torch reference" for name in entries if torch_registry.get(name, 0) is None]

    pool = {name for name, _params in generator.HIDDEN_ACTIVATIONS}
    for name, info in catalog.ACTIVATIONS.items():
        if info.random_variants and info.random_excluded:
            gaps.append(f"activation {name}: has random variants and a reason to be excluded")
        if not info.random_variants and not info.random_excluded:
            gaps.append(f"activation {name}: not in the random pool, and the entry does not say why")
        if info.random_variants and name not in pool:
            gaps.append(f"activation {name}: missing from the random generator's pool")
        if info.initializer not in catalog.INITIALIZERS:
            gaps.append(f"activation {name}: unknown initializer {info.initializer!r}")
    gaps += [f"loss {name}: missing from the random generator's pool" for name in catalog.LOSSES
             if name not in generator.RANDOM_LOSSES]

    grids = activation_scenarios("float64")
    for name, info in catalog.ACTIVATIONS.items():
        mine = [s for s in grids if s.layers[0].type == name]
        for params in info.grid_variants or ({},):
            if not any(params.items() <= s.layers[0].params.items() for s in mine):
                gaps.append(f"activation {name}: grid variant {params} missing from the component grids")
        if info.kinked and not any("kink" in s.tags for s in mine):
            gaps.append(f"activation {name}: kinked, but no kink grid")
    gaps += layer_spec_gaps()
    checked = {(s.loss.type, s.loss.reduction) for s in loss_scenarios("float64")}
    gaps += [f"loss {name} ({reduction}): missing from the component grids"
             for name, info in catalog.LOSSES.items() for reduction in info.reductions
             if (name, reduction) not in checked]
    return gaps


# Every layer spec must say each of these (``scenarios.catalog.LayerInfo``).
_SPEC_FUNCTIONS = ("tensor_shapes", "output_shape", "build")
# A representative input of each random family, and how often each pool member is drawn on it.
_FAMILY_INPUTS = {"conv": (2, 3, 6, 6), "recurrent": (2, 4, 3)}
DRAWS = 30


def layer_spec_gaps() -> list[str]:
    """Every layer spec that is incomplete, and every random-pool member that cannot be drawn."""
    gaps = []
    for name, info in catalog.LAYERS.items():
        gaps += [f"layer {name}: the spec has no {what}" for what in _SPEC_FUNCTIONS if getattr(info, what) is None]
        if not info.grid:
            gaps.append(f"layer {name}: missing from the component grids (its spec has no grid)")
        varied = {key for case in info.grid for key in case.options}
        gaps += [f"layer {name}: option {key} never set in the component grids" for key in info.params
                 if key not in varied]
        if info.random and not info.draw and not info.skeleton:
            gaps.append(f"layer {name}: in the random {info.random} networks, but the spec has neither a draw "
                        "nor a skeleton reason")
        if not info.random and not info.random_excluded:
            gaps.append(f"layer {name}: in no random family, and the spec does not say why")
        if info.kinked and (not info.kink or name not in KINK_CODES):
            gaps.append(f"layer {name}: kinked, but the spec does not say where or the oracle has no kink code")
        if info.switch and info.switch not in info.params:
            gaps.append(f"layer {name}: switch {info.switch!r} is not one of its options")
        missing_fills = [array for array in info.parameters + info.buffers if array not in info.fills]
        if info.name not in _OWN_FILE_FORM and missing_fills:
            gaps.append(f"layer {name}: no fill for {missing_fills} (a file may leave them out)")
        if any(array.startswith("weight_") for array in info.parameters) and info.gates < 1:
            gaps.append(f"layer {name}: recurrent, but the spec gives no gate count")
    for family, shape in _FAMILY_INPUTS.items():
        for name in generator.random_pool(family):
            if catalog.LAYERS[name].draw is None:
                continue
            drawn = [generator.draw_layer(name, np.random.default_rng([k, 0xD4A]), shape) for k in range(DRAWS)]
            if not any(layer is not None and layer.type == name for layer in drawn):
                gaps.append(f"layer {name}: in the random {family} pool, but {DRAWS} draws never produced it")
    used = {layer.type for seed in range(DRAWS) for layer in generator.random_conv_scenario(seed).layers}
    used |= {layer.type for seed in range(DRAWS) for layer in generator.random_recurrent_scenario(seed).layers}
    gaps += [f"layer {name}: in the random {family} pool, but the generator never drew it in {DRAWS} networks"
             for family in _FAMILY_INPUTS for name in generator.random_pool(family) if name not in used]
    return gaps


# Read by their own loader functions (``scenarios.loader._LAYER_READERS``): weights a file may leave to an
# initialiser, so no fill.
_OWN_FILE_FORM = ("linear", "conv2d", "rnn", "lstm", "gru", "embedding")


def test_every_catalogue_entry_reaches_registries_random_pool_and_grids():
    assert catalogue_gaps() == []


def test_an_activation_added_to_the_catalogue_alone_is_reported(monkeypatch):
    monkeypatch.setitem(catalog.ACTIVATIONS, "softsign", ActivationInfo("softsign", "a = z / (1 + |z|)"))
    assert catalogue_gaps() == [
        "activation softsign: missing from the manual registry",
        "activation softsign: missing from the reference registry",
        "activation softsign: missing from the random generator's pool",
    ]


def test_an_activation_left_out_of_random_networks_must_say_why(monkeypatch):
    info = catalog.ACTIVATIONS["mish"]
    monkeypatch.setitem(catalog.ACTIVATIONS, "mish", ActivationInfo(info.name, info.formula, random_variants=()))
    assert catalogue_gaps() == ["activation mish: not in the random pool, and the entry does not say why"]


def test_a_layer_added_to_the_catalogue_alone_is_reported(monkeypatch):
    monkeypatch.setitem(catalog.LAYERS, "max_pool1d", catalog.LayerInfo("max_pool1d", "a = max over a window",
                                                                        {"kernel_size": ParamSpec(2, int)}))
    gaps = catalogue_gaps()
    assert "layer max_pool1d: missing from the manual registry" in gaps
    assert "layer max_pool1d: missing from the reference registry" in gaps
    assert "layer max_pool1d: the spec has no output_shape" in gaps
    assert "layer max_pool1d: missing from the component grids (its spec has no grid)" in gaps
    assert "layer max_pool1d: option kernel_size never set in the component grids" in gaps
    assert "layer max_pool1d: in the random conv networks, but the spec has neither a draw nor a skeleton reason" \
        in gaps


# --------------------------------------------------------------------------- injected bugs in layer specs


def test_a_spec_whose_random_draw_returns_none_is_reported(monkeypatch):
    info = catalog.LAYERS["dropout"]
    monkeypatch.setitem(catalog.LAYERS, "dropout", dataclasses.replace(info, draw=lambda rng, shape: None))
    assert "layer dropout: in the random conv pool, but 30 draws never produced it" in layer_spec_gaps()


def test_a_spec_missing_its_grid_is_reported(monkeypatch):
    info = catalog.LAYERS["layer_norm"]
    monkeypatch.setitem(catalog.LAYERS, "layer_norm", dataclasses.replace(info, grid=()))
    gaps = layer_spec_gaps()
    assert "layer layer_norm: missing from the component grids (its spec has no grid)" in gaps
    assert "layer layer_norm: option dims never set in the component grids" in gaps


def test_a_pool_member_the_generator_cannot_draw_is_reported(monkeypatch):
    """A complete spec (a copy of dropout's under a new name) joins the conv pool, but the generator's
    pool was fixed before it came: the networks never hold it."""
    fake = dataclasses.replace(catalog.LAYERS["dropout"], name="dropout_copy")
    monkeypatch.setitem(catalog.LAYERS, "dropout_copy", fake)
    assert "dropout_copy" in generator.random_pool("conv") and "dropout_copy" not in generator.CONV_EXTRAS
    gaps = layer_spec_gaps()
    assert "layer dropout_copy: in the random conv pool, but the generator never drew it in 30 networks" in gaps
    assert not [gap for gap in gaps if "30 draws" in gap]  # its draw works: only the generator misses it


def test_a_kinked_spec_without_a_kink_is_reported(monkeypatch):
    info = catalog.LAYERS["avg_pool2d"]
    monkeypatch.setitem(catalog.LAYERS, "avg_pool2d", dataclasses.replace(info, kinked=True))
    assert layer_spec_gaps() == ["layer avg_pool2d: kinked, but the spec does not say where or the oracle has "
                                 "no kink code"]


def test_a_recurrent_spec_without_gates_is_reported(monkeypatch):
    info = catalog.LAYERS["gru"]
    monkeypatch.setitem(catalog.LAYERS, "gru", dataclasses.replace(info, gates=0))
    assert layer_spec_gaps() == ["layer gru: recurrent, but the spec gives no gate count"]


@pytest.mark.parametrize("name", sorted(catalog.LAYERS))
def test_each_layer_spec_gives_the_shapes_of_its_arrays(name):
    """The arrays every grid layer holds have the shapes the spec gives for its input and options."""
    info = catalog.LAYERS[name]
    for k, case in enumerate(info.grid):
        layer = grid_layer(name, case.options, case.shape, np.random.default_rng(k))
        arrays = {**layer.parameters, **layer.buffers, **layer.states}
        if name == "linear":
            expected = info.tensor_shapes(case.options, case.shape)
        else:
            expected = info.tensor_shapes(layer.params, case.shape)
        assert {key: value.shape for key, value in arrays.items()} == {key: shape for key, shape in expected.items()
                                                                       if key in arrays}
        assert set(layer.parameters) <= {key for key in expected if key in info.parameters}  # conv2d: bias off
        assert set(layer.buffers) == {key for key in expected if key in info.buffers}
        assert output_shape(layer, case.shape) == info.output_shape(layer, case.shape)


@pytest.mark.parametrize("name", sorted(catalog.LAYERS))
def test_each_manual_layer_records_what_its_spec_says(name):
    """``Learned.recorded`` (the manual engine's extra Trace addresses) names what ``LayerInfo.records`` says."""
    info = catalog.LAYERS[name]
    for case in info.grid:
        scenario = next(s for s in all_layer_scenarios() if s.name == f"layer-{name}-{case.label}-f64")
        network = manual_engine.build_network(scenario)
        x = manual_engine.network_input(network, np.asarray(scenario.x))
        outputs = manual_engine.forward(network, x, scenario.seed)
        manual_engine.backward(network, np.ones_like(outputs[-1]))
        extra = set(network[0].recorded())
        assert extra <= set(info.records), (case.label, extra)


def test_a_registry_missing_an_entry_is_reported(monkeypatch):
    monkeypatch.delitem(manual.LOSSES, "bce")
    monkeypatch.setitem(reference.ACTIVATIONS, "tanh", None)
    assert catalogue_gaps() == ["activation tanh: no torch reference", "loss bce: missing from the manual registry"]


def test_an_optimizer_added_to_the_catalogue_alone_is_reported(monkeypatch):
    monkeypatch.setitem(catalog.OPTIMIZERS, "lion", {"beta1": ParamSpec(0.9)})
    assert catalogue_gaps() == ["optimizer lion: missing from the manual registry",
                                "optimizer lion: missing from the reference registry"]


def test_a_loss_without_a_grid_is_reported(monkeypatch):
    info = catalog.LOSSES["mse"]
    monkeypatch.setitem(catalog.LOSSES, "mse", LossInfo(info.name, info.formula, ("sum",)))
    assert catalogue_gaps() == ["loss mse (sum): missing from the component grids"]
    grid = (LossGridCase("normal", "logits", "normal"),)
    monkeypatch.setitem(catalog.LOSSES, "mse", LossInfo(info.name, info.formula, ("sum",), grid=grid))
    assert catalogue_gaps() == []


# --------------------------------------------------------------------------- defaults live in the catalogue


def _defaults_in_signature(function) -> list[str]:
    return [name for name, p in inspect.signature(function).parameters.items() if p.default is not p.empty]


@pytest.mark.parametrize("name", sorted(catalog.OPTIMIZERS))
def test_optimizer_constructors_hold_no_defaults(name):
    assert _defaults_in_signature(manual.OPTIMIZERS[name].__init__) == []
    assert manual.OPTIMIZERS[name].options == tuple(catalog.OPTIMIZERS[name])
    if reference.OPTIMIZERS[name] is not None:
        assert _defaults_in_signature(reference.OPTIMIZERS[name]) == []
    # Built without options, the manual optimizer holds the catalogue's defaults.
    optimizer = manual.OPTIMIZERS[name]([np.zeros(2)], 0.1)
    assert {key: getattr(optimizer, key) for key in catalog.OPTIMIZERS[name]} == {
        key: spec.default for key, spec in catalog.OPTIMIZERS[name].items()}


@pytest.mark.parametrize("name", sorted(catalog.ACTIVATIONS))
def test_activations_take_their_parameters_from_the_catalogue(name):
    assert _defaults_in_signature(manual.ACTIVATIONS[name].__init__) == []
    activation = manual.ACTIVATIONS[name]()
    assert {key: getattr(activation, key) for key in catalog.ACTIVATIONS[name].params} == {
        key: spec.default for key, spec in catalog.ACTIVATIONS[name].params.items()}


def test_unknown_options_are_rejected_by_both_engines():
    with pytest.raises(TypeError, match="unknown options"):
        manual.OPTIMIZERS["sgd"]([np.zeros(2)], 0.1, amsgrad=True)
    with pytest.raises(TypeError, match="unknown options"):
        manual.ACTIVATIONS["relu"](slope=0.1)
    with pytest.raises(ValueError, match="expected one of"):
        manual.ACTIVATIONS["gelu"](approximate="sigmoid")
