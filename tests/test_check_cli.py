"""``backprop-verify check``: its three exit codes, its CSV, and nothing written on bad input."""
import re
from decimal import Decimal
from pathlib import Path

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reports.cli import main
from backprop_verify.scenarios import load_scenario
from backprop_verify.scenarios.builtin import worked_example_paths

FOLDER = Path(worked_example_paths()[0]).parent
OWN = FOLDER / "example_two_layer_sigmoid_mse.toml"      # all match or rounding
SEED002 = FOLDER / "seed002_digit_network_784_16_16_10.toml"  # 13,001 printed, 13,002 parameters
HEADER = "example,at,printed,decimals,manual,reference,verdict"


def test_exit_0_when_every_verdict_is_match_or_rounding(tmp_path, capsys):
    # a teacher's file anywhere on disk checks with no code change
    teacher = tmp_path / "chapter3" / "two_layer.toml"
    teacher.parent.mkdir()
    teacher.write_text(OWN.read_text())
    assert main(["check", str(teacher), "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "textbook.csv").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 1 + 17
    assert lines[9].startswith("example-two_layer_sigmoid_mse,loss,0.3628,4,0.36287") and lines[9].endswith(",rounding")
    out = capsys.readouterr().out
    assert "address" in out and "printed" in out and "computed" in out and "verdict" in out
    assert "14 match, 3 rounding, 0 erratum, 0 disagree" in out


def test_exit_1_on_an_erratum(tmp_path, capsys):
    assert main(["check", str(OWN), str(SEED002), "--out", str(tmp_path)]) == 1
    csv = (tmp_path / "textbook.csv").read_text()
    assert 'seed002-digit_network_784_16_16_10,parameter_count,"13,001",0,13002,13002,erratum' in csv
    out = capsys.readouterr().out
    assert "erratum   seed002-digit_network_784_16_16_10  parameter_count" in out
    assert ("FAIL seed002-digit_network_784_16_16_10 parameter_count: printed 13,001, manual 13002, torch 13002; "
            "erratum; tolerance 0 (a count: equality)") in out


def _with_expectation(tmp_path, printed: str) -> Path:
    teacher = tmp_path / "teacher.toml"
    teacher.write_text(OWN.read_text() + f'\n[[expect]]\nat = "layers.3.output[0,0]"\nprinted = "{printed}"\n')
    return teacher


def test_a_number_printed_beyond_float64_s_resolution_is_judged_at_it_and_says_so(tmp_path, capsys):
    scenario = load_scenario(OWN).astype("float64")
    value = reference.run(scenario).element("layers.3.output[0,0]")  # a¹ ≈ 0.4823, as torch computes it
    shortest = repr(value)  # the shortest decimal that reads as the value
    padded = shortest + "0" * (20 - len(shortest.partition(".")[2]))  # the float64 value padded to 20 decimals
    assert main(["check", str(_with_expectation(tmp_path, padded)), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    # the table's computed column shows every digit float64 has
    assert re.search(rf"^  layers\.3\.output\[0,0\] +{re.escape(padded)}  {re.escape(shortest)} +match$", out, re.M)
    section = out.split("Judged at float64's resolution")[1]
    assert f"match     example-two_layer_sigmoid_mse  layers.3.output[0,0]: printed {padded}" in section
    assert "— [20 decimals printed, finer than float64 resolves here (" in section
    # the CSV keeps its columns
    assert (tmp_path / "a" / "textbook.csv").read_text().splitlines()[0] == HEADER

    # one wrong 15th significant digit, 1e-15 away: 18 ulps, a digit float64 resolves
    wrong = str(Decimal(padded) + Decimal("1e-15"))
    assert main(["check", str(_with_expectation(tmp_path, wrong)), "--out", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert f"FAIL example-two_layer_sigmoid_mse layers.3.output[0,0]: printed {wrong}, manual " in out
    assert re.search(r"; erratum; tolerance ±[0-9.e-]+ around the engines' values \(float64's resolution here: the "
                     r"printed 20 decimals are finer\)$", out, re.M)


def test_exit_1_and_a_loud_message_when_the_engines_disagree(tmp_path, capsys, monkeypatch):
    honest = manual.run

    def broken(scenario):
        trace = honest(scenario)
        trace["loss"] = trace["loss"] + 1e-3
        return trace

    monkeypatch.setattr(manual, "run", broken)
    assert main(["check", str(OWN), "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "DISAGREE" in captured.err
    assert "example-two_layer_sigmoid_mse,loss,0.3628,4,0.36387" in (tmp_path / "textbook.csv").read_text()


def test_exit_2_on_an_invalid_file_names_file_and_field_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "teacher.toml"
    bad.write_text(OWN.read_text().replace('at = "loss"', 'at = "layers.9.output[0,0]"'))
    out = tmp_path / "out"
    assert main(["check", str(OWN), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "teacher.toml: expect[8].at: 'layers.9.output' does not exist" in err
    assert not out.exists()


def test_csv_is_byte_identical_across_runs(tmp_path):
    files = [str(OWN), str(SEED002)]
    main(["check", *files, "--out", str(tmp_path / "a")])
    main(["check", *files, "--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "textbook.csv").read_bytes() == (tmp_path / "b" / "textbook.csv").read_bytes()


def test_derivations_are_written_on_request(tmp_path, capsys):
    assert main(["check", "--derivations", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "derivations.csv").read_text()
    assert text.startswith("id,document,statement,verdict,corrected,holds_in,fails_in,worst_rel\n")
    assert "003-two-layer-output-weight" in capsys.readouterr().out
