"""Text from a scenario file, made safe where it is shown: a file from an untrusted
contributor must not retitle a terminal, clear its screen or run a spreadsheet formula.

* ``terminal_text``: every control character (C0, DEL, C1 — escape sequences start
  with one) written as a visible escape, ``\\x1b``; the rest unchanged, so a
  statement in any script reads as written.
* ``spreadsheet_cell``: a cell that a spreadsheet would read as a formula (it starts
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``,
  the spreadsheets' own mark for "text", as OWASP's CSV-injection advice says. Only
  text columns are passed through it: numbers keep their sign.
"""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but the tab and the line end
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def terminal_text(text: str) -> str:
    """``text`` with each control character as ``\\xNN`` (a newline too: callers print one line per item)."""
    return _CONTROL.sub(_escaped, text)


def terminal_lines(text: str) -> str:
    """``terminal_text`` that keeps the tab and the line end: for what a command prints whole."""
    return _CONTROL_BUT_LINES.sub(_escaped, text)


def _escaped(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def spreadsheet_cell(text: str) -> str:
    """``text``, with a leading ``'`` if a spreadsheet would evaluate it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
