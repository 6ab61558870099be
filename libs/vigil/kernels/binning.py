"""Binning raw values on a reference's quantile edges: the one pass over the rows behind every window profile.

Why a module of its own: on raw data this loop *is* the cost of a drift report (20 features × 1M rows → 20M
values, against ~0.1 ms for all the statistics), so it gets a lookup table, a work split over both features and
rows, and exact moments computed while the rows are still in cache.

**Bin of a value** (layout in :mod:`vigil.kernels.profile`): ``searchsorted(edges, x, "right")``, moved to ``E + 1``
when ``x > e_{E-1}``; NaN/±inf are missing. The result here is that, bit for bit — no tolerance.

**Lookup grid** (per feature, built once per :class:`~vigil.kernels.profile.BinEdges`, never serialised): ``G``
uniform cells over the edges ``[e_t, e_{E-1-t}]``. A value's cell index is ::

    k(x) = clamp(trunc((x - glo) · scale), -1, G) + 1        ∈ [0, G + 1]   (NaN → 0, ±inf → 0 / G + 1)

``k`` is monotone non-decreasing in ``x`` — float subtraction and multiplication by a positive number are monotone,
and so are the clamps and the truncation — and that is the only property the table relies on, so rounding cannot
break it: for two values ``k(a) < k(b)`` implies ``a < b``. The table stores per cell ``lo(k)`` = the number of
edges ``e`` with ``k(e) < k``; all of them are ``< x`` for every ``x`` in cell ``k``, and all edges with a larger cell
are ``> x``, so the bin of ``x`` is ``lo(k)`` plus the number of edges *inside* the cell that are ``<= x``.

- **Hot cells** hold at most two edges and lie strictly between the cells of the extreme edges ``e_0`` and
  ``e_{E-1}``: ``bin = lo + (e[lo] <= x) + (e[lo+1] <= x)`` — one table load, two edge loads, two comparisons, no
  branch (the edges are padded with ``+inf`` per feature so ``e[lo+1]`` always exists). Such a value is finite,
  strictly inside ``(e_0, e_{E-1})``, so it is never missing, never in an outer bin and never in the point bin.
- **Every other cell** — outside the grid, crowded cells, the cells of ``e_0``/``e_{E-1}``, NaN/±inf — stores
  ``-(lo + 1)`` and takes the slow path: missing check, a branch-free binary search between ``lo(k)`` and
  ``lo(k + 1)``, the point/overflow split and the tail sums of the outer bins.

Choosing the grid: the widest of ``t = 0, 0.1 %, 0.5 %, 1 %, 2 %`` of the edges whose cells can be narrower than
the narrowest gap spanning two bins (then no cell holds three edges) within a budget of 16 cells per bin and 65,536
cells (int32 entries, ≤ 256 kB per feature); the last candidate takes the budget regardless. For ordinary data that
is ``t = 0``: the grid spans the whole reference range with 1–10 cells per bin, so only values outside the training
range, or NaN/inf, take the slow path — a drifted window costs what an undrifted one does. Heavy tails (Cauchy) get a
narrower grid so the centre stays fine; their far tails take the slow path. A grid that cannot be built (one edge,
a range that overflows or is subnormal) maps every value to the slow path.

**Moments in the same pass**, per 4096-row block: sums of ``d = x - c`` and ``d²`` with ``c`` the block's first
finite value (``M2 = Σd² - (Σd)²/n`` loses at most ~n·ε relatively, since ``(c - mean)² ≤ n · var`` for a ``c``
that is one of the values), blocks combined with Chan's formula; min and max; the count is values minus missing.
That is six floating-point operations per value and no second read of the block.

**Four values at a time**: load four values and their table entries; if all four are hot (the usual case), bin them
and fold their moments with no branch in between, else take the one-value path for those four. The independent work
lets the out-of-order core overlap the chain value → cell → table → edges → count (~12 % fewer cycles per value).

**Parallelism**: the column-major table is one flat buffer; it is cut into equal runs of values regardless of
feature boundaries, so 2 cores are busy even for one feature. Each run is a task with its own small partial state
(counts of the features it touches); tasks run on a thread pool (the kernels release the GIL) and their states are
merged in order. No numba ``parallel=True``: it costs seconds of compilation per kernel and a second threading
runtime for no gain here. Small inputs run inline.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from vigil.kernels._common import F64Array, FloatArray, I64Array
from vigil.kernels._threads import executor, in_worker, n_threads

__all__ = ["LookupGrid", "bin_table", "build_grid", "empty_state", "merge_state"]

_TAILS_PER_MILLE = (0, 1, 5, 10, 20)  # grid candidates: spanning edges e_t .. e_{E-1-t}, t = E · this / 1000
_MAX_CELLS_PER_BIN = 16
_MAX_CELLS = 1 << 16
_BLOCK = 4096  # rows per block: one shift for the block's sums, so its M2 stays exact
_MIN_TASK = 1 << 18  # values per task: below this a thread hand-off costs more than it saves
_TASKS_PER_THREAD = 4  # a few tasks per thread so a core slowed by another process does not hold up the rest

# State of one feature: ints[f] = (missing, n); sums[f] = (mean, M2, min, max, Σ underflow values, Σ overflow values).
_N_SUMS = 6


@dataclass(frozen=True, eq=False)
class LookupGrid:
    """Per-feature lookup grids of concatenated edges (see the module docstring). Derived data, never stored."""

    padded: F64Array  # each feature's edges followed by +inf; feature f starts at offsets[f] + f
    glo: F64Array
    scale: F64Array
    n_cells: I64Array
    lut: npt.NDArray[np.int32]  # feature f: G_f + 3 entries from lut_off[f] (cell indices 0..G+1, then E)
    lut_off: I64Array


@njit(inline="always")
def _cell_index(x, glo, scale, g):  # type: ignore[no-untyped-def]
    """``k(x)`` of the module docstring. One function for the table build and the binning, so both round alike.

    The clamps run in floating point so NaN and huge values never reach the float→int conversion (undefined for
    them); ``t > -1.0`` is False for NaN, which sends it to cell 0. No fast-math here on purpose.
    """
    t = (x - glo) * scale
    t = t if t > -1.0 else -1.0
    t = t if t < g else g
    return np.int64(t) + 1


@njit("void(float64[::1], int64[::1], float64[::1], float64[::1], int64[::1])", cache=True, nogil=True)
def _plan_grid_kernel(edges, offsets, glo, scale, n_cells):  # type: ignore[no-untyped-def]
    """Per feature the widest grid (smallest tail ``t`` of ``_TAILS_PER_MILLE``) whose cells can be narrower than
    every gap spanning two bins within the cell budget; the last candidate takes the budget if none can."""
    for f in range(offsets.size - 1):
        e = edges[offsets[f] : offsets[f + 1]]
        m = e.size
        glo[f] = 0.0
        scale[f] = 0.0
        n_cells[f] = 0
        for per_mille in _TAILS_PER_MILLE:
            t = (m * per_mille) // 1000
            if m - 2 * t < 2:
                break
            lo = e[t]
            width = e[m - 1 - t] - lo  # may overflow to inf: then this grid is unusable
            if not (np.isfinite(width) and width > 0.0):
                continue
            gap = width
            for i in range(t, m - 3 - t + 1):
                gap = min(gap, e[i + 2] - e[i])
            bins = m - 1 - 2 * t
            budget = min(_MAX_CELLS_PER_BIN * bins, _MAX_CELLS)
            want = width / gap if gap > 0.0 else np.inf
            if want > budget and per_mille != _TAILS_PER_MILLE[-1]:
                continue
            cells = max(bins, np.int64(min(np.ceil(want), budget)))
            sc = cells / width
            if np.isfinite(sc) and sc > 0.0:  # a subnormal width gives inf: leave the feature without a grid
                glo[f] = lo
                scale[f] = sc
                n_cells[f] = cells
            break


@njit("void(float64[::1], int64[::1], float64[::1], float64[::1], int64[::1], int32[::1], int64[::1])",
      cache=True, nogil=True)  # fmt: skip
def _fill_lut_kernel(edges, offsets, glo, scale, n_cells, lut, lut_off):  # type: ignore[no-untyped-def]
    """``lo(k)`` per cell index, negated (``-(lo + 1)``) for slow cells; one extra entry ``-(E + 1)`` at the end."""
    for f in range(offsets.size - 1):
        e0 = offsets[f]
        n_edges = offsets[f + 1] - e0
        g = n_cells[f]
        gf = np.float64(g)
        table = lut[lut_off[f] : lut_off[f + 1]]
        inside = np.zeros(g + 2, dtype=np.int64)
        for j in range(n_edges):
            inside[_cell_index(edges[e0 + j], glo[f], scale[f], gf)] += 1
        k_first = _cell_index(edges[e0], glo[f], scale[f], gf) if n_edges > 0 else g + 2
        k_last = _cell_index(edges[e0 + n_edges - 1], glo[f], scale[f], gf) if n_edges > 0 else -1
        lo = 0
        for k in range(g + 2):
            table[k] = lo if inside[k] <= 2 and k_first < k < k_last else -(lo + 1)
            lo += inside[k]
        table[g + 2] = -(n_edges + 1)


def build_grid(edges: F64Array, offsets: I64Array) -> LookupGrid:
    """Lookup grids of all features (two small kernels: choose the grids, then fill their tables)."""
    n_f = offsets.size - 1
    glo = np.zeros(n_f)
    scale = np.zeros(n_f)
    n_cells = np.zeros(n_f, dtype=np.int64)
    _plan_grid_kernel(edges, offsets, glo, scale, n_cells)
    lut_off = np.zeros(n_f + 1, dtype=np.int64)
    np.cumsum(n_cells + 3, out=lut_off[1:])
    lut = np.empty(int(lut_off[-1]), dtype=np.int32)
    _fill_lut_kernel(edges, offsets, glo, scale, n_cells, lut, lut_off)
    padded = np.full(edges.size + n_f, np.inf)
    padded[np.arange(edges.size) + np.repeat(np.arange(n_f), np.diff(offsets))] = edges
    return LookupGrid(padded, glo, scale, n_cells, lut, lut_off)


# -- binning -----------------------------------------------------------------------------------------------------


@njit(nogil=True)
def _finite_sum(col, start, stop):  # type: ignore[no-untyped-def]
    s = 0.0
    for i in range(start, stop):
        v = np.float64(col[i])
        s += v if np.isfinite(v) else 0.0
    return s


@njit(nogil=True)
def _finite_m2(col, start, stop, mean):  # type: ignore[no-untyped-def]
    s = 0.0
    for i in range(start, stop):
        v = np.float64(col[i])
        d = v - mean if np.isfinite(v) else 0.0
        s += d * d
    return s


@njit(inline="always")
def _bin_feature(col, pe, n_edges, glo, scale, g, lut, cnt, ints, sums):  # type: ignore[no-untyped-def]
    """Bin ``col`` (one feature's run of rows) into ``cnt`` and fold its moments into ``ints``/``sums`` (length-2
    and length-6 views of this feature's state). ``pe`` = the feature's padded edges, ``lut`` its table.

    Moments in the same pass: per block, sums of ``d = x - c`` and ``d²`` with ``c`` the block's first finite
    value, so ``M2 = Σd² - (Σd)²/n`` loses at most ~n·ε relatively (``(c - mean)² ≤ n · var`` because ``c`` is one
    of the values); blocks combine with Chan's formula. A block whose values are so far apart that ``x - c``
    overflows is redone with a plain two-pass. Min and max are two more instructions per value. No
    fast-math: this function decides what is missing (see ``_common.FASTMATH``).
    """
    gf = np.float64(g)
    one = np.uint64(1)
    top = pe[n_edges - 1] if n_edges > 0 else np.inf
    n = ints[1]
    mean = sums[0]
    m2 = sums[1]
    mn = sums[2]
    mx = sums[3]
    under = 0.0
    over = 0.0
    missing = 0
    n_rows = col.size
    for start in range(0, n_rows, _BLOCK):
        stop = min(start + _BLOCK, n_rows)
        c = 0.0
        for i in range(start, stop):
            v = np.float64(col[i])
            if np.isfinite(v):
                c = v
                break
        s1 = 0.0
        s2 = 0.0
        b_miss = 0
        i = start
        while i < stop:
            end = stop
            if i + 4 <= stop:  # four values at once: independent work for the out-of-order core (~12 % faster)
                ui = np.uint64(i)  # unsigned indices: numba emits no negative-index wraparound code for them
                v0 = np.float64(col[ui])
                v1 = np.float64(col[ui + one])
                v2 = np.float64(col[ui + np.uint64(2)])
                v3 = np.float64(col[ui + np.uint64(3)])
                t0 = lut[np.uint64(_cell_index(v0, glo, scale, gf))]
                t1 = lut[np.uint64(_cell_index(v1, glo, scale, gf))]
                t2 = lut[np.uint64(_cell_index(v2, glo, scale, gf))]
                t3 = lut[np.uint64(_cell_index(v3, glo, scale, gf))]
                if (t0 | t1 | t2 | t3) >= 0:  # all four hot (the usual case): finite, inside, ≤ 2 edges each
                    u0 = np.uint64(t0)
                    u1 = np.uint64(t1)
                    u2 = np.uint64(t2)
                    u3 = np.uint64(t3)
                    cnt[u0 + np.uint64(pe[u0] <= v0) + np.uint64(pe[u0 + one] <= v0)] += 1
                    cnt[u1 + np.uint64(pe[u1] <= v1) + np.uint64(pe[u1 + one] <= v1)] += 1
                    cnt[u2 + np.uint64(pe[u2] <= v2) + np.uint64(pe[u2 + one] <= v2)] += 1
                    cnt[u3 + np.uint64(pe[u3] <= v3) + np.uint64(pe[u3 + one] <= v3)] += 1
                    d0 = v0 - c
                    d1 = v1 - c
                    d2 = v2 - c
                    d3 = v3 - c
                    s1 += (d0 + d1) + (d2 + d3)
                    s2 += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                    mn = min(mn, min(min(v0, v1), min(v2, v3)))
                    mx = max(mx, max(max(v0, v1), max(v2, v3)))
                    i += 4
                    continue
                end = i + 4
            for j in range(i, end):  # one value at a time: any cell, missing values, the block's last few rows
                v = np.float64(col[np.uint64(j)])
                t = lut[np.uint64(_cell_index(v, glo, scale, gf))]
                if t >= 0:
                    u = np.uint64(t)
                    cnt[u + np.uint64(pe[u] <= v) + np.uint64(pe[u + one] <= v)] += 1
                elif not np.isfinite(v):
                    b_miss += 1
                    continue
                else:
                    lo = -np.int64(t) - 1
                    nxt = np.int64(lut[np.uint64(_cell_index(v, glo, scale, gf) + 1)])  # lo of the next cell
                    m = (nxt if nxt >= 0 else -nxt - 1) - lo
                    while m > 0:  # branch-free halving: lo ends at the first edge > v
                        half = m >> 1
                        le = pe[np.uint64(lo + half)] <= v
                        lo = lo + half + 1 if le else lo
                        m = m - half - 1 if le else half
                    if lo == n_edges and v > top:
                        lo = n_edges + 1
                    cnt[np.uint64(lo)] += 1
                    if lo == 0:  # outer bins also keep the sum of their values: exact W1 for out-of-range mass
                        under += v
                    elif lo == n_edges + 1:
                        over += v
                d = v - c
                s1 += d
                s2 += d * d
                mn = min(mn, v)
                mx = max(mx, v)
            i = end
        missing += b_miss
        bn = stop - start - b_miss
        if bn == 0:
            continue
        if np.isfinite(s1) and np.isfinite(s2):
            bmean = c + s1 / bn
            bm2 = max(s2 - s1 * (s1 / bn), 0.0)
        else:  # values more than ~1.8e308 apart overflow x - c: plain two-pass, overflowing only where numpy does
            bmean = _finite_sum(col, start, stop) / bn
            bm2 = _finite_m2(col, start, stop, bmean)
        if n == 0:
            mean = bmean
            m2 = bm2
        else:
            total = n + bn
            delta = bmean - mean
            mean += delta * (bn / total)
            m2 += bm2 + delta * delta * (n * (bn / total))
        n += bn
    ints[0] += missing
    ints[1] = n
    sums[0] = mean
    sums[1] = m2
    sums[2] = mn
    sums[3] = mx
    sums[4] += under
    sums[5] += over


_RUN_SIG = (
    "void({x}[::1], int64, int64, int64, int64[::1], float64[::1], float64[::1], float64[::1], int64[::1],"
    " int32[::1], int64[::1], int64[::1], int64[::1], int64[:,::1], float64[:,::1])"
)


@njit([_RUN_SIG.format(x="float64"), _RUN_SIG.format(x="float32")], cache=True, nogil=True)
def _bin_run_kernel(  # type: ignore[no-untyped-def]
    x, n_rows, start, stop, offsets, padded, glo, scale, n_cells, lut, lut_off, count_off, counts, ints, sums
):  # fmt: skip
    """Bin the values ``x[start:stop]`` of the flat column-major table (any run, across feature boundaries) into a
    partial state whose first feature is ``f0 = start // n_rows``: ``counts`` from ``count_off[f0]``, row ``f - f0``
    of ``ints``/``sums``."""
    f0 = start // n_rows
    f1 = (stop - 1) // n_rows
    c0 = count_off[f0]
    for f in range(f0, f1 + 1):
        a = max(start, f * n_rows)
        b = min(stop, (f + 1) * n_rows)
        n_edges = offsets[f + 1] - offsets[f]
        p0 = offsets[f] + f
        _bin_feature(
            x[a:b], padded[p0 : p0 + n_edges + 1], n_edges, glo[f], scale[f], n_cells[f],
            lut[lut_off[f] : lut_off[f + 1]],
            counts[count_off[f] - c0 : count_off[f + 1] - c0], ints[f - f0], sums[f - f0],
        )  # fmt: skip


@njit(
    "void(int64[::1], int64[:,::1], float64[:,::1], int64[::1], int64[:,::1], float64[:,::1], int64, int64)",
    cache=True,
    nogil=True,
)
def _merge_state_kernel(counts, ints, sums, p_counts, p_ints, p_sums, f0, c0):  # type: ignore[no-untyped-def]
    """Fold a partial state (features from ``f0``, counts from ``c0``) into a full one: counts and missing add,
    mean/M2 combine with Chan's formula, min/max and tail sums fold."""
    for j in range(p_counts.size):
        counts[c0 + j] += p_counts[j]
    for r in range(p_ints.shape[0]):
        f = f0 + r
        ints[f, 0] += p_ints[r, 0]
        nb = p_ints[r, 1]
        if nb == 0:
            continue
        na = ints[f, 1]
        total = na + nb
        if na == 0:
            sums[f, 0] = p_sums[r, 0]
            sums[f, 1] = p_sums[r, 1]
        else:
            delta = p_sums[r, 0] - sums[f, 0]
            sums[f, 0] += delta * (nb / total)
            sums[f, 1] += p_sums[r, 1] + delta * delta * (na * (nb / total))
        ints[f, 1] = total
        sums[f, 2] = min(sums[f, 2], p_sums[r, 2])
        sums[f, 3] = max(sums[f, 3], p_sums[r, 3])
        sums[f, 4] += p_sums[r, 4]
        sums[f, 5] += p_sums[r, 5]


def empty_state(n_features: int) -> tuple[I64Array, F64Array]:
    """The state of no values: ``ints`` = (missing, n) zeros; ``sums`` = (mean, M2, min=+inf, max=-inf, 0, 0)."""
    sums = np.zeros((n_features, _N_SUMS), dtype=np.float64)
    sums[:, 2] = np.inf
    sums[:, 3] = -np.inf
    return np.zeros((n_features, 2), dtype=np.int64), sums


def merge_state(
    dst: tuple[I64Array, I64Array, F64Array], part: tuple[I64Array, I64Array, F64Array], f0: int, c0: int
) -> None:
    """Fold ``part`` = (counts, ints, sums) of features ``f0…`` (counts from ``c0``) into ``dst`` in place."""
    _merge_state_kernel(*dst, *part, np.int64(f0), np.int64(c0))


# -- the work split ----------------------------------------------------------------------------------------------


def bin_table(
    arr: FloatArray,
    offsets: I64Array,
    count_off: I64Array,
    grid: LookupGrid,
    state: tuple[I64Array, I64Array, F64Array],
) -> None:
    """Bin the Fortran-ordered ``(n_rows, n_features)`` float32/float64 table ``arr`` and fold it into ``state``
    = (counts, ints, sums), in place. Reads ``arr`` once, in its own dtype (no conversion copy)."""
    n_rows, n_features = arr.shape
    total = n_rows * n_features
    if total == 0:
        return
    flat = arr.ravel(order="F")
    workers = 1 if in_worker() else n_threads()
    n_tasks = max(1, min(workers * _TASKS_PER_THREAD, total // _MIN_TASK)) if workers > 1 else 1

    def run(start: int, stop: int, part: tuple[I64Array, I64Array, F64Array]) -> None:
        _bin_run_kernel(
            flat, np.int64(n_rows), np.int64(start), np.int64(stop), offsets, grid.padded, grid.glo, grid.scale,
            grid.n_cells, grid.lut, grid.lut_off, count_off, *part,
        )  # fmt: skip

    if n_tasks == 1:  # one run over everything folds straight into the state
        run(0, total, state)
        return
    cuts = [(total * i) // n_tasks for i in range(n_tasks + 1)]
    parts = []
    for start, stop in itertools.pairwise(cuts):
        f0, f1 = start // n_rows, (stop - 1) // n_rows
        c0 = int(count_off[f0])
        ints, sums = empty_state(f1 - f0 + 1)
        parts.append((start, stop, f0, c0, (np.zeros(int(count_off[f1 + 1]) - c0, dtype=np.int64), ints, sums)))
    pool = executor()
    for done in [pool.submit(run, start, stop, part) for start, stop, _, _, part in parts]:
        done.result()
    for _, _, f0, c0, part in parts:  # in task order: the merged moments do not depend on thread timing
        merge_state(state, part, f0, c0)
