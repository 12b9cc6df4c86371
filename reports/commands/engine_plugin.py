"""``pytest --bv-engine MODULE:ATTRIBUTE``: a user's engine through the report's scenario set, one item per scenario.

Registered through the ``pytest11`` entry point beside the worked-example plugin, and idle (torch not
imported) unless the option is given. The engine is loaded as ``backprop-verify report --engine`` loads it
(``manual.protocol.load_engine``; a spec that does not load is a usage error naming it, exit 4). Every
scenario of the report's set (``runner.engine_scenarios``: the random families drawn from what the engine
supports) is one item ``bv-engine::NAME``: it runs the engine, torch and, where they apply, finite
differences (``runner.verify``), and fails when a row of the pairs ``engine-torch`` or ``engine-fd``
fails, its message the failing rows one line each — address and element, both values, the tolerance, the
odd one out. A scenario the engine does not support is an item too, skipped with the reason ("not
applicable: engine 'toy' does not support layer:conv2d"): never dropped in silence.
"""
from __future__ import annotations

import pytest

OPTION = "--bv-engine"


def pytest_addoption(parser):
    group = parser.getgroup("backprop-verify", "backprop-verify discrepancy report")
    group.addoption(OPTION, dest="bv_engine", default=None, metavar="MODULE:ATTRIBUTE",
                    help="verify this engine (an Engine object, docs/engine.md) through every scenario of the "
                         "report: one test per scenario, the not-applicable ones skipped with the reason")


def pytest_configure(config):
    spec = config.getoption("bv_engine", None)
    if spec is None:
        return
    # Only now — an engine was asked for — are the protocol and (through the runner) torch imported.
    from backprop_verify.manual.protocol import EngineError, load_engine

    try:
        config._bv_engine = load_engine(spec)
    except EngineError as err:
        raise pytest.UsageError(f"{OPTION}: {err}") from None


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: they apply to these items too
def pytest_collection_modifyitems(session, config, items):
    engine = getattr(config, "_bv_engine", None)
    if engine is not None:
        items.extend(EngineScenarios.from_parent(session, name="bv-engine", engine=engine).collect())


class EngineScenarios(pytest.Collector):
    """The report's scenarios for one engine: an item per scenario, supported or not."""

    def __init__(self, *, engine, **kwargs):
        super().__init__(**kwargs)
        self.engine = engine

    def collect(self):
        from backprop_verify.reports.verification.runner import engine_scenarios

        run, not_applicable = engine_scenarios(self.engine)
        items = [EngineScenario.from_parent(self, name=scenario.name, scenario=scenario) for scenario in run]
        items += [NotApplicable.from_parent(self, name=name, reason=reason) for name, reason in not_applicable]
        return items


class EngineFailure(Exception):
    """The failing rows of one scenario, as lines."""


class EngineScenario(pytest.Item):
    def __init__(self, *, scenario, **kwargs):
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self):
        import pandas as pd

        from backprop_verify.reports.rendering.table import failure_lines
        from backprop_verify.reports.verification.runner import report_verification

        # The rows ``report --engine`` judges: steps past a trajectory's precision horizon are not_judged.
        verified = report_verification(self.scenario, engine=self.parent.engine)
        failing = verified.failures()
        if failing:
            lines = failure_lines(pd.DataFrame(failing))
            raise EngineFailure(f"engine {verified.engine!r} fails {len(failing)} address(es) of "
                                f"{self.scenario.name}:\n" + "\n".join(lines))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, EngineFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"bv-engine::{self.name}"


class NotApplicable(pytest.Item):
    def __init__(self, *, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        pytest.skip(f"not applicable: {self.reason}")

    def reportinfo(self):
        return self.path, None, f"bv-engine::{self.name}"
