"""GPT-style networks as scenarios: the built-in block, its training trajectory, and gpt-mini for the bench.

A GPT-style network, as ``gpt_layers`` builds it (every layer's name is the
catalogue's, so both engines and the oracle run it like any other scenario)::

    embedding (V, E) → positional_embedding (T_max, E)
    → blocks × [ residual [ layer_norm → multihead_attention (causal) ]
                 residual [ layer_norm → linear E→4E → gelu → linear 4E→E ] ]
    → layer_norm → linear E→V, its weight tied to the embedding's (``tied_to = "layers.0.weight"``)

and the loss is softmax_cross_entropy over every position's next token
(N, T, V). Weights are drawn as PyTorch draws them (``torch.nn.Embedding``
N(0, 1), ``torch.nn.Linear`` U(±1/√in), ``torch.nn.MultiheadAttention``
Xavier-uniform and zero biases, LayerNorm γ = 1, β = 0), each layer from its
own generator ``layer_rng(seed, path)``; the data are windows of the tiny
character corpus ``scenarios.corpus`` (or its bytes, for a vocabulary of 256).

``gpt_block_scenarios()``: one block, small enough for finite differences, in
float64 and float32. ``gpt_trajectory_scenario()``: the same kind of block
trained for ``GPT_TRAJECTORY_STEPS`` updates of AdamW (decoupled weight decay
0.1) with ``clip_grad_norm = 1``. ``gpt_mini_scenario(dtype)``: the bench's
gpt-mini (vocabulary 256, T = 64, E = 128, 4 heads, 2 blocks, batch 16).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.scenarios.catalog import attention_parameters, layer_options
from backprop_verify.scenarios.corpus import VOCABULARY, byte_ids, token_ids, windows
from backprop_verify.scenarios.init import default_bias, initialise_shape, layer_rng, shifted
from backprop_verify.scenarios.model import Layer, Loss, Optimizer, Scenario

GPT_SEED = 23
GPT_TRAJECTORY_STEPS = 100


def _linear(width_in: int, width_out: int, seed: int, path: tuple[int, ...], bias: bool = True,
            tied_to: str | None = None, tied_weight: np.ndarray | None = None) -> Layer:
    """``torch.nn.Linear``'s draw from the layer's generators (weight; bias from the second); tied: the
    owner's weight itself (``tied_weight``, already laid out (out, in))."""
    if tied_to is not None:
        weight = tied_weight
    else:
        weight = initialise_shape("pytorch_default", (width_out, width_in), layer_rng(seed, path))
    drawn_bias = default_bias((width_out,), width_in, layer_rng(seed, shifted(path, 1000))) if bias else None
    return Layer("linear", weight=weight, bias=drawn_bias, tied={"weight": tied_to} if tied_to else {})


def _layer_norm(width: int) -> Layer:
    return Layer("layer_norm", weight=np.ones(width), bias=np.zeros(width), params=layer_options("layer_norm", {}))


def attention_block(width: int, heads: int, steps: int, batch: int, seed: int, path: tuple[int, ...], *,
                    causal: bool = True, bias: bool = True, key_padding_mask: np.ndarray | None = None,
                    bias_scale: float = 0.0) -> Layer:
    """residual [ layer_norm → multihead_attention ], the attention drawn as PyTorch draws it (with
    ``bias_scale``, its biases N(0, bias_scale²) instead of 0)."""
    options = layer_options("multihead_attention", {"embed_dim": width, "num_heads": heads, "causal": causal,
                                                    "bias": bias})
    attention = Layer("multihead_attention", params=options,
                      tensors=attention_parameters(options, (batch, steps, width), layer_rng(seed, (*path, 1)),
                                                   bias_scale),
                      masks={} if key_padding_mask is None else {"key_padding_mask": key_padding_mask})
    return Layer("residual", layers=(_layer_norm(width), attention))


