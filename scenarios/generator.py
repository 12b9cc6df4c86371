"""Seeded random scenarios: architecture, data and dtype all drawn from the seed.

``random_scenario(seed)`` draws everything — architecture, weights, data — from
one generator, ``numpy.random.default_rng(seed)``, in a fixed order, so the
same seed gives the same scenario on every machine, in every process and every
pytest-xdist worker. One generator per scenario, because seeding one is a
sizeable share of building a small scenario and random scenarios are built by
the thousand.

``layer_streams=True`` draws each layer's weights from its own generator
instead, ``default_rng([seed, 2i])`` and its bias from ``default_rng([seed,
1000 + i])`` (the architecture and the data still come from the first one):
the built-in trajectories (``scenarios.trajectories``) use it, because their
networks are the ones the documented measurements were made on.

``allowed`` (every family): the layer types, activations and losses an engine
under test supports (``manual.protocol.Engine.supported_names``); the family
then draws only from those, and raises ``NotDrawable`` when its skeleton needs
one that is missing. None — the default — draws from the whole catalogue, and
the draws are exactly those without the argument.
"""
from __future__ import annotations

import math

import numpy as np

from backprop_verify.scenarios.catalog import (ACTIVATIONS, LAYERS, LOSSES, LossInfo, attention_parameters,
                                               key_padding_mask, layer_options)
from backprop_verify.scenarios.init import initialise, initialise_shape, layer_rng
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.shapes import ShapeError, output_shape

DEFAULT_SEED = 0
# How many seeded random architectures the report and the default test run check.
DEFAULT_RANDOM_COUNT = 300
# How many seeded random convolutional architectures, beside the dense ones.
DEFAULT_RANDOM_CONV_COUNT = 100
# How many seeded random recurrent architectures.
DEFAULT_RANDOM_RECURRENT_COUNT = 60


def hidden_activations() -> tuple[tuple[str, dict], ...]:
    """The pool random networks draw a hidden activation from: every catalogue
    activation's ``random_variants``, in catalogue order (softmax is an output,
    chosen by the loss)."""
    return tuple((name, dict(params)) for name, info in ACTIVATIONS.items() for params in info.random_variants)


HIDDEN_ACTIVATIONS = hidden_activations()
RANDOM_LOSSES = tuple(sorted(LOSSES))  # the losses random networks draw from: all of them


class NotDrawable(ValueError):
    """A random family cannot be drawn from the ``allowed`` components: the message names what it needs."""


def _needs(family: str, allowed: frozenset[str] | None, *names: str) -> None:
    """Every one of ``names`` is allowed (or nothing is restricted), else ``NotDrawable``."""
    missing = [name for name in names if allowed is not None and name not in allowed]
    if missing:
        raise NotDrawable(f"the {family} family needs {', '.join(missing)}")


def _activations(pool, allowed: frozenset[str] | None, family: str):
    """``pool`` ((name, params) pairs) restricted to the ``allowed`` activations (all of it for None)."""
    if allowed is None:
        return pool
    kept = tuple((name, params) for name, params in pool if name in allowed)
    if not kept:
        raise NotDrawable(f"the {family} family needs one of the activations {', '.join(sorted({n for n, _ in pool}))}")
    return kept


def _losses(allowed: frozenset[str] | None, family: str, hidden, pool=RANDOM_LOSSES) -> tuple[str, ...]:
    """``pool`` restricted to the ``allowed`` losses whose output layer is allowed too (the hidden
    activations ``hidden`` end the network where the loss names none)."""
    if allowed is None:
        return pool
    def ends(loss: str) -> bool:
        output = LOSSES[loss].output_layer
        return output in allowed if output else any(name in allowed for name, _ in hidden)
    kept = tuple(loss for loss in pool if loss in allowed and ends(loss))
    if not kept:
        raise NotDrawable(f"the {family} family needs one of the losses {', '.join(pool)} with its output layer")
    return kept


