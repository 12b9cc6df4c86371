"""The built-in scenario set: component cases, worked examples, random nets, trajectories."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from backprop_verify.scenarios.catalog import DTYPES
from backprop_verify.scenarios.components import component_scenarios
from backprop_verify.scenarios.generator import (DEFAULT_RANDOM_CONV_COUNT, DEFAULT_RANDOM_COUNT, DEFAULT_RANDOM_RECURRENT_COUNT,
                                 DEFAULT_RANDOM_TRANSFORMER_COUNT, DEFAULT_SEED, NotDrawable, random_conv_scenarios,
                                 random_recurrent_scenarios, random_scenarios, random_transformer_scenarios)
from backprop_verify.scenarios.layer_grids import all_layer_scenarios
from backprop_verify.scenarios.loader import load_scenario
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trajectories import (clipped_trajectory_scenarios, dead_unit_scenario, layer_trajectory_scenarios,
                                   trajectory_scenarios)
from backprop_verify.scenarios.transformer import gpt_block_scenarios, gpt_trajectory_scenario


def worked_example_paths() -> list[Path]:
    folder = resources.files("backprop_verify.scenarios.worked_examples")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml"))


def worked_examples() -> list[Scenario]:
    return [load_scenario(p) for p in worked_example_paths()]


def builtin_scenarios(random_count: int = DEFAULT_RANDOM_COUNT, seed: int = DEFAULT_SEED,
                      conv_count: int = DEFAULT_RANDOM_CONV_COUNT,
                      recurrent_count: int = DEFAULT_RANDOM_RECURRENT_COUNT,
                      transformer_count: int = DEFAULT_RANDOM_TRANSFORMER_COUNT,
                      allowed: frozenset[str] | None = None) -> list[Scenario]:
    """Component scenarios (activations, losses, then the layers), the worked
    examples, ``random_count`` random dense nets, ``conv_count`` random
    convolutional, ``recurrent_count`` random recurrent and ``transformer_count``
    random transformer nets from ``seed``, then the GPT-style block
    (``scenarios.transformer``). ``allowed``: the components the random nets may
    draw from (an engine's, ``manual.protocol``); a family that cannot be drawn
    from them is drawn as usual (its nets then are not applicable to that engine)."""
    def family(draw, count: int) -> list[Scenario]:
        try:
            return draw(count, seed, allowed=allowed)
        except NotDrawable:
            return draw(count, seed)

    return (component_scenarios() + all_layer_scenarios() + worked_examples() + family(random_scenarios, random_count)
            + family(random_conv_scenarios, conv_count) + family(random_recurrent_scenarios, recurrent_count)
            + family(random_transformer_scenarios, transformer_count) + gpt_block_scenarios())


def report_scenarios(random_count: int = DEFAULT_RANDOM_COUNT, seed: int = DEFAULT_SEED,
                     only: str | None = None, conv_count: int = DEFAULT_RANDOM_CONV_COUNT,
                     recurrent_count: int = DEFAULT_RANDOM_RECURRENT_COUNT,
                     transformer_count: int = DEFAULT_RANDOM_TRANSFORMER_COUNT,
                     allowed: frozenset[str] | None = None) -> list[Scenario]:
    """The report's scenario set, in order: ``builtin_scenarios(random_count, seed, conv_count, recurrent_count,
    transformer_count, allowed)``,
    then the optimizer trajectories (every variant in float64, then in float32,
    then the dead-unit case in each dtype, then the trajectories through
    convolution and normalisation layers, the clipped RNN, the GPT-style block's
    AdamW trajectory in float64) whose names are not taken yet; with
    ``only``, just the scenarios whose name matches it (``re.search``)."""
    scenarios = list(builtin_scenarios(random_count, seed, conv_count, recurrent_count, transformer_count, allowed))
    trajectories = [s for dtype in DTYPES for s in trajectory_scenarios(dtype)]
    trajectories += [dead_unit_scenario(dtype) for dtype in DTYPES]
    trajectories += [s for dtype in DTYPES for s in layer_trajectory_scenarios(dtype)]
    trajectories += clipped_trajectory_scenarios("float64")
    trajectories.append(gpt_trajectory_scenario("float64"))
    names = {s.name for s in scenarios}
    for scenario in trajectories:
        if scenario.name not in names:
            scenarios.append(scenario)
            names.add(scenario.name)
    if only:
        pattern = re.compile(only)
        scenarios = [s for s in scenarios if pattern.search(s.name)]
    return scenarios
