"""``backprop-verify bench --quick`` runs and writes a well-formed bench.csv.

No timing is asserted here (times depend on the machine and its load); the
benchmark's figures live in its own command. What is checked: the command's
exit code, the CSV's columns and rows, that every measured quantity is a
positive finite number, the FLOP count against hand-counted products, that the
conv-layer and fused-LSTM measurements compute what the manual engine computes
(each with an injected bug it must catch), and that the kernels are named.
"""
import csv
import math
import re

import numpy as np
import pytest
import torch

from backprop_verify.manual.engine import backward, build_loss, build_network, forward
from backprop_verify.reports.bench import measure as bench
from backprop_verify.reports.bench import run as bench_run
from backprop_verify.reports.cli import main
from backprop_verify.reports.verification.tolerance import tolerance

REQUIRED = ("case", "dtype", "batch", "manual_s", "torch_s", "ratio", "manual_gflops", "peak_gflops", "pct_of_peak")


def test_matmul_flops_counts_each_product_by_hand():
    # 2-2-2, batch 1: forward 2·1·2·2 = 8 per layer (16), ∂L/∂W 8 per layer (16),
    # ∂L/∂x only for the second layer (8): 40.
    assert bench.matmul_flops((2, 2, 2), 1) == 40
    # 784-128-10, batch 64: forward and weight gradient 2·64·(784·128 + 128·10) each,
    # input gradient of the second layer 2·64·128·10.
    assert bench.matmul_flops((784, 128, 10), 64) == 2 * 13_008_896 + 163_840


