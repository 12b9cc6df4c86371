"""``backprop-verify report``: deterministic files, --workers, --compare-to, atomic writes.

The runs here use ``--only`` to keep to a handful of scenarios; the full
default report is the command's job, not the test suite's.
"""
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from backprop_verify.reports.rendering import diff
from backprop_verify.reports.cli import build_parser
from backprop_verify.reports.rendering.io import atomic_write_many
from backprop_verify.reports.commands.report import main
from backprop_verify.reports.rendering.table import read_csv_text, validate_csv_text
from tests.helpers import reaped

ROOT = Path(__file__).resolve().parent.parent
# Components (smooth, saturated, kink), a loss, the worked example (one SGD step), two random nets.
ONLY = r"activation-sigmoid-saturation-f64|activation-relu-kink-f32|loss-bce-sum-saturated-f64|seed004|random-s[12]-"
RANDOM = 3
# A smaller set for the pytest-xdist run (no optimizer: its first use in a fresh process costs ~1.5 s).
WORKERS_ONLY = r"activation-relu-kink-f32|loss-bce-sum-saturated-f64|random-s1-"


def _args(out, *extra, only=ONLY):
    return build_parser().parse_args(["report", "--only", only, "--random", str(RANDOM), "--out", str(out), *extra])


def _without_timestamp(text: str) -> str:
    lines = text.splitlines()
    stamped = [line for line in lines if line.startswith("Generated: ")]
    assert len(stamped) == 1, "summary.md must carry exactly one timestamp line"
    return "\n".join(line for line in lines if not line.startswith("Generated: "))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    assert main(_args(out, "--no-plots")) == 0
    return out


