"""The element-wise differences behind a report row, for the per-scenario sections of ``report.html``.

``discrepancies.csv`` keeps one line per address (max|a − b|, the worst element
and both values there); a reader looking for the *pattern* of a wrong
derivative (a whole row off: a missing factor; one element: a kink) needs the
whole array |a − b|. Keeping every trace of every scenario would cost
gigabytes, and running the engines again would break "each engine runs once
per scenario". So the arrays are taken from the traces ``runner.verify``
already holds, right after a scenario is verified, and only for the few
scenarios that will get a section:

``difference_maps(verified, wanted)``  the |a − b| arrays of the wanted (pair, address)
                                       from a ``runner.Verification``'s traces (no engine runs);
``KeptMaps(limit)``                    the maps of at most ``limit`` scenarios, the first by a
                                       sort key (``reports.rendering.sections.section_key``):
                                       memory stays bounded however many scenarios qualify.
                                       ``payload()`` / ``merge_payload()`` carry them across
                                       pytest-xdist's channel (``report --workers``: each worker
                                       keeps its own first ``limit`` and the controller merges),
                                       ``save()`` / ``load()`` through a file (the controller
                                       hands them to the report's process).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backprop_verify.scenarios.trace import Trace

Maps = dict[tuple[str, str], tuple[np.ndarray, float]]


def difference_maps(verified, wanted: list[tuple[str, str]]) -> Maps:
    """{(pair, address): (|a − b| in float64, max|b|)} for each wanted (pair, address) both sides hold
    with the same shape. ``verified``: a ``runner.Verification`` (its ``trace(engine)``); ``pair`` is
    ``manual-torch``, ``manual-fd`` or ``torch-fd``."""
    maps = {}
    for pair, address in wanted:
        engine, _, reference_engine = pair.partition("-")
        a, b = verified.trace(engine), verified.trace(reference_engine)
        if a is None or b is None:
            continue
        found = difference_map(a, b, address)
        if found is not None:
            maps[(pair, address)] = found
    return maps


def difference_map(a: Trace, b: Trace, address: str) -> tuple[np.ndarray, float] | None:
    """(|a − b| in float64, max|b| over its finite values) at ``address``, or None where a side lacks it
    or the shapes differ. Equal values (infinities included) and NaN on both sides count 0; NaN on one
    side, ∞."""
    if address not in a or address not in b or np.shape(a[address]) != np.shape(b[address]):
        return None
    x, y = np.asarray(a[address], np.float64), np.asarray(b[address], np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.array(np.abs(x - y))  # an array even for a scalar address (loss): NumPy returns a scalar
    difference[(x == y) | (np.isnan(x) & np.isnan(y))] = 0.0
    difference[np.isnan(difference)] = np.inf
    finite = np.abs(y[np.isfinite(y)])
    return difference, float(finite.max()) if finite.size else 0.0


class KeptMaps:
    """The difference maps of at most ``limit`` scenarios: those first by their key (smaller first)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._kept: dict[str, tuple[tuple, Maps]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def wants(self, name: str, key: tuple) -> bool:
        """Whether a scenario with this key would be kept (then compute its maps and ``keep`` them)."""
        if name in self._kept:
            return False
        return len(self._kept) < self.limit or key < max(k for k, _ in self._kept.values())

    def keep(self, name: str, key: tuple, maps: Maps) -> None:
        self._kept[name] = (tuple(key), maps)
        if len(self._kept) > self.limit:
            last = max(self._kept, key=lambda n: self._kept[n][0])
            del self._kept[last]

    def maps(self) -> dict[str, Maps]:
        """{scenario name: its maps}."""
        return {name: maps for name, (_, maps) in self._kept.items()}

    # pytest-xdist's channel (execnet) carries plain lists, strings, numbers and bytes
    def payload(self) -> list:
        return [[name, list(key), [[pair, address, list(array.shape), array.tobytes(), reference_max]
                                   for (pair, address), (array, reference_max) in maps.items()]]
                for name, (key, maps) in sorted(self._kept.items())]

    def merge_payload(self, payload: list) -> None:
        for name, key, entries in payload:
            key = tuple(key)
            if self.wants(name, key):
                self.keep(name, key, {(pair, address): (np.frombuffer(data, np.float64).reshape(shape).copy(),
                                                        float(reference_max))
                                      for pair, address, shape, data, reference_max in entries})

    def save(self, path: Path) -> None:
        """One ``.npz`` file: the arrays, and a JSON index of what each is (no pickle)."""
        index, arrays = [], {}
        for name, (key, maps) in sorted(self._kept.items()):
            entries = []
            for (pair, address), (array, reference_max) in maps.items():
                label = f"a{len(arrays)}"
                arrays[label] = array
                entries.append([pair, address, label, reference_max])
            index.append([name, list(key), entries])
        with open(path, "wb") as handle:
            np.savez(handle, index=np.array(json.dumps(index)), **arrays)

    @classmethod
    def load(cls, path: Path, limit: int) -> KeptMaps:
        kept = cls(limit)
        with np.load(path, allow_pickle=False) as stored:
            for name, key, entries in json.loads(str(stored["index"])):
                kept.keep(name, tuple(key), {(pair, address): (stored[label], float(reference_max))
                                             for pair, address, label, reference_max in entries})
        return kept
