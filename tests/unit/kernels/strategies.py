"""Hypothesis strategies for kernel tests: small tables with NaN/inf, ties, float32 and float64."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def columns(draw: st.DrawFn, *, min_rows: int = 0, max_rows: int = 200, dtype: object = None) -> np.ndarray:
    """One column: a mix of a few distinct values (ties), wide-range floats, NaN and ±inf."""
    dt = draw(DTYPES) if dtype is None else dtype
    n = draw(st.integers(min_rows, max_rows))
    pool = draw(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32 if dt == np.float32 else 64), min_size=1, max_size=12)
    )
    specials = [np.nan, np.inf, -np.inf]
    values = draw(
        hnp.arrays(
            dt,
            n,
            elements=st.one_of(
                st.sampled_from(pool),
                st.floats(-1e6, 1e6, allow_nan=False, width=32 if dt == np.float32 else 64),
                st.sampled_from(specials),
            ),
        )
    )
    return values


@st.composite
def tables(draw: st.DrawFn, *, min_rows: int = 0, max_rows: int = 200, max_features: int = 3) -> np.ndarray:
    dt = draw(DTYPES)
    k = draw(st.integers(1, max_features))
    n = draw(st.integers(min_rows, max_rows))
    cols = [draw(columns(min_rows=n, max_rows=n, dtype=dt)) for _ in range(k)]
    return np.asfortranarray(np.column_stack(cols)) if n else np.zeros((0, k), dtype=dt, order="F")
