"""Everything a report shows, gathered once, and ``summary.md`` rendered from it.

``summary.md`` is deterministic: two runs with the same seed give the same
bytes except for the one line that starts with ``Generated:``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from backprop_verify.reports.rendering.diff import counts
from backprop_verify.reports.rendering.table import component_summary, failed, failures, floor_pass, markdown, relative_pass, unjudged
from backprop_verify.scenarios.generator import DEFAULT_RANDOM_TRANSFORMER_COUNT

TIMESTAMP_PREFIX = "Generated: "


@dataclass
class ReportData:
    seed: int
    random_count: int
    random_conv_count: int
    random_recurrent_count: int
    only: str | None
    frame: pd.DataFrame                      # the rows, as read back from discrepancies.csv
    components: dict[str, list[str]]         # scenario -> components it exercises
    command: str
    timestamp: str
    environment: dict[str, str] = field(default_factory=dict)
    random_transformer_count: int = DEFAULT_RANDOM_TRANSFORMER_COUNT  # report --random-transformer
    vanishing: object = None                 # reports.verification.vanishing.VanishingGradient
    recurrent: object = None                 # reports.verification.recurrent.RecurrentGradient
    digits: object = None                    # reports.verification.digits.DigitsCurves
    errata: pd.DataFrame | None = None       # reports.textbook.errata.errata_table()
    derivations: pd.DataFrame | None = None  # reports.textbook.derivations.derivation_verdicts()
    attention: pd.DataFrame | None = None    # reports.verification.attention.attention_table(), for report.html
    changes: pd.DataFrame | None = None      # reports.rendering.diff.changes(), with --compare-to
    compared_to: str | None = None
    detail: str | None = None                # report --detail REGEX
    sections: list = field(default_factory=list)  # reports.rendering.sections.Section, for report.html
    sections_left_out: int = 0               # scenarios that would have had a section beyond MAX_SECTIONS

    @property
    def by_component(self) -> pd.DataFrame:
        return component_summary(self.frame, self.components)

    @property
    def failures(self) -> pd.DataFrame:
        return failures(self.frame)

    def totals(self) -> dict[str, int]:
        frame = self.frame
        return {
            "scenarios": int(frame["scenario"].nunique()),
            "rows": len(frame),
            "relative_passes": int(relative_pass(frame).sum()),
            "floor_passes": int(floor_pass(frame).sum()),
            "not_judged": int(unjudged(frame).sum()),
            "failures": int(failed(frame).sum()),
            "fd_scenarios": int(frame.loc[frame["pair"].str.endswith("-fd"), "scenario"].nunique()),
        }


# ---------------------------------------------------------------------------
# summary.md
# ---------------------------------------------------------------------------

def render_markdown(data: ReportData) -> str:
    totals = data.totals()
    lines = ["# backprop-verify discrepancy report", "", f"{TIMESTAMP_PREFIX}{data.timestamp}"]
    lines += ["", f"- Reproduce: `{data.command}`", f"- Seed: {data.seed}; random architectures: {data.random_count} dense, "
              f"{data.random_conv_count} convolutional, {data.random_recurrent_count} recurrent, "
              f"{data.random_transformer_count} transformer"
              + (f"; scenarios matching `{data.only}`" if data.only else "")]
    lines += [f"- {name}: {value}" for name, value in data.environment.items()]
    lines += ["", "## Result", "",
              f"{totals['scenarios']} scenarios, {totals['rows']} addresses compared "
              f"({totals['fd_scenarios']} scenarios also against finite differences): "
              f"**{totals['failures']} failures**, {totals['relative_passes']} passed on the relative criterion, "
              f"{totals['floor_passes']} passed only on the absolute floor, "
              f"{totals['not_judged']} reported but not judged.", ""]

    lines += ["## Failures", ""]
    failed = data.failures
    if failed.empty:
        lines += ["None.", ""]
    else:
        shown = failed[["scenario", "pair", "dtype", "address", "triage", "max_abs", "max_rel", "tolerance",
                        "worst_index", "value", "reference_value", "note"]].copy()
        for column in ("value", "reference_value"):  # every digit, as in discrepancies.csv
            shown[column] = ["—" if v != v else "%.17g" % v for v in shown[column]]
        lines += [markdown(shown), ""]

    lines += ["## Per component", "",
              "`worst_max_rel`: the largest normwise relative discrepancy max|a−b|/max|b| among addresses that "
              "passed on the relative criterion; `worst_of_tolerance`: the largest max_rel/tolerance among them "
              "(1 = at the limit). `floor_passes`: addresses that passed only thanks to the absolute floor "
              "(`reports/verification/tolerance.py`) — their max_rel can be large (up to inf) because the reference values "
              "cancel to ~0, so they are counted here, not in the worst. `not_judged`: trajectory steps after the "
              "precision horizon and optimizers without a torch.optim counterpart (`reports.verification.horizon`), and "
              "finite-difference rows whose every element is a blind spot (its step crosses a kink), counted, "
              "not in the worst. `—`: no such address.", "",
              markdown(data.by_component), ""]

    lines += ["## Vanishing gradient (document 003)", ""]
    lines += _vanishing_markdown(data.vanishing)
    lines += ["## Gradients in time", ""]
    lines += _recurrent_markdown(data.recurrent)

    lines += ["## Digits loss curves", ""]
    lines += _digits_markdown(data.digits)

    lines += ["## Textbook errata", ""]
    lines += _errata_markdown(data.errata)
    lines += ["## Derivation verdicts", ""]
    lines += [markdown(data.derivations, floatfmt=".6g"), ""]
    return "\n".join(lines).rstrip() + "\n"


def _errata_markdown(errata: pd.DataFrame | None) -> list[str]:
    """Verdict counts, then every expectation whose verdict is not ``match``."""
    counts = errata["verdict"].value_counts().sort_index()
    lines = [f"{len(errata)} printed numbers checked: "
             + ", ".join(f"{count} {verdict}" for verdict, count in counts.items()) + ".", ""]
    notable = errata[errata["verdict"] != "match"]
    if notable.empty:
        return lines + ["Every printed number matches.", ""]
    return lines + ["Every verdict other than `match`:", "", markdown(notable, floatfmt=".6g"), ""]


def recurrent_sentence(recurrent) -> str:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ per network, by the manual engine (``RecurrentGradient.ratios``)."""
    ratios = [f"{network} {ratio:.2e}" for network, ratio in recurrent.ratios.items()]
    return (f"‖∂L/∂h_1‖ relative to ‖∂L/∂h_{recurrent.steps}‖ (the loss on the last step): "
            + "; ".join(ratios) + ".")


