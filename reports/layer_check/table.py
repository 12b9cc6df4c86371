"""The answer: one ``LayerRow`` per quantity compared, ``LayerCheck`` (the rows), and the failure message —
the table of failing rows and one sentence per quantity on what finite differences say."""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from backprop_verify.reports.verification.compare import FAIL, Row

# A row's status beyond compare's (pass, floor, fail): at a kink, the layer's value is a one-sided
# derivative where torch's convention takes another (``conventions``). It passes; the note says where.
CONVENTION = "convention"

# The policy's pair names: the layer under test plays the hand-written engine.
POLICY_PAIR = {"layer-torch": "manual-torch", "layer-fd": "manual-fd", "torch-fd": "torch-fd"}
_MAX_TABLE_ROWS = 40


class LayerRow(NamedTuple):
    """One quantity compared on one draw: ``compare.Row``'s judgement with where it was made.

    ``quantity`` is ``output`` (``output.0``, ``output.1``, … when forward returns
    a tuple), ``{input}.grad``, ``{param}.grad`` or a buffer's name; ``value`` is
    the first side of ``pair`` at ``worst_index``, ``reference_value`` the second.
    ``status``: ``pass``, ``floor``, ``convention`` (they pass) or ``fail``.
    ``fd_sides`` (layer-torch gradient rows that fail, where finite differences
    ran): ``torch``, ``layer``, ``both`` or ``neither``. ``through`` (layers with
    several outputs): ``output.{k}`` when the gradients came from that output's
    upstream gradient alone (the others zero), empty for all of them together.
    ``kink`` (failing gradient rows of kink draws, analysed by one-sided
    differences): ``convention``, ``not one-sided`` or ``no kink``.
    ``layer_dtype``: the layer's array's dtype when it is not the run's.
    """

    draw: str
    dtype: str
    pair: str
    quantity: str
    status: str
    max_abs: float
    max_rel: float
    tolerance: float
    worst_index: str
    value: float
    reference_value: float
    note: str = ""
    fd_sides: str = ""
    through: str = ""
    kink: str = ""
    layer_dtype: str = ""

    @property
    def passed(self) -> bool:
        return self.status != FAIL


class LayerCheck(list):
    """Every ``LayerRow`` of one ``check_layer`` call, with what was run."""

    def __init__(self, rows, layer: str, seed: int, dtypes: tuple[str, ...], draws: list[str], notes: list[str]):
        super().__init__(rows)
        self.layer, self.seed, self.dtypes, self.draws, self.notes = layer, seed, dtypes, draws, notes

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self)

    @property
    def failures(self) -> list[LayerRow]:
        return [row for row in self if not row.passed]

    @property
    def conventions(self) -> list[LayerRow]:
        """The rows that pass by a convention at a kink other than torch's."""
        return [row for row in self if row.status == CONVENTION]

    def table(self, rows: Sequence[LayerRow] | None = None) -> str:
        """A plain-text table of ``rows`` (default: every row)."""
        return _table(list(self) if rows is None else list(rows))

    def message(self) -> str:
        """The header, the failing rows and what finite differences say: the AssertionError's text."""
        failures = self._grouped(self.failures)
        failed_draws = sorted({row.draw for row in failures}, key=self.draws.index)
        lines = [f"check_layer: {self.layer} fails {len(failures)} of {len(self)} comparisons "
                 f"on {len(failed_draws)} of {len(self.draws)} draws (seed {self.seed}; "
                 f"dtypes {', '.join(self.dtypes)}; draws {', '.join(self.draws)})", ""]
        shown = failures[:_MAX_TABLE_ROWS]
        lines.append(_table(shown))
        if len(failures) > len(shown):
            lines.append(f"… and {len(failures) - len(shown)} more failing rows (the returned rows: raises=False)")
        lines += [""] + _verdicts(failures, list(self)) + self.notes
        if self.conventions:
            lines.append(f"{len(self.conventions)} rows pass by another convention than torch's at kinks "
                         "(LayerCheck.conventions).")
        lines.append("max_rel is normwise, max|a − b| / max|b|; value is the first side of the pair at the worst "
                     "element, reference the second (tolerance policy: reports/verification/tolerance.py).")
        return "\n".join(lines)

    def _grouped(self, rows: list[LayerRow]) -> list[LayerRow]:
        """By quantity (forward's output, the inputs, the parameters), then draw, pair, dtype and output."""
        quantities = list(dict.fromkeys(row.quantity for row in self))
        throughs = list(dict.fromkeys(row.through for row in self))
        pairs = list(POLICY_PAIR)
        return sorted(rows, key=lambda row: (quantities.index(row.quantity), self.draws.index(row.draw),
                                             pairs.index(row.pair), self.dtypes.index(row.dtype),
                                             throughs.index(row.through)))

    def __str__(self) -> str:
        if not self.passed:
            return self.message()
        summary = (f"check_layer: {self.layer} passes {len(self)} comparisons (seed {self.seed}; "
                   f"dtypes {', '.join(self.dtypes)}; draws {', '.join(self.draws)})")
        if self.conventions:
            summary += (f"\n{len(self.conventions)} of them at kinks by another convention than torch's:\n"
                        + "\n".join(f"  {row.draw} {row.dtype} {row.quantity}"
                                     f"{f' (through {row.through})' if row.through else ''}: {row.note}"
                                     for row in self.conventions))
        return summary


