"""Optimizers: trajectories against torch.optim, textbook forms, mini-batches, Ftrl, file errors."""
import math

import numpy as np
import pytest
from pytest_cases import parametrize_with_cases

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.manual.clipping import clip_grad_norm, clip_grad_value
from backprop_verify.manual.optimizers import OPTIMIZERS as MANUAL_OPTIMIZERS
from backprop_verify.reference.fd_oracle import fd_gradient
from backprop_verify.reports.verification.compare import step_of
from backprop_verify.reports.verification.runner import report_rows, verify
from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.reports.verification.horizon import NO_TORCH_REFERENCE, compare_trajectory, float64_horizon
from backprop_verify.scenarios import OPTIMIZERS, load_scenario, scenario_from_dict
from backprop_verify.scenarios.schedule import batch_schedule
from backprop_verify.scenarios.trajectories import (TRAJECTORY_STEPS, VARIANTS, dead_unit_scenario, document001_scenario,
                                   layer_trajectory_scenarios,
                                   make_optimizer, trajectory_scenarios, variant_tags)
from tests.cases_trajectories import DEFAULT_RUN, TRAJECTORY_CASES
from tests.helpers import assert_file_rejected, assert_traces_agree


# --------------------------------------------------------------------------- trajectories

@parametrize_with_cases("scenario", cases=TRAJECTORY_CASES, filter=DEFAULT_RUN)
def test_trajectory_matches_torch_optim(scenario):
    rows, horizon = compare_trajectory(scenario)
    if scenario.optimizer.type in ("ftrl",):
        assert [(r.status, r.note) for r in rows] == [("not_judged", f"{NO_TORCH_REFERENCE} (ftrl)")]
        return
    assert max(step_of(r.address) for r in rows) == scenario.optimizer.steps >= 100
    failed = [r for r in rows if not r.passed]
    assert not failed, "\n".join(f"{r.address}: max_rel={r.max_rel:.3e} > {r.tolerance:.1e}" for r in failed[:10])
    if scenario.dtype == "float64":
        assert horizon == scenario.optimizer.steps  # no built-in float64 run needs its horizon in 100 updates
    excused = {step_of(r.address) for r in rows if r.status == "not_judged"}
    assert all(t > horizon for t in excused)


def test_dead_units_need_the_parameter_floor_and_the_float32_horizon():
    """NAdam + L2 decay on dead ReLU units amplifies rounding (scenarios.trajectories.dead_unit_scenario)."""
    rows, horizon = compare_trajectory(dead_unit_scenario("float64"))
    assert horizon == TRAJECTORY_STEPS and all(r.passed for r in rows)
    floored = [r for r in rows if r.status == "floor" and ".bias" in r.address]
    assert floored and max(r.max_rel for r in floored) > tolerance("float64", steps=TRAJECTORY_STEPS)
    rows, horizon = compare_trajectory(dead_unit_scenario("float32"))
    assert 10 < horizon < TRAJECTORY_STEPS and all(r.passed for r in rows)
    beyond = [r for r in rows if r.status == "not_judged"]
    assert beyond and all(r.note == f"beyond float32 horizon (step {horizon})" for r in beyond)


def test_a_chaotic_float64_trajectory_is_judged_up_to_its_horizon():
    """Centered RMSprop with momentum and small ε doubles rounding differences every
    few updates: over 200 updates even float64 cannot determine the trajectory.
    The horizon comes from torch alone (torch against torch started one ulp away)."""
    label = "rmsprop-alpha0.9-eps1e-06-weight_decay0.01-momentum0.5-centered"
    (scenario,) = [s for s in trajectory_scenarios("float64", steps=200) if s.optimizer.label() == label]
    torch_trace = reference.run(scenario)
    rows, horizon = compare_trajectory(scenario, torch_trace=torch_trace)
    assert TRAJECTORY_STEPS < horizon < 200 and horizon == float64_horizon(scenario, torch_trace)
    excused = [r for r in rows if r.status == "not_judged"]
    assert all(r.note == f"beyond float64 horizon (step {horizon})" for r in excused)
    assert all(r.passed for r in rows) and all(step_of(r.address) > horizon for r in excused)
    assert max(r.max_rel / r.tolerance for r in excused) > 1  # these would fail without the horizon


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectories_through_conv_and_normalisation_layers_match_torch_optim(dtype):
    """γ, β and kernels updated by torch.optim's rules, BatchNorm's running statistics after every update."""
    for scenario in layer_trajectory_scenarios(dtype):
        rows = report_rows(scenario)
        failed = [r for r in rows if r["status"] == "fail"]
        assert not failed, (scenario.name, [(r["address"], r["max_rel"]) for r in failed[:5]])
        assert max(step_of(r["address"]) for r in rows) == scenario.optimizer.steps
    names = [layer.type for s in layer_trajectory_scenarios(dtype) for layer in s.layers]
    assert {"conv2d", "batch_norm", "layer_norm", "dropout"} <= set(names)
    running = [a for a in reference.run(layer_trajectory_scenarios(dtype)[0]) if "running_" in a and step_of(a)]
    assert running


