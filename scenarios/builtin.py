"""The built-in scenario set: component cases, worked examples, random nets."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from scenarios.components import component_scenarios
from scenarios.generator import DEFAULT_SEED, random_scenarios
from scenarios.loader import load_scenario
from scenarios.model import Scenario


def worked_example_paths() -> list[Path]:
    folder = resources.files("scenarios.worked_examples")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml"))


def worked_examples() -> list[Scenario]:
    return [load_scenario(p) for p in worked_example_paths()]


def builtin_scenarios(random_count: int = 300, seed: int = DEFAULT_SEED) -> list[Scenario]:
    return component_scenarios() + worked_examples() + random_scenarios(random_count, seed)
