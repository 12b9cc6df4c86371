"""Manual engine vs torch autograd vs finite differences, address by address."""
from pytest_cases import parametrize_with_cases

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reference.fd_oracle import fd_oracle
from tests.cases_fd import RANDOM_CONV_FD_COUNT, RANDOM_FD_COUNT, _FD_RANDOM, _FD_RANDOM_CONV
from tests.helpers import assert_traces_agree


@parametrize_with_cases("scenario", cases="tests.cases_scenarios")
def test_manual_matches_torch(scenario):
    assert_traces_agree(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")


@parametrize_with_cases("scenario", cases="tests.cases_fd")
def test_both_match_finite_differences(scenario):
    fd = fd_oracle(scenario)
    assert_traces_agree(manual.run(scenario), fd, scenario.dtype, "manual-fd")
    assert_traces_agree(reference.run(scenario), fd, scenario.dtype, "torch-fd")


def test_enough_random_nets_get_finite_differences():
    assert len(_FD_RANDOM) == RANDOM_FD_COUNT
    assert len(_FD_RANDOM_CONV) == RANDOM_CONV_FD_COUNT
