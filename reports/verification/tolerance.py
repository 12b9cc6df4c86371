"""The one tolerance policy. Tests and reports both read it; nothing else
defines a tolerance.

Every comparison is normwise over one address: an address passes when

    max|a - b|  <=  rtol(dtype, pair, steps) * max|b|  +  floor(dtype, pair) * scale

(b is the reference side: torch, or finite differences). Elementwise relative
error is not used: on entries near zero it measures rounding noise, not
correctness (float32 gives 0.67 on correct code).

Why these numbers
-----------------
Two correct implementations of the same network differ only by rounding:
different summation orders in matrix products (BLAS blocking), exp/log/tanh
from different libraries (each within ~1 ulp), fused vs. separate operations.
A dot product of length n carries at most ~n·u relative error (u = unit
roundoff: 1.1e-16 in float64, 6.0e-8 in float32), in practice ~√n·u; the
suite's networks have fan-in ≤ 32, batch ≤ 16 and depth ≤ 6, so each layer
adds ≲ 32·u, and a gradient passes through up to 12 layers (6 linear, 6
activations) twice (forward and backward), each Jacobian amplifying existing
error by its condition (≲ 10 for the initialisations used). That bound is
~24 · 32 · 10 · u ≈ 8e3·u; the measured worst cases (docs/tolerance.md) sit
far below it.

* float64: rtol = 1e-10 ≈ 9e5·u — a 100× margin over the bound above, and
  still 9 orders of magnitude below the error of a wrong derivative (a
  missing factor, σ instead of σ(1-σ), gives relative differences ≥ 1e-2).
* float32: rtol = 2e-4 ≈ 3.4e3·u — about half the bound above.
* finite differences (pair *-fd, always float64): central differences with
  the step h = ∛ε·max(1, |θ|) ≈ 6.1e-6·max(1, |θ|) of ``reference.fd_oracle``
  balance truncation (h²·|L‴|/6) against round-off (ε·|L|/h): each ≈ ε^(2/3)
  ≈ 4e-11 relative when L and L‴ are of order one. rtol = 1e-6 leaves 4
  orders of margin for curvature (saturated activations, exp in softmax) and
  is still 4 orders below a wrong derivative.
* absolute floor: an entry whose exact value cancels to (nearly) zero —
  1 − tanh²(z) at |z| = 19, σ(z)(1 − σ(z)) in saturation, Φ(z) = ½(1 + erf)
  far in the tail — is computed with an *absolute* error of a few u times
  the scale of the terms that cancelled, not a relative one: two correct
  engines then give 0 and 2.5e-16 for the same 1.3e-16. Every gradient is
  the loss gradient ∂L/∂(network output) multiplied by Jacobians, so its
  absolute error is bounded by ~u · max|∂L/∂output| · Π‖J‖; every layer
  output by ~u · (the largest output it was computed from). The floor is
  therefore FLOOR_ULPS · u · scale, with scale = max|∂L/∂(last output)| for
  gradients and max|layer outputs| for outputs (``compare.family_scales``).
  64 u is 1.4e-14 in float64: a wrong derivative (relative error ≥ 1e-2 of
  entries that matter) is never hidden by it. For finite differences the
  error is absolute by nature (u·|L|/h), so their floor is FD_RTOL · scale.
  A row that passes only thanks to the floor has the status ``floor``.
* conditioning floor (``conditioning``): the bound above assumes Jacobians of
  modest norm; a normalisation layer over values of small variance multiplies
  by γ/√(σ² + ε), up to γ/√ε, and the sums behind it cancel. Where a
  manual-torch row fails, torch is run again where only rounding differs (in
  float64 on the float32 numbers; or, in float64, with inputs and parameters
  one ulp away) and the row passes as ``floor`` within 2·max|torch − torch'|,
  what rounding alone moves the address by — judged from the reference only.
* trajectories: after t optimizer updates the rounding differences of each
  update are carried forward through an update map whose Lipschitz constant is
  ≈ 1 for the small learning rates used, so the bound grows linearly:
  rtol · (1 + t) — 1.0e-8 (float64) and 2.0e-2 (float32) at t = 100.
  ``python -m reports.verification.horizon`` prints every built-in
  trajectory's worst discrepancy against it (docs/optimizers.md).
  Two refinements, both exercised by
  ``scenarios.trajectories.dead_unit_scenario`` (NAdam with L2 decay on a
  depth-4 ReLU network whose last hidden units die):
  - parameter floor (``parameter_floor``): a parameter after t updates is
    also allowed an absolute error of rtol · (1 + t) · max|θ₀|, its initial
    size. The rounding a parameter accumulates is proportional to the sizes
    it had along the way, not to its current one: a dead unit's bias decays
    towards 0 under weight decay, its accumulated rounding does not.
  - precision horizon (``horizon.float32_horizon`` / ``float64_horizon``):
    where the training map amplifies rounding (the dead unit's only gradient
    is λθ and NAdam moves it by ≈ ηλθ/ε, a gain ≫ 1), the dtype cannot
    determine the trajectory, and the reference drifts from itself computed
    in a wider dtype (float32) or started one ulp away (float64) as far as
    from the manual engine. Steps after the last update at which that
    perturbed reference still agrees with the reference within half the
    tolerance are reported with the status ``not_judged``.
  Measured margin of the float64 dead unit (seed 0's BLAS, 100 NAdam updates):
  its worst row on the relative criterion alone, ``step99.layers.4.bias``, is
  at 0.93 of rtol·(1 + t)·max|b| — but that is the bias of a dead unit
  decaying from max|θ₀| = 0.243 to max|b| = 3.6e-3, exactly the case the
  parameter floor is for, and against the whole criterion (relative plus the
  parameter floor 2.4e-9) it uses 1.4 % of what it is allowed (max|a − b| =
  3.4e-11); step 100 (2.0× on the relative criterion, status ``floor``) uses
  2.8 %. The discrepancy grows ×2.1 per update from step 95 on (the gain of
  the dead-unit map), so the full criterion would be reached only near
  update 105. A BLAS that rounds differently was simulated by moving every
  initial weight and bias one ulp in a random direction (6 patterns): the
  manual engine then ends 0.56–0.82 of the relative criterion from torch at
  step 99, torch from itself 0.49–0.59 — the same order as the measured 0.93,
  i.e. ≤ 3 % of the full criterion. The margin is therefore ~35×, not 7 %,
  and no tolerance was changed.
"""
from __future__ import annotations

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}

