"""Atomic file writes: a temporary file in the same folder, then a rename;
and how the commands stop on Ctrl-C (SIGINT) or SIGTERM.

A crash or Ctrl-C while writing leaves the previous file intact.

Interrupts (``interrupt_handlers``, entered by ``reports.cli``): SIGINT
and SIGTERM take one path. The first one is *recorded*, not raised where it
lands — an exception thrown into the middle of a torch call can abort the
process ("terminate called after throwing …") — and ``checkpoint()`` raises it
as ``Interrupted`` at the next safe point (between scenarios, between the
report's sections, every 0.2 s while pytest-xdist workers run, before the
renames of ``atomic_write_many``). A second signal raises at once. Inside
``immediate_interrupts()`` (``bench``, whose measurements have no
checkpoints) every signal raises at once. ``reports.cli`` turns
``Interrupted`` into exit 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

INTERRUPT_SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised at a checkpoint; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


class _InterruptState:
    deferring = True          # record the first signal, raise it at a checkpoint
    pending: int | None = None


def _on_signal(signum, frame):  # noqa: ARG001 - the signal module's signature
    if _InterruptState.deferring and _InterruptState.pending is None:
        _InterruptState.pending = signum
        return
    _InterruptState.pending = None
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_handlers(restore: bool = True):
    """SIGINT and SIGTERM both go through ``_on_signal`` while the block runs
    (main thread only); the previous handlers are restored afterwards if
    ``restore`` (a command run as the program keeps them until the process
    exits: a signal during interpreter shutdown is then recorded and ignored,
    not a death by signal after the files were complete)."""
    previous = {}
    _InterruptState.pending = None
    _InterruptState.deferring = True
    if threading.current_thread() is threading.main_thread():
        for name in INTERRUPT_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, _on_signal)
    try:
        yield
    finally:
        if restore:
            for number, handler in previous.items():
                signal.signal(number, handler)


def checkpoint() -> None:
    """Raise ``Interrupted`` if SIGINT or SIGTERM arrived since the last checkpoint."""
    pending = _InterruptState.pending
    if pending is not None:
        _InterruptState.pending = None
        raise Interrupted(pending)


def pending_interrupt() -> int | None:
    """The signal recorded and not yet raised (None if there is none)."""
    return _InterruptState.pending


@contextlib.contextmanager
def immediate_interrupts():
    """Signals raise where they land (for code without checkpoints)."""
    previous = _InterruptState.deferring
    _InterruptState.deferring = False
    try:
        checkpoint()
        yield
    finally:
        _InterruptState.deferring = previous


def _file_mode() -> int:
    """rw for everyone the umask allows (mkstemp alone would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        checkpoint()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class _DeferredSignals:
    """Hold SIGINT/SIGTERM while a set of renames completes, then re-deliver them."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __enter__(self):
        self.received: list[int] = []
        self.previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, lambda signum, frame: self.received.append(signum))
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        for number in self.received:
            signal.raise_signal(number)
        return False


def atomic_write_many(files: dict[str | os.PathLike, bytes | str]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every file is first written in full to a temporary file beside its target
    (and fsynced); only then are they renamed into place, one ``os.replace``
    each, with Ctrl-C and SIGTERM held until the last rename is done. A crash,
    an exception or Ctrl-C before that point leaves every previous file as it
    was and removes the temporary files.
    """
    staged: list[tuple[str, Path]] = []
    try:
        checkpoint()
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = data.encode("utf-8") if isinstance(data, str) else data
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            os.fchmod(fd, _file_mode())
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        checkpoint()  # a signal that arrived while the temporary files were written: stop before any rename
        with _DeferredSignals():
            for tmp, path in staged:
                os.replace(tmp, path)
            staged = []
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
