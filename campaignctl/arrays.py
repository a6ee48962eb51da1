"""Small numpy helpers shared by the facts, the planner and the offer forecast."""

from __future__ import annotations

from typing import Sequence

import numpy as np

DENSE_SPAN = 4  # ids spanning up to 4x their count get a table: at most 32 bytes per id


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: ``np.unique(values)``. Sorting and
    dropping repeats is ~15x faster than numpy 2's hash-based ``np.unique`` on a
    million mostly distinct customer ids (70 ms against 1 s), and no slower on few."""
    if len(values) < 2 or bool(np.all(values[1:] > values[:-1])):  # audiences come sorted: nothing to do
        return values
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def sorted_union(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The distinct values of all ``arrays`` (int64, any order), ascending:
    ``sorted_unique(np.concatenate(arrays))``. Customer ids span about as many
    values as there are customers, so marking each in a table of the span
    answers without a sort: the audiences of a plan at 1M customers hold 4.5M
    ids, ~0.6 s to sort against ~0.05 s to mark. Ids spread wider are sorted."""
    parts = [np.asarray(part, dtype=np.int64) for part in arrays if len(part)]
    if not parts:
        return np.empty(0, dtype=np.int64)
    first = min(int(part.min()) for part in parts)
    span = max(int(part.max()) for part in parts) - first + 1
    if len(parts) == 1 or span > DENSE_SPAN * sum(len(part) for part in parts):
        return sorted_unique(np.concatenate(parts))
    seen = np.zeros(span, dtype=bool)
    for part in parts:
        seen[part - first] = True
    return np.flatnonzero(seen) + first


def distinct_ids(customer_ids: Sequence[int]) -> np.ndarray:
    """The distinct customer ids, ascending, as int64, from an int array or any
    sequence of ints."""
    ids = customer_ids if isinstance(customer_ids, np.ndarray) else np.asarray(customer_ids)
    if ids.ndim != 1 or ids.dtype.kind != "i":  # str, uint64, Python ints beyond int64, empty: the general way
        return np.array(sorted({int(i) for i in customer_ids}), dtype=np.int64)
    return sorted_unique(ids.astype(np.int64, copy=False))


def locate(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The position of each of ``wanted`` in ``sorted_values`` (ascending,
    distinct), -1 where it is not there: one binary search per value."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if not len(sorted_values):
        return np.full(len(wanted), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_values, wanted), len(sorted_values) - 1)
    return np.where(sorted_values[at] == wanted, at, -1)


def lookup(sorted_keys: np.ndarray, values: np.ndarray, wanted: np.ndarray, missing) -> np.ndarray:
    """``values`` (one per key of ``sorted_keys``) of each of ``wanted``;
    ``missing`` where a wanted key is not there."""
    return _values_at(values, locate(sorted_keys, wanted), missing)


def _values_at(values: np.ndarray, at: np.ndarray, missing) -> np.ndarray:
    if not len(values):
        return np.full(len(at), missing, dtype=values.dtype)
    return np.where(at >= 0, values[at], missing)


class IdIndex:
    """:func:`locate` and :func:`lookup` against the same sorted ids again and
    again (the facts and the order history answer every campaign's audience).
    Ids spanning at most a few times their count, as customer ids do, get a
    table from id to position: one gather per question, ~5x faster than a
    binary search per id at a million. Other ids keep the binary search."""

    def __init__(self, sorted_ids: np.ndarray, values: np.ndarray | None = None):
        """``sorted_ids``: ascending, distinct; ``values``: one per id (default: its position)."""
        self.ids = np.asarray(sorted_ids, dtype=np.int64)
        self.values = np.arange(len(self.ids), dtype=np.int64) if values is None else values
        self._table: np.ndarray | None = None
        self._first = int(self.ids[0]) if len(self.ids) else 0
        if len(self.ids) and int(self.ids[-1]) - self._first < DENSE_SPAN * len(self.ids):
            self._table = np.full(int(self.ids[-1]) - self._first + 1, -1, dtype=np.int64)
            self._table[self.ids - self._first] = np.arange(len(self.ids), dtype=np.int64)

    @classmethod
    def of_positions(cls, ids: np.ndarray) -> "IdIndex":
        """Each of ``ids`` (distinct, in any order: a query's rows) to its
        position. Dense ids are put in order by marking them in a table of
        their span, as :func:`sorted_union` does: sorting them took ~0.1 s at
        a million."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
            return cls(ids)
        first = int(ids.min())
        span = int(ids.max()) - first + 1
        if span > DENSE_SPAN * len(ids):
            order = np.argsort(ids, kind="stable")
            return cls(ids[order], order.astype(np.int64))
        position = np.full(span, -1, dtype=np.int64)
        position[ids - first] = np.arange(len(ids), dtype=np.int64)
        present = position >= 0
        return cls(np.flatnonzero(present) + first, position[present])

    def locate(self, wanted: np.ndarray) -> np.ndarray:
        """The position of each of ``wanted`` in the ids, -1 where it is not there."""
        if self._table is None:
            return locate(self.ids, wanted)
        wanted = np.asarray(wanted, dtype=np.int64)
        first, last = self.ids[0], self.ids[-1]
        inside = (wanted >= first) & (wanted <= last)
        # Outside ids are moved onto the first before subtracting: no int64 overflow.
        return np.where(inside, self._table[np.where(inside, wanted, first) - first], -1)

    def lookup(self, wanted: np.ndarray, missing) -> np.ndarray:
        """The value of each of ``wanted``; ``missing`` where it is not there."""
        return _values_at(self.values, self.locate(wanted), missing)

    def get(self, wanted: int, missing):
        """The value of one id; ``missing`` where it is not there."""
        if self._table is None:
            at = int(self.locate(np.array([wanted], dtype=np.int64))[0])
        else:
            offset = wanted - self._first
            at = int(self._table[offset]) if 0 <= offset < len(self._table) else -1
        return missing if at < 0 else self.values[at].item()


def unique_small(values: np.ndarray, *, return_index: bool = False, return_inverse: bool = False,
                 return_counts: bool = False):
    """``np.unique(values, ...)`` for integer codes (reach classes, steps,
    groups). When they span fewer than 65,536 values the sort is numpy's
    stable radix sort of 16-bit keys: ~10x faster than np.unique's on a
    million values, with the same answer."""
    values = np.asarray(values)
    wanted = (return_index, return_inverse, return_counts)
    if values.dtype.kind not in "iu" or not len(values) or int(values.max()) - int(values.min()) >= 1 << 16:
        return np.unique(values, return_index=return_index, return_inverse=return_inverse, return_counts=return_counts)
    keys = (values - values.min()).astype(np.uint16)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts_flags = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(starts_flags)
    found: list[np.ndarray] = [values[order[starts]]]
    if return_index:
        found.append(order[starts])
    if return_inverse:
        inverse = np.empty(len(values), dtype=np.intp)
        inverse[order] = np.cumsum(starts_flags) - 1
        found.append(inverse)
    if return_counts:
        found.append(np.diff(np.append(starts, len(values))))
    return tuple(found) if any(wanted) else found[0]
