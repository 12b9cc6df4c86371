"""Helpers the tests share: a trace comparison that fails with a readable table, the policy's normwise
closeness, a folder's snapshot, and what a run leaves behind (processes, read from /proc)."""
import contextlib
import os
from pathlib import Path

import numpy as np

from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.tolerance import tolerance


def assert_traces_agree(a, b, dtype, pair, addresses=None):
    rows = compare(a, b, dtype, pair, addresses)
    assert rows, f"{pair}: nothing compared"
    failed = [r for r in rows if not r.passed]
    assert not failed, f"{pair} ({dtype}): {len(failed)} of {len(rows)} addresses disagree:\n" + "\n".join(
        f"  {r.address}: max_abs={r.max_abs:.3e} max_rel={r.max_rel:.3e} > tol={r.tolerance:.1e} {r.note}"
        for r in failed[:20])
    return rows


def assert_close(found, expected, dtype, what):
    """max|found − expected| ≤ tolerance(dtype) · max|expected| (the policy's normwise criterion)."""
    assert found.shape == expected.shape and found.dtype == expected.dtype, (what, found.shape, expected.shape)
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(found.astype(np.float64) - expected), initial=0.0))
    assert error <= tolerance(dtype) * scale, f"{what}: max|Δ| = {error:.3g} against max|b| = {scale:.3g}"


def inject_activation_backward(monkeypatch, name, backward):
    """Replace manual activation ``name``'s backward by ``backward(grad, a)``, a = its forward's output
    (recorded on each forward): the injected bug of a test that must see a failure."""
    from backprop_verify import manual

    cls = manual.activations.ACTIVATIONS[name]
    forward = cls.forward

    def recording_forward(self, z):
        self._injected_a = forward(self, z)
        return self._injected_a

    monkeypatch.setattr(cls, "forward", recording_forward)
    monkeypatch.setattr(cls, "backward", lambda self, grad: backward(grad, self._injected_a))


def assert_file_rejected(folder, text, field, expected, name="my_example.toml"):
    """Loading ``text`` (str, or bytes written as they are) as ``folder/name``
    fails with "name: field: …expected…"."""
    import pytest

    from backprop_verify.scenarios import ScenarioError, load_scenario

    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    if field:
        assert f": {field}: " in message, message
    assert expected in message, message


def snapshot(folder: Path) -> dict[str, object]:
    """Every path under ``folder`` with its bytes (folders, FIFOs and links by kind, never opened)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = "folder"
        elif path.is_file():
            found[name] = path.read_bytes()
        else:
            found[name] = "special"
    return found


# Processes, read from /proc: what a killed run leaves running.

def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            found[int(entry.name)] = (int(fields[1]), fields[0])
    return found


def descendants(pid: int) -> set[int]:
    table = processes()
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, (parent, _) in table.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def running(pids: set[int]) -> set[int]:
    table = processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


@contextlib.contextmanager
def reaped(process):
    """``process`` (a ``subprocess.Popen``) killed and waited for on leaving the block if it still runs:
    a test that fails or times out leaves no process of its own behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
