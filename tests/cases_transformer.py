"""Transformer scenarios: the random transformer family (as many as the report checks), the GPT-style block.

Tags: "engines" on every scenario (manual against torch); "fd" on those finite differences judge in the
default run — the first ``TRANSFORMER_FD_COUNT`` applicable random ones by seed, and the float64 block.
"""
from pytest_cases import case, parametrize

from backprop_verify.reference.fd_oracle import fd_applicable
from backprop_verify.scenarios.generator import DEFAULT_RANDOM_TRANSFORMER_COUNT, DEFAULT_SEED, random_transformer_scenarios
from backprop_verify.scenarios.transformer import gpt_block_scenarios

TRANSFORMER_FD_COUNT = 12

RANDOM_TRANSFORMERS = random_transformer_scenarios(DEFAULT_RANDOM_TRANSFORMER_COUNT, DEFAULT_SEED)
GPT_BLOCKS = gpt_block_scenarios()
RANDOM_FD = [s for s in RANDOM_TRANSFORMERS if fd_applicable(s)][:TRANSFORMER_FD_COUNT]
GPT_FD = [s for s in GPT_BLOCKS if fd_applicable(s)]


def _ids(scenarios, prefix):
    return [s.name.removeprefix(prefix) for s in scenarios]


@case(tags=("engines",))
@parametrize("scenario", RANDOM_TRANSFORMERS, ids=_ids(RANDOM_TRANSFORMERS, "random-transformer-"))
def case_random_transformer(scenario):
    return scenario


@case(tags=("engines",))
@parametrize("scenario", GPT_BLOCKS, ids=_ids(GPT_BLOCKS, "gpt-block-"))
def case_gpt_block(scenario):
    return scenario


@case(tags=("fd",))
@parametrize("scenario", RANDOM_FD, ids=_ids(RANDOM_FD, "random-transformer-"))
def case_random_transformer_fd(scenario):
    return scenario


@case(tags=("fd",))
@parametrize("scenario", GPT_FD, ids=_ids(GPT_FD, "gpt-block-"))
def case_gpt_block_fd(scenario):
    return scenario
