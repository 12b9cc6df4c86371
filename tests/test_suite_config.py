"""The suite's own configuration (tests/conftest.py): ``-n`` runs under xdist's ``worksteal`` schedule unless
the run names a schedule itself."""
from __future__ import annotations

import types

import pytest

from tests.conftest import dist_given


def _config(*args: str):
    return types.SimpleNamespace(invocation_params=types.SimpleNamespace(args=args))


@pytest.mark.parametrize("args, given", [
    (("-n", "2"), False),
    (("-n", "2", "-q", "tests/test_digits.py"), False),
    (("-n", "2", "--dist", "load"), True),
    (("-n", "2", "--dist=loadfile"), True),
    (("-n", "2", "-d"), True),
    (("-n", "2", "--distribute-nothing"), False),
])
def test_a_schedule_named_in_the_arguments_is_kept(monkeypatch, args, given):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    assert dist_given(_config(*args)) is given


def test_a_schedule_named_in_pytest_addopts_is_kept(monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", "-q --dist=loadscope")
    assert dist_given(_config("-n", "2"))


def test_this_run_schedules_by_work_stealing_unless_told_otherwise(request):
    """Under ``pytest -n 2`` (the README's command) the controller chose ``worksteal`` (it tells its workers,
    ``pytest_configure_node``)."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        pytest.skip("not run under xdist")
    assert workerinput["schedule"] == "worksteal" or dist_given(request.config)
