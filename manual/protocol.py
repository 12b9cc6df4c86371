"""The engine protocol: what the driver (``manual.engine.run``) asks of an engine, and ``Engine``, its declaration.

An engine is four registries keyed by the catalogue's names (``scenarios.catalog``)::

    Engine(name, layers={type: class}, activations={name: class}, losses={name: class},
           optimizers={name: class})

The keys are what the engine supports; a scenario that needs anything else is
not applicable to it (``Engine.supports``, ``applicable``), never run half-way.
``manual`` itself is registered through exactly this declaration
(``manual.engine.MANUAL``), so the driver needs nothing beyond it.

What the driver calls — manual's own classes are the reference implementation,
and ``manual.layers.Learned`` derives the parameter part from ``LEARNED``:

layer class (``layers[type]``)
    ``cls.from_spec(spec, dtype) -> layer``     spec a ``scenarios.model.Layer`` (options in ``spec.params``,
                                                arrays in ``weight``, ``bias``, ``tensors``, ``buffers``,
                                                ``states``, ``masks``); copy the arrays into ``dtype``
    ``layer.forward(x, **initial_states) -> a``  caches what backward needs
    ``layer.backward(delta, input_grad=True)``  δ = ∂L/∂a → ∂L/∂x (None when ``input_grad`` is False)
    ``layer.parameter_names``                   the learned arrays' Trace names (``weight``, ``bias``,
                                                ``weight_ih``, ``out_proj.weight`` …), those the layer has
    ``getattr(layer, attribute(name))``         each array itself (dots become underscores), updated in place
                                                by the optimizer, replaced by the owner's for a tied one
    ``getattr(layer, attribute(name) + "_grad")``  ∂L/∂ that array after ``backward``
    ``getattr(layer, buffer)``                  each buffer of the catalogue spec (``running_mean`` …), read
                                                after every pass
    ``layer.recorded() -> {name: array}``       optional: the spec's ``records`` (``mask``, ``cell``, ``attention``)
    ``layer.initial_states``                    optional: ``{"h0": …}``, passed to ``forward``
    ``layer.mask``                              set by the driver before each forward when the spec's ``data``
                                                holds ``mask`` (dropout: the scenario's masks)
    ``layer.layers``, ``.outputs``, ``.grads``  a block (``residual``): its inner layer objects — built from
                                                ``spec.layers`` by ``Engine.build_layer`` — and after a pass their
                                                outputs and ∂L/∂outputs

activation class: ``cls(**options)``, ``forward(z) -> a``, ``backward(∂L/∂a) -> ∂L/∂z``.
loss class: ``cls(reduction)``, ``forward(a, t) -> L`` (a 0-d array), ``backward() -> ∂L/∂a``.
optimizer class: ``cls(params, learning_rate, **options)``, ``step(grads)`` updating ``params`` in place.

Gradient and weight clipping, mini-batches, dropout masks and weight tying are
the driver's: the engine sees their effect, not their options.
"""
from __future__ import annotations

import contextvars
import importlib
import inspect
import os
import sys
from types import MappingProxyType
from typing import Any, Mapping

from backprop_verify.scenarios.catalog import ACTIVATIONS, LAYERS, LOSSES, OPTIMIZERS
from backprop_verify.scenarios.model import Scenario

__all__ = ["Engine", "EngineError", "applicable", "building", "conformance_problems", "load_engine"]

