"""``backprop-verify bench --quick`` runs and writes a well-formed bench.csv.

No timing is asserted here (times depend on the machine and its load); the
benchmark's figures live in its own command. What is checked: the command's
exit code, the CSV's columns and rows, that every measured quantity is a
positive finite number, and the FLOP count against hand-counted products.
"""
import csv
import math
import re

from backprop_verify.reports.bench import measure as bench
from backprop_verify.reports.cli import main

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
    assert any("thread" in r["note"] for r in rows if r["section"] == "machine")
    assert "ratio" in capsys.readouterr().out