def random_scenario(seed: int, *, max_depth: int = 6, max_width: int = 32, max_batch: int = 16,
                    dtype: str | None = None, layer_streams: bool = False,
                    allowed: frozenset[str] | None = None) -> Scenario:
    """A random dense network: 1..max_depth linear layers, each followed by an
    activation, a loss suited to the output, a batch of inputs and targets
    (components among ``allowed``, when given)."""
    _needs("dense", allowed, "linear")
    hidden_pool = _activations(HIDDEN_ACTIVATIONS, allowed, "dense")
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, max_depth + 1))
    activation, params = _pick(rng, hidden_pool)
    loss_type = _pick(rng, _losses(allowed, "dense", [(activation, params)]))
    reduction = _pick(rng, LOSSES[loss_type].reductions)
    batch = int(rng.integers(1, max_batch + 1))
    if dtype is None:
        dtype = "float64" if rng.random() < 0.5 else "float32"
    use_bias = bool(rng.random() < 0.8)
    widths = rng.integers(1, max_width + 1, size=depth + 1).tolist()
    widths[-1] = max(widths[-1], _fewest_outputs(LOSSES[loss_type]))

    layers: list[Layer] = []
    for i in range(depth):
        n_in, n_out = widths[i], widths[i + 1]
        init = ACTIVATIONS[activation].initializer
        weight_rng, bias_rng = (layer_rng(seed, 2 * i), layer_rng(seed, 1000 + i)) if layer_streams else (rng, rng)
        weight = initialise(init, n_out, n_in, weight_rng).astype(dtype, copy=False)
        bias = bias_rng.normal(0.0, 0.1, n_out).astype(dtype, copy=False) if use_bias else None
        layers.append(Layer("linear", weight=weight, bias=bias))
        if i < depth - 1:
            layers.append(Layer(activation, params=dict(params)))
    layers.append(_output_layer(loss_type, activation, params))

    x = rng.normal(0.0, 1.0, (batch, widths[0])).astype(dtype, copy=False)
    y = _targets(rng, loss_type, batch, widths[-1]).astype(dtype, copy=False)
    name = f"random-s{seed}-depth{depth}-{_slug(activation, params)}-{loss_type}-{reduction}-{'f64' if dtype == 'float64' else 'f32'}"
    return Scenario(name=name, layers=tuple(layers), loss=Loss(loss_type, reduction), x=x, y=y,
                    dtype=dtype, seed=seed, source={"title": "seeded random architecture"})


def _pick(rng: np.random.Generator, options):
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def _fewest_outputs(loss: LossInfo) -> int:
    """A distribution needs at least two classes; any other target one output."""
    return 2 if loss.target_domain == "distribution" else 1


def _output_layer(loss_type: str, activation: str, params: dict) -> Layer:
    """The layer that ends a network for this loss (``LossInfo.output_layer``): "" repeats the hidden activation."""
    output = LOSSES[loss_type].output_layer
    return Layer(output) if output else Layer(activation, params=dict(params))


def _targets(rng: np.random.Generator, loss_type: str, batch: int, width: int) -> np.ndarray:
    """Targets in the loss's ``target_domain``: one-hot rows for a distribution, U[0, 1) to one
    decimal for "unit", N(0, 1) for any."""
    domain = LOSSES[loss_type].target_domain
    if domain == "distribution":
        onehot = np.zeros((batch, width))
        onehot[np.arange(batch), rng.integers(0, width, size=batch)] = 1.0
        return onehot
    if domain == "unit":
        return rng.uniform(0.0, 1.0, (batch, width)).round(1)
    return rng.normal(0.0, 1.0, (batch, width))


def _slug(activation: str, params: dict) -> str:
    if activation == "gelu":
        return "gelu_tanh" if params.get("approximate") == "tanh" else "gelu"
    return activation


def random_scenarios(count: int, seed: int = DEFAULT_SEED, allowed: frozenset[str] | None = None) -> list[Scenario]:
    """``count`` scenarios with seeds seed, seed+1, …"""
    return [random_scenario(seed + k, allowed=allowed) for k in range(count)]


# --------------------------------------------------------------------------- convolutional networks

def random_pool(family: str) -> tuple[str, ...]:
    """The layers a random ``family`` ("conv", "recurrent") draws from, in catalogue order: every spec
    of the family that is not part of its skeleton (``LayerInfo.skeleton``), each drawn by its spec's
    ``draw``."""
    return tuple(name for name, info in LAYERS.items() if info.random == family and not info.skeleton)


