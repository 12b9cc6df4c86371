"""``backprop-verify report --engine MODULE:ATTRIBUTE`` (docs/engine.md, docs/report.md), run in-process
through ``reports.cli.main`` on a copy of the docs' toy engine.

The injected bug is the toy's own: its bias gradient averages δ over the batch
(``delta.mean(axis=0)``) instead of summing it. The run must fail at
``bias.grad`` on the engine's pairs, exit 1, list what the toy does not support
and shrink the failing random network to a file the loader reads; the same copy
with the sum must exit 0. A cap of 0 shrunk networks (a monkeypatch) must show in
summary.md and leave no file; a spec that does not load and ``--workers 2`` are
refused with exit 2 and nothing written.
"""
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from backprop_verify.reports.cli import main
from backprop_verify.reports.commands import engine_report
from backprop_verify.scenarios import load_scenario

TOY = Path(__file__).resolve().parent.parent / "docs" / "examples" / "engine" / "toy_engine"
SPEC = "toy_engine.adapter:engine"
# Two linear-layer grid cases and one random dense network: each fails with the toy's bug on a batch > 1;
# tanh is not in the toy's registry: not applicable.
ONLY = "layer-linear-plain|random-s6-|activation-tanh-smooth-f64"
FAILING_RANDOM = "random-s6-depth3-sigmoid-mse-half_mean-f64"


def _forget_toy():
    for name in [m for m in sys.modules if m == "toy_engine" or m.startswith("toy_engine.")]:
        del sys.modules[name]


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A copy of the toy engine in ``tmp_path/engine``, the current folder; returns its layers.py."""
    folder = tmp_path / "engine"
    shutil.copytree(TOY, folder / "toy_engine", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    _forget_toy()
    yield folder / "toy_engine" / "layers.py"
    _forget_toy()


def _report(out, *extra):
    return main(["report", "--engine", SPEC, "--only", ONLY, "--out", str(out), *extra])


def test_the_toy_engine_fails_at_the_bias_gradient_and_is_shrunk(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert _report(out) == 1
    printed = capsys.readouterr().out
    assert "engine 'toy': 3 scenarios," in printed and "1 not applicable; report in" in printed

    with open(out / "discrepancies.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    failing = {(row["scenario"], row["pair"], row["address"]) for row in rows if row["status"] == "fail"}
    assert ("layer-linear-plain-f64", "engine-torch", "layers.0.bias.grad") in failing
    assert (FAILING_RANDOM, "engine-torch", "layers.0.bias.grad") in failing
    assert all(address.endswith("bias.grad") for _scenario, _pair, address in failing)
    assert {row["pair"] for row in rows} <= {"engine-torch", "engine-fd", "torch-fd"}

    summary = (out / "summary.md").read_text()
    assert "engine 'toy'" in summary and "`toy_engine.adapter:engine`" in summary
    not_applicable = summary.split("## Not applicable", 1)[1]
    assert "activation-tanh-smooth-f64" in not_applicable and "does not support activation:tanh" in not_applicable
    with open(out / "not_applicable.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["scenario", "reason"],
                                           ["activation-tanh-smooth-f64",
                                            "engine 'toy' does not support activation:tanh"]]

    shrunk = out / "shrunk" / f"{FAILING_RANDOM}-shrunk.toml"
    assert f"shrunk to {shrunk}" in printed
    scenario = load_scenario(shrunk)
    assert scenario.name == f"{FAILING_RANDOM}-shrunk" and scenario.source["shrunk_from"] == FAILING_RANDOM
    original_layers = {int(row["address"].split(".")[1]) for row in rows
                       if row["scenario"] == FAILING_RANDOM and row["address"].startswith("layers.")}
    assert len(scenario.layers) < len(original_layers)  # smaller than the network that failed

    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["runs"][-1]
    assert set(run["files"]) == {"discrepancies.csv", "summary.md", "not_applicable.csv"}
    assert run["engine"] == "toy" and run["shrunk"] == [f"shrunk/{FAILING_RANDOM}-shrunk.toml"]


def test_the_fixed_toy_engine_passes(toy, tmp_path, capsys):
    source = toy.read_text()
    assert "self.bias_grad = delta.mean(axis=0)" in source
    toy.write_text(source.replace("self.bias_grad = delta.mean(axis=0)", "self.bias_grad = delta.sum(axis=0)"))
    out = tmp_path / "out"
    assert _report(out, "--quiet") == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith("engine 'toy': 3 scenarios,")
    assert ", 0 failures, 1 not applicable" in printed
    assert not (out / "shrunk").exists()
    assert "None: no random network failed." in (out / "summary.md").read_text()


def test_the_shrink_cap_is_reported(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_report, "MAX_SHRUNK", 0)
    out = tmp_path / "out"
    assert _report(out, "--quiet") == 1
    assert not (out / "shrunk").exists()
    summary = (out / "summary.md").read_text()
    assert f"`{FAILING_RANDOM}`: not shrunk (beyond the first 0 failing random networks" in summary


@pytest.mark.parametrize(("extra", "expected"), [
    (["--engine", "toy_engine.adapter"], "backprop-verify report: --engine: engine 'toy_engine.adapter': expected "
                                         "MODULE:ATTRIBUTE"),
    (["--engine", "toy_engine.adapter:nothing"], "backprop-verify report: --engine: engine "
                                                 "'toy_engine.adapter:nothing': module 'toy_engine.adapter' has no "
                                                 "attribute 'nothing'"),
    (["--engine", "no_such_module_h7:engine"], "backprop-verify report: --engine: engine 'no_such_module_h7:engine': "
                                               "cannot import module"),
    (["--engine", SPEC, "--workers", "2"], "backprop-verify report: --workers: 2 with --engine; expected 1"),
])
def test_a_bad_engine_run_is_refused_and_writes_nothing(toy, tmp_path, capsys, extra, expected):
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), "--only", ONLY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "Traceback" not in err
    assert not out.exists()
