"""Installed, the distribution adds exactly one import name, ``backprop_verify``.

The wheel is built (non-editable) and installed into a fresh virtual environment
beside a user project that has packages of its own named ``reports`` and
``manual`` — common names that this project's folders also have. There the
command line, the pytest plugin and ``check_layer`` must all work, and the
user's ``reports`` must stay the user's.

The fresh environment borrows this one's third-party packages (numpy, torch, …)
through a ``.pth`` line, so nothing is downloaded; the project itself comes only
from the wheel.
"""
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "scenarios" / "worked_examples" / "example_two_layer_sigmoid_mse.toml"

pytestmark = pytest.mark.subprocess


def _run(command, cwd, env=None):
    """``command`` without this process's PYTHONPATH & co. (a PYTHONPATH naming this checkout would show
    pip an installed backprop-verify, and the fresh environment this checkout's code)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, the wheel's top-level names)."""
    scratch = tmp_path_factory.mktemp("install")
    wheels = scratch / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                  "--wheel-dir", str(wheels), str(ROOT)], cwd=scratch)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("backprop_verify-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    venv = scratch / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=scratch)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=scratch).stdout.strip())
    # This environment's third-party packages, behind the fresh one's own (a .pth line adds a folder
    # to sys.path without running the .pth files in it: this checkout's editable hook stays out).
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    put = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                "--quiet", str(wheel)], cwd=scratch)
    assert put.returncode == 0, put.stderr[-3000:]
    return python, tops


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """A user's repository with packages named ``reports`` and ``manual``, and a book of worked examples."""
    project = tmp_path_factory.mktemp("user-project")
    for package in ("reports", "manual"):
        (project / package).mkdir()
        (project / package / "__init__.py").write_text(f"OWNER = 'the user'  # the user's own {package}\n")
    (project / "book").mkdir()
    (project / "book" / "chapter.toml").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    (project / "pytest.ini").write_text("[pytest]\nbackprop_verify_examples = book/*.toml\n")
    (project / "test_mine.py").write_text(textwrap.dedent("""\
        import manual
        import reports


        def test_my_packages_are_mine():
            assert reports.OWNER == manual.OWNER == "the user"
        """))
    return project


def _env(python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_installs_one_import_name(installed):
    _python, tops = installed
    assert tops == {"backprop_verify"}


def test_check_runs_beside_a_users_own_reports_package(installed, user_project):
    python, _ = installed
    result = _run([str(python.parent / "backprop-verify"), "check", "book/chapter.toml", "--out",
                   str(user_project / "out")], cwd=user_project, env=_env(python))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "match" in result.stdout


def test_the_pytest_plugin_and_the_users_tests_share_one_run(installed, user_project):
    python, _ = installed
    result = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"], cwd=user_project,
                  env=_env(python))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED test_mine.py::test_my_packages_are_mine" in result.stdout
    assert "book/chapter.toml::" in result.stdout  # the worked example's printed numbers, one item each


def test_check_layer_imports_from_backprop_verify(installed, user_project):
    python, _ = installed
    script = textwrap.dedent("""\
        import numpy as np
        import torch

        import reports
        from backprop_verify import check_layer

        class Tanh:
            def forward(self, x):
                self.a = np.tanh(x)
                return self.a

            def backward(self, delta):
                return delta * (1.0 - self.a ** 2)

        result = check_layer(Tanh(), torch.tanh, inputs=[(3, 4)])
        assert reports.OWNER == "the user"
        import backprop_verify.reports.layer_check as ours
        assert ours.__file__.startswith(%r), ours.__file__
        print("ok", len(list(result)))
        """) % str(python.parent.parent)
    result = _run([str(python), "-c", script], cwd=user_project, env=_env(python))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("ok")