RTOL = {"float64": 1e-10, "float32": 2e-4}
FD_RTOL = 1e-6

FLOOR_ULPS = 64

PAIRS = ("manual-torch", "manual-fd", "torch-fd")


def tolerance(dtype: str, pair: str = "manual-torch", steps: int = 0) -> float:
    """Normwise relative tolerance for comparing two traces of ``dtype``."""
    if pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; expected one of {PAIRS}")
    if dtype not in RTOL:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(RTOL)}")
    # A float32 engine against float64 finite differences carries float32 error.
    base = max(FD_RTOL, RTOL[dtype]) if pair.endswith("-fd") else RTOL[dtype]
    return base * (1 + steps)


def parameter_floor(dtype: str, pair: str = "manual-torch", steps: int = 0) -> float:
    """Multiplier of max|θ₀| (the parameter's initial size) giving the absolute
    floor of a parameter after ``steps`` updates (see "trajectories" above)."""
    return tolerance(dtype, pair, steps)


def absolute_floor(dtype: str, pair: str = "manual-torch") -> float:
    """Multiplier of an address's family scale giving the absolute floor (see above)."""
    if pair.endswith("-fd"):
        return max(FD_RTOL, RTOL[dtype])
    return FLOOR_ULPS * UNIT_ROUNDOFF[dtype]
