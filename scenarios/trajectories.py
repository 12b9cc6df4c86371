"""Built-in trajectory scenarios: random architectures × every optimizer × option.

``trajectory_scenarios(dtype, steps)`` gives one seeded random network per
entry of ``VARIANTS`` (each optimizer with its defaults, then each option that
changes the rule, mini-batches, and the clipping options), trained for
``steps`` (≥ 100) updates. The network of variant k is
``random_scenario(TRAJECTORY_SEED + k, layer_streams=True)`` from
``scenarios.generator``, kept small (depth ≤ 3, width ≤ 10, batch ≤ 12) so the
whole set runs in seconds.

``document001_scenario()`` is document 001's model — 784 → 10 ReLU → 10
softmax, categorical cross-entropy, Adam with learning rate 0.001 — on seeded
synthetic "images" (uniform in [0, 1]) whose labels come from a seeded random
linear teacher, with Keras's defaults: glorot-uniform weights, zero biases,
batches of 32.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from backprop_verify.scenarios.catalog import LAYERS, OPTIMIZERS, layer_options, optimizer_options
from backprop_verify.scenarios.generator import random_conv_scenario, random_scenario
from backprop_verify.scenarios.init import initialise, layer_rng
from backprop_verify.scenarios.model import Layer, Loss, Optimizer, Scenario

TRAJECTORY_SEED = 5000
TRAJECTORY_STEPS = 100

# (optimizer type, learning rate, options, common settings). The learning rates
# keep 100 updates of these small random networks away from divergence.
VARIANTS: tuple[tuple[str, float, dict, dict], ...] = (
    ("sgd", 0.02, {}, {}),
    ("sgd", 0.02, {"momentum": 0.9}, {}),
    ("sgd", 0.02, {"momentum": 0.9, "dampening": 0.5}, {}),
    ("sgd", 0.02, {"momentum": 0.9, "nesterov": True}, {}),
    ("sgd", 0.02, {"momentum": 0.9, "weight_decay": 0.01}, {}),
    ("sgd", 0.02, {"momentum": 0.9, "momentum_form": "textbook"}, {}),
    ("sgd", 0.02, {"momentum": 0.9, "nesterov": True, "momentum_form": "textbook"}, {}),
    ("sgd", 0.02, {"momentum": 0.5}, {"batch_size": 3, "shuffle": True}),
    ("sgd", 0.02, {}, {"batch_size": 5, "shuffle": True, "drop_last": True}),
    ("adagrad", 0.05, {}, {}),
    ("adagrad", 0.05, {"lr_decay": 0.01, "initial_accumulator_value": 0.1}, {}),
    ("adagrad", 0.05, {"eps_placement": "inside"}, {}),
    ("adagrad", 0.05, {"eps_placement": "inside", "eps": 1e-4, "weight_decay": 0.01}, {}),
    ("rmsprop", 0.005, {}, {}),
    ("rmsprop", 0.005, {"centered": True}, {}),
    ("rmsprop", 0.005, {"momentum": 0.9}, {}),
    ("rmsprop", 0.005, {"centered": True, "momentum": 0.5, "weight_decay": 0.01, "alpha": 0.9, "eps": 1e-6}, {}),
    ("adadelta", 1.0, {}, {}),
    ("adadelta", 0.5, {"rho": 0.95, "eps": 1e-5, "weight_decay": 0.01}, {}),
    ("adam", 0.01, {}, {}),
    ("adam", 0.01, {"amsgrad": True}, {}),
    ("adam", 0.01, {"weight_decay": 0.05}, {}),
    ("adam", 0.01, {"weight_decay": 0.05, "decoupled_weight_decay": True}, {}),
    ("adam", 0.01, {"beta1": 0.5, "beta2": 0.9, "eps": 1e-6}, {"batch_size": 4, "shuffle": True}),
    ("adamw", 0.01, {}, {}),
    ("adamw", 0.01, {"amsgrad": True, "weight_decay": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, {}),
    ("adamax", 0.01, {}, {}),
    ("adamax", 0.01, {"weight_decay": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, {}),
    ("nadam", 0.01, {}, {}),
    ("nadam", 0.01, {"momentum_decay": 0.0, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, {}),
    ("nadam", 0.01, {"weight_decay": 0.05, "decoupled_weight_decay": True}, {}),
    ("nadam", 0.01, {"weight_decay": 0.05}, {}),
    ("ftrl", 0.05, {}, {}),
    ("ftrl", 0.05, {"beta": 0.5, "l1": 0.001, "l2": 0.01, "initial_accumulator_value": 0.1}, {}),
    ("sgd", 0.02, {"momentum": 0.9}, {"clip_grad_norm": 0.1}),
    ("sgd", 0.02, {}, {"clip_grad_value": 0.01}),
    ("adam", 0.01, {}, {"clip_weights": (-0.3, 0.3)}),
    ("adam", 0.01, {}, {"clip_grad_norm": 0.5, "clip_grad_value": 0.05, "clip_weights": (-0.5, 0.5)}),
)


# What a variant is, for selecting what the default test run checks
# (``tests/cases_trajectories.py``), keyed by the variant's label
# (``variant_label``). A variant with no options and no settings is tagged
# "defaults" without being listed.
#   "subsumed": every option and setting it changes recurs, together with
#       others, in a variant of the same optimizer (or, for a setting alone, of
#       any optimizer) that is not subsumed; the default run skips it in float64.
#   "also_float32": checked in float32 too, besides each optimizer's defaults:
#       mini-batches with shuffle, every clip at once, and a chaotic trajectory
#       that needs the float32 precision horizon.
VARIANT_TAGS: dict[str, tuple[str, ...]] = {
    "sgd-momentum0.9": ("subsumed",),
    "sgd-momentum0.5-batch3-shuffle": ("also_float32",),
    "adagrad-eps_placementinside": ("subsumed",),
    "rmsprop-centered": ("subsumed",),
    "rmsprop-momentum0.9": ("subsumed",),
    "rmsprop-alpha0.9-eps1e-06-weight_decay0.01-momentum0.5-centered": ("also_float32",),
    "sgd-clip_grad_value0.01": ("subsumed",),
    "adam-clip_weights-0.3_0.3": ("subsumed",),
    "adam-clip_grad_norm0.5-clip_grad_value0.05-clip_weights-0.5_0.5": ("also_float32",),
}


def variant_label(variant: tuple[str, float, dict, dict]) -> str:
    """The optimizer label of a ``VARIANTS`` entry (``Optimizer.label``): its type
    and every option or setting that differs from the default."""
    kind, learning_rate, options, settings = variant
    return make_optimizer(kind, learning_rate, options, settings, 1).label()


def variant_tags(variant: tuple[str, float, dict, dict]) -> tuple[str, ...]:
    """The tags of a ``VARIANTS`` entry: "defaults" when it changes nothing, then its ``VARIANT_TAGS``."""
    _kind, _learning_rate, options, settings = variant
    return (("defaults",) if not options and not settings else ()) + VARIANT_TAGS.get(variant_label(variant), ())


def make_optimizer(kind: str, learning_rate: float, options: dict, settings: dict, steps: int) -> Optimizer:
    """An Optimizer with the catalogue's defaults filled in for every option not given."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"no optimizer {kind!r}; expected one of {sorted(OPTIMIZERS)}")
    unknown = sorted(set(options) - set(OPTIMIZERS[kind]))
    if unknown:
        raise ValueError(f"optimizer {kind!r} has no options {unknown}; expected some of {sorted(OPTIMIZERS[kind])}")
    return Optimizer(kind, learning_rate, steps, optimizer_options(kind, options), **settings)


