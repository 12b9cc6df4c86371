"""The worst element of every address: compare, discrepancies.csv, summary.md, the terminal of
``report`` and ``check``, ``--quiet``, ``--detail``, the per-scenario sections and their heatmaps.

Each check plants a bug whose worst element is known and asks every output to name it exactly.
"""
import io
import math

import numpy as np
import pandas as pd
import pytest

from backprop_verify import manual
from backprop_verify.reports.cli import build_parser, main as cli_main
from backprop_verify.reports.commands.report import main
from backprop_verify.reports.rendering import sections
from backprop_verify.reports.rendering.table import (csv_text, failure_line, failure_lines, read_csv_text, rows_frame,
                                                     validate_csv_text)
from backprop_verify.reports.verification.compare import COLUMNS, compare
from backprop_verify.scenarios.builtin import worked_example_paths
from backprop_verify.scenarios.trace import Trace

ONLY = r"seed004|activation-sigmoid-saturation-f64"
ADDRESS, ELEMENT, PLANTED = "layers.0.weight.grad", (1, 0), 0.25
OWN = str(next(p for p in worked_example_paths() if str(p).endswith("example_two_layer_sigmoid_mse.toml")))


def _plant(monkeypatch, address=ADDRESS, element=ELEMENT, amount=PLANTED, name="seed004"):
    honest = manual.run

    def planted(scenario):
        trace = honest(scenario)
        if scenario.name.startswith(name):
            trace[address] = np.array(trace[address], copy=True)
            trace[address][element] += amount
        return trace

    monkeypatch.setattr(manual, "run", planted)


def _args(out, *extra):
    return build_parser().parse_args(["report", "--only", ONLY, "--random", "0", "--random-conv", "0",
                                      "--out", str(out), *extra])


# ----------------------------------------------------------------------------- compare


@pytest.mark.parametrize("shape, element, text", [
    ((), (), ""), ((5,), (3,), "[3]"), ((2, 3), (0, 1), "[0,1]"), ((4, 2, 3, 3), (3, 0, 1, 1), "[3,0,1,1]"),
    ((2, 3, 4), (1, 2, 0), "[1,2,0]"),
])
def test_compare_names_the_worst_element_of_any_rank(shape, element, text):
    rng = np.random.default_rng(0)
    b = np.array(rng.normal(size=shape))
    a = np.array(b + 1e-14 * rng.normal(size=shape))
    a[element] = b[element] + 0.5
    other = np.array(b, copy=True)
    x, y = Trace("manual", {"t": a, "same": other}), Trace("torch", {"t": b, "same": other})
    rows = {r.address: r for r in compare(x, y)}
    assert rows["t"].worst_index == text and rows["t"].status == "fail"
    assert rows["t"].value == float(a[element]) and rows["t"].reference_value == float(b[element])
    assert rows["same"].status == "pass"  # all equal: the first element, both values equal
    assert rows["same"].value == rows["same"].reference_value == float(other.flat[0])


def test_compare_worst_element_ties_take_the_first_and_survive_nan_and_float32():
    b = np.zeros((2, 3), np.float32)
    a = b.copy()
    a[0, 2] = a[1, 1] = 1.0  # a tie: the first in C order
    nan = b.astype(np.float64)
    nan_a = nan.copy()
    nan_a[1, 2] = np.nan
    rows = {r.address: r for r in compare(Trace("manual", {"tie": a, "nan": nan_a}),
                                          Trace("torch", {"tie": b, "nan": nan}), "float32")}
    assert rows["tie"].worst_index == "[0,2]" and rows["tie"].value == 1.0
    assert rows["nan"].worst_index == "[1,2]" and math.isnan(rows["nan"].value) and rows["nan"].status == "fail"
    missing = compare(Trace("manual", {}), Trace("torch", {"x": b}))[0]
    assert missing.worst_index == "" and math.isnan(missing.value)


# ----------------------------------------------------------------------------- the CSV


