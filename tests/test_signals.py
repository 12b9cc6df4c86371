"""``check`` stops on the first SIGTERM, even in the middle of a heavy claim (docs/textbook.md, "Output
and exit codes"): exit 143, one line, the folder as it was.

A claim's formula is evaluated on every draw, on both engines' quantities, with no checkpoint inside:
``check`` lets a signal raise where it lands (``reports.rendering.io.immediate_interrupts``), so a CI
runner's SIGTERM ends it at once instead of after minutes of evaluation.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backprop_verify.reports.rendering.io import RunFolder
from tests.cases_claims import SIGMOID_NET, claim
from tests.helpers import reaped, snapshot

ROOT = Path(__file__).resolve().parent.parent
# 1,296 × 1,296 entries from x's 6 (well inside the claim guards): ~0.15 s per evaluation, 2 × 101 evaluations
# per claim, four claims — minutes of work without a checkpoint.
BIG = "outer(outer(outer(x, x), outer(x, x)), outer(outer(x, x), outer(x, x)))"
HEAVY_BOOK = SIGMOID_NET + "".join(claim(f"sum(tanh({BIG}) * exp({BIG}) * sigmoid({BIG}) * {k})", "loss", draws=100)
                                   for k in range(1, 5))
# ``backprop-verify check`` as the program, which touches STARTED when the claims' judging begins; the
# mutant ("checkpoints only") runs it as it was: a signal recorded and raised at the next checkpoint.
CHECK = textwrap.dedent("""
    import contextlib, pathlib, sys
    from backprop_verify.reports.commands import check
    from backprop_verify.reports.textbook import claims
    started, mutant = pathlib.Path(sys.argv[1]), sys.argv[2]
    judge = claims.check_claims

    def announced(*args, **kwargs):
        started.touch()
        return judge(*args, **kwargs)

    claims.check_claims = announced
    if mutant == "checkpoints only":
        check.immediate_interrupts = contextlib.nullcontext
    from backprop_verify.reports.cli import main
    sys.argv = ["backprop-verify", *sys.argv[3:]]
    sys.exit(main())
""")


def _sigterm_while_claims_are_judged(tmp_path: Path, mutant: str = "none"):
    """Start ``check HEAVY_BOOK --out OUT`` (OUT holding an earlier check's files), send SIGTERM once its
    claims are being judged; return (the process, OUT's files before)."""
    book, out, started = tmp_path / "heavy.toml", tmp_path / "out", tmp_path / "started"
    book.write_text(HEAVY_BOOK, encoding="utf-8")
    with RunFolder.claim(out, "check") as earlier:
        earlier.expect(outputs=("textbook.csv", "claims.csv"), writes=("textbook.csv", "claims.csv"))
        earlier.publish({"textbook.csv": "earlier\n", "claims.csv": "earlier\n"})
    before = snapshot(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([sys.executable, "-c", CHECK, str(started), mutant, "check", str(book), "--out",
                                str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), process.communicate(timeout=60)[1].decode()[-2000:]
    time.sleep(0.3)  # inside the first claim's evaluations
    process.send_signal(signal.SIGTERM)
    return process, before


# How soon after SIGTERM the check must have stopped. It stops within about 0.1 s; the claims left take
# minutes, so this bound catches only a SIGTERM that waits for them (the mutant below) on any machine load.
STOP_WITHIN = 8.0


@pytest.mark.subprocess
def test_check_stops_on_the_first_sigterm_inside_a_heavy_claim(tmp_path):
    process, before = _sigterm_while_claims_are_judged(tmp_path)
    with reaped(process):
        _, stderr = process.communicate(timeout=STOP_WITHIN)
    stderr = stderr.decode()
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.splitlines() == ["backprop-verify check: interrupted by SIGTERM; nothing was written, the previous "
                                   "files are unchanged"], stderr[-2000:]
    assert snapshot(tmp_path / "out") == before  # no new file, no temporary, no lock


@pytest.mark.subprocess
def test_injected_bug_sigterm_held_until_a_checkpoint_is_caught(tmp_path):
    """Signals recorded and raised only at checkpoints (none inside the claims): the command still runs
    ``STOP_WITHIN`` after SIGTERM — the test above fails."""
    process, _ = _sigterm_while_claims_are_judged(tmp_path, mutant="checkpoints only")
    with reaped(process), pytest.raises(subprocess.TimeoutExpired):
        process.communicate(timeout=STOP_WITHIN)
