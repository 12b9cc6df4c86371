"""``pytest --bv-engine MODULE:ATTRIBUTE``: the toy engine of docs/engine.md through the report's scenarios, in a
fresh pytest run of its own (subprocess): its planted bug fails the items that reach it, with the failing rows
as the message; its fix passes them; what it cannot run is skipped with the reason; a bad spec stops the run."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOY = Path(__file__).resolve().parent.parent / "docs" / "examples" / "engine" / "toy_engine"
BUG = "self.bias_grad = delta.mean(axis=0)"


def _run(tmp_path: Path, *arguments: str, fixed: bool = False) -> subprocess.CompletedProcess:
    package = tmp_path / "toy_engine"
    if not package.exists():
        shutil.copytree(TOY, package, ignore=shutil.ignore_patterns("__pycache__"))
    layers = package / "layers.py"
    text = layers.read_text(encoding="utf-8")
    assert BUG in text or "delta.sum(axis=0)" in text, "the toy engine's planted bug moved: update this test"
    layers.write_text(text.replace(BUG, "self.bias_grad = delta.sum(axis=0)") if fixed else text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *arguments],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_the_planted_bug_fails_its_scenarios_with_the_rows_as_the_message(tmp_path):
    done = _run(tmp_path, "--bv-engine", "toy_engine.adapter:engine", "-k", "layer-linear-plain-f64")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "engine 'toy' fails" in done.stdout
    assert "engine-torch layers.0.bias.grad[0]: engine 0.2916744141093" in done.stdout
    assert "Traceback" not in done.stdout


def test_the_fixed_engine_passes_and_what_it_cannot_run_is_skipped_with_the_reason(tmp_path):
    done = _run(tmp_path, "--bv-engine", "toy_engine.adapter:engine", "-k", "layer-linear-plain or layer-conv2d-k3",
                fixed=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout and "skipped" in done.stdout
    assert "not applicable: engine 'toy' does not support layer:conv2d" in done.stdout


@pytest.mark.parametrize("spec, words", [("toy_engine.adapter:nothing", "has no attribute 'nothing'"),
                                         ("no_such_package:engine", "no_such_package")])
def test_a_spec_that_does_not_load_stops_the_run(tmp_path, spec, words):
    done = _run(tmp_path, "--bv-engine", spec)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "--bv-engine:" in done.stderr and words in done.stderr and "Traceback" not in done.stderr


def test_without_the_option_nothing_is_collected(tmp_path):
    (tmp_path / "test_own.py").write_text("def test_own():\n    assert True\n", encoding="utf-8")
    done = _run(tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
