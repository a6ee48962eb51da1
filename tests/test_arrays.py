"""arrays.sorted_unique gives np.unique's answer for any int64 ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from campaignctl.arrays import sorted_unique


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=60), st.booleans())
def test_sorted_unique_is_np_unique(values, presorted):
    ids = np.array(sorted(values) if presorted else values, dtype=np.int64)
    found = sorted_unique(ids)
    assert found.dtype == np.int64 and found.tolist() == np.unique(ids).tolist()
