"""Each engine runs once per scenario: manual.run(s), reference.run(s) and fd_oracle(s) of one scenario
are called once by ``report`` (its rows, the trajectory judgement, the difference maps of report.html's
sections, in one process and through the pytest plugin of ``--workers``) and by ``check``.

Counted with wrappers where the runner and its friends look the engines up (``manual.run``,
``reference.run``, ``runner.fd_oracle``, ``errata.fd_oracle``), per scenario object — the deliberate extra
reference runs are of *other* scenarios (the conditioning floor's rounding twin, the Richardson-refined
oracle, the precision horizon's float64 / one-ulp-away references) and are not counted against it.
"""
from collections import Counter

import numpy as np
import pytest

from backprop_verify import manual, reference
from backprop_verify.reports.cli import build_parser
from backprop_verify.reports.commands import check, report
from backprop_verify.reports.commands.pytest_plugin import COLLECTOR
from backprop_verify.reports.rendering import sections
from backprop_verify.reports.rendering.table import read_csv_text
from backprop_verify.reports.textbook import errata
from backprop_verify.reports.verification import runner
from backprop_verify.reports.verification.compare import FLOOR, NOT_JUDGED, step_of
from backprop_verify.reports.verification.detail import KeptMaps
from backprop_verify.scenarios.builtin import report_scenarios, worked_example_paths

TRAJECTORY = "trajectory-rmsprop-alpha0.9-eps1e-06-weight_decay0.01-momentum0.5-centered-s5016"  # fails, then a horizon
FLOOR_PASS = "activation-sigmoid-saturation-f64"
DETAIL = "seed004"
ONLY = f"^({TRAJECTORY}.*-f32|{FLOOR_PASS}|{DETAIL}.*)$"
OWN = str(next(p for p in worked_example_paths() if str(p).endswith("example_two_layer_sigmoid_mse.toml")))


