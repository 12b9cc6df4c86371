"""The ``backprop-verify`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``main(args) -> int`` (the exit code); this file only dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "report": ("reports.report_cmd", "run every built-in scenario through manual, torch and finite differences; write the discrepancy report"),
    "check": ("reports.check_cmd", "check the numbers printed in worked-example files against both engines"),
    "bench": ("reports.bench_cmd", "benchmark the manual engine against torch autograd"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop-verify",
        description="Verify backpropagation: a hand-written NumPy engine against PyTorch autograd and finite differences.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; previous report files are unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