def draw_layer(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> Layer | None:
    """Layer ``kind`` as its spec draws it for an input of ``shape`` (``LayerInfo.draw``), or None
    when the spec finds that it does not fit."""
    fields = LAYERS[kind].draw(rng, shape)
    return None if fields is None else Layer(kind, **fields)


# The layers a convolutional block may add after its activation (besides the
# skeleton conv2d → activation …, flatten, linear).
CONV_EXTRAS = random_pool("conv")
_CONV_STREAM = 0xC0


def random_conv_scenario(seed: int, *, max_blocks: int = 2, dtype: str | None = None,
                         allowed: frozenset[str] | None = None) -> Scenario:
    """A random convolutional network, valid by construction: 1..max_blocks of
    conv2d → activation → (one of ``CONV_EXTRAS`` or nothing), then flatten →
    linear → the loss's output layer. Everything — shapes, options, weights,
    data — from ``default_rng([seed, 0xC0])``; a drawn option that would not
    fit the input (``scenarios.shapes``) is redrawn smaller. Components among
    ``allowed``, when given."""
    _needs("convolutional", allowed, "conv2d", "flatten", "linear")
    hidden_pool = _activations(HIDDEN_ACTIVATIONS, allowed, "convolutional")
    extra_pool = CONV_EXTRAS if allowed is None else tuple(kind for kind in CONV_EXTRAS if kind in allowed)
    rng = np.random.default_rng([seed, _CONV_STREAM])
    batch = int(rng.integers(1, 5))
    shape: tuple[int, ...] = (batch, int(rng.integers(1, 4)), int(rng.integers(5, 11)), int(rng.integers(5, 11)))
    input_shape = shape
    activation, params = _pick(rng, hidden_pool)
    loss_type = _pick(rng, _losses(allowed, "convolutional", [(activation, params)]))
    reduction = _pick(rng, LOSSES[loss_type].reductions)
    if dtype is None:
        dtype = "float64" if rng.random() < 0.5 else "float32"
    init = ACTIVATIONS[activation].initializer
    layers: list[Layer] = []
    extras: list[str] = []
    for _block in range(int(rng.integers(1, max_blocks + 1))):
        conv = _random_conv(rng, shape, init)
        layers += [conv, Layer(activation, params=dict(params))]
        shape = output_shape(conv, shape)
        extra = _random_extra(rng, shape, extra_pool)
        if extra is not None:
            layers.append(extra)
            extras.append(extra.type)
            shape = output_shape(extra, shape)
    layers.append(Layer("flatten"))
    features = math.prod(shape[1:])
    width = int(rng.integers(_fewest_outputs(LOSSES[loss_type]), 6))
    layers.append(Layer("linear", weight=initialise(init, width, features, rng),
                        bias=rng.normal(0.0, 0.1, width) if rng.random() < 0.8 else None))
    layers.append(_output_layer(loss_type, activation, params))
    x = rng.normal(0.0, 1.0, input_shape)
    y = _targets(rng, loss_type, batch, width)
    blocks = sum(layer.type == "conv2d" for layer in layers)
    # Exact ties (relu's or dropout's zeros in a max-pool window) are left to finite differences' blind
    # spots (``reference.fd_oracle``): the network is judged everywhere else.
    tags = ()
    name = (f"random-conv-s{seed}-blocks{blocks}-{_slug(activation, params)}-{'-'.join(extras) or 'plain'}"
            f"-{loss_type}-{reduction}-{'f64' if dtype == 'float64' else 'f32'}")
    return Scenario(name=name, layers=tuple(layers), loss=Loss(loss_type, reduction), x=x, y=y, dtype="float64",
                    seed=seed, source={"title": "seeded random convolutional architecture"}, tags=tags).astype(dtype)


def _random_conv(rng: np.random.Generator, shape: tuple[int, ...], init: str) -> Layer:
    channels = shape[1]
    out_channels = int(rng.integers(1, 5))
    groups = channels if channels > 1 and out_channels % channels == 0 and rng.random() < 0.3 else 1
    kernel = int(rng.integers(1, 4))
    options = {"out_channels": out_channels, "kernel_size": (kernel, kernel),
               "stride": (int(rng.integers(1, 3)),) * 2, "padding": (int(rng.integers(0, kernel)),) * 2,
               "dilation": (2, 2) if rng.random() < 0.2 else (1, 1), "groups": groups}
    weight = initialise_shape(init, (out_channels, channels // groups, kernel, kernel), rng)
    bias = rng.normal(0.0, 0.1, out_channels) if rng.random() < 0.8 else None
    for fallback in ({}, {"dilation": (1, 1)}, {"dilation": (1, 1), "stride": (1, 1)},
                     {"dilation": (1, 1), "stride": (1, 1), "padding": (kernel - 1, kernel - 1)}):
        layer = Layer("conv2d", weight=weight, bias=bias, params=layer_options("conv2d", {**options, **fallback}))
        try:
            output_shape(layer, shape)
            return layer
        except ShapeError:
            continue
    raise AssertionError(f"no conv2d fits {shape}")  # unreachable: padding k − 1 always fits


def _random_extra(rng: np.random.Generator, shape: tuple[int, ...], extras=CONV_EXTRAS) -> Layer | None:
    """One of ``extras`` (``CONV_EXTRAS``) suited to ``shape``, or None."""
    kind = _pick(rng, (None,) + tuple(extras))
    return None if kind is None else draw_layer(kind, rng, shape)


def random_conv_scenarios(count: int, seed: int = DEFAULT_SEED,
                          allowed: frozenset[str] | None = None) -> list[Scenario]:
    """``count`` convolutional scenarios with seeds seed, seed+1, …"""
    return [random_conv_scenario(seed + k, allowed=allowed) for k in range(count)]



# --------------------------------------------------------------------------- recurrent networks

RECURRENT_CELLS = random_pool("recurrent")
_RECURRENT_STREAM = 0x5E0


def random_recurrent_scenario(seed: int, *, dtype: str | None = None,
                              allowed: frozenset[str] | None = None) -> Scenario:
    """A random recurrent network: optional embedding of token ids → 1–2 recurrent
    layers (rnn tanh/relu, lstm, gru; full or truncated backpropagation through
    time) → optional last_step → linear → the loss's output layer; without
    last_step the loss is taken over every time step (N, T, C). Everything from
    ``default_rng([seed, 0x5E0])``; components among ``allowed``, when given."""
    _needs("recurrent", allowed, "linear")
    cells_pool = RECURRENT_CELLS if allowed is None else tuple(kind for kind in RECURRENT_CELLS if kind in allowed)
    if not cells_pool:
        raise NotDrawable(f"the recurrent family needs one of the layers {', '.join(RECURRENT_CELLS)}")
    rng = np.random.default_rng([seed, _RECURRENT_STREAM])
    batch, steps = int(rng.integers(1, 4)), int(rng.integers(1, 9))
    loss_type = _pick(rng, _losses(allowed, "recurrent", [("tanh", {})]))
    reduction = _pick(rng, LOSSES[loss_type].reductions)
    if dtype is None:
        dtype = "float64" if rng.random() < 0.5 else "float32"
    layers: list[Layer] = []
    if rng.random() < 0.3 and (allowed is None or "embedding" in allowed):
        vocabulary, features = int(rng.integers(2, 7)), int(rng.integers(1, 5))
        layers.append(Layer("embedding", weight=rng.normal(0.0, 1.0, (vocabulary, features)),
                            params=layer_options("embedding", {"num_embeddings": vocabulary,
                                                               "embedding_dim": features})))
        x = rng.integers(0, vocabulary, (batch, steps)).astype(np.float64)
    else:
        features = int(rng.integers(1, 5))
        x = rng.normal(0.0, 1.0, (batch, steps, features))
    cells = []
    for _depth in range(int(rng.integers(1, 3))):
        kind = _pick(rng, cells_pool)
        layer = draw_layer(kind, rng, (batch, steps, features))
        layers.append(layer)
        chunk = layer.params["bptt_chunk"]
        cells.append(kind + (f"-chunk{chunk}" if chunk else ""))
        hidden = layer.params["hidden_size"]
        features = hidden
    last = bool(rng.random() < 0.5) and (allowed is None or "last_step" in allowed)
    if last:
        layers.append(Layer("last_step"))
    width = int(rng.integers(_fewest_outputs(LOSSES[loss_type]), 5))
    layers.append(Layer("linear", weight=initialise("xavier_normal", width, features, rng),
                        bias=rng.normal(0.0, 0.1, width)))
    layers.append(_output_layer(loss_type, "tanh", {}))
    rows = batch if last else batch * steps
    y = _targets(rng, loss_type, rows, width)
    if not last:
        y = y.reshape(batch, steps, width)
    name = (f"random-recurrent-s{seed}-{'embedding-' if layers[0].type == 'embedding' else ''}{'-'.join(cells)}"
            f"{'-last_step' if last else ''}-{loss_type}-{reduction}-{'f64' if dtype == 'float64' else 'f32'}")
    return Scenario(name=name, layers=tuple(layers), loss=Loss(loss_type, reduction), x=x, y=y, dtype="float64",
                    seed=seed, source={"title": "seeded random recurrent architecture"}).astype(dtype)


def random_recurrent_scenarios(count: int, seed: int = DEFAULT_SEED,
                               allowed: frozenset[str] | None = None) -> list[Scenario]:
    """``count`` recurrent scenarios with seeds seed, seed+1, …"""
    return [random_recurrent_scenario(seed + k, allowed=allowed) for k in range(count)]


# --------------------------------------------------------------------------- transformer networks

# How many seeded random transformer architectures, beside the other families.
DEFAULT_RANDOM_TRANSFORMER_COUNT = 40
_TRANSFORMER_STREAM = 0x7F0
# The MLP's activation: GPT's GELU (erf or tanh form), and two more (relu's kink inside a block).
TRANSFORMER_ACTIVATIONS = (("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}), ("relu", {}),
                           ("tanh", {}))


def random_transformer_scenario(seed: int, *, dtype: str | None = None,
                                allowed: frozenset[str] | None = None) -> Scenario:
    """A random transformer: token ids → embedding (four times in five; else sequences (N, T, E) of
    numbers) → optional positional_embedding (T_max ≥ T) → 1–2 blocks of residual [layer_norm →
    multihead_attention] and residual [layer_norm → linear → activation → linear] → optional layer_norm →
    linear head → softmax_cross_entropy (or mse) on every position. Drawn: heads 1–3 of width 1–3 (E ≥ 3),
    causal or not, a key_padding_mask or not, attention biases or not, the MLP's width (1× or 2× E) and activation
    (``TRANSFORMER_ACTIVATIONS``), ties — the head's weight to the embedding's, the MLP's second weight to
    its first transposed — or none. Everything from ``default_rng([seed, 0x7F0])``; no optimizer.
    Components among ``allowed``, when given (no embedding, positional embedding or mse without them)."""
    _needs("transformer", allowed, "residual", "layer_norm", "multihead_attention", "linear")
    activations = _activations(TRANSFORMER_ACTIVATIONS, allowed, "transformer")
    losses = tuple(loss for loss in ("softmax_cross_entropy", "mse") if allowed is None or loss in allowed)
    if not losses:
        raise NotDrawable("the transformer family needs one of the losses softmax_cross_entropy, mse")
    rng = np.random.default_rng([seed, _TRANSFORMER_STREAM])
    batch, steps = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    heads = int(rng.integers(1, 4))
    # E ≥ 3: a layer_norm over one or two features normalises every sample to 0 or ±1, and the layers
    # before it would get a gradient of (nearly) 0 — nothing left to check there.
    width = heads * max(int(rng.integers(1, 4)), -(-3 // heads))
    blocks = int(rng.integers(1, 3))
    causal, tokens = bool(rng.random() < 0.5), bool(rng.random() < 0.8)
    tokens = tokens and (allowed is None or "embedding" in allowed)
    tied, tied_back = tokens and bool(rng.random() < 0.5), bool(rng.random() < 0.3)
    positional, padding, attention_bias = (bool(rng.random() < p) for p in (0.7, 0.3, 0.8))
    positional = positional and (allowed is None or "positional_embedding" in allowed)
    activation, activation_params = _pick(rng, activations)
    hidden, final_norm = width * int(rng.integers(1, 3)), bool(rng.random() < 0.7)
    loss_type = "softmax_cross_entropy" if rng.random() < 0.7 else "mse"
    loss_type = loss_type if loss_type in losses else losses[0]
    reduction = _pick(rng, LOSSES[loss_type].reductions)
    if dtype is None:
        dtype = "float64" if rng.random() < 0.5 else "float32"
    vocabulary = int(rng.integers(2, 8))
    shape = (batch, steps, width)
    layers: list[Layer] = []
    if tokens:
        layers.append(Layer("embedding", weight=rng.normal(0.0, 1.0, (vocabulary, width)),
                            params=layer_options("embedding", {"num_embeddings": vocabulary, "embedding_dim": width})))
        x = rng.integers(0, vocabulary, (batch, steps)).astype(np.float64)
    else:
        x = rng.normal(0.0, 1.0, shape)
    if positional:
        positions = steps + int(rng.integers(0, 3))
        layers.append(Layer("positional_embedding", weight=rng.normal(0.0, 1.0, (positions, width)),
                            params=layer_options("positional_embedding", {"num_embeddings": positions,
                                                                          "embedding_dim": width})))
    mask = key_padding_mask(rng, batch, steps) if padding else None

    def layer_norm() -> Layer:
        return Layer("layer_norm", weight=rng.uniform(0.5, 1.5, width), bias=rng.normal(0.0, 0.1, width),
                     params=layer_options("layer_norm", {}))

    def linear(n_in: int, n_out: int) -> Layer:
        return Layer("linear", weight=initialise("pytorch_default", n_out, n_in, rng), bias=rng.normal(0.0, 0.1, n_out))

    for _block in range(blocks):
        options = layer_options("multihead_attention", {"embed_dim": width, "num_heads": heads, "causal": causal,
                                                        "bias": attention_bias})
        attention = Layer("multihead_attention", params=options,
                          tensors=attention_parameters(options, shape, rng, bias_scale=0.1),
                          masks={} if mask is None else {"key_padding_mask": mask})
        layers.append(Layer("residual", layers=(layer_norm(), attention)))
        first = linear(width, hidden)
        if tied_back:  # the second weight is the first's transpose: (hidden, E) read as (E, hidden)
            second = Layer("linear", weight=first.weight.T.copy(), bias=rng.normal(0.0, 0.1, width),
                           tied={"weight": f"layers.{len(layers)}.layers.1.weight"})
        else:
            second = linear(hidden, width)
        layers.append(Layer("residual", layers=(layer_norm(), first, Layer(activation, params=dict(activation_params)),
                                                second)))
    if final_norm:
        layers.append(layer_norm())
    classes = vocabulary if tied or (tokens and loss_type != "mse") else int(rng.integers(1, 5)) + (
        loss_type != "mse")
    if tied:
        layers.append(Layer("linear", weight=layers[0].weight.copy(), tied={"weight": "layers.0.weight"}))
    else:
        layers.append(linear(width, classes))
    if loss_type == "mse":
        y = rng.normal(0.0, 1.0, (batch, steps, classes))
    else:
        y = (np.arange(classes) == rng.integers(0, classes, (batch, steps))[..., None]).astype(np.float64)
    name = (f"random-transformer-s{seed}-blocks{blocks}-h{heads}-e{width}-{'causal' if causal else 'full'}"
            f"-{_slug(activation, activation_params)}{'-tied' if tied else ''}{'-tied_back' if tied_back else ''}"
            f"{'-padding' if padding else ''}-{loss_type}-{reduction}-{'f64' if dtype == 'float64' else 'f32'}")
    return Scenario(name=name, layers=tuple(layers), loss=Loss(loss_type, reduction), x=x, y=y, dtype="float64",
                    seed=seed, source={"title": "seeded random transformer architecture"}).astype(dtype)


def random_transformer_scenarios(count: int, seed: int = DEFAULT_SEED,
                                 allowed: frozenset[str] | None = None) -> list[Scenario]:
    """``count`` transformer scenarios with seeds seed, seed+1, …"""
    return [random_transformer_scenario(seed + k, allowed=allowed) for k in range(count)]
