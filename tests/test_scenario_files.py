"""Scenario files: the good one loads; every broken one names file and field."""
import numpy as np
from pytest_cases import parametrize_with_cases

from scenarios import load_scenario
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