def test_every_optimizer_and_option_is_exercised():
    for name, specs in OPTIMIZERS.items():
        variants = [(options, settings) for kind, _, options, settings in VARIANTS if kind == name]
        assert variants, f"no trajectory for {name}"
        varied = {key for options, _ in variants for key in options}
        assert varied == set(specs), f"{name}: options never changed from their default: {set(specs) - varied}"
    common = {key for *_, settings in VARIANTS for key in settings}
    assert {"batch_size", "shuffle", "drop_last", "clip_grad_norm", "clip_grad_value", "clip_weights"} <= common
    # The variants the default run skips in float64 ("subsumed") change nothing the others do not.
    skipped = [v for v in VARIANTS if "subsumed" in variant_tags(v)]
    running = [v for v in VARIANTS if "subsumed" not in variant_tags(v)]
    assert skipped
    for kind, _, options, settings in skipped:
        assert any(kind == other[0] and set(options) <= set(other[2]) and set(settings) <= set(other[3])
                   or (not options and set(settings) <= set(other[3])) for other in running), (kind, options)


def test_a_wrong_update_is_caught(monkeypatch):
    """The trajectory comparison can fail: Adam without the bias correction of v."""
    scenario = next(s for s in trajectory_scenarios("float64") if s.optimizer.label() == "adam")
    assert all(r.passed for r in compare_trajectory(scenario)[0])
    original = np.sqrt
    monkeypatch.setattr(MANUAL_OPTIMIZERS["adam"], "update", _adam_without_second_bias_correction(original))
    assert not all(r.passed for r in compare_trajectory(scenario)[0])


def _adam_without_second_bias_correction(sqrt):
    def update(self, index, param, grad):
        m, v = self.first_moment[index], self.second_moment[index]
        m += (1.0 - self.beta1) * (grad - m)
        v *= self.beta2
        v += (1.0 - self.beta2) * grad * grad
        param -= self.learning_rate / (1.0 - self.beta1 ** self.step_count) * m / (sqrt(v) + self.eps)
    return update


def test_document001_model_matches_torch():
    scenario = document001_scenario()
    assert scenario.updates_per_epoch == 10 and scenario.optimizer.steps == 100
    assert [l.type for l in scenario.layers] == ["linear", "relu", "linear", "softmax"]
    assert scenario.layers[0].weight.shape == (10, 784) and scenario.optimizer.learning_rate == 0.001
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    assert_traces_agree(manual_trace, torch_trace, scenario.dtype, "manual-torch")
    assert float(manual_trace["step100.loss"]) < float(manual_trace["step1.loss"])


# --------------------------------------------------------------------------- textbook forms

