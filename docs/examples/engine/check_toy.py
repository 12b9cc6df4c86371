"""Run the report's scenarios through the toy engine, name the failing families, shrink one failure.

    cd docs/examples/engine && python check_toy.py [--random N] [--out FOLDER]

Prints the conformance summary (failing scenarios by family, with the first
failing address of each, and how many scenarios are not applicable), then the
smallest failing network found from the first failing random network, as the
scenario file it writes (``FOLDER/<name>.toml``, default the current folder),
and that file's failing rows.
"""
import argparse
import pathlib

from backprop_verify.manual import load_engine
from backprop_verify.scenarios import load_scenario
from backprop_verify.reports.verification.runner import conformance, engine_scenarios, verify
from backprop_verify.reports.verification.shrink import failing_like, failure_kind, scenario_to_toml, shrink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=30, help="random dense networks (default 30)")
    parser.add_argument("--out", default=".", help="folder for the shrunk scenario file")
    args = parser.parse_args()

    engine = load_engine("toy_engine.adapter:engine")
    scenarios, not_applicable = engine_scenarios(engine, random_count=args.random)
    result = conformance(engine, scenarios, with_fd=True)
    print(result.summary())
    print(f"not applicable: {len(not_applicable)}, e.g. {not_applicable[0][0]}: {not_applicable[0][1]}")

    first = next(s for s in scenarios if s.name in result.failed and s.name.startswith("random-"))
    kind = failure_kind(first, verify(first, with_fd=False, engine=engine).rows)
    smallest = shrink(first, failing_like(kind, engine))
    path = pathlib.Path(args.out) / f"{smallest.name}.toml"
    path.write_text(scenario_to_toml(smallest), encoding="utf-8")
    print(f"\n{first.name} fails at {kind}; the smallest network that still does, {path}:\n")
    print(path.read_text(encoding="utf-8"))
    print("its failing rows, read back from the file:")
    for row in verify(load_scenario(path), engine=engine).rows:
        if row["status"] == "fail":
            print(f"  {row['pair']:<12} {row['address']}{row['worst_index']}: {row['value']:.6g} vs "
                  f"{row['reference_value']:.6g} (max_rel {row['max_rel']:.2g}) — {row['triage']}")


if __name__ == "__main__":
    main()
