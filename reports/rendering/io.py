"""Atomic file writes: a temporary file in the same folder, then a rename.

A crash or Ctrl-C while writing leaves the previous file intact.
"""
from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path


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
