"""Optimizer cases: broken ``[optimizer]`` tables (file text, field named, words expected)."""
from pytest_cases import case

from tests.cases_bad_files import GOOD

# The trajectory cases, tagged by what each variant is, are in tests/cases_trajectories.py.


def _optimizer(extra: str) -> str:
    """GOOD with its ``[optimizer]`` table extended (or its type replaced) by ``extra``."""
    if extra.startswith("type"):
        return GOOD.replace('type = "sgd"', extra, 1)
    return GOOD + extra + "\n"


@case(id="nesterov_without_momentum")
def bad_file_nesterov():
    return _optimizer("nesterov = true"), "optimizer.nesterov", "momentum > 0 and dampening = 0"


@case(id="textbook_momentum_with_dampening")
def bad_file_textbook_dampening():
    return (_optimizer('momentum = 0.9\ndampening = 0.1\nmomentum_form = "textbook"'), "optimizer.dampening",
            "has no dampening")


@case(id="unknown_momentum_form")
def bad_file_momentum_form():
    return _optimizer('momentum_form = "keras"'), "optimizer.momentum_form", "torch, textbook"


@case(id="option_of_another_optimizer")
def bad_file_amsgrad_on_sgd():
    return _optimizer("amsgrad = true"), "optimizer.amsgrad", "unknown field"


@case(id="beta1_one")
def bad_file_beta1():
    return _optimizer('type = "adam"\nbeta1 = 1.0'), "optimizer.beta1", "[0, 1)"


@case(id="eps_zero")
def bad_file_eps_zero():
    return _optimizer('type = "adagrad"\neps = 0.0'), "optimizer.eps", "(0, inf)"


@case(id="eps_placement_unknown")
def bad_file_eps_placement():
    return _optimizer('type = "adagrad"\neps_placement = "under"'), "optimizer.eps_placement", "outside, inside"


@case(id="rmsprop_alpha_above_one")
def bad_file_alpha():
    return _optimizer('type = "rmsprop"\nalpha = 1.5'), "optimizer.alpha", "[0, 1]"


@case(id="amsgrad_not_boolean")
def bad_file_amsgrad_type():
    return _optimizer('type = "adam"\namsgrad = 1'), "optimizer.amsgrad", "true or false"


@case(id="ftrl_zero_denominator")
def bad_file_ftrl():
    return _optimizer('type = "ftrl"\nbeta = 0.0'), "optimizer.beta", "denominator"


@case(id="clip_grad_norm_negative")
def bad_file_clip_norm():
    return _optimizer("clip_grad_norm = -1.0"), "optimizer.clip_grad_norm", "> 0"


@case(id="clip_weights_reversed")
def bad_file_clip_weights_order():
    return _optimizer("clip_weights = [1.0, -1.0]"), "optimizer.clip_weights", "lo < hi"


@case(id="clip_weights_one_number")
def bad_file_clip_weights_length():
    return _optimizer("clip_weights = [1.0]"), "optimizer.clip_weights", "[lo, hi]"


@case(id="steps_and_epochs")
def bad_file_steps_and_epochs():
    return _optimizer("epochs = 2"), "optimizer.epochs", "not both"


@case(id="batch_larger_than_data")
def bad_file_batch():
    return _optimizer("batch_size = 2"), "optimizer.batch_size", "at most 1"
