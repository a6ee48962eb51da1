"""arrays.sorted_unique and sorted_union give np.unique's answer for any int64 ids; locate and
lookup, and IdIndex (many ids or one) with and without its table, give a dict's answer."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from campaignctl.arrays import IdIndex, locate, lookup, sorted_union, sorted_unique, unique_small

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(INT64, max_size=60), st.booleans())
def test_sorted_unique_is_np_unique(values, presorted):
    ids = np.array(sorted(values) if presorted else values, dtype=np.int64)
    found = sorted_unique(ids)
    assert found.dtype == np.int64 and found.tolist() == np.unique(ids).tolist()


@given(st.lists(st.lists(INT64, max_size=30), max_size=4), st.integers(-(2**63), 2**63 - 200),
       st.lists(st.lists(st.integers(0, 150), max_size=60), max_size=5))
def test_sorted_union_is_np_unique_of_the_parts(spread, start, offsets):
    # Spread ids (sorted) and dense ones near ``start`` (marked in a table), sorted or not.
    dense = [[start + offset for offset in part] for part in offsets]
    for parts in (spread, dense, [sorted(part) for part in dense]):
        arrays = [np.array(part, dtype=np.int64) for part in parts]
        expected = np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.int64)
        found = sorted_union(arrays)
        assert found.dtype == np.int64 and found.tolist() == expected.tolist()


@given(st.sets(INT64, max_size=40), st.lists(INT64, max_size=40), st.data())
def test_locate_and_lookup_agree_with_a_dict(keys, others, data):
    keys = sorted(keys)
    wanted = others + data.draw(st.lists(st.sampled_from(keys), max_size=20)) if keys else others
    position = {key: index for index, key in enumerate(keys)}
    sorted_keys = np.array(keys, dtype=np.int64)
    assert locate(sorted_keys, np.array(wanted, dtype=np.int64)).tolist() == [position.get(w, -1) for w in wanted]
    values = np.array([index * 10 + 1 for index in range(len(keys))], dtype=np.int64)
    found = lookup(sorted_keys, values, np.array(wanted, dtype=np.int64), -7)
    assert found.tolist() == [position[w] * 10 + 1 if w in position else -7 for w in wanted]


@given(st.sets(INT64, max_size=40), st.integers(-(2**63), 2**63 - 200), st.lists(INT64, max_size=40), st.data())
def test_id_index_agrees_with_a_dict_with_and_without_its_table(spread, start, others, data):
    # Dense ids (a run near ``start``, the table) and spread ones (binary search).
    dense = sorted(start + offset for offset in data.draw(st.sets(st.integers(0, 150), max_size=60)))
    for keys in (sorted(spread), dense):
        near = [k + d for k in keys[:5] for d in (-1, 1) if -(2**63) <= k + d < 2**63]
        wanted = others + near + (data.draw(st.lists(st.sampled_from(keys), max_size=20)) if keys else [])
        position = {key: index for index, key in enumerate(keys)}
        index = IdIndex(np.array(keys, dtype=np.int64), np.array([i * 10 + 1 for i in range(len(keys))], dtype=np.int64))
        assert index.locate(np.array(wanted, dtype=np.int64)).tolist() == [position.get(w, -1) for w in wanted]
        assert index.lookup(np.array(wanted, dtype=np.int64), -7).tolist() == [position[w] * 10 + 1 if w in position else -7 for w in wanted]
        assert [index.get(w, -7) for w in wanted] == [position[w] * 10 + 1 if w in position else -7 for w in wanted]
    assert IdIndex(np.arange(5, 1000, dtype=np.int64))._table is not None  # the dense case does take the table


@given(st.lists(st.integers(min_value=-70_000, max_value=70_000), max_size=80), st.integers(0, 3), st.booleans(), st.booleans(), st.booleans())
def test_unique_small_is_np_unique(values, narrow, index, inverse, counts):
    ids = np.array([v // (10**narrow) for v in values], dtype=np.int64)  # narrower ranges take the radix path
    found = unique_small(ids, return_index=index, return_inverse=inverse, return_counts=counts)
    expected = np.unique(ids, return_index=index, return_inverse=inverse, return_counts=counts)
    if not (index or inverse or counts):
        found, expected = (found,), (expected,)
    assert [part.tolist() for part in found] == [part.tolist() for part in expected]


@given(st.sets(INT64, max_size=40), st.integers(-(2**63), 2**63 - 200), st.lists(INT64, max_size=40), st.data())
def test_id_index_of_positions_finds_each_id_where_it_stands(spread, start, others, data):
    # Ids in any order, dense (marked in a table of their span) and spread (sorted).
    dense = list(start + offset for offset in data.draw(st.sets(st.integers(0, 150), max_size=60)))
    for keys in (list(spread), dense):
        keys = data.draw(st.permutations(keys))
        wanted = others + (data.draw(st.lists(st.sampled_from(keys), max_size=20)) if keys else [])
        position = {key: index for index, key in enumerate(keys)}
        index = IdIndex.of_positions(np.array(keys, dtype=np.int64))
        assert index.lookup(np.array(wanted, dtype=np.int64), -1).tolist() == [position.get(w, -1) for w in wanted]
        assert [index.get(w, -1) for w in wanted] == [position.get(w, -1) for w in wanted]