def trajectory_scenarios(dtype: str = "float64", steps: int = TRAJECTORY_STEPS,
                         seed: int = TRAJECTORY_SEED) -> list[Scenario]:
    """One small random network per variant, ``steps`` updates, in ``dtype``."""
    out = []
    for k, (kind, learning_rate, options, settings) in enumerate(VARIANTS):
        net = random_scenario(seed + k, max_depth=3, max_width=10, max_batch=12, dtype=dtype, layer_streams=True)
        if settings.get("batch_size", 0) > net.x.shape[0]:
            settings = {**settings, "batch_size": net.x.shape[0]}
        optimizer = make_optimizer(kind, learning_rate, options, settings, steps)
        out.append(dataclasses.replace(
            net, optimizer=optimizer,
            name=f"trajectory-{optimizer.label()}-{net.name.removeprefix('random-')}",
            source={"title": f"{steps} updates of {optimizer.label()} on a seeded random architecture"},
        ))
    return out


def dead_unit_scenario(dtype: str = "float64", steps: int = TRAJECTORY_STEPS) -> Scenario:
    """A trajectory that amplifies rounding: NAdam with L2 weight decay on a
    depth-4 ReLU network (``random_scenario(5031)``) whose last hidden units die.

    Their only gradient is then λθ, and NAdam moves them by ≈ η·λθ/ε — a map
    with gain ≫ 1 — while the biases decay to ~1e-11. It exercises both
    refinements of the trajectory tolerance (``reports.verification.tolerance``): the
    parameter floor (float64) and the float32 horizon.
    """
    net = random_scenario(5031, max_depth=4, max_width=10, max_batch=12, dtype=dtype, layer_streams=True)
    optimizer = make_optimizer("nadam", 0.01, {"weight_decay": 0.05}, {}, steps)
    return dataclasses.replace(net, optimizer=optimizer,
                               name=f"dead_unit-{optimizer.label()}-{net.name.removeprefix('random-')}",
                               source={"title": "NAdam with L2 decay on dead ReLU units: rounding is amplified"})