def test_new_columns_come_after_status_and_old_tables_still_validate():
    assert COLUMNS[:10] == ("scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance", "passed",
                            "note", "status")
    assert COLUMNS[10:] == ("worst_index", "value", "reference_value", "triage")
    row = {"scenario": "s", "pair": "manual-torch", "dtype": "float64", "address": "a", "max_abs": 0.1,
           "max_rel": 0.2, "tolerance": 1e-10, "passed": False, "note": "", "status": "fail",
           "worst_index": "[3,0,1,1]", "value": 0.1 + 0.2, "reference_value": float("nan"),
           "triage": "manual alone"}
    text = csv_text(rows_frame([row]))
    assert text.splitlines()[1].endswith(',fail,"[3,0,1,1]",0.30000000000000004,nan,manual alone')
    validate_csv_text(text)
    frame = read_csv_text(text)
    assert frame.loc[0, "value"] == 0.1 + 0.2 and frame.loc[0, "worst_index"] == "[3,0,1,1]"
    assert frame.loc[0, "triage"] == "manual alone"
    with pytest.raises(ValueError, match="triage 'manual'; expected empty or one of manual alone"):
        validate_csv_text(text.replace(",manual alone", ",manual"))
    before_triage = "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()) + "\n"
    validate_csv_text(before_triage)  # written before the triage existed
    assert read_csv_text(before_triage).loc[0, "triage"] == ""
    text = before_triage
    old = "\n".join(line.rsplit(",", 3)[0] for line in text.replace('"[3,0,1,1]"', "x").splitlines()) + "\n"
    validate_csv_text(old)  # written before the worst element existed
    assert read_csv_text(old).loc[0, "worst_index"] == ""
    with pytest.raises(ValueError, match="worst_index"):
        validate_csv_text(text.replace('"[3,0,1,1]"', "[3;0]"))
    with pytest.raises(ValueError, match="value"):
        validate_csv_text(text.replace("0.30000000000000004", "zero"))


def test_planted_bug_is_named_exactly_by_csv_summary_and_terminal(monkeypatch, tmp_path, capsys):
    honest = manual.run  # the engine without the planted bug
    _plant(monkeypatch)
    assert main(_args(tmp_path, "--no-plots")) == 1
    frame = read_csv_text((tmp_path / "discrepancies.csv").read_text())
    failed = frame[frame["status"] == "fail"]
    assert set(failed["address"]) == {ADDRESS} and set(failed["worst_index"]) == {"[1,0]"}
    torch_row = failed[failed["pair"] == "manual-torch"].iloc[0]
    from backprop_verify.scenarios.builtin import worked_examples

    scenario = next(s for s in worked_examples() if s.name.startswith("seed004"))
    right = float(honest(scenario)[ADDRESS][ELEMENT])
    assert torch_row["value"] == right + PLANTED
    assert abs(torch_row["reference_value"] - right) < 1e-12
    out = capsys.readouterr().out
    expected = (f"FAIL {scenario.name} manual-torch {ADDRESS}[1,0]: manual {torch_row['value']:.17g}, "
                f"torch {torch_row['reference_value']:.17g} (|a−b| ")
    assert expected in out and "tolerance 1.0e-10" in out
    summary = [line for line in (tmp_path / "summary.md").read_text().splitlines()
               if line.startswith(f"| {scenario.name} ") and " manual-torch " in line]
    assert len(summary) == 1 and f"| {ADDRESS} " in summary[0] and "| [1,0] " in summary[0]
    assert f"| {torch_row['value']:.17g} " in summary[0]


