"""``backprop-verify report``: every built-in scenario, every engine pair."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.io import atomic_write_text
from reports.runner import verify
from reports.table import component_summary, markdown, rows_frame
from scenarios.builtin import builtin_scenarios
from scenarios.generator import DEFAULT_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/out", help="output folder (default: reports/out)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the random architectures (default: {DEFAULT_SEED})")
    parser.add_argument("--random", type=int, default=300, help="number of seeded random architectures (default: 300)")


def main(args: argparse.Namespace) -> int:
    if args.random < 0:
        print("backprop-verify report: --random: expected a count >= 0", file=sys.stderr)
        return 2
    scenarios = builtin_scenarios(args.random, args.seed)
    rows, components = [], {}
    for scenario in scenarios:
        rows += verify(scenario)
        components[scenario.name] = scenario.component_names()
    frame = rows_frame(rows)
    summary = component_summary(frame, components)
    out = Path(args.out)
    atomic_write_text(out / "discrepancies.csv", frame.to_csv(index=False, float_format="%.6e"))
    print(markdown(summary))
    failures = int((~frame["passed"]).sum())
    print(f"\n{len(scenarios)} scenarios, {len(frame)} addresses compared, {failures} failures; "
          f"seed {args.seed}; rows in {out / 'discrepancies.csv'}")
    return 1 if failures else 0
