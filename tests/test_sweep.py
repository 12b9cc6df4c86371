"""The seed sweep: the four random families over base seeds nobody chose (docs/sweep.md).

Only with ``pytest -m sweep`` (the ini's ``-m "not sweep"`` leaves it out).
One item is one random family at one base seed S: the family's default count
of scenarios, seeds S, S+1, …, exactly the ones ``backprop-verify report --seed
S --only '^random'`` verifies. The base seeds are drawn from the run's sweep
seed (``tests/conftest.py``: fresh each run unless ``--sweep-seed N``), and
``--sweep-seeds K`` sets how many; every family uses the same K base seeds, so
one base seed is one ``report --seed S`` of all four families. An item fails
on any row whose status is ``fail``, listing the rows and the commands that
reproduce them.
"""
import bisect
import hashlib
import shlex

import pytest

from backprop_verify.reports.commands.options import MAX_SEED
from backprop_verify.reports.verification.runner import report_rows
from backprop_verify.scenarios.generator import (DEFAULT_RANDOM_CONV_COUNT, DEFAULT_RANDOM_COUNT, DEFAULT_RANDOM_RECURRENT_COUNT,
                                 DEFAULT_RANDOM_TRANSFORMER_COUNT, random_conv_scenarios, random_recurrent_scenarios,
                                 random_scenarios, random_transformer_scenarios)

# family -> (scenario name prefix, generator, the report's default count, the report option that counts it)
FAMILIES = {
    "dense": ("random-s", random_scenarios, DEFAULT_RANDOM_COUNT, "--random"),
    "conv": ("random-conv-s", random_conv_scenarios, DEFAULT_RANDOM_CONV_COUNT, "--random-conv"),
    "recurrent": ("random-recurrent-s", random_recurrent_scenarios, DEFAULT_RANDOM_RECURRENT_COUNT,
                  "--random-recurrent"),
    "transformer": ("random-transformer-s", random_transformer_scenarios, DEFAULT_RANDOM_TRANSFORMER_COUNT,
                    "--random-transformer"),
}
# The scenario seeds one base seed covers in the widest family: base seeds are at least this far apart.
SPAN = max(count for _prefix, _generate, count, _option in FAMILIES.values())
# A failure message lists at most this many rows (every failing scenario is still named).
MAX_LISTED_ROWS = 200
# The fields a failing row is listed with (``triage``, which side is the odd one out, where the rows have it).
ROW_FIELDS = ("worst_index", "value", "reference_value", "max_rel", "tolerance", "note", "triage")


def base_seeds(sweep_seed: int, count: int) -> list[int]:
    """``count`` base seeds drawn from ``sweep_seed``: each from SHA-256 (the same
    on every host and library version, so every xdist worker draws the same),
    in 0 .. MAX_SEED - SPAN + 1 (so ``report --seed`` takes every seed an item
    covers), and any two at least SPAN apart (no scenario seed covered twice in
    a family; 63-bit draws are in practice some 2**60 apart)."""
    seeds: list[int] = []
    ordered: list[int] = []  # the same seeds, sorted: a new one is compared with its two neighbours
    draw = 0
    while len(seeds) < count:
        digest = hashlib.sha256(f"backprop-verify sweep {sweep_seed} {draw}".encode()).digest()
        draw += 1
        seed = int.from_bytes(digest[:8], "big") % (MAX_SEED - SPAN + 2)
        place = bisect.bisect(ordered, seed)
        if all(abs(seed - other) >= SPAN for other in ordered[max(place - 1, 0):place + 1]):
            seeds.append(seed)
            ordered.insert(place, seed)
    return seeds


def pytest_generate_tests(metafunc):
    if "family" in metafunc.fixturenames:
        config = metafunc.config
        pairs = [(family, seed) for seed in base_seeds(config.option.sweep_seed, config.option.sweep_seeds)
                 for family in FAMILIES]
        metafunc.parametrize(("family", "base_seed"), pairs,
                             ids=[f"{FAMILIES[family][0]}{seed}" for family, seed in pairs])