# Trajectories through the layers beyond linear: γ, β and kernels are updated by
# the same optimizers, clipped by the same rules, and BatchNorm's running
# statistics are compared after every update's forward pass.
LAYER_TRAJECTORIES: tuple[tuple[int, str, float, dict, dict], ...] = (
    # (random_conv_scenario seed, optimizer, learning rate, options, settings)
    (33, "sgd", 0.02, {"momentum": 0.9}, {}),                                   # BatchNorm (training)
    (22, "adam", 0.01, {"weight_decay": 0.01}, {"batch_size": 2, "shuffle": True, "clip_grad_norm": 1.0}),
    (12, "sgd", 0.02, {"momentum": 0.9, "nesterov": True}, {"clip_grad_value": 0.5}),  # LayerNorm, pooling
    (10, "rmsprop", 0.005, {}, {"batch_size": 2, "clip_weights": (-2.0, 2.0)}),  # dropout, new masks per update
)


def layer_trajectory_scenarios(dtype: str = "float64", steps: int = 30) -> list[Scenario]:
    """Random convolutional networks (``scenarios.generator.random_conv_scenario``,
    with BatchNorm, LayerNorm, pooling or dropout) trained for ``steps`` updates."""
    scenarios = []
    for seed, kind, learning_rate, options, settings in LAYER_TRAJECTORIES:
        net = random_conv_scenario(seed, dtype=dtype)
        if settings.get("batch_size", 0) > net.x.shape[0]:
            settings = {**settings, "batch_size": net.x.shape[0]}
        optimizer = make_optimizer(kind, learning_rate, options, settings, steps)
        scenarios.append(dataclasses.replace(
            net, optimizer=optimizer, name=f"trajectory-{optimizer.label()}-{net.name.removeprefix('random-')}",
            source={"title": f"{steps} updates of {optimizer.label()} on a seeded random convolutional network"}))
    return scenarios