# --- rows, verdicts, the table -----------------------------------------------------------------------------------

def rows_of(draw: str, dtype: str, pair: str, compared: list[Row], quantity: Callable[[str], str] = str,
            through: str = "", layer_dtypes: dict[str, str] | None = None) -> list[LayerRow]:
    """LayerRows of ``compare``'s rows: ``quantity(address)`` names them; an address in ``layer_dtypes``
    (the layer's array is of another dtype than the run's) fails whatever its values."""
    rows = []
    for row in compared:
        status, note, found = row.status, row.note, (layer_dtypes or {}).get(row.address, "")
        if found:
            status = FAIL
            note = f"the layer gives {found} in the {dtype} run" + (f"; {note}" if note else "")
        rows.append(LayerRow(draw, dtype, pair, quantity(row.address), status, row.max_abs, row.max_rel,
                             row.tolerance, row.worst_index, row.value, row.reference_value, note,
                             through=through, layer_dtype=found))
    return rows


def with_fd_sides(rows: list[LayerRow]) -> list[LayerRow]:
    """Fill ``fd_sides`` on every failing float64 layer-torch gradient row whose draw ran finite differences."""
    fd_passed = {(row.draw, row.pair, row.quantity): row.passed for row in rows if row.pair != "layer-torch"}
    sided = []
    for row in rows:
        key = (row.draw, "layer-fd", row.quantity)
        if (row.pair == "layer-torch" and row.dtype == "float64" and not row.passed and not row.through
                and key in fd_passed):
            layer_ok, torch_ok = fd_passed[key], fd_passed[(row.draw, "torch-fd", row.quantity)]
            sides = {(False, True): "torch", (True, False): "layer", (True, True): "both"}.get(
                (layer_ok, torch_ok), "neither")
            row = row._replace(fd_sides=sides)
        sided.append(row)
    return sided


_SIDES = {
    "torch": "finite differences side with torch: the layer's backward is wrong there",
    "layer": ("finite differences of the layer's forward agree with its backward: the backward matches the forward, "
              "so the forward (or torch_fn) is what differs — see the output rows"),
    "both": ("finite differences agree with both sides within their own tolerance: the disagreement is below what "
             "they resolve"),
    "neither": "finite differences agree with neither side",
}


_GENERIC_KINKS = ("where the derivative does not exist: the layer's convention there differs from torch's "
                  "(relu'(0) = 0, ties of max go to the first element, …)")


def _is_output(quantity: str) -> bool:
    return quantity == "output" or re.fullmatch(r"output\.[0-9]+", quantity) is not None


def _verdicts(failures: list[LayerRow], rows: list[LayerRow]) -> list[str]:
    """One sentence per failing quantity: what finite differences say, or where it fails."""
    lines = []
    for quantity in dict.fromkeys(row.quantity for row in failures):
        mine = [row for row in failures if row.quantity == quantity]
        flagged = [row for row in mine if row.layer_dtype]
        if flagged:
            found = ", ".join(dict.fromkeys(f"{row.layer_dtype} in the {row.dtype} run" for row in flagged))
            lines.append(f"{quantity}: the layer gives {found} (draws "
                         f"{', '.join(dict.fromkeys(row.draw for row in flagged))}): a layer that changes the dtype "
                         "is not a layer of that dtype (a float32 layer that upcasts to float64 runs at float64's "
                         "cost and hides float32's rounding).")
        mine = [row for row in mine if not row.layer_dtype]
        if not mine:
            continue
        draws = ", ".join(dict.fromkeys(row.draw for row in mine))
        combined = [row for row in mine if not row.through] or mine
        if _is_output(quantity):
            lines.append(f"{quantity}: the layer's forward differs from torch_fn (draws {draws}).")
        elif not quantity.endswith(".grad"):
            lines.append(f"{quantity}: the layer's value after the call differs from torch_fn's (draws {draws}).")
        else:
            lines.append(_gradient_verdict(quantity, combined) + _through(quantity, mine, rows) + ".")
    return lines