def test_bench_quick_writes_a_well_formed_csv(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.csv"]  # no temporary file left behind
    with open(tmp_path / "bench.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert set(REQUIRED) <= set(reader.fieldnames)
        rows = list(reader)

    fwd_bwd = [r for r in rows if r["section"] == "fwd_bwd"]
    expected = {(c.case_id, dtype, str(c.batch)) for c in bench.QUICK_CASES for dtype in bench.DTYPES}
    assert {(r["case"], r["dtype"], r["batch"]) for r in fwd_bwd} == expected
    assert len(fwd_bwd) == len(expected)
    for row in fwd_bwd:
        for column in ("manual_s", "torch_s", "ratio", "manual_gflops", "peak_gflops", "pct_of_peak",
                       "manual_iqr_s", "torch_iqr_s"):
            value = float(row[column])
            assert math.isfinite(value) and value >= 0.0, (row["case"], column, value)
        assert float(row["manual_s"]) > 0.0 and float(row["torch_s"]) > 0.0
        assert row["threads"] == "1"

    peaks = {r["dtype"]: float(r["peak_gflops"]) for r in rows if r["section"] == "peak"}
    assert set(peaks) == set(bench.DTYPES) and all(p > 0.0 for p in peaks.values())
    throughput = [r for r in rows if r["section"] == "throughput"]
    assert [r["case"] for r in throughput] == ["random_verify", "random_bare", "random_build"]
    assert all(float(r["per_second"]) > 0.0 for r in throughput)
    assert "; 0 failed addresses" in throughput[0]["note"]
    # A verification does everything each of the other two loops does, and more.
    assert float(throughput[0]["per_second"]) < float(throughput[1]["per_second"])
    assert float(throughput[0]["per_second"]) < float(throughput[2]["per_second"])
    share = re.search(r"Traces and comparison (\d+) % of it", throughput[0]["note"])
    assert share and 0 < int(share.group(1)) < 100
    assert not [r for r in rows if r["section"] == "suite"]  # --quick skips the test-suite timing
    (startup,) = [r for r in rows if r["section"] == "startup"]  # check of one example, fresh processes
    assert float(startup["wall_s"]) > 0.0 and startup["note"].endswith("exit code 0"), startup
    assert any("thread" in r["note"] for r in rows if r["section"] == "machine")
    assert any(r["note"].startswith("kernels: NumPy ") for r in rows if r["section"] == "machine")
    assert "ratio" in capsys.readouterr().out


# --- the conv-layer and fused-LSTM measurements compute what they claim to time ----------------------------

# 2×9×9 images: conv 4@3×3 pad 1 → BatchNorm → ReLU → max pool 2 → conv 5@3×3 → ReLU → flatten → 7 → 3
TINY_CNN = bench.ConvBenchCase("cnn-tiny", (2, 9, 9), 3, ((4, 3, 1, True, 2), (5, 3, 0, False, 0)), (7, 3))
TINY_LSTM = bench.RecurrentBenchCase("lstm-tiny-fused", "lstm", 3, 4, 5, 6, classes=3, torch_fused=True)


def _close(pairs, dtype) -> bool:
    """The (manual, torch) arrays agree normwise, over all of them at once: max|a − b| ≤ tolerance · max|b|
    (one scale for a layer's gradients: a conv bias in front of BatchNorm has a gradient of rounding noise)."""
    pairs = [(a, b.detach().numpy() if isinstance(b, torch.Tensor) else b) for a, b in pairs]
    if any(b is None for _, b in pairs):
        return False
    error = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    return error <= tolerance(dtype) * max(float(np.max(np.abs(b))) for _, b in pairs)


def _conv_layers_agree(dtype) -> bool:
    manual_layers, torch_layers, _ = bench.conv_layer_steps(TINY_CNN.scenario(dtype))
    manual_layers()
    torch_layers()
    assert set(manual_layers.gradients) == set(torch_layers.gradients) == {0, 4}   # the two conv2d layers
    assert manual_layers.gradients[0][2] is None                               # the first: no ∂L/∂x, as in a step
    return all(_close([(a, b) for a, b in zip(manual_layers.gradients[index], torch_layers.gradients[index])
                       if a is not None], dtype) for index in manual_layers.gradients)


@pytest.mark.parametrize("dtype", bench.DTYPES)
def test_conv_layer_steps_compute_the_same_gradients_and_count_their_flops_by_hand(dtype):
    assert _conv_layers_agree(dtype)
    # conv 2→4, 3×3, padding 1 on 9×9 (out 9×9), batch 3: 2·3·81·4·18 per product, forward and ∂L/∂W;
    # conv 4→5, 3×3 on the pooled 4×4 (out 2×2): 2·3·4·5·36 per product, and ∂L/∂x too.
    assert bench.conv_layer_steps(TINY_CNN.scenario(dtype))[2] == 2 * 34_992 + 3 * 4_320


def test_the_conv_layer_comparison_catches_a_torch_side_reading_the_kernel_turned(monkeypatch):
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(bench.F, "conv2d", lambda x, w, *args, **kwargs: conv2d(x, w.flip(2, 3), *args, **kwargs))
    assert not _conv_layers_agree("float64")


def _fused_lstm_agrees(dtype) -> bool:
    scenario = TINY_LSTM.scenario(dtype)
    step = bench.fused_lstm_step(scenario)
    loss = step()
    network, loss_of = build_network(scenario), build_loss(scenario)
    outputs = forward(network, np.asarray(scenario.x, dtype=scenario.np_dtype))
    manual_loss = loss_of.forward(outputs[-1], np.asarray(scenario.y, dtype=scenario.np_dtype))
    backward(network, loss_of.backward())
    lstm, linear = network[0], network[2]
    pairs = [(np.asarray(manual_loss), loss)] + [
        (getattr(lstm, f"{name}_grad"), step.parameters[name].grad) for name in ("weight_ih", "weight_hh", "bias_ih")
    ] + [(linear.weight_grad, step.parameters["linear.weight"].grad), (linear.bias_grad, step.parameters["linear.bias"].grad)]
    return _close(pairs[:1], dtype) and _close(pairs[1:4], dtype) and _close(pairs[4:], dtype)


@pytest.mark.parametrize("dtype", bench.DTYPES)
def test_the_fused_lstm_step_computes_the_manual_engines_loss_and_gradients(dtype):
    assert _fused_lstm_agrees(dtype)


def test_the_fused_lstm_comparison_catches_a_linear_layer_without_its_bias(monkeypatch):
    linear = torch.nn.functional.linear
    monkeypatch.setattr(bench.F, "linear", lambda x, w, b=None: linear(x, w))
    assert not _fused_lstm_agrees("float64")


def test_conv_layer_rows_and_the_summary_name_the_kernels(capsys):
    plan = bench_run.Plan(quick=True)
    plan.conv_cases, plan.repeats, plan.min_sample_s = [TINY_CNN], 2, 0.0
    rows = bench_run.conv_layer_rows(plan, threads=1)
    assert [(r["section"], r["case"], r["dtype"]) for r in rows] == [("conv_layers", "cnn-tiny", d) for d in bench.DTYPES]
    for row in rows:
        assert row["manual_s"] > 0 and row["torch_s"] > 0 and row["peak_gflops"] > 0
        assert row["pct_of_peak"] == pytest.approx(100 * row["manual_gflops"] / row["peak_gflops"])
        assert "1024x1024, interleaved" in row["note"]
    header = bench_run.machine_header(1, plan)
    kernels = [line for line in header if line.startswith("kernels: ")]
    assert len(kernels) == 1 and "NumPy " in kernels[0] and "torch " in kernels[0]
    blas = next(pool for pool in bench.threadpool_info() if pool.get("user_api") == "blas"
                and "numpy" in pool.get("filepath", ""))
    assert blas["internal_api"] in kernels[0] and (blas.get("architecture") or "") in kernels[0]
    table = bench_run.summary_table(rows, header)
    assert table.splitlines()[0] == f"ratio = manual / torch; {kernels[0]}"
    assert "cnn-tiny (conv layers)" in table


def test_the_gpt_mini_case_steps_both_engines_on_token_ids():
    """The bench's steps feed an embedding integer ids (the engines refuse float ones) and a sequence loss
    its (N·T, C) rows: one step of each engine runs on gpt-mini."""
    case = bench.TRANSFORMER_CASES[0]
    scenario = case.scenario("float32")
    assert scenario.layers[0].type == "embedding" and case.flops() > 10**9
    bench.manual_step(scenario)()
    bench.torch_step(scenario)()