def document001_scenario(samples: int = 320, epochs: int = 10, seed: int = 1, dtype: str = "float64",
                         learning_rate: float = 0.001) -> Scenario:
    """Document 001: Dense(10, relu, input 784) → Dense(10, softmax), CategoricalCrossentropy, Adam(0.001).

    ``samples`` seeded synthetic inputs uniform in [0, 1]; the label of a row is
    the argmax of a seeded random linear map of it. Batches of 32, no shuffle;
    320 samples × 10 epochs = 100 updates.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (samples, 784))
    teacher = rng.normal(0.0, 1.0, (784, 10))
    labels = np.argmax((x - 0.5) @ teacher, axis=1)
    y = np.eye(10)[labels]
    layers = (
        Layer("linear", weight=initialise("xavier_uniform", 10, 784, layer_rng(seed, 0)), bias=np.zeros(10)),
        Layer("relu"),
        Layer("linear", weight=initialise("xavier_uniform", 10, 10, layer_rng(seed, 2)), bias=np.zeros(10)),
        Layer("softmax"),
    )
    optimizer = make_optimizer("adam", learning_rate, {}, {"batch_size": 32}, 1)
    steps = epochs * optimizer.updates_per_epoch(samples)
    optimizer = dataclasses.replace(optimizer, steps=steps, epochs=epochs)
    return Scenario(
        name=f"doc001-784-10relu-10softmax-adam-{'f64' if dtype == 'float64' else 'f32'}",
        layers=layers, loss=Loss("cross_entropy", "mean"), x=x, y=y, seed=seed, optimizer=optimizer,
        source={"title": "document 001's Keras model on seeded synthetic data", "document": "001_d5895f6aec710de7.txt"},
    ).astype(dtype)


__all__ = ["VARIANTS", "VARIANT_TAGS", "TRAJECTORY_SEED", "TRAJECTORY_STEPS", "trajectory_scenarios",
           "document001_scenario", "dead_unit_scenario", "make_optimizer", "variant_label", "variant_tags"]


# --------------------------------------------------------------------------- gradients in time (documents 001, 003)

RECURRENT_STEPS = 20
RECURRENT_HIDDEN = 8
RECURRENT_FEATURES = 3
RECURRENT_BATCH = 4
RECURRENT_SEED = 14
GRADIENT_IN_TIME_NETWORKS = ("tanh ρ=0.5", "tanh ρ=1.0", "tanh ρ=1.5", "lstm")
RECURRENT_FORGET_BIAS = 3.0  # f = σ(3) ≈ 0.95: the cell state is carried from step to step


def recurrent_scenario(network: str, steps: int = RECURRENT_STEPS, seed: int = RECURRENT_SEED) -> Scenario:
    """``network`` ("tanh ρ=R" or "lstm") over ``steps`` steps, loss ½Σ(ŷ − t)² on the last step."""
    rng = np.random.default_rng(seed)
    kind = "lstm" if network == "lstm" else "rnn"
    gates = LAYERS[kind].gates
    bound = 1.0 / math.sqrt(RECURRENT_HIDDEN)
    weight_hh = rng.uniform(-bound, bound, (gates * RECURRENT_HIDDEN, RECURRENT_HIDDEN))
    if kind == "rnn":
        radius = float(network.split("=")[1])
        weight_hh *= radius / max(abs(np.linalg.eigvals(weight_hh)))
    bias_ih = np.zeros(gates * RECURRENT_HIDDEN)
    if kind == "lstm":
        bias_ih[RECURRENT_HIDDEN:2 * RECURRENT_HIDDEN] = RECURRENT_FORGET_BIAS  # gates (i, f, g, o): the forget gate starts open
    tensors = {"weight_ih": rng.uniform(-bound, bound, (gates * RECURRENT_HIDDEN, RECURRENT_FEATURES)), "weight_hh": weight_hh,
               "bias_ih": bias_ih, "bias_hh": np.zeros(gates * RECURRENT_HIDDEN)}
    layers = (Layer(kind, params=layer_options(kind, {"hidden_size": RECURRENT_HIDDEN}), tensors=tensors),
              Layer("last_step"),
              Layer("linear", weight=rng.normal(0.0, 1.0 / math.sqrt(RECURRENT_HIDDEN), (1, RECURRENT_HIDDEN)), bias=np.zeros(1)),
              Layer("identity"))
    x = rng.normal(0.0, 0.1, (RECURRENT_BATCH, steps, RECURRENT_FEATURES))  # small inputs: tanh stays near its linear range
    y = rng.normal(0.0, 1.0, (RECURRENT_BATCH, 1))
    return Scenario(name=f"recurrent-{network.replace(' ', '-').replace('ρ=', 'rho')}-t{steps}", layers=layers,
                    loss=Loss("mse", "half_sum"), x=x, y=y, seed=seed,
                    source={"title": "documents 001 and 003: gradients in time"})


def clipped_trajectory_scenarios(dtype: str = "float64", steps: int = 15) -> list[Scenario]:
    """The ρ = 1.5 RNN trained by SGD (η = 0.1) without and with clip_grad_norm = 1:
    both engines against torch.optim, update by update. Unclipped, the gradient
    explodes and the loss grows to ~10² by update 15 (the steps float64 cannot
    determine are judged by the precision horizon); clipped, the loss stays
    below 1.5. The report runs them in float64: the clipped run is chaotic
    enough that float32 rounding, amplified, reaches its tolerance by update 15."""
    base = recurrent_scenario("tanh ρ=1.5").astype(dtype)
    out = []
    for clip in (None, 1.0):
        optimizer = make_optimizer("sgd", 0.1, {}, {} if clip is None else {"clip_grad_norm": clip}, steps)
        out.append(dataclasses.replace(base, optimizer=optimizer,
                                       name=f"trajectory-{optimizer.label()}-rnn-rho1.5-t{RECURRENT_STEPS}-"
                                            f"{'f64' if dtype == 'float64' else 'f32'}"))
    return out

