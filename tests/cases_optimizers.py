"""Optimizer cases: trajectory scenarios (every optimizer × option, both dtypes)
and broken ``[optimizer]`` tables (file text, field named, words expected)."""
from pytest_cases import case, parametrize

from scenarios.trajectories import VARIANTS, trajectory_scenarios
from tests.cases_bad_files import GOOD
from tests.cases_scenarios import _ids

# Indices into VARIANTS run in float32 besides the defaults: sgd mini-batches with
# shuffle, adam with every clip, centered rmsprop with momentum (horizon).
FLOAT32_EXTRA = (7, 16, 37)
# Indices into VARIANTS not run in float64 by default: sgd momentum alone (in 2, 4,
# 5), adagrad inside alone (in 12), rmsprop centered alone and momentum alone (in
# 16), sgd clip_grad_value alone and adam clip_weights alone (in 37).
FLOAT64_SKIPPED = (1, 11, 14, 15, 35, 36)

# To keep the default run short (`python -m reports.trajectories` runs all 38
# variants in both dtypes; numbers in the README):
# float64: every variant except those whose changed options all recur together
# with others in a variant of the same optimizer that does run (FLOAT64_SKIPPED);
# float32: each optimizer with its defaults, plus FLOAT32_EXTRA.
_FLOAT64 = [s for k, s in enumerate(trajectory_scenarios("float64")) if k not in FLOAT64_SKIPPED]
_FLOAT32 = [s for k, s in enumerate(trajectory_scenarios("float32"))
            if (not VARIANTS[k][2] and not VARIANTS[k][3]) or k in FLOAT32_EXTRA]


@parametrize("scenario", _FLOAT64, ids=_ids(_FLOAT64, "trajectory-"))
def case_trajectory(scenario):
    return scenario


@parametrize("scenario", _FLOAT32, ids=_ids(_FLOAT32, "trajectory-"))
def case_trajectory_float32(scenario):
    return scenario


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
