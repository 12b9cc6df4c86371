"""The answer: one ``LayerRow`` per quantity compared, ``LayerCheck`` (the rows), and the failure message —
the table of failing rows and one sentence per quantity on what finite differences say."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from backprop_verify.reports.layer_check.contract import OUTPUT
from backprop_verify.reports.verification.compare import FAIL, Row

# The policy's pair names: the layer under test plays the hand-written engine.
POLICY_PAIR = {"layer-torch": "manual-torch", "layer-fd": "manual-fd", "torch-fd": "torch-fd"}
_MAX_TABLE_ROWS = 40


class LayerRow(NamedTuple):
    """One quantity compared on one draw: ``compare.Row``'s judgement with where it was made.

    ``quantity`` is ``output``, ``{input}.grad`` or ``{param}.grad``; ``value`` is
    the first side of ``pair`` at ``worst_index``, ``reference_value`` the second.
    ``fd_sides`` (layer-torch gradient rows that fail, where finite differences
    ran): ``torch``, ``layer``, ``both`` or ``neither``.
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
        lines += [""] + _verdicts(failures) + self.notes
        lines.append("max_rel is normwise, max|a − b| / max|b|; value is the first side of the pair at the worst "
                     "element, reference the second (tolerance policy: reports/verification/tolerance.py).")
        return "\n".join(lines)

    def _grouped(self, rows: list[LayerRow]) -> list[LayerRow]:
        """By quantity (forward's output, the inputs, the parameters), then draw, pair and dtype."""
        quantities = list(dict.fromkeys(row.quantity for row in self))
        pairs = list(POLICY_PAIR)
        return sorted(rows, key=lambda row: (quantities.index(row.quantity), self.draws.index(row.draw),
                                             pairs.index(row.pair), self.dtypes.index(row.dtype)))

    def __str__(self) -> str:
        if not self.passed:
            return self.message()
        return (f"check_layer: {self.layer} passes {len(self)} comparisons (seed {self.seed}; "
                f"dtypes {', '.join(self.dtypes)}; draws {', '.join(self.draws)})")


# --- rows, verdicts, the table -----------------------------------------------------------------------------------

def _quantity(address: str) -> str:
    return "output" if address == OUTPUT else address


def rows_of(draw: str, dtype: str, pair: str, compared: list[Row]) -> list[LayerRow]:
    return [LayerRow(draw, dtype, pair, _quantity(row.address), row.status, row.max_abs, row.max_rel, row.tolerance,
                     row.worst_index, row.value, row.reference_value, row.note) for row in compared]


def with_fd_sides(rows: list[LayerRow]) -> list[LayerRow]:
    """Fill ``fd_sides`` on every failing float64 layer-torch gradient row whose draw ran finite differences."""
    fd_passed = {(row.draw, row.pair, row.quantity): row.passed for row in rows if row.pair != "layer-torch"}
    sided = []
    for row in rows:
        key = (row.draw, "layer-fd", row.quantity)
        if row.pair == "layer-torch" and row.dtype == "float64" and not row.passed and key in fd_passed:
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


def _verdicts(failures: list[LayerRow]) -> list[str]:
    """One sentence per failing quantity: what finite differences say, or where it fails."""
    lines = []
    for quantity in dict.fromkeys(row.quantity for row in failures):
        mine = [row for row in failures if row.quantity == quantity]
        draws = ", ".join(dict.fromkeys(row.draw for row in mine))
        sided = [row for row in mine if row.fd_sides]
        if quantity == "output":
            lines.append(f"output: the layer's forward differs from torch_fn (draws {draws}).")
        elif sided:
            sides = [row.fd_sides for row in sided]
            side = max(dict.fromkeys(sides), key=sides.count)
            line = f"{quantity}: {_SIDES[side]} (draws {', '.join(dict.fromkeys(r.draw for r in sided))})"
            kinked = list(dict.fromkeys(row.draw for row in mine if row.draw.startswith("kink-")))
            if kinked:
                line += f"; it also fails at kinks ({', '.join(kinked)}: judged against torch only)"
            lines.append(line + ".")
        elif all(row.draw.startswith("kink-") for row in mine):
            lines.append(f"{quantity}: fails only at kinks (exact zeros and ties, draws {draws}), where the "
                         "derivative does not exist: the layer's convention there differs from torch's "
                         "(relu'(0) = 0, ties of max go to the first element, …).")
        elif all(row.dtype != "float64" for row in mine):
            lines.append(f"{quantity}: fails only in {', '.join(dict.fromkeys(r.dtype for r in mine))} "
                         f"(draws {draws}): the computation loses more precision than the tolerance policy allows.")
        else:
            lines.append(f"{quantity}: fails on draws {draws}.")
    return lines


def _number(value: float, spec: str) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


_COLUMNS = ("draw", "dtype", "pair", "quantity", "max_abs", "max_rel", "tolerance", "worst", "value", "reference",
            "fd sides with", "note")


def _table(rows: list[LayerRow]) -> str:
    cells = [[row.draw, row.dtype, row.pair, row.quantity, _number(row.max_abs, ".3e"), _number(row.max_rel, ".3e"),
              _number(row.tolerance, ".1e"), row.worst_index or "-", _number(row.value, ".10g"),
              _number(row.reference_value, ".10g"), row.fd_sides, row.note] for row in rows]
    keep = [k for k, column in enumerate(_COLUMNS)
            if column not in ("fd sides with", "note") or any(cell[k] for cell in cells)]
    table = [[_COLUMNS[k] for k in keep]] + [[cell[k] for k in keep] for cell in cells]
    widths = [max(len(line[k]) for line in table) for k in range(len(keep))]
    numeric = {"max_abs", "max_rel", "tolerance", "value", "reference"}
    return "\n".join(
        "  ".join(text.rjust(width) if table[0][k] in numeric else text.ljust(width)
                  for k, (text, width) in enumerate(zip(line, widths))).rstrip()
        for line in table)