def test_report_files_and_columns(baseline):
    frame = read_csv_text((baseline / "discrepancies.csv").read_text())
    assert list(frame.columns) == ["scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance",
                                   "passed", "note", "status", "worst_index", "value", "reference_value", "triage"]
    # the worst element: an index of the address's rank (empty for the scalar loss), both values there
    assert (frame.loc[frame["address"] == "loss", "worst_index"] == "").all()
    assert frame.loc[frame["address"].str.endswith("weight.grad"), "worst_index"].str.fullmatch(r"\[\d+,\d+\]").all()
    exact = frame["max_abs"] == 0
    assert (frame.loc[exact, "value"] == frame.loc[exact, "reference_value"]).all()
    assert set(frame["status"]) <= {"pass", "floor", "not_judged", "fail"}
    assert (frame["passed"] == (frame["status"] != "fail")).all()
    assert set(frame["pair"]) == {"manual-torch", "manual-fd", "torch-fd"}
    assert frame["scenario"].nunique() == 6
    keys = list(zip(frame["scenario"], frame["pair"], frame["address"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    summary = (baseline / "summary.md").read_text()
    for needle in ("Seed: 0", "Python: ", "NumPy: ", "PyTorch: ", "BLAS: ", "Reproduce: `backprop-verify report",
                   "activation:sigmoid", "loss:bce", "optimizer:sgd", "layer:linear", "float32", "float64",
                   "Vanishing gradient", "Textbook errata", "Derivation verdicts"):
        assert needle in summary, needle


def test_floor_passes_do_not_set_the_worst(baseline):
    """The saturated BCE scenario passes some addresses only on the absolute floor, with a huge max_rel."""
    frame = read_csv_text((baseline / "discrepancies.csv").read_text())
    floor = frame["status"] == "floor"
    assert floor.any(), "the chosen scenarios no longer exercise the absolute floor"
    assert frame.loc[floor, "note"].str.startswith("within absolute floor").all()  # the note explains it
    from backprop_verify.reports.rendering.table import component_summary

    summary = component_summary(frame, {name: ["c"] for name in frame["scenario"]})
    relative = frame[frame["status"] == "pass"]
    for (dtype, pair), group in relative.groupby(["dtype", "pair"]):
        row = summary[(summary["dtype"] == dtype) & (summary["pair"] == pair)].iloc[0]
        assert row["worst_max_rel"] == group["max_rel"].max()
    assert summary["floor_passes"].sum() == floor.sum()
    assert frame.loc[floor, "max_rel"].max() > summary["worst_max_rel"].max()


def test_same_seed_gives_identical_files(baseline, tmp_path):
    assert main(_args(tmp_path, "--no-plots")) == 0
    assert (tmp_path / "discrepancies.csv").read_bytes() == (baseline / "discrepancies.csv").read_bytes()
    assert _without_timestamp((tmp_path / "summary.md").read_text()) == \
        _without_timestamp((baseline / "summary.md").read_text())


@pytest.mark.subprocess
def test_workers_2_gives_identical_files(tmp_path):
    """pytest-xdist with two workers: the same csv and summary as in one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(one, "--no-plots", only=WORKERS_ONLY)) == 0
    assert main(_args(two, "--no-plots", "--workers", "2", only=WORKERS_ONLY)) == 0
    assert (two / "discrepancies.csv").read_bytes() == (one / "discrepancies.csv").read_bytes()
    assert _without_timestamp((two / "summary.md").read_text()) == _without_timestamp((one / "summary.md").read_text())


def test_html_embeds_the_plots_failures_first(baseline):
    """report.html from the baseline's data with one injected failure: failures come first, plots inline."""
    from backprop_verify.reports.rendering.html import render_html
    from backprop_verify.reports.rendering.plots import PLOTS, vanishing_gradient
    from backprop_verify.reports.commands.report import build_report

    _, data = build_report(_args(baseline), timestamp="then", with_plots=False)
    data.frame.loc[0, ["passed", "max_rel", "status"]] = [False, 0.5, "fail"]
    png = vanishing_gradient(data.vanishing)
    assert png.startswith(b"\x89PNG")
    html = render_html(data, {name: png for name in PLOTS})
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert html.index("<h2>Failures</h2>") < html.index('<tr class="fail">') < html.index("<h2>Per component</h2>")
    assert "1 failure</strong>" in html


def test_compare_to_flags_an_injected_regression(baseline, tmp_path, capsys):
    same = tmp_path / "same"
    assert main(_args(same, "--no-plots", "--compare-to", str(baseline))) == 0
    assert "0 new failures, 0 discrepancies grown" in (same / "changes.md").read_text()

    # Inject a regression: in the old report one address agreed 1000x better than it does now.
    old = tmp_path / "old"
    shutil.copytree(baseline, old)
    frame = read_csv_text((old / "discrepancies.csv").read_text())
    grown = frame.index[(frame["dtype"] == "float64") & (frame["max_rel"] > 1e-13) & (frame["status"] == "pass")][0]
    frame.loc[grown, "max_rel"] = frame.loc[grown, "max_rel"] / 1000.0
    (old / "discrepancies.csv").write_text(frame.to_csv(index=False, float_format="%.6e"))

    capsys.readouterr()
    new = tmp_path / "new"
    assert main(_args(new, "--no-plots", "--compare-to", str(old))) == 1
    assert "REGRESSION" in capsys.readouterr().out
    changes = (new / "changes.md").read_text()
    assert "grown >10x" in changes and frame.loc[grown, "address"] in changes


def test_diff_classifies_changes():
    def frame(rows):
        table = pd.DataFrame(rows, columns=["scenario", "pair", "dtype", "address", "max_rel", "passed"])
        return table.assign(tolerance=1e-10, status=table["passed"].map({True: "pass", False: "fail"}))

    old = frame([("s", "manual-torch", "float64", "a", 1e-15, True),
                 ("s", "manual-torch", "float64", "b", 0.0, True),
                 ("s", "manual-torch", "float64", "c", 1.0, False),
                 ("s", "manual-torch", "float64", "gone", 0.0, True)])
    new = frame([("s", "manual-torch", "float64", "a", 2e-13, True),      # 200x: grown
                 ("s", "manual-torch", "float64", "b", 1e-16, True),      # 0 -> 1 ulp: rounding, not grown
                 ("s", "manual-torch", "float64", "c", 1e-16, True),      # fixed
                 ("s", "manual-torch", "float64", "new", math.inf, False)])  # new failure
    table = diff.changes(old, new)
    assert dict(zip(table["address"], table["change"])) == {
        "new": "new failure", "a": "grown >10x", "c": "fixed", "(1 addresses)": "removed"}
    assert diff.regressed(table)
    assert not diff.regressed(diff.changes(old, old))


def test_compare_to_reads_a_table_without_status(baseline, tmp_path):
    """A discrepancies.csv written before the status column existed is still a baseline."""
    old = tmp_path / "old"
    old.mkdir()
    frame = read_csv_text((baseline / "discrepancies.csv").read_text())
    failed_before = frame.index[frame["status"] == "pass"][0]
    frame.loc[failed_before, "passed"] = False
    frame.drop(columns=["status", "worst_index", "value", "reference_value", "triage"]).to_csv(
        old / "discrepancies.csv", index=False, float_format="%.6e")
    new = tmp_path / "new"
    assert main(_args(new, "--no-plots", "--compare-to", str(old))) == 0
    changes = (new / "changes.md").read_text()
    assert "1 fixed" in changes and frame.loc[failed_before, "address"] in changes


def test_status_outside_the_four_is_refused(baseline, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    text = (baseline / "discrepancies.csv").read_text()
    (old / "discrepancies.csv").write_text(text.replace(",pass,", ",passed,", 1))
    assert main(_args(tmp_path / "new", "--no-plots", "--compare-to", str(old))) == 2
    assert not (tmp_path / "new").exists()


def test_interrupted_write_leaves_previous_files_intact(tmp_path, monkeypatch):
    previous = {"discrepancies.csv": b"old csv\n", "summary.md": b"old summary\n", "report.html": b"<p>old</p>"}
    for name, data in previous.items():
        (tmp_path / name).write_bytes(data)
    calls = []

    def fsync_then_interrupt(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_many({tmp_path / name: b"new" for name in previous})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == previous


def test_compare_to_a_report_cut_off_mid_row_is_refused(baseline, tmp_path, capsys):
    """Half of a real discrepancies.csv (as a full disk or a killed copy leaves it): exit 2 naming the
    file and the line, nothing written — never a smaller baseline whose missing rows all look new."""
    old = tmp_path / "old"
    shutil.copytree(baseline, old)
    text = (baseline / "discrepancies.csv").read_text()
    (old / "discrepancies.csv").write_text(text[: len(text) // 2])
    capsys.readouterr()
    assert main(_args(tmp_path / "new", "--no-plots", "--compare-to", str(old))) == 2
    message = capsys.readouterr().err.strip()
    last_line = text[: len(text) // 2].count("\n") + 1
    assert message.startswith(f"backprop-verify report: --compare-to: {old / 'discrepancies.csv'}: line {last_line}: ")
    assert "; expected " in message
    assert not (tmp_path / "new").exists()


_SIGTERM_CAUGHT = 1 << (signal.SIGTERM - 1)


def _catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has a SIGTERM handler: the bare interpreter has none, ``reports.cli.main``
    installs one (with its SIGINT handler) before it imports anything heavy."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & _SIGTERM_CAUGHT)
    except FileNotFoundError:
        pass
    return False


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the run is under way")
def test_ctrl_c_midway_leaves_previous_report_intact(baseline, tmp_path):
    """Ctrl-C during a real run. Where it lands is up to the scheduler, so the test holds wherever it
    lands once the command runs: before the files are renamed into place, exit 130, one line, the
    previous report byte for byte; after (the run had finished), a complete new report. Either way no
    temporary file. Before the command has installed its handlers (interpreter start-up) nothing of
    the command is running, so the test waits for them (/proc's SigCgt) and sends the signal after
    ~1.5 s of CPU, usually while scenarios are being verified."""
    out = tmp_path / "out"
    shutil.copytree(baseline, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "backprop_verify.reports.cli", "report", "--no-plots", "--out", str(out)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with reaped(process):
        deadline = time.monotonic() + 60
        while not _catches_sigterm(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        while _cpu_seconds(process.pid) < 1.5 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    stderr = stderr.decode()
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before), "a temporary file was left behind"
    if process.returncode == 130:
        assert stderr.splitlines()[-1:] == ["backprop-verify report: interrupted by SIGINT; nothing was written, "
                                            "the previous files are unchanged"], stderr[-2000:]
        assert "Traceback" not in stderr, stderr[-2000:]
        assert after == before
    else:  # the run had finished (or was renaming its files) when the signal came: the new report, complete
        assert process.returncode in (0, 1), stderr[-2000:]
        validate_csv_text(after["discrepancies.csv"].decode())
        assert after["discrepancies.csv"] != before["discrepancies.csv"]  # the default run, not the baseline's 6
        assert after["summary.md"].decode().count("Generated: ") == 1


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
