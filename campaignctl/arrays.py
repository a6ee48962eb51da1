"""Small numpy helpers shared by the facts, the planner and the offer forecast."""

from __future__ import annotations

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: ``np.unique(values)``. Sorting and
    dropping repeats is ~15x faster than numpy 2's hash-based ``np.unique`` on a
    million mostly distinct customer ids (70 ms against 1 s), and no slower on few."""
    if len(values) < 2 or bool(np.all(values[1:] > values[:-1])):  # audiences come sorted: nothing to do
        return values
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
