"""The report's "attention" section: gradient flow through the GPT-style networks' residual blocks.

Per residual block of the GPT-style networks: the gradient that reaches the block's input along the skip
path, δ = ∂L/∂a (``layers.{i}.output.grad``), against the one that comes back through the branch,
(∂f/∂x)ᵀ δ (``layers.{i}.branch.grad``) — their Frobenius norms by each engine, and whether the engines
agree at both addresses (the tolerance policy, manual-torch). ``build_report`` computes it beside the
vanishing and recurrent gradients; rendering only formats it.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from backprop_verify import manual, reference
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.transformer import gpt_gradient_flow_scenarios


ATTENTION_COLUMNS = ["scenario", "block", "branch", "skip_manual", "skip_torch", "branch_manual", "branch_torch",
                     "branch_over_skip", "engines_agree"]


def _branch_kind(layer) -> str:
    kinds = [inner.type for inner in layer.layers]
    if "multihead_attention" in kinds:
        return "attention"
    return "mlp" if "linear" in kinds else "+".join(kinds)


def attention_table() -> pd.DataFrame:
    """``ATTENTION_COLUMNS``, one row per residual block of the GPT-style networks of
    ``scenarios.transformer.gpt_gradient_flow_scenarios``, from one run of each engine per scenario.
    Deterministic, so computed once per process; each caller gets a copy."""
    return _default_attention_table().copy()


@functools.lru_cache(maxsize=1)
def _default_attention_table() -> pd.DataFrame:
    return _attention_table(gpt_gradient_flow_scenarios())


def _attention_table(scenarios: list[Scenario]) -> pd.DataFrame:
    records = []
    for scenario in scenarios:
        traces = {"manual": manual.run(scenario), "torch": reference.run(scenario)}
        blocks = [(f"layers.{i}", layer) for i, layer in enumerate(scenario.layers) if layer.type == "residual"]
        wanted = [f"{path}.{what}" for path, _layer in blocks for what in ("output.grad", "branch.grad")]
        verdicts = {row.address: row.passed for row in compare(traces["manual"], traces["torch"], scenario.dtype,
                                                               "manual-torch", wanted)}
        for path, layer in blocks:
            norm = {(what, engine): float(np.linalg.norm(np.asarray(trace[f"{path}.{what}"], np.float64)))
                    for engine, trace in traces.items() for what in ("output.grad", "branch.grad")}
            records.append({
                "scenario": scenario.name, "block": path, "branch": _branch_kind(layer),
                "skip_manual": norm["output.grad", "manual"], "skip_torch": norm["output.grad", "torch"],
                "branch_manual": norm["branch.grad", "manual"], "branch_torch": norm["branch.grad", "torch"],
                "branch_over_skip": norm["branch.grad", "torch"] / norm["output.grad", "torch"],
                "engines_agree": "yes" if verdicts[f"{path}.output.grad"] and verdicts[f"{path}.branch.grad"] else "NO",
            })
    return pd.DataFrame(records, columns=ATTENTION_COLUMNS)