@pytest.fixture
def runs(monkeypatch):
    """{engine: Counter of the scenario objects (by id) it ran}, and the objects themselves (kept alive)."""
    counts = {"manual": Counter(), "torch": Counter(), "fd": Counter()}
    seen = {}

    def counting(engine, function):
        def wrapper(scenario, *args, **kwargs):
            counts[engine][id(scenario)] += 1
            seen[id(scenario)] = scenario
            return function(scenario, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(manual, "run", counting("manual", manual.run))
    monkeypatch.setattr(reference, "run", counting("torch", reference.run))
    monkeypatch.setattr(runner, "fd_oracle", counting("fd", runner.fd_oracle))
    monkeypatch.setattr(errata, "fd_oracle", counting("fd", errata.fd_oracle))
    return counts, seen


def _scenarios():
    scenarios = report_scenarios(0, 0, ONLY, 0, 0)
    names = [s.name for s in scenarios]
    assert any(n.startswith(TRAJECTORY) for n in names) and FLOOR_PASS in names and any(
        n.startswith(DETAIL) for n in names), names
    return scenarios


def _once_each(counts, scenarios, engines=("manual", "torch")):
    for scenario in scenarios:
        for engine in engines:
            assert counts[engine][id(scenario)] == 1, (engine, scenario.name, counts[engine][id(scenario)])


def test_report_runs_each_engine_once_per_scenario_rows_horizon_and_sections(runs):
    counts, _ = runs
    scenarios = _scenarios()
    csv, maps = report.rows_in_process(scenarios, DETAIL)
    frame = read_csv_text(csv)
    # the trajectory failed and was judged again up to its horizon; the floor pass and --detail get sections
    trajectory = frame[frame["scenario"].str.startswith(TRAJECTORY)]
    assert (trajectory["status"] == NOT_JUDGED).any() and trajectory["address"].map(step_of).any()
    assert (frame.loc[frame["scenario"] == FLOOR_PASS, "status"] == FLOOR).any()
    built, _ = sections.build_sections(frame, {s.name: s for s in scenarios}, DETAIL, maps)
    assert {s.reason for s in built} >= {FLOOR, NOT_JUDGED, "detail"}
    assert all(s.heatmaps for s in built if s.reason != NOT_JUDGED)
    _once_each(counts, scenarios)
    fd = [s for s in scenarios if counts["fd"][id(s)]]
    assert fd and all(counts["fd"][id(s)] == 1 for s in fd)


def test_the_maps_a_worker_ships_are_the_ones_the_report_process_keeps(runs, tmp_path):
    """``--workers``: the maps come from the worker's traces (payload → controller → file → report)."""
    counts, _ = runs
    scenarios = _scenarios()
    kept = KeptMaps(sections.MAX_SECTIONS)
    for scenario in scenarios:
        sections.keep_maps(kept, runner.report_verification(scenario), DETAIL)
    _once_each(counts, scenarios)
    controller = KeptMaps(sections.MAX_SECTIONS)
    controller.merge_payload(kept.payload())
    controller.save(tmp_path / "maps.npz")
    shipped = KeptMaps.load(tmp_path / "maps.npz", sections.MAX_SECTIONS).maps()
    _, here = report.rows_in_process(scenarios, DETAIL)
    assert shipped.keys() == here.keys() and shipped
    for name, maps in here.items():
        assert shipped[name].keys() == maps.keys()
        for key, (array, reference_max) in maps.items():
            assert np.array_equal(shipped[name][key][0], array) and shipped[name][key][1] == reference_max


def test_kept_maps_stay_bounded_and_keep_the_first_sections(runs):
    kept = KeptMaps(2)
    for name, group in (("d", 3), ("c", 0), ("b", 1), ("a", 3)):
        if kept.wants(name, (group, name)):
            kept.keep(name, (group, name), {})
    assert sorted(kept.maps()) == ["b", "c"]


def test_the_pytest_front_end_keeps_maps_from_the_verified_traces(runs, pytester):
    """``report --workers``' suite, in one process: the collector keeps the section maps it is offered."""
    counts, seen = runs
    pytester.makepyfile(test_suite="from backprop_verify.reports.commands.report_suite import test_scenario\n")
    result = pytester.runpytest_inprocess(
        "-p", "backprop_verify.reports.commands.pytest_plugin", "-p", "no:cacheprovider", "-q",
        "--report-only", f"^{FLOOR_PASS}$", "--report-random", "0", "--report-random-conv", "0",
        "--report-random-recurrent", "0", "--report-dir", str(pytester.path),
        "--report-maps", str(pytester.path / "maps.npz"))
    result.assert_outcomes(passed=1)
    maps = KeptMaps.load(pytester.path / "maps.npz", sections.MAX_SECTIONS).maps()
    assert list(maps) == [FLOOR_PASS] and maps[FLOOR_PASS]
    verified = [s for s in seen.values() if s.name == FLOOR_PASS and counts["manual"][id(s)]]
    assert verified and all(counts["manual"][id(s)] == 1 and counts["torch"][id(s)] == 1 for s in verified)


def test_check_runs_each_engine_once_per_example_even_where_they_disagree(runs, monkeypatch, tmp_path, capsys):
    counts, seen = runs
    honest = manual.run  # the counting wrapper: each call of planted counts once

    def planted(scenario):  # a wrong gradient: the engines disagree, check prints every failing address
        trace = honest(scenario)
        trace["layers.2.weight.grad"] = np.array(trace["layers.2.weight.grad"], copy=True)
        trace["layers.2.weight.grad"][1, 1] += 1e-3
        return trace

    monkeypatch.setattr(manual, "run", planted)
    assert check.main(build_parser().parse_args(["check", OWN, "--out", str(tmp_path)])) == 1
    assert " manual-torch layers.2.weight.grad[1,1]: manual " in capsys.readouterr().out
    examples = [s for s in seen.values() if s.name == "example-two_layer_sigmoid_mse"]
    assert len({id(s) for s in examples}) == 1, "one scenario object per example"
    (example,) = examples
    assert counts["manual"][id(example)] == 1 and counts["torch"][id(example)] == 1
    assert counts["fd"][id(example)] <= 1  # the referee of the disagreement, once


def test_the_collector_is_registered_under_its_name(pytestconfig):
    assert pytestconfig.pluginmanager.get_plugin(COLLECTOR) is not None


def test_check_judges_draw_0_of_the_claims_on_the_example_s_own_traces(runs, tmp_path):
    """An example with [[claim]]s and no optimizer: its claims' draw 0 is the file's own data, the same
    computation as the example's check — both engines run on it once, not once more for the claims."""
    counts, seen = runs
    path = str(next(p for p in worked_example_paths() if str(p).endswith("seed003_learning_guesses.toml")))
    assert check.main(build_parser().parse_args(["check", path, "--out", str(tmp_path), "--quiet"])) in (0, 1)
    (example,) = [s for s in seen.values() if s.name.startswith("seed003") and s.claims]
    on_the_file_s_data = [s for s in seen.values()
                          if np.array_equal(s.x, example.x) and np.array_equal(s.y, example.y)]
    for engine in ("manual", "torch"):
        assert sum(counts[engine][id(s)] for s in on_the_file_s_data) == 1, engine
    assert sum(counts["manual"].values()) > 1  # the claims' random draws did run


def test_a_difference_map_takes_a_scalar_address():
    """The loss is a 0-d address; its map is a 0-d array (a section may show the loss as its worst row)."""
    from backprop_verify.reports.verification.detail import difference_map
    from backprop_verify.scenarios.trace import Trace

    a, b = Trace("manual", {"loss": np.array(1.5)}), Trace("torch", {"loss": np.array(1.25)})
    difference, largest = difference_map(a, b, "loss")
    assert difference.shape == () and float(difference) == 0.25 and largest == 1.25
    nan = Trace("manual", {"loss": np.array(np.nan)})
    assert float(difference_map(nan, b, "loss")[0]) == np.inf