# The kinds of component, each with its catalogue: the names an engine's registry may hold.
CATALOGUES = {"layer": LAYERS, "activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS}

# The engine building a network right now (``Engine.build_layer``): a block's ``from_spec`` that calls
# ``manual.layers.build_layer`` for its inner layers gets them from that same engine.
building: contextvars.ContextVar["Engine | None"] = contextvars.ContextVar("building", default=None)


class EngineError(ValueError):
    """An engine that cannot be used: the message names the engine (or the ``module:attribute`` given)
    and what was expected."""


class Engine:
    """An engine: its ``name`` (recorded in every Trace and Verification; the report's pairs are
    ``engine-torch`` and ``engine-fd`` for any engine but ``manual``) and its four registries, each a
    mapping from catalogue name to class. The registries are kept as read-only views of the mappings
    given, so a class registered (or replaced) later in the same mapping is seen."""

    def __init__(self, name: str, layers: Mapping[str, Any] | None = None,
                 activations: Mapping[str, Any] | None = None, losses: Mapping[str, Any] | None = None,
                 optimizers: Mapping[str, Any] | None = None):
        self.name = name
        self.layers = _view(layers)
        self.activations = _view(activations)
        self.losses = _view(losses)
        self.optimizers = _view(optimizers)

    def registry(self, kind: str) -> Mapping[str, Any]:
        """The registry of ``kind`` ("layer", "activation", "loss", "optimizer")."""
        return {"layer": self.layers, "activation": self.activations, "loss": self.losses,
                "optimizer": self.optimizers}[kind]

    def components(self) -> frozenset[str]:
        """Every supported component as ``Scenario.component_names`` writes it: ``layer:conv2d``, ``loss:mse``…"""
        return frozenset(f"{kind}:{name}" for kind in CATALOGUES for name in self.registry(kind))

    def supported_names(self) -> frozenset[str]:
        """The supported layer types, activations and losses by bare name: what the random families of
        ``scenarios.generator`` may draw from (their ``allowed``)."""
        return frozenset([*self.layers, *self.activations, *self.losses])

    def supports(self, scenario: Scenario) -> str | None:
        """None when the engine has every component ``scenario`` needs (a residual block's inner layers
        included), else why not: ``engine 'toy' does not support layer:conv2d, loss:bce``."""
        supported = self.components()
        missing = [name for name in scenario.component_names() if name not in supported]
        if not missing:
            return None
        return f"engine {self.name!r} does not support {', '.join(missing)}"

    def build_layer(self, spec, dtype, where: str = ""):
        """The engine's object for one ``scenario.layers`` entry: its layer class's ``from_spec``, or its
        activation with the entry's options. While it builds, a block's inner layers built through
        ``manual.layers.build_layer`` come from this engine too (``building``)."""
        if spec.type in self.layers:
            token = building.set(self)
            try:
                return self.layers[spec.type].from_spec(spec, dtype)
            finally:
                building.reset(token)
        if spec.type in self.activations:
            return self.activations[spec.type](**spec.params)
        raise ValueError(f"{where}unknown type {spec.type!r}; expected one of "
                         f"{sorted(self.layers) + sorted(self.activations)}")

    def __repr__(self) -> str:
        counts = ", ".join(f"{plural} {len(self.registry(kind))}" for kind, plural in
                           zip(CATALOGUES, ("layers", "activations", "losses", "optimizers")))
        return f"Engine({self.name!r}: {counts})"


def _view(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only live view of ``mapping`` (an empty one for None)."""
    if mapping is None:
        return MappingProxyType({})
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(mapping)


def applicable(scenarios, engine: Engine) -> tuple[list[Scenario], list[tuple[str, str]]]:
    """(the scenarios ``engine`` supports, in order; (name, reason) of each one it does not). Nothing is
    dropped silently: every scenario is in exactly one of the two."""
    run, not_applicable = [], []
    for scenario in scenarios:
        reason = engine.supports(scenario)
        if reason is None:
            run.append(scenario)
        else:
            not_applicable.append((scenario.name, reason))
    return run, not_applicable


# --------------------------------------------------------------------------- conformance

# What the driver calls on each kind of class (the module docstring).
_METHODS = {"layer": ("from_spec", "forward", "backward"), "activation": ("forward", "backward"),
            "loss": ("forward", "backward"), "optimizer": ("step",)}


def conformance_problems(engine: Any) -> list[str]:
    """What keeps ``engine`` from running through the driver, one line each (empty: none): not an
    ``Engine``, no name, a registry key that is not a catalogue name, a class without a method the
    driver calls, a layer whose ``backward`` takes no ``input_grad``."""
    if not isinstance(engine, Engine):
        return [f"expected a backprop_verify Engine (backprop_verify.manual.Engine(name, layers=…, …)), "
                f"got {type(engine).__name__}"]
    problems = []
    if not isinstance(engine.name, str) or not engine.name.strip():
        problems.append(f"name: expected a non-empty string, got {engine.name!r}")
    elif engine.name in ("torch", "fd", "engine"):
        problems.append(f"name: {engine.name!r} names a side of the comparison; expected another name")
    for kind, catalogue in CATALOGUES.items():
        for name, cls in engine.registry(kind).items():
            where = f"{kind}s[{name!r}]"
            if name not in catalogue:
                problems.append(f"{where}: not a catalogue {kind}; expected one of {', '.join(sorted(catalogue))}")
                continue
            lacking = [method for method in _METHODS[kind] if not callable(getattr(cls, method, None))]
            if lacking:
                problems.append(f"{where}: {getattr(cls, '__name__', cls)!r} has no {', '.join(lacking)}; "
                                f"expected {', '.join(_METHODS[kind])}")
            elif kind == "layer" and not _takes(cls.backward, "input_grad"):
                problems.append(f"{where}: {cls.__name__}.backward takes no input_grad; expected "
                                "backward(delta, input_grad=True)")
    return problems


def _takes(function, keyword: str) -> bool:
    """Whether ``function`` accepts ``keyword`` (by name, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the run tell
        return True
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def missing_components(engine: Engine) -> list[str]:
    """The catalogue components ``engine`` does not support, as ``layer:conv2d`` (empty for ``manual``)."""
    return [f"{kind}:{name}" for kind, catalogue in CATALOGUES.items() for name in catalogue
            if name not in engine.registry(kind)]


# --------------------------------------------------------------------------- loading a user's engine

def load_engine(spec: str) -> Engine:
    """The ``Engine`` named by ``spec`` = ``"module:attribute"`` (``mypackage.adapter:engine``; the attribute
    may be dotted), checked by ``conformance_problems``. The module is imported as it is; if it is not
    found, once more with the current folder at the end of ``sys.path`` (a console script's path does not
    hold it). Raises ``EngineError`` naming ``spec`` and what was expected."""
    where = f"engine {spec!r}"
    module_name, colon, attribute = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not colon or not module_name.strip() or not attribute.strip():
        raise EngineError(f"{where}: expected MODULE:ATTRIBUTE, e.g. mypackage.adapter:engine")
    module = _import(module_name, where)
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise EngineError(f"{where}: module {module_name!r} has no attribute {attribute!r}; expected the "
                              "Engine it defines")
        value = getattr(value, part)
    problems = conformance_problems(value)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise EngineError(f"{where}: {shown}")
    return value


def _import(module_name: str, where: str):
    """The module, imported; an ``EngineError`` naming it when it cannot be."""
    for attempt in (1, 2):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            top = module_name.split(".")[0]
            if attempt == 1 and err.name in (top, module_name) and os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
                continue
            raise EngineError(f"{where}: cannot import module {module_name!r} ({err}); expected an importable "
                              "module (run from the folder that holds it, or install it)") from None
        except Exception as err:  # the user's module raised while it was imported: say so, without a traceback
            raise EngineError(f"{where}: importing module {module_name!r} raised {type(err).__name__}: {err}"
                              ) from None
    raise AssertionError("unreachable")
