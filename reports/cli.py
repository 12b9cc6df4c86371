"""The ``backprop-verify`` command line.

Each subcommand is a module of ``reports.commands`` with
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code); this file
only dispatches. Only the module of the command being run is imported, and it
imports the engines (torch) only once its options and files are known to be
good: a refused command line costs a fraction of a second.

Errors in the command line are one line, ``backprop-verify COMMAND: OPTION:
PROBLEM; expected WHAT``, exit 2 (no usage text, no traceback).

SIGINT and SIGTERM are handled alike (``reports.rendering.io``: recorded, then
raised at the next checkpoint; ``check`` raises them where they land): the
command stops, removes what it had started (temporary files and folders, its
lock on the output folder, pytest-xdist workers), leaves the previous files as
they were, prints one line and exits 130 (SIGINT) or 143 (SIGTERM) at once.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from backprop_verify.reports.rendering.io import Interrupted, checkpoint, interrupt_handlers, pending_interrupt
from backprop_verify.reports.textbook.escape import terminal_lines

SUBCOMMANDS = {
    "report": ("backprop_verify.reports.commands.report",
               "run every built-in scenario through manual, torch and finite differences; write the discrepancy report"),
    "check": ("backprop_verify.reports.commands.check", "check the numbers printed in worked-example files against both engines"),
    "bench": ("backprop_verify.reports.commands.bench", "benchmark the manual engine against torch autograd"),
}


class UsageError(Exception):
    """A bad command line: ``str(err)`` is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the option, and raises ``UsageError``."""

    def error(self, message: str):
        # argparse writes "argument --seed: …"; the line names the option alone.
        if message.startswith("argument "):
            option, _, problem = message[len("argument "):].partition(": ")
            option = option.split("/")[-1] if option.startswith("-") else option
            if problem.startswith("expected"):  # "expected one argument": the value is missing
                problem = f"no value; {problem}"
            message = f"{option}: {problem}"
        if "expected" not in message:
            message += f"; expected the arguments `{self.prog} --help` lists"
        raise UsageError(f"{self.prog}: {message}")


def build_parser(commands=tuple(SUBCOMMANDS)) -> argparse.ArgumentParser:
    """The parser; the arguments of ``commands`` only (the others are listed, with no arguments)."""
    parser = _Parser(
        prog="backprop-verify",
        description="Verify backpropagation: a hand-written NumPy engine against PyTorch autograd and finite differences.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in commands:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    # First: a SIGTERM during the imports below takes the same path. As the program (argv None), the
    # handlers stay until the process exits; called with argv (tests, other programs), they are restored.
    with interrupt_handlers(restore=argv is not None), terminal_safe_output():
        status, interrupted = _main(sys.argv[1:] if argv is None else argv)
    if argv is None and hasattr(signal, "pthread_sigmask"):
        # The work is done (or was stopped): the exit status stands. Python's finalisation resets the
        # handlers to the defaults, so a signal during it would turn status into a death by signal after
        # complete files were written; blocked, it is discarded when the process exits.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    if argv is None and interrupted:
        # Stopped, and everything the command had started is cleaned up (its finally blocks ran): exit now.
        # The interpreter's finalisation with torch and pandas loaded takes a second or more, which a
        # SIGTERM's sender should not have to wait for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


class _TerminalSafe:
    """A text stream that writes every control character but the line end and the tab as a visible escape
    (``reports.textbook.escape.terminal_lines``): names, notes, statements and formulas come from files a
    CI run did not write, and an escape sequence among them must not retitle a terminal or clear it.
    ``unescaped`` is the stream itself, for the program's own control output: the progress bar redraws
    its line with a carriage return."""

    def __init__(self, stream):
        self.stream = self.unescaped = stream

    def write(self, text: str) -> int:
        self.stream.write(terminal_lines(text))
        return len(text)

    def __getattr__(self, name):  # flush, fileno, encoding, isatty …: the stream's own
        return getattr(self.stream, name)


@contextlib.contextmanager
def terminal_safe_output():
    """stdout and stderr through ``_TerminalSafe`` while a command runs."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _TerminalSafe(sys.stdout), _TerminalSafe(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: list[str]) -> tuple[int, bool]:
    """(the exit status, whether SIGINT or SIGTERM stopped the command)."""
    chosen = [word for word in argv if word in SUBCOMMANDS][:1]
    command = f"backprop-verify {chosen[0]}" if chosen else "backprop-verify"
    try:
        try:
            args, extra = build_parser(chosen).parse_known_args(argv)  # imports the command module
            if extra:
                raise UsageError(f"{command}: {' '.join(extra)}: unrecognized arguments; expected the arguments "
                                 f"`{command} --help` lists")
        except UsageError as err:
            print(err, file=sys.stderr)
            return 2, False
        args.command_line = ["backprop-verify", *argv]  # recorded in the output folder's manifest.json
        checkpoint()
        status = int(args.handler(args) or 0)
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else int(signal.SIGINT)
        print(f"{command}: interrupted by {signal.Signals(signum).name}; nothing was written, "
              "the previous files are unchanged", file=sys.stderr)
        return 128 + signum, True
    late = pending_interrupt()
    if late is not None:
        # The signal came while the files were being renamed into place: they are complete.
        print(f"{command}: {signal.Signals(late).name} arrived after the files were written; they are complete",
              file=sys.stderr)
    return status, False


if __name__ == "__main__":
    sys.exit(main())