def test_quiet_prints_only_the_totals_line(monkeypatch, tmp_path, capsys):
    _plant(monkeypatch)
    assert main(_args(tmp_path, "--no-plots", "--quiet")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("2 scenarios, ") and ", 2 failures," in lines[0]


def test_failure_lines_are_capped():
    rows = [{"scenario": f"s{i:03d}", "pair": "manual-torch", "dtype": "float64", "address": "loss",
             "max_abs": 1.0, "max_rel": 1.0, "tolerance": 1e-10, "passed": False, "note": "", "status": "fail",
             "worst_index": "", "value": 1.0, "reference_value": 0.0} for i in range(105)]
    lines = failure_lines(pd.DataFrame(rows), limit=100)
    assert len(lines) == 101 and lines[-1] == "… and 5 more failures in discrepancies.csv"
    assert lines[0] == "FAIL s000 manual-torch loss: manual 1, torch 0 (|a−b| 1.000e+00, max_rel 1.000e+00, " \
                       "tolerance 1.0e-10)"
    assert "no element to compare" in failure_line({**rows[0], "value": math.nan, "reference_value": math.nan})


# ----------------------------------------------------------------------------- sections and heatmaps


def test_section_names_order_and_cap(monkeypatch):
    frame = pd.DataFrame({"scenario": ["p", "f", "n", "fl", "d1", "d2"],
                          "status": ["pass", "fail", "not_judged", "floor", "pass", "pass"]})
    assert sections.section_names(frame) == (["f", "fl", "n"], 0)
    assert sections.section_names(frame, "^d") == (["f", "fl", "n", "d1", "d2"], 0)
    monkeypatch.setattr(sections, "MAX_SECTIONS", 2)
    assert sections.section_names(frame, "^d") == (["f", "fl"], 3)


def test_heatmap_shows_a_whole_wrong_row_and_marks_the_tolerance():
    """A missing factor in one row: every element of that row red, the rest blue or white."""
    import matplotlib.image

    difference = np.full((3, 4), 1e-15)
    difference[1] = [0.2, 0.4, 0.1, 0.3]
    difference[2, 3] = 0.0
    result = sections.heatmap("manual-torch", "layers.0.weight.grad", "fail", "[1,1]", 1e-10, difference, 1.0)
    assert result.worst_index == "[1,1]" and result.allowed == 1e-10 and len(result.tiles) == 1
    pixels = matplotlib.image.imread(io.BytesIO(__import__("base64").b64decode(result.tiles[0].png_base64)))
    assert pixels.shape[:2] == (3, 4)
    red = (pixels[..., 0] > pixels[..., 2])
    assert red[1].all() and not red[0].any() and not red[2].any()
    assert tuple(pixels[2, 3, :3]) == (1.0, 1.0, 1.0)  # identical: white


def test_heatmap_of_a_4d_tensor_is_one_matrix_per_channel():
    difference = np.zeros((2, 3, 4, 4))
    difference[1, 2, 0, 3] = 1.0
    result = sections.heatmap("manual-torch", "layers.0.weight.grad", "fail", "[1,2,0,3]", 1e-10, difference, 1.0)
    assert [t.label for t in result.tiles] == [f"[{n},{c},:,:]" for n in range(2) for c in range(3)]
    big = sections.heatmap("manual-torch", "x", "pass", "[0,0,0,0]", 1e-10, np.zeros((4, 5, 2, 2)), 1.0)
    assert len(big.tiles) == sections.MAX_TILES and big.tiles_left_out == 20 - sections.MAX_TILES


def test_detail_adds_a_section_and_a_pattern_matching_nothing_is_refused(tmp_path, capsys):
    from backprop_verify.reports.commands.report import build_report

    _, data = build_report(_args(tmp_path, "--detail", "seed004"), timestamp="then")
    names = [s.name for s in data.sections]
    assert names[0].startswith("activation-sigmoid-saturation") and names[1].startswith("seed004")
    seed004 = data.sections[1]
    assert seed004.reason == "detail" and seed004.counts["fail"] == 0 and seed004.heatmaps
    assert "linear 2→2" in seed004.architecture and "sgd" in seed004.architecture
    assert main(_args(tmp_path / "none", "--detail", "no-such-scenario")) == 2
    assert "--detail: 'no-such-scenario' matches no scenario" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_page_links_the_planted_failure_to_its_section(monkeypatch, tmp_path):
    _plant(monkeypatch)
    assert main(_args(tmp_path, "--quiet")) == 1
    html = (tmp_path / "report.html").read_text()
    anchor = next(s for s in html.split('id="')[1:] if s.startswith("scenario-seed004")).split('"')[0]
    assert f'<a href="#{anchor}">' in html and f'<section class="scenario" id="{anchor}">' in html
    section = html[html.index(f'<section class="scenario" id="{anchor}">'):]
    section = section[:section.index("</section>")]
    assert "worst [1,0]" in section and "data:image/png;base64," in section
    assert "<script>" in html and "https://" not in html.split("<script>")[1]  # no CDN
    assert html.index("<h2>Failures</h2>") < html.index("<h2>Floor passes and rows not judged</h2>") \
        < html.index("<h2>Per component</h2>") < html.index('<h2 id="scenarios">')


# ----------------------------------------------------------------------------- check


def test_check_names_the_worst_element_where_the_engines_disagree(monkeypatch, tmp_path, capsys):
    _plant(monkeypatch, "layers.2.weight.grad", (1, 1), 1e-3, name="example-two_layer")
    assert cli_main(["check", OWN, "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any(line.startswith("FAIL example-two_layer_sigmoid_mse layers.2.weight.grad[1,1]: printed ")
               and "disagree; tolerance 1e-10 relative" in line for line in lines), lines
    engine = [line for line in lines if " manual-torch layers.2.weight.grad[1,1]: manual " in line]
    assert len(engine) == 1 and "tolerance 1.0e-10" in engine[0]
    assert cli_main(["check", OWN, "--out", str(tmp_path), "--quiet"]) == 1
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("17 printed numbers in 1 file: ")