def _gradient_sequence(shape=(3, 4), count=TRAJECTORY_STEPS, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, shape) for _ in range(count)]


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_seed_momentum_form_equals_torch_form(nesterov):
    """Document 003's v = βv + η∇L, θ ← θ − v is torch's v = βv + g, θ ← θ − ηv: v_seed = η·v_torch."""
    eta, beta = 0.05, 0.9
    start = np.random.default_rng(4).normal(0.0, 1.0, (3, 4))
    theta_seed, theta_torch = start.copy(), start.copy()
    seed_form = MANUAL_OPTIMIZERS["sgd"]([theta_seed], eta, momentum=beta, nesterov=nesterov, momentum_form="textbook")
    torch_form = MANUAL_OPTIMIZERS["sgd"]([theta_torch], eta, momentum=beta, nesterov=nesterov)
    for t, g in enumerate(_gradient_sequence(), start=1):
        seed_form.step([g])
        torch_form.step([g])
        rtol = tolerance("float64", steps=t)
        assert np.max(np.abs(seed_form.velocity[0] - eta * torch_form.velocity[0])) <= rtol * np.max(np.abs(seed_form.velocity[0]))
        assert np.max(np.abs(theta_seed - theta_torch)) <= rtol * np.max(np.abs(theta_torch))
    # The seed's first velocity is η∇L (v⁰ = η∇L), not ∇L.
    first = MANUAL_OPTIMIZERS["sgd"]([start.copy()], eta, momentum=beta, momentum_form="textbook")
    g = _gradient_sequence(count=1)[0]
    first.step([g])
    np.testing.assert_array_equal(first.velocity[0], eta * g)


def test_seed_momentum_trajectory_equals_torch_form_trajectory():
    import dataclasses

    scenario = next(s for s in trajectory_scenarios("float64") if s.optimizer.label() == "sgd-momentum0.9")
    seed_form = dataclasses.replace(scenario, optimizer=dataclasses.replace(
        scenario.optimizer, options={**scenario.optimizer.options, "momentum_form": "textbook"}))
    torch_form = manual.run(scenario)
    steps = [a for a in torch_form if step_of(a)]
    assert len(steps) >= 100 * 3
    assert_traces_agree(manual.run(seed_form), torch_form, "float64", "manual-torch", steps)


def test_adagrad_eps_inside_and_outside_differ_where_g_squared_is_near_eps():
    """One AdaGrad step from n = 0: outside moves η·g/(|g| + ε), inside η·g/√(g² + ε)."""
    eta, eps = 1.0, 1e-10
    grads = np.array([1e-2, 1e-5, 1e-7])  # |g| ≫ √ε, |g| = √ε, |g| ≪ √ε  (√ε = 1e-5)
    steps = {}
    for placement in ("outside", "inside"):
        theta = np.zeros(3)
        MANUAL_OPTIMIZERS["adagrad"]([theta], eta, eps=eps, eps_placement=placement).step([grads])
        steps[placement] = -theta
    # Outside: every coordinate moves by η (up to ε/|g| ≤ 1e-3).
    np.testing.assert_allclose(steps["outside"], [1.0, 1.0, 1.0], rtol=1.1e-3)
    # Inside: g/√(g² + ε) = 1/√(1 + ε/g²): ≈ 1 − ε/(2g²), then 1/√2, then ≈ |g|/√ε.
    np.testing.assert_allclose(steps["inside"], [1 / math.sqrt(1 + 1e-6), 1 / math.sqrt(2), 1 / math.sqrt(1 + 1e4)],
                               rtol=1e-12)


def test_adagrad_eps_placement_changes_the_trajectory():
    import dataclasses

    scenario = next(s for s in trajectory_scenarios("float64") if s.optimizer.label() == "adagrad")
    inside = dataclasses.replace(scenario, optimizer=dataclasses.replace(
        scenario.optimizer, options={**scenario.optimizer.options, "eps_placement": "inside"}))
    a, b = manual.run(scenario), manual.run(inside)
    final = [k for k in a if k.startswith(f"step{TRAJECTORY_STEPS}.") and not k.endswith((".grad", ".loss"))]
    worst = max(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(a[k])) for k in final)
    assert worst > 100 * tolerance("float64", steps=TRAJECTORY_STEPS)


# --------------------------------------------------------------------------- mini-batches

def _linear_scenario(samples, **optimizer):
    rng = np.random.default_rng(8)
    return scenario_from_dict({
        "seed": 8,
        "layers": [{"type": "linear", "weight": [[0.1, -0.2]], "bias": [0.0]}],
        "loss": {"type": "mse", "reduction": "mean"},
        "data": {"x": rng.normal(0, 1, (samples, 2)).tolist(), "y": rng.normal(0, 1, (samples, 1)).tolist()},
        "optimizer": {"type": "sgd", "learning_rate": 0.01, **optimizer},
    }, file="minibatch.toml")


