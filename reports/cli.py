"""The ``backprop-verify`` command line.

Each subcommand is a module of ``reports.commands`` with
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code); this file
only dispatches. Only the module of the command being run is imported: each
loads the engines (torch) it needs, and the others need not be paid for.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "report": ("reports.commands.report",
               "run every built-in scenario through manual, torch and finite differences; write the discrepancy report"),
    "check": ("reports.commands.check", "check the numbers printed in worked-example files against both engines"),
    "bench": ("reports.commands.bench", "benchmark the manual engine against torch autograd"),
}


def build_parser(commands=tuple(SUBCOMMANDS)) -> argparse.ArgumentParser:
    """The parser; the arguments of ``commands`` only (the others are listed, with no arguments)."""
    parser = argparse.ArgumentParser(
        prog="backprop-verify",
        description="Verify backpropagation: a hand-written NumPy engine against PyTorch autograd and finite differences.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in commands:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = [word for word in argv if word in SUBCOMMANDS][:1]
    try:
        args = build_parser(chosen).parse_args(argv)  # imports the command: seconds, for torch
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; previous report files are unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
