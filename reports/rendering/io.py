"""Atomic file writes: a temporary file in the same folder, then a rename; the
output folder a run owns (its lock and its manifest); and how the commands stop
on Ctrl-C (SIGINT) or SIGTERM.

A crash or Ctrl-C while writing leaves the previous file intact.

Interrupts (``interrupt_handlers``, entered by ``reports.cli``): SIGINT
and SIGTERM take one path. The first one is *recorded*, not raised where it
lands — an exception thrown into the middle of a torch call can abort the
process ("terminate called after throwing …") — and ``checkpoint()`` raises it
as ``Interrupted`` at the next safe point (between scenarios, between the
report's sections, every 0.2 s while pytest-xdist workers run, before the
renames of ``atomic_write_many``). A second signal raises at once. Inside
``immediate_interrupts()`` (``bench``, whose measurements have no
checkpoints, and ``check``, whose engines and claim formulas call no Python
code from inside torch) every signal raises at once. ``reports.cli`` turns
``Interrupted`` into exit 130 (SIGINT) or 143 (SIGTERM).

The output folder (``RunFolder``; docs/report.md, "The output folder"): a run
takes the folder's lock (``.backprop-verify.lock``, ``fcntl.flock``, never
waited for: a second run into the same folder is refused), removes what dead
runs left (their staged ``.NAME.XXXXXXXX.tmp`` files and scratch folders), and
publishes its files together with ``manifest.json``, which names the run, its
command line and every file it wrote (bytes, sha256). Files of the earlier run
of the same command that this run does not write are removed with the same
rename; files the manifest does not record are never touched.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterable

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
def _deferring(deferring: bool):
    previous = _InterruptState.deferring
    _InterruptState.deferring = deferring
    try:
        yield
    finally:
        _InterruptState.deferring = previous


@contextlib.contextmanager
def immediate_interrupts():
    """Signals raise where they land (for code without checkpoints)."""
    with _deferring(False):
        checkpoint()
        yield


def deferred_interrupts():
    """Signals are recorded, raised at the next checkpoint (inside ``immediate_interrupts``: for the few
    steps that must not stop half-way, such as publishing a run's files)."""
    return _deferring(True)


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


def atomic_write_many(files: dict[str | os.PathLike, bytes | str], remove: Iterable[str | os.PathLike] = ()) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every file is first written in full to a temporary file beside its target
    (and fsynced); only then are they renamed into place, one ``os.replace``
    each, in the order given, with Ctrl-C and SIGTERM held until the last rename is done. A crash,
    an exception or Ctrl-C before that point leaves every previous file as it
    was and removes the temporary files. ``remove``: files that go in the same
    held moment, just before the renames (the files of an earlier run this one replaces).
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
            for path in remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            for tmp, path in staged:
                os.replace(tmp, path)
            staged = []
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- the output folder

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "backprop-verify manifest 1"
MAX_MANIFEST_BYTES = 2**20  # a manifest lists a few files; anything larger was not written by a run
LOCK = ".backprop-verify.lock"
SCRATCH_PREFIX = ".backprop-verify-scratch."
# What ``tempfile`` makes of our prefixes: ".NAME." or SCRATCH_PREFIX, then 8 characters of its alphabet.
_STAGED = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
_SCRATCH = re.compile(re.escape(SCRATCH_PREFIX) + r"[a-z0-9_]{8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCK_ATTEMPTS = 100  # the lock file can be replaced under us (its run removed it); we try again, boundedly
_REMEDY = "remove them, or choose another folder"


class FolderRefused(Exception):
    """The output folder cannot take this run: ``str(err)`` is ``FOLDER…: PROBLEM; expected WHAT`` (exit 2)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_name(name: object) -> bool:
    """A file directly in the folder, named as the project names its files (no path, not hidden)."""
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\x00" not in name)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version() -> str:
    from importlib import metadata  # only when a run is published

    try:
        return metadata.version("backprop-verify")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_folders(path: Path, created: list[Path]) -> None:
    """``path`` and its missing parents made, from the top down, each one made appended to ``created`` (so
    that the caller can remove them again, also when a later one fails with ``OSError``)."""
    missing, probe = [], path
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by another process
            continue
        created.append(folder)


class RunFolder:
    """The output folder of one run, held from ``claim`` to ``close`` (use it as a context manager).

    ``claim`` creates the folder if needed and takes its lock; ``expect`` checks the earlier runs'
    files and removes what dead runs left (staged files, ``.backprop-verify-scratch.*`` folders: a run
    keeps its scratch folder here, ``tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=folder.path)``,
    so that a killed run's is found); ``publish`` writes the run's files and ``manifest.json``
    (``atomic_write_many``), removing the files of the earlier runs this one replaces. ``close`` removes
    the lock file and, if nothing was published, the folders ``claim`` created. Refusals raise
    ``FolderRefused`` and change nothing.

    Runs and the manifest: the manifest records one run per command (``report``, ``check``, ``pytest``).
    A run replaces the earlier run of its own command, and any earlier run that wrote a file it writes too
    (``pytest --report-dir`` and ``report`` both write ``discrepancies.csv``): the replaced runs' files this
    run does not write are removed, so every file a recorded run lists is that run's. Other runs stay
    recorded with their files (``check`` and ``report`` can share ``reports/out``).
    """

    def __init__(self, path: Path, command: str, command_line: list[str], details: dict):
        self.path, self.command = path, command
        self.command_line, self.details = [str(word) for word in command_line], dict(details)
        self.started = _now()
        self.created: list[Path] = []
        self.lock_fd: int | None = None
        self.earlier: list[dict] = []
        self.expected: tuple[frozenset[str], frozenset[str]] | None = None
        self.published = False

    # -- claim and close
    @classmethod
    def claim(cls, path: str | os.PathLike, command: str, command_line: Iterable[str] = (),
              details: dict | None = None) -> "RunFolder":
        """The folder, created if needed, locked for this run; its manifest read. ``FolderRefused`` if
        another run holds it or its manifest is not one a run wrote (nothing is left changed)."""
        folder = cls(Path(path), command, list(command_line), details or {})
        try:
            folder._create()
            folder._lock()
            folder.earlier = folder._read_manifest()
        except BaseException:
            folder.close()
            raise
        return folder

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        with deferred_interrupts():  # the clean-up runs to its end; a signal then is raised later
            self._unlock()
            if not self.published:
                for folder in reversed(self.created):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            self.created = []

    def _create(self) -> None:
        try:
            make_folders(self.path, self.created)
        except OSError as err:
            raise FolderRefused(f"{self.path}: cannot be created ({err.strerror}); expected a folder this "
                                "user can create files in") from None
        if not self.path.is_dir():
            raise FolderRefused(f"{self.path} is not a folder; expected a folder (or a path that does not exist yet)")

    # -- the lock
    def _lock(self) -> None:
        """An exclusive ``flock`` on ``FOLDER/.backprop-verify.lock``, never waited for. The file holds the
        holder's pid and command line (for the refusal's message). The lock is the flock, not the file: a
        file left by a killed run is taken over, and ``close`` removes it while still holding the lock."""
        lock_path = self.path / LOCK
        for _ in range(_LOCK_ATTEMPTS):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _file_mode())
            except OSError as err:
                raise FolderRefused(f"{lock_path}: cannot be opened ({err.strerror}); expected a folder this user "
                                    "can create files in") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise FolderRefused(f"{self.path} is in use by another run ({holder}); expected one run at a time "
                                    "in a folder: wait for it to finish, or choose another folder") from None
            if self._is_lock_file(fd):
                break
            os.close(fd)  # the run that held it removed the file meanwhile: take the new one
        else:
            raise FolderRefused(f"{lock_path} keeps being replaced; expected one run at a time in a folder")
        self.lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(self.command_line) or self.command}\n".encode("utf-8", "replace"))

    def _is_lock_file(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the lock's path (same device and inode)."""
        try:
            named = os.stat(self.path / LOCK, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    @staticmethod
    def _holder(fd: int) -> str:
        """'pid N: COMMAND' from the lock file, as printable text (the file is not trusted)."""
        text = os.pread(fd, 500, 0).decode("utf-8", "replace").strip().splitlines()
        pid, _, command = (text[0] if text else "").partition(" ")
        command = "".join(c if c.isprintable() else "?" for c in command)[:200]
        return f"pid {pid}: {command}" if pid.isdigit() else "pid unknown"

    def _unlock(self) -> None:
        if self.lock_fd is None:
            return
        try:
            if self._is_lock_file(self.lock_fd):
                os.unlink(self.path / LOCK)
        except OSError:
            pass
        finally:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = None

    # -- the manifest
    def _refuse_manifest(self, problem: str) -> FolderRefused:
        return FolderRefused(f"{self.path / MANIFEST}: {problem}; expected a manifest written by backprop-verify "
                             "(remove it, or choose another folder)")

    def _read_manifest(self) -> list[dict]:
        """The runs ``manifest.json`` records ([] without one), each checked: a command, and files named
        as the project names them, each once, with their size and sha256."""
        path = self.path / MANIFEST
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return []
        if not stat.S_ISREG(info.st_mode):
            raise self._refuse_manifest("not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise self._refuse_manifest(f"{info.st_size:,} bytes, more than {MAX_MANIFEST_BYTES:,}")
        try:
            manifest = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise self._refuse_manifest(f"not JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise self._refuse_manifest(f"no \"format\": \"{MANIFEST_FORMAT}\"")
        runs = manifest.get("runs")
        if not isinstance(runs, list):
            raise self._refuse_manifest("\"runs\" is not a list")
        owner: dict[str, int] = {}
        for k, run in enumerate(runs):
            files = run.get("files") if isinstance(run, dict) else None
            if not isinstance(run, dict) or not isinstance(run.get("command"), str) or not isinstance(files, dict):
                raise self._refuse_manifest(f"runs[{k}] has no \"command\" and \"files\"")
            for name, record in files.items():
                if not _plain_name(name):
                    raise self._refuse_manifest(f"runs[{k}].files: {name!r} is not a file name in the folder")
                if name in owner:
                    raise self._refuse_manifest(f"{name} is listed by runs[{owner[name]}] and runs[{k}]")
                owner[name] = k
                if not (isinstance(record, dict) and type(record.get("bytes")) is int and record["bytes"] >= 0
                        and isinstance(record.get("sha256"), str) and _SHA256.fullmatch(record["sha256"])):
                    raise self._refuse_manifest(f"runs[{k}].files.{name}: expected bytes and sha256")
        return runs

    def _replaces(self, run: dict, writes: frozenset[str]) -> bool:
        """Whether this run replaces an earlier recorded ``run``: same command, or a file both write."""
        return run["command"] == self.command or not writes.isdisjoint(run["files"])

    # -- expect: the checks before the work, and the clean-up of dead runs
    def expect(self, outputs: Iterable[str], writes: Iterable[str]) -> None:
        """This run can write ``writes`` (some of ``outputs``, every name its command ever writes) here;
        ``FolderRefused`` (nothing changed) if

        * a file the replaced runs recorded, and this run will not overwrite, was changed since (size or
          sha256): it is no longer the project's to remove;
        * a file named like one of ``outputs`` that this run will not write is not recorded by any run:
          it would sit beside this run's files as if it were one of them.

        Then removes what dead runs of any command left: staged temporaries (``.NAME.XXXXXXXX.tmp`` of a
        name this command writes or the manifest records) and scratch folders (``.backprop-verify-scratch.*``).
        No live run writes here: this one holds the lock."""
        outputs, writes = frozenset(outputs), frozenset(writes)
        listed = {name for run in self.earlier for name in run["files"]}
        changed = sorted(name for name, record in self._stale(writes).items() if not self._as_recorded(name, record))
        if changed:
            raise FolderRefused(f"{self.path}: {', '.join(changed)}: changed since the run {MANIFEST} records wrote "
                                f"them, so this run will not remove them; expected them as that run wrote them: "
                                f"{_REMEDY}")
        unrecorded = sorted(name for name in outputs - writes - listed if os.path.lexists(self.path / name))
        if unrecorded:
            raise FolderRefused(f"{self.path}: {', '.join(unrecorded)}: not recorded in {MANIFEST} (not from a run "
                                f"this folder records) and not rewritten by this run; expected only recorded "
                                f"files beside this run's: {_REMEDY}")
        self.expected = (outputs, writes)
        ours = outputs | listed | {MANIFEST}
        with os.scandir(self.path) as entries:
            for entry in entries:
                staged = _STAGED.fullmatch(entry.name)
                if staged and staged["name"] in ours and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                elif _SCRATCH.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)

    def _stale(self, writes: frozenset[str]) -> dict[str, dict]:
        """name -> manifest record: the files of the runs this one replaces that it does not rewrite."""
        return {name: record for run in self.earlier if self._replaces(run, writes)
                for name, record in run["files"].items() if name not in writes}

    def _as_recorded(self, name: str, record: dict) -> bool:
        """The file is gone, or is a regular file with the recorded size and sha256."""
        path = self.path / name
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return (stat.S_ISREG(info.st_mode) and info.st_size == record["bytes"]
                and _sha256(path) == record["sha256"])

    # -- publish
    def publish(self, files: dict[str, bytes | str]) -> dict:
        """Write ``files`` (name -> content; exactly the ``writes`` of ``expect``) and ``manifest.json``, last,
        in one ``atomic_write_many`` that also removes the replaced runs' other files. Returns this run's
        manifest entry."""
        if self.expected is None:
            raise RuntimeError("RunFolder.publish before expect")
        writes = frozenset(files)
        if writes != self.expected[1]:
            raise RuntimeError(f"published {sorted(writes)}, expected to write {sorted(self.expected[1])}")
        payloads = {name: data.encode("utf-8") if isinstance(data, str) else data for name, data in files.items()}
        run = {
            "command": self.command, "command_line": self.command_line, "run_id": uuid.uuid4().hex,
            "pid": os.getpid(), "version": _version(), "started": self.started, "finished": _now(),
            **self.details,
            "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in sorted(payloads.items())},
        }
        kept = [earlier for earlier in self.earlier if not self._replaces(earlier, writes)]
        manifest = {"format": MANIFEST_FORMAT, "runs": kept + [run]}
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        with deferred_interrupts():
            atomic_write_many({**{self.path / name: data for name, data in sorted(payloads.items())},
                               self.path / MANIFEST: text},
                              remove=[self.path / name for name in sorted(self._stale(writes))])
        self.published = True
        return run