def _updates_in(trace):
    return sorted(step_of(a) for a in trace if a.endswith(".loss") and step_of(a))


@pytest.mark.parametrize("batch_size,epochs,drop_last,expected", [
    (100, 1, False, 10), (10, 1, False, 100), (100, 3, False, 30), (300, 1, False, 4), (300, 1, True, 3),
    (0, 2, False, 2),
], ids=["1000by100", "1000by10", "3epochs", "ceil", "drop_last", "full_batch"])
def test_updates_per_epoch_from_the_trace(batch_size, epochs, drop_last, expected):
    """Document 003: 1,000 samples, batch 100 → 10 updates per epoch; batch 10 → 100."""
    scenario = _linear_scenario(1000, batch_size=batch_size, epochs=epochs, drop_last=drop_last, shuffle=True)
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    assert _updates_in(manual_trace) == _updates_in(torch_trace) == list(range(1, expected + 1))
    assert scenario.updates_per_epoch * epochs == expected
    assert_traces_agree(manual_trace, torch_trace, "float64", "manual-torch")


def test_schedule_visits_every_sample_once_per_epoch():
    scenario = _linear_scenario(23, batch_size=5, epochs=3, shuffle=True)
    schedule = batch_schedule(scenario)
    assert [len(b) for b in schedule] == [5, 5, 5, 5, 3] * 3
    epochs = [np.concatenate(schedule[5 * e:5 * e + 5]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(23))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    again = batch_schedule(_linear_scenario(23, batch_size=5, epochs=3, shuffle=True))
    assert all(np.array_equal(a, b) for a, b in zip(schedule, again))
    plain = batch_schedule(_linear_scenario(23, batch_size=5, epochs=1, drop_last=True))
    assert [b.tolist() for b in plain] == [list(range(k, k + 5)) for k in range(0, 20, 5)]


# --------------------------------------------------------------------------- clipping

def test_clip_grad_norm_scales_to_the_global_norm():
    grads = [np.array([3.0]), np.array([[4.0]])]  # ‖g‖ = 5
    clipped = clip_grad_norm(grads, 1.0)
    factor = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose([clipped[0][0], clipped[1][0, 0]], [3 * factor, 4 * factor], rtol=1e-15)
    assert clip_grad_norm(grads, 10.0)[0][0] == 3.0  # below the limit: unchanged
    np.testing.assert_array_equal(clip_grad_value([np.array([-2.0, 0.5, 3.0])], 1.0)[0], [-1.0, 0.5, 1.0])


# --------------------------------------------------------------------------- Ftrl

def _ftrl_run():
    scenario = next(s for s in trajectory_scenarios("float64") if s.optimizer.type == "ftrl" and s.optimizer.options["l1"])
    return scenario, manual.run(scenario)


def _ftrl_history(scenario, trace, address):
    """(w_s before update s, g_s) for s = 1..T, and w after every update."""
    steps = scenario.optimizer.steps
    before = [trace[address]] + [trace[f"step{s}.{address}"] for s in range(1, steps)]
    grads = [trace[f"step{s}.{address}.grad"] for s in range(1, steps + 1)]
    after = [trace[f"step{s}.{address}"] for s in range(1, steps + 1)]
    return before, grads, after


def test_ftrl_matches_a_scalar_rederivation_of_the_paper():
    """McMahan et al. 2013, Algorithm 1, one coordinate at a time in plain Python floats."""
    scenario, trace = _ftrl_run()
    options, alpha = scenario.optimizer.options, scenario.optimizer.learning_rate
    beta, l1, l2, n0 = options["beta"], options["l1"], options["l2"], options["initial_accumulator_value"]
    compared = 0
    for address in [a for a in trace if a.startswith("layers.") and a.endswith(("weight", "bias"))]:
        before, grads, after = _ftrl_history(scenario, trace, address)
        for k in range(before[0].size):
            z, n, w = 0.0, n0, float(before[0].flat[k])
            for s, g_array in enumerate(grads):
                g = float(g_array.flat[k])
                sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / alpha
                z += g - sigma * w
                n += g * g
                if abs(z) <= l1:
                    w = 0.0
                else:
                    w = -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)
                expected = float(after[s].flat[k])
                assert abs(w - expected) <= tolerance("float64", steps=s + 1) * max(1.0, abs(expected)), (address, k, s)
                compared += 1
    assert compared >= 100 * 20


