"""Exploding and vanishing gradients in time, by both engines; clip_grad_norm taming the ρ = 1.5 RNN."""
import numpy as np
import pytest

from backprop_verify.reports.verification.recurrent import NETWORKS, recurrent_gradient
from backprop_verify.reports.verification.runner import report_rows
from backprop_verify.scenarios.trajectories import clipped_trajectory_scenarios
from backprop_verify.reports.verification.tolerance import tolerance


@pytest.fixture(scope="module")
def norms():
    frame = recurrent_gradient().curves
    return frame.pivot_table(index="step", columns=["network", "engine"], values="grad_norm")


def test_both_engines_give_the_same_gradient_in_time(norms):
    for network in NETWORKS:
        manual, torch = norms[(network, "manual")].to_numpy(), norms[(network, "torch")].to_numpy()
        assert np.abs(manual - torch).max() <= tolerance("float64") * np.abs(torch).max(), network


def test_the_spectral_radius_decides_between_vanishing_and_exploding(norms):
    first = {network: norms[(network, "manual")].iloc[0] / norms[(network, "manual")].iloc[-1] for network in NETWORKS}
    assert first["tanh ρ=0.5"] < 1e-4      # vanishes: ρ^19 ≈ 2e-6
    assert 0.1 < first["tanh ρ=1.0"] < 10   # holds
    assert first["tanh ρ=1.5"] > 5          # explodes while tanh is unsaturated
    assert first["lstm"] > 0.1              # the open forget gate carries it


def test_clip_grad_norm_tames_the_exploding_rnn_and_both_engines_agree():
    unclipped, clipped = clipped_trajectory_scenarios("float64")
    assert clipped.optimizer.clip_grad_norm == 1.0 and unclipped.optimizer.clip_grad_norm is None
    for scenario in (unclipped, clipped):
        rows = report_rows(scenario)
        assert not [r for r in rows if r["status"] == "fail"], scenario.name
    from backprop_verify import manual

    losses = {s.optimizer.label(): [float(manual.run(s)[f"step{t}.loss"]) for t in (1, 15)]
              for s in (unclipped, clipped)}
    assert losses["sgd"][1] > 10 * losses["sgd"][0]
    assert losses["sgd-clip_grad_norm1"][1] < 1.5