def report_command(family: str, seed: int, count: int) -> str:
    """``backprop-verify report`` of ``count`` scenarios of ``family`` from ``seed``, nothing else random."""
    counts = [word for name, (_prefix, _generate, _count, option) in FAMILIES.items()
              for word in (option, str(count if name == family else 0))]
    words = ["backprop-verify", "report", "--seed", str(seed), *counts, "--only", "^random",
             "--out", f"reports/out/sweep-{seed}"]
    return " ".join(shlex.quote(word) for word in words)


def failure_message(sweep_seed: int, nodeid: str, family: str, base_seed: int, count: int,
                    failing: list[dict], crashed: dict[str, str], seeds: dict[str, int]) -> str:
    """Every failing scenario with the command that reproduces it alone, and
    under it its failing rows (at most MAX_LISTED_ROWS in all) or its crash."""
    names = sorted({row["scenario"] for row in failing} | set(crashed), key=seeds.__getitem__)
    lines = [f"sweep seed {sweep_seed}, {family} family, base seed {base_seed}: {len(failing)} failing "
             f"row{'s' * (len(failing) != 1)} in {len(names)} of {count} scenarios"
             + (f" ({len(crashed)} crashed)" if crashed else ""),
             f"this item: pytest -m sweep --sweep-seed {sweep_seed} {shlex.quote(nodeid)}",
             f"all {count}: {report_command(family, base_seed, count)}"]
    listed = 0
    for name in names:
        lines.append(f"{name}  (reproduce: {report_command(family, seeds[name], 1)})")
        if name in crashed:
            lines.append(f"    crashed: {crashed[name]}")
        for row in (row for row in failing if row["scenario"] == name):
            if listed < MAX_LISTED_ROWS:
                lines.append(f"    {row['pair']} {row['address']}: "
                             + ", ".join(f"{field}={row[field]!r}" for field in ROW_FIELDS if field in row))
            listed += 1
    if listed > MAX_LISTED_ROWS:
        lines.append(f"… {listed - MAX_LISTED_ROWS} more failing rows not listed (the commands above give them all)")
    return "\n".join(lines)


@pytest.mark.sweep
def test_random_family(family, base_seed, request, record_property):
    """Every row of every scenario of ``family`` from ``base_seed`` passes (or is floor / not judged)."""
    _prefix, generate, count, _option = FAMILIES[family]
    scenarios = generate(count, base_seed)
    failing: list[dict] = []
    crashed: dict[str, str] = {}
    for scenario in scenarios:
        try:
            rows = report_rows(scenario)
        except Exception as error:  # one scenario's crash must not hide the other scenarios' rows
            crashed[scenario.name] = f"{type(error).__name__}: {error}"
            continue
        failing += [row for row in rows if row["status"] == "fail"]
    failing_scenarios = {row["scenario"] for row in failing} | set(crashed)
    record_property("sweep_scenarios", len(scenarios))
    record_property("sweep_failing_rows", len(failing))
    record_property("sweep_failing_scenarios", len(failing_scenarios))
    if failing or crashed:
        seeds = {scenario.name: scenario.seed for scenario in scenarios}
        pytest.fail(failure_message(request.config.option.sweep_seed, request.node.nodeid, family, base_seed,
                                    count, failing, crashed, seeds), pytrace=False)


@pytest.mark.parametrize("family_name", FAMILIES)
def test_each_family_is_counted_by_its_report_option(family_name):
    """``report_command``'s options are the report's: with OPTION 2 and the others 0, the report's
    scenario set holds exactly two random networks, both of ``family``, and its reproduce line names OPTION 2.
    (Catches a report option that is parsed but not passed on to the scenario set.)"""
    from backprop_verify.reports.cli import build_parser
    from backprop_verify.reports.commands.report import reproduce_command, selected_scenarios

    prefix, _generate, _count, option = FAMILIES[family_name]
    words = shlex.split(report_command(family_name, 7, 2))[1:]
    args = build_parser(["report"]).parse_args(words)
    scenarios = selected_scenarios(args)
    assert [s.name.startswith(prefix) for s in scenarios] == [True, True]
    assert [s.seed for s in scenarios] == [7, 8]
    assert f" {option} 2" in reproduce_command(args)