def _gradient_verdict(quantity: str, mine: list[LayerRow]) -> str:
    draws = ", ".join(dict.fromkeys(row.draw for row in mine))
    sided = [row for row in mine if row.fd_sides]
    if sided:
        sides = [row.fd_sides for row in sided]
        side = max(dict.fromkeys(sides), key=sides.count)
        line = f"{quantity}: {_SIDES[side]} (draws {', '.join(dict.fromkeys(r.draw for r in sided))})"
        kinked = list(dict.fromkeys(row.draw for row in mine if row.draw.startswith("kink-")))
        if kinked:
            line += f"; it also fails at kinks ({', '.join(kinked)}: judged against torch only)"
        return line
    if all(row.pair != "layer-torch" for row in mine):
        return (f"{quantity}: the layer's backward agrees with torch, finite differences of the layer's forward with "
                f"neither (draws {draws}): the layer's forward is not the function its backward differentiates — "
                "see the output rows")
    precision_only = all(row.dtype != "float64" for row in mine)
    kinds = {row.kink for row in mine}
    if all(row.draw.startswith("kink-") for row in mine) and not (precision_only and kinds & {"not one-sided",
                                                                                              "no kink"}):
        if "not one-sided" in kinds:
            return (f"{quantity}: fails at kinks (draws {draws}): where the forward has a kink, the layer's value is "
                    "neither the left nor the right derivative (see the note) — a wrong derivative, not a convention")
        if "no kink" in kinds:
            return (f"{quantity}: fails on the kink draws (draws {draws}), but the forward has no kink where it "
                    "differs: the left and right derivatives agree there (see the note) — a real failure, not a "
                    "convention")
        if kinds == {"convention"}:
            return (f"{quantity}: fails only at kinks (exact zeros and ties, draws {draws}), where the derivative "
                    "does not exist: the layer's value there is a one-sided derivative, torch's convention the other "
                    "(see the note); strict_kinks=True asks for torch's convention")
        return f"{quantity}: fails only at kinks (exact zeros and ties, draws {draws}), {_GENERIC_KINKS}"
    if precision_only:
        return (f"{quantity}: fails only in {', '.join(dict.fromkeys(r.dtype for r in mine))} "
                f"(draws {draws}): the computation loses more precision than the tolerance policy allows")
    return f"{quantity}: fails on draws {draws}"


def _through(quantity: str, mine: list[LayerRow], rows: list[LayerRow]) -> str:
    """With several outputs: which output's upstream gradient alone makes the quantity fail."""
    outputs = list(dict.fromkeys(row.through for row in rows if row.quantity == quantity and row.through))
    if not outputs:
        return ""
    failing = [through for through in outputs if any(row.through == through for row in mine)]
    passing = [through for through in outputs if through not in failing]
    if not failing:
        return ("; with each output's upstream gradient alone it passes: the paths are right one by one, their "
                "sum is not (the contributions of the outputs must add up)")
    line = f"; with the upstream gradient of {', '.join(failing)} alone (the others zero) it fails"
    if passing:
        line += f", with that of {', '.join(passing)} alone it passes"
    return line + f": the gradient through {', '.join(failing)} is wrong"


def _number(value: float, spec: str) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


_COLUMNS = ("draw", "dtype", "pair", "quantity", "through", "max_abs", "max_rel", "tolerance", "worst", "value",
            "reference", "fd sides with", "note")
_OPTIONAL = ("through", "fd sides with", "note")  # shown when a row fills them


def _table(rows: list[LayerRow]) -> str:
    cells = [[row.draw, row.dtype, row.pair, row.quantity, row.through, _number(row.max_abs, ".3e"),
              _number(row.max_rel, ".3e"), _number(row.tolerance, ".1e"), row.worst_index or "-",
              _number(row.value, ".10g"), _number(row.reference_value, ".10g"), row.fd_sides, row.note]
             for row in rows]
    keep = [k for k, column in enumerate(_COLUMNS)
            if column not in _OPTIONAL or any(cell[k] for cell in cells)]
    table = [[_COLUMNS[k] for k in keep]] + [[cell[k] for k in keep] for cell in cells]
    widths = [max(len(line[k]) for line in table) for k in range(len(keep))]
    numeric = {"max_abs", "max_rel", "tolerance", "value", "reference"}
    return "\n".join(
        "  ".join(text.rjust(width) if table[0][k] in numeric else text.ljust(width)
                  for k, (text, width) in enumerate(zip(line, widths))).rstrip()
        for line in table)
