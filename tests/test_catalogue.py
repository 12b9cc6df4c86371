"""The catalogue is the single source: every entry reaches both registries, the
random generator's pool (or says why not) and the component grids, and no
constructor keeps defaults of its own."""
import inspect

import numpy as np
import pytest

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.scenarios import catalog, generator
from backprop_verify.scenarios.catalog import ActivationInfo, LossGridCase, LossInfo, ParamSpec
from backprop_verify.scenarios.components import activation_scenarios, loss_scenarios
from backprop_verify.scenarios.layer_grids import LAYER_GRIDS


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
    for name, info in catalog.LAYERS.items():
        variants = LAYER_GRIDS.get(name, ())
        if not variants:
            gaps.append(f"layer {name}: missing from the component grids (scenarios.layer_grids)")
        varied = {key for _label, _shape, options, _tags in variants for key in options}
        gaps += [f"layer {name}: option {key} never set in the component grids" for key in info.params
                 if key not in varied]
        if info.random == "conv" and name not in generator.CONV_EXTRAS + ("linear", "conv2d", "flatten"):
            gaps.append(f"layer {name}: missing from the random convolutional networks")
    checked = {(s.loss.type, s.loss.reduction) for s in loss_scenarios("float64")}
    gaps += [f"loss {name} ({reduction}): missing from the component grids"
             for name, info in catalog.LOSSES.items() for reduction in info.reductions
             if (name, reduction) not in checked]
    return gaps


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
    assert "layer max_pool1d: missing from the component grids (scenarios.layer_grids)" in gaps
    assert "layer max_pool1d: option kernel_size never set in the component grids" in gaps
    assert "layer max_pool1d: missing from the random convolutional networks" in gaps


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