def mlp_block(width: int, hidden: int, seed: int, path: tuple[int, ...], *, activation: tuple[str, dict] = ("gelu", {}),
              tied_back: bool = False, normalise: bool = True) -> Layer:
    """residual [ layer_norm → linear E→hidden → activation → linear hidden→E ]; ``tied_back``: the second
    linear's weight is the first's transposed (``tied_to`` the first, (hidden, E) read as (E, hidden))."""
    first_path = (*path, 1 if normalise else 0)
    first = _linear(width, hidden, seed, first_path)
    kind, params = activation
    second_path = (*first_path[:-1], first_path[-1] + 2)
    if tied_back:
        owner = "layers." + ".layers.".join(map(str, first_path)) + ".weight"
        second = _linear(hidden, width, seed, second_path, tied_to=owner, tied_weight=first.weight.T.copy())
    else:
        second = _linear(hidden, width, seed, second_path)
    inner = ((_layer_norm(width),) if normalise else ()) + (first, Layer(kind, params=dict(params)), second)
    return Layer("residual", layers=inner)


def gpt_layers(vocabulary: int, steps: int, width: int, heads: int, blocks: int, batch: int, seed: int, *,
               tied: bool = True, causal: bool = True, hidden: int | None = None,
               bias_scale: float = 0.0) -> tuple[Layer, ...]:
    """The GPT-style network of the module docstring, every layer drawn from ``layer_rng(seed, its path)``
    (``bias_scale``: the attention's biases, ``attention_block``)."""
    hidden = 4 * width if hidden is None else hidden
    embedding = Layer("embedding", weight=initialise_shape("standard_normal", (vocabulary, width), layer_rng(seed, 0)),
                      params=layer_options("embedding", {"num_embeddings": vocabulary, "embedding_dim": width}))
    positions = Layer("positional_embedding",
                      weight=initialise_shape("standard_normal", (steps, width), layer_rng(seed, 1)),
                      params=layer_options("positional_embedding", {"num_embeddings": steps, "embedding_dim": width}))
    layers = [embedding, positions]
    for _block in range(blocks):
        layers.append(attention_block(width, heads, steps, batch, seed, (len(layers),), causal=causal,
                                      bias_scale=bias_scale))
        layers.append(mlp_block(width, hidden, seed, (len(layers),)))
    layers.append(_layer_norm(width))
    head_index = len(layers)
    if tied:
        layers.append(_linear(width, vocabulary, seed, (head_index,), bias=False, tied_to="layers.0.weight",
                              tied_weight=embedding.weight.copy()))
    else:
        layers.append(_linear(width, vocabulary, seed, (head_index,), bias=False))
    return tuple(layers)


def _one_hot(ids: np.ndarray, classes: int) -> np.ndarray:
    return (np.arange(classes) == ids[..., None]).astype(np.float64)


def gpt_scenario(name: str, *, vocabulary: int | None = None, steps: int, width: int, heads: int, blocks: int,
                 batch: int, seed: int = GPT_SEED, dtype: str = "float64", optimizer: Optimizer | None = None,
                 title: str = "", bias_scale: float = 0.0) -> Scenario:
    """A GPT-style network on windows of the corpus: its characters (``vocabulary`` None) or its bytes
    (``vocabulary`` 256); targets the next token, one-hot."""
    ids = token_ids() if vocabulary is None else byte_ids()
    classes = len(VOCABULARY) if vocabulary is None else vocabulary
    x, following = windows(ids, batch, steps, np.random.default_rng([seed, 0xDA7A]))
    return Scenario(name=name, layers=gpt_layers(classes, steps, width, heads, blocks, batch, seed,
                                                 bias_scale=bias_scale),
                    loss=Loss("softmax_cross_entropy", "mean"), x=x.astype(np.float64),
                    y=_one_hot(following, classes), seed=seed, optimizer=optimizer,
                    source={"title": title or f"GPT-style network, {blocks} block(s), on the character corpus"}
                    ).astype(dtype)


def _suffix(dtype: str) -> str:
    return "f64" if dtype == "float64" else "f32"


# The built-in block: one block, E = 4, 2 heads, T = 4, batch 2 — small enough for finite differences.
GPT_BLOCK = {"steps": 4, "width": 4, "heads": 2, "blocks": 1, "batch": 2}


