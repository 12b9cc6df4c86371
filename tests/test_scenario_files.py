"""Scenario files: the good one loads; every broken one names file and field."""
import os
from pathlib import Path

import numpy as np
import pytest
from pytest_cases import parametrize_with_cases

from backprop_verify.scenarios import ScenarioError, load_scenario
from backprop_verify.scenarios.loader import Limits
from tests.cases_bad_files import GOOD
from tests.helpers import assert_file_rejected


def test_good_file_loads(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    scenario = load_scenario(path)
    assert [l.type for l in scenario.layers] == ["linear", "sigmoid"]
    np.testing.assert_array_equal(scenario.layers[0].weight, [[0.1, 0.2], [0.3, 0.4]])
    assert scenario.loss.reduction == "half_sum" and scenario.optimizer.learning_rate == 0.01


@parametrize_with_cases("text,field,expected", cases="tests.cases_bad_files")
def test_bad_file_is_rejected_with_file_and_field(tmp_path, text, field, expected):
    assert_file_rejected(tmp_path, text, field, expected)


@parametrize_with_cases("content,field,expected", cases="tests.cases_hostile_files")
def test_hostile_file_is_refused_with_file_and_field(tmp_path, content, field, expected):
    assert_file_rejected(tmp_path, content, field, expected)


@pytest.mark.parametrize("kind", ["folder", "symlink_loop", "fifo", "device"])
def test_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    """A folder, a symlink loop, a FIFO (reading would block) or /dev/zero (reading never ends)."""
    path = tmp_path / "scenario.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "symlink_loop":
        path.symlink_to(tmp_path / "scenario.toml")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path.name}: ") and "expected a scenario file" in str(info.value)


def test_file_larger_than_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(GOOD + "# " + "x" * 4096 + "\n")
    with pytest.raises(ScenarioError, match="limit file_bytes"):
        load_scenario(path, Limits(file_bytes=1024))
    assert load_scenario(path).name == "big"


def test_a_raised_limit_admits_what_the_default_refuses(tmp_path):
    text = GOOD.replace("steps = 1", "steps = 200000")
    assert_file_rejected(tmp_path, text, "optimizer.steps", "--limit steps=N")
    path = tmp_path / "my_example.toml"
    with pytest.raises(ScenarioError, match="limit work; raise it with --limit work=N"):
        load_scenario(path, Limits(steps=200000, trace_elements=2**30))  # 200,000 steps: within those, not the work
    assert load_scenario(path, Limits(steps=200000, trace_elements=2**30, work=10**12)).optimizer.steps == 200000


def test_images_and_any_rank_addresses_load(tmp_path):
    from tests.cases_hostile_files import CONV

    path = tmp_path / "conv.toml"
    path.write_text(CONV + '\n[[expect]]\nat = "layers.0.weight.grad[1,0,1,1]"\nprinted = "0.1"\n')
    scenario = load_scenario(path)
    assert scenario.x.shape == (2, 1, 4, 4) and scenario.layers[0].weight.shape == (2, 1, 2, 2)
    assert scenario.layers[0].params["stride"] == (1, 1) and scenario.layers[0].bias.shape == (2,)
    assert scenario.layers[2].weight.shape == (1, 18)


def test_init_is_seeded_and_reproducible(tmp_path):
    text = GOOD.replace("weight = [[0.1, 0.2], [0.3, 0.4]]", 'init = "xavier_uniform"\nin = 2\nout = 2')
    path = tmp_path / "init.toml"
    path.write_text("seed = 5\n" + text)
    first, second = load_scenario(path), load_scenario(path)
    np.testing.assert_array_equal(first.layers[0].weight, second.layers[0].weight)
    path.write_text("seed = 6\n" + text)
    assert not np.array_equal(first.layers[0].weight, load_scenario(path).layers[0].weight)
    bound = np.sqrt(6.0 / 4)
    assert np.all(np.abs(first.layers[0].weight) <= bound)


def test_check_limit_option_raises_a_limit(tmp_path, capsys):
    """`check --limit steps=N` admits a file the default limit refuses; an unknown NAME is exit 2."""
    from backprop_verify.reports.cli import main

    path = tmp_path / "long.toml"
    path.write_text(GOOD.replace("steps = 1", "steps = 150000"))
    out = tmp_path / "out"
    assert main(["check", str(path), "--out", str(out)]) == 2
    assert "limit steps" in capsys.readouterr().err and not out.exists()
    assert main(["check", str(path), "--out", str(out), "--limit", "sizes=5"]) == 2
    assert "expected NAME=N with NAME one of" in capsys.readouterr().err
    path.write_text(GOOD.replace("steps = 1", "steps = 3"))
    assert main(["check", str(path), "--out", str(out), "--limit", "steps=2"]) == 2
    assert "expected at most 2" in capsys.readouterr().err
    assert main(["check", str(path), "--out", str(out), "--limit", "steps=3"]) == 0
