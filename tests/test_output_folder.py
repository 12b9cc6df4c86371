"""One consistent output folder (``reports.rendering.io.RunFolder``; docs/report.md, "The output folder").

After any run the folder holds the files of one run per command, all of them that run's, named with
their sizes and sha256 in ``manifest.json``; a second run into a folder another run holds is refused
(exit 2, naming the folder and the other run's pid); what dead runs left (staged ``.NAME.XXXXXXXX.tmp``
files, scratch folders) goes with the next run; ``report --workers`` dies with its process, even by
kill -9; and a refused command line never imports torch.

Each mechanism has a test of the behaviour and a test with the mechanism broken (a monkeypatch, or a
mutant in a child process) that shows the first test would catch it.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backprop_verify.reports.cli import main
from backprop_verify.reports.rendering import io
from backprop_verify.reports.rendering.io import LOCK, MANIFEST, FolderRefused, RunFolder
from tests.helpers import descendants, running, snapshot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "scenarios" / "worked_examples" / "example_two_layer_sigmoid_mse.toml"  # no claims
PLOTS = ("discrepancy_distribution.png", "optimizer_steps.png", "vanishing_gradient.png", "recurrent_gradient.png",
         "digits_loss.png")  # docs/report.md's table of files
REPORT_OUTPUTS = ("discrepancies.csv", "summary.md", "report.html", "changes.md", *PLOTS)
# A valid --compare-to table (written before the worst-element columns): one row.
OLD_TABLE = ("scenario,pair,dtype,address,max_abs,max_rel,tolerance,passed,note,status\n"
             "seed004-two_layer_sigmoid_softmax,manual-torch,float64,loss,0.000000e+00,0.000000e+00,"
             "1.000000e-10,True,,pass\n")
# The smallest report: one worked example, no random nets.
SMALL = ["--only", "^seed004", "--random", "0", "--random-conv", "0", "--random-recurrent", "0", "--quiet"]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def files_of(folder: Path) -> dict[str, dict[str, dict]]:
    """command -> {file name: record} of the runs the folder's manifest records."""
    return {run["command"]: run["files"] for run in manifest_of(folder)["runs"]}


def publish(folder: Path, command: str, files: dict[str, bytes], outputs=None) -> None:
    """One run of ``command`` writing ``files`` (``outputs``: every name the command can write)."""
    with RunFolder.claim(folder, command, [command, "--test"]) as run:
        run.expect(outputs=outputs or files, writes=files)
        run.publish(files)


# ----------------------------------------------------------------------------- the manifest