def _recurrent_markdown(recurrent) -> list[str]:
    return ["‖∂L/∂h_t‖ against t for tanh RNNs whose W_hh has spectral radius ρ = 0.5, 1.0 and 1.5 and for an "
            "LSTM whose forget gate starts open, computed by both engines (reports.verification.recurrent): the "
            "gradient through the hidden state vanishes for ρ < 1 and explodes for ρ > 1.", "",
            recurrent_sentence(recurrent), "", markdown(recurrent.table, floatfmt=".3e"), ""]


def _vanishing_markdown(vanishing) -> list[str]:
    depth = vanishing.depth
    lines = [f"‖∂L/∂W⁽ˡ⁾‖_F per linear layer l (1 = next to the input) of a {depth}-layer network, "
             "the same weights and data with sigmoid, with ReLU and with sigmoid after a BatchNorm behind every "
             "linear layer, computed by both engines. σ'(z) ≤ 0.25, so each sigmoid layer multiplies the backward "
             "signal by at most 0.25·‖W‖.", ""]
    if vanishing.ratios:
        lines += ["Layer 1's gradient norm relative to layer " + f"{depth}'s: "
                  + "; ".join(f"{name} {ratio:.2e}" for name, ratio in vanishing.ratios.items()) + "."]
        if vanishing.remedy_factor is not None:
            lines += [f"{vanishing.remedy} multiplies that ratio by {vanishing.remedy_factor:.3g}."]
        lines += [""]
    lines += [markdown(vanishing.table, floatfmt=".3e"), ""]
    return lines


def _digits_markdown(digits) -> list[str]:
    return [f"scikit-learn's bundled 8×8 digits, 64→32→10; curves from {digits.source}.", "",
            markdown(digits.table, floatfmt=".6g"), ""]


def render_changes_markdown(changes: pd.DataFrame, compared_to: str) -> str:
    c = counts(changes)
    lines = [f"# Changes since {compared_to}", "",
             f"{c['new failure']} new failures, {c['grown >10x']} discrepancies grown more than 10×, "
             f"{c['fixed']} fixed, {c['removed']} scenario × pair entries no longer present.", ""]
    if not changes.empty:
        lines += [markdown(changes), ""]
    return "\n".join(lines)



# ---------------------------------------------------------------------------
# summary.md of report --engine
# ---------------------------------------------------------------------------