def gpt_block_scenarios() -> list[Scenario]:
    """The GPT-style block of the issue — layer_norm → causal attention → residual; layer_norm → linear →
    gelu → linear → residual — between a tied embedding and its output, in float64 and float32."""
    return [gpt_scenario(f"gpt-block-e4-h2-t4-{_suffix(dtype)}", dtype=dtype, **GPT_BLOCK,
                         title="a GPT-style block on the character corpus (tied embedding)")
            for dtype in ("float64", "float32")]


def gpt_trajectory_scenario(dtype: str = "float64", steps: int = GPT_TRAJECTORY_STEPS) -> Scenario:
    """A GPT-style block (E = 8, 2 heads, T = 8, batch 4) trained by AdamW — weight decay 0.1, decoupled, as
    GPT models are trained — with clip_grad_norm = 1, for ``steps`` updates on the whole batch.

    Decoupled: with L2 decay added to the gradient (``adam``'s ``weight_decay``), a parameter whose
    gradient is 0 in exact arithmetic — the key's bias, softmax being blind to a shift of a row's scores —
    is moved by λθ/ε ≫ θ each update, a map that amplifies rounding until the dtype cannot determine the
    trajectory (``scenarios.trajectories.dead_unit_scenario`` is that case on purpose). Decoupled, that
    bias only decays, and its update is each engine's rounding of a zero gradient divided by ε (~1e-12):
    the attention's biases start at N(0, 0.02²) rather than PyTorch's 0, so that their parameter floor
    (``reports.verification.tolerance``: rtol·(1 + t)·max|θ₀|) is not 0."""
    optimizer = Optimizer("adamw", 0.01, steps, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1,
                                                  "amsgrad": False}, clip_grad_norm=1.0)
    return gpt_scenario(f"trajectory-{optimizer.label()}-gpt-block-e8-h2-t8-{_suffix(dtype)}", steps=8, width=8,
                        heads=2, blocks=1, batch=4, dtype=dtype, optimizer=optimizer, bias_scale=0.02,
                        title=f"{steps} updates of {optimizer.label()} on a GPT-style block, character corpus")


def gpt_gradient_flow_scenarios() -> list[Scenario]:
    """The networks of the report's "attention" section (gradient through the skip path and the branch of
    every block): two and four GPT-style blocks of E = 8, 2 heads, T = 8 on a batch of 4 — float64; not
    among the report's scenarios, so that no scenario is run twice."""
    return [gpt_scenario(f"gpt-{blocks}blocks-e8-h2-t8-f64", steps=8, width=8, heads=2, blocks=blocks, batch=4,
                         title=f"{blocks} GPT-style blocks on the character corpus (tied embedding)")
            for blocks in (2, 4)]


# gpt-mini, the bench's transformer: vocabulary 256 (bytes), T = 64, E = 128, 4 heads, 2 blocks, batch 16.
GPT_MINI = {"vocabulary": 256, "steps": 64, "width": 128, "heads": 4, "blocks": 2, "batch": 16}


def gpt_mini_scenario(dtype: str = "float32") -> Scenario:
    """gpt-mini on the corpus's bytes: the network ``backprop-verify bench`` times (both engines, both dtypes)."""
    return gpt_scenario(f"gpt-mini-{_suffix(dtype)}", dtype=dtype, **GPT_MINI,
                        title="gpt-mini: vocabulary 256, T = 64, E = 128, 4 heads, 2 blocks, batch 16")


def gpt_mini_flops() -> int:
    """Matmul FLOPs of one training step of gpt-mini (forward, and twice that backward), for the bench."""
    n, t, e, v, blocks = GPT_MINI["batch"], GPT_MINI["steps"], GPT_MINI["width"], GPT_MINI["vocabulary"], \
        GPT_MINI["blocks"]
    per_block = 2 * n * t * (3 * e * e + e * e + 8 * e * e) + 4 * n * t * t * e
    return 3 * (blocks * per_block + 2 * n * t * e * v)


__all__ = ["GPT_BLOCK", "GPT_MINI", "GPT_SEED", "GPT_TRAJECTORY_STEPS", "attention_block", "gpt_block_scenarios",
           "gpt_gradient_flow_scenarios",
           "gpt_layers", "gpt_mini_flops", "gpt_mini_scenario", "gpt_scenario", "gpt_trajectory_scenario",
           "mlp_block"]