def test_a_run_publishes_its_files_and_a_manifest_naming_the_run_and_every_file(tmp_path):
    out = tmp_path / "new" / "out"
    files = {"discrepancies.csv": b"a,b\n1,2\n", "summary.md": "Σ summary\n"}
    with RunFolder.claim(out, "report", ["backprop-verify", "report", "--seed", "7"], {"seed": 7}) as run:
        assert (out / LOCK).is_file()
        run.expect(outputs=REPORT_OUTPUTS, writes=files)
        run.publish(files)
    assert sorted(p.name for p in out.iterdir()) == ["discrepancies.csv", MANIFEST, "summary.md"]  # no lock left
    [recorded] = manifest_of(out)["runs"]
    assert manifest_of(out)["format"] == "backprop-verify manifest 1"
    assert recorded["command"] == "report" and recorded["seed"] == 7
    assert recorded["command_line"] == ["backprop-verify", "report", "--seed", "7"]
    assert recorded["pid"] == os.getpid() and len(recorded["run_id"]) == 32 and recorded["version"]
    for name in files:
        data = (out / name).read_bytes()
        assert recorded["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert set(recorded["files"]) == set(files)


def _after_a_smaller_run(folder: Path) -> set[str]:
    """A full report's files, then a run of the same command that writes only the tables: what is left."""
    publish(folder, "report", {name: name.encode() for name in REPORT_OUTPUTS})
    publish(folder, "report", {"discrepancies.csv": b"new\n", "summary.md": b"new\n"}, outputs=REPORT_OUTPUTS)
    return {p.name for p in folder.iterdir()}


def test_a_run_removes_the_files_of_the_earlier_run_it_does_not_write(tmp_path):
    assert _after_a_smaller_run(tmp_path) == {"discrepancies.csv", "summary.md", MANIFEST}
    assert set(files_of(tmp_path)["report"]) == {"discrepancies.csv", "summary.md"}


def test_injected_bug_stale_files_kept_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(RunFolder, "_stale", lambda self, writes: {})  # the earlier run's files left in place
    assert {"report.html", "changes.md", *PLOTS} <= _after_a_smaller_run(tmp_path)


def test_other_commands_runs_stay_and_a_run_sharing_a_file_replaces_the_whole_earlier_run(tmp_path):
    publish(tmp_path, "report", {"discrepancies.csv": b"report\n", "summary.md": b"report\n"})
    publish(tmp_path, "check", {"textbook.csv": b"check\n", "claims.csv": b"check\n"})
    assert set(files_of(tmp_path)) == {"report", "check"}  # report and check share reports/out
    publish(tmp_path, "pytest", {"discrepancies.csv": b"pytest\n"})  # pytest --report-dir writes the same table
    assert files_of(tmp_path).keys() == {"check", "pytest"}
    assert {p.name for p in tmp_path.iterdir()} == {"discrepancies.csv", "textbook.csv", "claims.csv", MANIFEST}
    publish(tmp_path, "check", {"derivations.csv": b"check --derivations\n"},
            outputs=("textbook.csv", "claims.csv", "derivations.csv"))
    assert {p.name for p in tmp_path.iterdir()} == {"discrepancies.csv", "derivations.csv", MANIFEST}


def test_a_file_changed_since_its_run_wrote_it_is_refused_not_removed(tmp_path):
    publish(tmp_path, "report", {name: name.encode() for name in REPORT_OUTPUTS})
    (tmp_path / "report.html").write_text("edited by hand")
    before = snapshot(tmp_path)
    with pytest.raises(FolderRefused, match=r": report\.html: changed since the run manifest\.json records wrote them"):
        publish(tmp_path, "report", {"discrepancies.csv": b"new\n", "summary.md": b"new\n"}, outputs=REPORT_OUTPUTS)
    assert snapshot(tmp_path) == before


def test_files_named_like_outputs_that_no_run_recorded_are_refused_unless_rewritten(tmp_path):
    """A folder of an unknown origin (no manifest) with report.html and a plot: a --no-plots run would leave
    them beside its own tables; it is refused, naming them, and nothing changes. The tables themselves,
    rewritten by the run, and files of other names are no obstacle."""
    for name in ("discrepancies.csv", "report.html", "digits_loss.png", "notes.txt"):
        (tmp_path / name).write_text("someone's")
    before = snapshot(tmp_path)
    with pytest.raises(FolderRefused) as refused:
        publish(tmp_path, "report", {"discrepancies.csv": b"new\n", "summary.md": b"new\n"}, outputs=REPORT_OUTPUTS)
    assert ": digits_loss.png, report.html: not recorded in manifest.json" in str(refused.value)
    assert "; expected " in str(refused.value)
    assert snapshot(tmp_path) == before
    (tmp_path / "report.html").unlink()
    (tmp_path / "digits_loss.png").unlink()
    publish(tmp_path, "report", {"discrepancies.csv": b"new\n", "summary.md": b"new\n"}, outputs=REPORT_OUTPUTS)
    assert (tmp_path / "notes.txt").read_text() == "someone's"


@pytest.mark.parametrize("manifest, problem", [
    (b"{not json", "not JSON"),
    (b'{"runs": []}', 'no "format"'),
    (json.dumps({"format": "backprop-verify manifest 1", "runs": [{"command": "report", "files": {
        "../victim.txt": {"bytes": 6, "sha256": hashlib.sha256(b"victim").hexdigest()}}}]}).encode(),
     "'../victim.txt' is not a file name in the folder"),
    (b" " * (io.MAX_MANIFEST_BYTES + 1), "more than"),
], ids=["not-json", "no-format", "path-outside", "huge"])
def test_a_manifest_no_run_wrote_is_refused_and_nothing_is_removed(tmp_path, manifest, problem):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_bytes(manifest)
    (tmp_path / "victim.txt").write_text("victim")
    before = snapshot(tmp_path)
    with pytest.raises(FolderRefused) as refused:
        publish(out, "report", {"discrepancies.csv": b"new\n"})
    assert str(refused.value).startswith(f"{out / MANIFEST}: ") and problem in str(refused.value)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- dead runs' leftovers

DEAD_RUNS_LEFT = (".discrepancies.csv.k3j_x9q2.tmp", ".manifest.json.abcdefgh.tmp", ".report.html.0a1b2c3d.tmp")
NOT_OURS = (".notes.tmp", ".bench.csv.abcdefgh.tmp", ".discrepancies.csv.tmp", "notes.txt")


def _leftovers_after_a_run(folder: Path) -> set[str]:
    """A folder with what killed runs leave and files that are not the project's; a run; what is left."""
    for name in DEAD_RUNS_LEFT + NOT_OURS:
        (folder / name).write_text("x")
    (folder / ".backprop-verify-scratch.ab_12cde" / "basetemp").mkdir(parents=True)
    (folder / ".backprop-verify-scratch.ab_12cde" / "discrepancies.csv").write_text("15 MB")
    (folder / "sweep-1").mkdir()
    publish(folder, "report", {"discrepancies.csv": b"new\n", "summary.md": b"new\n"}, outputs=REPORT_OUTPUTS)
    return {p.name for p in folder.iterdir()}


def test_the_next_run_removes_what_killed_runs_left_and_nothing_else(tmp_path):
    assert _leftovers_after_a_run(tmp_path) == {*NOT_OURS, "sweep-1", "discrepancies.csv", "summary.md", MANIFEST}


def test_injected_bug_stale_temporaries_kept_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_STAGED", io.re.compile(r"(?!)"))  # matches nothing: no temporary is recognised
    assert set(DEAD_RUNS_LEFT) <= _leftovers_after_a_run(tmp_path)


# ----------------------------------------------------------------------------- the lock


def _second_claim(folder: Path) -> str | None:
    """While one run holds ``folder``, another claims it: its refusal (None if it got the folder)."""
    with RunFolder.claim(folder, "report", ["backprop-verify", "report", "--out", str(folder)]):
        try:
            RunFolder.claim(folder, "check", ["backprop-verify", "check"]).close()
        except FolderRefused as err:
            return str(err)
    return None


def test_a_second_run_into_a_held_folder_is_refused_naming_the_folder_and_the_pid(tmp_path):
    refusal = _second_claim(tmp_path)
    assert refusal == (f"{tmp_path} is in use by another run (pid {os.getpid()}: backprop-verify report --out "
                       f"{tmp_path}); expected one run at a time in a folder: wait for it to finish, or choose "
                       "another folder")
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the run that held it
    RunFolder.claim(tmp_path, "check").close()  # free again


def test_injected_bug_no_lock_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(io.fcntl, "flock", lambda fd, operation: None)
    assert _second_claim(tmp_path) is None


def test_a_lock_file_left_by_a_killed_run_does_not_hold_the_folder(tmp_path):
    (tmp_path / LOCK).write_text("12345 backprop-verify report\n")  # its flock died with its process
    publish(tmp_path, "report", {"discrepancies.csv": b"new\n"})
    assert not (tmp_path / LOCK).exists()


def test_report_and_check_into_a_held_folder_exit_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("the other run's")
    with RunFolder.claim(out, "report", ["backprop-verify", "report", "--out", str(out)]):
        before = snapshot(tmp_path)
        capsys.readouterr()
        for argv in (["report", "--out", str(out), "--no-plots", *SMALL], ["check", str(EXAMPLE), "--out", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.splitlines() == [f"backprop-verify {argv[0]}: --out: {out} is in use by another run (pid "
                                        f"{os.getpid()}: backprop-verify report --out {out}); expected one run at a "
                                        "time in a folder: wait for it to finish, or choose another folder"], err
            assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- report and check, end to end


def test_after_any_report_the_folder_holds_exactly_that_report_s_files(tmp_path, capsys):
    """A full report with --compare-to, then a --no-plots report without it into the same folder (with a
    dead run's staged table and scratch folder planted between them): report.html, the plots and
    changes.md of the first are gone, and the manifest names the second run and exactly its files."""
    old, out = tmp_path / "old", tmp_path / "out"
    old.mkdir()
    (old / "discrepancies.csv").write_text(OLD_TABLE)
    first = ["report", "--out", str(out), "--compare-to", str(old), *SMALL]
    assert main(first) == 0
    assert {p.name for p in out.iterdir()} == {*REPORT_OUTPUTS, MANIFEST}
    assert files_of(out)["report"].keys() == set(REPORT_OUTPUTS)
    (out / ".discrepancies.csv.q1w2e3r4.tmp").write_text("a report killed while staging")
    (out / ".backprop-verify-scratch.q1w2e3r4").mkdir()

    second = ["report", "--out", str(out), "--no-plots", *SMALL]
    assert main(second) == 0
    assert {p.name for p in out.iterdir()} == {"discrepancies.csv", "summary.md", MANIFEST}
    [run] = manifest_of(out)["runs"]
    assert run["command_line"] == ["backprop-verify", *second] and run["seed"] == 0
    for name, record in run["files"].items():
        data = (out / name).read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert run["files"].keys() == {"discrepancies.csv", "summary.md"}


def test_check_records_its_files_beside_a_report_s(tmp_path):
    publish(tmp_path, "report", {"discrepancies.csv": b"report\n", "summary.md": b"report\n"})
    assert main(["check", str(EXAMPLE), "--out", str(tmp_path), "--quiet"]) == 0
    recorded = files_of(tmp_path)
    assert recorded["check"].keys() == {"textbook.csv", "claims.csv"}
    assert recorded["report"].keys() == {"discrepancies.csv", "summary.md"}
    data = (tmp_path / "textbook.csv").read_bytes()
    assert recorded["check"]["textbook.csv"]["sha256"] == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- refusals are cheap

REFUSALS = textwrap.dedent("""
    import json, sys
    from backprop_verify.reports.cli import main
    from backprop_verify.reports.rendering.io import RunFolder
    out, bad_file, damaged, held = sys.argv[1:5]
    codes = {
        "check, invalid file": main(["check", bad_file, "--out", out]),
        "check, no such file": main(["check", bad_file + ".missing", "--out", out]),
        "report, bad option": main(["report", "--seed", "-1", "--out", out]),
        "report, --only matching nothing": main(["report", "--only", "^nothing-is-named-so", "--out", out]),
        "report, damaged --compare-to": main(["report", "--compare-to", damaged, "--out", out]),
    }
    with RunFolder.claim(held, "report"):
        codes["report, held folder"] = main(["report", "--out", held, "--no-plots"])
        codes["check, held folder"] = main(["check", sys.argv[5], "--out", held])
    print(json.dumps({"codes": codes, "imported": [m for m in ("torch", "matplotlib") if m in sys.modules]}))
""")


def _refusals(tmp_path: Path, prelude: str = "") -> dict:
    """Every kind of refusal of check and report, in one fresh interpreter: their exit codes, and which
    heavy modules were imported by the end."""
    bad = tmp_path / "teacher.toml"
    bad.write_text(EXAMPLE.read_text().replace('at = "loss"', 'at = "layers.9.output[0,0]"'))
    damaged = tmp_path / "old"
    damaged.mkdir()
    (damaged / "discrepancies.csv").write_text(OLD_TABLE[: len(OLD_TABLE) // 2])
    (tmp_path / "held").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run([sys.executable, "-c", prelude + REFUSALS, str(tmp_path / "out"), str(bad), str(damaged),
                             str(tmp_path / "held"), str(EXAMPLE)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.subprocess
def test_a_refusal_imports_neither_torch_nor_matplotlib(tmp_path):
    """Every refusal (a bad file, a bad option, a damaged --compare-to, a held folder) is decided before the
    engines are imported: it costs a fraction of a second, not the seconds of ``import torch``."""
    found = _refusals(tmp_path)
    assert set(found["codes"].values()) == {2}, found
    assert found["imported"] == [], found
    assert not (tmp_path / "out").exists()


@pytest.mark.subprocess
def test_injected_bug_a_command_importing_a_heavy_module_at_the_top_is_caught(tmp_path):
    """As if report.py imported matplotlib's figure module (for its plots) at module level."""
    found = _refusals(tmp_path, prelude="import matplotlib.figure\n")
    assert set(found["codes"].values()) == {2} and "matplotlib" in found["imported"]


# ----------------------------------------------------------------------------- report --workers dies with report


def _wait_until(condition, limit: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``limit`` seconds pass (a bound against a hang)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the processes")


@pytest.mark.subprocess
@needs_proc
def test_kill_9_of_report_with_workers_ends_the_pytest_run_and_its_scratch_folder(tmp_path):
    """kill -9 of ``report --workers 2`` while its pytest controller and two workers run: they all end
    (the controller reads end-of-file on the report's pipe, removes its scratch folder and kills its
    process group; the workers get the kernel's parent-death signal), nothing is left in the temporary
    folder, and the output folder holds what it held plus the dead run's lock file (no lock: its flock
    died with it; the next run removes the file)."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    (out / "summary.md").write_text("previous")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    # The whole default scenario set: the workers are still busy when the kill comes.
    report = subprocess.Popen([sys.executable, "-m", "backprop_verify.reports.cli", "report", "--workers", "2",
                               "--no-plots", "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    seen: set[int] = set()
    try:
        def workers_run():
            seen.update(descendants(report.pid))
            return len(running(seen)) >= 3 or report.poll() is not None  # the controller and two workers

        assert _wait_until(workers_run, 120) and report.poll() is None, f"the workers never started: {seen}"
        assert [p.name for p in out.iterdir() if p.name.startswith(".backprop-verify-scratch.")]
        os.kill(report.pid, signal.SIGKILL)
        report.wait(timeout=30)
        assert _wait_until(lambda: not running(seen)), f"left running: {sorted(running(seen))}"
    finally:
        for pid in running(seen | {report.pid}):
            os.kill(pid, signal.SIGKILL)
    assert _wait_until(lambda: sorted(p.name for p in out.iterdir()) == [LOCK, "summary.md"]), list(out.iterdir())
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")] == []
    assert (out / "summary.md").read_text() == "previous"


# The pieces the test above relies on, in processes that start in a fraction of a second: a "controller"
# started as report starts pytest (own session, the read end of the pipe), and its "worker" child. The
# mutants take one mechanism out each, and the check the test above makes sees the difference.
CONTROLLER = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    from backprop_verify.reports.commands import pytest_plugin
    fd, scratch, mutant, worker_script = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mutant.startswith("killpg does nothing"):
        os.killpg = lambda group, signum: None
    if mutant != "no pipe watch":
        pytest_plugin._watch_parent_pipe(fd, scratch)
    subprocess.Popen([sys.executable, "-c", worker_script, str(os.getpid()), mutant])
    time.sleep(120)
""")
WORKER = textwrap.dedent("""
    import os, sys, time
    from backprop_verify.reports.commands import pytest_plugin
    if sys.argv[2] != "killpg does nothing, no death signal":
        pytest_plugin._die_with(int(sys.argv[1]))
    print(os.getpid(), flush=True)  # armed
    time.sleep(120)
""")


def _survivors(tmp_path: Path, mutant: str, expected: set[str]) -> tuple[set[str], bool]:
    """Start a controller and its worker, then close the pipe's write end as a killed report does: which of
    the two still run once those ``expected`` to survive are the only ones left (or 10 s have passed), and
    whether the scratch folder is still there."""
    scratch = tmp_path / ".backprop-verify-scratch.abcdefgh"
    scratch.mkdir()
    read_end, write_end = os.pipe()
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(read_end), str(scratch), mutant, WORKER],
                                  cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                                  pass_fds=(read_end,))
    os.close(read_end)
    pids = {"controller": controller.pid}
    try:
        ready, _, _ = select.select([controller.stdout], [], [], 60)
        assert ready, "the worker never armed itself"
        pids["worker"] = int(controller.stdout.readline())  # the worker's line, on the stdout it inherited
        os.close(write_end)
        write_end = None
        doomed = {pid for name, pid in pids.items() if name not in expected}
        _wait_until(lambda: not running(doomed) and (bool(expected) or not scratch.exists()), 10)
        time.sleep(0.5)  # and a moment for the expected survivors to show they do survive
        return {name for name, pid in pids.items() if running({pid})}, scratch.exists()
    finally:
        if write_end is not None:
            os.close(write_end)
        for pid in running(set(pids.values())):
            os.kill(pid, signal.SIGKILL)
        controller.wait(timeout=30)


@pytest.mark.subprocess
@needs_proc
@pytest.mark.parametrize("mutant, survivors, scratch_left", [
    ("none", set(), False),
    ("killpg does nothing", set(), False),  # the worker dies by the kernel's parent-death signal alone
    ("no pipe watch", {"controller", "worker"}, True),
    ("killpg does nothing, no death signal", {"worker"}, False),
], ids=["as-built", "death-signal-alone", "injected-bug-no-pipe-watch", "injected-bug-no-death-signal"])
def test_the_pytest_run_dies_with_the_report_by_the_pipe_and_the_death_signal(tmp_path, mutant, survivors,
                                                                              scratch_left):
    assert _survivors(tmp_path, mutant, survivors) == (survivors, scratch_left)