def test_ftrl_update_minimises_its_objective_by_finite_differences():
    """w_T = argmin g₁:T·w + ½Σσ_s(w − w_s)² + ½((β + √n₀)/α + λ₂)w² + λ₁|w|: the smooth part's
    derivative at w_T is −λ₁·sign(w_T) where w_T ≠ 0 and within [−λ₁, λ₁] where w_T = 0."""
    scenario, trace = _ftrl_run()
    options, alpha = scenario.optimizer.options, scenario.optimizer.learning_rate
    beta, l1, l2, n0 = options["beta"], options["l1"], options["l2"], options["initial_accumulator_value"]
    zeros = nonzeros = 0
    for address in [a for a in trace if a.startswith("layers.") and a.endswith(("weight", "bias"))]:
        before, grads, after = _ftrl_history(scenario, trace, address)
        g = np.stack(grads).reshape(len(grads), -1)
        w_s = np.stack(before).reshape(len(before), -1)
        n = n0 + np.cumsum(g * g, axis=0)
        sigma = (np.sqrt(n) - np.sqrt(np.vstack([np.full((1, g.shape[1]), n0), n[:-1]]))) / alpha
        base = (beta + math.sqrt(n0)) / alpha + l2
        w_final = after[-1].reshape(-1)

        def smooth(w):
            return float(np.sum(g.sum(axis=0) * w + 0.5 * np.sum(sigma * (w - w_s) ** 2, axis=0) + 0.5 * base * w * w))

        derivative = fd_gradient(smooth, w_final.copy())
        scale = np.abs(g).sum(axis=0) + np.sum(sigma * np.abs(w_s), axis=0) + (sigma.sum(axis=0) + base) * np.abs(w_final)
        rtol = tolerance("float64", "manual-fd")
        for k, w in enumerate(w_final):
            if w == 0.0:
                assert abs(derivative[k]) <= l1 + rtol * scale[k], (address, k)
                zeros += 1
            else:
                assert abs(derivative[k] + l1 * math.copysign(1.0, w)) <= rtol * scale[k], (address, k)
                nonzeros += 1
    assert nonzeros > 0


def test_ftrl_is_reported_without_torch_reference():
    scenario, _ = _ftrl_run()
    assert reference.OPTIMIZERS["ftrl"] is None
    assert not any(step_of(a) for a in reference.run(scenario))
    marked = [r for r in verify(scenario, with_fd=False).rows if r["address"] == "step*"]
    assert len(marked) == 1 and marked[0]["note"] == "no torch reference (ftrl)" and marked[0]["passed"]
    assert marked[0]["status"] == "not_judged"


# --------------------------------------------------------------------------- scenario files

@parametrize_with_cases("text,field,expected", cases="tests.cases_optimizers", prefix="bad_file_")
def test_bad_optimizer_table_names_the_field(tmp_path, text, field, expected):
    assert field
    assert_file_rejected(tmp_path, text, field, expected, name="optimizer.toml")


def test_optimizer_options_load_with_defaults(tmp_path):
    from tests.cases_bad_files import GOOD

    path = tmp_path / "adam.toml"
    path.write_text(GOOD.replace('type = "sgd"', 'type = "adam"\nbeta2 = 0.99\namsgrad = true\nclip_weights = [-1, 1]'))
    spec = load_scenario(path).optimizer
    assert spec.options == {**{k: s.default for k, s in OPTIMIZERS["adam"].items()}, "beta2": 0.99, "amsgrad": True}
    assert spec.clip_weights == (-1.0, 1.0) and spec.clip_grad_norm is None
    assert make_optimizer("adam", 0.01, {"beta2": 0.99, "amsgrad": True}, {}, 1).options == spec.options