@dataclass
class EngineReportData:
    """What ``report --engine`` shows: the user's engine in the hand-written engine's place."""
    engine: str                              # the Engine's name
    spec: str                                # the --engine MODULE:ATTRIBUTE it was loaded from
    seed: int
    counts: dict[str, int]                   # random family -> how many were drawn (dense, conv, …)
    only: str | None
    frame: pd.DataFrame                      # the rows, as read back from discrepancies.csv
    components: dict[str, list[str]]         # scenario -> components it exercises
    command: str
    timestamp: str
    not_applicable: list[tuple[str, str]] = field(default_factory=list)  # (scenario, reason)
    crashed: dict[str, str] = field(default_factory=dict)                # scenario -> what the engine raised
    shrunk: list[tuple[str, str]] = field(default_factory=list)          # (failing scenario, shrunk file)
    not_shrunk: list[tuple[str, str]] = field(default_factory=list)      # (failing scenario, why not)
    max_shrunk: int = 0

    @property
    def engine_rows(self) -> pd.Series:
        """The rows that judge the engine (``engine-torch``, ``engine-fd``); ``torch-fd`` judges the oracle."""
        return self.frame["pair"].str.startswith("engine-")

    def totals(self) -> dict[str, int]:
        frame = self.frame
        return {
            "scenarios": int(frame["scenario"].nunique()) + len(set(self.crashed) - set(frame["scenario"])),
            "rows": len(frame),
            "failures": int((failed(frame) & self.engine_rows).sum()) + len(self.crashed),
            "torch_fd_failures": int((failed(frame) & ~self.engine_rows).sum()),
            "floor_passes": int(floor_pass(frame).sum()),
            "not_judged": int(unjudged(frame).sum()),
            "not_applicable": len(self.not_applicable),
        }


def render_engine_markdown(data: EngineReportData) -> str:
    """summary.md of ``report --engine``: the engine, the totals, the failures, the shrunk networks, the
    per-component table, and every scenario not applicable with its reason — nothing is dropped silently.
    Deterministic but for the ``Generated:`` line."""
    totals = data.totals()
    families = ", ".join(f"{count} {family}" for family, count in data.counts.items())
    lines = [f"# backprop-verify engine report: engine {data.engine!r}", "", f"{TIMESTAMP_PREFIX}{data.timestamp}",
             "", f"- Engine: `{data.spec}` (name {data.engine!r}); pairs `engine-torch`, `engine-fd`, `torch-fd`",
             f"- Reproduce: `{data.command}`",
             f"- Seed: {data.seed}; random architectures: {families}"
             + (f"; scenarios matching `{data.only}`" if data.only else "")]
    lines += ["", "## Result", "",
              f"{totals['scenarios']} scenarios verified, {totals['rows']} addresses compared: "
              f"**{totals['failures']} failures of engine {data.engine!r}** (rows `engine-torch` and `engine-fd`"
              f"{', and scenarios the engine raised on' if data.crashed else ''}), "
              f"{totals['torch_fd_failures']} torch-fd failures, {totals['floor_passes']} passed only on the "
              f"absolute floor, {totals['not_judged']} reported but not judged; "
              f"{totals['not_applicable']} scenarios not applicable.", ""]

    lines += ["## Failures", ""]
    failed_rows = failures(data.frame)
    if failed_rows.empty and not data.crashed:
        lines += ["None.", ""]
    if not failed_rows.empty:
        shown = failed_rows[["scenario", "pair", "dtype", "address", "triage", "max_abs", "max_rel", "tolerance",
                             "worst_index", "value", "reference_value", "note"]].copy()
        for column in ("value", "reference_value"):  # every digit, as in discrepancies.csv
            shown[column] = ["—" if v != v else "%.17g" % v for v in shown[column]]
        lines += [markdown(shown), ""]
    if data.crashed:
        lines += ["The engine raised on these scenarios (no rows):", ""]
        lines += [f"- `{name}`: {message}" for name, message in data.crashed.items()] + [""]

    lines += ["## Shrunk networks", "",
              f"Each failing random network (name `random-…`), at most {data.max_shrunk} per run, shrunk to the "
              "smallest scenario that still fails the same way (`reports.verification.shrink`), as a scenario "
              "file: `backprop-verify check FILE` runs it through the hand-written engine and torch.", ""]
    if not data.shrunk and not data.not_shrunk:
        lines += ["None: no random network failed.", ""]
    lines += [f"- `{name}` → `{path}`" for name, path in data.shrunk]
    lines += [f"- `{name}`: not shrunk ({why})" for name, why in data.not_shrunk]
    lines += [""]

    if not data.frame.empty:
        lines += ["## Per component", "", markdown(component_summary(data.frame, data.components)), ""]

    lines += ["## Not applicable", "",
              f"Scenarios that need a component engine {data.engine!r} does not declare: not run "
              "(also in not_applicable.csv).", ""]
    if data.not_applicable:
        lines += [markdown(pd.DataFrame(data.not_applicable, columns=["scenario", "reason"])), ""]
    else:
        lines += ["None.", ""]
    return "\n".join(lines).rstrip() + "\n"
